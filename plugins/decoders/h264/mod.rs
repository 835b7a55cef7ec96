//! The `h264_decoder` node: turns a camera's own H.264 (an RTSP camera's `h264` output) into
//! pictures (`frames`) for whatever needs pixels: a `jpeg_encoder` for MJPEG viewers and
//! snapshots. It decodes (openh264, on its own thread) only while something downstream is
//! subscribed, and lets go of the camera otherwise, so WebRTC peers of the same camera keep their
//! passthrough and a camera nobody watches as MJPEG costs no decode. Joining the camera mid-GOP,
//! it first decodes the camera's frames since its last keyframe (`Feed::gop_before`) and shows
//! its first picture at once; after a gap (it fell behind) it decodes the frames it skipped from
//! those kept, unseen, and goes on; when they are not kept it waits for the next IDR: decoding
//! P-frames without their reference would give broken pictures (with a camera's long GOP, seconds
//! without a picture for every consumer of the decoding, lower steps of a ladder included). An
//! `adaptive` node over such a camera starts one as its part, for its lower steps; every
//! `h264_decoder` of one camera stream shares one decoding (`SHARED`), so the camera's MJPEG
//! viewers and that ladder cost one decode. Each node has its own output and counts the pictures
//! decoded while something downstream of it wants them (`camgraph_frames_decoded_total`, and
//! `decoding` in its stats): a ladder whose peers all sit on the camera's own step shows no
//! decode even while the camera's MJPEG viewers keep the shared decoding going.
//!
//! ```yaml
//! gate:        { type: camera, source: "rtsp://192.168.1.30/stream1" }
//! gate_decode: { type: h264_decoder, inputs: [gate] }
//! gate_jpeg:   { type: jpeg_encoder, inputs: [gate_decode] }
//! gate_mjpeg:  { type: mjpeg_sink, inputs: [gate_jpeg] }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message,
    SpawnHandle, StreamHandler,
};
use bytes::Bytes;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::json;

use crate::error::BuildError;
use crate::fanout::{watch_demand, Demand, Fanout};
use crate::frame::{EncodedFrame, Frame, PixelFormat};
use crate::metrics::DropReason;
use crate::node::{BuildContext, FieldIssue, NodeConfig, NodeHandle};
use crate::port::{missed, H264Feed, Port, PortKind, Ports};
use crate::stop::{start_on_own_thread, StopToken, Stopper};

/// Settings of an `h264_decoder` node: none besides `inputs`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct H264DecoderConfig {}

impl NodeConfig for H264DecoderConfig {
    const TYPE: &'static str = "h264_decoder";

    fn ports(&self) -> Ports {
        Ports::Takes(PortKind::H264, Some(PortKind::Frames))
    }

    fn validate(&self) -> Vec<FieldIssue> {
        Vec::new()
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let feed = cx.h264_input()?;
        let stop = Stopper::new();
        let (token, decoded) = (stop.token(), cx.metrics.frames_decoded());
        let behind = cx.metrics.frames_dropped(DropReason::Behind);
        let (output, active) = join(feed, cx.camera.clone(), |demand| User {
            token,
            output: Fanout::with_demand(demand),
            decoded: decoded.clone(),
            behind,
        });
        let stats_output = output.clone();
        Ok(NodeHandle {
            output: Some(Port::Frames(output)),
            services: Default::default(),
            stats: Some(Box::new(move || {
                let decoding = active.load(Ordering::Relaxed) && stats_output.has_subscribers();
                json!({ "decoded": decoded.get(), "decoding": decoding })
            })),
            stop,
        })
    }
}

/// The decodings running, one per camera stream: every `h264_decoder` node over the same camera
/// (its `NAME_decode` and an `adaptive` node's part) shares it, so two of them wanting pictures
/// at the same time cost one decode. It decodes while a subscriber of any of its nodes' outputs
/// wants pictures (their outputs count in one `Demand`), runs while one of its nodes does, and
/// stops with the last.
static SHARED: Mutex<Vec<Shared>> = Mutex::new(Vec::new());

struct Shared {
    feed: Weak<H264Feed>,
    /// Subscribers of all its nodes' outputs.
    demand: Demand,
    decoding: Arc<AtomicBool>,
    users: Arc<Mutex<Vec<User>>>,
    actor: Addr<Decoding>,
}

/// A node using a decoding: its stop, its output and its counters.
#[derive(Clone)]
struct User {
    token: StopToken,
    output: Fanout<Frame>,
    decoded: IntCounter,
    behind: IntCounter,
}

impl User {
    /// Something downstream of this node wants pictures now.
    fn wants(&self) -> bool {
        self.output.has_subscribers()
    }
}

/// A new user's stop, for the decoding to watch.
#[derive(Message)]
#[rtype(result = "()")]
struct Watch(StopToken);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Joins the node made by `user` (given the decoding's demand) to the decoding of `feed`, started
/// if there is none: the node's output, and whether the decoding decodes now.
fn join(
    feed: Arc<H264Feed>,
    camera: Arc<str>,
    user: impl FnOnce(Demand) -> User,
) -> (Fanout<Frame>, Arc<AtomicBool>) {
    let mut all = lock(&SHARED);
    all.retain(|s| s.feed.strong_count() > 0 && s.actor.connected());
    let same = |s: &&Shared| s.feed.upgrade().is_some_and(|f| Arc::ptr_eq(&f, &feed));
    if let Some(shared) = all.iter().find(same) {
        let user = user(shared.demand.clone());
        lock(&shared.users).push(user.clone());
        shared.actor.do_send(Watch(user.token));
        return (user.output, shared.decoding.clone());
    }
    let demand = Demand::new();
    let user = user(demand.clone());
    let output = user.output.clone();
    let decoding = Arc::new(AtomicBool::new(false));
    let users = Arc::new(Mutex::new(vec![user]));
    let (its_demand, active, its_users, its_feed) = (
        demand.clone(),
        decoding.clone(),
        users.clone(),
        feed.clone(),
    );
    let actor = start_on_own_thread(move |_| Decoding {
        feed: its_feed,
        input: None,
        decoder: None,
        wait_for_keyframe: true,
        joining: true,
        last_seq: None,
        demand: its_demand,
        camera,
        seq: 0,
        users: its_users,
        leaving: Vec::new(),
        active,
    });
    all.push(Shared {
        feed: Arc::downgrade(&feed),
        demand,
        decoding: decoding.clone(),
        users,
        actor,
    });
    (output, decoding)
}

/// The decoding actor, on its own thread.
struct Decoding {
    feed: Arc<H264Feed>,
    /// The subscription to the camera, while someone downstream wants pictures.
    input: Option<SpawnHandle>,
    /// Made when decoding starts, dropped when it stops (its buffers with it).
    decoder: Option<Decoder>,
    wait_for_keyframe: bool,
    /// Just subscribed: the first frame may start from the camera's frames since its keyframe.
    joining: bool,
    /// The camera's number of the last frame received since it subscribed.
    last_seq: Option<u64>,
    /// Subscribers of all its nodes' outputs.
    demand: Demand,
    camera: Arc<str>,
    seq: u64,
    /// The nodes using it (`SHARED`).
    users: Arc<Mutex<Vec<User>>>,
    /// The last node's stop, held until this actor is dropped: that node has stopped only once
    /// the decoding has let go of the camera.
    leaving: Vec<User>,
    /// Whether it decodes now, for `/api/graph`.
    active: Arc<AtomicBool>,
}

impl Decoding {
    /// Subscribes to the camera (and makes a decoder) or lets both go, as `wanted` says.
    fn follow(&mut self, wanted: bool, ctx: &mut Context<Self>) {
        match (wanted, self.input) {
            (true, None) => match (self.feed.subscribe(None), Decoder::new()) {
                (Ok(frames), Ok(decoder)) => {
                    tracing::debug!(camera = %self.camera, "h264_decoder subscribes to the camera");
                    self.input = Some(ctx.add_stream(frames.into_stream()));
                    self.decoder = Some(decoder);
                    (self.wait_for_keyframe, self.joining) = (true, true);
                    self.last_seq = None;
                }
                (Err(e), _) => {
                    tracing::error!(camera = %self.camera, "h264_decoder cannot subscribe: {e}")
                }
                (_, Err(e)) => {
                    tracing::error!(camera = %self.camera, "openh264 decoder did not start: {e}")
                }
            },
            (false, Some(handle)) => {
                tracing::debug!(camera = %self.camera, "h264_decoder lets go of the camera");
                ctx.cancel_future(handle);
                self.input = None;
                self.decoder = None;
            }
            _ => {}
        }
        self.active.store(self.input.is_some(), Ordering::Relaxed);
    }
}

/// A decoded picture: when the camera captured it, its size and its RGB pixels.
type Picture = (std::time::SystemTime, u32, u32, Vec<u8>);

impl Decoding {
    /// Decodes `frame` unless it follows a gap (then it waits for an IDR); the picture, if the
    /// decoder gives one now and it is `wanted` (else it is only decoded).
    fn decode(&mut self, frame: &EncodedFrame, wanted: bool) -> Option<Picture> {
        if self.wait_for_keyframe && !frame.keyframe {
            return None;
        }
        let decoder = self.decoder.as_mut()?;
        match decoder.decode(&frame.data) {
            Ok(Some(yuv)) => {
                self.wait_for_keyframe = false;
                for user in lock(&self.users).iter().filter(|u| u.wants()) {
                    user.decoded.inc();
                }
                if !wanted {
                    return None;
                }
                let (w, h) = yuv.dimensions();
                let mut rgb = vec![0u8; w * h * 3];
                yuv.write_rgb8(&mut rgb);
                Some((frame.captured_at, w as u32, h as u32, rgb))
            }
            // Nothing to show yet (the decoder holds the picture back).
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(camera = %self.camera, seq = frame.seq, "H.264 decode failed, waiting for the next IDR: {e}");
                self.wait_for_keyframe = true;
                None
            }
        }
    }

    /// Publishes a picture on the outputs of the nodes whose consumers want it.
    fn publish(&mut self, (captured_at, width, height, rgb): Picture) {
        let frame = Arc::new(Frame {
            camera: self.camera.clone(),
            seq: self.seq,
            captured_at,
            width,
            height,
            format: PixelFormat::Rgb24,
            data: Bytes::from(rgb),
        });
        for user in lock(&self.users).iter().filter(|u| u.wants()) {
            user.output.publish(frame.clone());
        }
        self.seq += 1;
    }
}

impl Actor for Decoding {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let tokens: Vec<StopToken> = lock(&self.users).iter().map(|u| u.token.clone()).collect();
        for token in tokens {
            self.watch(token, ctx);
        }
        watch_demand(&self.demand.clone(), ctx, |act, consumers, ctx| {
            act.follow(consumers > 0, ctx)
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.active.store(false, Ordering::Relaxed);
    }
}

impl Decoding {
    /// Lets go of a user when its stop fires; stops with the last (taken off `SHARED` first, so
    /// that no node joins a decoding that is ending).
    fn watch(&mut self, token: StopToken, ctx: &mut Context<Self>) {
        let fired = actix::fut::wrap_future::<_, Self>(token.fired());
        ctx.spawn(fired.map(|(), act, ctx: &mut Context<Self>| {
            let mut all = lock(&SHARED);
            let mut users = lock(&act.users);
            let (left, stay) = users.drain(..).partition(|u| u.token.is_fired());
            *users = stay;
            if users.is_empty() {
                all.retain(|s| !Arc::ptr_eq(&s.users, &act.users));
                drop((all, users));
                // The camera is let go (the subscription is cancelled before the actor stops)
                // before the last node's stop is dropped with the actor.
                act.follow(false, ctx);
                act.leaving = left;
                ctx.stop();
            }
        }));
    }
}

impl Handler<Watch> for Decoding {
    type Result = ();

    fn handle(&mut self, Watch(token): Watch, ctx: &mut Self::Context) {
        self.watch(token, ctx);
    }
}

impl Decoding {
    /// The picture of the camera's `frame`, if it gives one now; `skipped` frames came before it
    /// that this decoding was too busy to take.
    fn receive(&mut self, frame: &EncodedFrame, skipped: u64) -> Option<Picture> {
        if skipped > 0 {
            for user in lock(&self.users).iter().filter(|u| u.wants()) {
                user.behind.inc_by(skipped);
            }
            // The frames it skipped, from the camera's kept ones: decoded unseen, the chain goes
            // on at once instead of at the camera's next IDR.
            let kept = self
                .last_seq
                .and_then(|last| missed(self.feed.since_keyframe(None), last, frame.seq, skipped));
            tracing::debug!(camera = %self.camera, seq = frame.seq, skipped, mended = kept.is_some(), "h264_decoder fell behind");
            match kept {
                Some(frames) => {
                    for earlier in &frames {
                        self.decode(earlier, false);
                    }
                }
                None => self.wait_for_keyframe = true,
            }
        }
        self.last_seq = Some(frame.seq);
        if std::mem::take(&mut self.joining) && !frame.keyframe {
            // Mid-GOP: its references, decoded but not shown (only this frame is new).
            let earlier = self.feed.gop_before(None, frame.seq);
            tracing::debug!(camera = %self.camera, seq = frame.seq, kept = ?earlier.as_ref().map(Vec::len), "h264_decoder joins mid-GOP");
            for earlier in earlier.unwrap_or_default() {
                self.decode(&earlier, false);
            }
        }
        self.decode(frame, true)
    }
}

impl StreamHandler<(Arc<EncodedFrame>, u64)> for Decoding {
    fn handle(&mut self, (frame, skipped): (Arc<EncodedFrame>, u64), _: &mut Self::Context) {
        if let Some(picture) = self.receive(&frame, skipped) {
            self.publish(picture);
        }
    }

    /// The camera's stream ended (it stopped: the graph stops this node too).
    fn finished(&mut self, _: &mut Self::Context) {
        self.input = None;
        self.active.store(false, Ordering::Relaxed);
    }
}

/// `n` access units (is it an IDR, its bytes) of a `width` x `height` grey picture, the first an
/// IDR: a camera's H.264 for tests.
#[cfg(test)]
pub(crate) fn access_units(n: usize, width: usize, height: usize) -> Vec<(bool, Bytes)> {
    use openh264::encoder::Encoder;
    use openh264::formats::{RgbSliceU8, YUVBuffer};
    let mut encoder = Encoder::new().unwrap();
    let rgb = vec![128u8; width * height * 3];
    let mut yuv = YUVBuffer::new(width, height);
    yuv.read_rgb8(RgbSliceU8::new(&rgb, (width, height)));
    (0..n)
        .map(|_| {
            let stream = encoder.encode(&yuv).unwrap();
            let idr = matches!(stream.frame_type(), openh264::encoder::FrameType::IDR);
            (idr, Bytes::from(stream.to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::error::ServiceError;
    use crate::fanout::Subscriber;
    use crate::frame::Codec;
    use crate::port::{Feed, H264Variant};

    /// A camera's H.264 as a feed: one stream, and the frames since its keyframe if it keeps them.
    struct Camera(Fanout<EncodedFrame>, Vec<Arc<EncodedFrame>>);

    impl Feed<H264Variant> for Camera {
        fn subscribe(
            &self,
            _: Option<H264Variant>,
        ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
            Ok(self.0.subscribe())
        }

        fn since_keyframe(&self, _: Option<H264Variant>) -> Vec<Arc<EncodedFrame>> {
            self.1.clone()
        }
    }

    fn encoded(seq: u64, (keyframe, data): &(bool, Bytes)) -> Arc<EncodedFrame> {
        Arc::new(EncodedFrame {
            camera: "cam".into(),
            seq,
            captured_at: SystemTime::now(),
            codec: Codec::H264,
            keyframe: *keyframe,
            width: 64,
            height: 48,
            data: data.clone(),
            behind: 0,
        })
    }

    #[actix_rt::test]
    async fn joining_mid_gop_it_decodes_the_frames_kept_since_the_keyframe_and_shows_one_at_once() {
        let units = access_units(5, 64, 48);
        let camera = Fanout::<EncodedFrame>::new();
        // The camera kept its frames 10 (an IDR) to 13; the decoder joins at 14.
        let kept = (0..4)
            .map(|i| encoded(10 + i, &units[i as usize]))
            .collect();
        let feed: Arc<H264Feed> = Arc::new(Camera(camera.clone(), kept));
        let (cx, _metrics) = crate::testing::context("dec", "h264_decoder", Port::H264(feed));
        let handle = H264DecoderConfig {}.build(cx).unwrap();
        let Some(Port::Frames(out)) = handle.output.clone() else {
            panic!("frames output")
        };
        let stats = || handle.stats.as_ref().unwrap()();
        let mut viewer = out.subscribe();
        crate::testing::wait_for("the decoder to subscribe", || {
            camera.has_subscribers() && stats()["decoding"] == true
        })
        .await;
        camera.publish(encoded(14, &units[4]));
        let next = tokio::time::timeout(std::time::Duration::from_secs(3), viewer.next());
        let (picture, _) = next.await.expect("a picture at once").unwrap();
        assert_eq!((picture.width, picture.height), (64, 48));
        assert_eq!(
            stats()["decoded"],
            5,
            "the 4 kept as references, then the new one"
        );
        assert!(
            viewer.latest().is_some_and(|p| Arc::ptr_eq(&p, &picture)),
            "one shown"
        );
        handle.stop.fire();
    }

    /// Two `h264_decoder` nodes over `camera` (its `NAME_decode` and an adaptive node's part),
    /// each with the metrics it counts in.
    fn two_decoders(
        camera: &Fanout<EncodedFrame>,
    ) -> [(NodeHandle, Arc<crate::metrics::Metrics>); 2] {
        let feed: Arc<H264Feed> = Arc::new(Camera(camera.clone(), Vec::new()));
        ["cam_decode", "cam_adaptive"].map(|id| {
            let (cx, metrics) =
                crate::testing::context(id, "h264_decoder", Port::H264(feed.clone()));
            (H264DecoderConfig {}.build(cx).unwrap(), metrics)
        })
    }

    #[actix_rt::test]
    async fn two_decoders_of_one_camera_share_one_decode_until_the_last_stops() {
        let camera = Fanout::<EncodedFrame>::new();
        let [(first, _m1), (second, _m2)] = two_decoders(&camera);
        let frames = |h: &NodeHandle| match h.output.clone() {
            Some(Port::Frames(out)) => out.subscribe(),
            _ => panic!("frames output"),
        };
        let (mut a, mut b) = (frames(&first), frames(&second));
        let decoded = |h: &NodeHandle| h.stats.as_ref().unwrap()()["decoded"].clone();
        crate::testing::wait_for("the decoding to subscribe", || camera.has_subscribers()).await;
        assert_eq!(
            camera.subscriber_count(),
            1,
            "one subscription to the camera"
        );
        let units = access_units(3, 64, 48);
        for (i, unit) in units.iter().enumerate() {
            camera.publish(encoded(i as u64, unit));
            let (pa, _) = a.next().await.unwrap();
            let (pb, _) = b.next().await.unwrap();
            assert!(Arc::ptr_eq(&pa, &pb), "picture {i}: one decode for both");
        }
        assert_eq!((decoded(&first), decoded(&second)), (json!(3), json!(3)));

        // One node stops: the other's pictures go on.
        first.stop.fire();
        first.stop.stopped().await;
        camera.publish(encoded(3, &access_units(1, 64, 48)[0]));
        let next = tokio::time::timeout(std::time::Duration::from_secs(3), b.next());
        assert!(next.await.expect("still decoding").is_some());

        // The last one stops: it has stopped once the decoding has let go of the camera.
        drop((a, b));
        second.stop.fire();
        second.stop.stopped().await;
        assert!(!camera.has_subscribers(), "stopped, still subscribed");
    }

    /// A node of a shared decoding whose output nobody reads (an `adaptive` node whose peers all
    /// sit on the camera's own step) neither counts the decodes nor shows itself decoding, while
    /// the other node's viewers keep the decoding going.
    #[actix_rt::test]
    async fn a_node_nobody_reads_counts_no_decode_of_a_shared_decoding() {
        let camera = Fanout::<EncodedFrame>::new();
        let [(read, _m1), (unread, _m2)] = two_decoders(&camera);
        let Some(Port::Frames(out)) = read.output.clone() else {
            panic!("frames output")
        };
        let mut viewer = out.subscribe();
        let stats = |h: &NodeHandle| h.stats.as_ref().unwrap()();
        crate::testing::wait_for("the decoding to subscribe", || camera.has_subscribers()).await;
        for (i, unit) in access_units(3, 64, 48).iter().enumerate() {
            camera.publish(encoded(i as u64, unit));
            viewer.next().await.unwrap();
        }
        assert_eq!(stats(&read)["decoded"], 3);
        assert_eq!(stats(&read)["decoding"], true);
        assert_eq!(stats(&unread)["decoded"], 0);
        assert_eq!(stats(&unread)["decoding"], false);
        read.stop.fire();
        unread.stop.fire();
    }

    /// A decoding of `feed`, not started, decoding already, with one node whose output nobody reads.
    fn decoding(feed: Arc<H264Feed>) -> Decoding {
        let (_, metrics) = crate::testing::context("dec", "h264_decoder", Port::H264(feed.clone()));
        let m = metrics.node("cam", "dec", "h264_decoder");
        Decoding {
            feed,
            input: None,
            decoder: Some(Decoder::new().unwrap()),
            wait_for_keyframe: true,
            joining: false,
            last_seq: None,
            demand: Demand::new(),
            camera: "cam".into(),
            seq: 0,
            users: Arc::new(Mutex::new(vec![User {
                token: crate::stop::Stopper::new().token(),
                output: Fanout::new(),
                decoded: m.frames_decoded(),
                behind: m.frames_dropped(DropReason::Behind),
            }])),
            leaving: Vec::new(),
            active: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Falling behind the camera (too busy to take some of its frames) costs the frames skipped,
    /// not the rest of the camera's GOP: they are taken from the camera's kept frames. Before, the
    /// decoding waited for the camera's next IDR (a 10 s GOP in tests/rtsp.rs's adaptive test: a
    /// peer on a lower step saw nothing for seconds, and gave up).
    #[test]
    fn after_falling_behind_it_goes_on_from_the_frames_the_camera_kept() {
        let units = access_units(7, 64, 48);
        let frames: Vec<_> = (0..7).map(|i| encoded(i as u64, &units[i])).collect();
        let kept = Camera(Fanout::new(), frames[..6].to_vec());
        let mut decoding = self::decoding(Arc::new(kept));
        assert!(decoding.receive(&frames[0], 0).is_some(), "the IDR");
        assert!(decoding.receive(&frames[1], 0).is_some());
        // Frames 2 to 4 were published while it was busy.
        let picture = decoding.receive(&frames[5], 3);
        assert!(picture.is_some(), "no picture after 3 frames skipped");
        assert!(decoding.receive(&frames[6], 0).is_some());

        // Frames that are not kept (the camera dropped an oversized GOP): it waits for an IDR
        // rather than decode P-frames without their references.
        let mut decoding = self::decoding(Arc::new(Camera(Fanout::new(), Vec::new())));
        assert!(decoding.receive(&frames[0], 0).is_some());
        assert!(
            decoding.receive(&frames[5], 4).is_none(),
            "a broken picture"
        );
        assert!(decoding.receive(&frames[6], 0).is_none());
    }

    #[actix_rt::test]
    async fn decodes_only_while_someone_wants_pictures_and_starts_at_an_idr() {
        let camera = Fanout::<EncodedFrame>::new();
        let feed: Arc<H264Feed> = Arc::new(Camera(camera.clone(), Vec::new()));
        let (cx, _metrics) = crate::testing::context("dec", "h264_decoder", Port::H264(feed));
        let handle = H264DecoderConfig {}.build(cx).unwrap();
        let Some(Port::Frames(out)) = handle.output.clone() else {
            panic!("frames output")
        };
        let stats = || handle.stats.as_ref().unwrap()();
        assert!(!camera.has_subscribers(), "nobody downstream: no decode");

        let mut viewer = out.subscribe();
        crate::testing::wait_for("the decoder to subscribe", || {
            camera.has_subscribers() && stats()["decoding"] == true
        })
        .await;
        let units = access_units(4, 64, 48);
        assert!(units[0].0 && !units[1].0, "an IDR, then P-frames");
        let publish = |i: usize, unit: &(bool, Bytes)| camera.publish(encoded(i as u64, unit));
        // A P-frame first (joined mid-GOP): skipped, not decoded into a broken picture.
        publish(1, &units[1]);
        for (i, unit) in units.iter().enumerate() {
            publish(i, unit);
            let (picture, _) = viewer.next().await.unwrap();
            assert_eq!((picture.width, picture.height), (64, 48));
            assert_eq!(picture.format, PixelFormat::Rgb24);
            assert_eq!(picture.data.len(), 64 * 48 * 3);
        }
        assert_eq!(stats()["decoded"], 4);

        drop(viewer);
        crate::testing::wait_for("the decoder to let go", || {
            !camera.has_subscribers() && stats()["decoding"] == false
        })
        .await;
        handle.stop.fire();
    }
}
