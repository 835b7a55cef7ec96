// What the browser scripts share: where Chromium is and the flags it runs with here (headless,
// no GPU, nothing fetched from the network; for WebRTC, loopback candidates with real addresses),
// the failure a script reports, and a sleep.

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
