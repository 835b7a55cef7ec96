//! The `camgraph` command: runs a graph from a YAML file (or the embedded default), checks files,
//! lists cameras.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use actix::Actor;
use arc_swap::ArcSwap;
use camgraph::config::{self, GraphSpec};
use camgraph::graph::live::{LiveGraph, Reload, StopGraph, Supervisor};
use camgraph::graph::view::GraphView;
use camgraph::graph::watch;
use camgraph::http::{self, AppState};
use camgraph::metrics::Metrics;
use camgraph::plugins;
use camgraph::registry::Registry;

/// Streams cameras to browsers (MJPEG, WebRTC) and to monitoring (Prometheus), as an actor graph
/// described by a YAML file that is reloaded when it changes. Without --config it runs a 1280x720 30 fps test-pattern camera; the viewer is at
/// http://127.0.0.1:8080. Logging follows RUST_LOG (default: info).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The graph to run. Default: the embedded configs/default.yaml.
    #[arg(long, short, env = "CAMGRAPH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Listen on this address instead of the file's `server.listen`; port 0 picks a free port.
    #[arg(long, env = "CAMGRAPH_LISTEN")]
    listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check configuration files and print every problem with its file:line:col; exits 1 if any.
    Check {
        /// The files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the cameras (V4L2 devices) this machine has.
    Devices,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { files }) => check(&files),
        Some(Command::Devices) => devices(),
        None => match run(cli.config, cli.listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("camgraph: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let registry = plugins::registry();
    let mut failed = false;
    for file in files {
        match config::load_file(file, &registry) {
            Ok(spec) => println!("{}: ok ({} nodes)", file.display(), spec.nodes.len()),
            Err(errors) => {
                failed = true;
                println!("{errors}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn devices() -> ExitCode {
    #[cfg(feature = "v4l")]
    match plugins::sources::v4l::devices() {
        Ok(list) if list.is_empty() => println!("no cameras found"),
        Ok(list) => {
            for (index, name) in list {
                println!("{index}\t{name}");
            }
        }
        Err(e) => {
            eprintln!("camgraph: {e}");
            return ExitCode::FAILURE;
        }
    }
    #[cfg(not(feature = "v4l"))]
    println!("no cameras found (built without the 'v4l' feature)");
    ExitCode::SUCCESS
}

fn load(config: Option<&PathBuf>, registry: &Registry) -> anyhow::Result<GraphSpec> {
    let spec = match config {
        Some(path) => config::load_file(path, registry),
        None => config::parse(
            "configs/default.yaml (embedded)",
            camgraph::DEFAULT_CONFIG,
            registry,
        ),
    };
    spec.map_err(|errors| anyhow::anyhow!("invalid configuration, nothing started:\n{errors}"))
}

fn run(config: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    // The one place the core meets the plugins: everything else gets the registry from here.
    let registry = Arc::new(plugins::registry());
    let mut spec = load(config.as_ref(), &registry)?;
    if let Some(addr) = listen {
        spec.server.listen = addr;
    }
    let server_config = spec.server.clone();
    actix_web::rt::System::new().block_on(async move {
        let metrics = Metrics::new();
        let live = LiveGraph::start(spec, config.clone(), registry.clone(), &metrics)
            .context("cannot start the graph")?;
        let view = Arc::new(ArcSwap::from_pointee(GraphView::default()));
        let supervisor = Supervisor::new(live, view.clone()).start();
        let _watcher = match &config {
            Some(path) => Some(
                watch::watch_file(path, supervisor.clone().recipient())
                    .with_context(|| format!("cannot watch {}", path.display()))?,
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
        let (server, addr) = http::serve(state, &server_config)?;
        // Tests and scripts read this line to find the port.
        let scheme = if server_config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!("camgraph listening on {scheme}://{addr}");
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
            handle.stop(true).await;
        });
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloads = supervisor.clone();
        actix_web::rt::spawn(async move {
            while hangups.recv().await.is_some() {
                reloads.do_send(Reload { trigger: "SIGHUP" });
            }
        });
        server.await.context("HTTP server failed")?;
        let _ = supervisor.send(StopGraph).await;
        Ok(())
    })
}
