//! The `camgraph` command: runs a graph from a YAML file (or the embedded default), checks files,
//! lists cameras.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

use camgraph::app::App;
use camgraph::config::{self, GraphSpec};
use camgraph::graph::live::{Reload, StopGraph};
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
    match check_into(&mut std::io::stdout().lock(), files) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // The reader left (`camgraph check FILE | head`): stop quietly, as other tools do.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("camgraph: cannot write the report: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Writes each file's result to `out`; `Ok(true)` if every file is valid.
fn check_into(out: &mut impl Write, files: &[PathBuf]) -> std::io::Result<bool> {
    let registry = plugins::registry();
    let mut valid = true;
    for file in files {
        match config::load_file(file, &registry) {
            Ok(spec) => writeln!(out, "{}: ok ({} nodes)", file.display(), spec.nodes.len())?,
            Err(errors) => {
                valid = false;
                writeln!(out, "{errors}")?;
            }
        }
    }
    Ok(valid)
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
    let spec = load(config.as_ref(), &registry)?;
    // --listen moves only the HTTP bind: the spec keeps the file's `server:`, which reloads compare
    // with the file's next version.
    let mut server_config = spec.server.clone();
    if let Some(addr) = listen {
        server_config.listen = addr;
    }
    actix_web::rt::System::new().block_on(async move {
        // Caught from before the server answers, so no signal meets the default action (exit at once).
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangups = signal(SignalKind::hangup())?;
        let app = App::start(spec, config, registry, &server_config)?;
        // Tests and scripts read this line to find the port; nobody reading it (a closed pipe) is
        // no reason to stop.
        let scheme = if server_config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let _ = writeln!(
            std::io::stdout(),
            "camgraph listening on {scheme}://{}",
            app.addr
        );
        // One shutdown path for SIGINT (Ctrl-C) and SIGTERM (systemd, Docker).
        let (handle, owner) = (app.handle(), app.supervisor.clone());
        actix_web::rt::spawn(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!("{name} received: shutting down");
            // The graph first: its sinks end their viewers' streams, which the HTTP server's
            // graceful stop would otherwise wait for.
            let _ = owner.send(StopGraph).await;
            handle.stop(true).await;
        });
        let reloads = app.supervisor.clone();
        actix_web::rt::spawn(async move {
            while hangups.recv().await.is_some() {
                reloads.do_send(Reload { trigger: "SIGHUP" });
            }
        });
        app.run().await.context("HTTP server failed")?;
        Ok(())
    })
}
