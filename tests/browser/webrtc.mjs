// End-to-end WebRTC test in headless Chromium (playwright-core), against a running camgraph.
//
//   node tests/browser/webrtc.mjs BASE_URL OUTDIR [--camera front] [--width 640] [--height 360]
//        [--peers 5] [--fps 30]
//
// Opens the WebRTC page (/webrtc?camera=..&signalling=ws|whep) `peers` times, alternating the
// guide's WebSocket signalling and WHEP. Each page must show its first frame (time measured from
// the page's start), then, over a few seconds, getStats() inbound-rtp must show frames decoded at
// the configured size and about the camera rate, and the frame number painted by the test camera,
// read back from the <video> through a canvas, must advance. The last peer's join must not freeze
// the others. Then the WebSocket must answer garbage with an error and stay usable. Screenshots go
// to OUTDIR. Prints one JSON summary line on stdout; exits 1 with a message on failure.
//
// Chromium needs BOTH --allow-loopback-in-peer-connection and
// --disable-features=WebRtcHideLocalIpsWithMdns to connect over loopback.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { installMarkReader, readMarksInPage } from './marks.mjs';
import {
  CHROMIUM, CHROMIUM_ARGS, WEBRTC_ARGS, check, checkPeer, peerFigures, runWithin, videoStatsInPage as statsInPage,
} from './harness.mjs';

const FIRST_FRAME_TIMEOUT_MS = 15_000;
const MEASURE_MS = 4000;
const OVERALL_TIMEOUT_MS = 120_000;

function parseArgs(argv) {
  const positional = [];
  const opts = { camera: 'front', width: 640, height: 360, peers: 5, fps: 30 };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].startsWith('--') ? argv[i].slice(2) : null;
    if (key && key in opts) opts[key] = key === 'camera' ? argv[++i] : Number(argv[++i]);
    else positional.push(argv[i]);
  }
  if (positional.length !== 2) {
    console.error('usage: node webrtc.mjs BASE_URL OUTDIR [--camera NAME] [--width W] [--height H] [--peers N] [--fps F]');
    process.exit(2);
  }
  return { base: positional[0].replace(/\/$/, ''), outDir: positional[1], ...opts };
}


// In the page: the WebSocket signalling answers garbage with errors and keeps working.
async function badInputInPage({ camera }) {
  const url = `ws://${location.host}/api/webrtc/ws?camera=${encodeURIComponent(camera)}`;
  const ws = new WebSocket(url);
  await new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onerror = () => fail(new Error('WebSocket did not open'));
  });
  const next = () => new Promise((ok) => (ws.onmessage = (m) => ok(JSON.parse(m.data))));
  const replies = {};
  ws.send('this is not JSON');
  replies.notJson = await next();
  ws.send(JSON.stringify({ type: 'bogus' }));
  replies.unknownType = await next();
  ws.send(JSON.stringify({ type: 'offer', sdp: 'v=0 garbage' }));
  replies.badSdp = await next();
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  ws.send(JSON.stringify({ type: 'offer', sdp: offer.sdp }));
  let msg;
  do msg = await next(); while (msg.type === 'ice-candidate');
  replies.validOffer = { type: msg.type, hasCandidate: /a=candidate:/.test(msg.sdp || ''), hasMsid: /a=msid:/.test(msg.sdp || '') };
  ws.close();
  pc.close();
  const unknown = await new Promise((ok) => {
    const bad = new WebSocket(`ws://${location.host}/api/webrtc/ws?camera=no-such-camera`);
    bad.onopen = () => ok('opened');
    bad.onerror = () => ok('refused');
  });
  return { replies, unknownCamera: unknown };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  mkdirSync(opts.outDir, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'camgraph-webrtc-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1000, height: 620 },
    args: [...CHROMIUM_ARGS, ...WEBRTC_ARGS],
  });
  await installMarkReader(context);
  const summary = { ok: false, peers: [] };
  const pages = [];
  try {
    const open = async (i) => {
      const signalling = i % 2 === 0 ? 'ws' : 'whep';
      const page = await context.newPage();
      page.on('console', (m) => m.type() === 'error' && console.error(`page ${i}: ${m.text()}`));
      await page.goto(`${opts.base}/webrtc?camera=${encodeURIComponent(opts.camera)}&signalling=${signalling}`);
      await page.waitForFunction(() => window.camgraphRtc?.firstFrameMs !== null || window.camgraphRtc?.fallback, null, {
        timeout: FIRST_FRAME_TIMEOUT_MS,
      });
      const state = await page.evaluate(() => ({ ...window.camgraphRtc, pc: undefined, ws: undefined }));
      check(!state.fallback, `peer ${i} (${signalling}) fell back to MJPEG: ${state.error}`);
      pages.push({ i, signalling, page, firstFrameMs: Math.round(state.firstFrameMs) });
    };
    for (let i = 0; i < opts.peers - 1; i++) await open(i);

    // The last peer joins while the others play: they must keep decoding.
    const before = await Promise.all(pages.map((p) => p.page.evaluate(statsInPage)));
    const joinStart = Date.now();
    await open(opts.peers - 1);
    const joinMs = Date.now() - joinStart;
    await new Promise((r) => setTimeout(r, 500));
    const afterJoin = await Promise.all(pages.slice(0, -1).map((p) => p.page.evaluate(statsInPage)));
    summary.join = {
      ms: joinMs,
      othersDecodedDuringJoin: afterJoin.map((s, k) => s.framesDecoded - before[k].framesDecoded),
    };
    const minFrames = Math.floor(((joinMs + 500) / 1000) * opts.fps * 0.6);
    for (const [k, grew] of summary.join.othersDecodedDuringJoin.entries()) {
      check(grew >= minFrames, `peer ${k} decoded only ${grew} frames while peer ${opts.peers - 1} joined over ${joinMs + 500} ms (want >= ${minFrames})`);
    }

    // Everyone, measured together.
    const start = await Promise.all(pages.map((p) => p.page.evaluate(statsInPage)));
    const t0 = Date.now();
    const marks = await Promise.all(pages.map((p) => p.page.evaluate(readMarksInPage, { ms: MEASURE_MS })));
    const end = await Promise.all(pages.map((p) => p.page.evaluate(statsInPage)));
    const seconds = (Date.now() - t0) / 1000;
    for (const [k, p] of pages.entries()) {
      summary.peers.push(peerFigures(p, start[k], end[k], marks[k], seconds));
      await p.page.screenshot({ path: join(opts.outDir, `webrtc-peer${k}-${p.signalling}.png`) });
    }
    // Checked once every peer is measured, so a failure still reports them all.
    for (const [k, peer] of summary.peers.entries()) {
      check(peer.framesDecoded > 60, `peer ${k}: only ${peer.framesDecoded} frames decoded`);
      checkPeer(`peer ${k}`, peer, opts, MEASURE_MS);
    }

    summary.badInput = await pages[0].page.evaluate(badInputInPage, { camera: opts.camera });
    const r = summary.badInput.replies;
    check(r.notJson.type === 'error' && /JSON/.test(r.notJson.error), `not JSON -> ${JSON.stringify(r.notJson)}`);
    check(r.unknownType.type === 'error' && /unknown message type/.test(r.unknownType.error), `unknown type -> ${JSON.stringify(r.unknownType)}`);
    check(r.badSdp.type === 'error' && /SDP/.test(r.badSdp.error), `bad SDP -> ${JSON.stringify(r.badSdp)}`);
    check(r.validOffer.type === 'answer' && r.validOffer.hasCandidate && r.validOffer.hasMsid, `after garbage a valid offer -> ${JSON.stringify(r.validOffer)}`);
    check(summary.badInput.unknownCamera === 'refused', 'a socket for an unknown camera opened');
    // The others kept playing through the bad input.
    const final = await Promise.all(pages.map((p) => p.page.evaluate(statsInPage)));
    for (const [k, s] of final.entries()) check(s.framesDecoded > end[k].framesDecoded, `peer ${k} stopped decoding after the bad input`);
    summary.ok = true;
  } catch (e) {
    summary.error = e.message;
    for (const p of pages) await p.page.screenshot({ path: join(opts.outDir, `webrtc-failed-peer${p.i}.png`) }).catch(() => {});
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

runWithin('webrtc.mjs', OVERALL_TIMEOUT_MS, main);
