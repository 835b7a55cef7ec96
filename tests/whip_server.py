"""A WHIP endpoint that camgraph did not write (RFC 9725), receiving with aiortc, for tests/whip.rs.

    python3 tests/whip_server.py [--port N] [--band-rows R] [--token T] [--link LINK]... [--pli-at N]

Serves HTTP/1.1 on 127.0.0.1 (port 0 picks one) with asyncio alone:

- POST /whip/NAME with an application/sdp offer -> 201, the SDP answer (aiortc, ICE gathered),
  Location /whip/NAME/SESSION, an ETag, and each --link as a Link header (rel="ice-server"
  links are how a server announces STUN/TURN servers). With --token, a request without
  "Authorization: Bearer T" gets 401.
- DELETE of a session's Location -> 200 (its connection closed); an unknown one -> 404.
- With --pli-at N, the receiver asks for a keyframe (RTCP PLI) at the N-th frame of a session,
  as a receiver that lost pictures would.
- POST /notfound -> 404 text/plain; POST /html -> 200 text/html (targets that are no WHIP
  endpoint).

Prints one JSON line per event on stdout: {"event": "listening", "port"}, {"event": "post",
"path", "authorization", "session"}, {"event": "frame", "session", "n", "width", "height",
"key", "band"} for every decoded frame (key: an IDR), {"event": "pli", "session", "n"} (band: the top R rows as hex RGB, default 64, where the test
camera paints its frame number; tests/whip.rs reads it with the crate's own read_marks), and
{"event": "delete", "path", "status"}.
"""

import argparse
import asyncio
import json
import secrets
import sys

# Patches aioice to gather on 127.0.0.1 (tests run on loopback only), as the WHEP client does.
import aiortc_client  # noqa: F401
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

SESSIONS = {}


def emit(**event):
    print(json.dumps(event), flush=True)


def top_rows(frame, rows):
    """The top `rows` rows of a decoded frame as packed RGB bytes."""
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    data = bytes(plane)
    rows = min(rows, rgb.height)
    width = rgb.width * 3
    return b"".join(data[r * plane.line_size:r * plane.line_size + width] for r in range(rows))


async def receive(session, track, receiver, args):
    n = 0
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        n += 1
        emit(event="frame", session=session, n=n, width=frame.width, height=frame.height,
             key=frame.key_frame, band=top_rows(frame, args.band_rows).hex())
        sources = receiver.getSynchronizationSources()
        if n == args.pli_at and sources:
            await receiver._send_rtcp_pli(sources[0].source)
            emit(event="pli", session=session, n=n)


async def respond(writer, status, reason, headers=(), body=b""):
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    writer.close()


async def post_offer(path, headers, body, writer, args):
    if args.token and headers.get("authorization") != f"Bearer {args.token}":
        return await respond(writer, 401, "Unauthorized", [("Content-Type", "text/plain")],
                             b"a bearer token is required")
    if not headers.get("content-type", "").startswith("application/sdp"):
        return await respond(writer, 415, "Unsupported Media Type")
    session = secrets.token_hex(8)
    pc = RTCPeerConnection()
    SESSIONS[f"{path}/{session}"] = pc

    @pc.on("track")
    def on_track(track):
        receiver = pc.getTransceivers()[0].receiver
        asyncio.ensure_future(receive(session, track, receiver, args))

    await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    emit(event="post", path=path, authorization=headers.get("authorization"), session=session)
    links = [("Link", link) for link in args.link]
    await respond(writer, 201, "Created", [
        ("Content-Type", "application/sdp"),
        ("Location", f"{path}/{session}"),
        ("ETag", f'"{session}"'),
    ] + links, pc.localDescription.sdp.encode())


async def handle(reader, writer, args):
    try:
        request = (await reader.readline()).decode().split()
        headers = {}
        while True:
            line = (await reader.readline()).decode().strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        method, path = request[0], request[1]
        if method == "POST" and path == "/notfound":
            await respond(writer, 404, "Not Found", [("Content-Type", "text/plain")],
                          b"no such stream\n")
        elif method == "POST" and path == "/html":
            await respond(writer, 200, "OK", [("Content-Type", "text/html; charset=utf-8")],
                          b"<!doctype html><html><body>Welcome</body></html>")
        elif method == "POST" and path.startswith("/whip/"):
            await post_offer(path, headers, body, writer, args)
        elif method == "DELETE" and path in SESSIONS:
            await SESSIONS.pop(path).close()
            emit(event="delete", path=path, status=200)
            await respond(writer, 200, "OK")
        elif method == "DELETE":
            emit(event="delete", path=path, status=404)
            await respond(writer, 404, "Not Found")
        else:
            await respond(writer, 405, "Method Not Allowed")
    except Exception as e:  # a test server: say what went wrong, keep serving
        print(f"whip_server: {e!r}", file=sys.stderr, flush=True)
        writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--band-rows", type=int, default=64)
    parser.add_argument("--token")
    parser.add_argument("--link", action="append", default=[])
    parser.add_argument("--pli-at", type=int, default=0)
    args = parser.parse_args()
    server = await asyncio.start_server(lambda r, w: handle(r, w, args), "127.0.0.1", args.port)
    emit(event="listening", port=server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
