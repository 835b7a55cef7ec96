// End-to-end tests of the viewer as an operator's console, in headless Chromium (playwright-core),
// against a running camgraph. Controls are found by role and accessible name.
//
//   node tests/browser/console.mjs MODE BASE_URL OUTDIR [options]
//
// MODE grid      16 cameras: every tile's painted frame number advances, stats appear for all,
//                `Stop` on one freezes only that one within 1 s, a second tab loads the camera
//                list within 2 s and its tiles move too. Screenshots at 1920x1080 and 390x844, and
//                no horizontal overflow on the phone.
// MODE streams   a camera with WebRTC: the page prefers WebRTC (getStats framesDecoded grows),
//                switches to MJPEG (the number moves again) and back; Resolution 640x360 gives
//                640-wide frames on that tile while a second tab stays at 1280; FPS 5 thins it.
// MODE operator  add through the form, a refused add shows the server's message, Remove with
//                confirm, a file camera's Remove says to edit the file; a bad YAML edit shows its
//                file:line:col on the page until a good file; then the server is restarted under
//                the page (--pid, --bin, --config, --listen): tiles live again within 5 s, without
//                a reload, and a camera removed through the API leaves with a notice.
// MODE signin    a server with tokens (--token T, a view token): the page is a sign-in form (401);
//                a wrong token is refused on the form, the right one opens a session (cookie) and
//                the console loads with its tile moving (streams over the WebSocket carry the
//                cookie too).
//
// Prints one JSON summary line on stdout; exits 1 with a message on stderr on any failure.

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { installMarkReader } from './marks.mjs';
import { CHROMIUM, CHROMIUM_ARGS, WEBRTC_ARGS, Failure, check, sleep } from './harness.mjs';

const OVERALL_TIMEOUT_MS = 150_000;

function parseArgs(argv) {
  const [mode, base, outDir, ...rest] = argv;
  const opts = { mode, base: base?.replace(/\/$/, ''), outDir, cameras: [] };
  for (let i = 0; i < rest.length; i++) {
    const key = rest[i].replace(/^--/, '');
    opts[key] = rest[++i];
  }
  if (!['grid', 'streams', 'operator', 'signin'].includes(mode) || !outDir) {
    console.error('usage: node console.mjs grid|streams|operator|signin BASE_URL OUTDIR [--pid P --bin B --config C --listen A] [--token T]');
    process.exit(2);
  }
  return opts;
}


/** Waits until `probe()` gives a truthy value; fails with `what` after `ms`. */
async function waitFor(what, ms, probe) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < ms) {
    last = await probe();
    if (last) return { value: last, ms: Date.now() - t0 };
    await sleep(50);
  }
  throw new Failure(`timed out after ${ms} ms waiting for ${what}`);
}

// In the page: every tile's painted frame number (null if unreadable) and its picture's size.
function readTiles() {
  const out = {};
  for (const t of document.querySelectorAll('article[data-camera]')) {
    const canvas = t.querySelector('canvas');
    const video = t.querySelector('video');
    const source = canvas.hidden ? video : canvas;
    const w = canvas.hidden ? video.videoWidth : canvas.width;
    const h = canvas.hidden ? video.videoHeight : canvas.height;
    // A picture scaled down from the camera's size carries its marks scaled too.
    const painted = window.camgraph?.tiles.get(t.dataset.camera)?.sourceSize?.[0] ?? w;
    const m = window.camgraphMarks(source, w, h, painted);
    out[t.dataset.camera] = { seq: m.seq, why: m.why, w, h, state: t.querySelector('.badge').dataset.state,
      numbers: t.querySelector('.numbers').textContent };
  }
  return out;
}

async function launch(state, viewport) {
  state.profile = mkdtempSync(join(tmpdir(), 'camgraph-console-'));
  state.context = await chromium.launchPersistentContext(state.profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    args: [...CHROMIUM_ARGS, ...WEBRTC_ARGS],
  });
  await installMarkReader(state.context);
  state.errors = [];
  return state.context;
}

async function openPage(state, url) {
  const page = state.context.pages().find((p) => p.url() === 'about:blank') ?? (await state.context.newPage());
  page.on('pageerror', (e) => state.errors.push(`page error: ${e}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !(state.expected || []).some((re) => re.test(m.text()))) state.errors.push(`console: ${m.text()}`);
  });
  const t0 = Date.now();
  const r = await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
  check(r?.ok(), `GET ${url} answered ${r?.status()}`);
  return { page, t0 };
}

const tile = (page, name) => page.getByRole('article', { name, exact: true });

async function liveTiles(page, names, ms) {
  return waitFor(`tiles ${names.join(', ')} to be live`, ms, async () => {
    const t = await page.evaluate(readTiles);
    return names.every((n) => t[n]?.state === 'live' && t[n].seq !== null) && t;
  });
}

/** Every named tile's number advanced between two readings `gap` ms apart; returns the readings. */
async function advancing(page, names, gap) {
  const a = await page.evaluate(readTiles);
  await sleep(gap);
  const b = await page.evaluate(readTiles);
  const stuck = names.filter((n) => !(a[n]?.seq !== null && b[n]?.seq !== null && b[n].seq > a[n].seq));
  return { a, b, stuck };
}

async function noHorizontalOverflow(page, what) {
  const { scroll, client } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  check(scroll <= client, `${what}: the page is ${scroll} px wide in a ${client} px viewport`);
}

async function smallTargets(page) {
  return page.evaluate(() => [...document.querySelectorAll('button, select, input, summary')]
    .filter((e) => e.offsetParent !== null)
    // A radio's target is its label.
    .map((e) => ({ e, r: (e.type === 'radio' ? e.closest('label') : e).getBoundingClientRect() }))
    .filter(({ r }) => r.width > 0 && r.height < 40)
    .map(({ e, r }) => `${e.tagName.toLowerCase()} '${e.textContent.trim() || e.getAttribute('aria-label') || e.name}' ${Math.round(r.height)} px`));
}

// ---- grid -----------------------------------------------------------------------------------

async function grid(o, state) {
  await launch(state, { width: 1920, height: 1080 });
  const names = Array.from({ length: 16 }, (_, i) => `cam${String(i + 1).padStart(2, '0')}`);
  const { page, t0 } = await openPage(state, `${o.base}/`);
  const first = await liveTiles(page, names, 20_000);
  const firstLiveMs = Date.now() - t0;
  const moving = await advancing(page, names, 1500);
  check(moving.stuck.length === 0, `tiles whose number did not advance in 1.5 s: ${moving.stuck.map((n) => `${n} ${JSON.stringify(moving.b[n])}`).join('; ')}`);
  const noStats = await waitFor('stats for every tile', 5000, async () => {
    const t = await page.evaluate(readTiles);
    return names.every((n) => /fps in/.test(t[n].numbers) && /\d+(\.\d)? fps in/.test(t[n].numbers)) && t;
  });
  await page.screenshot({ path: join(o.outDir, 'console-1920x1080.png') });

  // Stop one: it freezes within 1 s, the others go on.
  const victim = names[5];
  const stopClicked = Date.now();
  await tile(page, victim).getByRole('button', { name: 'Stop', exact: true }).click();
  const frozen = await waitFor(`${victim} to freeze`, 1000, async () => {
    const a = await page.evaluate(readTiles);
    await sleep(300);
    const b = await page.evaluate(readTiles);
    return a[victim].seq === b[victim].seq && b;
  });
  const freezeMs = Date.now() - stopClicked;
  const others = names.filter((n) => n !== victim);
  const after = await advancing(page, [...others, victim], 1200);
  check(after.stuck.length === 1 && after.stuck[0] === victim, `after Stop on ${victim}, not moving: ${after.stuck.join(', ')} (only ${victim} should be)`);
  const badge = await tile(page, victim).locator('.badge').getAttribute('data-state');
  check(badge === 'stopped', `${victim} says '${badge}' after Stop`);
  const stats = await page.evaluate(() => fetch('/api/stats').then((r) => r.json()));

  // A second tab: the camera list within 2 s, and its tiles move while the first tab's still do.
  const second = await state.context.newPage();
  second.on('pageerror', (e) => state.errors.push(`page error (tab 2): ${e}`));
  const t1 = Date.now();
  await second.goto(`${o.base}/`, { waitUntil: 'commit' });
  await waitFor('the second tab to list 16 cameras', 2000, async () => (await second.locator('article[data-camera]').count()) === 16);
  const secondListMs = Date.now() - t1;
  await liveTiles(second, others, 15_000);
  const secondMoving = await advancing(second, others, 1500);
  check(secondMoving.stuck.length === 0, `second tab: not moving: ${secondMoving.stuck.join(', ')}`);
  await second.close();
  await tile(page, victim).getByRole('button', { name: 'Start', exact: true }).click();
  await liveTiles(page, [victim], 5000);

  // The phone.
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(400);
  await noHorizontalOverflow(page, '390x844');
  const small = await smallTargets(page);
  check(small.length === 0, `touch targets under 40 px: ${small.slice(0, 5).join(', ')}`);
  await page.screenshot({ path: join(o.outDir, 'console-390x844.png') });
  await page.setViewportSize({ width: 3840, height: 2160 });
  await sleep(300);
  await noHorizontalOverflow(page, '3840x2160');
  await page.screenshot({ path: join(o.outDir, 'console-3840x2160.png') });
  return {
    firstLiveMs,
    freezeMs,
    secondListMs,
    fpsIn: Object.fromEntries(Object.entries(stats.cameras).map(([n, s]) => [n, s.fps_in])),
    sample: first.value[names[0]],
    statsLine: noStats.value[names[0]].numbers,
  };
}

// ---- streams --------------------------------------------------------------------------------

async function framesDecoded(page, name) {
  return page.evaluate((n) => {
    const pc = window.camgraph?.tiles.get(n)?.stream?.pc;
    if (!pc) return null;
    return pc.getStats().then((s) => {
      for (const v of s.values()) if (v.type === 'inbound-rtp' && v.kind === 'video') return { decoded: v.framesDecoded ?? 0, width: v.frameWidth };
      return { decoded: 0 };
    });
  }, name);
}

async function streams(o, state) {
  await launch(state, { width: 1280, height: 900 });
  const { page } = await openPage(state, `${o.base}/`);
  const t = tile(page, 'front');
  await t.waitFor({ timeout: 10_000 });
  // WebRTC is preferred where the camera offers it.
  await waitFor('the tile to be live over WebRTC', 15_000, async () => /WebRTC/.test(await t.locator('.badge').textContent()));
  const d0 = await framesDecoded(page, 'front');
  await sleep(1500);
  const d1 = await framesDecoded(page, 'front');
  check(d0 && d1 && d1.decoded > d0.decoded + 5, `WebRTC frames decoded did not grow: ${JSON.stringify([d0, d1])}`);
  const rtcMoving = await advancing(page, ['front'], 1000);
  check(rtcMoving.stuck.length === 0, `the WebRTC picture's number did not advance: ${JSON.stringify(rtcMoving.b.front)}`);

  // To MJPEG: the canvas moves again.
  await t.getByText('Stream settings').click();
  await t.getByRole('radio', { name: 'MJPEG' }).check();
  await liveTiles(page, ['front'], 5000);
  await waitFor('the MJPEG picture to show', 5000, async () => (await page.evaluate(readTiles)).front.w === 1280);
  const mjpegMoving = await advancing(page, ['front'], 1000);
  check(mjpegMoving.stuck.length === 0, `after switching to MJPEG the number did not advance: ${JSON.stringify(mjpegMoving.b.front)}`);

  // Resolution 640x360 on this tile; a second tab keeps 1280.
  const other = await state.context.newPage();
  await other.goto(`${o.base}/`);
  const ot = tile(other, 'front');
  await ot.getByText('Stream settings').click();
  await ot.getByRole('radio', { name: 'MJPEG' }).check();
  await waitFor('the second tab at 1280', 8000, async () => (await other.evaluate(readTiles)).front?.w === 1280);
  await t.getByRole('combobox', { name: 'Resolution' }).selectOption('640x360');
  const small = await waitFor('640-wide frames on the first tab', 5000, async () => {
    const r = (await page.evaluate(readTiles)).front;
    return r.w === 640 && r.seq !== null && r;
  });
  const smallMoving = await advancing(page, ['front'], 1000);
  check(smallMoving.stuck.length === 0, 'the 640x360 picture does not move');
  const otherNow = (await other.evaluate(readTiles)).front;
  check(otherNow.w === 1280 && otherNow.h === 720, `the other viewer changed too: ${otherNow.w}x${otherNow.h}`);

  // FPS 5: the numbers arrive about five times a second (the camera runs at 30).
  await t.getByRole('combobox', { name: 'FPS' }).selectOption('5');
  await sleep(800);
  const seen = new Set();
  const log = [];
  const t2 = Date.now();
  while (Date.now() - t2 < 2000) {
    const r = (await page.evaluate(readTiles)).front;
    if (r.seq !== null) seen.add(r.seq);
    log.push(`${Date.now() - t2}:${r.seq ?? r.why}:${r.w}:${r.state}`);
    await sleep(20);
  }
  check(seen.size >= 6 && seen.size <= 14, `FPS 5 showed ${seen.size} distinct frames in 2 s: ${log.join(' ')}`);
  // Quality 20: this viewer's JPEGs get smaller (the other tab keeps the encoder's 80).
  const jpegBytes = () => page.evaluate(() => window.camgraph.tiles.get('front').stream.lastBytes);
  const q80Bytes = await jpegBytes();
  await t.getByRole('combobox', { name: 'Quality' }).selectOption('20');
  const q20Seen = [];
  const q20 = await waitFor('smaller JPEGs at quality 20', 5000, async () => {
    const b = await jpegBytes();
    q20Seen.push(b);
    // The flat test pattern compresses well at any quality: 640x360 is ~9.6 KB at 80, ~6.9 KB at 20.
    return b && b < q80Bytes * 0.85 && b;
  }).catch((e) => { throw new Failure(`${e.message}: ${q80Bytes} bytes at 80, then ${q20Seen.slice(-5).join(', ')}`); });
  await liveTiles(page, ['front'], 5000);
  await other.close();

  // Back to WebRTC at 640x360 (scale 2) and 500 kbit/s.
  await t.getByRole('radio', { name: 'WebRTC' }).check();
  await t.getByRole('combobox', { name: 'Bitrate' }).selectOption('500');
  await waitFor('WebRTC again', 15_000, async () => /WebRTC/.test(await t.locator('.badge').textContent()));
  const e0 = await framesDecoded(page, 'front');
  await sleep(1500);
  const e1 = await framesDecoded(page, 'front');
  check(e0 && e1 && e1.decoded > e0.decoded + 5, `WebRTC again: frames decoded did not grow: ${JSON.stringify([e0, e1])}`);
  const variant = await page.evaluate(() => window.camgraph.tiles.get('front').stream.variant);
  check(variant === '500k/2', `the peer's variant is ${variant}, not 500k/2`);
  await page.screenshot({ path: join(o.outDir, 'console-streams.png') });
  return { webrtcDecoded: d1, mjpeg: mjpegMoving.b.front.w, small: `${small.value.w}x${small.value.h}`, fps5Distinct: seen.size, jpegBytesQ80: q80Bytes, jpegBytesQ20: q20.value, variant, webrtcWidth: e1.width };
}

// ---- operator -------------------------------------------------------------------------------

function startServer(o) {
  const child = spawn(o.bin, ['--config', o.config, '--listen', o.listen], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stderr.on('data', () => {});
  return new Promise((ok, fail) => {
    child.stdout.on('data', (d) => { if (String(d).includes('camgraph listening on')) ok(child); });
    child.on('exit', (code) => fail(new Failure(`camgraph exited with ${code}`)));
  });
}

async function operator(o, state) {
  await launch(state, { width: 1280, height: 900 });
  const { page } = await openPage(state, `${o.base}/`);
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.accept(); });
  await liveTiles(page, ['front'], 10_000);

  // Add through the form.
  const form = page.getByRole('form', { name: 'Add camera' });
  await form.getByRole('textbox', { name: 'Name' }).fill('side');
  await form.getByRole('textbox', { name: 'Source' }).fill('test');
  await form.getByRole('button', { name: 'Add' }).click();
  await liveTiles(page, ['side'], 8000);
  // A refused add shows the server's words (the browser logs the 409 itself).
  state.expected = [/status of 409/];
  await form.getByRole('textbox', { name: 'Name' }).fill('side');
  await form.getByRole('textbox', { name: 'Source' }).fill('test');
  await form.getByRole('button', { name: 'Add' }).click();
  const refused = await waitFor('the refusal', 3000, async () => {
    const s = await form.getByRole('status').textContent();
    return /already exists/.test(s) && s;
  });
  // A file camera cannot be removed here.
  await tile(page, 'front').getByRole('button', { name: 'Remove' }).click();
  const fileNote = await tile(page, 'front').locator('.note').textContent();
  check(/remove it from the file/.test(fileNote), `a file camera's Remove says: ${fileNote}`);
  // Remove with confirm.
  await tile(page, 'side').getByRole('button', { name: 'Remove' }).click();
  await waitFor('the side tile to leave', 4000, async () => (await page.locator('article[data-camera=side]').count()) === 0);
  check(dialogs.some((m) => /Remove camera 'side'/.test(m)), `no confirm before removing: ${dialogs}`);

  // The graph view: nodes, edges and their states.
  await page.getByText('Graph', { exact: true }).click();
  const graphImage = page.getByRole('img', { name: /graph of \d+ nodes and \d+ edges/ });
  await graphImage.waitFor({ timeout: 3000 });
  const graphName = await graphImage.getAttribute('aria-label');
  check(/graph of 3 nodes and 2 edges/.test(graphName), `graph view: ${graphName}`);
  await graphImage.screenshot({ path: join(o.outDir, 'console-graph.png') });

  // A bad YAML edit: its file:line:col on the page, until a good file.
  const good = readFileSync(o.config, 'utf8');
  writeFileSync(`${o.config}.tmp`, `${good}  broken: { type: camera, source: test, fps: 500 }\n  [\n`);
  const { renameSync } = await import('node:fs');
  renameSync(`${o.config}.tmp`, o.config);
  const banner = page.getByRole('alert').filter({ hasText: 'not applied' });
  await banner.waitFor({ timeout: 6000 });
  const bannerText = await banner.textContent();
  check(/graph\.yaml:\d+:\d+/.test(bannerText), `the reload banner has no file:line:col: ${bannerText}`);
  await page.screenshot({ path: join(o.outDir, 'console-reload-error.png') });
  writeFileSync(`${o.config}.tmp`, good);
  renameSync(`${o.config}.tmp`, o.config);
  await banner.waitFor({ state: 'hidden', timeout: 6000 });

  // Restart the server under the page (the browser logs the refused connections meanwhile).
  state.expected.push(/ERR_CONNECTION_REFUSED|WebSocket connection to .* failed|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET/);
  process.kill(Number(o.pid), 'SIGKILL');
  await page.getByRole('alert').filter({ hasText: 'unreachable' }).waitFor({ timeout: 8000 });
  const down = await page.evaluate(readTiles);
  check(down.front.state === 'unreachable', `while the server is down the tile says ${down.front.state}`);
  await page.screenshot({ path: join(o.outDir, 'console-unreachable.png') });
  state.server = await startServer(o);
  const restarted = Date.now();
  await waitFor('the tile to move again after the restart', 5000, async () => {
    const m = await advancing(page, ['front'], 300);
    return m.stuck.length === 0 && m.b.front.state === 'live';
  });
  const recoverMs = Date.now() - restarted;
  check(page.url() === `${o.base}/`, 'the page was reloaded');

  // Through the API: an added camera appears, a removed one leaves with a notice.
  await page.request.post(`${o.base}/api/camera/cameras/api_cam?source=test&width=320&height=240&fps=10`);
  await liveTiles(page, ['api_cam'], 6000);
  await page.request.delete(`${o.base}/api/camera/cameras/api_cam`);
  await page.getByText("Camera 'api_cam' was removed").waitFor({ timeout: 5000 });
  return { refused, fileNote, dialogs, graphName, bannerText, recoverMs };
}

// ---- sign-in ----------------------------------------------------------------------------------

async function signin(o, state) {
  await launch(state, { width: 1280, height: 800 });
  // The refused page load itself is logged by the browser.
  state.expected = [/status of 401/];
  const page = await state.context.newPage();
  page.on('pageerror', (e) => state.errors.push(`page error: ${e}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !state.expected.some((re) => re.test(m.text()))) state.errors.push(`console: ${m.text()}`);
  });
  const r = await page.goto(`${o.base}/`, { waitUntil: 'load', timeout: 15_000 });
  check(r?.status() === 401, `without a token / answered ${r?.status()}, not 401`);
  const field = page.getByRole('textbox', { name: 'Access token' });
  await field.waitFor({ timeout: 3000 });
  await page.screenshot({ path: join(o.outDir, 'signin.png') });
  await field.fill('not-the-token-0123456789');
  await page.getByRole('button', { name: 'Sign in' }).click();
  const refused = await waitFor('the refusal on the form', 3000, async () => {
    const t = await page.getByRole('alert').textContent();
    return /unknown token/.test(t) && t;
  });
  await field.fill(o.token);
  const t0 = Date.now();
  // Signing in loads the page again: wait for that before reading it.
  const reloaded = page.waitForEvent('load');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await reloaded;
  await liveTiles(page, ['front'], 10_000);
  const liveMs = Date.now() - t0;
  const moving = await advancing(page, ['front'], 1000);
  check(moving.stuck.length === 0, `after signing in the tile does not move: ${JSON.stringify(moving.b.front)}`);
  const cookies = await state.context.cookies();
  const session = cookies.find((c) => c.name === 'camgraph_token');
  check(session?.httpOnly, `no HttpOnly session cookie: ${JSON.stringify(cookies)}`);
  check(!page.url().includes('token'), `the token ended up in the URL: ${page.url()}`);
  await page.screenshot({ path: join(o.outDir, 'signed-in.png') });
  return { refused, liveMs };
}

const o = parseArgs(process.argv.slice(2));
mkdirSync(o.outDir, { recursive: true });
const state = {};
let code = 0;
const timer = setTimeout(() => { console.error(`console test: FAILED: gave up after ${OVERALL_TIMEOUT_MS / 1000} s`); process.exit(1); }, OVERALL_TIMEOUT_MS);
try {
  const result = await { grid, streams, operator, signin }[o.mode](o, state);
  check(state.errors.length === 0, `errors in the page: ${state.errors.join(' | ')}`);
  console.log(JSON.stringify({ ok: true, mode: o.mode, ...result }));
  console.error(`console test ${o.mode}: ok`);
} catch (e) {
  code = 1;
  const message = e instanceof Failure ? e.message : e?.stack ?? String(e);
  console.log(JSON.stringify({ ok: false, mode: o.mode, error: message, errors: state.errors }));
  console.error(`console test ${o.mode}: FAILED: ${message}`);
  try { await state.context?.pages()[0]?.screenshot({ path: join(o.outDir, `failure-${o.mode}.png`) }); } catch {}
} finally {
  try { await state.context?.close(); } catch {}
  state.server?.kill('SIGKILL');
  if (state.profile) rmSync(state.profile, { recursive: true, force: true });
  clearTimeout(timer);
}
process.exit(code);
