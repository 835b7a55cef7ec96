//! The `mjpeg_sink` node: serves a camera's JPEGs as `multipart/x-mixed-replace` to any number of
//! viewers (`GET /api/camera/stream/{camera}`), as binary WebSocket messages (`GET
//! /api/camera/ws/{camera}`, one socket per viewer, for pages with many cameras) and as single
//! pictures (`GET /api/camera/snapshot/{camera}`). Viewers share the encoder's output for their
//! quality and size; one that reads slowly skips to the newest frame instead of queueing.
//!
//! ```yaml
//! front_mjpeg: { type: mjpeg_sink, inputs: [front_jpeg], max_viewers: 200, write_timeout_ms: 10000 }
//! ```

pub mod api;
mod pass;
mod viewer;
mod ws;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::{Actor, Context, Handler, ResponseFuture};
use serde::Deserialize;
use serde_json::json;

use crate::error::{BuildError, ServiceError};
use crate::frame::EncodedFrame;
use crate::node::{check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle, Services};
use crate::port::{JpegFeed, PortKind, Ports};
use crate::stop::{stop_on, StopToken, Stopper};
use api::{MjpegStreams, OpenStream, Snapshots, TakeSnapshot};
pub use viewer::{fitting_scale, ViewerFrames, Wanted};

/// Settings of an `mjpeg_sink` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MjpegSinkConfig {
    /// Most viewers at once; one more gets a 503. Default 200.
    #[serde(default = "default_max_viewers")]
    pub max_viewers: usize,
    /// How long a snapshot waits for a frame while capture starts up, in milliseconds. Default 3000.
    #[serde(default = "default_snapshot_timeout_ms")]
    pub snapshot_timeout_ms: u64,
    /// A multipart viewer that cannot take a part for this long (it stopped reading) is cut off
    /// and its slot freed, in milliseconds. Default 10000.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
}

fn default_max_viewers() -> usize {
    200
}
fn default_snapshot_timeout_ms() -> u64 {
    3000
}
fn default_write_timeout_ms() -> u64 {
    10_000
}

/// A snapshot request or a new viewer may get the latest frame at once if it is at most this old.
const FRESH: Duration = Duration::from_millis(500);

/// Whether `frame`, published before a snapshot request or a viewer came, is new enough to answer
/// it (`FRESH`).
fn is_fresh(frame: &EncodedFrame) -> bool {
    SystemTime::now()
        .duration_since(frame.captured_at)
        .unwrap_or_default()
        <= FRESH
}

impl NodeConfig for MjpegSinkConfig {
    const TYPE: &'static str = "mjpeg_sink";

    fn ports(&self) -> Ports {
        Ports::Takes(PortKind::Jpeg, None)
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        check_range(&mut issues, "max_viewers", self.max_viewers, 1..=10_000);
        check_range(
            &mut issues,
            "snapshot_timeout_ms",
            self.snapshot_timeout_ms,
            100..=60_000,
        );
        check_range(
            &mut issues,
            "write_timeout_ms",
            self.write_timeout_ms,
            100..=600_000,
        );
        issues
    }

    fn routes(cfg: &mut actix_web::web::ServiceConfig) {
        api::routes(cfg);
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let stop = Stopper::new();
        let sink = MjpegSink {
            camera: cx.camera.to_string(),
            feed: cx.jpeg_input()?,
            config: self.clone(),
            viewers: Arc::new(AtomicUsize::new(0)),
            metrics: viewer::ViewerMetrics::new(&cx.metrics),
            stop: stop.token(),
        };
        let (viewers, metrics) = (sink.viewers.clone(), sink.metrics.clone());
        let addr = sink.start();
        Ok(NodeHandle {
            output: None,
            services: Services::new()
                .with(MjpegStreams {
                    open: addr.clone().recipient(),
                    write_timeout: Duration::from_millis(self.write_timeout_ms),
                })
                .with(Snapshots(addr.clone().recipient())),
            stats: Some(Box::new(move || {
                json!({
                    "viewers": viewers.load(Ordering::Relaxed),
                    "sent": metrics.sent.get(),
                    "bytes_sent": metrics.bytes.get(),
                    "dropped_behind": metrics.dropped_behind.get(),
                    "dropped_rate_limit": metrics.dropped_rate_limit.get(),
                })
            })),
            stop,
        })
    }
}

struct MjpegSink {
    camera: String,
    feed: Arc<JpegFeed>,
    config: MjpegSinkConfig,
    viewers: Arc<AtomicUsize>,
    metrics: viewer::ViewerMetrics,
    stop: StopToken,
}

impl Actor for MjpegSink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        stop_on(&self.stop, ctx);
    }
}

impl Handler<OpenStream> for MjpegSink {
    type Result = Result<ViewerFrames, ServiceError>;

    fn handle(&mut self, msg: OpenStream, _: &mut Self::Context) -> Self::Result {
        let count = self.viewers.load(Ordering::Relaxed);
        if count >= self.config.max_viewers {
            return Err(ServiceError::Busy(format!(
                "camera '{}' has its maximum of {} viewers",
                self.camera, self.config.max_viewers
            )));
        }
        let guard = viewer::ViewerGuard::new(self.viewers.clone(), self.metrics.viewers.clone());
        ViewerFrames::open(self.feed.clone(), msg.0, guard, self.metrics.clone())
    }
}

impl Handler<TakeSnapshot> for MjpegSink {
    type Result = ResponseFuture<Result<Arc<EncodedFrame>, ServiceError>>;

    fn handle(&mut self, _: TakeSnapshot, _: &mut Self::Context) -> Self::Result {
        let subscribed = self.feed.subscribe(None);
        let camera = self.camera.clone();
        let wait = Duration::from_millis(self.config.snapshot_timeout_ms);
        Box::pin(async move {
            let mut frames = subscribed?;
            if let Some(latest) = frames.latest().filter(|f| is_fresh(f)) {
                return Ok(latest);
            }
            match tokio::time::timeout(wait, frames.next()).await {
                Ok(Some((frame, _))) => Ok(frame),
                _ => Err(ServiceError::Unavailable(format!(
                    "no frame from camera '{camera}' within {} ms (is capture stopped?)",
                    wait.as_millis()
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::StreamExt;

    use super::*;
    use crate::fanout::{Fanout, Subscriber};
    use crate::frame::Codec;
    use crate::port::{Feed, JpegVariant, Port};

    /// A feed that hands out one fan-out point, whatever the quality.
    pub(super) struct OneQuality(pub(super) Fanout<EncodedFrame>);

    impl Feed<JpegVariant> for OneQuality {
        fn subscribe(
            &self,
            _: Option<JpegVariant>,
        ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
            Ok(self.0.subscribe())
        }
    }

    fn jpeg(seq: u64, data: &Bytes) -> Arc<EncodedFrame> {
        Arc::new(EncodedFrame {
            camera: "cam".into(),
            seq,
            captured_at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_042),
            codec: Codec::Jpeg,
            keyframe: true,
            width: 2,
            height: 2,
            data: data.clone(),
            behind: 0,
        })
    }

    fn sink(feed: &Fanout<EncodedFrame>, max_viewers: usize) -> (Services, NodeHandle) {
        let (cx, _) = crate::testing::context(
            "sink",
            "mjpeg_sink",
            Port::Jpeg(Arc::new(OneQuality(feed.clone()))),
        );
        let handle = MjpegSinkConfig {
            max_viewers,
            snapshot_timeout_ms: 300,
            write_timeout_ms: 10_000,
        }
        .build(cx)
        .unwrap();
        (handle.services.clone(), handle)
    }

    /// The sink's stream opener, and one viewer's body in `form`.
    async fn open_body(
        services: &Services,
        form: crate::mjpeg::Form,
    ) -> (actix::Recipient<OpenStream>, api::ByteStream) {
        let MjpegStreams { open: stream, .. } = services.get().expect("mjpeg streams");
        let body = stream
            .send(OpenStream(Wanted::default()))
            .await
            .unwrap()
            .map(|frames| viewer::mjpeg_body(frames, None, form).boxed_local())
            .unwrap();
        (stream, body)
    }

    #[actix_rt::test]
    async fn a_viewer_gets_header_shared_bytes_and_part_end_and_the_limit_holds() {
        let feed = Fanout::new();
        let (services, handle) = sink(&feed, 1);
        let (stream, mut body) = open_body(&services, crate::mjpeg::Form::Classic).await;
        let refused = stream
            .send(OpenStream(Wanted::default()))
            .await
            .unwrap()
            .err();
        assert!(matches!(refused, Some(ServiceError::Busy(_))));

        let data = Bytes::from_static(b"\xff\xd8jpeg\xff\xd9");
        feed.publish(jpeg(1, &data));
        let header = body.next().await.unwrap().unwrap();
        assert_eq!(
            &header[..],
            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 8\r\nX-Timestamp: 1700000000.000042\r\n\r\n"
        );
        let payload = body.next().await.unwrap().unwrap();
        assert_eq!(
            payload.as_ptr(),
            data.as_ptr(),
            "JPEG bytes must be shared, not copied"
        );
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"\r\n");

        // The viewer is gone: room for another.
        drop(body);
        assert!(stream
            .send(OpenStream(Wanted::default()))
            .await
            .unwrap()
            .is_ok());
        handle.stop.fire();
    }

    #[actix_rt::test]
    async fn the_advance_form_sends_headers_first_and_each_jpeg_with_the_next_parts_headers() {
        use crate::mjpeg::{jpeg_timestamp, Form, ADVANCE_END, ADVANCE_HEADER};
        let feed = Fanout::new();
        let (services, handle) = sink(&feed, 1);
        let (_, mut body) = open_body(&services, Form::Advance).await;
        // The first part's headers before any frame exists.
        assert_eq!(&body.next().await.unwrap().unwrap()[..], ADVANCE_HEADER);
        let data = Bytes::from_static(b"\xff\xd8jpeg\xff\xd9");
        feed.publish(jpeg(1, &data));
        let mut chunks = Vec::new();
        for _ in 0..4 {
            chunks.push(body.next().await.unwrap().unwrap());
        }
        assert_eq!(chunks[0].as_ptr(), data.as_ptr(), "shared, not copied");
        assert_eq!(chunks[2].as_ptr(), data[2..].as_ptr(), "shared, not copied");
        assert_eq!(&chunks[3][..], ADVANCE_END);
        let jpeg_sent: Vec<u8> = chunks[..3].concat();
        assert_eq!(
            jpeg_timestamp(&jpeg_sent),
            Some(std::time::UNIX_EPOCH + Duration::new(1_700_000_000, 42_000))
        );
        assert!(jpeg_sent.ends_with(b"jpeg\xff\xd9"));
        handle.stop.fire();
    }

    #[actix_rt::test]
    async fn a_frame_taken_as_a_viewers_first_part_is_not_sent_again() {
        let feed = Fanout::new();
        let (services, handle) = sink(&feed, 10);
        let _other = feed.subscribe(); // someone else watches: frames are flowing
        let (_, mut body) = open_body(&services, crate::mjpeg::Form::Classic).await;
        // Published after the viewer came, before its first part: that part.
        let now = |seq, data: &'static [u8]| {
            let frame = jpeg(seq, &Bytes::from_static(data));
            Arc::new(EncodedFrame {
                captured_at: SystemTime::now(),
                ..(*frame).clone()
            })
        };
        feed.publish(now(2, b"two"));
        let mut chunks = Vec::new();
        for _ in 0..3 {
            chunks.push(body.next().await.unwrap().unwrap()); // headers, JPEG, end
        }
        assert_eq!(chunks[1], &b"two"[..]);
        assert!(
            futures_util::FutureExt::now_or_never(body.next()).is_none(),
            "no part until the next frame"
        );
        feed.publish(now(3, b"three"));
        chunks.clear();
        for _ in 0..3 {
            chunks.push(body.next().await.unwrap().unwrap());
        }
        assert_eq!(chunks[1], &b"three"[..], "not two again");
        handle.stop.fire();
    }

    #[actix_rt::test]
    async fn a_snapshot_waits_for_a_frame_or_says_why_not() {
        let feed = Fanout::new();
        let (services, handle) = sink(&feed, 10);
        let Snapshots(snapshot) = services.get().expect("snapshots");
        let err = snapshot.send(TakeSnapshot).await.unwrap().unwrap_err();
        assert!(
            err.to_string()
                .contains("no frame from camera 'cam' within 300 ms"),
            "{err}"
        );

        let pending = snapshot.send(TakeSnapshot);
        let publisher = feed.clone();
        actix_rt::spawn(async move {
            // Publish once the snapshot has subscribed.
            while !publisher.has_subscribers() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            publisher.publish(jpeg(5, &Bytes::from_static(b"x")));
        });
        assert_eq!(pending.await.unwrap().unwrap().seq, 5);
        handle.stop.fire();
    }
}
