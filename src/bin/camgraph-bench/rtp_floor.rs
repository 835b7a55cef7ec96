//! `rtp-floor`: the least that sending one video stream to N WebRTC peers can cost, to read
//! camgraph's per-peer figures against (BENCHMARKS.md, "Per-peer cost"). One thread sends the
//! same RTP packets to N peers the way any WebRTC server must: for each packet and each peer, SRTP
//! protection with that peer's own key (AES-CM + HMAC-SHA1-80 by default, the profile Chromium
//! picks; the SRTP code webrtc-rs uses) and one UDP send on that peer's socket (`sendmsg` through
//! quinn-udp, as webrtc-rs's driver sends). No ICE, DTLS, interceptors, runtime or channels: the
//! packets go out in bursts of one frame's worth, 30 times a second, at the packet rate and size
//! the RTSP bench's 720p camera produces. With `--gso` each peer's packets of a frame leave in one
//! UDP GSO send instead: the least a sender batching a frame per peer could cost.
//!
//! The peers are UDP sockets on 127.0.0.1, each read by a thread of its own. Only the sending
//! thread's CPU time is counted (its scheduler run time, in ns); on loopback that includes
//! delivering each datagram into the peer's socket, as it does for camgraph with Chromium peers.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};
use rtc::rtp::header::Header;
use rtc::shared::marshal::Marshal;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::common::warn_if_busy;

/// Frames per second of the stream (the packets of one frame leave together).
const FPS: u32 = 30;
/// RTP clock rate of video.
const CLOCK_RATE: u32 = 90_000;
/// The most one UDP send carries (an IP datagram's limit, less the UDP and IP headers).
const MAX_GSO_BYTES: usize = 65_507;

/// What one round sends.
pub(crate) struct Stream {
    /// RTP packets per second to every peer.
    pub packets_per_second: u32,
    /// Bytes of each RTP packet before protection (header included).
    pub packet_bytes: usize,
    /// AEAD_AES_128_GCM instead of AES_CM_128_HMAC_SHA1_80.
    pub gcm: bool,
    /// One GSO send per peer per frame instead of one send per packet.
    pub gso: bool,
}

/// Runs one round per peer count and prints a JSON line for each, then the cost per extra peer
/// between the smallest and the largest count.
pub(crate) fn rtp_floor(peers: &[usize], seconds: u64, stream: &Stream) -> anyhow::Result<()> {
    if !(12..=1400).contains(&stream.packet_bytes) {
        bail!(
            "--packet-bytes {} is outside 12..=1400 (an RTP header is 12 bytes; a datagram must fit a 1500-byte MTU)",
            stream.packet_bytes
        );
    }
    if !(1..=10_000).contains(&stream.packets_per_second) {
        bail!(
            "--packets-per-second {} is outside 1..=10000",
            stream.packets_per_second
        );
    }
    warn_if_busy();
    let mut rounds = Vec::new();
    for &n in peers {
        let round = round(n.max(1), Duration::from_secs(seconds), stream)?;
        println!(
            "{{\"bench\":\"rtp-floor\",\"profile\":\"{}\",\"sends\":\"{}\",\"peers\":{},\"packets_per_s_per_peer\":{:.1},\"packet_bytes\":{},\"cpu_percent\":{:.3},\"us_per_packet\":{:.2},\"received\":{},\"sent\":{}}}",
            if stream.gcm { "aead-aes-128-gcm" } else { "aes-128-cm-hmac-sha1-80" },
            if stream.gso { "gso-per-frame" } else { "per-packet" },
            round.peers,
            round.sent as f64 / round.peers as f64 / round.seconds,
            stream.packet_bytes,
            round.cpu_percent(),
            round.cpu_ns as f64 / 1000.0 / round.sent.max(1) as f64,
            round.received,
            round.sent,
        );
        if round.received < round.sent {
            println!(
                "warning: {} of {} packets did not reach their peer (a receive queue overflowed): the figure above did not pay for delivering them",
                round.sent - round.received,
                round.sent
            );
        }
        rounds.push(round);
    }
    if let (Some(low), Some(high)) = (
        rounds.iter().min_by_key(|r| r.peers),
        rounds.iter().max_by_key(|r| r.peers),
    ) {
        if high.peers > low.peers {
            let per_peer =
                (high.cpu_percent() - low.cpu_percent()) / (high.peers - low.peers) as f64;
            println!(
                "floor per extra peer: {per_peer:.3} % of a core ({} -> {} peers)",
                low.peers, high.peers
            );
        }
    }
    Ok(())
}

struct Round {
    peers: usize,
    seconds: f64,
    cpu_ns: u64,
    sent: u64,
    received: u64,
}

impl Round {
    fn cpu_percent(&self) -> f64 {
        self.cpu_ns as f64 / 1e9 / self.seconds * 100.0
    }
}

/// One peer as the sender sees it: its socket, the peer's address and its SRTP context.
struct Peer {
    socket: UdpSocket,
    state: UdpSocketState,
    to: SocketAddr,
    srtp: Context,
    ssrc: u32,
    sequence: u16,
}

fn round(n: usize, window: Duration, stream: &Stream) -> anyhow::Result<Round> {
    let (receivers, received, stop) = receivers(n)?;
    let crypto = rtc::crypto::default_provider().context("no SRTP crypto provider")?;
    let profile = if stream.gcm {
        ProtectionProfile::AeadAes128Gcm
    } else {
        ProtectionProfile::Aes128CmHmacSha1_80
    };
    let mut peers = Vec::with_capacity(n);
    for (i, receiver) in receivers.iter().enumerate() {
        let socket = UdpSocket::bind("127.0.0.1:0").context("cannot bind a UDP socket")?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        if stream.gso && state.max_gso_segments() < 2 {
            bail!("--gso: this kernel or socket does not take UDP GSO sends");
        }
        // Each peer has its own keys, as after its own DTLS handshake.
        let key: Vec<u8> = (0..profile.key_len()).map(|b| (b + i) as u8).collect();
        let salt: Vec<u8> = (0..profile.salt_len()).map(|b| (b * 7 + i) as u8).collect();
        let srtp = Context::new(&key, &salt, profile, None, None, crypto.crypto())
            .context("cannot make an SRTP context")?;
        peers.push(Peer {
            socket,
            state,
            to: receiver.local_addr()?,
            srtp,
            ssrc: 0x1000 + i as u32,
            sequence: 0,
        });
    }
    // Warm up for a second (caches, the receivers' first wake-ups), then measure.
    let mut sender = Sender::new(stream);
    sender.run(&mut peers, Duration::from_secs(1))?;
    let cpu_before = thread_cpu_ns()?;
    let (sent_before, received_before) = (sender.sent, received.load(Ordering::Relaxed));
    let started = Instant::now();
    sender.run(&mut peers, window)?;
    let cpu_ns = thread_cpu_ns()? - cpu_before;
    let seconds = started.elapsed().as_secs_f64();
    let sent = sender.sent - sent_before;
    // Let the last burst land before counting what arrived.
    thread::sleep(Duration::from_millis(100));
    let received_in_window = received.load(Ordering::Relaxed) - received_before;
    stop.store(true, Ordering::Relaxed);
    Ok(Round {
        peers: n,
        seconds,
        cpu_ns,
        sent,
        received: received_in_window,
    })
}

/// The sending half: the payload every peer gets, marshalling buffers, and the stream's clock.
struct Sender {
    gso: bool,
    payload: Vec<u8>,
    packet: Vec<u8>,
    /// A frame's protected packets for one peer, back to back (`--gso`).
    batch: Vec<u8>,
    /// Packets in each frame of one second (they add up to the packet rate).
    per_frame: Vec<usize>,
    frame: u64,
    sent: u64,
    next: Instant,
}

impl Sender {
    fn new(stream: &Stream) -> Sender {
        let rate = stream.packets_per_second as usize;
        let fps = FPS as usize;
        Sender {
            gso: stream.gso,
            batch: Vec::new(),
            // Not all zeros, so nothing downstream could take a shortcut on it.
            payload: (0..stream.packet_bytes - 12)
                .map(|i| (i * 31 % 251) as u8)
                .collect(),
            packet: vec![0; stream.packet_bytes],
            per_frame: (0..fps)
                .map(|f| (f + 1) * rate / fps - f * rate / fps)
                .collect(),
            frame: 0,
            sent: 0,
            next: Instant::now(),
        }
    }

    /// Sends frames at `FPS` for `how_long`, every packet to every peer.
    fn run(&mut self, peers: &mut [Peer], how_long: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + how_long;
        let frame_time = Duration::from_secs(1) / FPS;
        while Instant::now() < end {
            let count = self.per_frame[(self.frame % FPS as u64) as usize];
            let timestamp = (self.frame * (CLOCK_RATE / FPS) as u64) as u32;
            for peer in peers.iter_mut() {
                self.batch.clear();
                let mut segment = 0;
                for i in 0..count {
                    let header = Header {
                        version: 2,
                        marker: i + 1 == count,
                        payload_type: 102,
                        sequence_number: peer.sequence,
                        timestamp,
                        ssrc: peer.ssrc,
                        ..Header::default()
                    };
                    peer.sequence = peer.sequence.wrapping_add(1);
                    let head = header.marshal_to(&mut self.packet)?;
                    self.packet[head..head + self.payload.len()].copy_from_slice(&self.payload);
                    let protected = peer.srtp.encrypt_rtp_with_header(
                        &self.packet[..head + self.payload.len()],
                        &header,
                    )?;
                    self.sent += 1;
                    if self.gso {
                        segment = segment.max(protected.len());
                        self.batch.extend_from_slice(&protected);
                    } else {
                        peer.send(&protected, None)?;
                    }
                }
                if self.gso && !self.batch.is_empty() {
                    // Every packet of the frame has the same size here, so a send carries as many
                    // as the kernel takes in one: its segment limit, and 64 KiB in all.
                    let most = peer.state.max_gso_segments().min(MAX_GSO_BYTES / segment);
                    for chunk in self.batch.chunks(most.max(1) * segment) {
                        peer.send(chunk, (chunk.len() > segment).then_some(segment))?;
                    }
                }
            }
            self.frame += 1;
            self.next += frame_time;
            if let Some(wait) = self.next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            } else {
                // Behind (a busy machine): start the next frame now rather than bunching up.
                self.next = Instant::now();
            }
        }
        Ok(())
    }
}

impl Peer {
    /// One `sendmsg`: a datagram, or several of `segment` bytes each (GSO).
    fn send(&self, contents: &[u8], segment: Option<usize>) -> anyhow::Result<()> {
        let transmit = Transmit {
            destination: self.to,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        match self
            .state
            .try_send(UdpSockRef::from(&self.socket), &transmit)
        {
            // A full send queue is the peer's loss, not the sender's error (the receive side
            // counts what arrived).
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            other => Ok(other?),
        }
    }
}

/// N sockets on 127.0.0.1, each drained by a thread of its own blocked in `recv` (as a browser's
/// network thread waits on its socket, so each burst wakes it), the count of datagrams they got,
/// and the flag that ends the threads.
fn receivers(n: usize) -> anyhow::Result<(Vec<UdpSocket>, Arc<AtomicU64>, Arc<AtomicBool>)> {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = UdpSocket::bind("127.0.0.1:0").context("cannot bind a UDP socket")?;
        // Wakes now and then so that the thread notices the end of the round.
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let reader = socket.try_clone()?;
        let (received, stop) = (received.clone(), stop.clone());
        thread::Builder::new()
            .name("rtp-floor-peer".into())
            .spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if reader.recv(&mut buf).is_ok() {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })?;
        sockets.push(socket);
    }
    Ok((sockets, received, stop))
}

/// This thread's CPU time so far (user and system, ns): the first field of its schedstat.
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let text = fs::read_to_string("/proc/thread-self/schedstat")
        .context("cannot read /proc/thread-self/schedstat")?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("unexpected /proc/thread-self/schedstat")
}
