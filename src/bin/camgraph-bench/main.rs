//! `camgraph-bench`: measures what camgraph costs, and prints only what it measured on this run.
//! `jpeg` times camgraph's JPEG encode path (`encoders::bench::JpegCompressor` on test-pattern frames) against bare
//! turbojpeg on the same frames. `fanout` starts the real `camgraph` server as a child process on
//! loopback with one 1280x720 30 fps test camera, opens N concurrent MJPEG viewers (one thread
//! each), and reports what every viewer received (unique frames per second, capture-to-arrival
//! latency) and what the server spent (CPU time of one core, from /proc). Build both binaries with
//! `ladder` times each step of the default WebRTC (H.264) ladder through camgraph's own scaling and
//! openh264 session, on grainy 720p test-pattern frames, and reports the bitrate each produces.
//! `idle` starts the server with four test cameras and their usual chains and no viewer, and
//! reports what it costs to do nothing (CPU of one core, wake-ups per second); `first-frame` times
//! opening a stream on an idle camera until its first JPEG arrives.
//! `soak` churns MJPEG viewers, WebSocket signalling sessions and WHEP sessions through the
//! server and reports the file descriptors, threads and memory it holds before and after each.
//! `crowd` puts normal MJPEG viewers beside slow (1 KB/s) and stuck ones and reports what the
//! normal ones still get and the server's memory meanwhile.
//! `janus` feeds Janus with an `rtp_sink` and measures camgraph's and Janus's CPU with 0, 1, 10...
//! aiortc viewers watching through Janus.
//! `rtp-floor` is the least that sending one stream to N WebRTC peers can cost: SRTP and one UDP
//! send per packet per peer, from one thread, nothing else.
//! One module per bench; `common` and `server` hold what several share.
//! `cargo build --release --bins`, then run
//! `target/release/camgraph-bench <jpeg|fanout|ladder|idle|first-frame|soak|crowd|janus|rtp-floor>`.

mod common;
mod crowd;
mod fanout;
mod floor;
mod idle;
#[cfg(feature = "webrtc")]
mod janus;
mod jpeg;
#[cfg(feature = "webrtc")]
mod ladder;
/// Janus and its viewers' network, shared with tests/janus.rs.
#[cfg(feature = "webrtc")]
#[path = "../../../tests/common/media_server.rs"]
mod media_server;
#[cfg(feature = "webrtc")]
mod rtp_floor;
mod server;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks for camgraph: JPEG encode cost and MJPEG fan-out to many viewers. Every figure is
/// measured on this run; goals are printed next to the figures they apply to.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// JPEG encode ms/frame (quality 80, 4:2:0) at 640x480, 1280x720 and 1920x1080: camgraph's
    /// `JpegCompressor` versus bare `turbojpeg::compress` on the same test-pattern frames.
    Jpeg {
        /// Timed encodes per size and per path.
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        /// Untimed encodes per size and per path before timing.
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Distinct frames (different sequence numbers) the encodes cycle through.
        #[arg(long, default_value_t = 8)]
        frames: usize,
    },
    /// MJPEG fan-out: runs the camgraph server as a child process (one 1280x720 30 fps test
    /// camera, JPEG quality 80) and measures N concurrent viewers on 127.0.0.1.
    Fanout {
        /// Viewer counts to measure, one round each.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        viewers: Vec<usize>,
        /// Length of the measured window of each round, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds between the last viewer connecting and the measured window.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// A folder of JPEGs or an .mjpeg file to serve at 30 fps instead of the encoded test
        /// camera: the cost of the fan-out alone.
        #[arg(long)]
        source: Option<PathBuf>,
        /// The camgraph server binary. Default: `camgraph` next to this executable.
        #[arg(long)]
        server: Option<PathBuf>,
        /// Instead of camgraph, measure a bare server that sends the `--source` folder's JPEGs
        /// from memory with one `sendmsg` per viewer per frame: what the kernel alone costs.
        #[arg(long)]
        floor: bool,
    },
    /// The bare server of `fanout --floor` (started by it).
    #[command(hide = true)]
    FloorServer {
        #[arg(long)]
        source: PathBuf,
        #[arg(long)]
        stream_path: String,
    },
    /// The cost of each step of the default H.264 ladder at 1280x720: ms per frame (scaling and
    /// encoding, one thread) and the kbit/s it produces at 30 fps, on test-pattern frames with
    /// grain (noise 12), so the encoder has to spend its bitrate as with a real sensor.
    #[cfg(feature = "webrtc")]
    Ladder {
        /// Timed frames per step.
        #[arg(long, default_value_t = 150)]
        frames: usize,
        /// Untimed frames per step before timing (the first is the IDR).
        #[arg(long, default_value_t = 30)]
        warmup: usize,
    },
    /// Idle cost: runs the camgraph server as a child process with four 1280x720 30 fps test
    /// cameras, each with its usual chains (jpeg_encoder -> mjpeg_sink, h264_encoder ->
    /// webrtc_sink), and no viewer; measures its CPU (% of one core) and wake-ups per second.
    Idle {
        /// Measured windows; the median is the figure.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Length of each window, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds after start before the first window (startup settles).
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// The camgraph server binary. Default: `camgraph` next to this executable.
        #[arg(long)]
        server: Option<PathBuf>,
    },
    /// First-frame delay: on the idle four-camera server of `idle`, the time from opening an MJPEG
    /// stream of an idle camera to receiving its first JPEG (the cameras take turns; each is idle
    /// again before its next turn).
    FirstFrame {
        /// Streams opened; the median is the figure.
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// The camgraph server binary. Default: `camgraph` next to this executable.
        #[arg(long)]
        server: Option<PathBuf>,
    },
    /// Churn and what it leaves: on a server with one 320x240 test camera and its usual chains,
    /// N MJPEG connect/read-one-part/disconnect cycles, N WebSocket signalling sessions opened
    /// and closed, N WHEP offers POSTed and their sessions DELETEd; the server's file descriptors,
    /// threads and RSS before and after each phase.
    Soak {
        /// MJPEG cycles.
        #[arg(long, default_value_t = 5000)]
        mjpeg: usize,
        /// WebSocket sessions.
        #[arg(long, default_value_t = 2000)]
        ws: usize,
        /// WHEP POST + DELETE cycles.
        #[arg(long, default_value_t = 500)]
        whep: usize,
        /// The camgraph server binary. Default: `camgraph` next to this executable.
        #[arg(long)]
        server: Option<PathBuf>,
    },
    /// Normal MJPEG viewers beside slow ones (1 KB/s) and stuck ones (never read) on one 1280x720
    /// 30 fps test camera: what the normal ones get, how often the server cuts the others off,
    /// and the server's memory each second.
    Crowd {
        #[arg(long, default_value_t = 10)]
        normal: usize,
        #[arg(long, default_value_t = 10)]
        slow: usize,
        #[arg(long, default_value_t = 50)]
        stuck: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// The MJPEG sink's `write_timeout_ms`.
        #[arg(long, default_value_t = 10_000)]
        write_timeout_ms: u64,
        /// The camgraph server binary. Default: `camgraph` next to this executable.
        #[arg(long)]
        server: Option<PathBuf>,
    },
    /// A media server's audience: one 1280x720 30 fps test camera -> h264_encoder -> rtp_sink
    /// feeding Janus (Debian's), and N aiortc viewers watching through Janus; camgraph's CPU (% of
    /// one core), Janus's, and the viewers' fps per round. Needs root, janus and aiortc.
    #[cfg(feature = "webrtc")]
    Janus {
        /// Viewer counts to measure, one round each.
        #[arg(long, value_delimiter = ',', default_value = "0,1,5,10")]
        viewers: Vec<usize>,
        /// Length of the measured window of each round, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds between starting the viewers and the measured window.
        #[arg(long, default_value_t = 6)]
        warmup: u64,
        /// The camgraph server binary. Default: `camgraph` next to this executable.
        #[arg(long)]
        server: Option<PathBuf>,
    },
    /// The floor under camgraph's per-peer WebRTC cost: one thread sends a 30 fps stream's RTP
    /// packets to N peers on 127.0.0.1 with SRTP (each peer its own key) and one UDP send per
    /// packet per peer, nothing else; its CPU (% of one core) per round and per extra peer.
    #[cfg(feature = "webrtc")]
    RtpFloor {
        /// Peer counts to measure, one round each.
        #[arg(long, value_delimiter = ',', default_value = "1,10")]
        peers: Vec<usize>,
        /// Length of the measured window of each round, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// RTP packets per second to each peer (default: what the RTSP bench's 1280x720 30 fps
        /// camera sends).
        #[arg(long, default_value_t = 252)]
        packets_per_second: u32,
        /// Bytes of each RTP packet before SRTP (a full H.264 fragment of webrtc-rs's packetizer).
        #[arg(long, default_value_t = 1200)]
        packet_bytes: usize,
        /// AEAD_AES_128_GCM instead of AES_CM_128_HMAC_SHA1_80 (Chromium's pick).
        #[arg(long)]
        gcm: bool,
        /// One UDP GSO send per peer per frame instead of one send per packet.
        #[arg(long)]
        gso: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Jpeg {
            iterations,
            warmup,
            frames,
        } => jpeg::jpeg(iterations.max(1), warmup, frames.max(1)),
        Bench::Fanout {
            viewers,
            seconds,
            warmup,
            source,
            server,
            floor,
        } => fanout::fanout(&viewers, seconds.max(1), warmup, source, server, floor),
        Bench::FloorServer {
            source,
            stream_path,
        } => floor::floor_server(&source, &stream_path),
        #[cfg(feature = "webrtc")]
        Bench::Ladder { frames, warmup } => ladder::ladder(frames.max(1), warmup),
        Bench::Idle {
            rounds,
            seconds,
            warmup,
            server,
        } => idle::idle(rounds.max(1), seconds.max(1), warmup, server),
        Bench::FirstFrame { samples, server } => idle::first_frame(samples.max(1), server),
        Bench::Soak {
            mjpeg,
            ws,
            whep,
            server,
        } => soak::soak(mjpeg, ws, whep, server),
        Bench::Crowd {
            normal,
            slow,
            stuck,
            seconds,
            write_timeout_ms,
            server,
        } => crowd::crowd(
            crowd::Crowd {
                normal,
                slow,
                stuck,
                seconds: seconds.max(1),
                write_timeout_ms,
            },
            server,
        ),
        #[cfg(feature = "webrtc")]
        Bench::Janus {
            viewers,
            seconds,
            warmup,
            server,
        } => janus::janus(&viewers, seconds.max(1), warmup, server),
        #[cfg(feature = "webrtc")]
        Bench::RtpFloor {
            peers,
            seconds,
            packets_per_second,
            packet_bytes,
            gcm,
            gso,
        } => rtp_floor::rtp_floor(
            &peers,
            seconds.max(1),
            &rtp_floor::Stream {
                packets_per_second,
                packet_bytes,
                gcm,
                gso,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camgraph-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
