//! The camgraph server as a child process of a bench, and reading its CPU use from /proc.

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// The camgraph server running as a child process; killed when dropped, error or not.
pub(crate) struct ServerProcess {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    pub(crate) base: String,
}

impl ServerProcess {
    pub(crate) fn start(exe: &Path, yaml: &str) -> anyhow::Result<ServerProcess> {
        let dir = Self::temp_dir()?;
        let config = dir.join("graph.yaml");
        fs::write(&config, yaml)?;
        let mut command = Command::new(exe);
        command
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info");
        Self::spawn(command, dir)
    }

    /// The `fanout --floor` bare server (this binary) serving `source`.
    pub(crate) fn start_floor(source: &Path, stream_path: &str) -> anyhow::Result<ServerProcess> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("floor-server")
            .arg("--source")
            .arg(source)
            .args(["--stream-path", stream_path]);
        Self::spawn(command, Self::temp_dir()?)
    }

    fn temp_dir() -> anyhow::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("camgraph-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Starts `command` and waits for the `... listening on URL` line it prints on stdout.
    fn spawn(mut command: Command, dir: PathBuf) -> anyhow::Result<ServerProcess> {
        let log = dir.join("server.log");
        let exe = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {exe}"))?;
        let mut server = ServerProcess {
            child,
            dir,
            log,
            base: String::new(),
        };
        let stdout = server.child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, url)) = line.split_once(" listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) if base.starts_with("http://127.0.0.1:") => server.base = base,
            Ok(base) => bail!("{exe} listens on {base}, not on 127.0.0.1"),
            Err(_) => bail!(
                "{exe} did not print its address within 30 s; its log:\n{}",
                server.log_text()
            ),
        }
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if the server has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the server exited ({status}); its log:\n{}",
                self.log_text()
            );
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The server binary: the one given, or `camgraph` next to this executable.
pub(crate) fn server_exe(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let exe = match given {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("camgraph"),
    };
    if !exe.is_file() {
        bail!(
            "no server binary at {}: build both binaries with `cargo build --release --bins`",
            exe.display()
        );
    }
    Ok(exe)
}

/// Clock ticks per second of /proc/<pid>/stat times.
pub(crate) fn clock_ticks() -> (f64, &'static str) {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    match out
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        Some(t) if t > 0.0 => (t, "from getconf CLK_TCK"),
        _ => (100.0, "ASSUMED (getconf CLK_TCK failed)"),
    }
}

/// (command name, utime + stime in ticks) from a /proc stat file.
pub(crate) fn stat_ticks(path: &Path) -> io::Result<(String, u64)> {
    let text = fs::read_to_string(path)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("{}", path.display()));
    let open = text.find('(').ok_or_else(bad)?;
    let close = text.rfind(')').ok_or_else(bad)?;
    let name = text[open + 1..close].to_string();
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |i: usize| -> io::Result<u64> {
        fields.get(i).and_then(|v| v.parse().ok()).ok_or_else(bad)
    };
    Ok((name, field(11)? + field(12)?))
}
