// guardwire controller page: login, rules (editor, validate, diff, push, history,
// rollback), nodes (health, desired vs applied, realization), traffic (merged
// verdict records of chosen nodes). Plain ES2020, no dependencies. Server strings
// are only ever inserted as text (textContent / createTextNode / setAttribute),
// never parsed as HTML. Same look and conventions as the node's page.
'use strict';

(() => {
  // ---------------------------------------------------------------- i18n

  const I18N = {
    en: {
      'top.controller': 'controller',
      'top.nodes': '{a} of {n} nodes alive', 'top.etcdOk': 'etcd ok', 'top.etcdBad': 'etcd: {m}',
      'login.subtitle': 'Cluster controller: rules for every node',
      'tab.nodes': 'Nodes',
      'rs.name': 'Rule set', 'rs.open': 'Open', 'rs.revision': 'Revision', 'rs.rules': 'Rules',
      'rs.nodes': 'Applies to', 'rs.at': 'At', 'rs.by': 'By', 'rs.hash': 'Hash',
      'rs.allNodes': 'every node', 'rs.none': 'not pushed yet',
      'rs.realized': 'realized on {r} of {t} nodes',
      'rules.readonly': 'read only', 'rules.dirty': 'edited',
      'rules.revert': 'Reset to loaded',
      'rules.diff': 'Diff',
      'rules.noHistory': 'No history yet.',
      'rules.loading': 'Loading {s}…',
      'rules.loadedSet': 'Loaded {s} at revision {r}.',
      'rules.newSet': 'There is no rule set {s} yet: Push creates it.',
      'rules.diffing': 'Comparing…',
      'rules.valid': 'Valid: {n} rules ({w}). Nothing pushed.',
      'rules.invalid': 'Invalid, nothing pushed: {m}',
      'rules.pushed': 'Pushed {s}: revision {r}, {n} rules. The nodes apply it now.',
      'rules.pushFailed': 'Push refused, nothing changed: {m}',
      'rules.conflict': 'Push refused: someone else pushed {s} since you loaded revision {r}.',
      'rules.conflictNow': 'Someone else pushed {s} (now revision {now}) since you loaded revision {r}. Your text is still in the editor; nothing of it was pushed.',
      'rules.conflictDiff': 'Compare with theirs',
      'rules.reload': 'Reload (discard my edits)',
      'rules.stale': '{s} moved on to revision {now} (by {by}) while you were editing revision {r}.',
      'rules.rolledBack': 'Rolled back {s} to revision {from}: now revision {r}.',
      'rules.imported': 'Loaded {f} into the editor (not validated yet).',
      'rules.confirmRollback': 'Roll {s} back to revision {r}? Its text is pushed again as a new revision, to every node it selects.',
      'rules.confirmDiscard': 'Discard your edits and open {s}?',
      'rules.confirmPushLabel': 'Roll back',
      'rules.diffTitle': 'Diff against the pushed set',
      'rules.diffHint': 'Press Diff to compare the editor with the rule set in the store.',
      'rules.diffFor': 'Editor vs {s} revision {r} (as stored now).',
      'rules.diffNew': 'Editor vs nothing: {s} does not exist yet.',
      'rules.diffSame': 'No difference: the editor holds what is pushed.',
      'rules.diffStats': '+{a} −{d} lines',
      'rules.diffed': 'Diff: +{a} −{d} lines.',
      'confirm.discard': 'Discard',
      'nodes.summary': 'Rule sets', 'nodes.empty': 'No node has reported yet.',
      'nodes.noSets': 'No rule set has been pushed yet.',
      'nodes.hint': 'A node is down when its status lease lapsed (10 s without a word). Refreshes every 2 s.',
      'nodes.rev': 'revision {r}', 'nodes.updated': 'updated {t}',
      'n.name': 'Node', 'n.labels': 'Labels', 'n.health': 'Health', 'n.ruleset': 'Rule set',
      'n.desired': 'Desired rev.', 'n.applied': 'Applied rev.', 'n.error': 'Error', 'n.workloads': 'Workloads',
      'n.dropRate': 'Drop rate', 'n.version': 'Version', 'n.appliedAt': 'Applied at', 'n.page': 'Node page',
      'n.alive': 'alive', 'n.down': 'down', 'n.open': 'open', 'n.noSet': 'none selects it',
      'n.mismatch': 'applied {a}, desired {d}', 'n.errorAt': 'at revision {r}',
      'tr.nodes': 'Nodes', 'tr.all': 'all', 'tr.none': 'none', 'tr.auto': 'auto-refresh', 'tr.refresh': 'Refresh',
      'tr.empty': 'No records match.', 'tr.count': '{n} records from {k} nodes',
      'tr.noNodes': 'Choose at least one node.',
      'tr.took': 'answers: {list}',
      'tr.failed': '{n}: no answer ({m}). Its records are left out.',
      'tr.openNode': 'open {n}\'s own page',
      'live.off': 'not refreshing', 'live.loading': 'loading…',
      'live.error': 'refresh failed', 'live.paused': 'paused',
      'col.node': 'Node',
      'ev.evicted': 'evicted', 'ev.suppressed': 'suppressed',
      'err.timeout': 'no answer within {s} s',
    },
    zh: {
      'top.controller': '控制器',
      'top.nodes': '{n} 个节点中 {a} 个在线', 'top.etcdOk': 'etcd 正常', 'top.etcdBad': 'etcd：{m}',
      'login.subtitle': '集群控制器：下发到每个节点的规则',
      'tab.nodes': '节点',
      'rs.name': '规则集', 'rs.open': '打开', 'rs.revision': '修订号', 'rs.rules': '规则数',
      'rs.nodes': '适用于', 'rs.at': '时间', 'rs.by': '操作者', 'rs.hash': '哈希',
      'rs.allNodes': '全部节点', 'rs.none': '尚未下发',
      'rs.realized': '已在 {t} 个节点中的 {r} 个生效',
      'rules.readonly': '只读', 'rules.dirty': '已修改',
      'rules.revert': '恢复为载入的版本',
      'rules.diff': '差异',
      'rules.noHistory': '尚无历史版本。',
      'rules.loading': '正在载入 {s}…',
      'rules.loadedSet': '已载入 {s}，修订号 {r}。',
      'rules.newSet': '规则集 {s} 尚不存在：下发即可创建。',
      'rules.diffing': '比较中…',
      'rules.valid': '校验通过：{n} 条规则（{w}）。未下发。',
      'rules.invalid': '校验未通过，未下发：{m}',
      'rules.pushed': '已下发 {s}：修订号 {r}，{n} 条规则。各节点正在应用。',
      'rules.pushFailed': '下发被拒绝，未做任何更改：{m}',
      'rules.conflict': '下发被拒绝：自您载入修订号 {r} 以来，已有其他人下发了 {s}。',
      'rules.conflictNow': '自您载入修订号 {r} 以来，已有其他人下发了 {s}（当前修订号 {now}）。您的文本仍在编辑器中，未下发任何内容。',
      'rules.conflictDiff': '与对方版本比较',
      'rules.reload': '重新载入（放弃我的修改）',
      'rules.stale': '在您编辑修订号 {r} 期间，{s} 已更新到修订号 {now}（操作者 {by}）。',
      'rules.rolledBack': '已将 {s} 回滚到修订号 {from}：当前修订号 {r}。',
      'rules.imported': '已将 {f} 载入编辑器（尚未校验）。',
      'rules.confirmRollback': '将 {s} 回滚到修订号 {r}？其文本将作为新的修订再次下发到它选中的每个节点。',
      'rules.confirmDiscard': '放弃您的修改并打开 {s}？',
      'rules.confirmPushLabel': '回滚',
      'rules.diffTitle': '与已下发规则集的差异',
      'rules.diffHint': '点击“差异”将编辑器内容与存储中的规则集比较。',
      'rules.diffFor': '编辑器 对比 {s} 修订号 {r}（存储中的当前版本）。',
      'rules.diffNew': '编辑器 对比 空：{s} 尚不存在。',
      'rules.diffSame': '没有差异：编辑器内容与已下发的相同。',
      'rules.diffStats': '+{a} −{d} 行',
      'rules.diffed': '差异：+{a} −{d} 行。',
      'confirm.discard': '放弃',
      'nodes.summary': '规则集', 'nodes.empty': '尚无节点上报状态。',
      'nodes.noSets': '尚未下发任何规则集。',
      'nodes.hint': '节点状态租约过期（10 秒无上报）即视为离线。每 2 秒刷新。',
      'nodes.rev': '修订号 {r}', 'nodes.updated': '更新于 {t}',
      'n.name': '节点', 'n.labels': '标签', 'n.health': '健康状态', 'n.ruleset': '规则集',
      'n.desired': '期望修订号', 'n.applied': '已应用修订号', 'n.error': '错误', 'n.workloads': '工作负载',
      'n.dropRate': '丢包率', 'n.version': '版本', 'n.appliedAt': '应用于', 'n.page': '节点页面',
      'n.alive': '在线', 'n.down': '离线', 'n.open': '打开', 'n.noSet': '没有规则集选中',
      'n.mismatch': '已应用 {a}，期望 {d}', 'n.errorAt': '修订号 {r}',
      'tr.nodes': '节点', 'tr.all': '全选', 'tr.none': '全不选', 'tr.auto': '自动刷新', 'tr.refresh': '刷新',
      'tr.empty': '没有匹配的记录。', 'tr.count': '来自 {k} 个节点的 {n} 条记录',
      'tr.noNodes': '请至少选择一个节点。',
      'tr.took': '应答：{list}',
      'tr.failed': '{n}：无应答（{m}）。其记录未包含在内。',
      'tr.openNode': '打开 {n} 自己的页面',
      'live.off': '未刷新', 'live.loading': '载入中…',
      'live.error': '刷新失败', 'live.paused': '已暂停',
      'col.node': '节点',
      'ev.evicted': '被逐出', 'ev.suppressed': '已省略',
      'err.timeout': '{s} 秒内无应答',
    },
  };

  GW.i18n(I18N);
  const { t, tv, $, $$, el, askConfirm, toMs, fmtTime, fmtTimeFull, fmtBytes, fmtCount,
    S, ApiError, errText, report, startPoll, stopPoll } = GW;

  // ---------------------------------------------------------------- links

  // A link to a node's own page, only for http(s) addresses (a status is written
  // by a node, so its `api` is not trusted to be a harmless URL).
  function nodeHref(api, hash) {
    if (!api) return null;
    try {
      const u = new URL(String(api), location.href);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
      u.pathname = '/';
      u.search = '';
      u.hash = hash || '';
      return u.href;
    } catch { return null; }
  }
  function nodeLink(name, api, hash, cls) {
    const href = nodeHref(api, hash);
    if (!href) return el('span', { class: cls || null }, name);
    return el('a', { href, target: '_blank', rel: 'noopener noreferrer', class: ('ext ' + (cls || '')).trim(),
      title: t('tr.openNode', { n: name }) + ' (' + href + ')', 'data-node-link': name }, name);
  }

  // ---------------------------------------------------------------- formatting

  // drop_rate: dropped frames per second over the node's last window.
  function fmtRate(v) {
    if (v == null || !Number.isFinite(Number(v))) return '—';
    const n = Number(v);
    if (n === 0) return '0 /s';
    return (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)) + ' /s';
  }
  const short = (h, n = 12) => (h ? String(h).slice(0, n) : '');

  // ---------------------------------------------------------------- API

  S.nodes = null;       // last GET /nodes answer
  const REQUEST_TIMEOUT_MS = 10000;   // the page never hangs on the controller

  // api(path, {method, text}): `text` is sent as the raw body (rule text).
  const api = (path, opts = {}) => GW.api(path, { timeout: REQUEST_TIMEOUT_MS, ...opts });

  const setPath = (name, ...rest) => '/api/v1/rulesets/' + encodeURIComponent(name) + rest.join('');

  // ---------------------------------------------------------------- session

  function enterApp() {
    $('#rules-editor').readOnly = S.role !== 'admin';
    startPoll('top', pollTop, 5000);
    GW.showTabOfHash();
    rules.open($('#rs-name').value.trim() || 'default', { force: true }).catch(report);
  }

  function leaveApp() {
    S.nodes = null;
    for (const m of [rules, nodes, traffic]) m.reset();
  }

  // Top bar: etcd health and how many nodes are alive.
  let lastHealth = null;
  async function pollTop() {
    const [health, list] = await Promise.all([
      api('/api/v1/health').catch((e) => ({ ok: false, etcd: errText(e) })),
      S.tab === 'nodes' || S.tab === 'rules' ? Promise.resolve(null) : nodes.fetch(),
    ]);
    lastHealth = health;
    renderTop(list || S.nodes);
  }
  function renderTop(list) {
    const hb = $('#ctl-health');
    if (lastHealth) {
      const ok = lastHealth.etcd === 'ok';
      hb.textContent = ok ? t('top.etcdOk') : t('top.etcdBad', { m: lastHealth.etcd ?? '?' });
      hb.className = 'badge ' + (ok ? 'ok' : 'deny');
      hb.dataset.ok = String(ok);
    }
    if (list && list.nodes) {
      const alive = list.nodes.filter((n) => n.alive).length;
      $('#ctl-nodes').textContent = t('top.nodes', { a: alive, n: list.nodes.length });
    }
  }

  // ---------------------------------------------------------------- tabs

  // Tab `name` is shown now (GW.showTab).
  function onTab(name) {
    stopPoll('nodes');
    stopPoll('rules');
    traffic.stopAuto();
    if (name === 'nodes') startPoll('nodes', nodes.poll, 2000);
    if (name === 'rules') startPoll('rules', rules.poll, 3000);
    if (name === 'traffic') traffic.enter();
  }

  // ---------------------------------------------------------------- rules

  const rules = (() => {
    // What the editor was loaded from: {name, revision (null: the set does not exist), text, doc}.
    let loaded = null;
    let hist = [];
    let errLines = new Set();
    let busy = false;
    let openSeq = 0;
    let lastDiff = null;   // {diff, name, revision} for re-rendering on a language switch

    const editor = () => $('#rules-editor');
    const name = () => ($('#rs-name').value.trim() || 'default');
    const dirty = () => loaded != null && editor().value !== loaded.text;

    const STATUS = { valid: 'ok', pushed: 'ok', 'rolled-back': 'ok', diffed: 'ok',
      invalid: 'bad', 'push-failed': 'bad', conflict: 'bad', 'rollback-failed': 'bad', 'load-failed': 'bad' };
    const status = (state, text) => GW.ruleStatus(STATUS, state, text);

    function markDirty() {
      $('#rules-dirty').hidden = !dirty();
    }

    // errors: [{line, key, message}]; a line of 0 or null means unknown.
    function showErrors(errors) {
      const lineOf = (e) => (Number.isInteger(e.line) && e.line > 0 ? e.line : null);
      errLines = new Set(errors.map(lineOf).filter((n) => n != null));
      $('#rules-errors').replaceChildren(...errors.map((e) => {
        const line = lineOf(e);
        const msg = e.message ?? e.error ?? '';
        const parts = [];
        // A message may already say "name:line: key: ..." itself.
        const located = line != null && msg.includes(`:${line}:`);
        if (line != null && !located) parts.push(t('rules.line', { n: line }));
        if (e.key && !located && !msg.includes(e.key)) parts.push(e.key);
        parts.push(msg);
        const li = el('li', { 'data-line': line, 'data-key': e.key ?? null }, parts.join(': '));
        if (line != null) li.addEventListener('click', () => gotoLine(line));
        return li;
      }));
      gutter();
    }

    function apiErrors(e) {
      if (e instanceof ApiError && e.status === 400 && e.body && e.body.error) {
        return [{ line: e.body.line, key: e.body.key ?? e.body.field, message: e.body.error }];
      }
      return [];
    }

    const gutter = () => GW.gutter(errLines);
    const gotoLine = GW.gotoLine;

    function renderMeta() {
      const d = loaded && loaded.doc;
      const rev = $('#rs-revision');
      rev.textContent = d ? String(d.revision) : (loaded ? t('rs.none') : '');
      rev.dataset.revision = d ? String(d.revision) : '';
      $('#rs-rules').textContent = d ? String(d.rules) : '—';
      $('#rs-nodes').textContent = d ? ((d.nodes || []).length ? d.nodes.join(', ') : t('rs.allNodes')) : '—';
      $('#rs-at').textContent = d && d.at ? fmtTime(d.at) : '—';
      $('#rs-at').title = d && d.at ? fmtTimeFull(d.at) : '';
      $('#rs-by').textContent = d && d.by ? d.by : '—';
      const h = $('#rs-hash');
      h.textContent = d ? short(d.hash, 16) : '—';
      h.title = d && d.hash ? d.hash : '';
      renderRealized();
    }

    // "realized on N of M nodes" for the open set, from the last /nodes answer.
    function renderRealized() {
      const box = $('#rs-realized');
      const s = S.nodes && loaded && loaded.doc && (S.nodes.summary || []).find((x) => x.ruleset === loaded.name);
      if (!s) { box.hidden = true; return; }
      box.hidden = false;
      box.textContent = t('rs.realized', { r: s.realized, t: s.total });
      box.dataset.realized = s.realized;
      box.dataset.total = s.total;
      box.dataset.revision = s.revision;
      box.dataset.complete = String(s.total > 0 && s.realized === s.total);
    }

    function renderHistory() {
      const cur = loaded && loaded.doc ? loaded.doc.revision : null;
      $('#rules-history-empty').hidden = hist.length > 0;
      $('#rules-history tbody').replaceChildren(...hist.map((h) => {
        let action = '';
        if (h.revision === cur) action = el('span', { class: 'tag' }, t('rules.isCurrent'));
        else if (S.role === 'admin') {
          action = el('button', { type: 'button', class: 'rollback small-btn', 'data-revision': h.revision }, t('rules.rollback'));
          action.addEventListener('click', () => rollback(h.revision));
        }
        return el('tr', { 'data-revision': h.revision, class: h.revision === cur ? 'current' : null },
          el('td', { class: 'r mono' }, h.revision),
          el('td', { class: 'nowrap', title: fmtTimeFull(h.at) }, fmtTime(h.at)),
          el('td', null, h.by || ''),
          el('td', null, h.origin || ''),
          el('td', { class: 'r' }, h.rules ?? ''),
          el('td', { class: 'mono', title: h.hash || '' }, short(h.hash)),
          el('td', { class: 'r' }, action));
      }));
    }

    function renderNames(list) {
      const names = (list || []).map((x) => x.name).sort();
      $('#rs-names').replaceChildren(...names.map((n) => el('option', { value: n })));
    }

    function hideBanners() {
      $('#rules-conflict').hidden = true;
      $('#rules-stale').hidden = true;
    }

    // GET the set (null when it does not exist).
    async function fetchSet(n) {
      try {
        return await api(setPath(n));
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) return null;
        throw e;
      }
    }
    async function fetchHistory(n) {
      try {
        return await api(setPath(n, '/history'));
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) return [];
        throw e;
      }
    }

    // Opens rule set `n` into the editor. Unsaved edits are kept when the set does
    // not exist yet (they become its first text); opening an existing set over
    // edits asks first, unless `force`.
    let opening = null;   // {n, promise}: the Open button and the name's change event may both ask
    function open(n, opts = {}) {
      if (opening && opening.n === n && !opts.force) return opening.promise;
      const promise = openNow(n, opts).finally(() => { if (opening && opening.promise === promise) opening = null; });
      opening = { n, promise };
      return promise;
    }

    async function openNow(n, { force = false, keepStatus = false } = {}) {
      const my = ++openSeq;
      $('#rs-name').value = n;
      if (!keepStatus) status('loading', t('rules.loading', { s: n }));
      let doc, h;
      try {
        [doc, h] = await Promise.all([fetchSet(n), fetchHistory(n)]);
      } catch (e) {
        if (my === openSeq) status('load-failed', errText(e));
        throw e;
      }
      if (my !== openSeq) return;
      if (doc && dirty() && !force) {
        if (!await askConfirm(t('rules.confirmDiscard', { s: n }), t('confirm.discard'))) {
          if (loaded) $('#rs-name').value = loaded.name;
          status('idle', '');
          return;
        }
      }
      if (my !== openSeq) return;
      const ta = editor();
      if (doc) {
        ta.value = doc.text || '';
        loaded = { name: n, revision: doc.revision, text: doc.text || '', doc };
      } else {
        // Nothing stored under that name: the editor keeps its text, which is
        // "edited" as long as it is not empty (nothing of it is pushed yet).
        loaded = { name: n, revision: null, text: '', doc: null };
      }
      localStorage.setItem('gwc.set', n);
      hist = h || [];
      hideBanners();
      showErrors([]);
      clearDiff();
      renderMeta();
      renderHistory();
      markDirty();
      if (!keepStatus) {
        status(doc ? 'loaded' : 'new', doc ? t('rules.loadedSet', { s: n, r: doc.revision }) : t('rules.newSet', { s: n }));
      }
    }

    // While the rules tab is shown: the list of sets, whether the open one moved
    // on (reloaded when the editor is untouched, otherwise a banner), realization.
    async function poll() {
      const [list, nl] = await Promise.all([api('/api/v1/rulesets'), nodes.fetch().catch(() => null)]);
      renderNames(list);
      renderRealized();
      renderTop(nl || S.nodes);
      if (!loaded || busy) return;
      const cur = (list || []).find((x) => x.name === loaded.name);
      const now = cur ? cur.revision : null;
      if (now === loaded.revision) { $('#rules-stale').hidden = true; return; }
      if (!dirty()) {
        await open(loaded.name, { force: true, keepStatus: true });
        return;
      }
      if (!$('#rules-conflict').hidden) return;
      $('#rules-stale-text').textContent = t('rules.stale', { s: loaded.name, now: now ?? '—', by: (cur && cur.by) || '?',
        r: loaded.revision ?? t('rs.none') });
      $('#rules-stale').hidden = false;
    }

    async function validate() {
      showErrors([]);
      status('validating', t('rules.validating'));
      try {
        const r = await api(setPath(name(), '/validate'), { method: 'POST', text: editor().value });
        const w = (r.nodes || []).length ? r.nodes.join(', ') : t('rs.allNodes');
        status('valid', t('rules.valid', { n: r.rules, w }));
      } catch (e) {
        const errs = apiErrors(e);
        showErrors(errs);
        if (errs.length && errs[0].line) gotoLine(errs[0].line);
        status('invalid', t('rules.invalid', { m: errText(e) }));
      }
    }

    function clearDiff() {
      lastDiff = null;
      const out = $('#rules-diff-out');
      out.replaceChildren();
      out.dataset.state = 'none';
      $('#rules-diff-note').textContent = t('rules.diffHint');
    }

    function renderDiff() {
      const out = $('#rules-diff-out');
      const note = $('#rules-diff-note');
      if (!lastDiff) { clearDiff(); return { a: 0, d: 0 }; }
      const text = lastDiff.diff || '';
      let a = 0, d = 0;
      const lines = text.split('\n');
      if (lines.length && lines[lines.length - 1] === '') lines.pop();
      out.replaceChildren(...lines.map((l) => {
        let cls = 'd-ctx';
        if (l.startsWith('+++') || l.startsWith('---')) cls = 'd-meta';
        else if (l.startsWith('@@')) cls = 'd-hunk';
        else if (l.startsWith('+')) { cls = 'd-add'; a++; }
        else if (l.startsWith('-')) { cls = 'd-del'; d++; }
        else if (l.startsWith('\\')) cls = 'd-meta';
        return el('span', { class: cls }, l === '' ? ' ' : l);
      }));
      const same = a === 0 && d === 0;
      out.dataset.state = same ? 'same' : 'diff';
      out.dataset.added = a;
      out.dataset.removed = d;
      if (same) out.replaceChildren(el('span', { class: 'd-ctx' }, t('rules.diffSame')));
      note.textContent = (lastDiff.revision != null ? t('rules.diffFor', { s: lastDiff.name, r: lastDiff.revision })
        : t('rules.diffNew', { s: lastDiff.name })) + (same ? '' : '  ' + t('rules.diffStats', { a, d }));
      return { a, d };
    }

    async function diff() {
      status('diffing', t('rules.diffing'));
      const n = name();
      try {
        const r = await api(setPath(n, '/diff'), { method: 'POST', text: editor().value });
        // `revision`: what the text was compared with (0: no set of that name yet).
        const rev = r.revision !== undefined ? r.revision : (loaded && loaded.name === n ? loaded.revision : null);
        lastDiff = { diff: r.diff || '', name: n, revision: rev || null };
        const { a, d } = renderDiff();
        showErrors([]);
        status('diffed', a || d ? t('rules.diffed', { a, d }) : t('rules.diffSame'));
      } catch (e) {
        showErrors(apiErrors(e));
        status('invalid', t('rules.invalid', { m: errText(e) }));
      }
    }

    async function push() {
      if (busy) return;
      const n = name();
      const text = editor().value;
      // The revision the editor was loaded from (0: the set did not exist, so it
      // must not exist now either); a name typed but not opened is opened first.
      if (!loaded || loaded.name !== n) {
        await open(n);
        if (!loaded || loaded.name !== n) return;
      }
      const from = loaded.revision;
      const q = new URLSearchParams({ if_revision: String(from ?? 0), origin: 'page' });
      busy = true;
      hideBanners();
      showErrors([]);
      status('pushing', t('rules.pushing'));
      try {
        const r = await api(setPath(n, '?' + q), { method: 'PUT', text });
        loaded = { name: n, revision: r.revision, text, doc: null };
        await open(n, { force: true, keepStatus: true }).catch(report);
        status('pushed', t('rules.pushed', { s: n, r: r.revision, n: r.rules }));
        nodes.fetch().then(renderRealized).catch(() => {});
      } catch (e) {
        if (e instanceof ApiError && e.status === 409) {
          const cur = await fetchSet(n).catch(() => null);
          $('#rules-conflict-text').textContent = cur
            ? t('rules.conflictNow', { s: n, now: cur.revision, r: from ?? t('rs.none') })
            : t('rules.conflict', { s: n, r: from ?? t('rs.none') });
          $('#rules-conflict').hidden = false;
          $('#rules-stale').hidden = true;
          status('conflict', t('rules.conflict', { s: n, r: from ?? t('rs.none') }));
        } else {
          const errs = apiErrors(e);
          showErrors(errs);
          if (errs.length && errs[0].line) gotoLine(errs[0].line);
          status('push-failed', t('rules.pushFailed', { m: errText(e) }));
        }
      } finally {
        busy = false;
      }
    }

    async function rollback(revision) {
      const n = loaded ? loaded.name : name();
      if (!await askConfirm(t('rules.confirmRollback', { s: n, r: revision }), t('rules.confirmPushLabel'))) return;
      busy = true;
      hideBanners();
      showErrors([]);
      status('rolling-back', t('rules.rollingBack'));
      try {
        const r = await api(setPath(n, '/rollback/', encodeURIComponent(String(revision))), { method: 'POST' });
        await open(n, { force: true, keepStatus: true });
        const now = r && r.revision != null ? r.revision : (loaded && loaded.revision);
        status('rolled-back', t('rules.rolledBack', { s: n, from: revision, r: now }));
      } catch (e) {
        status('rollback-failed', t('rules.rollbackFailed', { m: errText(e) }));
      } finally {
        busy = false;
      }
    }

    async function importFile(input) {
      const f = input.files && input.files[0];
      if (!f) return;
      editor().value = await f.text();
      input.value = '';
      showErrors([]);
      markDirty();
      status('imported', t('rules.imported', { f: f.name }));
    }

    function revert() {
      if (!loaded) return;
      editor().value = loaded.text;
      showErrors([]);
      markDirty();
      hideBanners();
      status('idle', '');
    }

    async function reloadDiscarding() {
      hideBanners();
      await open(loaded ? loaded.name : name(), { force: true });
    }

    async function diffTheirs() {
      await diff();
    }

    function rerender() {
      renderMeta();
      renderHistory();
      if (lastDiff) renderDiff(); else clearDiff();
    }

    function reset() {
      loaded = null;
      hist = [];
      openSeq++;
      editor().value = '';
      showErrors([]);
      clearDiff();
      hideBanners();
      status('idle', '');
      for (const id of ['#rs-revision', '#rs-rules', '#rs-nodes', '#rs-at', '#rs-by', '#rs-hash']) $(id).textContent = '';
      $('#rs-realized').hidden = true;
      $('#rules-dirty').hidden = true;
      $('#rules-history tbody').replaceChildren();
    }

    return { open, poll, validate, diff, push, importFile, revert, reloadDiscarding, diffTheirs, gutter,
      markDirty, rerender, reset, renderRealized, name };
  })();

  // ---------------------------------------------------------------- nodes

  const nodes = (() => {
    let inflight = null;

    // GET /nodes, shared by every view (one request at a time).
    function fetchNodes() {
      if (!inflight) {
        inflight = api('/api/v1/nodes').then((d) => {
          S.nodes = d;
          traffic.knowNodes(d.nodes || []);
          return d;
        }).finally(() => { inflight = null; });
      }
      return inflight;
    }

    function setLive(state) {
      const box = $('#nodes-live');
      box.dataset.state = state;
      box.textContent = state === 'poll' && S.nodesAt
        ? t('live.poll') + ' · ' + t('nodes.updated', { t: fmtTime(S.nodesAt) }) : t('live.' + state);
    }

    function renderSummary(d) {
      const sum = [...(d.summary || [])].sort((a, b) => a.ruleset.localeCompare(b.ruleset));
      $('#nodes-summary').replaceChildren(...(sum.length ? sum.map((s) => {
        const complete = s.total > 0 && s.realized === s.total;
        const fillBar = el('div', { class: 'bar-fill' });
        fillBar.style.width = (s.total > 0 ? Math.round((100 * s.realized) / s.total) : 0) + '%';   // CSSOM, allowed by the CSP
        return el('div', { class: 'rs-sum', 'data-ruleset': s.ruleset, 'data-revision': s.revision,
          'data-realized': s.realized, 'data-total': s.total, 'data-complete': String(complete),
          'data-testid': 'summary-' + s.ruleset },
        el('div', { class: 'rs-sum-head' },
          el('span', { class: 'rs-sum-name' }, s.ruleset),
          el('span', { class: 'muted mono small' }, t('nodes.rev', { r: s.revision ?? '—' }))),
        el('div', { class: 'rs-sum-text' }, t('rs.realized', { r: s.realized, t: s.total })),
        el('div', { class: 'bar-track' }, fillBar));
      }) : [el('p', { class: 'empty' }, t('nodes.noSets'))]));
    }

    // desired / applied: 0 when no set selects the node / it applied none yet.
    const rev = (v) => (v ? v : null);

    function row(n) {
      const appliedSet = n.applied_ruleset ?? n.ruleset;
      const mismatch = !!n.ruleset && (rev(n.applied) !== rev(n.desired) || (appliedSet != null && appliedSet !== n.ruleset));
      const labels = (n.labels || []).map((l) => el('span', { class: 'tag' }, l));
      const err = n.error ? el('div', { class: 'err-text' }, String(n.error),
        n.error_revision != null ? el('div', { class: 'muted' }, t('n.errorAt', { r: n.error_revision })) : null) : '';
      return el('tr', {
        'data-node': n.name, 'data-alive': String(!!n.alive), 'data-ruleset': n.ruleset ?? '',
        'data-desired': rev(n.desired) ?? '', 'data-applied': rev(n.applied) ?? '', 'data-mismatch': String(mismatch),
        class: n.alive ? null : 'is-down',
      },
      el('td', { class: 'nowrap' }, el('strong', null, nodeLink(n.name, n.api, ''))),
      el('td', { class: 'labels' }, labels.length ? labels : el('span', { class: 'muted' }, '—')),
      el('td', null, el('span', { class: 'badge ' + (n.alive ? 'ok' : 'deny'), 'data-health': n.alive ? 'alive' : 'down' },
        n.alive ? t('n.alive') : t('n.down'))),
      el('td', { class: 'nowrap' }, n.ruleset ? n.ruleset : el('span', { class: 'muted' }, t('n.noSet'))),
      el('td', { class: 'r mono', 'data-col': 'desired' }, rev(n.desired) ?? '—'),
      el('td', { class: 'r mono' + (mismatch ? ' mismatch' : ''), 'data-col': 'applied',
        title: mismatch ? t('n.mismatch', { a: rev(n.applied) ?? '—', d: rev(n.desired) ?? '—' }) : (n.hash ? 'hash ' + n.hash : null) },
      rev(n.applied) ?? '—',
      appliedSet && appliedSet !== n.ruleset ? el('div', { class: 'small' }, appliedSet) : null),
      el('td', null, err),
      el('td', { class: 'r mono' }, n.workloads ?? '—'),
      el('td', { class: 'r mono nowrap' }, fmtRate(n.drop_rate)),
      el('td', { class: 'mono' }, n.version || '—'),
      el('td', { class: 'nowrap mono', title: fmtTimeFull(n.applied_at) }, n.applied_at ? fmtTime(n.applied_at) : '—'),
      el('td', { class: 'nowrap' }, nodeHref(n.api, '') ? el('a', { href: nodeHref(n.api, ''), target: '_blank',
        rel: 'noopener noreferrer', class: 'ext', 'data-node-page': n.name }, n.api) : el('span', { class: 'muted' }, n.api || '—')));
    }

    function render(d) {
      renderSummary(d);
      const list = [...(d.nodes || [])].sort((a, b) => a.name.localeCompare(b.name));
      $('#nodes-table tbody').replaceChildren(...list.map(row));
      $('#nodes-empty').hidden = list.length > 0;
    }

    async function poll() {
      try {
        const d = await fetchNodes();
        S.nodesAt = Date.now();
        render(d);
        renderTop(d);
        setLive('poll');
      } catch (e) {
        setLive('error');
        throw e;
      }
    }

    function rerender() {
      if (S.nodes) render(S.nodes);
      const live = $('#nodes-live');
      setLive(live.dataset.state || 'off');
    }

    function reset() {
      $('#nodes-summary').replaceChildren();
      $('#nodes-table tbody').replaceChildren();
      setLive('off');
    }

    return { fetch: fetchNodes, poll, rerender, reset };
  })();

  // ---------------------------------------------------------------- traffic

  const traffic = (() => {
    const known = new Map();     // node name -> {api, alive}; every node ever listed
    const unchecked = new Set(); // nodes the user took out (new nodes come in checked)
    let last = null;             // last GET /traffic answer
    let gen = 0;
    let auto = null;

    function knowNodes(list) {
      let changed = false;
      const names = new Set(list.map((n) => n.name));
      for (const n of list) {
        const k = known.get(n.name);
        if (!k || k.alive !== !!n.alive || k.api !== n.api) changed = true;
        known.set(n.name, { api: n.api, alive: !!n.alive });
      }
      for (const n of [...known.keys()]) if (!names.has(n)) { known.delete(n); changed = true; }
      if (changed) renderPicker();
    }

    function renderPicker() {
      const box = $('#tr-node-list');
      const names = [...known.keys()].sort();
      box.replaceChildren(...names.map((n) => {
        const cb = el('input', { type: 'checkbox', value: n, 'data-node': n, 'data-testid': 'tr-node-' + n });
        cb.checked = !unchecked.has(n);
        cb.addEventListener('change', () => {
          if (cb.checked) unchecked.delete(n); else unchecked.add(n);
          reload();
        });
        return el('label', { class: known.get(n).alive ? null : 'down', title: known.get(n).alive ? null : t('n.down') }, cb, n);
      }));
    }

    const chosen = () => [...known.keys()].filter((n) => !unchecked.has(n)).sort();

    function params() {
      const p = new URLSearchParams();
      p.set('nodes', chosen().join(','));
      p.set('limit', '200');
      const add = (k, v) => { v = v.trim(); if (v) p.set(k, v); };
      add('workload', $('#tr-workload').value);
      add('action', $('#tr-action').value);
      add('q', $('#tr-q').value);
      return p;
    }

    function setLive(state) {
      const box = $('#tr-live');
      box.dataset.state = state;
      box.textContent = t('live.' + state);
    }

    function row(r) {
      const upd = toMs(r.updated_at);
      const api = (known.get(r.node) || {}).api;
      const tr = el('tr', {
        'data-node': r.node, 'data-seq': r.seq ?? '', 'data-workload': r.workload, 'data-src': r.src, 'data-dst': r.dst,
        'data-action': r.action, 'data-verdict': r.verdict, 'data-rule': r.rule, 'data-proto': r.proto,
        'data-updated-at': Number.isFinite(upd) ? upd : '',
        class: r.action === 'deny' ? 'is-deny' : null,
      });
      tr.append(el('td', { class: 'nowrap' }, el('strong', null, nodeLink(r.node, api, '#traffic'))), ...GW.recordCells(r));
      return tr;
    }

    function render() {
      const tbody = $('#tr-table tbody');
      const banners = $('#tr-banners');
      if (!last) {
        tbody.replaceChildren();
        banners.replaceChildren();
        $('#tr-empty').hidden = true;
        $('#tr-count').textContent = '';
        $('#tr-took').textContent = '';
        return;
      }
      if (last.none) {
        tbody.replaceChildren();
        banners.replaceChildren(el('div', { class: 'banner info' },
          el('span', { class: 'msg' }, t(last.empty ? 'nodes.empty' : 'tr.noNodes'))));
        $('#tr-empty').hidden = true;
        $('#tr-count').textContent = '';
        $('#tr-took').textContent = '';
        return;
      }
      for (const n of last.nodes || []) if (n.api && known.has(n.name) && !known.get(n.name).api) known.get(n.name).api = n.api;
      // Newest first across nodes (each node's own order kept for equal times).
      const recs = [...(last.records || [])].sort((a, b) =>
        (toMs(b.updated_at) || 0) - (toMs(a.updated_at) || 0) || String(a.node).localeCompare(String(b.node)) ||
        (b.seq || 0) - (a.seq || 0));
      tbody.replaceChildren(...recs.map(row));
      $('#tr-empty').hidden = recs.length > 0;
      const answers = last.nodes || [];
      banners.replaceChildren(...answers.filter((n) => !n.ok).map((n) =>
        el('div', { class: 'banner error', role: 'alert', 'data-node': n.name, 'data-testid': 'tr-failed-' + n.name },
          el('span', { class: 'msg' }, t('tr.failed', { n: n.name, m: n.error || '?' })),
          nodeLink(n.name, (known.get(n.name) || {}).api, '#traffic', 'small'))));
      const okCount = answers.filter((n) => n.ok).length;
      $('#tr-count').textContent = t('tr.count', { n: recs.length, k: okCount });
      $('#tr-took').textContent = answers.length ? t('tr.took', {
        list: answers.map((n) => `${n.name} ${n.ok ? (n.ms != null ? Math.round(n.ms) + ' ms' : 'ok') : '✗'}`).join(' · '),
      }) : '';
    }

    async function load() {
      const my = ++gen;
      if (!known.size) await nodes.fetch().catch(() => null);
      if (my !== gen) return;
      if (!chosen().length) {
        last = { none: true, empty: known.size === 0 };
        render();
        return;
      }
      const p = params();
      const wasLive = $('#tr-live').dataset.state;
      if (wasLive !== 'poll') setLive('loading');
      try {
        const d = await api('/api/v1/traffic?' + p);
        if (my !== gen) return;
        last = d;
        render();
        setLive(auto ? 'poll' : 'paused');
      } catch (e) {
        if (my !== gen) return;
        setLive('error');
        throw e;
      }
    }

    function reload() {
      load().catch(report);
    }

    function startAuto() {
      auto = true;
      startPoll('traffic', load, 2000);
      setLive('poll');
    }
    function stopAuto() {
      stopPoll('traffic');
      auto = null;
    }

    function enter() {
      nodes.fetch().catch(report);
      if ($('#tr-auto').checked) startAuto(); else { setLive('paused'); reload(); }
    }

    function setAuto(on) {
      if (S.tab !== 'traffic') return;
      if (on) startAuto(); else { stopAuto(); setLive('paused'); }
    }

    function chooseAll(on) {
      unchecked.clear();
      if (!on) for (const n of known.keys()) unchecked.add(n);
      renderPicker();
      reload();
    }

    function rerender() {
      renderPicker();
      render();
      setLive($('#tr-live').dataset.state || 'off');
    }

    function reset() {
      gen++;
      last = null;
      known.clear();
      unchecked.clear();
      renderPicker();
      render();
      setLive('off');
    }

    return { knowNodes, enter, reload, stopAuto, setAuto, chooseAll, rerender, reset };
  })();

  // ---------------------------------------------------------------- language

  function rerender() {
    rules.rerender();
    nodes.rerender();
    traffic.rerender();
    renderTop(S.nodes);
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    // rules
    const saved = localStorage.getItem('gwc.set');
    if (saved) $('#rs-name').value = saved;
    $('#rs-form').addEventListener('submit', (ev) => { ev.preventDefault(); rules.open(rules.name()).catch(report); });
    $('#rs-name').addEventListener('change', () => rules.open(rules.name()).catch(report));
    $('#rules-validate').addEventListener('click', () => rules.validate());
    $('#rules-diff').addEventListener('click', () => rules.diff());
    $('#rules-push').addEventListener('click', () => rules.push());
    $('#rules-revert').addEventListener('click', () => rules.revert());
    $('#rules-reload').addEventListener('click', () => rules.reloadDiscarding().catch(report));
    $('#rules-stale-reload').addEventListener('click', () => rules.reloadDiscarding().catch(report));
    $('#rules-conflict-diff').addEventListener('click', () => rules.diffTheirs());
    $('#rules-file').addEventListener('change', (ev) => rules.importFile(ev.target).catch(report));
    const ta = $('#rules-editor');
    ta.addEventListener('input', () => { rules.gutter(); rules.markDirty(); });
    ta.addEventListener('scroll', () => { $('#rules-gutter').scrollTop = ta.scrollTop; });

    // traffic
    $('#tr-filters').addEventListener('submit', (ev) => { ev.preventDefault(); traffic.reload(); });
    $('#tr-reset').addEventListener('click', () => {
      for (const id of ['#tr-workload', '#tr-q']) $(id).value = '';
      $('#tr-action').value = '';
      traffic.reload();
    });
    $('#tr-refresh').addEventListener('click', () => traffic.reload());
    $('#tr-auto').addEventListener('change', (ev) => traffic.setAuto(ev.target.checked));
    $('#tr-all').addEventListener('click', () => traffic.chooseAll(true));
    $('#tr-none').addEventListener('click', () => traffic.chooseAll(false));
    rules.gutter();
  }

  GW.start({ tokenKey: 'gwc.token', info: '#ctl-info', enter: enterApp, leave: leaveApp, tab: onTab, rerender, wire });
})();
