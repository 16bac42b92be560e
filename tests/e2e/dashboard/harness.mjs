// Load the admin dashboard in Debian's chromium (through playwright-core,
// which brings no browser of its own), read what it rendered twice, a few
// seconds apart, take a screenshot, and print one JSON object on stdout.
//
//   node harness.mjs URL SCREENSHOT.png WAIT_SECONDS
//
// tests/e2e/dashboard.rs runs it and asserts on the JSON.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [url, screenshot, waitArg] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error('usage: node harness.mjs URL SCREENSHOT.png [WAIT_SECONDS]');
  process.exit(2);
}
const PARSER_SAMPLE = [
  '# HELP refractium_x_total A counter.',
  '# TYPE refractium_x_total counter',
  'refractium_x_total{route="a \\"quoted\\" \\\\ name",protocol="http"} 12',
  'refractium_y 0.25 1700000000000',
  'refractium_z{le="+Inf"} +Inf',
  'refractium_w{a="1",} 3e2',
  'not a sample line',
  '',
].join('\n');
const waitMs = Math.min(Number(waitArg ?? 5), 30) * 1000;

// Whatever happens, give up after a minute.
const watchdog = setTimeout(() => {
  console.error('harness: gave up after 60 s');
  process.exit(3);
}, 60_000);

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'refractium-dashboard-'));
const consoleErrors = [];
const pageErrors = [];
const foreign = [];
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', msg => {
    if (msg.type() === 'error') consoleErrors.push(msg.text());
  });
  // A script error ends the wait for the first polls at once.
  const broken = new Promise((_, reject) => page.on('pageerror', err => reject(err)));
  broken.catch(() => {});
  page.on('pageerror', err => pageErrors.push(String(err)));
  const origin = new URL(url).origin;
  page.on('request', req => {
    const u = req.url();
    if (!u.startsWith(origin) && !u.startsWith('data:')) foreign.push(u);
  });

  await page.goto(url, { waitUntil: 'load', timeout: 20_000 });
  // Two polls: the second is the first with rates.
  await Promise.race([
    page.waitForFunction(() => Number(document.body.dataset.polls) >= 2, null, { timeout: 20_000 }),
    broken,
  ]);
  // The page's Prometheus parser on the odd corners of the text format.
  const parsed = await page.evaluate(text => parseMetrics(text), PARSER_SAMPLE);
  const first = await read(page);
  await page.waitForTimeout(waitMs);
  const second = await read(page);
  fs.mkdirSync(path.dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ first, second, parsed, consoleErrors, pageErrors, foreign }));
} catch (err) {
  console.log(JSON.stringify({ error: String(err?.stack ?? err), consoleErrors, pageErrors, foreign }));
  process.exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  clearTimeout(watchdog);
}

/** What the page shows, through its data- attributes and ids. */
function read(page) {
  return page.evaluate(() => {
    const rows = (selector, attrs) =>
      [...document.querySelectorAll(selector)].map(row => {
        const out = { text: row.textContent.trim() };
        for (const a of attrs) out[a] = row.dataset[a] ?? null;
        return out;
      });
    const value = id => Number(document.getElementById(id)?.dataset.value ?? NaN);
    return {
      polls: Number(document.body.dataset.polls),
      pollState: document.getElementById('poll-state')?.dataset.state ?? null,
      config: document.getElementById('config')?.textContent ?? null,
      tiles: {
        tcpRate: value('tcp-rate'),
        tcpAccepted: value('tcp-accepted'),
        tcpOpen: value('tcp-open'),
        udpSessions: value('udp-sessions'),
        reloadsOk: Number(document.getElementById('reload-counts')?.dataset.ok ?? NaN),
        reloadsFailed: Number(document.getElementById('reload-counts')?.dataset.failed ?? NaN),
      },
      listeners: rows('tr[data-listener]', ['listener', 'transport']),
      servers: rows('tr[data-server]', ['backend', 'server', 'up', 'active']),
      protocols: rows('tr[data-protocol]', ['protocol', 'total', 'rate']),
      routes: rows('tr[data-route]', ['route', 'total', 'rate']),
      plugins: rows('tr[data-plugin]', ['plugin', 'kind', 'disabled', 'failures']),
      reloads: rows('tr[data-reload-ok]', ['reloadOk', 'via']),
      chartLines: {
        protocol: document.querySelectorAll('#chart-protocol polyline').length,
        route: document.querySelectorAll('#chart-route polyline').length,
      },
    };
  });
}
