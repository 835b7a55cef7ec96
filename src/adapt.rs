//! The adaptation runtime: how one viewer moves along a ladder of variants (`AdaptPolicy`, given
//! by an `adaptive` node's feed) and the reader that follows it (`FeedReader`). The policy is
//! decided by the plugin; this file only carries it between a feed and a viewer.

use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::error::ServiceError;
use crate::fanout::Subscriber;
use crate::frame::EncodedFrame;
use crate::port::Feed;

/// Moves one viewer along a ladder of variants (`V`) from how its delivery goes.
pub trait AdaptPolicy<V>: Send {
    /// The variant to start with.
    fn initial(&self) -> V;
    /// `lost` of the last `total` units sent to the viewer did not reach it: frames it was too
    /// slow for (MJPEG), or packets its receiver reports lost (WebRTC). Returns the variant to
    /// switch to, if the viewer should move.
    fn observe(&mut self, now: Instant, lost: u64, total: u64) -> Option<V>;
    /// The move `observe` just returned could not be made (the encoder has no room for another
    /// variant): the viewer is back where it was.
    fn refused(&mut self);
}

/// One viewer's frames from a feed, following the feed's policy if it has one.
pub struct FeedReader<V> {
    /// Weak: a viewer must not keep a removed encoder's outputs alive, or its stream never ends.
    feed: Weak<dyn Feed<V>>,
    frames: Subscriber<EncodedFrame>,
    policy: Option<Box<dyn AdaptPolicy<V>>>,
}

impl<V: Copy + 'static> FeedReader<V> {
    /// A reader for `variant`; without one, the feed's policy (if any) picks and adapts it.
    pub fn open(feed: Arc<dyn Feed<V>>, variant: Option<V>) -> Result<Self, ServiceError> {
        let policy = if variant.is_none() {
            feed.policy()
        } else {
            None
        };
        let frames = feed.subscribe(policy.as_ref().map(|p| p.initial()).or(variant))?;
        Ok(Self {
            feed: Arc::downgrade(&feed),
            frames,
            policy,
        })
    }

    /// The next frame and how many were missed before it (this viewer was behind); `None` once
    /// the feed is gone. The policy also counts the frames the encoder was too busy for.
    pub async fn next(&mut self) -> Option<(Arc<EncodedFrame>, u64)> {
        let (frame, skipped) = self.frames.next().await?;
        let lost = skipped + frame.behind;
        if let Some(variant) = self
            .policy
            .as_mut()
            .and_then(|p| p.observe(Instant::now(), lost, lost + 1))
        {
            match self.feed.upgrade()?.subscribe(Some(variant)) {
                Ok(frames) => self.frames = frames,
                Err(e) => {
                    tracing::warn!("viewer stays on its variant: {e}");
                    if let Some(p) = self.policy.as_mut() {
                        p.refused();
                    }
                }
            }
        }
        Some((frame, skipped))
    }

    /// Whether the feed's policy moves this reader between variants.
    pub fn adapts(&self) -> bool {
        self.policy.is_some()
    }

    /// The newest frame of the current variant, without waiting.
    pub fn latest(&self) -> Option<Arc<EncodedFrame>> {
        self.frames.latest()
    }

    /// The newest frame of the current variant if it was being produced for someone else when
    /// this reader subscribed, marked seen (`Subscriber::latest_if_flowing`).
    pub fn latest_if_flowing(&mut self) -> Option<Arc<EncodedFrame>> {
        self.frames.latest_if_flowing()
    }

    /// The position of the last frame given in its variant's stream (`Subscriber::seen`).
    pub fn seen(&self) -> u64 {
        self.frames.seen()
    }

    /// Another reader of the current variant that goes on from where this one is: its `next`
    /// gives the frames after the last one this reader gave. It stays on that variant (the
    /// policy is this reader's own).
    pub fn fork(&self) -> Self {
        Self {
            feed: self.feed.clone(),
            frames: self.frames.clone(),
            policy: None,
        }
    }
}
