// End-to-end WebRTC test in headless Firefox (stock firefox-esr driven over WebDriver BiDi by
// puppeteer-core: Playwright's Firefox is a patched build that cannot be installed here), against a
// running camgraph.
//
//   node tests/browser/firefox.mjs BASE_URL OUTDIR [--camera front] [--width 640] [--height 360] [--fps 30]
//
// Opens the WebRTC page (/webrtc?camera=..) once with WHEP and once with the guide's WebSocket
// signalling, one after the other. Each must show its first frame (time measured from the page's
// start) over H.264, then getStats() inbound-rtp must show frames decoded at the camera's size and
// about its rate, and the frame number painted by the test camera, read back from the <video>
// through a canvas, must advance. Screenshots go to OUTDIR. What Firefox says on each page's console
// (e.g. about camgraph's SDP answer) is printed on stderr and kept in the summary. Prints one JSON
// summary line on stdout; exits 1 with a message on failure.
//
// Stock Firefox offers H.264 only with Cisco's OpenH264 plugin, which it downloads at run time; the
// prefs of harness.mjs FIREFOX_WEBRTC_PREFS let it decode H.264 with the system's FFmpeg instead.

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import { installMarkReader, readMarksInPage } from './marks.mjs';
import { FIREFOX, FIREFOX_WEBRTC_PREFS, check, checkPeer, peerFigures, runWithin, videoStatsInPage } from './harness.mjs';

const FIRST_FRAME_TIMEOUT_MS = 10_000;
const MEASURE_MS = 3000;
const OVERALL_TIMEOUT_MS = 60_000;

function parseArgs(argv) {
  const positional = [];
  const opts = { camera: 'front', width: 640, height: 360, fps: 30 };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].startsWith('--') ? argv[i].slice(2) : null;
    if (key && key in opts) opts[key] = key === 'camera' ? argv[++i] : Number(argv[++i]);
    else positional.push(argv[i]);
  }
  if (positional.length !== 2) {
    console.error('usage: node firefox.mjs BASE_URL OUTDIR [--camera NAME] [--width W] [--height H] [--fps F]');
    process.exit(2);
  }
  return { base: positional[0].replace(/\/$/, ''), outDir: positional[1], ...opts };
}

// In the page: the video codec received and the video lines of both descriptions.
async function negotiatedInPage() {
  const pc = window.camgraphRtc.pc;
  const videoLines = (sdp, keep) => (sdp || '').split('\r\n').filter((l) => keep.test(l));
  const answer = videoLines(pc.remoteDescription?.sdp, /^(m=video|a=rtpmap|a=fmtp|a=extmap|a=(send|recv)only)/);
  // The offer's H.264 lines and header extensions (its VP8, VP9, AV1, RTX and FEC lines left out).
  const offer = videoLines(pc.localDescription?.sdp, /^(m=video|a=rtpmap:\d+ H264|a=fmtp:\d+ profile-level-id|a=extmap:)/);
  let codec = null;
  for (const s of (await pc.getStats()).values()) if (s.type === 'codec' && /^video\//.test(s.mimeType)) codec = s.mimeType;
  return { codec, offer, answer };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  mkdirSync(opts.outDir, { recursive: true });
  check(existsSync(FIREFOX), `no Firefox at ${FIREFOX} (apt-get install firefox-esr)`);
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    defaultViewport: { width: 1000, height: 620 },
    extraPrefsFirefox: FIREFOX_WEBRTC_PREFS,
  });
  const summary = { ok: false, browser: await browser.version(), peers: [], console: [] };
  try {
    for (const signalling of ['whep', 'ws']) {
      const page = await browser.newPage();
      page.on('console', (m) => {
        summary.console.push({ signalling, type: m.type(), text: m.text() });
        console.error(`${signalling} console ${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => summary.console.push({ signalling, type: 'pageerror', text: String(e) }));
      await installMarkReader(page);
      await page.goto(`${opts.base}/webrtc?camera=${encodeURIComponent(opts.camera)}&signalling=${signalling}`);
      try {
        await page.waitForFunction(() => window.camgraphRtc?.firstFrameMs !== null || window.camgraphRtc?.fallback, {
          timeout: FIRST_FRAME_TIMEOUT_MS,
          polling: 50,
        });
      } catch (e) {
        await page.screenshot({ path: join(opts.outDir, `firefox-failed-${signalling}.png`) }).catch(() => {});
        throw new Error(`${signalling}: no first frame within ${FIRST_FRAME_TIMEOUT_MS} ms (${e.message})`);
      }
      const state = await page.evaluate(() => ({ firstFrameMs: window.camgraphRtc.firstFrameMs, fallback: window.camgraphRtc.fallback, error: window.camgraphRtc.error }));
      if (state.fallback) await page.screenshot({ path: join(opts.outDir, `firefox-failed-${signalling}.png`) });
      check(!state.fallback, `${signalling}: fell back to MJPEG: ${state.error}`);
      const negotiated = await page.evaluate(negotiatedInPage);
      const start = await page.evaluate(videoStatsInPage);
      const t0 = Date.now();
      const marks = await page.evaluate(readMarksInPage, { ms: MEASURE_MS });
      const end = await page.evaluate(videoStatsInPage);
      const seconds = (Date.now() - t0) / 1000;
      const peer = peerFigures({ signalling, firstFrameMs: Math.round(state.firstFrameMs) }, start, end, marks, seconds);
      summary.peers.push({ ...peer, ...negotiated });
      await page.screenshot({ path: join(opts.outDir, `firefox-${signalling}.png`) });
      check(negotiated.codec === 'video/H264', `${signalling}: received ${negotiated.codec}, want video/H264`);
      checkPeer(signalling, peer, opts, MEASURE_MS);
      await page.close();
    }
    summary.ok = true;
  } catch (e) {
    summary.error = e.message;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(summary));
  if (!summary.ok) {
    console.error(summary.error);
    process.exit(1);
  }
}

runWithin('firefox.mjs', OVERALL_TIMEOUT_MS, main);
