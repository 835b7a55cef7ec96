//! The HTTP server: the core's routes (the graph and cameras API, `/metrics`, `/healthz`, the
//! viewer page) plus the routes each node type registered (streams, snapshots, signalling),
//! mounted from the registry. Handlers only look up the node that serves a request and hand the
//! work to it.

mod api;
mod cors;
mod error;
pub mod face;
pub mod stats;

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

/// Binds the server; returns it (to be awaited) and the address it listens on.
pub fn serve(state: Arc<AppState>, server: &ServerConfig) -> std::io::Result<(Server, SocketAddr)> {
    let view = web::Data::new(state.view.clone());
    let registry = state.registry.clone();
    let data = web::Data::from(state);
    let cors = web::Data::new(cors::CorsPolicy::new(&server.cors_origins));
    let http = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(view.clone())
            .app_data(cors.clone())
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _| ApiError::bad_request(err.to_string()).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|err, _| ApiError::bad_request(err.to_string()).into()),
            )
            .wrap(middleware::from_fn(cors::cors))
            .configure(api::routes)
            .configure(|cfg| registry.mount(cfg))
            .default_service(web::to(api::not_found))
    })
    // A small send buffer per connection: a slow MJPEG viewer then skips to the newest frame
    // after ~0.25 MiB instead of queueing seconds of old frames in the kernel.
    .on_connect(|conn, _| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = socket2::SockRef::from(tcp).set_send_buffer_size(SEND_BUFFER_BYTES);
        }
    })
    .workers(2)
    // Connections still open 2 s into a graceful stop (a WebSocket) are closed: not actix's 30 s.
    .shutdown_timeout(2)
    .disable_signals()
    .bind(server.listen)?;
    let addr = http.addrs().first().copied().unwrap_or(server.listen);
    Ok((http.run(), addr))
}
