#!/usr/bin/python3
"""An RTSP server camgraph did not write, for tests: GStreamer's gst-rtsp-server (Debian packages
python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-ugly/good/base) serving a live test
pattern as H.264 (x264, one IDR every 60 frames: a 2 s GOP at 30 fps; no scene-cut IDRs between,
which the test pattern otherwise triggers every ~115 frames) on 127.0.0.1, or with --codec jpeg as
JPEG (jpegenc, RFC 2435: "MJPEG over RTSP").

    rtsp_server.py [--port N] [--path /cam] [--width W --height H --fps F --gop N --preset P]
                   [--profile constrained-baseline|main|high] [--codec h264|jpeg]
                   [--user U --password P] [--marks]

With --marks every frame carries camgraph's test-pattern marks (plugins/sources/testsrc, read back by
tests/browser/marks.mjs), painted into the raw I420 picture as it leaves videotestsrc, before the
encoder: 3 rows of 32 black/white blocks at the top left, most significant bit first; row 0 = the
frame number, row 1 = its complement, row 2 = the capture time (this machine's wall clock, Unix ms,
low 32 bits). A page reading them on the same machine measures glass-to-glass latency.

Prints "PORT <n>" on stdout once it listens (port 0, the default, picks a free one), then serves
until killed. With --user/--password it asks clients for basic authentication."""

import argparse
import ctypes
import os
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstRtspServer, GstVideo  # noqa: E402

SOURCE = "videotestsrc name=src is-live=true ! video/x-raw,width={w},height={h},framerate={fps}/1"
ENCODE = {
    "h264": "x264enc tune=zerolatency key-int-max={gop} option-string=scenecut=0 "
    "speed-preset={preset} "
    "! video/x-h264,profile={profile} ! rtph264pay name=pay0 pt=96",
    # RFC 2435 carries 4:2:0 or 4:2:2 only; JPEG has the static payload type 26 (RFC 3551).
    "jpeg": "videoconvert ! video/x-raw,format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=26",
}

BITS = 32
ROWS = 3
# Nominal (limited range) white and black luma, and neutral chroma: the blocks decode to pure white
# and black whatever colour of the test pattern lies under them.
WHITE, BLACK, NEUTRAL = 235, 16, 128


def block_size(width):
    """The side of one mark block, as plugins/sources/testsrc's block_size: a multiple of 8."""
    return max(8, width // BITS // 8 * 8)


def fail(message):
    """Ends the server with `message`: from a streaming thread, where SystemExit would be swallowed."""
    print(f"rtsp_server.py: {message}", file=sys.stderr, flush=True)
    os._exit(1)


class GstMapInfo(ctypes.Structure):
    """GstMapInfo as gst/gstmemory.h lays it out, for gst_buffer_map through ctypes."""

    _fields_ = [
        ("memory", ctypes.c_void_p),
        ("flags", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("maxsize", ctypes.c_size_t),
        ("user_data", ctypes.c_void_p * 4),
        ("_gst_reserved", ctypes.c_void_p * 4),
    ]


class MarkPainter:
    """A buffer probe on videotestsrc's output that paints the marks into each I420 frame.

    Without gst-python's overrides PyGObject maps buffers read-only (a copy), and wrapping the
    buffer in Python takes a reference that makes it unwritable; so the probe takes the buffer
    pointer from the GstPadProbeInfo struct (type, id, then data), makes it writable as C does
    (`info->data = gst_buffer_make_writable (buffer)`) and maps and writes it through ctypes."""

    def __init__(self):
        self.gst = ctypes.CDLL("libgstreamer-1.0.so.0")
        self.gst.gst_mini_object_make_writable.restype = ctypes.c_void_p
        self.gst.gst_mini_object_make_writable.argtypes = [ctypes.c_void_p]
        self.gst.gst_buffer_map.restype = ctypes.c_int
        self.gst.gst_buffer_map.argtypes = [ctypes.c_void_p, ctypes.POINTER(GstMapInfo), ctypes.c_int]
        self.gst.gst_buffer_unmap.argtypes = [ctypes.c_void_p, ctypes.POINTER(GstMapInfo)]
        self.seq = 0
        self.layout = None  # (plane offsets, strides, block size): the caps are fixed by the options

    def attach(self, media):
        """Adds the probe to a media's videotestsrc (the factory's media-configure signal)."""
        pad = media.get_element().get_by_name("src").get_static_pad("src")
        pad.add_probe(Gst.PadProbeType.BUFFER, self.probe)

    def probe(self, pad, info):
        # A live videotestsrc pushes each frame when the clock reaches its time: that is its capture.
        captured_ms = int(time.time() * 1000) & 0xFFFFFFFF
        if self.layout is None:
            caps = pad.get_current_caps()
            video = GstVideo.VideoInfo.new_from_caps(caps)
            if caps.get_structure(0).get_string("format") != "I420":
                fail(f"--marks paints I420, the source gives {caps.to_string()}")
            b = block_size(video.width)
            if video.width < BITS * b or video.height < ROWS * b:
                fail(f"--marks needs at least {BITS * b}x{ROWS * b}, not {video.width}x{video.height}")
            self.layout = (list(video.offset), list(video.stride), b)
        offset, stride, b = self.layout
        seq = self.seq & 0xFFFFFFFF
        self.seq += 1
        # hash() of a PyGObject struct wrapper is its C address. GstPadProbeInfo: GstPadProbeType
        # type; gulong id; gpointer data; ...
        data = ctypes.c_void_p.from_address(hash(info) + 16)
        data.value = self.gst.gst_mini_object_make_writable(data.value)
        mapped = GstMapInfo()
        if not self.gst.gst_buffer_map(data.value, ctypes.byref(mapped), Gst.MapFlags.WRITE):
            fail("--marks: cannot map a frame for writing")
        try:
            for row, value in enumerate((seq, ~seq & 0xFFFFFFFF, captured_ms)):
                line = b"".join(
                    bytes([WHITE if value >> (BITS - 1 - bit) & 1 else BLACK]) * b for bit in range(BITS)
                )
                for y in range(row * b, (row + 1) * b):
                    ctypes.memmove(mapped.data + offset[0] + y * stride[0], line, len(line))
            neutral = bytes([NEUTRAL]) * (BITS * b // 2)
            for plane in (1, 2):
                for y in range(ROWS * b // 2):
                    ctypes.memmove(mapped.data + offset[plane] + y * stride[plane], neutral, len(neutral))
        finally:
            self.gst.gst_buffer_unmap(data.value, ctypes.byref(mapped))
        return Gst.PadProbeReturn.OK


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--port", type=int, default=0)
    args.add_argument("--path", default="/cam")
    args.add_argument("--width", type=int, default=640)
    args.add_argument("--height", type=int, default=360)
    args.add_argument("--fps", type=int, default=30)
    args.add_argument("--gop", type=int, default=60)
    # x264's default; the benchmark's 720p30 takes "ultrafast" so the server keeps up on 2 cores.
    args.add_argument("--preset", default="medium")
    # What browsers offer for WebRTC is Constrained Baseline (and Main); "high" tries the others.
    args.add_argument("--profile", default="constrained-baseline")
    args.add_argument("--codec", choices=sorted(ENCODE), default="h264")
    args.add_argument("--user")
    args.add_argument("--password")
    args.add_argument("--marks", action="store_true", help="paint the marks into every frame")
    a = args.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    source = SOURCE + (",format=I420" if a.marks else "")
    pipeline = f"( {source} ! {ENCODE[a.codec]} )"
    factory.set_launch(
        pipeline.format(
            w=a.width, h=a.height, fps=a.fps, gop=a.gop, preset=a.preset, profile=a.profile
        )
    )
    # One pipeline for every client, as a camera has one encoder.
    factory.set_shared(True)
    if a.marks:
        painter = MarkPainter()
        factory.connect("media-configure", lambda _factory, media: painter.attach(media))
    if a.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role_from_structure(
            Gst.Structure.new_from_string("user,media.factory.access=true,media.factory.construct=true")
        )
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(a.path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{a.port}")
    print(f"PORT {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
