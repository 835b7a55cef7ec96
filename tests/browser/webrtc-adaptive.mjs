// WebRTC adaptation end to end in headless Chromium (playwright-core), against a running camgraph
// whose camera goes h264_encoder -> adaptive -> webrtc_sink.
//
//   node tests/browser/webrtc-adaptive.mjs BASE_URL OUTDIR [--camera front] [--sink front_rtc]
//        [--encoder front_h264] [--width 640] [--height 360] [--fps 30] [--limit-kbps 350]
//        [--clean-s 3] [--limited-s 12] [--recover-s 16]
//
// Two peers play the camera over WHEP. The "fast" one connects directly. The "slow" one reaches
// camgraph through a UDP relay in this script (its offer loses its candidates and its answer's
// candidates point at the relay, so every packet goes through it). The relay passes everything
// for --clean-s, then acts as a link of --limit-kbps with a 150 ms drop-tail queue for
// --limited-s, then passes everything again for --recover-s. Every 500 ms the script records
// each peer's decoded frames and picture width (getStats), its step on camgraph's ladder and the
// encoder's variants in use (/api/graph).
//
// It checks that the slow peer moves down the ladder (bitrate, then size) while the link is
// limited and back to the top once it is not; that the fast peer keeps the top step at full size
// and full rate throughout; and that the encoder runs as many variants as there are distinct steps
// in use. Prints one JSON summary line (with the timeline) on stdout; exits 1 on failure.

import dgram from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, WEBRTC_ARGS, Failure, check, sleep } from './harness.mjs';

const SAMPLE_MS = 500;
const QUEUE_MS = 150;

function parseArgs(argv) {
  const positional = [];
  const opts = {
    camera: 'front', sink: 'front_rtc', encoder: 'front_h264', adaptive: 'front_adaptive', width: 640, height: 360, fps: 30,
    'limit-kbps': 350, 'clean-s': 3, 'limited-s': 12, 'recover-s': 16,
  };
  const text = new Set(['camera', 'sink', 'encoder', 'adaptive']);
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].startsWith('--') ? argv[i].slice(2) : null;
    if (key && key in opts) opts[key] = text.has(key) ? argv[++i] : Number(argv[++i]);
    else positional.push(argv[i]);
  }
  if (positional.length !== 2) {
    console.error('usage: node webrtc-adaptive.mjs BASE_URL OUTDIR [--camera NAME] [--sink NODE] [--encoder NODE] [--limit-kbps K] ...');
    process.exit(2);
  }
  return { base: positional[0].replace(/\/$/, ''), outDir: positional[1], ...opts };
}


// A UDP relay between the browser and camgraph. Browser -> camgraph passes untouched; camgraph ->
// browser goes through a link of `kbps` with a drop-tail queue when limited.
async function startRelay() {
  const front = dgram.createSocket('udp4'); // the browser talks to this one
  const back = dgram.createSocket('udp4'); // camgraph sees this one
  await Promise.all([front, back].map((s) => new Promise((ok) => s.bind(0, '127.0.0.1', ok))));
  const relay = {
    port: front.address().port,
    target: null, // camgraph's media address, from the answer
    browser: null, // learned from the first packet
    kbps: null,
    queue: [],
    queued: 0,
    tokens: 0,
    last: performance.now(),
    counts: { forwarded: 0, dropped: 0, bytes: 0 },
  };
  front.on('message', (msg, from) => {
    relay.browser = from;
    if (relay.target) back.send(msg, relay.target.port, relay.target.address);
  });
  const deliver = (msg) => {
    relay.counts.forwarded++;
    relay.counts.bytes += msg.length;
    front.send(msg, relay.browser.port, relay.browser.address);
  };
  back.on('message', (msg) => {
    if (!relay.browser) return;
    if (relay.kbps === null) return deliver(msg);
    const limit = (relay.kbps * 1000 / 8) * (QUEUE_MS / 1000);
    if (relay.queued + msg.length > limit) {
      relay.counts.dropped++;
      return;
    }
    relay.queue.push(msg);
    relay.queued += msg.length;
  });
  // Drains the queue at the link rate.
  const timer = setInterval(() => {
    const now = performance.now();
    const elapsed = (now - relay.last) / 1000;
    relay.last = now;
    if (relay.kbps === null) {
      while (relay.queue.length) deliver(relay.queue.shift());
      relay.queued = 0;
      relay.tokens = 0;
      return;
    }
    relay.tokens = Math.min(relay.tokens + elapsed * relay.kbps * 1000 / 8, 1500);
    while (relay.queue.length && relay.tokens >= relay.queue[0].length) {
      const msg = relay.queue.shift();
      relay.queued -= msg.length;
      relay.tokens -= msg.length;
      deliver(msg);
    }
  }, 2);
  relay.close = () => {
    clearInterval(timer);
    front.close();
    back.close();
  };
  return relay;
}

// Makes the slow page's WHEP exchange go through the relay.
async function routeThroughRelay(page, relay) {
  await page.route('**/api/webrtc/whep/**', async (route) => {
    const request = route.request();
    if (request.method() !== 'POST') return route.continue();
    // Without the browser's candidates camgraph can only answer where the checks come from: the relay.
    const offer = request.postData().split('\r\n').filter((l) => !l.startsWith('a=candidate')).join('\r\n');
    const response = await route.fetch({ postData: offer });
    const answer = await response.text();
    const lines = answer.split('\r\n');
    const host = lines.map((l) => l.match(/^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host/)).find(Boolean);
    if (host) relay.target = { address: '127.0.0.1', port: Number(host[1]) };
    let placed = false;
    const rewritten = lines.flatMap((l) => {
      if (!l.startsWith('a=candidate')) return [l];
      if (placed) return [];
      placed = true;
      return [`a=candidate:1 1 udp 2130706431 127.0.0.1 ${relay.port} typ host`];
    });
    await route.fulfill({ response, body: rewritten.join('\r\n') });
  });
}

async function statsInPage() {
  const rtc = window.camgraphRtc;
  const session = rtc?.location?.split('/').pop() ?? null;
  if (!rtc?.pc) return { session, framesDecoded: 0 };
  for (const s of (await rtc.pc.getStats()).values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      return { session, framesDecoded: s.framesDecoded ?? 0, width: s.frameWidth ?? 0, packetsLost: s.packetsLost ?? 0, nacks: s.nackCount ?? 0 };
    }
  }
  return { session, framesDecoded: 0 };
}

async function graphStats(opts) {
  const r = await fetch(`${opts.base}/api/graph`);
  const graph = await r.json();
  const node = (id) => (graph.nodes || []).find((n) => n.id === id)?.stats ?? {};
  return {
    peers: node(opts.sink).peer_variants ?? {},
    variants: node(opts.encoder).variants ?? [],
    top: (node(opts.adaptive).ladder ?? [])[0] ?? null,
  };
}


async function main() {
  const opts = parseArgs(process.argv.slice(2));
  mkdirSync(opts.outDir, { recursive: true });
  const relay = await startRelay();
  const profile = mkdtempSync(join(tmpdir(), 'camgraph-adaptive-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 800, height: 560 },
    args: [...CHROMIUM_ARGS, ...WEBRTC_ARGS],
  });
  const summary = { ok: false, limitKbps: opts['limit-kbps'], timeline: [] };
  const pages = {};
  try {
    for (const name of ['fast', 'slow']) {
      const page = await context.newPage();
      page.on('console', (m) => m.type() === 'error' && console.error(`${name}: ${m.text()}`));
      if (name === 'slow') await routeThroughRelay(page, relay);
      await page.goto(`${opts.base}/webrtc?camera=${encodeURIComponent(opts.camera)}&signalling=whep`);
      await page.waitForFunction(() => window.camgraphRtc?.firstFrameMs !== null || window.camgraphRtc?.fallback, null, { timeout: 15_000 });
      const state = await page.evaluate(() => ({ fallback: window.camgraphRtc.fallback, error: window.camgraphRtc.error }));
      check(!state.fallback, `${name} peer fell back to MJPEG: ${state.error}`);
      pages[name] = page;
    }
    check(relay.target && relay.browser, 'the slow peer does not go through the relay');

    const phases = [
      ['clean', opts['clean-s'], null],
      ['limited', opts['limited-s'], opts['limit-kbps']],
      ['recover', opts['recover-s'], null],
    ];
    const t0 = performance.now();
    let previous = null;
    for (const [phase, seconds, kbps] of phases) {
      relay.kbps = kbps;
      const end = performance.now() + seconds * 1000;
      while (performance.now() < end) {
        await sleep(SAMPLE_MS);
        const [fast, slow, graph] = await Promise.all([pages.fast.evaluate(statsInPage), pages.slow.evaluate(statsInPage), graphStats(opts)]);
        const t = (performance.now() - t0) / 1000;
        const sample = {
          t: +t.toFixed(1), phase,
          fast: { step: graph.peers[fast.session] ?? null, width: fast.width, frames: fast.framesDecoded },
          slow: { step: graph.peers[slow.session] ?? null, width: slow.width, frames: slow.framesDecoded, lost: slow.packetsLost, nacks: slow.nacks },
          encoderVariants: graph.variants,
          distinctSteps: [...new Set(Object.values(graph.peers))].length,
          relay: { ...relay.counts },
        };
        if (previous) {
          const dt = sample.t - previous.t;
          sample.fast.fps = +((sample.fast.frames - previous.fast.frames) / dt).toFixed(1);
          sample.slow.fps = +((sample.slow.frames - previous.slow.frames) / dt).toFixed(1);
          sample.slow.kbps = Math.round(((sample.relay.bytes - previous.relay.bytes) * 8) / dt / 1000);
        }
        summary.timeline.push(sample);
        previous = sample;
      }
      await pages.slow.screenshot({ path: join(opts.outDir, `adaptive-slow-${phase}.png`) });
      await pages.fast.screenshot({ path: join(opts.outDir, `adaptive-fast-${phase}.png`) });
    }

    const inPhase = (p) => summary.timeline.filter((s) => s.phase === p);
    // The top of the ladder as the adaptive node defines it (not where some peer happens to be).
    const top = (await graphStats(opts)).top;
    check(top, `node '${opts.adaptive}' reports no ladder`);
    const slowSteps = inPhase('limited').map((s) => s.slow.step);
    const firstMove = inPhase('limited').find((s) => s.slow.step !== top);
    summary.slowMovedDownAfterS = firstMove ? +(firstMove.t - inPhase('limited')[0].t + SAMPLE_MS / 1000).toFixed(1) : null;
    summary.slowLowestWidth = Math.min(...inPhase('limited').map((s) => s.slow.width || Infinity));
    const back = inPhase('recover').find((s, i, all) => all.slice(i).every((later) => later.slow.step === top));
    summary.slowBackOnTopAfterS = back ? +(back.t - inPhase('recover')[0].t + SAMPLE_MS / 1000).toFixed(1) : null;
    const fastRates = summary.timeline.filter((s) => s.fast.fps !== undefined).map((s) => s.fast.fps).sort((a, b) => a - b);
    summary.fastFpsMedian = fastRates[Math.floor(fastRates.length / 2)];
    summary.fastFpsMin = fastRates[0];
    summary.fastSteps = [...new Set(summary.timeline.map((s) => s.fast.step))];
    summary.fastWidths = [...new Set(summary.timeline.map((s) => s.fast.width))];
    const mismatched = summary.timeline.filter((s) => s.encoderVariants.length !== s.distinctSteps);
    summary.variantMismatchSamples = mismatched.length;

    for (const peer of ['slow', 'fast']) {
      check(inPhase('clean').every((s) => s[peer].step === top), `the ${peer} peer moved before the link was limited: ${JSON.stringify(inPhase('clean').map((s) => s[peer].step))} (top ${top})`);
    }
    check(firstMove, `the slow peer never left the top step while limited to ${opts['limit-kbps']} kbit/s: ${JSON.stringify(slowSteps)}`);
    check(summary.slowLowestWidth <= opts.width / 2, `the slow peer's picture stayed ${summary.slowLowestWidth} wide: the ladder never reached a smaller size`);
    check(back, `the slow peer did not get back to the top step within ${opts['recover-s']} s: ${JSON.stringify(inPhase('recover').map((s) => s.slow.step))}`);
    check(inPhase('recover').at(-1).slow.width === opts.width, `the slow peer's picture is ${inPhase('recover').at(-1).slow.width} wide at the end, want ${opts.width}`);
    check(summary.fastSteps.length === 1 && summary.fastSteps[0] === top, `the fast peer left the top step: ${JSON.stringify(summary.fastSteps)}`);
    check(summary.fastWidths.length === 1 && summary.fastWidths[0] === opts.width, `the fast peer's picture changed size: ${JSON.stringify(summary.fastWidths)}`);
    check(summary.fastFpsMedian >= opts.fps * 0.9, `the fast peer decoded a median of ${summary.fastFpsMedian} fps, want >= ${opts.fps * 0.9}`);
    // A switch is two updates (the sink's peer, the encoder's variants) read at one instant; allow one sample per switch.
    const switches = summary.timeline.filter((s, i) => i > 0 && s.slow.step !== summary.timeline[i - 1].slow.step).length;
    check(mismatched.length <= switches, `encoder variants differ from the distinct steps in use in ${mismatched.length} samples (${switches} switches): ${JSON.stringify(mismatched.slice(0, 3))}`);
    summary.ok = true;
  } catch (e) {
    summary.error = e.message;
    for (const [name, page] of Object.entries(pages)) await page.screenshot({ path: join(opts.outDir, `adaptive-failed-${name}.png`) }).catch(() => {});
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
    relay.close();
  }
  console.log(JSON.stringify(summary));
  if (!summary.ok) {
    console.error(summary.error);
    process.exit(1);
  }
}

const timer = setTimeout(() => {
  console.error('webrtc-adaptive.mjs: no result after 180 s');
  process.exit(1);
}, 180_000);
main().finally(() => clearTimeout(timer));
