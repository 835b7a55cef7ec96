#!/usr/bin/python3
"""An RTSP server camgraph did not write, for tests: GStreamer's gst-rtsp-server (Debian packages
python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-ugly/good/base) serving a live test
pattern as H.264 (x264, one IDR every 60 frames: a 2 s GOP at 30 fps; no scene-cut IDRs between,
which the test pattern otherwise triggers every ~115 frames) on 127.0.0.1, or with --codec jpeg as
JPEG (jpegenc, RFC 2435: "MJPEG over RTSP").

    rtsp_server.py [--port N] [--path /cam] [--width W --height H --fps F --gop N --preset P]
                   [--profile constrained-baseline|main|high] [--codec h264|jpeg]
                   [--user U --password P]

Prints "PORT <n>" on stdout once it listens (port 0, the default, picks a free one), then serves
until killed. With --user/--password it asks clients for basic authentication."""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

SOURCE = "videotestsrc is-live=true ! video/x-raw,width={w},height={h},framerate={fps}/1"
ENCODE = {
    "h264": "x264enc tune=zerolatency key-int-max={gop} option-string=scenecut=0 "
    "speed-preset={preset} "
    "! video/x-h264,profile={profile} ! rtph264pay name=pay0 pt=96",
    # RFC 2435 carries 4:2:0 or 4:2:2 only; JPEG has the static payload type 26 (RFC 3551).
    "jpeg": "videoconvert ! video/x-raw,format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=26",
}


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
    a = args.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    pipeline = f"( {SOURCE} ! {ENCODE[a.codec]} )"
    factory.set_launch(
        pipeline.format(
            w=a.width, h=a.height, fps=a.fps, gop=a.gop, preset=a.preset, profile=a.profile
        )
    )
    # One pipeline for every client, as a camera has one encoder.
    factory.set_shared(True)
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
