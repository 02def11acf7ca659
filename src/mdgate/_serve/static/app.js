// mdgate status page: polls /status every second and streams ticks over /ws.
// Plain JavaScript, no dependencies. Every piece of data is put on the page
// with textContent or setAttribute, never parsed as HTML.
'use strict';

(function () {
  const TOKEN = new URLSearchParams(location.search).get('token') || '';
  const AUTH = TOKEN ? { Authorization: 'Bearer ' + TOKEN } : {};
  const DEFAULT_COUNT = 50;       // instruments shown when the user chose none
  const SPARK_POINTS = 60;        // prices kept per instrument for the sparkline
  const STORE_KEY = 'mdgate.instruments';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const $ = (sel) => document.querySelector(sel);

  // ---------------------------------------------------------------- helpers

  function fmtDuration(seconds) {
    let s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + (d || h || m ? m + 'm ' : '') + s + 's';
  }

  function fmtAge(ms) {
    if (ms === null || ms === undefined) return '–';
    if (ms < 1000) return Math.max(0, Math.round(ms)) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    return fmtDuration(ms / 1000);
  }

  function fmtPrice(p) {
    return Number(p).toLocaleString('en-US', { useGrouping: false, minimumFractionDigits: 2,
                                               maximumFractionDigits: 6 });
  }

  function fmtValue(v) {
    if (v === null || v === undefined) return '–';
    if (Array.isArray(v)) return v.length ? v.join('; ') : 'none';
    if (typeof v === 'object') {
      const parts = Object.keys(v).map((k) => k + '=' + fmtValue(v[k]));
      return parts.length ? parts.join(', ') : 'none';
    }
    return String(v);
  }

  function setText(root, cls, text) {
    const node = root.querySelector('.' + cls);
    if (node.textContent !== text) node.textContent = text;
    return node;
  }

  // Keep one <tr data-ATTR="key"> per key, in the order of keys; each has one
  // <td> per class in classes. Returns key -> row.
  function syncRows(tbody, attr, keys, classes) {
    const wanted = new Set(keys);
    const rows = new Map();
    for (const tr of Array.from(tbody.rows)) {
      if (wanted.has(tr.dataset[attr])) rows.set(tr.dataset[attr], tr); else tr.remove();
    }
    for (const key of keys) {
      let tr = rows.get(key);
      if (!tr) {
        tr = document.createElement('tr');
        tr.dataset[attr] = key;
        for (const cls of classes) {
          const td = document.createElement('td');
          td.className = cls;
          tr.append(td);
        }
        rows.set(key, tr);
      }
      tbody.append(tr);  // moves an existing row into place
    }
    return rows;
  }

  function fillList(dl, pairs) {
    dl.replaceChildren();
    for (const [key, value] of pairs) {
      const dt = document.createElement('dt');
      const dd = document.createElement('dd');
      dt.textContent = key;
      dd.textContent = fmtValue(value);
      dd.dataset.key = key;
      dl.append(dt, dd);
    }
  }

  function banner(text) {
    const b = $('#banner');
    b.hidden = !text;
    b.textContent = text || '';
  }

  function setGateway(state, text) {
    const badge = $('#gw-status');
    badge.dataset.status = state;
    badge.textContent = text || state;
  }

  // ---------------------------------------------------------------- /status

  const previous = new Map();  // provider -> {t, frames, ticks} of the last poll

  function rate(now, prev, count, key) {
    if (!prev || now <= prev.t || count < prev[key]) return '–';
    return ((count - prev[key]) / ((now - prev.t) / 1000)).toFixed(1);
  }

  function renderProviders(providers) {
    const names = Object.keys(providers).sort();
    const rows = syncRows($('#providers tbody'), 'provider', names,
      ['name', 'state', 'connections num', 'age num', 'frames-rate num', 'ticks-rate num',
       'decode-errors num', 'reconnects num', 'last-error']);
    const now = performance.now();
    for (const name of names) {
      const p = providers[name];
      const tr = rows.get(name);
      const prev = previous.get(name);
      setText(tr, 'name', name);
      const state = setText(tr, 'state', String(p.state));
      state.dataset.state = String(p.state);
      state.title = p.hint || '';
      setText(tr, 'connections', String(p.connections));
      setText(tr, 'age', fmtAge(p.last_message_age_ms));
      setText(tr, 'frames-rate', rate(now, prev, p.frames, 'frames'));
      setText(tr, 'ticks-rate', rate(now, prev, p.ticks, 'ticks'));
      setText(tr, 'decode-errors', String(p.decode_errors));
      setText(tr, 'reconnects', String(p.reconnects));
      setText(tr, 'last-error', p.last_error || '');
      previous.set(name, { t: now, frames: p.frames, ticks: p.ticks });
    }
  }

  function renderRouting(routing) {
    fillList($('#routing'), [
      ['source', routing.source], ['state', routing.state], ['instruments', routing.instruments],
      ['by provider', routing.by_provider], ['problems', routing.problems],
    ]);
    const switches = (routing.switches || []).slice().reverse();
    const keys = switches.map((s, i) => String(i));
    const rows = syncRows($('#switches tbody'), 'switch', keys,
      ['at', 'instrument', 'from', 'to', 'reason']);
    switches.forEach((s, i) => {
      const tr = rows.get(String(i));
      setText(tr, 'at', new Date(s.at).toLocaleTimeString());
      setText(tr, 'instrument', String(s.instrument));
      setText(tr, 'from', s.from_provider || '–');
      setText(tr, 'to', String(s.to_provider));
      setText(tr, 'reason', String(s.reason));
    });
  }

  function render(st) {
    setGateway(st.status);
    $('#uptime').textContent = fmtDuration(st.uptime_s);
    $('#updated').textContent = new Date().toLocaleTimeString();
    renderProviders(st.providers || {});
    renderRouting(st.routing || {});
    const store = st.store || {};
    fillList($('#store'), [['kind', store.kind], ['state', store.state], ['buffered', store.buffered],
                           ['dropped', store.dropped], ...(store.error ? [['error', store.error]] : [])]);
    const server = st.server || {};
    fillList($('#server'), [['connected', st.clients], ...Object.keys(server).map((k) => [k, server[k]])]);
    served = Object.keys(st.instruments || {});
    if (!chosen) setWanted(served.slice(0, DEFAULT_COUNT));
    renderStates(st.instruments || {});
  }

  // live / stale (silent while its market is open) / closed, as the gateway judges it
  function renderStates(instruments) {
    for (const tr of $('#ticks tbody').querySelectorAll('tr')) {
      const info = instruments[tr.dataset.instrument];
      const state = info && info.state ? String(info.state) : '–';
      const cell = setText(tr, 'state', state);
      cell.dataset.state = state;
      cell.classList.toggle('stale', state === 'stale');
    }
  }

  async function poll() {
    let resp;
    try {
      resp = await fetch('/status?instruments=1', { headers: AUTH, cache: 'no-store' });
    } catch (err) {
      setGateway('unreachable');
      banner('The gateway is unreachable (' + err.message + '); retrying every second.');
      return;
    }
    if (resp.status === 401) {
      setGateway('unauthorized', 'token needed');
      banner('A valid token is needed: open this page as /?token=YOUR_TOKEN');
      return;
    }
    if (!resp.ok) {
      setGateway('unreachable', 'HTTP ' + resp.status);
      banner('/status answered HTTP ' + resp.status);
      return;
    }
    render(await resp.json());
    banner('');
  }

  async function pollForever() {
    try { await poll(); } catch (err) { banner('Could not read /status: ' + err.message); }
    setTimeout(pollForever, 1000);
  }

  // ---------------------------------------------------------------- instruments

  let served = [];     // every instrument the gateway serves (from /status)
  let chosen = null;   // the user's list, or null: the first DEFAULT_COUNT served
  let wanted = [];     // the rows shown now
  const quotes = new Map();  // instrument -> {first, prices, tick}

  function parseList(text) {
    const names = (text || '').split(/[\s,]+/).map((s) => s.trim().toUpperCase()).filter(Boolean);
    return Array.from(new Set(names));
  }

  function readChoice() {
    const hash = new URLSearchParams(location.hash.slice(1)).get('instruments');
    const list = parseList(hash !== null ? hash : localStorage.getItem(STORE_KEY));
    return list.length ? list : null;
  }

  function choose(list) {
    chosen = list && list.length ? list : null;
    if (chosen) {
      localStorage.setItem(STORE_KEY, chosen.join(','));
      const hash = encodeURIComponent(chosen.join(',')).replace(/%2C/g, ',').replace(/%3A/g, ':');
      history.replaceState(null, '', '#instruments=' + hash);
    } else {
      localStorage.removeItem(STORE_KEY);
      history.replaceState(null, '', location.pathname + location.search);
    }
    $('#pick-input').value = chosen ? chosen.join(' ') : '';
    $('#ws-error').hidden = true;
    setWanted(chosen || served.slice(0, DEFAULT_COUNT));
  }

  function setWanted(list) {
    if (list.join(',') === wanted.join(',')) return;
    wanted = list;
    for (const name of quotes.keys()) if (!wanted.includes(name)) quotes.delete(name);
    const rows = syncRows($('#ticks tbody'), 'instrument', wanted,
      ['instrument', 'price num', 'change num', 'provider', 'state', 'age num', 'spark']);
    for (const [name, tr] of rows) {
      if (!tr.querySelector('svg')) {
        setText(tr, 'instrument', name);
        setText(tr, 'price', '–');
        const svg = document.createElementNS(SVG_NS, 'svg');
        svg.setAttribute('class', 'spark');
        svg.setAttribute('viewBox', '0 0 120 24');
        svg.setAttribute('preserveAspectRatio', 'none');
        svg.append(document.createElementNS(SVG_NS, 'polyline'));
        tr.querySelector('.spark').append(svg);
      }
    }
    syncSubscriptions();
  }

  function onTick(t) {
    if (!wanted.includes(t.instrument)) return;
    let q = quotes.get(t.instrument);
    if (!q) { q = { first: t.price, prices: [] }; quotes.set(t.instrument, q); }
    if (q.tick && q.tick.recv_ts === t.recv_ts && q.tick.price === t.price) return;  // a snapshot repeat
    q.tick = t;
    q.prices.push(t.price);
    if (q.prices.length > SPARK_POINTS) q.prices.shift();
    const tr = $('#ticks tbody').querySelector('tr[data-instrument="' + CSS.escape(t.instrument) + '"]');
    if (!tr) return;
    setText(tr, 'price', fmtPrice(t.price));
    const base = typeof t.prev_close === 'number' && t.prev_close ? t.prev_close : q.first;
    const diff = t.price - base;
    const pct = base ? (diff / base) * 100 : 0;
    const sign = diff > 0 ? '+' : '';
    const change = setText(tr, 'change', sign + diff.toFixed(2) + ' (' + sign + pct.toFixed(2) + '%)');
    change.className = 'change num ' + (diff > 0 ? 'up' : diff < 0 ? 'down' : 'flat');
    setText(tr, 'provider', String(t.provider));
    drawSpark(tr, q.prices);
    refreshAge(tr, t);
  }

  function drawSpark(tr, prices) {
    const lo = Math.min(...prices);
    const span = Math.max(...prices) - lo || 1;
    const step = 120 / Math.max(1, prices.length - 1);
    const points = prices.map((p, i) => (i * step).toFixed(1) + ',' + (22 - ((p - lo) / span) * 20).toFixed(1));
    tr.querySelector('polyline').setAttribute('points', points.join(' '));
  }

  function refreshAge(tr, t) {
    const age = Date.now() - t.recv_ts;
    const cell = setText(tr, 'age', fmtAge(age));
    cell.classList.toggle('stale', age > 30000);
  }

  function refreshAges() {
    for (const [name, q] of quotes) {
      const tr = $('#ticks tbody').querySelector('tr[data-instrument="' + CSS.escape(name) + '"]');
      if (tr && q.tick) refreshAge(tr, q.tick);
    }
  }

  // ---------------------------------------------------------------- WebSocket

  let ws = null;
  let attempts = 0;
  let opened = 0;
  let subscribed = new Set();  // what this connection asked for

  function setWs(state) {
    const badge = $('#ws-state');
    badge.dataset.state = state;
    badge.textContent = state;
  }

  function send(op, names) {
    for (let i = 0; i < names.length; i += 500) {
      ws.send(JSON.stringify({ op: op, instruments: names.slice(i, i + 500) }));
    }
  }

  function syncSubscriptions() {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const gone = Array.from(subscribed).filter((n) => !wanted.includes(n));
    const added = wanted.filter((n) => !subscribed.has(n));
    if (gone.length) send('unsubscribe', gone);
    if (added.length) send('subscribe', added);
    subscribed = new Set(wanted);
  }

  function showError(msg) {
    const box = $('#ws-error');
    const items = (msg.errors || []).map((e) => e.instrument + ': ' + e.message);
    if (msg.more) items.push('and ' + msg.more + ' more');
    box.textContent = items.length ? items.join('; ') : msg.code + ': ' + msg.message;
    box.hidden = false;
  }

  function onMessage(ev) {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (err) { return; }
    if (msg.type === 'snapshot' || msg.type === 'ticks') (msg.ticks || []).forEach(onTick);
    else if (msg.type === 'subscribed') $('#ws-error').hidden = true;  // an error frame follows if any
    else if (msg.type === 'error') showError(msg);
  }

  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = TOKEN ? '?token=' + encodeURIComponent(TOKEN) : '';
    const sock = new WebSocket(scheme + '//' + location.host + '/ws' + query);
    ws = sock;
    setWs('connecting');
    sock.onopen = () => {
      attempts = 0;
      opened += 1;
      $('#ws-state').dataset.opened = String(opened);  // connections opened since the page loaded
      subscribed = new Set();
      setWs('open');
      syncSubscriptions();
    };
    sock.onmessage = onMessage;
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      const delay = Math.min(30000, 500 * 2 ** attempts) * (0.5 + Math.random() / 2);
      attempts += 1;
      setWs('closed');
      setTimeout(connect, delay);
    };
  }

  // ---------------------------------------------------------------- start

  $('#pick').addEventListener('submit', (ev) => {
    ev.preventDefault();
    choose(parseList($('#pick-input').value));
  });
  $('#pick-reset').addEventListener('click', () => choose(null));
  window.addEventListener('hashchange', () => choose(readChoice()));
  setInterval(refreshAges, 1000);

  chosen = readChoice();
  $('#pick-input').value = chosen ? chosen.join(' ') : '';
  if (chosen) setWanted(chosen);
  connect();
  pollForever();
}());
