// Drives the real dashboard in Debian's headless Chromium through playwright-core.
// Env: BASE_URL, USERNAME, PASSWORD, CHROMIUM (default /usr/bin/chromium).
// Protocol with the Rust test that runs it: prints "READY" once the incidents view
// is live, then waits for the incident the test records (a machine named like an
// XSS payload) to appear without a reload. Exit code 0 means every check passed.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const base = process.env.BASE_URL;
const evil = '<img src=x onerror=alert(1)>';
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  page.on('dialog', async (d) => { await d.dismiss(); fail('a dialog opened: script injection ran'); });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));

  // Not logged in: the dashboard redirects to the login form.
  await page.goto(base + '/');
  if (!page.url().endsWith('/login')) fail('expected a redirect to /login, got ' + page.url());
  await page.fill('#username', process.env.USERNAME);
  await page.fill('#password', 'wrong password entirely');
  await page.click('#login-button');
  await page.waitForSelector('#login-error:not(:empty)');
  await page.fill('#password', process.env.PASSWORD);
  await page.click('#login-button');
  await page.waitForURL(base + '/');
  await page.waitForSelector('#conn.live', { timeout: 15000 });
  console.log('READY');

  // The test records an incident now; it must appear without a reload.
  const started = Date.now();
  const row = page.locator('#incidents tbody tr', { hasText: 'img src=x' });
  await row.first().waitFor({ timeout: 15000 });
  console.log('incident appeared after ' + (Date.now() - started) + ' ms');
  const cell = await row.first().locator('td').nth(1).textContent();
  if (cell !== evil) fail('machine name not shown as text: ' + JSON.stringify(cell));
  if (await page.locator('#incidents img').count() !== 0) fail('an <img> element was injected');
  if ((await row.first().locator('td').first().textContent()) !== 'open') fail('the new incident is not open');

  // Add a machine through the form.
  await page.click('nav button[data-view="machines"]');
  await page.fill('#m-name', 'added-from-browser');
  await page.fill('#m-url', 'http://127.0.0.1:9/status');
  await page.fill('#m-interval', '60');
  await page.click('#add-machine button[type="submit"]');
  await page.locator('#machines tbody tr', { hasText: 'added-from-browser' }).waitFor({ timeout: 10000 });
  // Edit it: the prompts ask for the URL and the interval.
  const answers = ['http://127.0.0.1:10/status', '120'];
  page.removeAllListeners('dialog');
  page.on('dialog', async (d) => {
    if (d.type() !== 'prompt') { await d.dismiss(); fail('unexpected ' + d.type() + ' dialog: ' + d.message()); }
    await d.accept(answers.shift());
  });
  await page.locator('#machines tbody tr', { hasText: 'added-from-browser' }).locator('button', { hasText: 'Edit' }).click();
  await page.waitForFunction(() => [...document.querySelectorAll('#machines tbody tr')].some((r) => r.dataset.name === 'added-from-browser'));
  page.removeAllListeners('dialog');
  page.on('dialog', async (d) => { await d.dismiss(); fail('a dialog opened: ' + d.message()); });
  // A bad URL is refused with the API's reason.
  await page.fill('#m-name', 'bad-url');
  await page.fill('#m-url', 'ftp://nowhere');
  await page.click('#add-machine button[type="submit"]');
  await page.waitForSelector('#m-error:not(:empty)');

  await page.screenshot({ path: process.env.SCREENSHOT || '/tmp/dashboard.png', fullPage: true });

  // Log out: back to the form, and the dashboard is closed again.
  await page.click('#logout');
  await page.waitForURL(base + '/login');
  await page.goto(base + '/');
  if (!page.url().endsWith('/login')) fail('after logout the dashboard is still reachable');
  if (errors.length) fail('page errors: ' + errors.join('; '));
  console.log('OK');
} finally {
  await browser.close();
}
