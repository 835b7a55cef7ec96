// End-to-end test of the camgraph viewer page in headless Chromium (playwright-core).
//
//   node tests/browser/viewer.mjs URL OUTDIR [--camera front] [--fps 30]
//
// Opens URL (the viewer, `/`), waits for the camera's tile (its MJPEG frames arrive over a
// WebSocket and are drawn on a <canvas>) to show frames, then reads the frame number painted by the test pattern (plugins/sources/testsrc: three rows of 32 black/white
// blocks, row0 = seq MSB first, row1 = !seq, row2 = capture ms) back from a canvas in the page, the
// same way `read_marks` does. It checks that the number advances at about the camera rate, that the
// page's `Stop` button freezes it and that `Start` makes it advance again. Screenshots go to OUTDIR.
// Prints one JSON summary line on stdout; exits 1 with a message on stderr on any failure.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { installMarkReader } from './marks.mjs';
import { CHROMIUM, CHROMIUM_ARGS, Failure, check } from './harness.mjs';

const STREAM_MS = 3000; // how long the frame rate is measured
const STOP_GRACE_MS = 500; // frames already on their way when stop is pressed may still show
const STOPPED_MS = 1000; // then the number must not move for this long
const RESTART_MS = 2000; // after start, the number must advance again within this time
const OVERALL_TIMEOUT_MS = 90_000;

function parseArgs(argv) {
  const positional = [];
  const opts = { camera: 'front', fps: 30 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--camera') opts.camera = argv[++i];
    else if (argv[i] === '--fps') opts.fps = Number(argv[++i]);
    else positional.push(argv[i]);
  }
  if (positional.length !== 2 || !(opts.fps > 0)) {
    console.error('usage: node viewer.mjs URL OUTDIR [--camera NAME] [--fps N]');
    process.exit(2);
  }
  return { url: positional[0], outDir: positional[1], ...opts };
}


// Runs in the page: samples the camera tile's picture every few ms for `ms` milliseconds, drawing it on a
// canvas and decoding the marks. Returns [{ t, seq }] where seq is null if the marks did not check out.
// Playwright serialises it into the page; marks.mjs installed the reader there.
async function sampleInPage({ camera, ms }) {
  const img = [...document.querySelectorAll('article')]
    .find((f) => f.dataset.camera === camera)
    ?.querySelector('canvas');
  if (!img) throw new Error(`no picture for camera ${camera}`);
  const read = () => {
    const m = window.camgraphMarks(img, img.width, img.height);
    return m.seq === null ? m : { ...m, size: `${img.width}x${img.height}` };
  };
  const samples = [];
  const start = performance.now();
  while (performance.now() - start < ms) {
    samples.push({ t: performance.now() - start, ...read() });
    await new Promise((r) => setTimeout(r, 4));
  }
  return samples;
}

// Summarises samples: the distinct frame numbers in order of first sight, and any problems.
function analyse(samples) {
  const readable = samples.filter((s) => s.seq !== null);
  const unreadable = samples.filter((s) => s.seq === null);
  const firstSeen = []; // [{ seq, t }] each number when it first appeared
  let backwards = 0;
  for (const s of readable) {
    const last = firstSeen[firstSeen.length - 1];
    if (!last || s.seq !== last.seq) {
      if (last && s.seq < last.seq) backwards++;
      firstSeen.push({ seq: s.seq, t: s.t });
    }
  }
  let fps = 0;
  let cameraFps = 0;
  if (firstSeen.length >= 2) {
    const a = firstSeen[0];
    const z = firstSeen[firstSeen.length - 1];
    const span = (z.t - a.t) / 1000;
    fps = (firstSeen.length - 1) / span; // distinct pictures the page showed per second
    cameraFps = (z.seq - a.seq) / span; // frame numbers per second (skipped ones included)
  }
  return {
    samples: samples.length,
    unreadable: unreadable.length,
    unreadableReasons: [...new Set(unreadable.map((s) => s.why))],
    distinct: firstSeen.length,
    first: firstSeen[0]?.seq ?? null,
    last: firstSeen[firstSeen.length - 1]?.seq ?? null,
    skipped: firstSeen.length ? firstSeen[firstSeen.length - 1].seq - firstSeen[0].seq + 1 - firstSeen.length : 0,
    backwards,
    fps: Math.round(fps * 10) / 10,
    cameraFps: Math.round(cameraFps * 10) / 10,
    firstSeen,
  };
}

const brief = ({ firstSeen, ...rest }) => rest;

async function run({ url, outDir, camera, fps }, state) {
  mkdirSync(outDir, { recursive: true });
  state.userDataDir = mkdtempSync(join(tmpdir(), 'camgraph-chromium-'));
  state.context = await chromium.launchPersistentContext(state.userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 800, height: 520 },
    args: [...CHROMIUM_ARGS],
  });
  await installMarkReader(state.context);
  const page = state.context.pages()[0] ?? (await state.context.newPage());
  const pageErrors = [];
  const consoleErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(`${m.text()} (${m.location()?.url ?? ''})`);
  });

  const response = await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
  check(response && response.ok(), `GET ${url} answered ${response?.status()}`);
  const title = await page.title();

  const figure = page.getByRole('article', { name: camera, exact: true });
  try {
    await figure.waitFor({ timeout: 10_000 });
  } catch {
    const error = await page.locator('#summary').textContent();
    throw new Failure(`the page shows no tile for camera '${camera}' (summary: ${JSON.stringify(error)})`);
  }
  const img = figure.locator('canvas');
  const badge = figure.locator('.badge');
  const waitLive = async (what) => {
    try {
      await figure.locator('.badge[data-state=live]').waitFor({ timeout: 10_000 });
    } catch {
      throw new Failure(`camera '${camera}' showed no frame within 10 s ${what} (badge: ${await badge.textContent()})`);
    }
  };
  await waitLive('after loading');
  const natural = await img.evaluate((el) => ({ w: el.width, h: el.height }));
  const box = await img.boundingBox();

  // 1. Streaming: the number advances at about the camera rate.
  const streaming = analyse(await page.evaluate(sampleInPage, { camera, ms: STREAM_MS }));
  await page.screenshot({ path: join(outDir, 'viewer.png') });
  await img.screenshot({ path: join(outDir, 'viewer-img.png') });
  const minDistinct = Math.round((fps * STREAM_MS) / 1000 / 3);
  check(streaming.unreadable === 0, `${streaming.unreadable} of ${streaming.samples} samples had no readable frame number: ${streaming.unreadableReasons.join(', ')}`);
  check(streaming.backwards === 0, `the frame number went backwards ${streaming.backwards} times: ${JSON.stringify(streaming.firstSeen.map((s) => s.seq))}`);
  check(
    streaming.distinct >= minDistinct,
    `only ${streaming.distinct} distinct frame numbers in ${STREAM_MS} ms (need ${minDistinct} for a ${fps} fps camera): ${JSON.stringify(streaming.firstSeen.map((s) => s.seq))}`,
  );

  // 2. stop: the number freezes.
  const clickAndWait = async (action) => {
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url().includes(`/api/camera/${action}`) && r.request().method() === 'POST', { timeout: 5_000 }),
      figure.getByRole('button', { name: action[0].toUpperCase() + action.slice(1), exact: true }).click(),
    ]);
    const body = await resp.text();
    check(resp.ok(), `POST /api/camera/${action} answered ${resp.status()}: ${body}`);
    return { status: resp.status(), body };
  };
  const stopResponse = await clickAndWait('stop');
  await page.waitForTimeout(STOP_GRACE_MS);
  const stopped = analyse(await page.evaluate(sampleInPage, { camera, ms: STOPPED_MS }));
  await page.screenshot({ path: join(outDir, 'viewer-stopped.png') });
  check(stopped.unreadable === 0, `after stop, ${stopped.unreadable} of ${stopped.samples} samples had no readable frame number (${stopped.unreadableReasons.join(', ')}): the tile should keep showing the last frame`);
  const stoppedBadge = await badge.getAttribute('data-state');
  check(stoppedBadge === 'stopped', `after stop the tile says '${stoppedBadge}', not 'stopped'`);
  check(stopped.distinct === 1, `after stop (+${STOP_GRACE_MS} ms) the frame number still moved: ${JSON.stringify(stopped.firstSeen.map((s) => s.seq))}`);
  check(stopped.last >= streaming.last, `after stop the page shows frame ${stopped.last}, older than ${streaming.last}`);
  const frozenAt = stopped.last;

  // 3. start: the tile is live again and the number advances past the frozen one.
  const startResponse = await clickAndWait('start');
  await waitLive('after start');
  const srcAfter = await badge.textContent();
  const restarted = analyse(await page.evaluate(sampleInPage, { camera, ms: RESTART_MS }));
  await page.screenshot({ path: join(outDir, 'viewer-restarted.png') });
  const newer = restarted.firstSeen.filter((s) => s.seq > frozenAt);
  check(restarted.backwards === 0, `after start the frame number went backwards: ${JSON.stringify(restarted.firstSeen.map((s) => s.seq))}`);
  check(
    newer.length >= minDistinct,
    `after start only ${newer.length} frame numbers newer than ${frozenAt} in ${RESTART_MS} ms (need ${minDistinct}): ${JSON.stringify(restarted.firstSeen.map((s) => s.seq))}`,
  );
  const restartFps = newer.length >= 2 ? Math.round(((newer.length - 1) / ((newer.at(-1).t - newer[0].t) / 1000)) * 10) / 10 : 0;

  const errorText = (await figure.locator('.note').textContent()) ?? '';
  check(errorText.trim() === '', `the page shows an error: ${errorText}`);
  check(await page.locator('#offline').isHidden(), 'the page says the server is unreachable');
  check(pageErrors.length === 0, `uncaught errors in the page: ${pageErrors.join(' | ')}`);

  return {
    ok: true,
    url,
    title,
    browser: state.context.browser()?.version() ?? 'chromium',
    camera,
    image: { width: natural.w, height: natural.h, shownWidth: box?.width, shownHeight: box?.height },
    streaming: brief(streaming),
    fps: streaming.fps,
    stop: { response: stopResponse.body, frozenAt, ...brief(stopped) },
    start: { response: startResponse.body, badge: srcAfter, firstNew: newer[0]?.seq, newFrames: newer.length, firstNewAfterMs: Math.round(newer[0]?.t ?? -1), fps: restartFps },
    consoleErrors,
    screenshots: ['viewer.png', 'viewer-img.png', 'viewer-stopped.png', 'viewer-restarted.png'].map((f) => join(outDir, f)),
  };
}

const args = parseArgs(process.argv.slice(2));
const state = {};
let exitCode = 0;
const timer = setTimeout(() => {
  console.error(`viewer test: FAILED: gave up after ${OVERALL_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);
try {
  const summary = await run(args, state);
  console.log(JSON.stringify(summary));
  console.error(`viewer test: ok: the page showed ${summary.fps} fps, stop froze it at frame ${summary.stop.frozenAt}, start resumed at ${summary.start.firstNew}`);
} catch (e) {
  exitCode = 1;
  const message = e instanceof Failure ? e.message : e?.stack ?? String(e);
  console.log(JSON.stringify({ ok: false, url: args.url, error: message }));
  console.error(`viewer test: FAILED: ${message}`);
  try {
    const page = state.context?.pages()[0];
    if (page) await page.screenshot({ path: join(args.outDir, 'failure.png') });
  } catch {}
} finally {
  try {
    await state.context?.close();
  } catch {}
  if (state.userDataDir) rmSync(state.userDataDir, { recursive: true, force: true });
  clearTimeout(timer);
}
process.exit(exitCode);
