//! One MJPEG viewer, whatever carries its pictures (a multipart HTTP body or a WebSocket): it waits
//! for the newest JPEG of its variant, thins to its fps, and, when it asked for a size, finds the
//! nearest size the encoder makes at or below it from the camera's first full-size frame
//! (`ViewerFrames`); its first frame is the newest one already published when others are
//! receiving that stream and it is fresh, so a new viewer does not wait for the next capture. `mjpeg_body` turns those frames into the multipart body: the part header, the
//! shared JPEG bytes (not copied) and the part end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, Stream};
use prometheus::{Histogram, IntCounter, IntGauge};

use crate::adapt::FeedReader;
use crate::error::ServiceError;
use crate::frame::EncodedFrame;
use crate::http::face::DirectWriter;
use crate::metrics::{DropReason, NodeMetrics};
use crate::mjpeg;
use crate::pacing::RateLimiter;
use crate::port::{JpegFeed, JpegVariant, SCALES};

#[derive(Clone)]
pub(super) struct ViewerMetrics {
    pub sent: IntCounter,
    pub bytes: IntCounter,
    pub dropped_behind: IntCounter,
    pub dropped_rate_limit: IntCounter,
    pub latency: Histogram,
    pub viewers: IntGauge,
}

impl ViewerMetrics {
    pub fn new(m: &NodeMetrics) -> Self {
        Self {
            sent: m.frames_sent(),
            bytes: m.bytes_sent(),
            dropped_behind: m.frames_dropped(DropReason::Behind),
            dropped_rate_limit: m.frames_dropped(DropReason::RateLimit),
            latency: m.latency_seconds(),
            viewers: m.viewers("mjpeg"),
        }
    }
}

/// Counts a viewer while its response lives.
pub(super) struct ViewerGuard {
    count: Arc<AtomicUsize>,
    gauge: IntGauge,
}

impl ViewerGuard {
    pub fn new(count: Arc<AtomicUsize>, gauge: IntGauge) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        Self { count, gauge }
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// The smallest scale (so the largest picture) whose size fits in `max_w` x `max_h`; the smallest
/// picture the encoder makes when none fits.
pub fn fitting_scale(width: u32, height: u32, max_w: u32, max_h: u32) -> u8 {
    SCALES
        .into_iter()
        .find(|s| width / u32::from(*s) <= max_w && height / u32::from(*s) <= max_h)
        .unwrap_or(SCALES[SCALES.len() - 1])
}

/// What a viewer asks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wanted {
    /// JPEG quality; `None`: the encoder's (or the ladder's) choice.
    pub quality: Option<u8>,
    /// Frames per second; `None`: every frame.
    pub fps: Option<f64>,
    /// Largest width and height; `None`: the camera's size.
    pub size: Option<(u32, u32)>,
}

/// One viewer's frames. The caller sends them and then calls `sent`.
pub struct ViewerFrames {
    feed: Weak<JpegFeed>,
    frames: FeedReader<JpegVariant>,
    /// The variant asked for when it is fixed; its scale is the size given.
    variant: Option<JpegVariant>,
    /// The size asked for, until the first full-size frame has told the camera's size.
    resolve: Option<(u32, u32)>,
    limiter: Option<RateLimiter>,
    /// Whether the next frame may be the subscription's newest one, already published: true for
    /// a new subscription, so a viewer does not wait for the next capture to see a picture. Only
    /// while others receive the variant (frames are flowing) and the frame is fresh: the last frame
    /// of an idle encoder or a stopped camera is not passed off as the newest.
    take_latest: bool,
    metrics: ViewerMetrics,
    _guard: ViewerGuard,
}

impl ViewerFrames {
    pub(super) fn open(
        feed: Arc<JpegFeed>,
        wanted: Wanted,
        guard: ViewerGuard,
        metrics: ViewerMetrics,
    ) -> Result<Self, ServiceError> {
        // A size fixes the variant (no ladder): the quality asked, else the feed's default one.
        let variant = match (wanted.quality, wanted.size) {
            (Some(q), _) => Some(JpegVariant::full(q)),
            (None, Some(_)) => Some(feed.default_variant().unwrap_or(JpegVariant::full(80))),
            (None, None) => None,
        };
        Ok(Self {
            frames: FeedReader::open(feed.clone(), variant)?,
            feed: Arc::downgrade(&feed),
            variant,
            resolve: wanted.size,
            limiter: wanted.fps.map(RateLimiter::new),
            take_latest: true,
            metrics,
            _guard: guard,
        })
    }

    /// The scale of the frames given, when the viewer's variant is fixed.
    pub fn scale(&self) -> Option<u8> {
        self.variant.map(|v| v.scale)
    }

    /// The next frame for this viewer; `None` once the feed is gone.
    pub async fn next(&mut self) -> Option<Arc<EncodedFrame>> {
        loop {
            let latest = std::mem::take(&mut self.take_latest)
                .then(|| self.frames.latest_if_flowing())
                .flatten()
                .filter(|f| super::is_fresh(f));
            let (frame, skipped) = match latest {
                Some(frame) => (frame, 0),
                None => self.frames.next().await?,
            };
            if let (Some((max_w, max_h)), Some(variant)) = (self.resolve.take(), self.variant) {
                let scale = fitting_scale(frame.width, frame.height, max_w, max_h);
                if scale != variant.scale {
                    let smaller = JpegVariant { scale, ..variant };
                    match FeedReader::open(self.feed.upgrade()?, Some(smaller)) {
                        Ok(frames) => {
                            self.frames = frames;
                            self.variant = Some(smaller);
                            self.take_latest = true;
                            continue;
                        }
                        // No room for one more variant: the full size, and the header says so.
                        Err(e) => tracing::warn!("viewer stays at full size: {e}"),
                    }
                }
            }
            if skipped > 0 {
                self.metrics.dropped_behind.inc_by(skipped);
            }
            if let Some(limiter) = &mut self.limiter {
                if !limiter.admit(frame.captured_at) {
                    self.metrics.dropped_rate_limit.inc();
                    continue;
                }
            }
            return Some(frame);
        }
    }

    /// The viewer's counters, for whoever writes its frames.
    pub(super) fn metrics(&self) -> ViewerMetrics {
        self.metrics.clone()
    }

    /// Where the viewer is in its variant's stream: `seen` is the position of the last frame
    /// `next` gave.
    pub(super) fn reader(&self) -> &FeedReader<JpegVariant> {
        &self.frames
    }

    /// The feed, when this viewer takes every frame of its default stream as it is (no fps,
    /// size or quality of its own, no ladder to move along): then any such viewer of the feed
    /// gets the same parts, and one pass can write them all (`pass`).
    pub(super) fn shared_stream(&self) -> Option<Arc<JpegFeed>> {
        let own = self.limiter.is_some() || self.variant.is_some() || self.resolve.is_some();
        (!own && !self.frames.adapts())
            .then(|| self.feed.upgrade())
            .flatten()
    }
}

impl ViewerMetrics {
    /// `frame` went to the viewer: as `sent` if `fresh`, else (the keepalive's repeat of the
    /// last frame) only its bytes.
    pub fn count(&self, frame: &EncodedFrame, fresh: bool) {
        if fresh {
            self.sent(frame);
        } else {
            self.bytes.inc_by(frame.data.len() as u64);
        }
    }

    /// `frame` went to the viewer: counted as sent, with its latency since capture.
    pub fn sent(&self, frame: &EncodedFrame) {
        self.sent.inc();
        self.bytes.inc_by(frame.data.len() as u64);
        let age = SystemTime::now()
            .duration_since(frame.captured_at)
            .unwrap_or_default();
        self.latency.observe(age.as_secs_f64());
    }
}

/// What a viewer's stream sends, whoever writes it (actix's body or a `DirectWriter`): which
/// frame next, and the bytes of its part.
struct Parts {
    frames: ViewerFrames,
    form: mjpeg::Form,
    /// A frame taken already (to name the size in the response headers), sent first.
    first: Option<Arc<EncodedFrame>>,
    /// The last frame sent, repeated when no new one comes for `KEEPALIVE`.
    last: Option<Arc<EncodedFrame>>,
    /// Where each part's headers are written. The server copies a chunk into the connection's
    /// buffer (or the socket takes it) before the next part is made, so the next `split` reuses
    /// this memory: no allocation per part.
    scratch: BytesMut,
}

/// One part's pieces, in order: headers or the start of the JPEG, the JPEG (shared, never
/// copied), the end. At most 4.
#[derive(Clone)]
pub(super) struct Part {
    pieces: [Bytes; 4],
    len: usize,
}

impl Part {
    fn of(pieces: &[Bytes]) -> Part {
        let mut part = Part {
            pieces: Default::default(),
            len: pieces.len(),
        };
        part.pieces[..pieces.len()].clone_from_slice(pieces);
        part
    }

    fn pieces(&self) -> &[Bytes] {
        &self.pieces[..self.len]
    }

    /// The pieces as slices, for a `DirectWriter`.
    pub(super) fn slices(&self) -> ([&[u8]; 4], usize) {
        let mut slices: [&[u8]; 4] = [&[]; 4];
        for (slice, piece) in slices.iter_mut().zip(self.pieces()) {
            *slice = piece;
        }
        (slices, self.len)
    }
}

/// Room for one part's headers or timestamp segment (about 110 bytes).
pub(super) const HEAD_ROOM: usize = 256;

/// How long a viewer may go without a part before the last one is sent again.
pub(super) const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(2);

impl Parts {
    fn new(frames: ViewerFrames, first: Option<Arc<EncodedFrame>>, form: mjpeg::Form) -> Parts {
        Parts {
            frames,
            form,
            first,
            last: None,
            scratch: BytesMut::with_capacity(HEAD_ROOM),
        }
    }

    /// What a stream in this form starts with, before its first part.
    fn preamble(&self) -> Option<Bytes> {
        (self.form == mjpeg::Form::Advance).then(|| Bytes::from_static(mjpeg::ADVANCE_HEADER))
    }

    /// The next part: the next frame's, or the last one again when none came for `KEEPALIVE`
    /// (capture stopped, camera idle), so that the connection is written to and a viewer that
    /// left is noticed. `None` when the stream ends.
    async fn next(&mut self) -> Option<Part> {
        let frame = match self.first.take() {
            Some(first) => first,
            None => loop {
                match tokio::time::timeout(KEEPALIVE, self.frames.next()).await {
                    Ok(next) => break next?,
                    Err(_) => {
                        let Some(last) = self.last.clone() else {
                            continue;
                        };
                        self.frames.metrics.bytes.inc_by(last.data.len() as u64);
                        return Some(self.part(&last));
                    }
                }
            },
        };
        self.frames.metrics.sent(&frame);
        self.last = Some(frame.clone());
        Some(self.part(&frame))
    }

    /// `frame`'s part in this stream's form.
    fn part(&mut self, frame: &Arc<EncodedFrame>) -> Part {
        part_of(self.form, frame, &mut self.scratch)
    }
}

/// `frame`'s part in `form`, its headers written in `scratch`.
pub(super) fn part_of(form: mjpeg::Form, frame: &EncodedFrame, scratch: &mut BytesMut) -> Part {
    let data = &frame.data;
    let at = frame.captured_at;
    let end = |form| match form {
        mjpeg::Form::Classic => Bytes::from_static(mjpeg::PART_END),
        mjpeg::Form::Advance => Bytes::from_static(mjpeg::ADVANCE_END),
    };
    match form {
        mjpeg::Form::Classic => {
            let head = from_scratch(scratch, |b| mjpeg::write_part_header(b, data.len(), at));
            Part::of(&[head, data.clone(), end(form)])
        }
        // The headers went out after the previous JPEG; the capture time goes inside this one.
        mjpeg::Form::Advance if data.starts_with(&[0xFF, 0xD8]) => {
            let stamp = from_scratch(scratch, |b| mjpeg::write_timestamp_segment(b, at));
            Part::of(&[data.slice(..2), stamp, data.slice(2..), end(form)])
        }
        mjpeg::Form::Advance => Part::of(&[data.clone(), end(form)]),
    }
}

/// What `write` puts into the viewer's scratch buffer, as a chunk; once the chunk is dropped the
/// next one reuses the same memory.
fn from_scratch(scratch: &mut BytesMut, write: impl FnOnce(&mut BytesMut)) -> Bytes {
    scratch.reserve(HEAD_ROOM);
    write(scratch);
    scratch.split().freeze()
}

/// The multipart body of one viewer in `form`, as actix writes it (each piece copied into the
/// connection's buffer); `first` (already taken from `frames`) goes out first. The advance form
/// starts with its first part's headers at once.
pub(super) fn mjpeg_body(
    frames: ViewerFrames,
    first: Option<Arc<EncodedFrame>>,
    form: mjpeg::Form,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let parts = Parts::new(frames, first, form);
    let pending: VecDeque<Bytes> = parts.preamble().into_iter().collect();
    stream::unfold((parts, pending), |(mut parts, mut pending)| async move {
        if pending.is_empty() {
            pending.extend(parts.next().await?.pieces().iter().cloned());
        }
        let chunk = pending.pop_front()?;
        Some((Ok(chunk), (parts, pending)))
    })
}

/// The same stream written by a `DirectWriter`: each part in one vectored write from the shared
/// JPEG bytes; after the first, by the feed's pass (`pass`) when the viewer takes the feed's
/// default stream as it is. Ends when the stream does or the client goes.
pub(super) async fn write_mjpeg(
    frames: ViewerFrames,
    first: Option<Arc<EncodedFrame>>,
    form: mjpeg::Form,
    writer: DirectWriter,
) {
    let mut parts = Parts::new(frames, first, form);
    if let Some(preamble) = parts.preamble() {
        if writer.send(&[&preamble]).await.is_err() {
            return;
        }
    }
    // The first part is this viewer's own (the newest frame at once), then it joins the pass
    // that writes the feed's frames to every viewer like it.
    let mut joined = false;
    while let Some(part) = parts.next().await {
        let (slices, n) = part.slices();
        if writer.send(&slices[..n]).await.is_err() {
            return;
        }
        if !joined {
            joined = true;
            if let (Some(feed), Some(first)) = (parts.frames.shared_stream(), parts.last.take()) {
                return super::pass::follow(feed, form, writer, parts.frames, first).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_headers_reuse_the_viewers_buffer_once_the_last_is_written() {
        let t = std::time::SystemTime::now();
        let mut scratch = BytesMut::with_capacity(HEAD_ROOM);
        let first = from_scratch(&mut scratch, |b| mjpeg::write_part_header(b, 1000, t));
        let at = first.as_ptr();
        assert!(first.starts_with(b"--frame\r\n"));
        drop(first); // as the server does once it has copied the chunk
        for n in 0..100 {
            let next = from_scratch(&mut scratch, |b| mjpeg::write_part_header(b, n, t));
            assert_eq!(next.as_ptr(), at, "part {n} allocated a new buffer");
        }
        // A chunk still held (not yet written) is never overwritten: the next one goes elsewhere.
        let held = from_scratch(&mut scratch, |b| mjpeg::write_timestamp_segment(b, t));
        let copy = held.to_vec();
        let _other = from_scratch(&mut scratch, |b| mjpeg::write_part_header(b, 7, t));
        assert_eq!(held.to_vec(), copy);
    }

    #[test]
    fn the_nearest_size_at_or_below_or_the_smallest() {
        assert_eq!(fitting_scale(1280, 720, 1920, 1080), 1);
        assert_eq!(fitting_scale(1280, 720, 1280, 720), 1);
        assert_eq!(fitting_scale(1280, 720, 640, 360), 2);
        assert_eq!(fitting_scale(1280, 720, 640, u32::MAX), 2);
        assert_eq!(fitting_scale(1280, 720, 639, 480), 4);
        assert_eq!(
            fitting_scale(1920, 1080, 320, 240),
            4,
            "none fits: the smallest"
        );
    }
}
