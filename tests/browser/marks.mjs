// Reading the test pattern's marks in the page, shared by the browser scripts. Same layout as
// plugins/sources/testsrc: 3 rows of 32 black/white blocks at the top left; row0 = frame number,
// row1 = its complement (a check), row2 = capture time in Unix ms (low 32 bits).

// Runs in the page (Playwright serialises it): installs window.camgraphMarks(source, w, h), which
// draws an <img>, <video> or <canvas> of size w x h on a canvas and returns { seq, capturedMs } or
// { seq: null, why }.
function installInPage() {
  const BITS = 32;
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  // `painted`: the width the camera painted the marks at, when the picture was scaled down from it.
  window.camgraphMarks = (source, w, h, painted = w) => {
    if (!w) return { seq: null, why: 'no picture yet' };
    const b = Math.round(Math.max(8, Math.floor(painted / BITS / 8) * 8) * (w / painted));
    if (w < BITS * b || h < 3 * b) return { seq: null, why: `picture ${w}x${h} too small` };
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    ctx.drawImage(source, 0, 0);
    const data = ctx.getImageData(0, 0, BITS * b, 3 * b).data; // throws if tainted
    const stride = BITS * b;
    const row = (r) => {
      let value = 0;
      for (let bit = 0; bit < BITS; bit++) {
        const x0 = Math.floor(bit * b + b / 4);
        const y0 = Math.floor(r * b + b / 4);
        const n = Math.max(1, Math.floor(b / 2));
        let sum = 0;
        for (let y = y0; y < y0 + n; y++) {
          for (let x = x0; x < x0 + n; x++) sum += data[(y * stride + x) * 4 + 1];
        }
        value = ((value << 1) | (sum / (n * n) > 127 ? 1 : 0)) >>> 0;
      }
      return value;
    };
    const seq = row(0);
    if (row(1) !== (~seq >>> 0)) return { seq: null, why: 'row1 != ~row0' };
    return { seq, capturedMs: row(2) };
  };
}

/** Makes window.camgraphMarks available in every page of a Playwright `context`, or in every
 * document of a Puppeteer page. */
export function installMarkReader(target) {
  return target.addInitScript ? target.addInitScript(installInPage) : target.evaluateOnNewDocument(installInPage);
}

// In the page (passed to evaluate): for `ms`, reads the painted marks of every frame the <video>
// presents, with each frame's capture-to-paint latency.
export async function readMarksInPage({ ms }) {
  const video = document.querySelector('video');
  if (!video) throw new Error('no <video> (fell back to MJPEG?)');
  const read = () => {
    const m = window.camgraphMarks(video, video.videoWidth, video.videoHeight);
    if (m.seq === null) return null;
    const latency = ((Date.now() % 2 ** 32) - m.capturedMs + 2 ** 32) % 2 ** 32;
    return { seq: m.seq, latency };
  };
  const seen = [];
  let unreadable = 0;
  await new Promise((done) => {
    const start = performance.now();
    const onFrame = () => {
      const m = read();
      if (m) seen.push(m);
      else unreadable++;
      if (performance.now() - start < ms) video.requestVideoFrameCallback(onFrame);
      else done();
    };
    video.requestVideoFrameCallback(onFrame);
    setTimeout(done, ms + 2000);
  });
  return { seen, unreadable, size: `${video.videoWidth}x${video.videoHeight}` };
}
