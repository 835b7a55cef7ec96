"""A second, independent WebRTC client (aiortc) for camgraph's WHEP endpoint.

    python3 tests/aiortc_client.py BASE_URL CAMERA [SECONDS]
    python3 tests/aiortc_client.py BASE_URL CAMERA until-closed
    python3 tests/aiortc_client.py BASE_URL CAMERA watch SECONDS
    python3 tests/aiortc_client.py BASE_URL CAMERA steps

POSTs an offer to /api/webrtc/whep/CAMERA, receives the video for SECONDS (default 5) after the
first frame, sends one RTCP PLI (a keyframe request) and receives 1 s more, DELETEs the session,
and prints one JSON line: frames, fps, width, height, time to first frame, PLI sent, frames after it. Exits 1 on failure.
With `until-closed` it prints `{"first_frame": true}` at the first frame, then receives until the
server ends the session and prints how it ended: `closed` (the server closed the peer: the
connection state became closed or failed, or the track ended) or `timeout` (frames stopped and
nothing said why for 10 s). With `watch` it receives for SECONDS and prints a JSON line every
0.5 s: frames decoded so far, the last one's size and the share of its pixels (sampled) that
have the "no signal" picture's background colour (`no_signal`, 0..1).
With `steps` it prints `{"width", "height", "frames", "gap_ms"}` at the
first frame and whenever the picture's size changes (gap_ms: the stream time since the frame
before, from the RTP timestamps: how much of the camera's time the peer did not see), and reads commands on stdin: `lose SHARE` makes
its receiver reports claim that share of the packets received as lost too (0: only the real
losses), which moves it down an adaptive ladder and back up; `quit` (or the end of stdin) ends the
session and prints the frames received. aioice skips loopback addresses when gathering, so they are
patched to 127.0.0.1 (tests run on loopback only).
"""

import asyncio
import json
import sys
import time
import urllib.request

import aioice.ice
import aiortc.rtcrtpreceiver
from aiortc import RTCPeerConnection, RTCSessionDescription

aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]


def http(method, url, body=None, content_type=None):
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


async def connect(base, camera):
    """A recvonly peer connected over WHEP: (pc, track, session location, a future set when the
    connection closes or fails)."""
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    got_track = asyncio.get_running_loop().create_future()
    ended = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track):
        if not got_track.done():
            got_track.set_result(track)

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState in ("closed", "failed") and not ended.done():
            ended.set_result(f"connection {pc.connectionState}")

    await pc.setLocalDescription(await pc.createOffer())
    status, headers, answer = await asyncio.to_thread(
        http, "POST", f"{base}/api/webrtc/whep/{camera}",
        pc.localDescription.sdp.encode(), "application/sdp")
    if status != 201:
        raise SystemExit(f"WHEP POST answered {status}: {answer}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    track = await asyncio.wait_for(got_track, 10)
    return pc, track, headers.get("Location"), ended


async def run(base, camera, seconds):
    started = time.monotonic()
    pc, track, location, _ = await connect(base, camera)
    frame = await asyncio.wait_for(track.recv(), 10)
    first_frame_ms = (time.monotonic() - started) * 1000
    frames, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        frame = await asyncio.wait_for(track.recv(), 5)
        frames += 1
    elapsed = time.monotonic() - t0
    # Ask for a keyframe as a receiver that lost pictures would (RTCP PLI), then keep receiving:
    # the server must answer with an IDR without the stream stalling.
    receiver = pc.getTransceivers()[0].receiver
    sources = receiver.getSynchronizationSources()
    pli_sent = bool(sources)
    if pli_sent:
        await receiver._send_rtcp_pli(sources[0].source)
    after_pli = 0
    t1 = time.monotonic()
    while time.monotonic() - t1 < 1.0:
        await asyncio.wait_for(track.recv(), 5)
        after_pli += 1
    status, _, _ = await asyncio.to_thread(http, "DELETE", f"{base}{location}")
    await pc.close()
    return {
        "frames": frames,
        "fps": round(frames / elapsed, 1),
        "width": frame.width,
        "height": frame.height,
        "first_frame_ms": round(first_frame_ms),
        "delete_status": status,
        "pli_sent": pli_sent,
        "frames_after_pli": after_pli,
    }


async def until_closed(base, camera):
    pc, track, _, ended = await connect(base, camera)
    await asyncio.wait_for(track.recv(), 10)
    print(json.dumps({"first_frame": True}), flush=True)
    frames, how = 1, "timeout"
    receiving = asyncio.ensure_future(track.recv())
    while True:
        done, _ = await asyncio.wait({receiving, ended}, timeout=10,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ended in done:
            how = "closed"
            break
        if not done:
            break
        try:
            receiving.result()
        except Exception:  # MediaStreamError: the track ended
            how = "closed"
            break
        frames += 1
        receiving = asyncio.ensure_future(track.recv())
    receiving.cancel()
    await pc.close()
    return {"frames": frames, "end": how}


# The "no signal" picture's background (plugins/sources/nosignal: BACKGROUND), and how far a
# pixel may be from it after H.264 and the YUV to RGB conversions.
NO_SIGNAL_RGB = (48, 16, 64)
NO_SIGNAL_TOLERANCE = 16


def no_signal_share(frame):
    """The share of (every 8th row and column of) the frame's pixels with the no-signal colour."""
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    data, stride = bytes(plane), plane.line_size
    near = total = 0
    for y in range(0, rgb.height, 8):
        row = y * stride
        for x in range(0, rgb.width, 8):
            p = data[row + 3 * x: row + 3 * x + 3]
            total += 1
            near += all(abs(a - b) <= NO_SIGNAL_TOLERANCE for a, b in zip(p, NO_SIGNAL_RGB))
    return near / max(total, 1)


async def watch(base, camera, seconds):
    pc, track, location, _ = await connect(base, camera)
    frames, last, t0 = 0, None, time.monotonic()
    receiving = asyncio.ensure_future(track.recv())
    reported = time.monotonic()
    while time.monotonic() - t0 < seconds:
        done, _ = await asyncio.wait({receiving}, timeout=0.5)
        if receiving in done:
            last = receiving.result()
            frames += 1
            receiving = asyncio.ensure_future(track.recv())
        if last is not None and time.monotonic() - reported >= 0.5:
            reported = time.monotonic()
            print(json.dumps({"frames": frames, "width": last.width, "height": last.height,
                              "no_signal": round(no_signal_share(last), 3)}), flush=True)
    receiving.cancel()
    await asyncio.to_thread(http, "DELETE", f"{base}{location}")
    await pc.close()


def claim_losses():
    """Makes receiver reports claim a share (the returned dict's "share") of the packets received
    as lost, on top of the real losses: cumulative, so setting it back to 0 reports no more."""
    claimed = {"share": 0.0}
    stats = aiortc.rtcrtpreceiver.StreamStatistics
    add, lost = stats.add, stats.packets_lost.fget

    def counting_add(self, packet):
        add(self, packet)
        self.claimed_lost = getattr(self, "claimed_lost", 0.0) + claimed["share"]

    stats.add = counting_add
    stats.packets_lost = property(
        lambda self: aiortc.rtcrtpreceiver.clamp_packets_lost(
            lost(self) + int(getattr(self, "claimed_lost", 0.0))))
    return claimed


async def steps(base, camera):
    claimed = claim_losses()
    pc, track, location, ended = await connect(base, camera)
    loop = asyncio.get_running_loop()
    commands = asyncio.Queue()
    loop.add_reader(sys.stdin.fileno(), lambda: commands.put_nowait(sys.stdin.readline()))
    size, frames, last = None, 0, None
    receiving = asyncio.ensure_future(track.recv())
    reading = asyncio.ensure_future(commands.get())
    while True:
        done, _ = await asyncio.wait({receiving, reading, ended}, timeout=10,
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise SystemExit("no frame and no command for 10 s")
        if ended in done:
            raise SystemExit(f"the server ended the session: {ended.result()}")
        if receiving in done:
            frame = receiving.result()
            frames += 1
            # Stream time (from the RTP timestamps): a receiver's jitter buffer hands out a frame
            # only once the next one starts arriving, so arrival times hide a pause.
            now = frame.pts * frame.time_base
            if (frame.width, frame.height) != size:
                size = (frame.width, frame.height)
                gap_ms = round((now - last) * 1000) if last is not None else None
                print(json.dumps({"width": frame.width, "height": frame.height,
                                  "frames": frames, "gap_ms": gap_ms}), flush=True)
            last = now
            receiving = asyncio.ensure_future(track.recv())
        if reading in done:
            command = reading.result().split()
            if not command or command[0] == "quit":
                break
            if command[0] == "lose":
                claimed["share"] = float(command[1])
            reading = asyncio.ensure_future(commands.get())
    receiving.cancel()
    reading.cancel()
    loop.remove_reader(sys.stdin.fileno())
    status, _, _ = await asyncio.to_thread(http, "DELETE", f"{base}{location}")
    await pc.close()
    return {"frames": frames, "delete_status": status}


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    if sys.argv[3:4] == ["watch"]:
        asyncio.run(watch(sys.argv[1].rstrip("/"), sys.argv[2], float(sys.argv[4])))
        return
    if sys.argv[3:4] == ["steps"]:
        print(json.dumps(asyncio.run(steps(sys.argv[1].rstrip("/"), sys.argv[2]))))
        return
    if sys.argv[3:4] == ["until-closed"]:
        print(json.dumps(asyncio.run(until_closed(sys.argv[1].rstrip("/"), sys.argv[2]))))
        return
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    print(json.dumps(asyncio.run(run(sys.argv[1].rstrip("/"), sys.argv[2], seconds))))


if __name__ == "__main__":
    main()
