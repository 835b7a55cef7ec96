//! A running camgraph, composed: the graph's owner (and its first view), the file watcher, the
//! stats sampler and the HTTP server, from a validated spec and the plugins' registry. main.rs
//! adds the command line and the signals; tests start the same thing in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use actix::{Actor, Addr};
use actix_web::dev::{Server, ServerHandle};
use arc_swap::ArcSwap;

use crate::config::{GraphSpec, ServerConfig};
use crate::error::BuildError;
use crate::graph::live::{AwaitStopped, LiveGraph, StopGraph, Supervisor};
use crate::graph::view::GraphView;
use crate::graph::watch;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::registry::Registry;

/// How long the exit waits for the nodes' cleanup after the HTTP server has stopped.
const NODES_STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Why camgraph could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the graph: {0}")]
    Graph(#[from] BuildError),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error(transparent)]
    Serve(#[from] http::ServeError),
}

/// What runs once started; `run` serves until the server is stopped.
pub struct App {
    server: Server,
    /// Where the server listens (the port chosen, if the configuration said 0).
    pub addr: SocketAddr,
    /// The graph's owner: reloads, camera changes and the final stop go through it.
    pub supervisor: Addr<Supervisor>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl App {
    /// Starts `spec` (read from `config`, watched for changes; `None`: nothing to reload) with the
    /// node types of `registry`, serving HTTP as `server` says. Call it inside an actix System.
    pub fn start(
        spec: GraphSpec,
        config: Option<PathBuf>,
        registry: Arc<Registry>,
        server: &ServerConfig,
    ) -> Result<App, StartError> {
        let metrics = Metrics::new();
        let credentials = Arc::new(http::Credentials::read(server)?);
        let reread = credentials.clone();
        let live = LiveGraph::start(
            spec,
            config.clone(),
            registry.clone(),
            &metrics,
            server.listen.ip(),
            Box::new(move |server| reread.reload(server).map_err(|e| e.to_string())),
        )?;
        let view = Arc::new(ArcSwap::from_pointee(GraphView::default()));
        let supervisor = Supervisor::new(live, view.clone()).start();
        let watcher = match config {
            Some(path) => Some(
                watch::watch_file(&path, supervisor.clone().recipient())
                    .map_err(|source| StartError::Watch { path, source })?,
            ),
            None => None,
        };
        let stats = Arc::new(http::stats::StatsWindow::default());
        http::stats::spawn_sampler(stats.clone(), metrics.clone());
        let state = Arc::new(AppState {
            view,
            supervisor: supervisor.clone(),
            registry,
            metrics,
            stats,
        });
        let (server, addr) = http::serve(state, server, &credentials)?;
        Ok(App {
            server,
            addr,
            supervisor,
            _watcher: watcher,
        })
    }

    /// Stops the HTTP server (and so `run`) from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped, then stops every node.
    pub async fn run(self) -> std::io::Result<()> {
        let App {
            server,
            supervisor,
            _watcher,
            ..
        } = self;
        let served = server.await;
        let _ = supervisor.send(StopGraph).await;
        // Nodes finish their cleanup before the process ends (a sink that publishes to a server
        // says goodbye to it), also when a signal stopped the graph first; a node that hangs
        // does not hold the exit.
        let within = NODES_STOP_WITHIN;
        if let Ok(false) = supervisor.send(AwaitStopped { within }).await {
            tracing::warn!(
                "some nodes had not stopped {} s after the shutdown; exiting anyway",
                within.as_secs_f64()
            );
        }
        served
    }
}
