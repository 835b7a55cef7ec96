//! One way for a node to stop. The graph holds each node's [`Stopper`] (in its `NodeHandle`) and
//! fires it when the node is removed, restarted or the process ends; every actor of the node
//! watches the matching [`StopToken`] (`stop_on`, called once in `started()`) and stops when it
//! fires, doing its cleanup in its own `stopping()`/`stopped()`. An actor that needs a thread of its
//! own starts with [`start_on_own_thread`]: the thread ends once that actor has stopped, after its
//! cleanup, never on a timer.

use actix::dev::channel;
use actix::{Actor, ActorContext, ActorFutureExt, Addr, Arbiter, AsyncContext, Context};
use tokio::sync::watch;

/// Fires a node's stop. Dropping it fires it too: a node whose handle is gone must not run on.
pub struct Stopper {
    tx: watch::Sender<bool>,
}

impl Default for Stopper {
    fn default() -> Self {
        Self {
            tx: watch::Sender::new(false),
        }
    }
}

impl Stopper {
    pub fn new() -> Self {
        Self::default()
    }

    /// A token for the node's actors to watch.
    pub fn token(&self) -> StopToken {
        StopToken {
            rx: self.tx.subscribe(),
        }
    }

    /// Stops every actor watching a token of this stopper; firing again does nothing more.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }

    /// Completes once every token of this stopper is gone: the node's actors have stopped and
    /// been dropped, after their cleanup.
    pub async fn stopped(&self) {
        self.tx.closed().await;
    }
}

/// Fired stoppers of nodes that are stopping, to wait for.
#[derive(Default)]
pub struct Stopping(pub Vec<Stopper>);

impl Stopping {
    /// Waits until every node has stopped, at most `within`; false if some had not by then.
    pub async fn wait(self, within: std::time::Duration) -> bool {
        let all = futures_util::future::join_all(self.0.iter().map(Stopper::stopped));
        tokio::time::timeout(within, all).await.is_ok()
    }
}

/// What a node's actors watch to know when to stop.
#[derive(Clone)]
pub struct StopToken {
    rx: watch::Receiver<bool>,
}

impl StopToken {
    /// Whether the stop has fired (or its stopper is gone).
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Completes when the stop fires (or its stopper is dropped).
    pub async fn fired(mut self) {
        let _ = self.rx.wait_for(|fired| *fired).await;
    }
}

/// Stops the actor when `token` fires. Call it once, in the actor's `started()`.
pub fn stop_on<A>(token: &StopToken, ctx: &mut Context<A>)
where
    A: Actor<Context = Context<A>>,
{
    let fired = actix::fut::wrap_future::<_, A>(token.clone().fired());
    ctx.spawn(fired.map(|(), _, ctx: &mut Context<A>| ctx.stop()));
}

/// Starts the actor `make` builds on a thread (arbiter) of its own, which ends once the actor has
/// stopped: after its `stopping()` let it stop and its `stopped()` ran, so cleanup that takes a
/// while (closing connections) finishes before the thread goes.
pub fn start_on_own_thread<A, F>(make: F) -> Addr<A>
where
    A: Actor<Context = Context<A>>,
    F: FnOnce(&mut Context<A>) -> A + Send + 'static,
{
    // Like `Actor::start_in_arbiter`, but the arbiter stops itself when the actor's future ends.
    let (tx, rx) = channel::channel(16);
    let arbiter = Arbiter::new();
    arbiter.spawn_fn(move || {
        let mut ctx = Context::with_receiver(rx);
        let actor = make(&mut ctx);
        let running = ctx.into_future(actor);
        actix_rt::spawn(async move {
            running.await;
            Arbiter::current().stop();
        });
    });
    Addr::new(tx)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use actix::{ArbiterHandle, Running, WrapFuture};

    use super::*;
    use crate::testing::wait_for;

    /// Records its stop; with `slow_cleanup`, its `stopping()` first runs a cleanup that takes a
    /// while (as closing network connections does).
    struct Probe {
        token: StopToken,
        stopped: Arc<AtomicBool>,
        slow_cleanup: Option<Arc<AtomicBool>>,
        arbiter: Arc<Mutex<Option<ArbiterHandle>>>,
    }

    impl Actor for Probe {
        type Context = Context<Self>;

        fn started(&mut self, ctx: &mut Self::Context) {
            *self.arbiter.lock().unwrap() = Some(Arbiter::current());
            stop_on(&self.token, ctx);
        }

        fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
            let Some(cleaned) = self.slow_cleanup.take() else {
                return Running::Stop;
            };
            let cleanup = async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                cleaned.store(true, Ordering::SeqCst);
            };
            ctx.spawn(cleanup.into_actor(self).map(|(), _, ctx| ctx.stop()));
            Running::Continue
        }

        fn stopped(&mut self, _: &mut Self::Context) {
            self.stopped.store(true, Ordering::SeqCst);
        }
    }

    fn probe(token: StopToken, slow_cleanup: Option<Arc<AtomicBool>>) -> (Probe, Arc<AtomicBool>) {
        let stopped = Arc::new(AtomicBool::new(false));
        let probe = Probe {
            token,
            stopped: stopped.clone(),
            slow_cleanup,
            arbiter: Default::default(),
        };
        (probe, stopped)
    }

    #[actix_rt::test]
    async fn actors_stop_when_their_token_fires_or_their_stopper_is_dropped() {
        let stopper = Stopper::new();
        let (a, a_stopped) = probe(stopper.token(), None);
        let (b, b_stopped) = probe(stopper.token(), None);
        let (_a, _b) = (a.start(), b.start());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!a_stopped.load(Ordering::SeqCst) && !b_stopped.load(Ordering::SeqCst));
        assert!(!stopper.token().is_fired());
        stopper.fire();
        assert!(stopper.token().is_fired());
        wait_for("both actors to stop", || {
            a_stopped.load(Ordering::SeqCst) && b_stopped.load(Ordering::SeqCst)
        })
        .await;

        let dropped = Stopper::new();
        let (c, c_stopped) = probe(dropped.token(), None);
        let _c = c.start();
        let token = dropped.token();
        drop(dropped);
        assert!(token.is_fired());
        wait_for("the actor of a dropped stopper to stop", || {
            c_stopped.load(Ordering::SeqCst)
        })
        .await;

        let early = Stopper::new();
        early.fire();
        let (d, d_stopped) = probe(early.token(), None);
        let _d = d.start();
        wait_for("an actor started after the stop to stop", || {
            d_stopped.load(Ordering::SeqCst)
        })
        .await;
    }

    #[actix_rt::test]
    async fn stopping_waits_for_the_actors_cleanup_within_its_bound() {
        let stopper = Stopper::new();
        let cleaned = Arc::new(AtomicBool::new(false));
        let (p, _) = probe(stopper.token(), Some(cleaned.clone()));
        let _p = p.start();
        stopper.fire();
        assert!(Stopping(vec![stopper]).wait(Duration::from_secs(3)).await);
        assert!(cleaned.load(Ordering::SeqCst), "done before the cleanup");

        // A token someone keeps: the wait ends at its bound.
        let stuck = Stopper::new();
        let _kept = stuck.token();
        stuck.fire();
        assert!(!Stopping(vec![stuck]).wait(Duration::from_millis(50)).await);
        assert!(Stopping::default().wait(Duration::ZERO).await);
    }

    #[actix_rt::test]
    async fn an_own_thread_ends_once_its_actor_has_stopped_after_its_cleanup() {
        let stopper = Stopper::new();
        let cleaned = Arc::new(AtomicBool::new(false));
        let (p, stopped) = probe(stopper.token(), Some(cleaned.clone()));
        let arbiter = p.arbiter.clone();
        let _addr = start_on_own_thread(move |_| p);
        wait_for("the actor to start", || arbiter.lock().unwrap().is_some()).await;
        let thread = arbiter.lock().unwrap().clone().unwrap();
        assert!(thread.spawn(async {}), "the thread runs");
        stopper.fire();
        // An arbiter that has stopped refuses new work.
        wait_for("the thread to end", || !thread.spawn(async {})).await;
        assert!(
            cleaned.load(Ordering::SeqCst) && stopped.load(Ordering::SeqCst),
            "the thread ended before the actor's cleanup finished"
        );
    }
}
