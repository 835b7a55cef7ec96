//! `source: rtsp://...`: an IP camera's (or a robot body's) H.264 over RTSP, pulled with the
//! `retina` client and passed through as the camera encoded it: no decode, no encode. Each access
//! unit comes out in Annex B with SPS and PPS in front of every IDR (retina puts them there when
//! the camera sends them only in the SDP's `sprop-parameter-sets`). A camera that streams JPEG
//! (RFC 2435, "MJPEG over RTSP") says so with `codec: mjpeg`: retina puts each picture's JPEG
//! back together (headers and tables from the RTP JPEG header) and the camera gives those JPEGs
//! as `frames`, like an HTTP MJPEG camera (a `jpeg_encoder` passes them on untouched). What a
//! camera gives is decided when the file is checked, before any connection, hence the setting;
//! a stream that offers something else than it says leaves the camera down with an error
//! naming both. RTP comes interleaved on the RTSP connection (`transport: tcp`, the default) or
//! over UDP (`transport: udp`); a user name and password go in the URL or in
//! `username`/`password` (retina answers basic and digest challenges), and are taken out of the
//! URL before it reaches retina or any message.
//!
//! ```yaml
//! gate: { type: camera, source: "rtsp://192.168.1.30/stream1" }              # H.264, passed through
//! dock: { type: camera, source: "rtsp://192.168.1.32/mjpeg", codec: mjpeg }  # JPEG pictures
//! ```
//!
//! retina is async; the camera's capture thread is blocking. The source owns a current-thread
//! tokio runtime and drives retina on the capture thread itself (`block_on` per frame): no extra
//! thread per camera, retina's keepalives are sent while frames are polled, and the capture
//! thread's model (open, blocking `next_frame`, `pause`, reopen with backoff) is unchanged. Like
//! the HTTP source, the session is set up only while someone watches and torn down after. The
//! DESCRIBE made when the source is opened is kept for the first SETUP when frames are wanted at
//! once (a second DESCRIBE right after the first one's connection closed got "503" from
//! gst-rtsp-server, and the camera flapped up and down for seconds); a source opened while nobody
//! watches is paused at once, which closes that connection.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use retina::client::{
    Credentials, Demuxed, Described, PlayOptions, Session, SessionGroup, SessionOptions,
    SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use thiserror::Error;
use url::Url;

use super::kinds::{no_checks, redacted, Open, SourceKind};
use super::{AccessUnit, CameraConfig, Captured, FrameSource, SourceError};
use crate::frame::PixelFormat;
use crate::node::FieldIssue;

/// `source: rtsp://[user:password@]host[:port]/path`: H.264 passed through, or with `codec:
/// mjpeg` JPEG pictures.
pub const KIND: SourceKind = SourceKind {
    name: "RTSP",
    claims: |s| s.starts_with("rtsp://") || s.starts_with("rtsps://"),
    validate: |c, issues| {
        if let Err(e) = Target::of(c) {
            issues.push(FieldIssue::new(e.field(), e.to_string()));
        }
    },
    validate_added: no_checks,
    open: OPEN_H264,
    codecs: &[
        ("h264", OPEN_H264),
        (
            "mjpeg",
            Open::Frames(|c| Ok(Box::new(Rtsp::open(Target::of(c)?, Video::Jpeg)?))),
        ),
    ],
    takes_noise: false,
};

const OPEN_H264: Open = Open::H264(|c| Ok(Box::new(Rtsp::open(Target::of(c)?, Video::H264)?)));

/// What a camera is set to send (`codec:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Video {
    H264,
    Jpeg,
}

impl Video {
    /// The RTP encoding name (RFC 6184, RFC 2435).
    fn encoding(self) -> &'static str {
        match self {
            Video::H264 => "h264",
            Video::Jpeg => "jpeg",
        }
    }

    /// The value of `codec:` that asks for it.
    fn setting(self) -> &'static str {
        match self {
            Video::H264 => "h264",
            Video::Jpeg => "mjpeg",
        }
    }

    fn is(self, stream: &retina::client::Stream) -> bool {
        // RFC 2435 registered JPEG as video; some cameras say image.
        matches!(stream.media(), "video" | "image")
            && stream.encoding_name().eq_ignore_ascii_case(self.encoding())
    }
}

impl std::fmt::Display for Video {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Video::H264 => "H.264",
            Video::Jpeg => "JPEG",
        })
    }
}

/// DESCRIBE, SETUP and PLAY must each be answered within this.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A camera that sends no video for this long while playing is considered gone.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a session's TEARDOWN may take before the source moves on.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// A DESCRIBE this recent is set up rather than asked again.
const DESCRIBED_FRESH: Duration = Duration::from_secs(10);

/// What failed with an RTSP source. `url` never holds credentials.
#[derive(Debug, Error)]
pub enum RtspError {
    #[error("'{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("'transport' must be tcp or udp (got '{0}')")]
    Transport(String),
    #[error("'password' needs 'username'")]
    PasswordAlone,
    #[error("the user name and password are given twice: in the URL and in 'username'/'password'")]
    CredentialsTwice,
    #[error("cannot start the RTSP client: {0}")]
    Runtime(std::io::Error),
    #[error("{url}: no answer to {step} within {} s", .secs)]
    Timeout {
        url: String,
        step: &'static str,
        secs: u64,
    },
    /// `reason` is the first line of retina's error (the rest, a hex dump of what came and the
    /// connection's addresses, goes to the debug log).
    #[error("{url}: {step} failed: {reason}")]
    Rtsp {
        url: String,
        step: &'static str,
        reason: String,
    },
    /// `instead` is what the stream offers that another `codec:` would take, if anything.
    #[error(
        "{url}: the camera is set to {wanted} (codec: {}) but the stream offers {offers}{}",
        .wanted.setting(),
        .instead.map(|v| format!("; for its {v} set 'codec: {}'", v.setting())).unwrap_or_default()
    )]
    Offers {
        url: String,
        wanted: Video,
        offers: String,
        instead: Option<Video>,
    },
    #[error("{url}: a picture is not a JPEG: {source}")]
    NotJpeg {
        url: String,
        source: turbojpeg::Error,
    },
    #[error("{url}: no video for {secs} s")]
    Silent { url: String, secs: u64 },
    #[error("{url}: the camera ended the stream")]
    Ended { url: String },
}

impl RtspError {
    fn retina(url: &str, step: &'static str, e: retina::Error) -> Self {
        let full = e.to_string();
        tracing::debug!(url, step, "RTSP error in full: {full}");
        let first = full.lines().next().unwrap_or_default().trim();
        let reason = first.strip_suffix("; buffered:").unwrap_or(first);
        RtspError::Rtsp {
            url: url.into(),
            step,
            reason: reason.trim_end_matches(':').to_string(),
        }
    }

    /// The camera setting a configuration error is about.
    fn field(&self) -> &'static str {
        match self {
            RtspError::Transport(_) => "transport",
            RtspError::PasswordAlone => "password",
            RtspError::CredentialsTwice => "username",
            _ => "source",
        }
    }
}

/// Where to connect and how: the URL without credentials, the credentials apart.
struct Target {
    url: Url,
    creds: Option<Credentials>,
    transport: Transport,
}

impl Target {
    fn of(c: &CameraConfig) -> Result<Self, RtspError> {
        let source = c.source.trim();
        let bad = |reason: &str| RtspError::BadUrl {
            url: redacted(source),
            reason: reason.into(),
        };
        if source.starts_with("rtsps://") {
            return Err(bad("rtsps (RTSP over TLS) is not supported; use rtsp://"));
        }
        let mut url = Url::parse(source).map_err(|e| bad(&e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("expected rtsp://host[:port]/path"));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let in_url = (!url.username().is_empty()).then(|| Credentials {
            username: decode(url.username()),
            password: url.password().map(decode).unwrap_or_default(),
        });
        // Infallible for a URL with a host, which is checked above.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let in_settings = match (&c.username, &c.password) {
            (Some(username), password) => Some(Credentials {
                username: username.clone(),
                password: password.clone().unwrap_or_default(),
            }),
            (None, Some(_)) => return Err(RtspError::PasswordAlone),
            (None, None) => None,
        };
        let creds = match (in_url, in_settings) {
            (Some(_), Some(_)) => return Err(RtspError::CredentialsTwice),
            (a, b) => a.or(b),
        };
        let transport = match c.transport.as_deref().map(str::trim) {
            None | Some("tcp") => Transport::Tcp(Default::default()),
            Some("udp") => Transport::Udp(Default::default()),
            Some(other) => return Err(RtspError::Transport(other.to_string())),
        };
        Ok(Self {
            url,
            creds,
            transport,
        })
    }

    /// The URL as messages show it (its credentials were taken out).
    fn shown(&self) -> String {
        self.url.to_string()
    }
}

/// An RTSP camera's H.264, on the capture thread.
pub struct Rtsp {
    target: Target,
    video: Video,
    runtime: tokio::runtime::Runtime,
    /// The sessions this source made, so that their TEARDOWN can be waited for.
    group: Arc<SessionGroup>,
    /// The DESCRIBE of `open`, and when it was answered, until it is set up or goes stale.
    described: Option<(Session<Described>, Instant)>,
    playing: Option<Playing>,
}

/// A session that is playing.
struct Playing {
    frames: Demuxed,
    /// The video stream's index among the session's streams.
    stream: usize,
    /// Access units before the first IDR cannot be decoded: they are skipped.
    keyframe_seen: bool,
    size: (u32, u32),
}

impl Rtsp {
    /// Asks the camera once what it offers (DESCRIBE), so that a wrong URL, refused
    /// credentials or a stream without `video` are reported at start. The session is kept for
    /// the first SETUP; if nobody watches yet the capture thread pauses the source at once, which
    /// closes it until frames are wanted.
    fn open(target: Target, video: Video) -> Result<Self, RtspError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(RtspError::Runtime)?;
        let mut source = Self {
            target,
            video,
            runtime,
            group: Arc::new(SessionGroup::default()),
            described: None,
            playing: None,
        };
        let described = source.runtime.block_on(async {
            let described = source.describe().await?;
            video_stream(&described, video, &source.target.shown()).map(|_| described)
        })?;
        source.described = Some((described, Instant::now()));
        Ok(source)
    }

    fn options(&self) -> SessionOptions {
        SessionOptions::default()
            .creds(self.target.creds.clone())
            .session_group(self.group.clone())
            .user_agent(format!("camgraph/{}", env!("CARGO_PKG_VERSION")))
    }

    async fn describe(&self) -> Result<Session<Described>, RtspError> {
        let url = self.target.shown();
        answered(
            &url,
            "DESCRIBE",
            Session::describe(self.target.url.clone(), self.options()),
        )
        .await
    }

    async fn play(&self, described: Option<Session<Described>>) -> Result<Playing, RtspError> {
        let url = self.target.shown();
        let mut session = match described {
            Some(session) => session,
            None => self.describe().await?,
        };
        let stream = video_stream(&session, self.video, &url)?;
        let setup = SetupOptions::default()
            .transport(self.target.transport.clone())
            .frame_format(FrameFormat::SIMPLE);
        answered(&url, "SETUP", session.setup(stream, setup)).await?;
        let size = video_size(&session, stream);
        let playing = answered(&url, "PLAY", session.play(PlayOptions::default())).await?;
        let frames = playing
            .demuxed()
            .map_err(|e| RtspError::retina(&url, "PLAY", e))?;
        tracing::info!(%url, transport = %self.target.transport, "RTSP session playing");
        Ok(Playing {
            frames,
            stream,
            keyframe_seen: false,
            size,
        })
    }

    /// Ends the session, waiting a little for its TEARDOWN (sent by a task retina spawns when a
    /// session is dropped, which runs only while this runtime is driven).
    fn stop_playing(&mut self) {
        let _entered = self.runtime.enter();
        self.described = None;
        let Some(playing) = self.playing.take() else {
            return;
        };
        drop(playing);
        let group = self.group.clone();
        let _ = self.runtime.block_on(async move {
            tokio::time::timeout(TEARDOWN_TIMEOUT, group.await_teardown()).await
        });
    }

    /// The next picture of the stream, if the next item is one that can be decoded.
    async fn next_picture(
        playing: &mut Playing,
        url: &str,
    ) -> Result<Option<AccessUnit>, RtspError> {
        let item = match tokio::time::timeout(FRAME_TIMEOUT, playing.frames.next()).await {
            Err(_) => {
                return Err(RtspError::Silent {
                    url: url.into(),
                    secs: FRAME_TIMEOUT.as_secs(),
                })
            }
            Ok(None) => return Err(RtspError::Ended { url: url.into() }),
            Ok(Some(Err(e))) => return Err(RtspError::retina(url, "receiving", e)),
            Ok(Some(Ok(item))) => item,
        };
        let CodecItem::VideoFrame(frame) = item else {
            return Ok(None); // RTCP, or another stream's media
        };
        if frame.stream_id() != playing.stream {
            return Ok(None);
        }
        if frame.has_new_parameters() || playing.size == (0, 0) {
            playing.size = video_size(&playing.frames, playing.stream);
        }
        let keyframe = frame.is_random_access_point();
        playing.keyframe_seen |= keyframe;
        if !playing.keyframe_seen {
            return Ok(None);
        }
        let (width, height) = playing.size;
        Ok(Some(AccessUnit {
            captured_at: SystemTime::now(),
            width,
            height,
            keyframe,
            data: Bytes::from(frame.into_data()),
        }))
    }
}

/// What both a described and a playing session tell: their streams.
trait Streams {
    fn streams(&self) -> &[retina::client::Stream];
}

impl Streams for Session<Described> {
    fn streams(&self) -> &[retina::client::Stream] {
        Session::streams(self)
    }
}

impl Streams for Demuxed {
    fn streams(&self) -> &[retina::client::Stream] {
        Demuxed::streams(self)
    }
}

/// The index of the first stream of `video`, or what the camera offers instead.
fn video_stream(session: &impl Streams, video: Video, url: &str) -> Result<usize, RtspError> {
    let streams = session.streams();
    streams
        .iter()
        .position(|s| video.is(s))
        .ok_or_else(|| RtspError::Offers {
            url: url.into(),
            wanted: video,
            instead: [Video::H264, Video::Jpeg]
                .into_iter()
                .find(|v| streams.iter().any(|s| v.is(s))),
            offers: if streams.is_empty() {
                "nothing".into()
            } else {
                streams
                    .iter()
                    .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// The stream's picture size, when its parameters are known (0x0 until then).
fn video_size(session: &impl Streams, stream: usize) -> (u32, u32) {
    match session.streams().get(stream).and_then(|s| s.parameters()) {
        Some(ParametersRef::Video(v)) => v.pixel_dimensions(),
        _ => (0, 0),
    }
}

/// Waits for one RTSP step, within `ANSWER_TIMEOUT`.
async fn answered<T>(
    url: &str,
    step: &'static str,
    request: impl std::future::Future<Output = Result<T, retina::Error>>,
) -> Result<T, RtspError> {
    match tokio::time::timeout(ANSWER_TIMEOUT, request).await {
        Err(_) => Err(RtspError::Timeout {
            url: url.into(),
            step,
            secs: ANSWER_TIMEOUT.as_secs(),
        }),
        Ok(Err(e)) => Err(RtspError::retina(url, step, e)),
        Ok(Ok(v)) => Ok(v),
    }
}

impl Rtsp {
    /// The next picture, playing the session first if it is not (the same for both codecs: a
    /// JPEG picture is an `AccessUnit` that is always a keyframe). Ends the session on error.
    fn next_picture_playing(&mut self) -> Result<AccessUnit, RtspError> {
        let url = self.target.shown();
        if self.playing.is_none() {
            let described = self
                .described
                .take()
                .filter(|(_, at)| at.elapsed() < DESCRIBED_FRESH)
                .map(|(session, _)| session);
            let playing = self.runtime.block_on(self.play(described));
            self.playing = Some(playing?);
        }
        let result = {
            let Some(playing) = self.playing.as_mut() else {
                unreachable!("set above")
            };
            self.runtime.block_on(async {
                loop {
                    if let Some(unit) = Self::next_picture(playing, &url).await? {
                        return Ok(unit);
                    }
                }
            })
        };
        if result.is_err() {
            self.stop_playing();
        }
        result
    }
}

impl FrameSource<AccessUnit> for Rtsp {
    fn next_frame(&mut self, _seq: u64) -> Result<AccessUnit, SourceError> {
        Ok(self.next_picture_playing()?)
    }

    fn pause(&mut self) {
        self.stop_playing();
    }
}

/// `codec: mjpeg`: the camera's JPEG pictures, at the size their header says.
impl FrameSource<Captured> for Rtsp {
    fn next_frame(&mut self, _seq: u64) -> Result<Captured, SourceError> {
        let picture = self.next_picture_playing()?;
        let header =
            turbojpeg::read_header(&picture.data).map_err(|source| RtspError::NotJpeg {
                url: self.target.shown(),
                source,
            })?;
        Ok(Captured {
            captured_at: picture.captured_at,
            width: header.width as u32,
            height: header.height as u32,
            format: PixelFormat::Jpeg,
            data: picture.data,
        })
    }

    fn pause(&mut self) {
        self.stop_playing();
    }
}

impl Drop for Rtsp {
    fn drop(&mut self) {
        self.stop_playing();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(source: &str) -> CameraConfig {
        serde_yaml::from_str(&format!("source: '{source}'")).unwrap()
    }

    #[test]
    fn credentials_leave_the_url_and_never_show() {
        let t = Target::of(&camera("rtsp://admin:p%40ss@10.0.0.5:8554/live")).unwrap();
        assert_eq!(t.shown(), "rtsp://10.0.0.5:8554/live");
        let creds = t.creds.unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("admin", "p@ss")
        );

        let mut c = camera("rtsp://cam/1");
        c.username = Some("u".into());
        c.password = Some("secret".into());
        assert_eq!(Target::of(&c).unwrap().creds.unwrap().password, "secret");

        let mut twice = camera("rtsp://u:secret@cam/1");
        twice.username = Some("u".into());
        let err = Target::of(&twice).err().unwrap();
        assert_eq!(err.field(), "username");
        assert!(!err.to_string().contains("secret"), "{err}");
        let mut alone = camera("rtsp://cam/1");
        alone.password = Some("secret".into());
        let err = Target::of(&alone).err().unwrap();
        assert_eq!(
            (err.field(), err.to_string().as_str()),
            ("password", "'password' needs 'username'")
        );
    }

    #[test]
    fn every_setting_problem_names_its_field() {
        let mut c = camera("rtsp://cam/1");
        c.transport = Some("quic".into());
        let err = Target::of(&c).err().unwrap();
        assert_eq!(
            (err.field(), err.to_string().as_str()),
            ("transport", "'transport' must be tcp or udp (got 'quic')")
        );
        c.transport = Some("udp".into());
        assert!(matches!(
            Target::of(&c).unwrap().transport,
            Transport::Udp(_)
        ));
        for (source, says) in [
            ("rtsps://cam/1", "rtsps (RTSP over TLS) is not supported"),
            ("rtsp://", "expected rtsp://host[:port]/path"),
            ("rtsp://u:secret@:554/x", "secret"),
        ] {
            let Err(err) = Target::of(&camera(source)) else {
                panic!("{source} accepted");
            };
            let text = err.to_string();
            assert_eq!(err.field(), "source");
            if says == "secret" {
                assert!(!text.contains("secret"), "{text}");
            } else {
                assert!(text.contains(says), "{source}: {text}");
            }
        }
    }

    #[test]
    fn a_codec_mismatch_names_both_and_the_setting_that_fits() {
        let offers = |wanted, offers: &str, instead| {
            RtspError::Offers {
                url: "rtsp://cam/1".into(),
                wanted,
                offers: offers.into(),
                instead,
            }
            .to_string()
        };
        assert_eq!(
            offers(Video::Jpeg, "video/h264, audio/pcma", Some(Video::H264)),
            "rtsp://cam/1: the camera is set to JPEG (codec: mjpeg) but the stream offers \
             video/h264, audio/pcma; for its H.264 set 'codec: h264'"
        );
        assert_eq!(
            offers(Video::H264, "video/h265", None),
            "rtsp://cam/1: the camera is set to H.264 (codec: h264) but the stream offers video/h265"
        );
    }

    #[test]
    fn a_refused_connection_is_a_clear_error() {
        let port = crate::testing::closed_port();
        let url = format!("rtsp://user:hunter2@127.0.0.1:{port}/cam");
        let err = Rtsp::open(Target::of(&camera(&url)).unwrap(), Video::H264)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!("rtsp://127.0.0.1:{port}/cam: DESCRIBE failed: ")),
            "{err}"
        );
        assert!(err.to_lowercase().contains("refused"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
