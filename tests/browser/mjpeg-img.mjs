// A bare `<img>` of the MJPEG stream in headless Chromium, in both wire forms: a test and the
// capture-to-screen latency benchmark.
//
//   node tests/browser/mjpeg-img.mjs BASE_URL [--camera front] [--fps 30] [--ms 3000]
//                                    [--forms advance,classic] [--token T]
//
// For each form it opens a page of the server (same origin, so the picture can be read back), puts
// an <img src=/api/camera/stream/CAMERA> into it (the advance form is what an <img> gets by its
// `Accept: image/...` header; the classic form is asked for with `?advance=0`), and on every
// animation frame reads the test pattern's marks (marks.mjs: frame number and capture time in Unix
// ms, low 32 bits). Each new frame number counts once, with its latency: Date.now() at the first
// animation frame that shows it minus its capture time (same machine clock). Checks that the
// number advances at about the camera rate and never goes backwards; prints one JSON summary line
// with p50/p90 latency per form. Exits 1 with a message on stderr on any failure.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { installMarkReader } from './marks.mjs';
import { CHROMIUM, CHROMIUM_ARGS, Failure, check } from './harness.mjs';

const FIRST_FRAME_MS = 10_000;
const OVERALL_TIMEOUT_MS = 120_000;

function parseArgs(argv) {
  const positional = [];
  const opts = { camera: 'front', fps: 30, ms: 3000, forms: ['advance', 'classic'], token: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--camera') opts.camera = argv[++i];
    else if (argv[i] === '--fps') opts.fps = Number(argv[++i]);
    else if (argv[i] === '--ms') opts.ms = Number(argv[++i]);
    else if (argv[i] === '--forms') opts.forms = argv[++i].split(',');
    else if (argv[i] === '--token') opts.token = argv[++i];
    else positional.push(argv[i]);
  }
  const formsOk = opts.forms.every((f) => f === 'advance' || f === 'classic');
  if (positional.length !== 1 || !(opts.fps > 0) || !(opts.ms > 0) || !formsOk) {
    console.error('usage: node mjpeg-img.mjs BASE_URL [--camera NAME] [--fps N] [--ms N] [--forms advance,classic]');
    process.exit(2);
  }
  return { base: positional[0].replace(/\/$/, ''), ...opts };
}


// Runs in the page: on each animation frame for `ms`, reads the <img>'s marks; returns each new
// frame number once with its latency in ms, and the reasons of unreadable reads.
function measureInPage({ ms }) {
  const img = document.getElementById('stream');
  return new Promise((resolve) => {
    const seen = [];
    const unreadable = [];
    const start = performance.now();
    const tick = () => {
      const now = Date.now();
      const m = window.camgraphMarks(img, img.naturalWidth, img.naturalHeight);
      if (m.seq === null) unreadable.push(m.why);
      else if (!seen.length || seen[seen.length - 1].seq !== m.seq) {
        // The capture time is the low 32 bits of Unix ms.
        const latency = (now % 2 ** 32) - m.capturedMs;
        seen.push({ seq: m.seq, latency: latency < -(2 ** 31) ? latency + 2 ** 32 : latency });
      }
      if (performance.now() - start < ms) requestAnimationFrame(tick);
      else resolve({ seen, unreadable });
    };
    requestAnimationFrame(tick);
  });
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

async function measure(context, { base, camera, fps, ms, token }, form) {
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  const auth = token ? `token=${encodeURIComponent(token)}` : '';
  const home = `${base}/healthz${auth ? '?' + auth : ''}`;
  const response = await page.goto(home, { waitUntil: 'load', timeout: 15_000 });
  check(response && response.ok(), `GET ${home} answered ${response?.status()}`);
  const query = [form === 'classic' ? 'advance=0' : '', auth].filter(Boolean).join('&');
  const src = `/api/camera/stream/${encodeURIComponent(camera)}${query ? '?' + query : ''}`;
  await page.evaluate((src) => {
    document.body.replaceChildren();
    const img = document.createElement('img');
    img.id = 'stream';
    img.src = src;
    document.body.append(img);
  }, src);
  try {
    await page.waitForFunction(() => document.getElementById('stream').naturalWidth > 0, null, { timeout: FIRST_FRAME_MS });
  } catch {
    throw new Failure(`${form}: the <img> of ${src} showed no picture within ${FIRST_FRAME_MS} ms`);
  }
  const { seen, unreadable } = await page.evaluate(measureInPage, { ms });
  await page.close();
  check(pageErrors.length === 0, `${form}: uncaught errors in the page: ${pageErrors.join(' | ')}`);
  check(unreadable.length === 0, `${form}: ${unreadable.length} unreadable pictures: ${[...new Set(unreadable)].join(', ')}`);
  const backwards = seen.filter((s, i) => i > 0 && s.seq < seen[i - 1].seq).length;
  check(backwards === 0, `${form}: the frame number went backwards: ${JSON.stringify(seen.map((s) => s.seq))}`);
  const minDistinct = Math.round((fps * ms) / 1000 / 3);
  check(seen.length >= minDistinct, `${form}: only ${seen.length} distinct frames in ${ms} ms (need ${minDistinct} at ${fps} fps)`);
  // The first frame read may have been on screen before measuring began: not a latency.
  const latencies = seen.slice(1).map((s) => s.latency).sort((a, b) => a - b);
  return {
    src,
    frames: seen.length,
    fps: Math.round((seen.length / ms) * 10000) / 10,
    p50_ms: percentile(latencies, 50),
    p90_ms: percentile(latencies, 90),
    max_ms: latencies[latencies.length - 1],
  };
}

const args = parseArgs(process.argv.slice(2));
let exitCode = 0;
let userDataDir;
let context;
const timer = setTimeout(() => {
  console.error(`mjpeg-img: FAILED: gave up after ${OVERALL_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);
try {
  userDataDir = mkdtempSync(join(tmpdir(), 'camgraph-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 800 },
    args: [...CHROMIUM_ARGS],
  });
  await installMarkReader(context);
  const forms = {};
  for (const form of args.forms) forms[form] = await measure(context, args, form);
  console.log(JSON.stringify({ ok: true, camera: args.camera, fps: args.fps, browser: context.browser()?.version() ?? 'chromium', forms }));
  for (const [form, r] of Object.entries(forms)) {
    console.error(`mjpeg-img: ${form}: ${r.fps} fps shown, capture to screen p50 ${r.p50_ms} ms, p90 ${r.p90_ms} ms`);
  }
} catch (e) {
  exitCode = 1;
  const message = e instanceof Failure ? e.message : e?.stack ?? String(e);
  console.log(JSON.stringify({ ok: false, error: message }));
  console.error(`mjpeg-img: FAILED: ${message}`);
} finally {
  try {
    await context?.close();
  } catch {}
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  clearTimeout(timer);
}
process.exit(exitCode);
