// guardwire management page: login, traffic (verdict log), workloads, rules, usage.
// Plain ES2020, no dependencies. Server strings are only ever inserted as text
// (textContent / createTextNode / setAttribute), never parsed as HTML.
'use strict';

(() => {
  // ---------------------------------------------------------------- i18n

  const I18N = {
    en: {
      'login.subtitle': 'Management plane of this node',
      'login.network': 'cannot reach the node: {m}',
      'tab.workloads': 'Workloads', 'tab.usage': 'Usage',
      'node.uptime': 'up {t}', 'node.workers': 'workers {a}/{b}',
      'health.ok': 'healthy', 'health.degraded': 'degraded',
      'f.app': 'App / category', 'f.since': 'Since (min)',
      't.sourceLog': 'Verdict log', 't.sourceFlows': 'Live flows',
      'live.off': 'not live', 'live.connecting': 'connecting…', 'live.live': 'live',
      'live.retry': 'reconnecting in {s} s',
      't.older': 'Older', 't.count': '{n} records', 't.noOlder': '{n} records, no older ones',
      't.empty': 'No records match.',
      'wl.name': 'Name', 'wl.kind': 'Kind', 'wl.ports': 'Ports', 'wl.mode': 'Mode', 'wl.setMode': 'Set mode',
      'wl.apply': 'Apply', 'wl.onFailure': 'On failure', 'wl.macs': 'MACs', 'wl.ips': 'IPs',
      'wl.rateOut': 'Out /s', 'wl.rateIn': 'In /s', 'wl.drops': 'Kernel drops',
      'wl.empty': 'No workloads.', 'wl.attached': 'attached live', 'wl.configured': 'from the config file',
      'wl.hint': 'Rates are computed from two polls 2 s apart. Out = from the workload, in = towards it.',
      'wl.changed': '{w}: mode {from} → {to}',
      'kind.pod': 'pod', 'kind.vm': 'VM', 'fail.open': 'open', 'fail.closed': 'closed',
      'mode.off': 'off', 'mode.mirror': 'mirror', 'mode.inline': 'inline',
      'rules.current': 'Current rules', 'rules.generation': 'Generation', 'rules.count': 'Rules',
      'rules.hash': 'Hash', 'rules.at': 'At', 'rules.by': 'By',
      'rules.revert': 'Reset to current',
      'rules.valid': 'Valid: {n} rules. Nothing applied.',
      'rules.invalid': '{n} error(s). Nothing applied.',
      'rules.pushed': 'Pushed: generation {g}, {n} rules.',
      'rules.pushFailed': 'Push refused, nothing applied: {m}',
      'rules.rolledBack': 'Rolled back to generation {from}: now generation {g}.',
      'rules.loaded': 'Loaded {f} (not validated yet).',
      'rules.confirm': 'Roll back to generation {g}? Its rules are pushed as a new generation.',
      'usage.window': 'Window', 'usage.w1': '1 s', 'usage.w10': '10 s', 'usage.w60': '1 min', 'usage.w300': '5 min',
      'usage.workload': 'Workload', 'usage.all': 'all workloads',
      'usage.y': 'bytes per {w} s window (in + out)', 'usage.empty': 'No traffic in this period.',
      'usage.total': 'out {o} · in {i} over the shown windows', 'usage.noSeries': 'No usage recorded yet.',
      'usage.bandwidth': 'Bandwidth limits', 'usage.limit': 'Limit', 'usage.changes': 'Auto-bandwidth changes',
      'usage.at': 'At', 'usage.fromTo': 'From → to', 'usage.reason': 'Reason', 'usage.none': 'None.',
      'reason.saturated': 'saturated', 'reason.idle': 'idle',
    },
    zh: {
      'login.subtitle': '本节点管理平面',
      'login.network': '无法连接节点：{m}',
      'tab.workloads': '工作负载', 'tab.usage': '用量',
      'node.uptime': '已运行 {t}', 'node.workers': '工作线程 {a}/{b}',
      'health.ok': '正常', 'health.degraded': '降级',
      'f.app': '应用 / 类别', 'f.since': '最近（分钟）',
      't.sourceLog': '判定日志', 't.sourceFlows': '实时流表',
      'live.off': '未连接', 'live.connecting': '连接中…', 'live.live': '实时',
      'live.retry': '{s} 秒后重连',
      't.older': '更早', 't.count': '{n} 条记录', 't.noOlder': '{n} 条记录，没有更早的记录',
      't.empty': '没有匹配的记录。',
      'wl.name': '名称', 'wl.kind': '类型', 'wl.ports': '端口', 'wl.mode': '引流模式', 'wl.setMode': '切换模式',
      'wl.apply': '应用', 'wl.onFailure': '故障时', 'wl.macs': 'MAC 地址', 'wl.ips': 'IP 地址',
      'wl.rateOut': '出向 /秒', 'wl.rateIn': '入向 /秒', 'wl.drops': '内核丢包',
      'wl.empty': '没有工作负载。', 'wl.attached': '在线接入', 'wl.configured': '来自配置文件',
      'wl.hint': '速率由相隔 2 秒的两次查询计算。出向 = 来自工作负载，入向 = 发往工作负载。',
      'wl.changed': '{w}：模式 {from} → {to}',
      'kind.pod': 'Pod', 'kind.vm': '虚拟机', 'fail.open': '放行', 'fail.closed': '阻断',
      'mode.off': '关闭 (off)', 'mode.mirror': '镜像 (mirror)', 'mode.inline': '串接 (inline)',
      'rules.current': '当前规则', 'rules.generation': '版本', 'rules.count': '规则数',
      'rules.hash': '哈希', 'rules.at': '时间', 'rules.by': '操作者',
      'rules.revert': '恢复为当前规则',
      'rules.valid': '校验通过：{n} 条规则。未应用。',
      'rules.invalid': '{n} 个错误。未应用。',
      'rules.pushed': '已下发：版本 {g}，{n} 条规则。',
      'rules.pushFailed': '下发被拒绝，未应用：{m}',
      'rules.rolledBack': '已回滚到版本 {from}：当前版本 {g}。',
      'rules.loaded': '已载入 {f}（尚未校验）。',
      'rules.confirm': '回滚到版本 {g}？其规则将作为新版本下发。',
      'usage.window': '统计窗口', 'usage.w1': '1 秒', 'usage.w10': '10 秒', 'usage.w60': '1 分钟',
      'usage.w300': '5 分钟', 'usage.workload': '工作负载', 'usage.all': '全部工作负载',
      'usage.y': '每 {w} 秒窗口字节数（入向 + 出向）', 'usage.empty': '此时段无流量。',
      'usage.total': '所示窗口合计：出向 {o} · 入向 {i}', 'usage.noSeries': '尚无用量记录。',
      'usage.bandwidth': '带宽限制', 'usage.limit': '限额', 'usage.changes': '自动带宽调整',
      'usage.at': '时间', 'usage.fromTo': '从 → 到', 'usage.reason': '原因', 'usage.none': '无。',
      'reason.saturated': '饱和', 'reason.idle': '空闲',
    },
  };

  GW.i18n(I18N);
  const { t, tv, $, $$, el, fill, setAttrs, toast, askConfirm, pad, toMs, fmtTime, fmtTimeFull, fmtBytes, fmtCount,
    S, ApiError, api, errText, report, startPoll, stopPoll, sessionExpired } = GW;

  // ---------------------------------------------------------------- DOM helpers

  const SVGNS = 'http://www.w3.org/2000/svg';
  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    if (text != null) e.textContent = String(text);
    return e;
  }

  // ---------------------------------------------------------------- formatting

  function fmtBits(bytesPerSec) {
    let n = bytesPerSec * 8;
    const units = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (Number.isInteger(n) ? n : n.toFixed(n < 10 ? 2 : 1)) + ' ' + units[i];
  }
  function fmtUptime(s) {
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return `${m}m ${s % 60}s`;
  }

  // ---------------------------------------------------------------- session

  function enterApp() {
    startPoll('node', pollNode, 5000);
    refreshWorkloadNames().catch(report);
    GW.showTabOfHash();
    traffic.reload();
  }

  function leaveApp() {
    traffic.stop();
    for (const m of [traffic, workloads, rules, usage]) m.reset();
  }

  async function pollNode() {
    const [node, health] = await Promise.all([api('/api/v1/node'), api('/api/v1/health')]);
    $('#node-name').textContent = node.name;
    $('#node-version').textContent = 'v' + node.version;
    $('#node-uptime').textContent = t('node.uptime', { t: fmtUptime(node.uptime_secs) });
    $('#node-workers').textContent = t('node.workers', { a: health.workers_alive, b: health.workers });
    const hb = $('#node-health');
    hb.textContent = tv('health.', health.status);
    hb.className = 'badge ' + (health.status === 'ok' ? 'ok' : 'warn');
  }

  async function refreshWorkloadNames(list) {
    list = list || await api('/api/v1/workloads');
    const names = list.map((w) => w.name).sort();
    $('#wl-names').replaceChildren(...names.map((n) => el('option', { value: n })));
    const sel = $('#usage-workload');
    const keep = sel.value;
    const known = new Set($$('option', sel).map((o) => o.value));
    for (const n of names) if (!known.has(n)) sel.append(el('option', { value: n }, n));
    sel.value = keep;
  }

  // ---------------------------------------------------------------- tabs

  // Tab `name` is shown now (GW.showTab).
  function onTab(name) {
    stopPoll('workloads');
    stopPoll('usage');
    stopPoll('flows');
    if (name === 'workloads') startPoll('workloads', workloads.poll, 2000);
    if (name === 'usage') startPoll('usage', usage.poll, 2000);
    if (name === 'rules') rules.load().catch(report);
    if (name === 'traffic' && traffic.source() === 'flows') startPoll('flows', traffic.pollFlows, 2000);
  }

  // ---------------------------------------------------------------- traffic

  const traffic = (() => {
    const MAX_ROWS = 2000;
    let records = [];            // newest (highest seq) first
    const rows = new Map();      // seq -> <tr>
    let nextBefore = null;
    let gen = 0;                 // bumps on every reload; stale async work checks it
    let ctl = null;              // AbortController of the running stream
    let wake = null;             // cuts a reconnect back-off short (on stop)

    const tbody = () => $('#traffic tbody');
    const source = () => $('#t-source').value;

    function params() {
      const p = new URLSearchParams();
      const add = (k, v) => { v = v.trim(); if (v) p.set(k, v); };
      add('workload', $('#f-workload').value);
      add('action', $('#f-action').value);
      add('app', $('#f-app').value);
      add('q', $('#f-q').value);
      const min = parseFloat($('#f-since').value);
      if (Number.isFinite(min) && min > 0) p.set('since', String(Date.now() - Math.round(min * 60000)));
      return p;
    }

    function row(r) {
      const upd = toMs(r.updated_at);
      const tr = el('tr', {
        'data-seq': r.seq, 'data-workload': r.workload, 'data-src': r.src, 'data-dst': r.dst,
        'data-action': r.action, 'data-verdict': r.verdict, 'data-updated-at': Number.isFinite(upd) ? upd : '',
        class: r.action === 'deny' ? 'is-deny' : null,
      });
      tr.append(...GW.recordCells(r));
      return tr;
    }

    // Insert or replace one record, keeping the table sorted by seq (newest first).
    function upsert(r, fresh) {
      const old = rows.get(r.seq);
      const tr = row(r);
      if (fresh) tr.classList.add('fresh');
      if (old) {
        records[records.findIndex((x) => x.seq === r.seq)] = r;
        old.replaceWith(tr);
      } else {
        let i = 0;
        while (i < records.length && records[i].seq > r.seq) i++;
        records.splice(i, 0, r);
        const before = records[i + 1] ? rows.get(records[i + 1].seq) : null;
        tbody().insertBefore(tr, before);
      }
      rows.set(r.seq, tr);
    }

    function trim() {
      while (records.length > MAX_ROWS) {
        const r = records.pop();
        rows.get(r.seq).remove();
        rows.delete(r.seq);
        nextBefore = r.seq + 1;   // `before` is exclusive: fetch this one again
      }
    }

    function updateFooter() {
      const n = records.length;
      $('#t-empty').hidden = n > 0;
      const older = $('#t-older');
      older.hidden = source() !== 'log';
      older.disabled = nextBefore == null;
      $('#t-count').textContent = t(nextBefore == null && source() === 'log' ? 't.noOlder' : 't.count', { n });
    }

    function clear() {
      records = [];
      rows.clear();
      tbody().replaceChildren();
      nextBefore = null;
    }

    function setLive(state, secs) {
      const box = $('#live');
      box.dataset.state = state;
      box.textContent = state === 'retry' ? t('live.retry', { s: secs }) : t('live.' + state);
    }

    function stop() {
      gen++;
      if (ctl) ctl.abort();
      ctl = null;
      if (wake) wake();
      setLive('off');
    }

    async function reload() {
      stop();
      const my = gen;
      clear();
      updateFooter();
      if (source() === 'flows') {
        setLive('poll');
        if (S.tab === 'traffic') startPoll('flows', pollFlows, 2000);
        return;
      }
      stopPoll('flows');
      const p = params();
      stream(my, p);
      try {
        p.set('limit', '100');
        const res = await api('/api/v1/log?' + p);
        if (my !== gen) return;
        for (const r of res.records) upsert(r, false);
        nextBefore = res.next_before;
        updateFooter();
      } catch (e) { report(e); }
    }

    async function older() {
      if (nextBefore == null) return;
      const my = gen;
      const p = params();
      p.set('before', String(nextBefore));
      p.set('limit', '100');
      const btn = $('#t-older');
      btn.disabled = true;
      try {
        const res = await api('/api/v1/log?' + p);
        if (my !== gen) return;
        for (const r of res.records) upsert(r, false);
        nextBefore = res.next_before;
        trim();
      } catch (e) { report(e); }
      updateFooter();
    }

    async function pollFlows() {
      const my = gen;
      const res = await api('/api/v1/flows?' + params());
      if (my !== gen) return;
      clear();
      records = res.records;   // live flows all carry seq 0: no keyed rows here
      tbody().replaceChildren(...records.map(row));
      updateFooter();
    }

    // Catch up on records missed while the stream was down.
    async function catchUp(my, p) {
      const q = new URLSearchParams(p);
      q.set('limit', '100');
      const res = await api('/api/v1/log?' + q);
      if (my !== gen) return;
      const top = records.length ? records[0].seq : -1;
      for (const r of res.records.filter((x) => x.seq > top).reverse()) upsert(r, true);
      trim();
      updateFooter();
    }

    // The SSE stream, read with fetch() so the Authorization header can be sent.
    async function stream(my, p) {
      let delay = 1000;
      let first = true;
      while (my === gen && S.token) {
        const ac = new AbortController();
        ctl = ac;
        let idle = null;
        const kick = () => { clearTimeout(idle); idle = setTimeout(() => ac.abort(), 45000); };
        try {
          setLive('connecting');
          const res = await fetch('/api/v1/log/stream?' + p, {
            headers: { Authorization: 'Bearer ' + S.token, Accept: 'text/event-stream' },
            cache: 'no-store', signal: ac.signal,
          });
          if (res.status === 401) { sessionExpired(); return; }
          if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
          if (my !== gen) return;
          setLive('live');
          const upSince = Date.now();
          if (!first) catchUp(my, p).catch(report);
          first = false;
          kick();
          await readSse(res.body, kick, (event, data) => {
            if (event !== 'record' || my !== gen) return;
            try { upsert(JSON.parse(data), true); } catch (e) { console.warn('bad record', e); return; }
            trim();
            updateFooter();
          });
          if (Date.now() - upSince > 10000) delay = 1000;   // it was healthy for a while: retry soon
        } catch (e) {
          if (my !== gen) return;
          if (!ac.signal.aborted) console.warn('log stream:', e);
        } finally {
          clearTimeout(idle);
        }
        if (my !== gen || !S.token) return;
        setLive('retry', Math.round(delay / 1000));
        await new Promise((r) => {
          const timer = setTimeout(r, delay);
          wake = () => { clearTimeout(timer); r(); };
        });
        wake = null;
        delay = Math.min(delay * 2, 30000);
      }
    }

    // Minimal SSE parser: "event:" / "data:" lines, blank line dispatches, ":" comments.
    async function readSse(body, onChunk, onEvent) {
      const reader = body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      let event = '';
      let data = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        onChunk();
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') {
            if (data.length) onEvent(event || 'message', data.join('\n'));
            event = '';
            data = [];
            continue;
          }
          if (line.startsWith(':')) continue;
          const c = line.indexOf(':');
          const field = c < 0 ? line : line.slice(0, c);
          let val = c < 0 ? '' : line.slice(c + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'event') event = val;
          else if (field === 'data') data.push(val);
        }
      }
    }

    function rerender() {
      const keyed = source() === 'log';
      tbody().replaceChildren(...records.map((r) => {
        const tr = row(r);
        if (keyed) rows.set(r.seq, tr);
        return tr;
      }));
      updateFooter();
      const live = $('#live');
      if (live.dataset.state !== 'retry') setLive(live.dataset.state);
    }

    return { reload, older, stop, rerender, source, pollFlows, reset: clear };
  })();

  // ---------------------------------------------------------------- workloads

  const workloads = (() => {
    const rows = new Map();   // name -> {tr, cells, select, mode}
    let prev = new Map();     // name -> {t, out, in}
    let lastList = [];

    function makeRow(w) {
      const select = el('select', { class: 'mode', 'aria-label': 'mode' },
        ['off', 'mirror', 'inline'].map((m) => el('option', { value: m }, t('mode.' + m))));
      const apply = el('button', { type: 'button', class: 'mode-apply' }, t('wl.apply'));
      const c = {
        name: el('td', { class: 'nowrap' }), kind: el('td'), ports: el('td', { class: 'mono small' }),
        mode: el('td', { class: 'mode-current mono' }), set: el('td', { class: 'nowrap' }, select, ' ', apply),
        fail: el('td'), macs: el('td', { class: 'mono small' }), ips: el('td', { class: 'mono small' }),
        out: el('td', { class: 'r mono nowrap' }, '…'), in: el('td', { class: 'r mono nowrap' }, '…'),
        drops: el('td', { class: 'r mono' }),
      };
      const tr = el('tr', { 'data-name': w.name }, Object.values(c));
      const entry = { tr, c, select, apply, mode: null, busy: false };
      select.addEventListener('change', () => apply.classList.toggle('pending', select.value !== entry.mode));
      apply.addEventListener('click', () => setMode(w.name, entry));
      return entry;
    }

    function lines(list) {
      return (list || []).length ? list.map((x) => el('div', null, x)) : ['—'];
    }

    function fillRow(e, w, rate) {
      const c = e.c;
      fill(c.name, el('strong', null, w.name),
        w.attached === false ? el('span', { class: 'tag', title: t('wl.configured') }, 'cfg') : null);
      c.kind.textContent = tv('kind.', w.kind);
      c.ports.replaceChildren(el('div', null, w.workload_port), el('div', { class: 'muted' }, '↳ ' + w.uplink_port));
      c.ports.title = w.attached === false ? t('wl.configured') : t('wl.attached');
      c.mode.textContent = w.mode;
      c.mode.dataset.mode = w.mode;
      c.mode.className = 'mode-current mono mode-' + w.mode;
      if (e.mode !== w.mode) {          // reset the chooser only when the real mode changed
        e.mode = w.mode;
        e.select.value = w.mode;
        e.apply.classList.remove('pending');
      }
      e.select.disabled = S.role !== 'admin';
      if (!e.busy) e.apply.disabled = S.role !== 'admin';
      c.fail.textContent = tv('fail.', w.on_failure);
      c.macs.replaceChildren(...lines(w.identity && w.identity.macs));
      c.ips.replaceChildren(...lines(w.identity && w.identity.ips));
      if (rate) {
        c.out.textContent = fmtBytes(rate.out) + '/s';
        c.in.textContent = fmtBytes(rate.in) + '/s';
      }
      const wp = w.counters.workload_port, up = w.counters.uplink_port;
      c.drops.textContent = fmtCount((wp.kernel_drops || 0) + (up.kernel_drops || 0));
    }

    async function poll() {
      const list = await api('/api/v1/workloads');
      const now = performance.now();
      const next = new Map();
      const tbody = $('#workloads tbody');
      const seen = new Set();
      for (const w of [...list].sort((a, b) => a.name.localeCompare(b.name))) {
        seen.add(w.name);
        let e = rows.get(w.name);
        if (!e) { e = makeRow(w); rows.set(w.name, e); }
        tbody.append(e.tr);   // (re)append keeps sorted order
        const sample = { t: now, out: w.counters.workload_port.rx_bytes, in: w.counters.uplink_port.rx_bytes };
        const p = prev.get(w.name);
        let rate = null;
        if (p && now - p.t >= 1500) {
          const dt = (now - p.t) / 1000;
          rate = { out: Math.max(0, sample.out - p.out) / dt, in: Math.max(0, sample.in - p.in) / dt };
          next.set(w.name, sample);
        } else {
          next.set(w.name, p || sample);    // too close to the last sample: keep the older one
        }
        fillRow(e, w, rate);
      }
      for (const [name, e] of rows) if (!seen.has(name)) { e.tr.remove(); rows.delete(name); }
      prev = next;
      lastList = list;
      $('#wl-empty').hidden = list.length > 0;
      refreshWorkloadNames(list).catch(() => {});
    }

    async function setMode(name, e) {
      const mode = e.select.value;
      e.busy = true;
      e.apply.disabled = true;
      try {
        const r = await api(`/api/v1/workloads/${encodeURIComponent(name)}/mode`, { method: 'PUT', body: { mode } });
        toast(t('wl.changed', { w: r.workload, from: r.from, to: r.to }), 'ok');
        await poll();
      } catch (err) {
        report(err);
      } finally {
        e.busy = false;
        e.apply.disabled = S.role !== 'admin';
      }
    }

    function rerender() {
      for (const e of rows.values()) {
        e.apply.textContent = t('wl.apply');
        for (const o of e.select.options) o.textContent = t('mode.' + o.value);
      }
      for (const w of lastList) { const e = rows.get(w.name); if (e) fillRow(e, w, null); }
    }

    function reset() {
      for (const e of rows.values()) e.tr.remove();
      rows.clear();
      prev = new Map();
      lastList = [];
    }

    return { poll, rerender, reset };
  })();

  // ---------------------------------------------------------------- rules

  const rules = (() => {
    let current = null;    // GET /rules document
    let loadedText = null; // what the editor was last filled with from the server
    let history = [];
    let errLines = new Set();

    const editor = () => $('#rules-editor');

    const STATUS = { valid: 'ok', pushed: 'ok', 'rolled-back': 'ok', invalid: 'bad', 'push-failed': 'bad', 'rollback-failed': 'bad' };
    const status = (state, text) => GW.ruleStatus(STATUS, state, text);

    // errors: [{line, field, message}]; a line of 0 or null means unknown.
    function showErrors(errors) {
      const lineOf = (e) => (Number.isInteger(e.line) && e.line > 0 ? e.line : null);
      errLines = new Set(errors.map(lineOf).filter((n) => n != null));
      $('#rules-errors').replaceChildren(...errors.map((e) => {
        const line = lineOf(e);
        const msg = e.message ?? e.error ?? '';
        const parts = [];
        // A push refusal's text already says "file:line: field: ..." itself.
        const located = line != null && msg.includes(`:${line}:`);
        if (line != null && !located) parts.push(t('rules.line', { n: line }));
        if (e.field && !located) parts.push(e.field);
        parts.push(msg);
        const li = el('li', { 'data-line': line, 'data-field': e.field ?? null,
          title: e.column != null ? `column ${e.column}` : null }, parts.join(': '));
        if (line != null) li.addEventListener('click', () => gotoLine(line));
        return li;
      }));
      gutter();
    }

    const gutter = () => GW.gutter(errLines);
    const gotoLine = GW.gotoLine;

    function renderCurrent() {
      if (!current) return;
      $('#rules-generation').textContent = String(current.generation);
      $('#rules-count').textContent = String(current.rules);
      const h = $('#rules-hash');
      h.textContent = (current.hash || '').slice(0, 16);
      h.title = current.hash || '';
      $('#rules-at').textContent = current.at ? fmtTime(current.at) : '—';
      $('#rules-at').title = current.at ? fmtTimeFull(current.at) : '';
      $('#rules-by').textContent = current.by || '—';
      $('#rules-origin').textContent = current.origin || '—';
      $('#rules-current').textContent = current.text || '';
    }

    function renderHistory() {
      const gen = current ? current.generation : null;
      $('#rules-history tbody').replaceChildren(...history.map((h) => {
        let action = '';
        if (h.generation === gen) action = el('span', { class: 'tag' }, t('rules.isCurrent'));
        else if (S.role === 'admin') {
          action = el('button', { type: 'button', class: 'rollback small-btn', 'data-generation': h.generation }, t('rules.rollback'));
          action.addEventListener('click', () => rollback(h.generation));
        }
        return el('tr', { 'data-generation': h.generation, class: h.generation === gen ? 'current' : null },
          el('td', { class: 'r mono' }, h.generation),
          el('td', { class: 'nowrap', title: fmtTimeFull(h.at) }, fmtTime(h.at)),
          el('td', null, h.by || ''),
          el('td', null, h.origin || ''),
          el('td', { class: 'r' }, h.rules),
          el('td', { class: 'mono', title: h.hash || '' }, (h.hash || '').slice(0, 12)),
          el('td', { class: 'r' }, action));
      }));
    }

    async function load() {
      const [doc, hist] = await Promise.all([api('/api/v1/rules'), api('/api/v1/rules/history')]);
      current = doc;
      history = hist;
      const ta = editor();
      // Pre-fill the editor with the current text unless the user has typed something else.
      if (ta.value === '' || ta.value === loadedText) {
        ta.value = doc.text || '';
        gutter();
      }
      loadedText = doc.text || '';
      renderCurrent();
      renderHistory();
    }

    async function validate() {
      showErrors([]);
      status('validating', t('rules.validating'));
      try {
        const r = await api('/api/v1/rules/validate', { method: 'POST', body: { text: editor().value } });
        if (r.ok) {
          status('valid', t('rules.valid', { n: r.rules }));
        } else {
          showErrors(r.errors || []);
          status('invalid', t('rules.invalid', { n: (r.errors || []).length }));
        }
      } catch (e) {
        status('invalid', errText(e));
      }
    }

    async function push() {
      showErrors([]);
      status('pushing', t('rules.pushing'));
      const text = editor().value;
      try {
        const r = await api('/api/v1/rules', { method: 'POST', body: { text, origin: 'page' } });
        loadedText = text;   // the editor now holds the current document
        await load().catch(report);
        status('pushed', t('rules.pushed', { g: r.generation, n: r.rules }));
      } catch (e) {
        if (e instanceof ApiError && e.status === 400) {
          showErrors([{ line: e.body.line, field: e.body.field, message: e.body.error }]);
        }
        await load().catch(() => {});   // show the generation the node really runs
        status('push-failed', t('rules.pushFailed', { m: errText(e) }));
      }
    }

    async function rollback(generation) {
      if (!await askConfirm(t('rules.confirm', { g: generation }), t('rules.rollback'))) return;
      showErrors([]);
      status('rolling-back', t('rules.rollingBack'));
      try {
        const r = await api('/api/v1/rules/rollback', { method: 'POST', body: { generation } });
        await load();
        status('rolled-back', t('rules.rolledBack', { from: generation, g: r.generation }));
      } catch (e) {
        status('rollback-failed', t('rules.rollbackFailed', { m: errText(e) }));
      }
    }

    async function importFile(input) {
      const f = input.files && input.files[0];
      if (!f) return;
      editor().value = await f.text();
      input.value = '';
      showErrors([]);
      status('loaded', t('rules.loaded', { f: f.name }));
    }

    function revert() {
      if (loadedText == null) return;
      editor().value = loadedText;
      showErrors([]);
      status('idle', '');
    }

    function rerender() {
      renderCurrent();
      renderHistory();
    }

    function reset() {
      current = null;
      loadedText = null;
      history = [];
      editor().value = '';
      showErrors([]);
      status('idle', '');
      for (const id of ['#rules-generation', '#rules-count', '#rules-hash', '#rules-at', '#rules-by', '#rules-origin', '#rules-current']) $(id).textContent = '';
      $('#rules-history tbody').replaceChildren();
    }

    return { load, validate, push, importFile, revert, gutter, rerender, reset };
  })();

  // ---------------------------------------------------------------- usage

  const usage = (() => {
    // Stable colours: known categories fixed, others hashed into the palette.
    const FIXED = { streaming: '#e4572e', im: '#17a589', gaming: '#8e44ad', web: '#2e86de', dns: '#f2a541',
      social: '#e84393', download: '#16a085', mail: '#7f8c8d', unknown: '#b0b7c3', other: '#95a5a6' };
    const PALETTE = ['#3bb273', '#d1495b', '#edae49', '#00798c', '#6c5b7b', '#c06c84', '#355c7d', '#99b898',
      '#f67280', '#4a69bd', '#b33939', '#218c74'];
    const ORDER = ['streaming', 'gaming', 'im', 'social', 'web', 'download', 'mail', 'dns'];
    const LAST = ['other', 'unknown'];
    const SLOTS = 60;
    let last = null;

    function colour(cat) {
      if (FIXED[cat]) return FIXED[cat];
      let h = 0;
      for (const ch of cat) h = (h * 31 + ch.codePointAt(0)) >>> 0;
      return PALETTE[h % PALETTE.length];
    }
    function rank(cat) {
      const i = ORDER.indexOf(cat);
      if (i >= 0) return i;
      const j = LAST.indexOf(cat);
      return j >= 0 ? 1000 + j : 100;
    }
    const byRank = (a, b) => rank(a) - rank(b) || a.localeCompare(b);

    // Round up to 1, 2 or 5 x 10^k (in units of 1024^n for bytes).
    function niceMax(v) {
      if (v <= 0) return 1024;
      let base = 1;
      while (v / base >= 1024) base *= 1024;
      const x = v / base;
      const p = Math.pow(10, Math.floor(Math.log10(x)));
      const m = [1, 2, 5, 10].find((k) => k * p >= x);
      return m * p * base;
    }

    function timeLabel(sec, win) {
      const d = new Date(sec * 1000);
      return win >= 60 ? `${pad(d.getHours())}:${pad(d.getMinutes())}` : `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    }

    function chart(workload, series, win, width) {
      const H = 210, ml = 70, mr = 12, mt = 12, mb = 28;
      const pw = Math.max(100, width - ml - mr), ph = H - mt - mb;
      // stacks: start -> [{cat, bytes, in, out}]
      const stacks = new Map();
      let lastStart = -Infinity;
      for (const s of series) for (const p of s.points) {
        lastStart = Math.max(lastStart, p.start);
        if (!stacks.has(p.start)) stacks.set(p.start, []);
        stacks.get(p.start).push({ cat: s.category, out: p.bytes_out || 0, in: p.bytes_in || 0, flows: p.flows });
      }
      if (!Number.isFinite(lastStart)) lastStart = Math.floor(Date.now() / 1000 / win) * win;
      const t0 = lastStart - (SLOTS - 1) * win;
      let ymax = 0, totOut = 0, totIn = 0;
      for (const [start, segs] of stacks) {
        if (start < t0) { stacks.delete(start); continue; }
        segs.sort((a, b) => byRank(a.cat, b.cat));
        ymax = Math.max(ymax, segs.reduce((acc, x) => acc + x.in + x.out, 0));
        for (const x of segs) { totOut += x.out; totIn += x.in; }
      }
      ymax = niceMax(ymax);
      const band = pw / SLOTS;
      const bw = Math.max(1, band * 0.78);
      const y = (v) => mt + ph - (v / ymax) * ph;

      const svg = svgEl('svg', { width, height: H, viewBox: `0 0 ${width} ${H}`, role: 'img',
        'aria-label': workload, 'data-workload': workload });
      for (let i = 0; i <= 4; i++) {
        const v = (ymax * i) / 4;
        svg.append(svgEl('line', { class: 'grid-line', x1: ml, x2: ml + pw, y1: y(v), y2: y(v) }));
        svg.append(svgEl('text', { class: 'axis', x: ml - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmtBytes(v)));
      }
      for (let i = 0; i < SLOTS; i += 10) {
        const x = ml + i * band;
        svg.append(svgEl('line', { class: 'tick', x1: x, x2: x, y1: mt + ph, y2: mt + ph + 4 }));
        svg.append(svgEl('text', { class: 'axis', x, y: H - 8, 'text-anchor': 'start' }, timeLabel(t0 + i * win, win)));
      }
      svg.append(svgEl('line', { class: 'axis-line', x1: ml, x2: ml + pw, y1: mt + ph, y2: mt + ph }));
      let bars = 0;
      for (const [start, segs] of stacks) {
        const x = ml + ((start - t0) / win) * band + (band - bw) / 2;
        let acc = 0;
        for (const s of segs) {
          const v = s.in + s.out;
          if (v <= 0) continue;
          const r = svgEl('rect', { class: 'bar', x: x.toFixed(1), y: y(acc + v).toFixed(1), width: bw.toFixed(1),
            height: Math.max(0.5, y(acc) - y(acc + v)).toFixed(1), fill: colour(s.cat),
            'data-category': s.cat, 'data-start': start, 'data-bytes': v });
          r.append(svgEl('title', null, `${timeLabel(start, 1)}  ${tv('cat.', s.cat)}: ${fmtBytes(v)} ` +
            `(out ${fmtBytes(s.out)}, in ${fmtBytes(s.in)}${s.flows != null ? `, ${s.flows} flows` : ''})`));
          svg.append(r);
          acc += v;
          bars++;
        }
      }
      if (!bars) svg.append(svgEl('text', { class: 'empty-note', x: ml + pw / 2, y: mt + ph / 2, 'text-anchor': 'middle' }, t('usage.empty')));
      return el('figure', { class: 'chart card', 'data-workload': workload },
        el('figcaption', null, el('strong', null, workload), ' ',
          el('span', { class: 'muted' }, t('usage.total', { o: fmtBytes(totOut), i: fmtBytes(totIn) }))),
        svg,
        el('div', { class: 'y-label muted' }, t('usage.y', { w: win })));
    }

    function render(d) {
      last = d;
      const win = d.window_secs || Number($('#usage-window').value);
      const byWl = new Map();
      const cats = new Set();
      for (const s of d.series || []) {
        if (!byWl.has(s.workload)) byWl.set(s.workload, []);
        byWl.get(s.workload).push(s);
        if (s.points.some((p) => (p.bytes_in || 0) + (p.bytes_out || 0) > 0)) cats.add(s.category);
      }
      const box = $('#usage-chart');
      const width = Math.max(320, box.clientWidth - 26);
      const figs = [...byWl.keys()].sort().map((w) => chart(w, byWl.get(w), win, width));
      box.replaceChildren(...(figs.length ? figs : [el('p', { class: 'empty' }, t('usage.noSeries'))]));
      $('#usage-legend').replaceChildren(...[...cats].sort(byRank).map((c) =>
        el('span', { class: 'legend-item' }, svgSwatch(colour(c)), tv('cat.', c))));

      const bw = d.bandwidth || [];
      $('#usage-bandwidth tbody').replaceChildren(...(bw.length ? bw.map((b) => el('tr', null,
        el('td', null, b.workload), el('td', { class: 'r mono', title: `${fmtCount(b.bytes_per_sec)} B/s` }, fmtBits(b.bytes_per_sec))))
        : [el('tr', null, el('td', { colspan: 2, class: 'muted' }, t('usage.none')))]));
      const ch = [...(d.bandwidth_changes || [])].sort((a, b) => toMs(b.at) - toMs(a.at)).slice(0, 100);
      $('#usage-changes tbody').replaceChildren(...(ch.length ? ch.map((c) => el('tr', null,
        el('td', { class: 'nowrap mono', title: fmtTimeFull(c.at) }, fmtTime(c.at)),
        el('td', null, c.workload),
        el('td', { class: 'mono nowrap' }, fmtBits(c.from), el('span', { class: c.to > c.from ? 'up' : 'down' }, c.to > c.from ? ' ↑ ' : ' ↓ '), fmtBits(c.to)),
        el('td', null, el('span', { class: 'tag reason-' + c.reason }, tv('reason.', c.reason)))))
        : [el('tr', null, el('td', { colspan: 4, class: 'muted' }, t('usage.none')))]));
    }

    function svgSwatch(fill) {
      const s = svgEl('svg', { width: 12, height: 12, class: 'swatch' });
      s.append(svgEl('rect', { width: 12, height: 12, rx: 2, fill }));
      return s;
    }

    async function poll() {
      const p = new URLSearchParams({ window: $('#usage-window').value });
      const w = $('#usage-workload').value;
      if (w) p.set('workload', w);
      render(await api('/api/v1/usage?' + p));
    }

    function reset() {
      last = null;
      for (const id of ['#usage-chart', '#usage-legend', '#usage-bandwidth tbody', '#usage-changes tbody']) $(id).replaceChildren();
    }

    return { poll, reset, rerender: () => { if (last) render(last); } };
  })();

  // ---------------------------------------------------------------- language

  function rerender() {
    traffic.rerender();
    workloads.rerender();
    rules.rerender();
    usage.rerender();
    pollNode().catch(() => {});
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    $('#filters').addEventListener('submit', (ev) => { ev.preventDefault(); traffic.reload(); });
    $('#f-reset').addEventListener('click', () => {
      for (const id of ['#f-workload', '#f-app', '#f-q', '#f-since']) $(id).value = '';
      $('#f-action').value = '';
      traffic.reload();
    });
    $('#t-source').addEventListener('change', () => traffic.reload());
    $('#t-older').addEventListener('click', () => traffic.older());

    $('#rules-validate').addEventListener('click', () => rules.validate());
    $('#rules-push').addEventListener('click', () => rules.push());
    $('#rules-revert').addEventListener('click', () => rules.revert());
    $('#rules-file').addEventListener('change', (ev) => rules.importFile(ev.target).catch(report));
    const ta = $('#rules-editor');
    ta.addEventListener('input', () => rules.gutter());
    ta.addEventListener('scroll', () => { $('#rules-gutter').scrollTop = ta.scrollTop; });

    $('#usage-window').addEventListener('change', () => { if (S.tab === 'usage') startPoll('usage', usage.poll, 2000); });
    $('#usage-workload').addEventListener('change', () => { if (S.tab === 'usage') startPoll('usage', usage.poll, 2000); });
    window.addEventListener('resize', () => usage.rerender());
  }

  GW.start({ tokenKey: 'gw.token', info: '#node-info', enter: enterApp, leave: leaveApp, tab: onTab, rerender, wire });
})();
