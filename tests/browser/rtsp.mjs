// Headless Chromium watches an RTSP camera that camgraph relays without re-encoding (tests/rtsp.rs
// drives it), through the WebRTC page, once over WHEP and once over the guide's WebSocket
// signalling.
//
//   node tests/browser/rtsp.mjs BASE_URL OUTDIR --camera NAME --width W --height H
//        [--peers 2] [--measure 2000] [--restart 1] [--marks 0]
//
// 1. Each page (alternately WHEP and WebSocket) must show a first frame; over `measure` ms
//    getStats() inbound-rtp must show frames decoded at the camera's own size. The first `marks`
//    pages meanwhile read the marks the camera painted (tests/rtsp_server.py --marks, read by
//    marks.mjs) from every frame they paint, which must be readable with the frame number
//    advancing; their figures give the glass-to-glass latency, capture (the painter's wall clock)
//    to paint (the page's, the same machine's): latencyP50Ms, latencyP90Ms. Prints
//    {"phase":"playing",...} on stdout. With --restart 0 (the benchmark,
//    tests/browser/rtsp-bench.py) it ends there.
// 2. Waits for a line "back" on stdin (the test stopped the RTSP server, saw the camera down and
//    started the server again), then for each page measures how long until a frame decodes again
//    (firstFrameAfterMs: that may be the "no signal" picture the camera sends while it is down),
//    until the camera's own picture shows again (cameraAfterMs: less than half of the picture has
//    the no-signal background colour) and until 15 more frames have decoded (recoveryMs), on the
//    same RTCPeerConnection, still connected.
// Ends with one JSON summary line; exits 1 with a message on failure.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, WEBRTC_ARGS, check, checkMarks, markFigures, runWithin, sleep } from './harness.mjs';
import { installMarkReader, readMarksInPage } from './marks.mjs';

const FIRST_FRAME_TIMEOUT_MS = 15_000;
const RECOVERY_TIMEOUT_MS = 15_000;
const OVERALL_TIMEOUT_MS = 120_000;

function parseArgs(argv) {
  const positional = [];
  const opts = { camera: 'gate', width: 640, height: 360, peers: 2, measure: 2000, restart: 1, marks: 0 };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].startsWith('--') ? argv[i].slice(2) : null;
    if (key && key in opts) opts[key] = key === 'camera' ? argv[++i] : Number(argv[++i]);
    else positional.push(argv[i]);
  }
  if (positional.length !== 2) {
    console.error('usage: node rtsp.mjs BASE_URL OUTDIR [--camera NAME] [--width W] [--height H] [--peers N] [--measure MS] [--restart 0|1] [--marks N]');
    process.exit(2);
  }
  return { base: positional[0].replace(/\/$/, ''), outDir: positional[1], ...opts };
}


// In the page: inbound video stats, and whether the first connection is still the one in use.
async function statsInPage() {
  const rtc = window.camgraphRtc;
  const pc = rtc?.pc;
  if (!pc) return null;
  window.firstPc ??= pc;
  // The share of the shown picture with the "no signal" picture's background colour
  // (plugins/sources/nosignal: BACKGROUND), sampled at 160x90; null before a frame is shown.
  const noSignalShare = () => {
    const video = document.querySelector('video');
    if (!video?.videoWidth) return null;
    const canvas = (window.noSignalCanvas ??= Object.assign(document.createElement('canvas'), { width: 160, height: 90 }));
    const g = canvas.getContext('2d', { willReadFrequently: true });
    g.drawImage(video, 0, 0, canvas.width, canvas.height);
    const px = g.getImageData(0, 0, canvas.width, canvas.height).data;
    let near = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (Math.abs(px[i] - 48) <= 24 && Math.abs(px[i + 1] - 16) <= 24 && Math.abs(px[i + 2] - 64) <= 24) near++;
    }
    return +(near / (px.length / 4)).toFixed(3);
  };
  const out = { framesDecoded: 0, state: pc.connectionState, samePc: window.firstPc === pc, fallback: rtc.fallback, noSignal: noSignalShare() };
  for (const s of (await pc.getStats()).values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      Object.assign(out, {
        framesDecoded: s.framesDecoded ?? 0,
        framesDropped: s.framesDropped ?? 0,
        width: s.frameWidth,
        height: s.frameHeight,
        jitterBufferMs: s.jitterBufferEmittedCount ? Math.round((1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount) : null,
      });
    }
  }
  return out;
}


// Waits for "back" on stdin, then measures each page's recovery on its same connection.
async function afterRestart(pages, summary, opts) {
  const lines = createInterface({ input: process.stdin });
  const line = await new Promise((ok) => lines.once('line', ok));
  lines.close();
  check(line === 'back', 'expected "back" on stdin');
  const atBack = await Promise.all(pages.map((p) => p.page.evaluate(statsInPage)));
  const back = Date.now();
  const recovered = pages.map(() => null);
  const firstAfter = pages.map(() => null);
  const camera = pages.map(() => null);
  while (recovered.includes(null) && Date.now() - back < RECOVERY_TIMEOUT_MS) {
    await sleep(20);
    const now = await Promise.all(pages.map((p) => p.page.evaluate(statsInPage)));
    for (const [k, s] of now.entries()) {
      const ms = Date.now() - back;
      if (firstAfter[k] === null && s.framesDecoded > atBack[k].framesDecoded) firstAfter[k] = ms;
      if (camera[k] === null && s.framesDecoded > atBack[k].framesDecoded && s.noSignal !== null && s.noSignal < 0.5) {
        camera[k] = { ms, framesDecoded: s.framesDecoded };
      }
      if (recovered[k] === null && camera[k] !== null && s.framesDecoded >= camera[k].framesDecoded + 15) recovered[k] = { ms, ...s };
    }
  }
  for (const [k, p] of pages.entries()) {
    const r = recovered[k];
    check(camera[k] !== null, `${p.signalling}: the camera's picture did not come back within ${RECOVERY_TIMEOUT_MS} ms of the RTSP server's return`);
    check(r !== null, `${p.signalling}: fewer than 15 frames within ${RECOVERY_TIMEOUT_MS} ms of the RTSP server's return`);
    check(r.samePc && r.state === 'connected' && !r.fallback, `${p.signalling}: the peer reconnected or left WebRTC: ${JSON.stringify(r)}`);
    summary.peers[k].noSignalAtBack = atBack[k].noSignal;
    summary.peers[k].firstFrameAfterMs = firstAfter[k];
    summary.peers[k].cameraAfterMs = camera[k].ms;
    summary.peers[k].recoveryMs = r.ms;
    summary.peers[k].size = `${r.width}x${r.height}`;
    await p.page.screenshot({ path: join(opts.outDir, `rtsp-${p.signalling}-after-restart.png`) });
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  mkdirSync(opts.outDir, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'camgraph-rtsp-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 800, height: 520 },
    args: [...CHROMIUM_ARGS, ...WEBRTC_ARGS],
  });
  if (opts.marks) await installMarkReader(context);
  const summary = { ok: false, peers: [] };
  const pages = [];
  try {
    for (let i = 0; i < opts.peers; i++) {
      const signalling = i % 2 === 0 ? 'whep' : 'ws';
      const page = await context.newPage();
      page.on('console', (m) => m.type() === 'error' && console.error(`${signalling}: ${m.text()}`));
      await page.goto(`${opts.base}/webrtc?camera=${encodeURIComponent(opts.camera)}&signalling=${signalling}`);
      await page.waitForFunction(() => window.camgraphRtc?.firstFrameMs !== null || window.camgraphRtc?.fallback, null, {
        timeout: FIRST_FRAME_TIMEOUT_MS,
      });
      const state = await page.evaluate(() => ({ ...window.camgraphRtc, pc: undefined, ws: undefined }));
      check(!state.fallback, `${signalling}: fell back to MJPEG: ${state.error}`);
      pages.push({ signalling: `${signalling}${i}`, page, firstFrameMs: Math.round(state.firstFrameMs) });
    }
    console.log(JSON.stringify({ phase: 'measuring' }));
    const start = await Promise.all(pages.map((p) => p.page.evaluate(statsInPage)));
    const t0 = Date.now();
    const marks = await Promise.all(
      pages.map((p, k) => (k < opts.marks ? p.page.evaluate(readMarksInPage, { ms: opts.measure }) : sleep(opts.measure))),
    );
    const end = await Promise.all(pages.map((p) => p.page.evaluate(statsInPage)));
    const seconds = (Date.now() - t0) / 1000;
    for (const [k, p] of pages.entries()) {
      const peer = {
        signalling: p.signalling,
        firstFrameMs: p.firstFrameMs,
        decodedFps: +((end[k].framesDecoded - start[k].framesDecoded) / seconds).toFixed(1),
        size: `${end[k].width}x${end[k].height}`,
        framesDropped: end[k].framesDropped,
        jitterBufferMs: end[k].jitterBufferMs,
        ...(marks[k] && markFigures(marks[k])),
      };
      summary.peers.push(peer);
      await p.page.screenshot({ path: join(opts.outDir, `rtsp-${p.signalling}.png`) });
      check(peer.size === `${opts.width}x${opts.height}`, `${p.signalling}: decoded size ${peer.size}, want the camera's ${opts.width}x${opts.height}`);
      check(peer.decodedFps >= 20, `${p.signalling}: ${peer.decodedFps} fps decoded, want >= 20 (the camera sends 30)`);
      if (marks[k]) checkMarks(p.signalling, peer, 30, opts.measure);
    }
    console.log(JSON.stringify({ phase: 'playing', peers: summary.peers }));
    if (opts.restart) await afterRestart(pages, summary, opts);
    summary.ok = true;
  } catch (e) {
    summary.error = e.message;
    for (const p of pages) await p.page.screenshot({ path: join(opts.outDir, `rtsp-failed-${p.signalling}.png`) }).catch(() => {});
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  console.log(JSON.stringify(summary));
  if (!summary.ok) {
    console.error(summary.error);
    process.exit(1);
  }
}

runWithin('rtsp.mjs', OVERALL_TIMEOUT_MS, main);
