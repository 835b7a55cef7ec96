//! Write timeouts for endless response bodies: a client that stops reading leaves actix-web's
//! dispatcher waiting for its socket to drain, and while it waits it never polls the body again,
//! so the body cannot notice by itself. `cut_when_stalled` wraps a body: each chunk it yields
//! marks the moment the body started waiting to be asked for the next one; a watchdog task (one
//! per body, asleep until a deadline) cuts the connection when no chunk could be handed over for
//! the timeout. The cut resets the socket; the dispatcher then fails its write and drops the body,
//! which frees whatever the body held (a viewer slot). Every such body also holds one of the
//! server's `server.max_viewers` slots (`Viewers`), all cameras together.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use futures_util::Stream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The TCP socket of a connection, recorded when it is accepted (`remember`). Only read while a
/// request of that connection is handled, so the descriptor is still open then.
#[derive(Clone, Copy)]
pub(super) struct ConnFd {
    pub fd: RawFd,
    /// Whether TLS runs over it (then only the socket's own calls apply, not writes).
    pub tls: bool,
}

/// Records the connection's socket in its extensions (called from `HttpServer::on_connect`).
pub(super) fn remember(tcp: &actix_web::rt::net::TcpStream, tls: bool, ext: &mut Extensions) {
    ext.insert(ConnFd {
        fd: tcp.as_raw_fd(),
        tls,
    });
}

use super::ApiError;
use crate::metrics::{Metrics, RefusedReason};

/// The server's count of endless bodies, against `server.max_viewers`.
pub(super) struct Viewers {
    pub open: Arc<AtomicUsize>,
    pub max: usize,
    pub metrics: Arc<Metrics>,
}

/// One of the server's viewer slots, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Viewers {
    fn take(&self) -> Result<Slot, ApiError> {
        let taken = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Slot(self.open.clone())),
            Err(_) => {
                self.metrics.refused(RefusedReason::Viewers);
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the server has its maximum of {} viewers (server.max_viewers)",
                        self.max
                    ),
                ))
            }
        }
    }
}

/// "Not waiting": the body is being polled or waits for data of its own.
const IDLE: u64 = u64::MAX;

struct Progress {
    origin: Instant,
    /// Milliseconds since `origin` when the body last yielded a chunk and was not asked for the
    /// next one yet; `IDLE` otherwise.
    waiting_since: AtomicU64,
    /// Wakes the watchdog when the body starts waiting.
    started: Notify,
}

/// A body that ends its connection when the client has not taken a chunk for `timeout`.
pub struct CutWhenStalled<S> {
    inner: S,
    _slot: Option<Slot>,
    progress: Arc<Progress>,
    watchdog: Option<JoinHandle<()>>,
}

/// The body of an endless response (a viewer's stream): it takes one of the server's viewer
/// slots (503 when none is left) and its connection is reset when no chunk could be written for
/// `timeout`. The socket is found under TLS too (`remember`); a connection whose socket is
/// unknown is not cut: the cut needs the socket.
pub fn endless_body<S>(
    req: &HttpRequest,
    body: S,
    timeout: Duration,
) -> Result<CutWhenStalled<S>, ApiError> {
    let slot = req
        .app_data::<web::Data<Viewers>>()
        .map(|v| v.take())
        .transpose()?;
    let progress = Arc::new(Progress {
        origin: Instant::now(),
        waiting_since: AtomicU64::new(IDLE),
        started: Notify::new(),
    });
    let socket = req.conn_data::<ConnFd>().and_then(|fd| {
        // SAFETY: the descriptor belongs to the connection this request is being handled on,
        // which is open while its handler runs; it is duplicated at once, so the watchdog owns
        // its own descriptor whatever happens to the connection later.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd.fd) };
        borrowed
            .try_clone_to_owned()
            .map(socket2::Socket::from)
            .ok()
    });
    let watchdog = socket.map(|socket| actix_rt::spawn(watch(progress.clone(), socket, timeout)));
    Ok(CutWhenStalled {
        inner: body,
        _slot: slot,
        progress,
        watchdog,
    })
}

/// Sleeps until the body has waited `timeout` to be asked for a chunk; then resets the socket.
async fn watch(progress: Arc<Progress>, socket: socket2::Socket, timeout: Duration) {
    loop {
        let since = progress.waiting_since.load(Ordering::Acquire);
        if since == IDLE {
            progress.started.notified().await;
            continue;
        }
        let deadline = progress.origin + Duration::from_millis(since) + timeout;
        tokio::time::sleep_until(deadline.into()).await;
        if progress.waiting_since.load(Ordering::Acquire) == since {
            tracing::info!(
                "a client took nothing for {} ms: its connection is cut",
                timeout.as_millis()
            );
            // Linger 0: a reset, so the unsent bytes are dropped rather than kept by the kernel.
            let _ = socket.set_linger(Some(Duration::ZERO));
            let _ = socket.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

impl<S: Stream + Unpin> Stream for CutWhenStalled<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.progress.waiting_since.store(IDLE, Ordering::Release);
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(_)) = &next {
            let now = self.progress.origin.elapsed().as_millis() as u64;
            self.progress.waiting_since.store(now, Ordering::Release);
            self.progress.started.notify_one();
        }
        next
    }
}

impl<S> Drop for CutWhenStalled<S> {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
    }
}
