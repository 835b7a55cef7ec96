//! A fan-out point: one producer publishes, any number of consumers read, and the newest value
//! always wins. Nothing queues: a consumer that is busy when two values are published sees only the
//! second and learns how many it skipped, so every node can count its drops. Built on
//! `tokio::sync::watch`; the number of live subscribers is the demand that keeps producers working.

use std::sync::Arc;

use futures_util::stream::{self, Stream};
use tokio::sync::watch;

/// A published value with its position in the producer's sequence.
struct Stamped<T> {
    index: u64,
    value: Arc<T>,
}

impl<T> Clone for Stamped<T> {
    fn clone(&self) -> Self {
        Self {
            index: self.index,
            value: self.value.clone(),
        }
    }
}

/// The producer side. Cloning gives another handle to the same point.
pub struct Fanout<T> {
    tx: Arc<watch::Sender<Option<Stamped<T>>>>,
}

impl<T> Clone for Fanout<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(None)),
        }
    }
}

impl<T> Fanout<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the current value and wakes every subscriber.
    pub fn publish(&self, value: Arc<T>) {
        self.tx.send_modify(|slot| {
            let index = slot.as_ref().map_or(0, |s| s.index + 1);
            *slot = Some(Stamped { index, value });
        });
    }

    /// A new consumer. It waits for the next value: the current one counts as already seen.
    pub fn subscribe(&self) -> Subscriber<T> {
        let rx = self.tx.subscribe();
        let last = rx.borrow().as_ref().map(|s| s.index);
        Subscriber { rx, last }
    }

    /// Whether anyone is subscribed, i.e. whether producing is worth the work.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The value published last, if any.
    pub fn latest(&self) -> Option<Arc<T>> {
        self.tx.borrow().as_ref().map(|s| s.value.clone())
    }
}

/// The consumer side.
pub struct Subscriber<T> {
    rx: watch::Receiver<Option<Stamped<T>>>,
    last: Option<u64>,
}

impl<T> Subscriber<T> {
    /// Waits for a value newer than the last one returned. Gives the value and how many values were
    /// published in between (skipped because this consumer was behind); `None` once the producer is
    /// gone.
    pub async fn next(&mut self) -> Option<(Arc<T>, u64)> {
        loop {
            self.rx.changed().await.ok()?;
            let Some(stamped) = self.rx.borrow_and_update().clone() else {
                continue;
            };
            let skipped = match self.last {
                Some(last) if stamped.index > last => stamped.index - last - 1,
                _ => 0,
            };
            self.last = Some(stamped.index);
            return Some((stamped.value, skipped));
        }
    }

    /// The value published last, without marking it seen.
    pub fn latest(&self) -> Option<Arc<T>> {
        self.rx.borrow().as_ref().map(|s| s.value.clone())
    }

    /// The values as a stream, for actors (`ctx.add_stream`) and response bodies.
    pub fn into_stream(self) -> impl Stream<Item = (Arc<T>, u64)>
    where
        T: Send + Sync + 'static,
    {
        stream::unfold(self, |mut sub| async move {
            sub.next().await.map(|item| (item, sub))
        })
    }
}

/// Keeps an actor subscribed to an input exactly while it has a reason to be: a node with nobody
/// downstream lets go of its input, so the camera behind it can idle.
pub struct InputLink<T> {
    input: Fanout<T>,
    handle: Option<actix::SpawnHandle>,
}

impl<T: Send + Sync + 'static> InputLink<T> {
    pub fn new(input: Fanout<T>) -> Self {
        Self {
            input,
            handle: None,
        }
    }

    /// Subscribes (values arrive through the actor's `StreamHandler`) or lets go, as `wanted` says.
    pub fn follow<A>(&mut self, wanted: bool, ctx: &mut actix::Context<A>)
    where
        A: actix::Actor<Context = actix::Context<A>> + actix::StreamHandler<(Arc<T>, u64)>,
    {
        use actix::AsyncContext;
        match (wanted, self.handle) {
            (true, None) => {
                self.handle = Some(ctx.add_stream(self.input.subscribe().into_stream()))
            }
            (false, Some(handle)) => {
                ctx.cancel_future(handle);
                self.handle = None;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_subscriber_gets_the_newest_value_and_the_skip_count() {
        let out = Fanout::new();
        let mut sub = out.subscribe();
        out.publish(Arc::new(1));
        assert_eq!(sub.next().await.map(|(v, s)| (*v, s)), Some((1, 0)));
        out.publish(Arc::new(2));
        out.publish(Arc::new(3));
        out.publish(Arc::new(4));
        assert_eq!(sub.next().await.map(|(v, s)| (*v, s)), Some((4, 2)));
    }

    #[tokio::test]
    async fn a_new_subscriber_waits_for_the_next_value() {
        let out = Fanout::new();
        out.publish(Arc::new("old"));
        let mut sub = out.subscribe();
        assert_eq!(sub.latest().as_deref(), Some(&"old"));
        out.publish(Arc::new("new"));
        assert_eq!(sub.next().await.map(|(v, s)| (*v, s)), Some(("new", 0)));
    }

    #[tokio::test]
    async fn demand_follows_subscribers_and_the_stream_ends_with_the_producer() {
        let out = Fanout::<u8>::new();
        assert!(!out.has_subscribers());
        let mut sub = out.subscribe();
        assert!(out.has_subscribers());
        drop(out);
        assert!(sub.next().await.is_none());
    }
}
