"""A WebRTC viewer that talks only to Janus (aiortc through Janus's HTTP API), for tests/janus.rs
and the rtp_sink benchmark.

    python3 tests/janus_viewer.py JANUS_URL MOUNTPOINT_ID HOST_IP SECONDS [OUT_DIR]

Creates a Janus session, attaches janus.plugin.streaming, `watch`es the mountpoint, answers
Janus's offer and `start`s; then receives video for SECONDS after the first frame. With OUT_DIR,
it writes one decoded frame in every 10 as raw RGB (frame-NNNN-WxH.rgb), for the test to read the
painted frame numbers with camgraph's own reader (plugins/sources/testsrc::read_marks). Prints one
JSON line: frames, fps, width, height, time to first frame, files written. Exits non-zero on
failure. ICE gathers on HOST_IP only (the viewer's own address, in a network namespace of its own).
"""

import asyncio
import json
import os
import sys
import time

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription

# The same HTTP helper as camgraph's WHEP client (importing it patches aioice to loopback: the
# host address is set again below).
from aiortc_client import http


def janus(url, body):
    """POSTs a Janus API request; returns the JSON answer (raises on an error)."""
    body = dict(body, transaction=os.urandom(6).hex())
    status, _, text = http("POST", url, json.dumps(body).encode(), "application/json")
    answer = json.loads(text)
    if status != 200 or answer.get("janus") == "error":
        raise SystemExit(f"Janus answered {status}: {text}")
    return answer


def next_event(url, session, deadline):
    """Long-polls the session until a plugin event with a JSEP offer (or an error) arrives."""
    while time.monotonic() < deadline:
        status, _, text = http("GET", f"{url}/{session}?maxev=1")
        if status != 200:
            raise SystemExit(f"Janus long poll answered {status}: {text}")
        event = json.loads(text)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise SystemExit(f"Janus streaming plugin: {data}")
        if event.get("jsep"):
            return event["jsep"]
    raise SystemExit("Janus sent no offer in time")


async def run(url, mountpoint, seconds, out_dir):
    session = janus(url, {"janus": "create"})["data"]["id"]
    base = f"{url}/{session}"
    handle = janus(base, {"janus": "attach", "plugin": "janus.plugin.streaming"})["data"]["id"]
    started = time.monotonic()
    janus(f"{base}/{handle}", {"janus": "message", "body": {"request": "watch", "id": mountpoint}})
    offer = await asyncio.to_thread(next_event, url, session, time.monotonic() + 10)

    pc = RTCPeerConnection()
    got_track = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track):
        if track.kind == "video" and not got_track.done():
            got_track.set_result(track)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
    await pc.setLocalDescription(await pc.createAnswer())
    janus(f"{base}/{handle}", {
        "janus": "message",
        "body": {"request": "start"},
        "jsep": {"type": "answer", "sdp": pc.localDescription.sdp},
    })
    track = await asyncio.wait_for(got_track, 10)
    frame = await asyncio.wait_for(track.recv(), 15)
    first_frame_ms = (time.monotonic() - started) * 1000
    frames, written, t0 = 0, [], time.monotonic()
    while time.monotonic() - t0 < seconds:
        frame = await asyncio.wait_for(track.recv(), 5)
        frames += 1
        if out_dir and frames % 10 == 0:
            written.append(save_rgb(frame, out_dir, frames))
    elapsed = time.monotonic() - t0
    await pc.close()
    janus(base, {"janus": "destroy"})
    return {
        "frames": frames,
        "fps": round(frames / elapsed, 1),
        "width": frame.width,
        "height": frame.height,
        "first_frame_ms": round(first_frame_ms),
        "files": written,
    }


def save_rgb(frame, out_dir, n):
    """Writes the frame as packed RGB24 rows (the planes' line padding removed)."""
    rgb = frame.reformat(format="rgb24")
    plane, row = rgb.planes[0], rgb.width * 3
    data = bytes(plane)
    packed = b"".join(data[y * plane.line_size:y * plane.line_size + row] for y in range(rgb.height))
    path = os.path.join(out_dir, f"frame-{n:04}-{rgb.width}x{rgb.height}.rgb")
    with open(path, "wb") as f:
        f.write(packed)
    return path


def main():
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    url, mountpoint, host_ip, seconds = sys.argv[1].rstrip("/"), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    out_dir = sys.argv[5] if len(sys.argv) > 5 else None
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: [host_ip]
    print(json.dumps(asyncio.run(run(url, mountpoint, seconds, out_dir))))


if __name__ == "__main__":
    main()
