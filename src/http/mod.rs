//! The HTTP server: the core's routes (the graph and cameras API, `/metrics`, `/healthz`, the
//! viewer page) plus the routes each node type registered (streams, snapshots, signalling),
//! mounted from the registry. Handlers only look up the node that serves a request and hand the
//! work to it.

mod api;
pub mod auth;
mod cors;
mod direct;
mod error;
pub mod face;
mod guard;
mod stall;
pub mod stats;
mod tls;
mod ws_limit;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};

use actix::Addr;

use crate::config::ServerConfig;
use crate::graph::live::Supervisor;
use crate::graph::view::Published;
use crate::metrics::Metrics;
use crate::registry::Registry;

pub use error::ApiError;

/// How long a request head may take to arrive: later, 408 and the connection is closed.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Socket send buffer of each HTTP connection (the kernel doubles it).
const SEND_BUFFER_BYTES: usize = 128 * 1024;

/// What every handler can reach.
pub struct AppState {
    /// The graph as its owner last published it.
    pub view: Published,
    /// The graph's owner, for changes.
    pub supervisor: Addr<Supervisor>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Recent samples of the metrics, for `/api/stats` rates.
    pub stats: Arc<stats::StatsWindow>,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The secrets of a running server, read at start and again on every reload (SIGHUP, the file,
/// the API): its tokens and its TLS certificate. Whether it speaks TLS at all, and where it
/// listens, are fixed until a restart.
pub struct Credentials {
    listen: SocketAddr,
    access: web::Data<auth::LiveAccess>,
    tls: Option<(rustls::ServerConfig, Arc<tls::CertSlot>)>,
}

impl Credentials {
    /// Reads the tokens and the certificate `server` names.
    pub fn read(server: &ServerConfig) -> Result<Credentials, ServeError> {
        let access = auth::Access::new(server.auth.as_ref(), server.listen)?;
        Ok(Credentials {
            listen: server.listen,
            access: web::Data::new(auth::LiveAccess::from_pointee(access)),
            tls: server.tls.as_ref().map(tls::server_config).transpose()?,
        })
    }

    /// Reads them again as `server` now says; replaces them only when all could be read.
    pub fn reload(&self, server: &ServerConfig) -> Result<(), ServeError> {
        let access = auth::Access::new(server.auth.as_ref(), self.listen)?;
        let cert = match (&self.tls, &server.tls) {
            (Some((_, slot)), Some(tls)) => Some((slot, tls::certified_key(tls)?)),
            _ => None,
        };
        self.access.store(Arc::new(access));
        if let Some((slot, key)) = cert {
            slot.store(key);
        }
        Ok(())
    }
}

/// Binds the server; returns it (to be awaited) and the address it listens on.
pub fn serve(
    state: Arc<AppState>,
    server: &ServerConfig,
    credentials: &Credentials,
) -> Result<(Server, SocketAddr), ServeError> {
    let view = web::Data::new(state.view.clone());
    let registry = state.registry.clone();
    let access = credentials.access.clone();
    let tls = credentials.tls.as_ref().map(|(config, _)| config.clone());
    let secure = web::Data::new(auth::Secure(server.tls.is_some()));
    let cors = web::Data::new(cors::CorsPolicy::new(&server.cors_origins));
    let gate = web::Data::new(guard::Gate {
        access: access.clone(),
        cors: cors.clone(),
        hosts: server
            .hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        tls: server.tls.is_some(),
        registry: registry.clone(),
        metrics: state.metrics.clone(),
    });
    let viewers = web::Data::new(stall::Viewers {
        open: Default::default(),
        max: server.max_viewers,
        metrics: state.metrics.clone(),
    });
    let data = web::Data::from(state);
    let http = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(view.clone())
            .app_data(cors.clone())
            .app_data(access.clone())
            .app_data(secure.clone())
            .app_data(gate.clone())
            .app_data(viewers.clone())
            // Bodies read by extractors stay small (routes that take more read them with
            // `face::read_body`, which also bounds the time).
            .app_data(web::PayloadConfig::new(64 * 1024))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _| ApiError::bad_request(err.to_string()).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|err, _| ApiError::bad_request(err.to_string()).into()),
            )
            // The last `wrap` runs first: CORS answers preflights (which carry no token) and
            // adds its headers to the gate's refusals too.
            .wrap(middleware::from_fn(guard::guard))
            .wrap(middleware::from_fn(cors::cors))
            .configure(api::routes)
            .configure(auth::routes)
            .configure(|cfg| registry.mount(cfg))
            .default_service(web::to(api::not_found))
    })
    // A small send buffer per connection: a slow MJPEG viewer then skips to the newest frame
    // after ~0.25 MiB instead of queueing seconds of old frames in the kernel.
    .on_connect(|conn, ext| {
        type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
        let tcp = match conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            Some(tcp) => Some((tcp, false)),
            None => conn
                .downcast_ref::<Tls>()
                .map(|tls| (tls.get_ref().0, true)),
        };
        if let Some((tcp, tls)) = tcp {
            let _ = socket2::SockRef::from(tcp).set_send_buffer_size(SEND_BUFFER_BYTES);
            stall::remember(tcp, tls, ext);
        }
    })
    .workers(2)
    // A client must send its request head within this (slowloris), as a body must within
    // `face::BODY_TIMEOUT`.
    .client_request_timeout(HEAD_TIMEOUT)
    // Connections still open 2 s into a graceful stop (a WebSocket) are closed: not actix's 30 s.
    .shutdown_timeout(2)
    .disable_signals();
    let http = match tls {
        Some(config) => http.bind_rustls_0_23(server.listen, config),
        None => http.bind(server.listen),
    }
    .map_err(|source| ServeError::Bind {
        addr: server.listen,
        source,
    })?;
    let addr = http.addrs().first().copied().unwrap_or(server.listen);
    Ok((http.run(), addr))
}
