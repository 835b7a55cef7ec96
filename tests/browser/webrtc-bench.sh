#!/usr/bin/env bash
# WebRTC benchmark: camgraph with a 720p30 test camera -> h264_encoder -> webrtc_sink, and N headless
# Chromium peers (tests/browser/webrtc.mjs, half WS signalling, half WHEP) for each N given.
#
#   tests/browser/webrtc-bench.sh [BINARY] [N...]     default: target/release/camgraph 1 5 10
#
# Prints one JSON line per N: server CPU % of one core over the whole run (negotiation included),
# decoded fps per peer (getStats), time to first frame per peer, capture-to-display latency p50 per
# peer (from the capture time painted in the picture). Run it as root for the loopback-only network
# namespace, or as anyone on loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/camgraph}
shift || true
counts=("${@:-1 5 10}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/graph.yaml" <<'YAML'
nodes:
  front:      { type: camera, source: test, width: 1280, height: 720, fps: 30 }
  front_h264: { type: h264_encoder, inputs: [front], bitrate_kbps: 2500 }
  front_rtc:  { type: webrtc_sink, inputs: [front_h264], max_peers: 20 }
YAML
run() {
  local n=$1 port=18555
  "$bin" --config "$work/graph.yaml" --listen 127.0.0.1:$port >"$work/server.log" 2>&1 &
  local srv=$!
  sleep 1
  local t0 w0 t1 w1
  t0=$(awk '{print $14+$15}' /proc/$srv/stat); w0=$(date +%s.%N)
  node tests/browser/webrtc.mjs http://127.0.0.1:$port "$work/shots" --camera front \
    --width 1280 --height 720 --peers "$n" --fps 30 >"$work/out.json" 2>"$work/err.log" || true
  t1=$(awk '{print $14+$15}' /proc/$srv/stat); w1=$(date +%s.%N)
  kill $srv; wait $srv 2>/dev/null || true
  python3 - "$n" "$t0" "$t1" "$w0" "$w1" "$work/out.json" <<'PY'
import json, sys
n, t0, t1, w0, w1, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
s = json.loads(open(out).read().strip().splitlines()[-1])
peers = s.get("peers", [])
print(json.dumps({
    "peers": int(n),
    "server_cpu_pct": round((t1 - t0) / 100 / (w1 - w0) * 100, 1),
    "ok": s["ok"], "error": s.get("error"),
    "decoded_fps": [p["decodedFps"] for p in peers],
    "first_frame_ms": [p["firstFrameMs"] for p in peers],
    "latency_p50_ms": [p["latencyP50Ms"] for p in peers],
    "painted_backwards": [p.get("backwards") for p in peers],
}))
PY
}
inner=$(declare -f run)
for n in ${counts[*]}; do
  if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    unshare -n bash -c "ip link set lo up; bin='$bin' work='$work'; $inner; run $n"
  else
    run "$n"
  fi
done
