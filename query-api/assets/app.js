// The dashboard: vanilla JS, no framework, no build step. All text goes through
// textContent (never innerHTML), so a machine named <img src=x onerror=alert(1)>
// shows as text. Incidents update live through the long-poll of
// /api/incidents/changes and resume from the last cursor after any error.
'use strict';

const state = { csrf: '', role: '', incidents: new Map(), cursor: null, machines: [] };

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

// ---- navigation ----------------------------------------------------------------

function show(view) {
  for (const b of document.querySelectorAll('nav button')) b.classList.toggle('active', b.dataset.view === view);
  for (const s of document.querySelectorAll('main section')) s.hidden = s.id !== 'view-' + view;
  if (view === 'machines') loadMachines().catch(() => {});
  if (view === 'rules') loadRules().catch(() => {});
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
