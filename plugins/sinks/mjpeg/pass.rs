//! One pass per frame for the direct viewers (`http::direct`) of a feed that take its default
//! stream as it is (no fps, size or quality of their own, no ladder): they all get the same
//! bytes, so one task (the pass) writes each frame to all of them in a loop, one non-blocking
//! `sendmsg` each, instead of waking one task per viewer per frame. A viewer whose socket takes
//! only part of a frame is handed the rest: its own task finishes it (and cuts the client after
//! `write_timeout_ms`, as `DirectWriter` does), and the pass skips it meanwhile, counted as
//! dropped behind. The fan-out bench puts the difference at 100 viewers (BENCHMARKS.md).
//!
//! A viewer sends its first part itself (the feed's newest frame, at once) and joins the pass
//! after, on its own worker while the pass runs on another: it may have taken as its first
//! part a frame the pass has yet to write, or a newer one. So each viewer keeps the position
//! of the last frame it had (`State::at`, positions of the feed's stream), and the pass writes
//! it only newer frames; a gap between the two is what it missed, counted as dropped.
//!
//! There is one pass per feed and form, started by its first viewer on that viewer's worker and
//! ended when its last viewer has gone or the feed has.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::BytesMut;
use tokio::sync::Notify;

use super::viewer::{part_of, Part, ViewerFrames, ViewerMetrics, HEAD_ROOM, KEEPALIVE};
use crate::adapt::FeedReader;
use crate::frame::EncodedFrame;
use crate::http::face::DirectWriter;
use crate::mjpeg::Form;
use crate::port::{JpegFeed, JpegVariant};

/// The passes running: a viewer joins the pass of its feed and form, or starts it.
static PASSES: Mutex<Vec<Running>> = Mutex::new(Vec::new());

struct Running {
    feed: Weak<JpegFeed>,
    form: Form,
    viewers: Weak<Viewers>,
}

/// The viewers one pass writes to.
#[derive(Default)]
struct Viewers(Mutex<Vec<Arc<Viewer>>>);

struct Viewer {
    writer: DirectWriter,
    state: Mutex<State>,
    /// Tells the viewer's task that it has a rest to send or is done.
    wake: Notify,
    metrics: ViewerMetrics,
}

struct State {
    /// The position of the newest frame the viewer had (sent, being sent, or counted dropped).
    at: u64,
    /// A frame the socket took only part of: its part, how many bytes went, and whether it is
    /// new (not the keepalive's repeat). The viewer's task sends the rest; the pass skips the
    /// viewer until then.
    rest: Option<(Arc<EncodedFrame>, Part, usize, bool)>,
    /// The client or the feed is gone: the viewer's task ends its body, the pass drops it.
    done: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes the frames of `feed` after `first` (the viewer's own first part, the last that
/// `frames` gave) to this viewer through the feed's pass until the client or the feed goes.
/// `frames` lives as long: it counts the viewer.
pub(super) async fn follow(
    feed: Arc<JpegFeed>,
    form: Form,
    writer: DirectWriter,
    frames: ViewerFrames,
    first: Arc<EncodedFrame>,
) {
    let viewer = Arc::new(Viewer {
        writer,
        state: Mutex::new(State {
            at: frames.reader().seen(),
            rest: None,
            done: false,
        }),
        wake: Notify::new(),
        metrics: frames.metrics(),
    });
    join(feed, form, viewer.clone(), frames.reader(), first);
    // However this task ends (the client went, or actix dropped the body), the pass lets go.
    let _leave = Leave(&viewer);
    loop {
        viewer.wake.notified().await;
        let rest = {
            let state = lock(&viewer.state);
            if state.done {
                return;
            }
            state.rest.clone()
        };
        let Some((frame, part, written, fresh)) = rest else {
            continue;
        };
        let (slices, n) = part.slices();
        if viewer
            .writer
            .send_from(&slices[..n], written)
            .await
            .is_err()
        {
            return;
        }
        viewer.metrics.count(&frame, fresh);
        lock(&viewer.state).rest = None;
    }
}

struct Leave<'a>(&'a Viewer);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).done = true;
    }
}

/// Adds `viewer` to the pass of `feed` in `form`, starting the pass if there is none: one that
/// reads on from where `frames` (the viewer's, whose last frame was `first`) is, so that a
/// frame published while the viewer sent `first` is the pass's first.
fn join(
    feed: Arc<JpegFeed>,
    form: Form,
    viewer: Arc<Viewer>,
    frames: &FeedReader<JpegVariant>,
    first: Arc<EncodedFrame>,
) {
    let mut passes = lock(&PASSES);
    passes.retain(|p| p.viewers.strong_count() > 0 && p.feed.strong_count() > 0);
    let running = passes
        .iter()
        .find(|p| p.form == form && p.feed.upgrade().is_some_and(|f| Arc::ptr_eq(&f, &feed)));
    if let Some(viewers) = running.and_then(|p| p.viewers.upgrade()) {
        lock(&viewers.0).push(viewer);
        return;
    }
    let viewers = Arc::new(Viewers(Mutex::new(vec![viewer])));
    passes.push(Running {
        feed: Arc::downgrade(&feed),
        form,
        viewers: Arc::downgrade(&viewers),
    });
    actix_rt::spawn(run(frames.fork(), form, viewers, (first, frames.seen())));
}

/// The pass: each frame (or the last one again after `KEEPALIVE` without one) to every viewer.
/// `last`: the frame its first viewer had last and its position.
async fn run(
    mut frames: FeedReader<JpegVariant>,
    form: Form,
    viewers: Arc<Viewers>,
    mut last: (Arc<EncodedFrame>, u64),
) {
    let mut scratch = BytesMut::with_capacity(HEAD_ROOM);
    loop {
        // Frames the pass itself missed need no count here: each viewer counts its own gap.
        let (frame, at, fresh) = match tokio::time::timeout(KEEPALIVE, frames.next()).await {
            Ok(Some((frame, _))) => (frame, frames.seen(), true),
            Ok(None) => break,
            // The last frame again, so that the connections are written to and a viewer that
            // left is noticed while the camera is stopped.
            Err(_) => (last.0.clone(), last.1, false),
        };
        let part = part_of(form, &frame, &mut scratch);
        let (slices, n) = part.slices();
        let list = lock(&viewers.0).clone();
        for viewer in &list {
            viewer.offer(&frame, at, fresh, &part, &slices[..n]);
        }
        drop(list);
        last = (frame, at);
        // Let go of the viewers that are done; the last one gone ends the pass (under the lock
        // of the list of passes, so that no viewer joins it meanwhile).
        let mut passes = lock(&PASSES);
        let mut list = lock(&viewers.0);
        list.retain(|v| !lock(&v.state).done);
        if list.is_empty() {
            retire(&mut passes, &viewers);
            return;
        }
    }
    retire(&mut lock(&PASSES), &viewers);
    end(&viewers);
}

/// Takes the pass of `viewers` off the list, so that no viewer joins it once it ends.
fn retire(passes: &mut Vec<Running>, viewers: &Arc<Viewers>) {
    let this = Arc::downgrade(viewers);
    passes.retain(|p| !p.viewers.ptr_eq(&this));
}

/// The feed is gone (or the pass could not start): every viewer's body ends.
fn end(viewers: &Viewers) {
    for viewer in lock(&viewers.0).drain(..) {
        lock(&viewer.state).done = true;
        viewer.wake.notify_one();
    }
}

impl Viewer {
    /// `frame` (at position `at`) and its part (`slices`), if the viewer is not still busy with
    /// an earlier one: written at once, or the rest handed to the viewer's task. A new frame
    /// (`fresh`) only if the viewer has not had it (as its own first part); the keepalive's
    /// repeat only if it had nothing newer.
    fn offer(
        &self,
        frame: &Arc<EncodedFrame>,
        at: u64,
        fresh: bool,
        part: &Part,
        slices: &[&[u8]],
    ) {
        let mut state = lock(&self.state);
        if state.done || at < state.at || (fresh && at == state.at) {
            return;
        }
        // New to this viewer (even as a repeat, had it joined after the pass wrote the frame).
        let new = at > state.at;
        if new {
            // The frames between its last and this one never reached it; nor does this one
            // while it is busy with its last.
            let behind = at - state.at - 1 + u64::from(state.rest.is_some());
            if behind > 0 {
                self.metrics.dropped_behind.inc_by(behind);
            }
            state.at = at;
        }
        if state.rest.is_some() {
            return;
        }
        match self.writer.try_send(slices) {
            Ok(None) => self.metrics.count(frame, new),
            Ok(Some(written)) => {
                state.rest = Some((frame.clone(), part.clone(), written, new));
                self.wake.notify_one();
            }
            Err(_) => {
                state.done = true;
                self.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::{poll_fn, Future};
    use std::io::Read;
    use std::net::TcpStream;
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;

    use super::super::tests::OneQuality;
    use super::super::viewer::{write_mjpeg, ViewerFrames, ViewerGuard, Wanted};
    use super::*;
    use crate::fanout::Fanout;
    use crate::frame::Codec;

    /// A feed of frames whose JPEG says `frame-N;`, and its viewers' counters.
    struct Camera {
        out: Fanout<EncodedFrame>,
        feed: Arc<JpegFeed>,
        metrics: ViewerMetrics,
        viewers: Arc<AtomicUsize>,
    }

    impl Camera {
        fn new() -> Camera {
            let out = Fanout::new();
            let node = crate::metrics::Metrics::new().node("cam", "sink", "mjpeg_sink");
            Camera {
                feed: Arc::new(OneQuality(out.clone())),
                out,
                metrics: ViewerMetrics::new(&node),
                viewers: Arc::default(),
            }
        }

        /// Frame `n`, captured now, `size` bytes at least.
        fn publish(&self, n: u32, size: usize) {
            let mut data = format!("\u{ff}frame-{n};").into_bytes();
            data.resize(size.max(data.len()), b'.');
            self.out.publish(Arc::new(EncodedFrame {
                camera: "cam".into(),
                seq: n.into(),
                captured_at: SystemTime::now(),
                codec: Codec::Jpeg,
                keyframe: true,
                width: 2,
                height: 2,
                data: Bytes::from(data),
                behind: 0,
            }));
        }

        /// A default viewer of the feed, as `OpenStream` makes it.
        fn viewer(&self) -> ViewerFrames {
            let guard = ViewerGuard::new(self.viewers.clone(), self.metrics.viewers.clone());
            ViewerFrames::open(
                self.feed.clone(),
                Wanted::default(),
                guard,
                self.metrics.clone(),
            )
            .expect("a viewer")
        }

        /// How many viewers the feed's pass writes to.
        fn in_pass(&self) -> usize {
            let feed = Arc::downgrade(&self.feed);
            lock(&PASSES)
                .iter()
                .filter(|p| p.feed.ptr_eq(&feed))
                .filter_map(|p| p.viewers.upgrade())
                .map(|v| lock(&v.0).len())
                .sum()
        }

        fn counts(&self) -> (u64, u64) {
            (self.metrics.sent.get(), self.metrics.dropped_behind.get())
        }
    }

    /// What a client has received so far: the bytes and the frames in them, in order.
    struct Client {
        socket: TcpStream,
        got: Vec<u8>,
    }

    impl Client {
        fn new(socket: TcpStream) -> Client {
            socket.set_nonblocking(true).expect("non-blocking");
            Client {
                socket,
                got: Vec::new(),
            }
        }

        /// Takes what has arrived, without waiting.
        fn take(&mut self) {
            let mut buf = [0u8; 65536];
            while let Ok(n @ 1..) = self.socket.read(&mut buf) {
                self.got.extend_from_slice(&buf[..n]);
            }
        }

        /// Reads (the runtime's tasks running meanwhile) until frame `n` has arrived.
        async fn read_until(&mut self, n: u32) {
            let marker = format!("frame-{n};");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            loop {
                self.take();
                if self.frames().contains(&n) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out waiting for {marker}; got frames {:?}",
                    self.frames()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        /// The frames received, in order.
        fn frames(&self) -> Vec<u32> {
            let text = String::from_utf8_lossy(&self.got);
            text.split("frame-")
                .skip(1)
                .filter_map(|s| s.split(';').next()?.parse().ok())
                .collect()
        }
    }

    /// Runs `future` until it first waits, then on as a task of its own.
    fn poll_once_then_spawn(
        future: impl Future<Output = ()> + 'static,
    ) -> impl Future<Output = ()> {
        let mut future = Box::pin(future);
        async move {
            let first = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "the viewer's stream ended");
            actix_rt::spawn(future);
        }
    }

    #[actix_rt::test]
    async fn a_viewer_joining_between_a_publish_and_the_pass_gets_each_frame_once() {
        let camera = Camera::new();
        let (writer, socket) = DirectWriter::loopback(1 << 16).await;
        let mut first = Client::new(socket);
        actix_rt::spawn(write_mjpeg(camera.viewer(), None, Form::Classic, writer));
        camera.publish(1, 100);
        first.read_until(1).await;
        crate::testing::wait_for("the pass", || camera.in_pass() == 1).await;

        // Frames 2 and 3 come while the pass waits its turn on this (single) thread; meanwhile
        // a second viewer takes frame 3 as its first part and joins.
        let (writer, socket) = DirectWriter::loopback(1 << 16).await;
        let mut second = Client::new(socket);
        let frames = camera.viewer();
        camera.publish(2, 100);
        camera.publish(3, 100);
        poll_once_then_spawn(write_mjpeg(frames, None, Form::Classic, writer)).await;
        assert_eq!(camera.in_pass(), 2, "the second viewer joined");
        second.take();
        first.take();
        assert_eq!(second.frames(), [3], "its own first part");
        assert_eq!(first.frames(), [1], "before the pass has written frame 3");

        // The pass writes frame 3, then 4.
        first.read_until(3).await;
        camera.publish(4, 100);
        first.read_until(4).await;
        second.read_until(4).await;
        assert_eq!(first.frames(), [1, 3, 4]);
        assert_eq!(second.frames(), [3, 4], "frame 3 once");
        assert_eq!(
            camera.counts(),
            (5, 1),
            "sent: 3 + 2 parts; dropped: frame 2, by the first viewer only"
        );
    }

    #[actix_rt::test]
    async fn a_frame_published_while_the_first_viewer_sends_its_own_goes_out_by_the_pass() {
        let camera = Camera::new();
        // Small socket buffers: the first part (1 MB) takes a while to go.
        let (writer, socket) = DirectWriter::loopback(4096).await;
        let mut client = Client::new(socket);
        let viewer = write_mjpeg(camera.viewer(), None, Form::Classic, writer);
        camera.publish(1, 1 << 20);
        poll_once_then_spawn(viewer).await;
        assert_eq!(camera.in_pass(), 0, "still sending its first part");
        camera.publish(2, 100);

        client.read_until(2).await;
        camera.publish(3, 100);
        client.read_until(3).await;
        assert_eq!(client.frames(), [1, 2, 3]);
        assert_eq!(camera.counts(), (3, 0));
    }
}
