// What the browser scripts share: where Chromium and Firefox are and the flags and prefs they run
// with here (headless, no GPU, nothing fetched from the network; for WebRTC, loopback candidates
// with real addresses), the figures and checks of a WebRTC peer, the failure a script reports, and
// a sleep.

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Flags for every run (see the README of this project: never download anything). */
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** WebRTC on loopback: loopback candidates allowed, local addresses not hidden behind mDNS, and
 * video that plays without a click. */
export const WEBRTC_ARGS = [
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
];

export const FIREFOX = process.env.FIREFOX || '/usr/bin/firefox-esr';

/** Firefox prefs for WebRTC on loopback with camgraph's H.264; each one is needed (without it the
 * page falls back to MJPEG). */
export const FIREFOX_WEBRTC_PREFS = {
  // Loopback candidates are dropped unless allowed.
  'media.peerconnection.ice.loopback': true,
  // A page without camera or microphone permission gathers on the default route's address only
  // (and hides host addresses behind mDNS names), and a loopback-only network has no default
  // route: no candidate at all. Allowing the camera to every site (1 = allow) lifts both; the page
  // never asks for it.
  'permissions.default.camera': 1,
  // H.264 is offered only with Cisco's OpenH264 plugin (downloaded at run time: not here) or when
  // WebRTC "hardware" H.264 is allowed: the blocklist entry says OK (1 = FEATURE_STATUS_OK) and the
  // pref is on. Received H.264 is then decoded by Firefox's platform decoder, the system's FFmpeg.
  'media.webrtc.hw.h264.enabled': true,
  'gfx.blacklist.webrtc.hw.acceleration.h264': 1,
};

/** A check that failed: the script prints its message and exits 1. */
export class Failure extends Error {}

export function check(condition, message) {
  if (!condition) throw new Failure(message);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs `main`; if it has not finished after `ms`, says so (as `name`) and exits 1. */
export function runWithin(name, ms, main) {
  const timer = setTimeout(() => {
    console.error(`${name}: no result after ${ms} ms`);
    process.exit(1);
  }, ms);
  return main().finally(() => clearTimeout(timer));
}

// In the page (passed to evaluate): the inbound video stats of the WebRTC page's peer.
export async function videoStatsInPage() {
  const pc = window.camgraphRtc?.pc;
  if (!pc) return null;
  for (const s of (await pc.getStats()).values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      return { framesDecoded: s.framesDecoded ?? 0, width: s.frameWidth, height: s.frameHeight, fps: s.framesPerSecond };
    }
  }
  return { framesDecoded: 0 };
}

/** A peer's figures over `seconds`: inbound stats before and after, the marks read meanwhile
 * (marks.mjs readMarksInPage). */
export function peerFigures({ signalling, firstFrameMs }, start, end, marks, seconds) {
  return {
    signalling,
    firstFrameMs,
    framesDecoded: end.framesDecoded,
    decodedFps: +((end.framesDecoded - start.framesDecoded) / seconds).toFixed(1),
    size: `${end.width}x${end.height}`,
    ...markFigures(marks),
  };
}

/** What the marks read over a while (marks.mjs readMarksInPage) say: the painted frame numbers
 * and the capture-to-paint latency (median and 90th percentile, ms). */
export function markFigures(marks) {
  const seqs = marks.seen.map((s) => s.seq);
  const latencies = marks.seen.map((s) => s.latency).sort((a, b) => a - b);
  return {
    paintedFirst: seqs[0],
    paintedLast: seqs[seqs.length - 1],
    paintedReadable: seqs.length,
    paintedUnreadable: marks.unreadable,
    latencyP50Ms: latencies[Math.floor(latencies.length / 2)],
    latencyP90Ms: latencies[Math.floor(latencies.length * 0.9)],
    backwards: seqs.filter((s, n) => n > 0 && s < seqs[n - 1]).length,
    paintedStep: seqs.length - 1 > 0 ? +((seqs[seqs.length - 1] - seqs[0]) / (seqs.length - 1)).toFixed(2) : null,
  };
}

/** Checks a peer's figures against the camera (`width`, `height`, `fps`) over `measureMs`. */
export function checkPeer(name, peer, { width, height, fps }, measureMs) {
  check(peer.size === `${width}x${height}`, `${name}: decoded size ${peer.size}, want ${width}x${height}`);
  check(peer.decodedFps >= fps * 0.8, `${name}: ${peer.decodedFps} fps decoded, want >= ${fps * 0.8}`);
  checkMarks(name, peer, fps, measureMs);
}

/** Checks that a peer read the marks of a camera at `fps` over `measureMs` (markFigures): most
 * at least 10 frames readable, the painted number advancing and never going back. */
export function checkMarks(name, peer, fps, measureMs) {
  check(peer.paintedReadable >= 10, `${name}: painted frame number readable in only ${peer.paintedReadable} frames (${peer.paintedUnreadable} unreadable)`);
  check(peer.paintedLast - peer.paintedFirst >= fps * (measureMs / 1000) * 0.7, `${name}: painted number went ${peer.paintedFirst} -> ${peer.paintedLast} in ${measureMs} ms`);
  check(peer.backwards === 0, `${name}: painted number went backwards ${peer.backwards} times`);
}
