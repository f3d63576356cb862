// What the node's page and the controller's page share: i18n, DOM helpers,
// formatting, the API wrapper, polls, login / session, tabs, the confirmation
// dialog, toasts. Loaded before each page's app.js, which calls GW.i18n() with
// its own texts first and GW.start() with its own parts last.
// Plain ES2020, no dependencies. Server strings are only ever inserted as text
// (textContent / createTextNode / setAttribute), never parsed as HTML.
'use strict';

window.GW = (() => {
  // ---------------------------------------------------------------- i18n

  // Texts both pages show the same; a page's own texts are added by GW.i18n().
  const BASE = {
    en: {
      'top.logout': 'Log out',
      'login.title': 'Sign in',
      'login.token': 'Access token',
      'login.button': 'Log in',
      'login.invalid': 'invalid token',
      'login.empty': 'enter a token',
      'tab.traffic': 'Traffic', 'tab.rules': 'Rules',
      'f.workload': 'Workload', 'f.action': 'Action',
      'f.q': 'Search', 'f.qph': 'host, address, rule…', 'f.apply': 'Apply', 'f.reset': 'Reset',
      'f.any': 'any', 'f.all': 'all',
      'live.poll': 'refreshing every 2 s',
      'col.updated_at': 'Updated at', 'col.workload': 'Workload', 'col.flow': 'Flow', 'col.app': 'App',
      'col.category': 'Category / how', 'col.action': 'Action', 'col.rule': 'Rule',
      'col.out': 'Out bytes / pkts', 'col.in': 'In bytes / pkts', 'col.first_seen': 'First seen',
      'col.event': 'Event',
      'v.allow': 'allow', 'v.deny': 'deny', 'v.reject': 'reject', 'v.shape': 'shape',
      'v.rate-limit': 'rate-limit', 'v.would allow': 'would allow', 'v.would deny': 'would deny',
      'dir.ingress': 'ingress', 'dir.egress': 'egress',
      'how.sni': 'TLS SNI', 'how.quic_sni': 'QUIC SNI', 'how.http_host': 'HTTP Host', 'how.dns': 'DNS',
      'how.port': 'port',
      'ev.new': 'new', 'ev.update': 'update', 'ev.rejudged': 'rejudged', 'ev.end': 'end', 'ev.live': 'live',
      't.notEnforced': 'mirror: not enforced', 't.loggedBy': 'logged by {r}',
      'rules.origin': 'Origin',
      'rules.editor': 'Editor', 'rules.import': 'Import file…',
      'rules.validate': 'Validate', 'rules.push': 'Push', 'rules.history': 'History',
      'rules.rollback': 'Rollback', 'rules.isCurrent': 'current', 'rules.line': 'line {n}',
      'rules.validating': 'Validating…', 'rules.pushing': 'Pushing…', 'rules.rollingBack': 'Rolling back…',
      'rules.rollbackFailed': 'Rollback failed: {m}',
      'confirm.ok': 'Confirm', 'confirm.cancel': 'Cancel',
      'cat.streaming': 'streaming', 'cat.im': 'im', 'cat.gaming': 'gaming', 'cat.web': 'web',
      'cat.unknown': 'unknown', 'cat.other': 'other',
      'err.forbidden': 'admin role required', 'err.network': 'network error: {m}',
      'err.http': 'HTTP {s}: {m}',
    },
    zh: {
      'top.logout': '退出登录',
      'login.title': '登录',
      'login.token': '访问令牌',
      'login.button': '登录',
      'login.invalid': '令牌无效',
      'login.empty': '请输入令牌',
      'tab.traffic': '流量', 'tab.rules': '规则',
      'f.workload': '工作负载', 'f.action': '动作',
      'f.q': '搜索', 'f.qph': '主机名、地址、规则…', 'f.apply': '筛选', 'f.reset': '重置',
      'f.any': '全部', 'f.all': '全部',
      'live.poll': '每 2 秒刷新',
      'col.updated_at': '更新于', 'col.workload': '工作负载', 'col.flow': '流', 'col.app': '应用',
      'col.category': '类别 / 识别方式', 'col.action': '动作', 'col.rule': '规则',
      'col.out': '出向 字节 / 包', 'col.in': '入向 字节 / 包', 'col.first_seen': '首次出现',
      'col.event': '事件',
      'v.allow': '允许', 'v.deny': '禁止', 'v.reject': '拒绝', 'v.shape': '整形',
      'v.rate-limit': '限速', 'v.would allow': '将允许', 'v.would deny': '将禁止',
      'dir.ingress': '入向', 'dir.egress': '出向',
      'how.sni': 'TLS SNI', 'how.quic_sni': 'QUIC SNI', 'how.http_host': 'HTTP Host', 'how.dns': 'DNS',
      'how.port': '端口',
      'ev.new': '新建', 'ev.update': '更新', 'ev.rejudged': '重新判定', 'ev.end': '结束', 'ev.live': '活动',
      't.notEnforced': '镜像：未执行', 't.loggedBy': '由 {r} 记录',
      'rules.origin': '来源',
      'rules.editor': '编辑器', 'rules.import': '导入文件…',
      'rules.validate': '规则校验', 'rules.push': '下发', 'rules.history': '历史版本',
      'rules.rollback': '回滚', 'rules.isCurrent': '当前', 'rules.line': '第 {n} 行',
      'rules.validating': '校验中…', 'rules.pushing': '下发中…', 'rules.rollingBack': '回滚中…',
      'rules.rollbackFailed': '回滚失败：{m}',
      'confirm.ok': '确认', 'confirm.cancel': '取消',
      'cat.streaming': '流媒体', 'cat.im': '即时通讯', 'cat.gaming': '游戏', 'cat.web': '网页',
      'cat.unknown': '未知', 'cat.other': '其他',
      'err.forbidden': '需要管理员权限', 'err.network': '网络错误：{m}',
      'err.http': 'HTTP {s}：{m}',
    },
  };

  let I18N = BASE;
  let lang = 'en';

  // Adds a page's texts to the shared ones; a page's text wins over a shared one.
  function i18n(dict) {
    I18N = {};
    for (const l of new Set([...Object.keys(BASE), ...Object.keys(dict)])) {
      I18N[l] = { ...(BASE[l] || {}), ...(dict[l] || {}) };
    }
    lang = I18N[localStorage.getItem('gw.lang')] ? localStorage.getItem('gw.lang') : 'en';
  }

  // t('key', {var}) -> translated text; unknown keys fall back to English, then to the key.
  function t(key, vars) {
    let s = I18N[lang][key] ?? I18N.en[key] ?? key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
    return s;
  }
  // Translate a server value if we know it (e.g. 'v.deny'), else show it as is.
  const tv = (prefix, value) => (value == null ? '' : (I18N.en[prefix + value] ? t(prefix + value) : String(value)));

  // ---------------------------------------------------------------- DOM helpers

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  // el('td', {class: 'x', 'data-a': v}, 'text', childNode, ...): strings become text nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    return fill(e, ...children);
  }
  // Replace a node's children; same child rules as el().
  function fill(node, ...children) {
    node.replaceChildren();
    for (const c of children.flat()) {
      if (c == null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      e.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function toast(msg, kind = 'error') {
    const box = el('div', { class: 'toast ' + kind }, msg);
    $('#toasts').append(box);
    setTimeout(() => box.remove(), kind === 'error' ? 6000 : 3500);
  }

  // In-page confirmation dialog; resolves true when #confirm-ok is clicked.
  function askConfirm(text, okLabel) {
    const d = $('#confirm');
    $('#confirm-text').textContent = text;
    $('#confirm-ok').textContent = okLabel || t('confirm.ok');
    d.returnValue = '';
    d.showModal();
    return new Promise((resolve) => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    });
  }

  // ---------------------------------------------------------------- formatting

  const pad = (n, w = 2) => String(n).padStart(w, '0');
  const toMs = (v) => (typeof v === 'number' ? v : Date.parse(v));

  // Local time HH:MM:SS, with the date in front when it is not today.
  function fmtTime(v) {
    const ms = toMs(v);
    if (!Number.isFinite(ms)) return '';
    const d = new Date(ms);
    const now = new Date();
    const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const today = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
    return today ? hms : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
  }
  function fmtTimeFull(v) {
    const ms = toMs(v);
    if (!Number.isFinite(ms)) return '';
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }
  function fmtBytes(n) {
    if (n == null || !Number.isFinite(n)) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(Math.abs(n) < 10 ? 1 : 0)) + ' ' + units[i];
  }
  const fmtCount = (n) => (Number.isFinite(n) ? n.toLocaleString('en-US') : '—');

  // ---------------------------------------------------------------- verdict records

  function actionCell(r) {
    const enforced = r.enforced !== false;
    const label = enforced ? r.action : (r.verdict || r.action);
    const badge = el('span', {
      class: 'badge ' + (r.action === 'deny' ? 'deny' : 'allow') + (enforced ? '' : ' dry'),
      title: enforced ? null : t('t.notEnforced'),
    }, tv('v.', label));
    const detail = r.detail && r.detail !== r.action ? el('div', { class: 'detail' }, tv('v.', r.detail)) : null;
    return el('td', { class: 'nowrap' }, badge, detail);
  }

  // The cells of one verdict record, from "updated at" to "event".
  function recordCells(r) {
    return [
      el('td', { class: 'nowrap mono', title: fmtTimeFull(r.updated_at) }, fmtTime(r.updated_at)),
      el('td', { class: 'nowrap' }, r.workload,
        r.mode && r.mode !== 'inline' ? el('span', { class: 'tag' }, r.mode) : null),
      el('td', { class: 'mono nowrap flow' },
        el('div', null, el('span', { class: 'proto' }, (r.proto || '').toUpperCase()), ' ', r.src,
          r.direction ? [' ', el('span', { class: 'dir' }, tv('dir.', r.direction))] : null),
        el('div', null, el('span', { class: 'arrow' }, '→ '), r.dst)),
      el('td', { class: 'app' }, el('strong', null, r.app || '—'),
        r.host ? el('div', { class: 'host muted' }, r.host) : null),
      el('td', { class: 'nowrap' }, r.category ? tv('cat.', r.category) : '—',
        r.how ? el('div', { class: 'how muted' }, tv('how.', r.how)) : null),
      actionCell(r),
      el('td', { class: 'mono nowrap', title: r.logged_by ? t('t.loggedBy', { r: r.logged_by }) : null },
        r.rule || '', r.logged_by ? el('span', { class: 'tag' }, 'log') : null),
      el('td', { class: 'r mono nowrap' }, fmtBytes(r.bytes_out), el('div', { class: 'pkts' }, fmtCount(r.packets_out) + ' pkt')),
      el('td', { class: 'r mono nowrap' }, fmtBytes(r.bytes_in), el('div', { class: 'pkts' }, fmtCount(r.packets_in) + ' pkt')),
      el('td', { class: 'nowrap mono muted', title: fmtTimeFull(r.first_seen) }, fmtTime(r.first_seen)),
      el('td', { class: 'muted nowrap' }, tv('ev.', r.event)),
    ];
  }

  // ---------------------------------------------------------------- rules editor

  // The line numbers beside #rules-editor; `errLines` are marked.
  function gutter(errLines) {
    const ta = $('#rules-editor');
    const n = ta.value.split('\n').length;
    const g = $('#rules-gutter');
    const items = [];
    for (let i = 1; i <= n; i++) items.push(el('div', { class: errLines.has(i) ? 'err' : null, 'data-line': i }, i));
    g.replaceChildren(...items);
    g.scrollTop = ta.scrollTop;
  }

  // Selects line `n` of #rules-editor and scrolls it into view.
  function gotoLine(n) {
    const ta = $('#rules-editor');
    const lines = ta.value.split('\n');
    let start = 0;
    for (let i = 0; i < n - 1 && i < lines.length; i++) start += lines[i].length + 1;
    const end = start + (lines[n - 1] || '').length;
    ta.focus();
    ta.setSelectionRange(start, end);
    const lh = parseFloat(getComputedStyle(ta).lineHeight) || 18;
    ta.scrollTop = Math.max(0, (n - 4) * lh);
    $('#rules-gutter').scrollTop = ta.scrollTop;
  }

  // #rules-status: its state, its text, and 'ok' / 'bad' from `classes` (state -> class).
  function ruleStatus(classes, state, text) {
    const s = $('#rules-status');
    s.dataset.state = state;
    s.textContent = text || '';
    s.className = 'status ' + (classes[state] || '');
  }

  // ---------------------------------------------------------------- API

  const S = {
    token: null, role: null, subject: null, tab: null,
    polls: {},          // name -> handle of a running poll loop
  };

  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.error ? body.error : `HTTP ${status}`);
      this.status = status;
      this.body = body || {};
    }
  }

  // api(path, {method, body, text, timeout}): `body` is sent as JSON, `text` as
  // the raw body; with `timeout` (ms) a request that takes longer is given up.
  async function api(path, { method = 'GET', body, text, token = S.token, timeout } = {}) {
    const session = S.token;
    const headers = { Authorization: 'Bearer ' + token, Accept: 'application/json' };
    if (text !== undefined) headers['Content-Type'] = 'text/plain; charset=utf-8';
    else if (body !== undefined) headers['Content-Type'] = 'application/json';
    const ac = timeout ? new AbortController() : null;
    const timer = ac ? setTimeout(() => ac.abort(), timeout) : null;
    let res, raw;
    try {
      res = await fetch(path, {
        method, headers, cache: 'no-store',
        body: text !== undefined ? text : (body === undefined ? undefined : JSON.stringify(body)),
        signal: ac ? ac.signal : undefined,
      });
      raw = await res.text();
    } catch (e) {
      if (ac && ac.signal.aborted) throw new Error(t('err.timeout', { s: Math.round(timeout / 1000) }));
      throw e;
    } finally {
      if (timer) clearTimeout(timer);
    }
    let data = null;
    if (raw) { try { data = JSON.parse(raw); } catch { data = { error: raw.slice(0, 200) }; } }
    if (token === session && S.token !== session) throw new ApiError(0, { error: 'logged out' }); // stale answer
    if (res.status === 401 && token === S.token) sessionExpired();
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }

  function errText(e) {
    if (e instanceof ApiError) {
      if (e.status === 403) return t('err.forbidden');
      if (e.status === 401) return t('login.invalid');
      return e.body.error ? String(e.body.error) : t('err.http', { s: e.status, m: '' });
    }
    return t('err.network', { m: e && e.message ? e.message : String(e) });
  }
  function report(e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 0)) return; // back at login already
    toast(errText(e));
  }

  // Repeating poll (setTimeout chain, so calls never overlap).
  function startPoll(name, fn, ms) {
    stopPoll(name);
    const h = { timer: null };
    S.polls[name] = h;
    const tick = async () => {
      try { await fn(); } catch (e) { report(e); }
      if (S.polls[name] === h) h.timer = setTimeout(tick, ms);
    };
    tick();
  }
  function stopPoll(name) {
    const h = S.polls[name];
    if (h) { clearTimeout(h.timer); delete S.polls[name]; }
  }

  // ---------------------------------------------------------------- login / session

  // The page's own parts, given to start().
  let page = null;

  async function login(token) {
    const errBox = $('#login-error');
    errBox.hidden = true;
    if (!token) { showLoginError(t('login.empty')); return; }
    let who;
    try {
      who = await api('/api/v1/whoami', { token });
    } catch (e) {
      showLoginError(e instanceof ApiError && e.status === 401 ? t('login.invalid') : errText(e));
      sessionStorage.removeItem(page.tokenKey);
      return;
    }
    S.token = token;
    S.role = who.role;
    S.subject = who.subject;
    sessionStorage.setItem(page.tokenKey, token);
    enterApp();
  }

  function showLoginError(msg) {
    const errBox = $('#login-error');
    errBox.textContent = msg;
    errBox.hidden = false;
  }

  function enterApp() {
    $('#login-view').hidden = true;
    $('#app').hidden = false;
    $('#logout').hidden = false;
    $(page.info).hidden = false;
    const who = $('#whoami');
    who.replaceChildren(el('span', { class: 'role role-' + S.role }, S.role), ' ', el('span', { class: 'muted' }, S.subject || ''));
    who.hidden = false;
    document.body.classList.toggle('viewer', S.role !== 'admin');
    $('#token').value = '';
    page.enter();
  }

  function logout(message) {
    S.token = null;
    S.role = null;
    sessionStorage.removeItem(page.tokenKey);
    for (const name of Object.keys(S.polls)) stopPoll(name);
    page.leave();
    $('#app').hidden = true;
    $('#logout').hidden = true;
    $('#whoami').hidden = true;
    $(page.info).hidden = true;
    $('#login-view').hidden = false;
    $('#login-error').hidden = true;
    if (message) showLoginError(message);
    $('#token').focus();
  }

  function sessionExpired() {
    if (S.token) logout(t('login.invalid'));
  }

  // ---------------------------------------------------------------- tabs

  function showTab(name) {
    S.tab = name;
    for (const b of $$('[data-tab]')) b.setAttribute('aria-selected', String(b.dataset.tab === name));
    for (const p of $$('[data-panel]')) p.hidden = p.dataset.panel !== name;
    history.replaceState(null, '', '#' + name);
    page.tab(name);
  }

  // The tab named in the address (#rules), else the first one.
  function showTabOfHash() {
    const names = $$('[data-tab]').map((b) => b.dataset.tab);
    const want = location.hash.slice(1);
    showTab(names.includes(want) ? want : names[0]);
  }

  // ---------------------------------------------------------------- language

  function applyLang() {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    for (const e of $$('[data-i18n]')) e.textContent = t(e.dataset.i18n);
    for (const e of $$('[data-i18n-ph]')) e.placeholder = t(e.dataset.i18nPh);
    $('#lang').value = lang;
    if (S.token) page.rerender();
  }

  // ---------------------------------------------------------------- wiring

  // p: {tokenKey (sessionStorage key of the token), info (selector of the top
  // bar's status box), enter() after a login, leave() on logout, tab(name) when a
  // tab is shown, rerender() on a language switch, wire() to bind the page's controls}.
  function start(p) {
    page = p;
    $('#login-form').addEventListener('submit', (ev) => { ev.preventDefault(); login($('#token').value.trim()); });
    $('#logout').addEventListener('click', () => logout());
    $('#lang').addEventListener('change', (ev) => {
      lang = I18N[ev.target.value] ? ev.target.value : 'en';
      localStorage.setItem('gw.lang', lang);
      applyLang();
    });
    for (const b of $$('[data-tab]')) b.addEventListener('click', () => showTab(b.dataset.tab));
    page.wire();

    applyLang();
    const saved = sessionStorage.getItem(page.tokenKey);
    if (saved) {
      login(saved).then(() => { if (!S.token) $('#login-view').hidden = false; });
    } else {
      $('#login-view').hidden = false;
      $('#token').focus();
    }
  }

  return {
    i18n, t, tv, $, $$, el, fill, setAttrs, toast, askConfirm,
    pad, toMs, fmtTime, fmtTimeFull, fmtBytes, fmtCount,
    actionCell, recordCells, gutter, gotoLine, ruleStatus,
    S, ApiError, api, errText, report, startPoll, stopPoll, sessionExpired,
    showTab, showTabOfHash, start,
  };
})();
