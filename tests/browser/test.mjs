// Browser test of the demo page and the admin page: starts a real host with the example
// plugins, drives two headless Chromium pages through the demo page's own controls, watches
// them on the admin page, and checks what each shows.
//
// Environment:
//   SWITCHBOARD_BIN          the built `switchboard` binary (required)
//   SWITCHBOARD_PLUGINS_DIR  folder with the example plugins' components (required)
//   SWITCHBOARD_SCREENSHOT   where to write the screenshot (default: screenshot.png here)
//   CHROMIUM                 the browser (default: /usr/bin/chromium)
//
// Prints one line per check and closes with `N passed, M failed`; exits non-zero on failure.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.SWITCHBOARD_BIN;
const PLUGINS_DIR = process.env.SWITCHBOARD_PLUGINS_DIR;
const SCREENSHOT = path.resolve(process.env.SWITCHBOARD_SCREENSHOT || path.join(here, 'screenshot.png'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const API_KEY = 'browser-test-api-key';
const JWT_SECRET = 'browser-test-secret-not-for-production';
/** Startup includes compiling the plugins when their cache is cold. */
const READY_TIMEOUT_MS = 180_000;
/** Longest wait for any one thing to show on a page. */
const STEP_TIMEOUT_MS = 15_000;
/** How long the host gets to exit after SIGTERM before it is killed. */
const STOP_TIMEOUT_MS = 15_000;
/** Host output kept for the failure report. */
const HOST_LOG_KEEP = 64 * 1024;

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// ------------------------------------------------------------------ the host

/** A port that was free a moment ago: bind :0, read it, close. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts `switchboard serve` configured by environment overrides only. */
function startHost(port, workDir) {
  const child = spawn(path.resolve(BIN), ['serve'], {
    cwd: workDir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      SWITCHBOARD_SERVER__LISTEN: `127.0.0.1:${port}`,
      SWITCHBOARD_SERVER__DEV_TOKENS: 'true',
      SWITCHBOARD_AUTH__JWT_SECRET: JWT_SECRET,
      SWITCHBOARD_API__KEYS: JSON.stringify([API_KEY]),
      SWITCHBOARD_PLUGINS__DIR: path.resolve(PLUGINS_DIR),
    },
  });
  const host = { child, output: '', exited: null };
  const keep = (chunk) => {
    host.output = (host.output + chunk.toString()).slice(-HOST_LOG_KEEP);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  host.exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      host.exited = { code, signal };
      resolve(host.exited);
    });
    child.on('error', (err) => {
      host.exited = { error: err.message };
      resolve(host.exited);
    });
  });
  return host;
}

/** Polls `/readyz` until it answers 200, the host exits, or the deadline passes. */
async function waitReady(base, host) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (host.exited) throw new Error(`host exited before it was ready: ${JSON.stringify(host.exited)}`);
    try {
      const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) return;
      last = `${res.status} ${await res.text()}`;
    } catch (e) {
      last = e.cause?.code || e.message;
    }
    await delay(100);
  }
  throw new Error(`host not ready within ${READY_TIMEOUT_MS / 1000} s (last: ${last})`);
}

async function stopHost(host) {
  if (!host || host.exited) return;
  host.child.kill('SIGTERM');
  const stopped = await Promise.race([host.exit, delay(STOP_TIMEOUT_MS).then(() => null)]);
  if (!stopped) {
    host.child.kill('SIGKILL');
    await host.exit;
  }
}

/** `POST /api/v1/messages` with the API key. */
async function push(base, body) {
  const res = await fetch(`${base}/api/v1/messages`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== 202) throw new Error(`push answered ${res.status}: ${text}`);
  return JSON.parse(text);
}

// ------------------------------------------------------------------ the page

const wait = { timeout: STEP_TIMEOUT_MS };

/** Fills the dev-token form and connects over `transport` (`ws` or `sse`). */
async function connectAs(page, userId, transport) {
  await page.bringToFront();
  await page.click('#tab-dev');
  await page.fill('#user-id', userId);
  await page.fill('#user-type', '2');
  await page.fill('#tenant-id', '');
  await page.click(`label[for="transport-${transport}"]`);
  await page.click('#connect');
  await waitConnected(page, userId, transport);
}

/** Waits until the page shows an open session of `userId` over `transport`. */
async function waitConnected(page, userId, transport) {
  await page.locator('#status[data-state="open"]').waitFor(wait);
  await page.waitForFunction(
    ([user, label]) => !document.querySelector('#session').hidden
      && document.querySelector('#s-user').textContent === user
      && document.querySelector('#s-transport').textContent === label,
    [userId, transport === 'sse' ? 'SSE' : 'WebSocket'],
    wait,
  );
}

/** Sends a chat message with the composer. A person acts on the tab in front, so do we. */
async function sendChat(page, to, text) {
  await page.bringToFront();
  await page.fill('#to-user', to);
  await page.fill('#text', text);
  await page.click('#send');
}

/** The chat entries of `kind` (`in` received, `out` sent) on `page` that contain `text`. */
function message(page, kind, text) {
  return page.locator(`#messages .msg.${kind}`, { hasText: text });
}

/** Waits until `locator` holds exactly `expected` (surrounding space aside). */
async function expectText(locator, expected) {
  const exact = new RegExp(`^\\s*${expected.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`);
  try {
    await locator.filter({ hasText: exact }).first().waitFor(wait);
  } catch {
    const actual = await locator.first().textContent({ timeout: 1_000 }).catch(() => null);
    throw new Error(`expected "${expected}", got ${actual === null ? 'nothing' : `"${actual.trim()}"`}`);
  }
}

// ------------------------------------------------------------------ checks

const results = [];

/** Removes terminal colour codes from text meant for a log. */
const plain = (text) => String(text).replace(/\x1b\[[0-9;]*m/g, '');

async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push({ name, ok: true });
    console.log(`ok      ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAILED  ${name}: ${plain(e.message).split('\n').slice(0, 6).join('\n        ')}`);
  }
}

async function main() {
  if (!BIN || !PLUGINS_DIR) {
    console.error('set SWITCHBOARD_BIN (the switchboard binary) and SWITCHBOARD_PLUGINS_DIR (the plugin components)');
    process.exit(2);
  }
  const workDir = await mkdtemp(path.join(tmpdir(), 'switchboard-browser-'));
  const tag = randomBytes(3).toString('hex');
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const pageErrors = [];
  let host;
  let context;
  // Never leave a host behind, even when the run is interrupted.
  process.on('exit', () => host?.child.exitCode === null && host.child.kill('SIGKILL'));
  for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => process.exit(130));

  try {
    host = startHost(port, workDir);
    let ready = false;
    await check('host starts and is ready', async () => {
      await waitReady(base, host);
      ready = true;
    });
    if (!ready) return;

    context = await chromium.launchPersistentContext(path.join(workDir, 'chromium-profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1440, height: 900 },
      colorScheme: 'light',
    });
    const [a, b] = [await context.newPage(), await context.newPage()];
    for (const [name, page] of [['A', a], ['B', b]]) {
      page.on('pageerror', (e) => pageErrors.push(`page ${name}: ${e.message}`));
    }
    await Promise.all([a.goto(`${base}/`), b.goto(`${base}/`)]);

    await check('two pages connect over WebSocket and show their sessions', async () => {
      await connectAs(a, '1', 'ws');
      await connectAs(b, '2', 'ws');
      await expectText(a.locator('#s-type'), '2');
      const node = (await a.locator('#s-node').textContent(wait)).trim();
      if (!node) throw new Error('no node id shown');
    });

    await check('each page lists the other user as online', async () => {
      await a.locator('#online-users [data-user-id="2"]').waitFor(wait);
      await b.locator('#online-users [data-user-id="1"]').waitFor(wait);
    });

    await check('the loaded plugins are listed', async () => {
      await a.locator('#plugins [data-name="demo-chat"]').waitFor(wait);
      await a.locator('#plugins [data-name="presence-announcer"]').waitFor(wait);
    });

    await check('a direct message from user 1 shows on user 2\'s page', async () => {
      const text = `direct ${tag}: hello user 2`;
      await sendChat(a, '2', text);
      const received = message(b, 'in', text);
      await received.waitFor(wait);
      await expectText(received.locator('.who'), 'User 1');
      await expectText(received.locator('.pill'), 'direct');
      await message(a, 'out', text).waitFor(wait);
      if (await message(a, 'in', text).count()) throw new Error('the sender received its own direct message');
    });

    await check('a group message shows on both pages', async () => {
      const text = `group ${tag}: hello everyone`;
      await sendChat(a, '', text);
      const received = message(b, 'in', text);
      await received.waitFor(wait);
      await expectText(received.locator('.pill'), 'group');
      // The sender's own copy comes back through the host and confirms the send.
      await expectText(message(a, 'out', text).locator('.state'), 'delivered to the group');
    });

    await check('switching to SSE opens a new session that receives an HTTP push', async () => {
      const before = (await b.locator('#s-session').textContent(wait)).trim();
      await b.bringToFront();
      await b.click('label[for="transport-sse"]');
      await waitConnected(b, '2', 'sse');
      const after = (await b.locator('#s-session').textContent(wait)).trim();
      if (after === before) throw new Error('the session id did not change');
      const text = `push ${tag}: from the server`;
      const answer = await push(base, {
        to: { user: { user_type: 2, user_id: '2' } },
        type: 'notice',
        content: { text },
      });
      if (!(answer.local_deliveries >= 1)) throw new Error(`push reached nobody: ${JSON.stringify(answer)}`);
      await b.locator('#messages .notice[data-type="notice"]', { hasText: text }).waitFor(wait);
    });

    await check('a message sent over SSE (HTTP dispatch) reaches the WebSocket page', async () => {
      const text = `reply ${tag}: sent over SSE`;
      await sendChat(b, '1', text);
      const received = message(a, 'in', text);
      await received.waitFor(wait);
      await expectText(received.locator('.who'), 'User 2');
      await expectText(message(b, 'out', text).locator('.state'), 'sent');
    });

    await check('an error from the host is shown', async () => {
      await b.bringToFront();
      await b.fill('#raw-type', 'no-such-type');
      await b.fill('#raw-content', '{"x":1}');
      await b.click('#raw-send');
      await b.locator('#messages .notice.error', { hasText: 'unknown_type' }).waitFor(wait);
      await b.locator('#toasts .toast.error', { hasText: 'unknown_type' }).waitFor(wait);
    });

    const admin = await context.newPage();
    admin.on('pageerror', (e) => pageErrors.push(`admin page: ${e.message}`));
    await admin.goto(`${base}/admin`);

    await check('the admin page shows nothing without an API key and refuses a wrong one', async () => {
      if (await admin.locator('#view').isVisible()) throw new Error('the view is open without a key');
      await admin.fill('#key', 'not-the-key');
      await admin.click('#unlock button[type="submit"]');
      await expectText(admin.locator('#unlock-error'), 'That API key was refused.');
    });

    await check('with the API key the admin page shows the node, its sessions and plugins', async () => {
      await admin.fill('#key', API_KEY);
      await admin.click('#unlock button[type="submit"]');
      await expectText(admin.locator('#state'), 'Live');
      if (await admin.locator('#unlock').isVisible()) throw new Error('the key form is still shown');
      await expectText(admin.locator('#broker'), 'local');
      const node = (await admin.locator('#node-id').textContent(wait)).trim();
      await expectText(admin.locator('#nodes'), node);
      // User 1 on WebSocket, user 2 on SSE (after the switch above).
      await expectText(admin.locator('#sessions-total'), '2');
      await admin.locator('#sessions tbody tr', { hasText: '/sse' }).waitFor(wait);
      const chat = admin.locator('#plugins tbody tr', { hasText: 'demo-chat' });
      await chat.waitFor(wait);
      const calls = Number((await chat.locator('td').nth(3).textContent(wait)).trim());
      if (!(calls >= 3)) throw new Error(`demo-chat shows ${calls} calls after three chat messages`);
      await chat.locator('td', { hasText: ' ms' }).waitFor(wait);
    });

    await check('the admin page updates live: a session closing and a listener error show up', async () => {
      await b.close();
      await expectText(admin.locator('#sessions-total'), '1');
      // An error the plugin returns counts on its row and shows as its last error.
      await a.bringToFront();
      await a.fill('#raw-type', 'demo-message-send');
      await a.fill('#raw-content', '{"text": 5}');
      await a.click('#raw-send');
      const chat = admin.locator('#plugins tbody tr', { hasText: 'demo-chat' });
      await chat.locator('td:nth-child(8)', { hasText: 'demo-message-send' }).waitFor(wait);
      const errors = Number((await chat.locator('td').nth(4).textContent(wait)).trim());
      if (errors !== 1) throw new Error(`demo-chat shows ${errors} errors, expected 1`);
    });

    await check('the pages raised no script errors', async () => {
      if (pageErrors.length) throw new Error(pageErrors.join('\n'));
    });

    await mkdir(path.dirname(SCREENSHOT), { recursive: true });
    await a.screenshot({ path: SCREENSHOT, animations: 'disabled' });
    console.log(`screenshot of user 1's page: ${SCREENSHOT}`);
    const adminShot = SCREENSHOT.replace(/\.png$/, '') + '-admin.png';
    await admin.screenshot({ path: adminShot, animations: 'disabled' });
    console.log(`screenshot of the admin page: ${adminShot}`);
  } finally {
    await context?.close().catch(() => {});
    await stopHost(host);
    if (results.some((r) => !r.ok) && host) {
      console.log('--- host output (tail) ---');
      console.log(plain(host.output).split('\n').slice(-60).join('\n'));
    }
    await rm(workDir, { recursive: true, force: true }).catch(() => {});
  }
}

try {
  await main();
} catch (e) {
  results.push({ name: 'test run', ok: false });
  console.log(`FAILED  test run: ${e.stack || e}`);
}
const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed;
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
