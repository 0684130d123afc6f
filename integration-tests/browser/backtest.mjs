// The backtest page in Debian's headless Chromium: log in, open Backtest, raise
// the CPU threshold above every sample, run, watch it finish, and check what the
// page shows: per-rule counts (the recorded CPU incidents are "removed") and the
// machine's timeline (metric line, both thresholds, recorded bars, no would-be bars).
// Env: BASE_URL, USERNAME, PASSWORD, HOT_MACHINE, CHROMIUM. Exit code 0: all passed.
import { chromium } from 'playwright-core';

const base = process.env.BASE_URL;
const hot = process.env.HOT_MACHINE;
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base + '/login');
  await page.fill('#username', process.env.USERNAME);
  await page.fill('#password', process.env.PASSWORD);
  await page.click('#login-button');
  await page.waitForURL(base + '/');

  await page.click('nav button[data-view="backtest"]');
  const cpu = page.locator('input[name="bt.cpu.threshold"]');
  await cpu.waitFor({ timeout: 10000 });
  await cpu.fill('99.5');
  await page.fill('#bt-machines', hot);
  await page.click('#bt-run');
  // Progress is shown while it runs; the result replaces it.
  await page.locator('#bt-status', { hasText: /queued|running|done/ }).waitFor({ timeout: 10000 });
  await page.locator('#bt-result').waitFor({ state: 'visible', timeout: 90000 });
  console.log('status: ' + await page.textContent('#bt-status'));

  const cell = async (rule, n) => Number(await page.locator('#bt-counts tbody tr[data-rule="' + rule + '"] td').nth(n).textContent());
  const [wouldOpen, actual, added, removed] = [await cell('cpu', 1), await cell('cpu', 2), await cell('cpu', 3), await cell('cpu', 4)];
  console.log('cpu: would-open ' + wouldOpen + ', actual ' + actual + ', added ' + added + ', removed ' + removed);
  if (wouldOpen !== 0) fail('no CPU incident should open above 99.5%');
  if (actual < 1 || removed !== actual) fail('every recorded CPU incident should be removed');
  const quality = await page.locator('#bt-counts tbody tr[data-rule="cpu"] td').nth(6).textContent();
  if (!/^0\.00 \/ \d+\.\d\d$/.test(quality)) fail('incidents/day shown as ' + JSON.stringify(quality));

  const tl = page.locator('.timeline[data-machine="' + hot + '"][data-rule="cpu"]');
  await tl.waitFor({ timeout: 10000 });
  if (await tl.locator('rect.actual').count() < 1) fail('no recorded incident bar on the timeline');
  if (await tl.locator('rect.would').count() !== 0) fail('a would-be bar where none should be');
  if (await tl.locator('polyline.metric').count() !== 1) fail('no CPU line on the timeline');
  if (await tl.locator('line.threshold-actual').count() !== 1 || await tl.locator('line.threshold-would').count() !== 1) fail('both thresholds should be drawn');
  const [yActual, yWould] = [await tl.locator('line.threshold-actual').getAttribute('y1'), await tl.locator('line.threshold-would').getAttribute('y1')];
  if (!(Number(yWould) < Number(yActual))) fail('the tested threshold (99.5) should be drawn above the one in force');
  if (errors.length) fail('page errors: ' + errors.join('; '));
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  console.log('backtest page checks passed');
} finally {
  await browser.close();
}
