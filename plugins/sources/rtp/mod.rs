//! `source: rtp://HOST:PORT` or `source: FILE.sdp`: H.264 sent as RTP over UDP (a robot body's
//! multicast stream, a hardware encoder, `ffmpeg -f rtp`), received on HOST:PORT (a local address,
//! or a multicast group, which is joined) and passed through as the sender encoded it: no decode,
//! no encode. An SDP file names the address and port (`c=`, `m=video`), the H.264 payload type
//! (`a=rtpmap:N H264/90000`) and may carry SPS and PPS (`sprop-parameter-sets`); without a file
//! any dynamic payload type (96-127) is taken as H.264. Packets are put together into access units
//! (by RTP time and the marker bit) in Annex B, with SPS and PPS in front of an IDR that came
//! without them (from the SDP, or the last ones the sender sent). A lost packet drops what it
//! belonged to and the source waits for the next IDR, so a decoder never gets a broken picture.
//! Like the other sources the socket is open only while someone watches.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use thiserror::Error;

use super::kinds::{no_checks, Open, SourceKind};
use super::{AccessUnit, CameraConfig, FrameSource, SourceError};
use crate::node::FieldIssue;

/// `source: rtp://HOST:PORT` or `source: FILE.sdp`: H.264 over RTP, passed through.
pub const KIND: SourceKind = SourceKind {
    name: "RTP",
    claims: |s| s.starts_with("rtp://") || s.ends_with(".sdp"),
    validate: |c, issues| {
        if let Some(rest) = c.source.trim().strip_prefix("rtp://") {
            if let Err(e) = listen_address(rest) {
                issues.push(FieldIssue::new("source", e.to_string()));
            }
        }
    },
    validate_added: no_checks,
    open: Open::H264(|c| Ok(Box::new(RtpSource::open(c)?))),
    codecs: &[],
    takes_noise: false,
};

/// A sender that sends nothing for this long is gone.
const SILENCE: Duration = Duration::from_secs(5);
/// The largest SDP file read.
const MAX_SDP_BYTES: u64 = 64 * 1024;
/// The largest access unit put together (several times an 8K IDR).
const MAX_UNIT_BYTES: usize = 16 << 20;

/// What failed with an RTP source.
#[derive(Debug, Error)]
pub enum RtpError {
    #[error(
        "'rtp://{0}': expected rtp://HOST:PORT (a local address or a multicast group, and a port)"
    )]
    Address(String),
    #[error("{path}: {reason}")]
    Sdp { path: String, reason: String },
    #[error("cannot receive on {addr}: {source}")]
    Socket { addr: SocketAddr, source: io::Error },
    #[error("no RTP packet on {addr} for {} s", SILENCE.as_secs())]
    Silent { addr: SocketAddr },
    #[error("an access unit on {addr} grew past {} MiB", MAX_UNIT_BYTES >> 20)]
    TooLarge { addr: SocketAddr },
}

fn listen_address(rest: &str) -> Result<SocketAddr, RtpError> {
    rest.trim_end_matches('/')
        .parse()
        .map_err(|_| RtpError::Address(rest.to_string()))
}

/// Where to listen and what the SDP said.
#[derive(Debug, PartialEq)]
struct Stream {
    addr: SocketAddr,
    /// The H.264 payload type; `None`: any dynamic one.
    payload_type: Option<u8>,
    /// SPS and PPS from `sprop-parameter-sets`, each with its start code.
    parameter_sets: Vec<Bytes>,
}

impl Stream {
    fn of(source: &str) -> Result<Stream, RtpError> {
        let source = source.trim();
        if let Some(rest) = source.strip_prefix("rtp://") {
            return Ok(Stream {
                addr: listen_address(rest)?,
                payload_type: None,
                parameter_sets: Vec::new(),
            });
        }
        let sdp_error = |reason: String| RtpError::Sdp {
            path: source.to_string(),
            reason,
        };
        let file = std::fs::File::open(source).map_err(|e| sdp_error(e.to_string()))?;
        let mut text = String::new();
        io::Read::read_to_string(&mut io::Read::take(file, MAX_SDP_BYTES + 1), &mut text)
            .map_err(|e| sdp_error(e.to_string()))?;
        if text.len() as u64 > MAX_SDP_BYTES {
            return Err(sdp_error(format!(
                "larger than {} KiB: not an SDP file",
                MAX_SDP_BYTES >> 10
            )));
        }
        parse_sdp(&text).map_err(sdp_error)
    }
}

/// The video section of an SDP: its address, port, H.264 payload type and parameter sets.
fn parse_sdp(text: &str) -> Result<Stream, String> {
    let mut session_ip = None;
    let mut video: Option<(u16, Vec<u8>)> = None;
    let mut video_ip = None;
    let mut rtpmap: Vec<(u8, String)> = Vec::new();
    let mut fmtp: Vec<(u8, String)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if video.is_some() {
                break; // the video section ended
            }
            let fields: Vec<&str> = m.split_whitespace().collect();
            if fields.first() == Some(&"video") {
                let port = fields
                    .get(1)
                    .and_then(|p| p.split('/').next()?.parse().ok())
                    .ok_or_else(|| format!("bad port in '{line}'"))?;
                let types = fields.iter().skip(3).filter_map(|t| t.parse().ok());
                video = Some((port, types.collect()));
            }
            continue;
        }
        if let Some(c) = line.strip_prefix("c=") {
            let ip = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse::<IpAddr>().ok())
                .ok_or_else(|| format!("bad connection line '{line}'"))?;
            match video {
                Some(_) => video_ip = Some(ip),
                None => session_ip = Some(ip),
            }
            continue;
        }
        let attribute = |name: &str| -> Option<(u8, String)> {
            let (pt, value) = line.strip_prefix(name)?.split_once(' ')?;
            Some((pt.parse().ok()?, value.trim().to_string()))
        };
        if video.is_some() {
            if let Some(a) = attribute("a=rtpmap:") {
                rtpmap.push(a);
            } else if let Some(a) = attribute("a=fmtp:") {
                fmtp.push(a);
            }
        }
    }
    let (port, types) = video.ok_or("no video section (m=video)")?;
    let h264 = rtpmap
        .iter()
        .find(|(pt, codec)| types.contains(pt) && codec.to_ascii_uppercase().starts_with("H264/"))
        .map(|(pt, _)| *pt)
        .ok_or_else(|| {
            let codecs: Vec<&str> = rtpmap.iter().map(|(_, c)| c.as_str()).collect();
            format!("the video is not H.264 (rtpmap: {})", codecs.join(", "))
        })?;
    let parameter_sets = fmtp
        .iter()
        .filter(|(pt, _)| *pt == h264)
        .flat_map(|(_, params)| params.split(';'))
        .filter_map(|p| p.trim().strip_prefix("sprop-parameter-sets="))
        .flat_map(|sets| sets.split(','))
        .map(|set| {
            base64::engine::general_purpose::STANDARD
                .decode(set.trim())
                .map(|nal| with_start_code(&nal))
                .map_err(|e| format!("bad sprop-parameter-sets '{set}': {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ip = video_ip
        .or(session_ip)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    Ok(Stream {
        addr: SocketAddr::new(ip, port),
        payload_type: Some(h264),
        parameter_sets,
    })
}

fn with_start_code(nal: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(nal.len() + 4);
    b.extend_from_slice(&[0, 0, 0, 1]);
    b.extend_from_slice(nal);
    b.freeze()
}

/// The NAL units of an Annex B buffer (start codes removed).
fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // Back over the start code and the zero of a 4-byte one.
            let mut e = s - 3;
            while e > 0 && data[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain([data.len()])
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &data[s..e])
}

/// The picture size an SPS NAL unit (header included) says.
fn sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let rbsp = h264_reader::rbsp::decode_nal(nal).ok()?;
    let sps = h264_reader::nal::sps::SeqParameterSet::from_bits(h264_reader::rbsp::BitReader::new(
        &rbsp[..],
    ))
    .ok()?;
    sps.pixel_dimensions().ok()
}

/// What an RTP packet (RFC 3550) carries that matters here.
struct RtpPacket<'a> {
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// `None` for anything that is not an RTP version 2 packet with a payload.
    fn parse(b: &'a [u8]) -> Option<RtpPacket<'a>> {
        if b.len() < 12 || b[0] >> 6 != 2 {
            return None;
        }
        let csrcs = usize::from(b[0] & 0x0f);
        let mut start = 12 + 4 * csrcs;
        if b[0] & 0x10 != 0 {
            let words = usize::from(u16::from_be_bytes([*b.get(start + 2)?, *b.get(start + 3)?]));
            start += 4 + 4 * words;
        }
        let mut end = b.len();
        if b[0] & 0x20 != 0 {
            end = end.checked_sub(usize::from(*b.last()?))?;
        }
        Some(RtpPacket {
            marker: b[1] & 0x80 != 0,
            payload_type: b[1] & 0x7f,
            sequence: u16::from_be_bytes([b[2], b[3]]),
            timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            payload: b.get(start..end).filter(|p| !p.is_empty())?,
        })
    }
}

/// Appends the NAL units of an H.264 RTP payload (RFC 6184: single NAL unit, STAP-A, FU-A) to
/// `unit` in Annex B; `false` for a payload it cannot read.
fn depacketize(payload: &[u8], unit: &mut BytesMut) -> bool {
    const START: [u8; 4] = [0, 0, 0, 1];
    match payload[0] & 0x1f {
        1..=23 => {
            unit.extend_from_slice(&START);
            unit.extend_from_slice(payload);
            true
        }
        24 => {
            // STAP-A: 16-bit sizes, each followed by a NAL unit.
            let mut rest = &payload[1..];
            while rest.len() >= 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(nal) = rest.get(2..2 + size) else {
                    return false;
                };
                unit.extend_from_slice(&START);
                unit.extend_from_slice(nal);
                rest = &rest[2 + size..];
            }
            rest.is_empty()
        }
        28 if payload.len() > 2 => {
            // FU-A: the start fragment carries the NAL header's type.
            let fu = payload[1];
            if fu & 0x80 != 0 {
                unit.extend_from_slice(&START);
                unit.extend_from_slice(&[(payload[0] & 0xe0) | (fu & 0x1f)]);
            }
            unit.extend_from_slice(&payload[2..]);
            true
        }
        _ => false,
    }
}

/// RTP packets put together into access units.
#[derive(Default)]
struct Assembler {
    unit: BytesMut,
    timestamp: Option<u32>,
    next_seq: Option<u16>,
    /// A packet was lost: drop everything up to the next IDR.
    broken: bool,
    started: bool,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    size: Option<(u32, u32)>,
}

impl Assembler {
    fn new(parameter_sets: &[Bytes]) -> Assembler {
        let mut a = Assembler::default();
        for set in parameter_sets {
            a.remember(set);
        }
        a
    }

    /// Keeps SPS and PPS (with start code) for IDRs that come without them.
    fn remember(&mut self, nal_with_start: &Bytes) {
        let Some(nal) = nal_units(nal_with_start).next() else {
            return;
        };
        match nal.first().map(|h| h & 0x1f) {
            Some(7) => {
                if let Some(size) = sps_size(nal) {
                    self.size = Some(size);
                }
                self.sps = Some(with_start_code(nal));
            }
            Some(8) => self.pps = Some(with_start_code(nal)),
            _ => {}
        }
    }

    /// Takes one RTP packet; gives an access unit when one is complete.
    fn push(&mut self, packet: &RtpPacket<'_>) -> Result<Option<AccessUnit>, ()> {
        let mut done = None;
        if self.timestamp.is_some_and(|t| t != packet.timestamp) && !self.unit.is_empty() {
            // A new picture began without the marker bit on the last one.
            done = self.finish();
        }
        if self.next_seq.is_some_and(|s| s != packet.sequence) {
            self.broken = true;
        }
        self.next_seq = Some(packet.sequence.wrapping_add(1));
        self.timestamp = Some(packet.timestamp);
        if !depacketize(packet.payload, &mut self.unit) {
            self.broken = true;
        }
        if self.unit.len() > MAX_UNIT_BYTES {
            return Err(());
        }
        if packet.marker {
            if let Some(unit) = self.finish() {
                done = Some(unit);
            }
        }
        Ok(done)
    }

    fn finish(&mut self) -> Option<AccessUnit> {
        let data = self.unit.split().freeze();
        let types: Vec<u8> = nal_units(&data)
            .map(|n| n.first().map_or(0, |h| h & 0x1f))
            .collect();
        for nal in nal_units(&data) {
            if matches!(nal.first().map(|h| h & 0x1f), Some(7 | 8)) {
                self.remember(&with_start_code(nal));
            }
        }
        let keyframe = types.contains(&5);
        if self.broken && !keyframe {
            return None;
        }
        self.broken = false;
        if !keyframe && !self.started {
            return None; // a decoder starts at an IDR
        }
        let mut out = BytesMut::with_capacity(data.len() + 64);
        if keyframe && !types.contains(&7) {
            if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
                out.extend_from_slice(sps);
                out.extend_from_slice(pps);
            }
        }
        out.extend_from_slice(&data);
        let (width, height) = self.size?;
        self.started = true;
        Some(AccessUnit {
            captured_at: SystemTime::now(),
            width,
            height,
            keyframe,
            data: out.freeze(),
        })
    }
}

/// The receiving end; the socket is open while frames are wanted.
struct RtpSource {
    stream: Stream,
    socket: Option<UdpSocket>,
    assembler: Assembler,
}

impl RtpSource {
    fn open(c: &CameraConfig) -> Result<RtpSource, RtpError> {
        let stream = Stream::of(&c.source)?;
        let assembler = Assembler::new(&stream.parameter_sets);
        Ok(RtpSource {
            stream,
            socket: None,
            assembler,
        })
    }

    fn bind(&self) -> Result<UdpSocket, RtpError> {
        let addr = self.stream.addr;
        let error = |source| RtpError::Socket { addr, source };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            None,
        )
        .map_err(error)?;
        socket.set_reuse_address(true).map_err(error)?;
        let _ = socket.set_recv_buffer_size(4 << 20);
        let ip = addr.ip();
        let local = match ip {
            _ if !ip.is_multicast() => addr,
            IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port()),
            IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), addr.port()),
        };
        socket.bind(&local.into()).map_err(error)?;
        match ip {
            IpAddr::V4(group) if group.is_multicast() => socket
                .join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
                .map_err(error)?,
            IpAddr::V6(group) if group.is_multicast() => {
                socket.join_multicast_v6(&group, 0).map_err(error)?
            }
            _ => {}
        }
        let socket = UdpSocket::from(socket);
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(error)?;
        Ok(socket)
    }
}

impl FrameSource<AccessUnit> for RtpSource {
    fn next_frame(&mut self, _seq: u64) -> Result<AccessUnit, SourceError> {
        if self.socket.is_none() {
            self.socket = Some(self.bind()?);
            self.assembler = Assembler::new(&self.stream.parameter_sets);
        }
        let addr = self.stream.addr;
        let mut buf = vec![0u8; 65536];
        let mut heard = Instant::now();
        loop {
            let Some(socket) = &self.socket else {
                unreachable!("bound above")
            };
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if heard.elapsed() >= SILENCE {
                        self.socket = None;
                        return Err(RtpError::Silent { addr }.into());
                    }
                    continue;
                }
                Err(source) => {
                    self.socket = None;
                    return Err(RtpError::Socket { addr, source }.into());
                }
            };
            let Some(packet) = RtpPacket::parse(&buf[..n]) else {
                continue; // not RTP
            };
            let pt = packet.payload_type;
            let wanted = match self.stream.payload_type {
                Some(h264) => pt == h264,
                None => (96..=127).contains(&pt),
            };
            if !wanted {
                continue;
            }
            heard = Instant::now();
            match self.assembler.push(&packet) {
                Ok(Some(unit)) => return Ok(unit),
                Ok(None) => {}
                Err(()) => {
                    self.socket = None;
                    return Err(RtpError::TooLarge { addr }.into());
                }
            }
        }
    }

    fn pause(&mut self) {
        self.socket = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=tool:libavformat\r\nm=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtoCgL/lwEQAAAMABAAAAwDyPFi6gA==,aM4PyA==; profile-level-id=42C01E\r\n";

    #[test]
    fn an_sdp_names_the_address_payload_type_and_parameter_sets() {
        let s = parse_sdp(FFMPEG_SDP).unwrap();
        assert_eq!(s.addr, "127.0.0.1:5004".parse::<SocketAddr>().unwrap());
        assert_eq!(s.payload_type, Some(96));
        assert_eq!(s.parameter_sets.len(), 2);
        assert_eq!(&s.parameter_sets[0][..5], &[0, 0, 0, 1, 0x67], "an SPS");
        assert_eq!(&s.parameter_sets[1][..5], &[0, 0, 0, 1, 0x68], "a PPS");
        let nal = nal_units(&s.parameter_sets[0]).next().unwrap();
        assert_eq!(sps_size(nal), Some((640, 360)));
    }

    #[test]
    fn sdps_without_h264_video_are_refused_clearly() {
        let audio = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\n";
        assert_eq!(parse_sdp(audio).unwrap_err(), "no video section (m=video)");
        let vp8 = "v=0\r\nm=video 5004 RTP/AVP 97\r\na=rtpmap:97 VP8/90000\r\n";
        assert_eq!(
            parse_sdp(vp8).unwrap_err(),
            "the video is not H.264 (rtpmap: VP8/90000)"
        );
        let bad = "m=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 sprop-parameter-sets=@@@\r\n";
        assert!(parse_sdp(bad)
            .unwrap_err()
            .starts_with("bad sprop-parameter-sets"));
        let multicast =
            "c=IN IP4 239.1.2.3/16\r\nm=video 6000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        assert_eq!(
            parse_sdp(multicast).unwrap().addr,
            "239.1.2.3:6000".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn rtp_addresses_are_checked() {
        assert!(listen_address("127.0.0.1:5004").is_ok());
        assert!(listen_address("[::1]:5004/").is_ok());
        for bad in ["", "127.0.0.1", "host:5004", "127.0.0.1:99999"] {
            assert!(listen_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn single_stap_a_and_fu_a_payloads_become_annex_b() {
        let mut unit = BytesMut::new();
        assert!(depacketize(&[0x41, 9, 9], &mut unit));
        // STAP-A with an SPS (3 bytes) and a PPS (2 bytes).
        assert!(depacketize(
            &[0x78, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 3],
            &mut unit
        ));
        // An IDR in three FU-A fragments: start, middle, end.
        assert!(depacketize(&[0x7c, 0x85, 10], &mut unit));
        assert!(depacketize(&[0x7c, 0x05, 11], &mut unit));
        assert!(depacketize(&[0x7c, 0x45, 12], &mut unit));
        let nals: Vec<&[u8]> = nal_units(&unit).collect();
        assert_eq!(
            nals,
            vec![
                &[0x41, 9, 9][..],
                &[0x67, 1, 2],
                &[0x68, 3],
                &[0x65, 10, 11, 12]
            ]
        );
        assert!(
            !depacketize(&[0x78, 0, 9, 1], &mut unit),
            "a STAP-A cut short"
        );
        assert!(RtpPacket::parse(b"not rtp at all").is_none());
    }

    #[test]
    fn start_codes_of_three_and_four_bytes_split_nal_units() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
    }
}
