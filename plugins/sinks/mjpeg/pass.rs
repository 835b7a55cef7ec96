//! One pass per frame for the direct viewers (`http::direct`) of a feed that take its default
//! stream as it is (no fps, size or quality of their own, no ladder): they all get the same
//! bytes, so one task (the pass) writes each frame to all of them in a loop, one non-blocking
//! `sendmsg` each, instead of waking one task per viewer per frame. A viewer whose socket takes
//! only part of a frame is handed the rest: its own task finishes it (and cuts the client after
//! `write_timeout_ms`, as `DirectWriter` does), and the pass skips it meanwhile, counted as
//! dropped behind. The fan-out bench puts the difference at 100 viewers (BENCHMARKS.md).
//!
//! There is one pass per feed and form, started by its first viewer on that viewer's worker and
//! ended when its last viewer has gone or the feed has.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::BytesMut;
use tokio::sync::Notify;

use super::viewer::{part_of, Part, ViewerMetrics, HEAD_ROOM, KEEPALIVE};
use crate::adapt::FeedReader;
use crate::frame::EncodedFrame;
use crate::http::face::DirectWriter;
use crate::mjpeg::Form;
use crate::port::JpegFeed;

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

#[derive(Default)]
struct State {
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

/// Writes the frames of `feed` to this viewer through the feed's pass until the client or the
/// feed goes. `keep` (the viewer's own frames) lives as long: it counts the viewer.
pub(super) async fn follow(
    feed: Arc<JpegFeed>,
    form: Form,
    writer: DirectWriter,
    metrics: ViewerMetrics,
    keep: impl Sized,
) {
    let viewer = Arc::new(Viewer {
        writer,
        state: Mutex::default(),
        wake: Notify::new(),
        metrics,
    });
    join(feed, form, viewer.clone());
    // However this task ends (the client went, or actix dropped the body), the pass lets go.
    let _leave = Leave(&viewer);
    let _keep = keep;
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

/// Adds `viewer` to the pass of `feed` in `form`, starting the pass if there is none.
fn join(feed: Arc<JpegFeed>, form: Form, viewer: Arc<Viewer>) {
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
    match FeedReader::open(feed, None) {
        Ok(frames) => {
            actix_rt::spawn(run(frames, form, viewers));
        }
        Err(e) => {
            tracing::warn!("MJPEG viewers of a stream cannot share a pass: {e}");
            end(&viewers);
        }
    }
}

/// The pass: each frame (or the last one again after `KEEPALIVE` without one) to every viewer.
async fn run(mut frames: FeedReader<crate::port::JpegVariant>, form: Form, viewers: Arc<Viewers>) {
    let mut scratch = BytesMut::with_capacity(HEAD_ROOM);
    let mut last: Option<Arc<EncodedFrame>> = None;
    loop {
        let (frame, skipped, fresh) = match tokio::time::timeout(KEEPALIVE, frames.next()).await {
            Ok(Some((frame, skipped))) => (frame, skipped, true),
            Ok(None) => break,
            // The last frame again (the feed's newest if the pass has sent none yet: its first
            // viewer's own first frame), so that the connections are written to and a viewer
            // that left is noticed while the camera is stopped.
            Err(_) => match last.clone().or_else(|| frames.latest()) {
                Some(frame) => (frame, 0, false),
                None => continue,
            },
        };
        let part = part_of(form, &frame, &mut scratch);
        let (slices, n) = part.slices();
        let list = lock(&viewers.0).clone();
        for viewer in &list {
            viewer.offer(&frame, &part, &slices[..n], fresh, skipped);
        }
        drop(list);
        last = Some(frame);
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
    /// `frame`'s part (`slices`), if the viewer is not still busy with an earlier one: written
    /// at once, or the rest handed to the viewer's task. `fresh`: a new frame, not the
    /// keepalive's repeat of the last one; `skipped`: frames the pass itself missed before it.
    fn offer(
        &self,
        frame: &Arc<EncodedFrame>,
        part: &Part,
        slices: &[&[u8]],
        fresh: bool,
        skipped: u64,
    ) {
        let mut state = lock(&self.state);
        if state.done {
            return;
        }
        let behind = skipped + u64::from(fresh && state.rest.is_some());
        if behind > 0 {
            self.metrics.dropped_behind.inc_by(behind);
        }
        if state.rest.is_some() {
            return;
        }
        match self.writer.try_send(slices) {
            Ok(None) => self.metrics.count(frame, fresh),
            Ok(Some(written)) => {
                state.rest = Some((frame.clone(), part.clone(), written, fresh));
                self.wake.notify_one();
            }
            Err(_) => {
                state.done = true;
                self.wake.notify_one();
            }
        }
    }
}
