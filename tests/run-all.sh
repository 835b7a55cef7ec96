#!/usr/bin/env bash
# Runs every camgraph test: unit tests, config golden files, HTTP end to end (ffprobe as a second
# client, GStreamer's RTSP server as a camera), the browser tests (Chromium via playwright-core, Firefox via puppeteer-core),
# then rustfmt and clippy.
# Installs what is missing first (Debian/Ubuntu: apt packages; npm packages for the browser test).
# Tests run in a loopback-only network namespace when that is possible (as root), so nothing they
# start can reach beyond this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential pkg-config cmake nasm libclang-dev ffmpeg chromium prometheus janus nodejs npm iproute2
  # tests/rtsp.rs: GStreamer's RTSP server (tests/rtsp_server.py) with x264
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly
  # tests/webrtc.rs: the WebRTC page in a second engine (tests/browser/firefox.mjs, puppeteer-core);
  # it decodes the H.264 with the system's libavcodec (from ffmpeg above)
  firefox-esr)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# Node may come from elsewhere (nvm, nodesource): don't ask apt for it then.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=($(printf '%s\n' "${missing[@]}" | grep -vx -e nodejs -e npm || true))
fi
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  # Only what is asked for (recommended packages would add hundreds); apt's output goes to a log.
  apt_log="${TMPDIR:-/tmp}/camgraph-apt.log"
  echo "installing with apt: ${missing[*]} (log: $apt_log)"
  { $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y \
      --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1 ||
    { tail -n 30 "$apt_log" >&2; echo "apt-get failed: see $apt_log" >&2; exit 1; }
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
[ -d tests/browser/node_modules/playwright-core ] && [ -d tests/browser/node_modules/puppeteer-core ] ||
  npm ci --prefix tests/browser --no-audit --no-fund
# aiortc: the second, independent WebRTC client of tests/webrtc.rs, the receiving peer of the WHIP
# server of tests/whip.rs (tests/whip_server.py: asyncio only, no aiohttp) and the Janus viewer of
# tests/janus.rs.
python3 -c 'import aiortc' 2>/dev/null || python3 -m pip install -q aiortc || python3 -m pip install -q --break-system-packages aiortc

cargo build --all-targets --locked
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  unshare -n bash -c 'ip link set lo up && cargo test --all-targets --locked --offline --no-fail-fast'
else
  cargo test --all-targets --locked --no-fail-fast
fi
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
