//! A fan-out point: one producer publishes, any number of consumers read, and the newest value
//! always wins. Nothing queues: a consumer that is busy when two values are published sees only the
//! second and learns how many it skipped, so every node can count its drops. Built on
//! `tokio::sync::watch`; the number of live subscribers is the demand that keeps producers working,
//! and every change of it is announced (`Demand`), so producers wait for it instead of polling.

use std::sync::Arc;

use futures_util::stream::{self, Stream};
use tokio::sync::watch;

/// How many subscribers one or more fan-out points have, announced at every change. A fan-out
/// point has its own unless made with [`Fanout::with_demand`], which lets several points (the
/// variants of one encoder) share one count. Producers follow it with [`watch_demand`].
#[derive(Clone, Default)]
pub struct Demand {
    count: Arc<watch::Sender<usize>>,
}

impl Demand {
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribers now.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// The count now, then after every change (changes in quick succession may arrive as one, the
    /// latest). Ends once the demand and every subscriber counted in it are gone.
    pub fn changes(&self) -> impl Stream<Item = usize> + Send + 'static {
        let rx = self.count.subscribe();
        stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first {
                rx.changed().await.ok()?;
            }
            let count = *rx.borrow_and_update();
            Some((count, (rx, false)))
        })
    }

    fn counted(&self) -> Counted {
        self.count.send_modify(|c| *c += 1);
        Counted(self.count.clone())
    }
}

/// One subscriber's place in a `Demand`: counted when made or cloned, uncounted when dropped.
struct Counted(Arc<watch::Sender<usize>>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.0.send_modify(|c| *c += 1);
        Counted(self.0.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.send_modify(|c| *c -= 1);
    }
}

/// Runs `on_change` on the actor with the demand's count now and at every change: how a node
/// follows whether anyone wants its output, without a timer.
pub fn watch_demand<A>(
    demand: &Demand,
    ctx: &mut actix::Context<A>,
    mut on_change: impl FnMut(&mut A, usize, &mut actix::Context<A>) + 'static,
) where
    A: actix::Actor<Context = actix::Context<A>>,
{
    use actix::{ActorStreamExt, AsyncContext};
    let changes = actix::fut::wrap_stream::<_, A>(demand.changes());
    ctx.spawn(
        changes
            .map(move |count, act, ctx| on_change(act, count, ctx))
            .finish(),
    );
}

/// A published value with its position in the producer's sequence (the first is 1).
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
    demand: Demand,
}

impl<T> Clone for Fanout<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            demand: self.demand.clone(),
        }
    }
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Self::with_demand(Demand::new())
    }
}

impl<T> Fanout<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fan-out point whose subscribers count in `demand` (shared with other points).
    pub fn with_demand(demand: Demand) -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(None)),
            demand,
        }
    }

    /// The demand this point's subscribers count in.
    pub fn demand(&self) -> &Demand {
        &self.demand
    }

    /// Replaces the current value and wakes every subscriber.
    pub fn publish(&self, value: Arc<T>) {
        self.tx.send_modify(|slot| {
            let index = slot.as_ref().map_or(1, |s| s.index + 1);
            *slot = Some(Stamped { index, value });
        });
    }

    /// A new consumer. It waits for the next value: the current one counts as already seen.
    pub fn subscribe(&self) -> Subscriber<T> {
        let flowing = self.has_subscribers();
        let rx = self.tx.subscribe();
        let last = rx.borrow().as_ref().map_or(0, |s| s.index);
        Subscriber {
            rx,
            last,
            joined_flowing: flowing,
            _counted: self.demand.counted(),
        }
    }

    /// Whether anyone is subscribed to this point, i.e. whether producing for it is worth the work.
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

/// The consumer side. Clones count as subscribers of their own.
pub struct Subscriber<T> {
    rx: watch::Receiver<Option<Stamped<T>>>,
    /// The position of the last value seen (0: none was published yet).
    last: u64,
    /// Whether someone else was consuming the point when this subscriber joined: then values were
    /// being produced and the current one is the newest, not a leftover from before a pause.
    joined_flowing: bool,
    /// Declared after `rx`, so it is dropped after it: when the drop is announced, the point no
    /// longer counts this receiver (`has_subscribers`) either.
    _counted: Counted,
}

impl<T> Clone for Subscriber<T> {
    fn clone(&self) -> Self {
        Self {
            rx: self.rx.clone(),
            last: self.last,
            joined_flowing: self.joined_flowing,
            _counted: self._counted.clone(),
        }
    }
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
            // Counted from the last value seen; none seen yet (nothing was published when this
            // subscriber came): nothing skipped.
            let skipped = match self.last {
                0 => 0,
                last => stamped.index.saturating_sub(last + 1),
            };
            self.last = stamped.index;
            return Some((stamped.value, skipped));
        }
    }

    /// The value published last, without marking it seen.
    pub fn latest(&self) -> Option<Arc<T>> {
        self.rx.borrow().as_ref().map(|s| s.value.clone())
    }

    /// The value published last, if values were flowing when this subscriber joined (someone else
    /// was consuming them), marked seen (`next` waits for a newer one); `None` when the point was
    /// idle, whose last value is from before the pause.
    pub fn latest_if_flowing(&mut self) -> Option<Arc<T>> {
        if !self.joined_flowing {
            return None;
        }
        let stamped = self.rx.borrow_and_update().clone()?;
        self.last = stamped.index;
        Some(stamped.value)
    }

    /// The position of the last value `next` or `latest_if_flowing` gave (values count from 1
    /// in the order published), or of the value current when this subscriber came: subscribers
    /// of the same point can tell which of their values is newer. 0 when none was published yet.
    pub fn seen(&self) -> u64 {
        self.last
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
    async fn the_latest_value_counts_as_flowing_only_if_someone_was_consuming() {
        let out = Fanout::new();
        out.publish(Arc::new("left from before"));
        let mut first = out.subscribe();
        assert_eq!(first.latest_if_flowing(), None, "nobody was consuming");
        out.publish(Arc::new("live"));
        let mut second = out.subscribe();
        assert_eq!(second.latest_if_flowing().as_deref(), Some(&"live"));
    }

    #[tokio::test]
    async fn the_latest_value_once_taken_is_not_given_again() {
        let out = Fanout::new();
        let _consuming = out.subscribe();
        out.publish(Arc::new(1));
        let mut sub = out.subscribe();
        assert_eq!(sub.seen(), 1);
        out.publish(Arc::new(2));
        assert_eq!(sub.latest_if_flowing().as_deref(), Some(&2));
        assert_eq!(sub.seen(), 2, "the value taken");
        out.publish(Arc::new(3));
        assert_eq!(
            sub.next().await.map(|(v, s)| (*v, s)),
            Some((3, 0)),
            "the next one, not 2 again"
        );
        assert_eq!(sub.seen(), 3);
        let mut copy = sub.clone();
        out.publish(Arc::new(4));
        out.publish(Arc::new(5));
        assert_eq!(
            copy.next().await.map(|(v, s)| (*v, s)),
            Some((5, 1)),
            "a clone reads on from where its original was"
        );
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

    #[tokio::test]
    async fn every_subscribe_clone_and_drop_is_announced_on_the_shared_demand() {
        use futures_util::StreamExt;
        let demand = Demand::new();
        let (a, b) = (
            Fanout::<u8>::with_demand(demand.clone()),
            Fanout::<u8>::with_demand(demand.clone()),
        );
        let mut changes = Box::pin(demand.changes());
        assert_eq!(changes.next().await, Some(0), "the count now comes first");

        let sub_a = a.subscribe();
        assert_eq!(changes.next().await, Some(1));
        let sub_b = b.subscribe();
        assert_eq!(changes.next().await, Some(2));
        let copy = sub_a.clone();
        assert_eq!(changes.next().await, Some(3), "a clone is a subscriber too");
        assert_eq!((a.subscriber_count(), b.subscriber_count()), (2, 1));

        drop(sub_a);
        assert_eq!(changes.next().await, Some(2));
        assert!(a.has_subscribers(), "its clone still reads");
        drop(copy);
        assert_eq!(changes.next().await, Some(1), "dropping is announced");
        assert!(
            !a.has_subscribers(),
            "announced after the point let go of it"
        );
        let stream = b.subscribe().into_stream();
        assert_eq!(changes.next().await, Some(2));
        drop(stream);
        assert_eq!(changes.next().await, Some(1), "a dropped stream lets go");
        assert_eq!(demand.count(), 1);

        drop((a, b, demand, sub_b));
        assert_eq!(changes.next().await, Some(0));
        assert_eq!(changes.next().await, None, "ends when everything is gone");
    }

    #[actix_rt::test]
    async fn an_actor_follows_demand_without_a_timer() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        struct Follower(Fanout<u8>, Arc<AtomicUsize>);
        impl actix::Actor for Follower {
            type Context = actix::Context<Self>;
            fn started(&mut self, ctx: &mut Self::Context) {
                watch_demand(self.0.demand(), ctx, |act, count, _| {
                    act.1.store(count + 100, Ordering::SeqCst)
                });
            }
        }
        use actix::Actor;
        let out = Fanout::<u8>::new();
        let seen = Arc::new(AtomicUsize::new(0));
        let _addr = Follower(out.clone(), seen.clone()).start();
        let now = || seen.load(Ordering::SeqCst);
        crate::testing::wait_for("the count at start", || now() == 100).await;
        let sub = out.subscribe();
        crate::testing::wait_for("the subscribe", || now() == 101).await;
        drop(sub);
        crate::testing::wait_for("the drop", || now() == 100).await;
    }
}
