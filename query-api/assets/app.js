// The dashboard: vanilla JS, no framework, no build step. All text goes through
// textContent (never innerHTML), so a machine named <img src=x onerror=alert(1)>
// shows as text. Incidents update live through the long-poll of
// /api/incidents/changes and resume from the last cursor after any error.
'use strict';

const state = { csrf: '', role: '', incidents: new Map(), cursor: null, machines: [], rulesInForce: null };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) { opts.headers['content-type'] = 'application/json'; opts.body = JSON.stringify(body); }
  if (method !== 'GET') opts.headers['x-csrf-token'] = state.csrf;
  const r = await fetch(path, opts);
  if (r.status === 401) { window.location.assign('/login'); throw new Error('unauthenticated'); }
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) throw new Error((data && data.reason) || ('HTTP ' + r.status));
  return data;
}

const fmtTime = (t) => t ? new Date(t).toLocaleString() : '';
const pct = (v) => (v === null || v === undefined) ? '–' : v.toFixed(1) + '%';
function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm';
}
function fmtUptime(s) { return (s === null || s === undefined) ? '–' : fmtDuration(s * 1000); }

function setConn(live, text) {
  const c = document.getElementById('conn');
  c.className = 'conn ' + (live ? 'live' : 'down');
  c.textContent = '● ' + text;
}
function touched() { document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString(); }

// ---- incidents --------------------------------------------------------------

function renderIncidents() {
  const status = document.getElementById('f-status').value;
  const machine = document.getElementById('f-machine').value.trim();
  const rule = document.getElementById('f-rule').value;
  const rows = [...state.incidents.values()].filter((i) =>
    (status === 'all' || i.status === status) && (!machine || i.machine.includes(machine)) && (!rule || i.rule === rule));
  rows.sort((a, b) => (a.status === b.status ? 0 : a.status === 'open' ? -1 : 1) || (b.opened_at > a.opened_at ? 1 : -1));
  const tbody = document.querySelector('#incidents tbody');
  tbody.replaceChildren(...rows.map((i) => {
    const tr = el('tr', undefined, i.status);
    tr.dataset.id = i.id;
    const end = i.resolved_at ? new Date(i.resolved_at) : new Date();
    tr.append(el('td', i.status), el('td', i.machine), el('td', i.rule), el('td', fmtTime(i.started_at)),
      el('td', fmtTime(i.opened_at)), el('td', fmtTime(i.resolved_at)),
      el('td', fmtDuration(end - new Date(i.started_at))), el('td', i.peak === null || i.peak === undefined ? '–' : i.peak.toFixed(1)));
    return tr;
  }));
  document.getElementById('incident-count').textContent = rows.length + ' shown, ' +
    [...state.incidents.values()].filter((i) => i.status === 'open').length + ' open';
}

async function followIncidents() {
  let backoff = 1000;
  for (;;) {
    try {
      if (state.cursor === null) {
        const head = await api('GET', '/api/incidents/changes');
        const page = await api('GET', '/api/incidents?status=all&limit=1000');
        state.incidents = new Map(page.incidents.map((i) => [i.id, i]));
        state.cursor = head.cursor;
        renderIncidents();
      }
      setConn(true, 'live');
      touched();
      const ch = await api('GET', '/api/incidents/changes?timeout_s=25&after=' + encodeURIComponent(state.cursor));
      for (const i of ch.incidents) state.incidents.set(i.id, i);
      state.cursor = ch.cursor;
      if (ch.incidents.length) renderIncidents();
      touched();
      backoff = 1000;
    } catch (e) {
      if (e.message === 'unauthenticated') return;
      setConn(false, 'reconnecting');
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  }
}

// ---- machines -----------------------------------------------------------------

function sparkline(values, max) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 120 28');
  svg.setAttribute('class', 'spark');
  const colors = ['#2e86c1', '#8e44ad', '#d35400'];
  values.forEach((series, k) => {
    const pts = series.map((v, i) => v === null ? null : [series.length > 1 ? i * 120 / (series.length - 1) : 0, 28 - (v / max) * 26 - 1])
      .filter(Boolean).map((p) => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' ');
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', pts);
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', colors[k]);
    svg.append(line);
  });
  return svg;
}

async function loadMachines() {
  const data = await api('GET', '/api/machines');
  state.machines = data.machines;
  const tbody = document.querySelector('#machines tbody');
  tbody.replaceChildren(...data.machines.map((m) => {
    const tr = el('tr');
    tr.dataset.name = m.name;
    const status = m.enabled ? m.status : 'disabled';
    const chart = el('td');
    tr.append(el('td', m.name), el('td', status, 'status-' + status), el('td', pct(m.cpu)), el('td', pct(m.mem)),
      el('td', pct(m.disk)), el('td', fmtUptime(m.uptime_s)), chart);
    const admin = el('td', undefined, 'admin-only');
    const toggle = el('button', m.enabled ? 'Disable' : 'Enable');
    toggle.addEventListener('click', async () => { await api('PATCH', '/api/machines/' + m.id, { enabled: !m.enabled }); loadMachines(); });
    const edit = el('button', 'Edit');
    edit.addEventListener('click', async () => {
      const url = prompt('Status URL of ' + m.name, m.url);
      if (url === null) return;
      const secs = prompt('Poll interval in seconds (empty: the default)', m.interval_ms ? String(m.interval_ms / 1000) : '');
      if (secs === null) return;
      try {
        await api('PATCH', '/api/machines/' + m.id, { url: url.trim(), interval_ms: secs.trim() ? Math.round(Number(secs) * 1000) : 0 });
      } catch (e) { document.getElementById('m-error').textContent = e.message; }
      loadMachines();
    });
    const del = el('button', 'Delete');
    del.addEventListener('click', async () => { if (confirm('Delete ' + m.name + '?')) { await api('DELETE', '/api/machines/' + m.id); loadMachines(); } });
    admin.append(edit, toggle, del);
    tr.append(admin);
    api('GET', '/api/machines/' + m.id + '/samples').then((s) => {
      const recent = s.samples.slice(-60);
      chart.replaceChildren(sparkline([recent.map((x) => x.cpu), recent.map((x) => x.mem), recent.map((x) => x.disk)], 100));
    }).catch(() => {});
    return tr;
  }));
  touched();
}

document.getElementById('add-machine').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const err = document.getElementById('m-error');
  err.textContent = '';
  const secs = document.getElementById('m-interval').value;
  try {
    await api('POST', '/api/machines', {
      name: document.getElementById('m-name').value.trim(),
      url: document.getElementById('m-url').value.trim(),
      interval_ms: secs ? Math.round(Number(secs) * 1000) : undefined,
    });
    ev.target.reset();
    loadMachines();
  } catch (e) { err.textContent = e.message; }
});

// ---- rules --------------------------------------------------------------------

async function loadRules() {
  const r = await api('GET', '/api/rules');
  const tbody = document.querySelector('#rules tbody');
  tbody.replaceChildren(...['cpu', 'mem', 'disk', 'unreachable'].map((name) => {
    const tr = el('tr');
    tr.dataset.rule = name;
    const input = (field, value, type) => {
      const i = el('input');
      i.name = name + '.' + field; i.value = value; i.type = type; i.step = 'any';
      i.disabled = state.role !== 'admin' || (name === 'unreachable' && field !== 'for');
      const td = el('td'); td.append(i); return td;
    };
    tr.append(el('td', name), input('threshold', r[name].threshold, 'number'), input('for', r[name].for, 'text'), input('hysteresis', r[name].hysteresis, 'number'));
    return tr;
  }));
  const st = document.getElementById('r-staleness');
  st.value = r.staleness_intervals;
  st.disabled = state.role !== 'admin';
}

document.getElementById('rules-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const msg = document.getElementById('r-msg');
  const body = { staleness_intervals: Number(document.getElementById('r-staleness').value) };
  for (const name of ['cpu', 'mem', 'disk', 'unreachable']) {
    const v = (f) => document.querySelector('input[name="' + name + '.' + f + '"]').value;
    body[name] = { threshold: Number(v('threshold')), for: v('for'), hysteresis: Number(v('hysteresis')) };
  }
  try { await api('PUT', '/api/rules', body); msg.className = ''; msg.textContent = 'saved'; }
  catch (e) { msg.className = 'error'; msg.textContent = e.message; }
});

// ---- backtest -------------------------------------------------------------------
// A backtest is recorded by the API and run by a processor; this page polls its
// progress, then draws per-rule counts and, per machine, the metric over the range
// with both thresholds and the recorded vs would-be incident intervals (SVG).

const RULES = ['cpu', 'mem', 'disk', 'unreachable'];
const SVG_NS = 'http://www.w3.org/2000/svg';
function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}
function localInput(d) {
  const p = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
}

async function loadBacktestForm() {
  const r = await api('GET', '/api/rules');
  state.rulesInForce = r;
  if (!document.getElementById('bt-from').value) {
    const now = new Date();
    document.getElementById('bt-to').value = localInput(new Date(now.getTime() + 60000));
    document.getElementById('bt-from').value = localInput(new Date(now.getTime() - 24 * 3600 * 1000));
  }
  const tbody = document.querySelector('#bt-rules tbody');
  if (tbody.children.length) return;
  tbody.replaceChildren(...RULES.map((name) => {
    const tr = el('tr');
    tr.dataset.rule = name;
    const input = (field, value, type) => {
      const i = el('input');
      i.name = 'bt.' + name + '.' + field; i.value = value; i.type = type; i.step = 'any';
      i.disabled = name === 'unreachable' && field !== 'for';
      const td = el('td'); td.append(i); return td;
    };
    const now = r[name];
    tr.append(el('td', name), input('threshold', now.threshold, 'number'), input('for', now.for, 'text'),
      input('hysteresis', now.hysteresis, 'number'),
      el('td', name === 'unreachable' ? 'for ' + now.for : '> ' + now.threshold + '% for ' + now.for, 'muted'));
    return tr;
  }));
}

function backtestBody() {
  const v = (rule, f) => document.querySelector('input[name="bt.' + rule + '.' + f + '"]').value;
  const rules = { staleness_intervals: state.rulesInForce.staleness_intervals };
  for (const name of RULES) rules[name] = { threshold: Number(v(name, 'threshold')), for: v(name, 'for'), hysteresis: Number(v(name, 'hysteresis')) };
  const machines = document.getElementById('bt-machines').value.split(',').map((s) => s.trim()).filter(Boolean);
  return {
    from: new Date(document.getElementById('bt-from').value).toISOString(),
    to: new Date(document.getElementById('bt-to').value).toISOString(),
    machines, rules,
  };
}

document.getElementById('bt-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const status = document.getElementById('bt-status');
  const bar = document.getElementById('bt-progress');
  const run = document.getElementById('bt-run');
  document.getElementById('bt-result').hidden = true;
  status.className = '';
  run.disabled = true;
  try {
    const created = await api('POST', '/api/backtests', backtestBody());
    bar.hidden = false; bar.value = 0;
    let bt;
    for (;;) {
      bt = await api('GET', '/api/backtests/' + created.id);
      bar.value = bt.progress;
      status.textContent = bt.status === 'queued' ? 'queued: waiting for a processor'
        : bt.status + ': ' + Math.round(bt.progress * 100) + '%, ' + bt.events_read.toLocaleString() + ' events replayed';
      if (bt.status === 'done' || bt.status === 'failed') break;
      await new Promise((r) => setTimeout(r, 500));
    }
    if (bt.status === 'failed') throw new Error('backtest failed: ' + bt.error);
    status.textContent = 'done: ' + bt.result.events_read.toLocaleString() + ' events replayed' + (bt.result.truncated ? ' (lists cut at 10,000)' : '');
    await renderBacktest(bt);
  } catch (e) {
    status.className = 'error';
    status.textContent = e.message;
  } finally {
    run.disabled = false;
    bar.hidden = true;
  }
});

async function renderBacktest(bt) {
  const r = bt.result;
  const two = (a, b, digits) => a.toFixed(digits) + ' / ' + b.toFixed(digits);
  document.querySelector('#bt-counts tbody').replaceChildren(...r.rules.map((c) => {
    const tr = el('tr');
    tr.dataset.rule = c.rule;
    tr.append(el('td', c.rule), el('td', c.would_open, 'would-open'), el('td', c.actual, 'actual'),
      el('td', c.added, c.added ? 'diff-added' : ''), el('td', c.removed, c.removed ? 'diff-removed' : ''), el('td', c.changed),
      el('td', two(c.would_be_quality.incidents_per_day, c.actual_quality.incidents_per_day, 2)),
      el('td', two(c.would_be_quality.hours_in_incident, c.actual_quality.hours_in_incident, 2)),
      el('td', two(c.would_be_quality.flips_per_day, c.actual_quality.flips_per_day, 2)));
    return tr;
  }));
  // One timeline per machine x rule that has a recorded or would-be incident.
  const groups = new Map();
  const add = (i, kind) => {
    const key = i.machine + '\u0000' + i.rule;
    if (!groups.has(key)) groups.set(key, { machine: i.machine, rule: i.rule, actual: [], would: [] });
    groups.get(key)[kind].push(i);
  };
  r.recorded.forEach((i) => add(i, 'actual'));
  r.incidents.forEach((i) => add(i, 'would'));
  const keys = [...groups.keys()].sort();
  const shown = keys.slice(0, 40);
  const box = document.getElementById('bt-timelines');
  box.replaceChildren();
  if (keys.length > shown.length) box.append(el('p', 'showing ' + shown.length + ' of ' + keys.length + ' machine/rule timelines', 'muted'));
  if (!keys.length) box.append(el('p', 'no incidents, recorded or would-be, in this range', 'muted'));
  if (!state.machines.length) { try { state.machines = (await api('GET', '/api/machines')).machines; } catch (e) { /* drawn without lines */ } }
  const from = new Date(bt.from).getTime(), to = new Date(bt.to).getTime();
  const samples = new Map();
  for (const key of shown) {
    const g = groups.get(key);
    const div = el('div', undefined, 'timeline');
    div.dataset.machine = g.machine; div.dataset.rule = g.rule;
    div.append(el('h3', g.machine + ' · ' + g.rule + ' · recorded ' + g.actual.length + ', would-be ' + g.would.length));
    box.append(div);
    const m = state.machines.find((x) => x.name === g.machine);
    if (m && !samples.has(g.machine)) {
      samples.set(g.machine, api('GET', '/api/machines/' + m.id + '/samples?from=' + encodeURIComponent(bt.from) + '&to=' + encodeURIComponent(bt.to))
        .then((s) => s.samples).catch(() => []));
    }
    const series = m ? await samples.get(g.machine) : [];
    div.append(timeline(g, series, from, to, bt.baseline[g.rule].threshold, bt.rules[g.rule].threshold));
  }
  document.getElementById('bt-result').hidden = false;
}

function timeline(g, series, from, to, baseThreshold, testThreshold) {
  const W = 800, H = 160, top = 10, plot = 90, rowH = 14;
  const x = (t) => ((t - from) / Math.max(1, to - from)) * W;
  const y = (v) => top + plot - (v / 100) * plot;
  const svg = svgEl('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img' });
  svg.append(svgEl('rect', { x: 0, y: top, width: W, height: plot, fill: '#fafafa' }));
  const label = (text, attrs) => { const t = svgEl('text', Object.assign({ 'font-size': 9, fill: '#777' }, attrs)); t.textContent = text; svg.append(t); };
  label(fmtTime(from), { x: 2, y: H - 2 });
  label(fmtTime(to), { x: W - 2, y: H - 2, 'text-anchor': 'end' });
  label('recorded', { x: 2, y: top + plot + 16 });
  label('would-be', { x: 2, y: top + plot + 34 });
  if (g.rule === 'unreachable') {
    for (const s of series) {
      if (s.failure_reason) svg.append(svgEl('rect', { x: x(new Date(s.observed_at).getTime()), y: top + plot - 12, width: 1.5, height: 12, fill: '#7f8c8d', class: 'failure' }));
    }
  } else {
    const pts = series.filter((s) => s[g.rule] !== null && s[g.rule] !== undefined)
      .map((s) => x(new Date(s.observed_at).getTime()).toFixed(1) + ',' + y(s[g.rule]).toFixed(1));
    if (pts.length) svg.append(svgEl('polyline', { points: pts.join(' '), fill: 'none', stroke: '#2e86c1', 'stroke-width': 1.2, class: 'metric' }));
    svg.append(svgEl('line', { x1: 0, x2: W, y1: y(baseThreshold), y2: y(baseThreshold), stroke: '#7f8c8d', 'stroke-dasharray': '6 4', class: 'threshold-actual' }));
    svg.append(svgEl('line', { x1: 0, x2: W, y1: y(testThreshold), y2: y(testThreshold), stroke: '#e67e22', 'stroke-dasharray': '3 3', class: 'threshold-would' }));
    label(baseThreshold + '% in force', { x: W - 2, y: y(baseThreshold) + (baseThreshold >= testThreshold ? -2 : 9), 'text-anchor': 'end' });
    label(testThreshold + '% tested', { x: W - 120, y: y(testThreshold) + (testThreshold > baseThreshold ? -2 : 9), 'text-anchor': 'end', fill: '#e67e22' });
  }
  const bars = (list, row, color, cls) => {
    for (const i of list) {
      const a = Math.max(from, new Date(i.opened_at).getTime());
      const b = i.resolved_at ? Math.min(to, new Date(i.resolved_at).getTime()) : to;
      const rect = svgEl('rect', { x: x(a), y: top + plot + 6 + row * (rowH + 4), width: Math.max(2, x(b) - x(a)), height: rowH, fill: color, class: cls });
      const tip = svgEl('title');
      tip.textContent = (cls === 'actual' ? 'recorded ' : 'would-be ') + fmtTime(i.opened_at) + ' – ' + (i.resolved_at ? fmtTime(i.resolved_at) : 'open') + (i.peak !== null && i.peak !== undefined ? ', peak ' + i.peak.toFixed(1) + '%' : '');
      rect.append(tip);
      svg.append(rect);
    }
  };
  bars(g.actual, 0, '#c0392b', 'actual');
  bars(g.would, 1, '#e67e22', 'would');
  return svg;
}

// ---- navigation ----------------------------------------------------------------

function show(view) {
  for (const b of document.querySelectorAll('nav button')) b.classList.toggle('active', b.dataset.view === view);
  for (const s of document.querySelectorAll('main section')) s.hidden = s.id !== 'view-' + view;
  if (view === 'machines') loadMachines().catch(() => {});
  if (view === 'rules') loadRules().catch(() => {});
  if (view === 'backtest') loadBacktestForm().catch((e) => { document.getElementById('bt-status').textContent = e.message; });
}
for (const b of document.querySelectorAll('nav button')) b.addEventListener('click', () => show(b.dataset.view));
for (const id of ['f-status', 'f-machine', 'f-rule']) document.getElementById(id).addEventListener('input', renderIncidents);
document.getElementById('logout').addEventListener('click', async () => {
  try { await api('DELETE', '/api/session'); } finally { window.location.assign('/login'); }
});

(async function start() {
  try {
    const me = await api('GET', '/api/session');
    state.csrf = me.csrf_token;
    state.role = me.role;
    document.getElementById('who').textContent = me.username + ' (' + me.role + ')';
    document.body.classList.toggle('admin', me.role === 'admin');
  } catch (e) { return; }
  setInterval(() => { if (!document.getElementById('view-machines').hidden) loadMachines().catch(() => {}); }, 15000);
  followIncidents();
})();
