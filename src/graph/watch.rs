//! Reloads the configuration when its file changes. Editors often write a new file and rename it
//! over the old one, so the folder is watched, not the file; bursts of events are debounced into
//! one reload.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use actix::Recipient;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::live::Reload;

/// Quiet time after the last event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `path`; keep the returned watcher alive for as long as reloads are wanted.
pub fn watch_file(path: &Path, reload: Recipient<Reload>) -> notify::Result<RecommendedWatcher> {
    let path: PathBuf = std::path::absolute(path)?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let name = path.file_name().map(|n| n.to_os_string());
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading the file ourselves shows up as access events: never react to those.
        let relevant = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        );
        if relevant
            && event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                while rx.recv_timeout(DEBOUNCE).is_ok() {}
                reload.do_send(Reload { trigger: "file" });
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    tracing::info!(file = %path.display(), "watching the configuration file for changes");
    Ok(watcher)
}
