// The login form: POST /api/session, then the dashboard.
'use strict';
document.getElementById('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const err = document.getElementById('login-error');
  err.textContent = '';
  try {
    const r = await fetch('/api/session', {
      method: 'POST',
      headers: {'content-type': 'application/json'},
      body: JSON.stringify({username: document.getElementById('username').value, password: document.getElementById('password').value}),
    });
    if (r.ok) { window.location.assign('/'); return; }
    const body = await r.json().catch(() => ({}));
    err.textContent = body.reason || ('login failed (' + r.status + ')');
  } catch (e) {
    err.textContent = 'cannot reach the server';
  }
});
