// The operator console in a real browser: Debian's Chromium, driven by playwright-core.
// Run by tests/api/console.rs, which starts the service, posts the known events and passes:
//   CONSOLE_BASE    http://127.0.0.1:PORT
//   ADMIN_TOKEN     the console's secret
//   WEBHOOK_URL     where to post the call that must appear without a reload
//   SECRETS         JSON array of strings that must appear nowhere (full numbers, SMS text, notes)
//   LAST_FOUR       the digits that must appear
//   SCREENSHOT_DIR  where to put the screenshots (desktop.png, narrow.png)
//   CHROMIUM        the browser (default /usr/bin/chromium)
// Exits 0 when every check passed; prints one line per check.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const base = process.env.CONSOLE_BASE;
const token = process.env.ADMIN_TOKEN;
const webhook = process.env.WEBHOOK_URL;
const secrets = JSON.parse(process.env.SECRETS || '[]');
const lastFour = process.env.LAST_FOUR;
const shots = process.env.SCREENSHOT_DIR || '.';
const deadline = Date.now() + 90_000; // the whole run is bounded

let failed = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok' : 'FAILED'}: ${what}${detail ? ` (${detail})` : ''}`);
  if (!ok) failed += 1;
  return ok;
}

async function until(what, fn, ms) {
  const end = Math.min(Date.now() + ms, deadline);
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  return last;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const requests = [];
  context.on('request', (r) => requests.push(r.url()));
  const page = await context.newPage();

  // Without the token, or with a wrong one: 401, and no cookie.
  let answer = await page.goto(`${base}/console`);
  check(answer.status() === 401, 'GET /console without a token is 401', `got ${answer.status()}`);
  answer = await page.goto(`${base}/console?token=wrong-${token}`);
  check(answer.status() === 401, 'a wrong token is 401', `got ${answer.status()}`);
  check((await context.cookies()).length === 0, 'no cookie without the right token');

  // With it: a cookie, and the token gone from the address bar.
  answer = await page.goto(`${base}/console?token=${encodeURIComponent(token)}`);
  check(answer.status() === 200, 'the console opens with the token', `got ${answer.status()}`);
  check(page.url() === `${base}/console`, 'the token is dropped from the URL', page.url());
  const cookie = (await context.cookies()).find((c) => c.name === 'callhippo_console');
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict',
    'the session cookie is HttpOnly and SameSite=Strict', JSON.stringify(cookie));
  check(cookie && !cookie.value.includes(token), 'the cookie does not hold the token');

  const figure = (name) => page.locator(`[data-figure="${name}"]`).first().textContent();
  check((await figure('call.today')) === '3', 'call.today shows 3', await figure('call.today'));
  check((await figure('sms.today')) === '2', 'sms.today shows 2', await figure('sms.today'));
  check((await figure('spool.events')) === '0', 'spool.events shows 0', await figure('spool.events'));
  check((await figure('database.state')) === 'writable', 'the database is writable',
    await figure('database.state'));

  // No personal data in full, in the HTML or in the API's answer.
  const html = await page.content();
  const api = await page.evaluate(async () => (await fetch('/console/api/summary')).text());
  for (const secret of secrets) {
    check(!html.includes(secret) && !api.includes(secret), `"${secret}" appears nowhere`);
  }
  check(html.includes(`…${lastFour}`), `the number's last four digits (…${lastFour}) appear`);

  // The refused delivery, its error, and Replay answering in place (by keyboard).
  const rejected = page.locator('tbody[data-fragment="rejected"] tr[data-delivery]').first();
  const error = await rejected.locator('td.error').textContent();
  check(/callSid is missing/.test(error), 'the refused delivery shows its error', error);
  await page.evaluate(() => { window.notReloaded = true; });
  const button = rejected.locator('[data-action="replay"]');
  const id = await button.getAttribute('data-id');
  await button.focus();
  await page.keyboard.press('Enter');
  const result = await until('replay', async () => {
    const t = await page.locator(`output[data-result="${id}"]`).first().textContent();
    return t && !t.includes('…') ? t : null;
  }, 10_000);
  check(/^replayed: rejected/.test(result || ''), 'Replay answers in place', result);

  // A call posted now shows within 10 s, without a reload.
  const now = new Date().toISOString();
  const posted = await fetch(webhook, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      activityType: 'call', callSid: `CA-late-${Date.now()}`, callType: 'Outgoing',
      from: '+15550109999', to: '+15550104455', status: 'Completed', time: now, startTime: now,
    }),
  });
  check(posted.status === 200, 'the fourth call is stored', `got ${posted.status}`);
  const started = Date.now();
  const four = await until('refresh', async () => (await figure('call.today')) === '4', 10_000);
  check(four, 'call.today shows 4 within 10 s', `${Date.now() - started} ms`);
  check(await page.evaluate(() => window.notReloaded === true), 'without a reload');
  check(await page.locator(`output[data-result="${id}"]`).first().textContent() === result,
    'the Replay result stays through the refresh');

  // Desktop, then 320 px wide: nothing wider than the screen.
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, 'desktop.png'), fullPage: true });
  await page.setViewportSize({ width: 320, height: 800 });
  await page.waitForTimeout(200);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 320, 'at 320 px nothing overflows', `scrollWidth ${width}`);
  await page.screenshot({ path: join(shots, 'narrow.png'), fullPage: true });

  // Keyboard: on a fresh load the first Tab reaches the skip link, which leads to the lists.
  const fresh = await context.newPage();
  await fresh.goto(`${base}/console`);
  await fresh.keyboard.press('Tab');
  const first = await fresh.evaluate(() => document.activeElement.textContent);
  check(/Skip to the deliveries/.test(first || ''), 'the first Tab reaches the skip link', first);
  await fresh.keyboard.press('Enter');
  check(fresh.url().endsWith('#deliveries'), 'the skip link leads to the deliveries', fresh.url());
  await fresh.close();

  const elsewhere = requests.filter((u) => !u.startsWith(`${base}/`));
  check(elsewhere.length === 0, 'no request leaves 127.0.0.1', elsewhere.join(', '));
  check(requests.some((u) => u.includes('/console/api/summary')), 'the page refreshed from the API');
} finally {
  await browser.close();
}
console.log(failed === 0 ? 'console: every check passed' : `console: ${failed} check(s) failed`);
process.exit(failed === 0 ? 0 : 1);
