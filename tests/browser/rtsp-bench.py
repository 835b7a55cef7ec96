#!/usr/bin/python3
"""RTSP benchmark: a 1280x720 30 fps H.264 camera (GStreamer's RTSP server, tests/rtsp_server.py)
relayed by camgraph to N headless Chromium peers (tests/browser/rtsp.mjs, half WHEP, half
WebSocket), two ways:

  passthrough  camera -> webrtc_sink                                 (the camera's own H.264)
  transcode    camera -> h264_decoder -> h264_encoder -> webrtc_sink (decode and re-encode)

    tests/browser/rtsp-bench.py [BINARY] [N...]     default: target/release/camgraph 1 10

Prints one JSON line per (way, N): camgraph's CPU in % of one core while the peers play (10 s,
after every peer showed its first frame), decoded fps and time to first frame per peer, and the
glass-to-glass latency (median, 90th percentile; ms) of the first peer: the camera paints its
capture time into every frame (rtsp_server.py --marks) and that peer's page reads it back from
each frame it paints (rtsp.mjs --marks 1), both with this machine's wall clock. That spans x264
encoding (zerolatency), RTSP, camgraph, WebRTC, Chromium's jitter buffer, decode and paint. Run as
root in a loopback-only namespace:
    unshare -n bash -c 'ip link set lo up && tests/browser/rtsp-bench.py target/release/camgraph'
"""

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MEASURE_MS = 10_000
GRAPHS = {
    "passthrough": "nodes:\n"
    "  cam: {{ type: camera, source: '{url}' }}\n"
    "  cam_rtc: {{ type: webrtc_sink, inputs: [cam], max_peers: 20 }}\n",
    "transcode": "nodes:\n"
    "  cam: {{ type: camera, source: '{url}' }}\n"
    "  cam_decode: {{ type: h264_decoder, inputs: [cam] }}\n"
    "  cam_h264: {{ type: h264_encoder, inputs: [cam_decode], bitrate_kbps: 2500 }}\n"
    "  cam_rtc: {{ type: webrtc_sink, inputs: [cam_h264], max_peers: 20 }}\n",
}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(binary, way, peers, rtsp_url, work):
    config = os.path.join(work, f"{way}.yaml")
    with open(config, "w") as f:
        f.write(GRAPHS[way].format(url=rtsp_url))
    server = subprocess.Popen(
        [binary, "--config", config, "--listen", "127.0.0.1:18556"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in server.stdout:
            if line.startswith("camgraph listening on "):
                base = line.split()[-1]
                break
        browser = subprocess.Popen(
            ["node", os.path.join(ROOT, "tests/browser/rtsp.mjs"), base, os.path.join(work, "shots"),
             "--camera", "cam", "--width", "1280", "--height", "720", "--peers", str(peers),
             "--measure", str(MEASURE_MS), "--restart", "0", "--marks", "1"],
            cwd=os.path.join(ROOT, "tests/browser"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        cpu0 = wall0 = None
        summary = None
        for line in browser.stdout:
            msg = json.loads(line)
            if msg.get("phase") == "measuring":
                cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
            elif msg.get("phase") == "playing" and cpu0 is not None:
                cpu = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - wall0)
            elif "ok" in msg:
                summary = msg
        browser.wait()
        if not summary or not summary["ok"] or cpu0 is None:
            err = browser.stderr.read()
            return {"way": way, "peers": peers, "ok": False, "error": (summary or {}).get("error") or err[-500:]}
        return {
            "way": way,
            "peers": peers,
            "ok": True,
            "server_cpu_pct": round(cpu * 100, 1),
            "decoded_fps": [p["decodedFps"] for p in summary["peers"]],
            "first_frame_ms": [p["firstFrameMs"] for p in summary["peers"]],
            "glass_to_glass_ms": {
                "p50": summary["peers"][0]["latencyP50Ms"],
                "p90": summary["peers"][0]["latencyP90Ms"],
                "frames": summary["peers"][0]["paintedReadable"],
            },
            # Chromium's share of it: how long frames waited in its jitter buffer (getStats()).
            "jitter_buffer_ms": summary["peers"][0]["jitterBufferMs"],
        }
    finally:
        server.kill()
        server.wait()


def main():
    args = sys.argv[1:]
    binary = args.pop(0) if args and not args[0].isdigit() else os.path.join(ROOT, "target/release/camgraph")
    counts = [int(n) for n in args] or [1, 10]
    rtsp = subprocess.Popen(
        ["/usr/bin/python3", os.path.join(ROOT, "tests/rtsp_server.py"), "--width", "1280",
         "--height", "720", "--fps", "30", "--gop", "60", "--preset", "ultrafast", "--marks"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(rtsp.stdout.readline().split()[1])
        url = f"rtsp://127.0.0.1:{port}/cam"
        with tempfile.TemporaryDirectory() as work:
            for peers in counts:
                for way in GRAPHS:
                    print(json.dumps(run(binary, way, peers, url, work)), flush=True)
    finally:
        rtsp.kill()
        rtsp.wait()


if __name__ == "__main__":
    main()
