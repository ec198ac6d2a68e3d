//! Reload when the config file changes, however it changes: written in place (possibly
//! in several chunks), replaced by an editor's write-to-temp-then-rename, swapped by a
//! Kubernetes ConfigMap (`..data` symlink pointing at a new directory), or deleted and
//! recreated. Certificate, key and CA files the config names are watched the same way.
//! The directory is watched, not the file, so replacements are seen; only
//! events that name the file or a link on its way (`..data`) count, so a busy
//! neighbour (a log file next to the config) cannot starve reloads; events are
//! debounced, and a reload happens only when the content really changed.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use super::{ReloadResult, Reloader};

/// Quiet time after the last file event before reading the file.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// However busy the file, read it at least this soon after the first event.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Names whose changes can change what `path` reads: the file itself, the first hop of
/// a relative symlink (Kubernetes' `..data`), and the file its links resolve to.
fn relevant_names(path: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = path
        .file_name()
        .map(|n| n.to_os_string())
        .into_iter()
        .collect();
    if let Ok(link) = std::fs::read_link(path)
        && link.is_relative()
        && let Some(Component::Normal(first)) = link.components().next()
    {
        names.push(first.to_os_string());
    }
    if let Some(name) = std::fs::canonicalize(path)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_os_string()))
    {
        names.push(name);
    }
    names
}

/// Directories to watch: the file's own, and the one its symlink target lives in.
fn directories(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(path)];
    if let Ok(target) = std::fs::canonicalize(path) {
        let target_dir = parent(&target);
        if !dirs.contains(&target_dir) {
            dirs.push(target_dir);
        }
    }
    dirs
}

/// The config file and every file it points at whose change should reload it:
/// certificates, keys and CA bundles (plugins are reloaded on demand, see PLUGINS.md).
fn watched_files(reloader: &Reloader) -> Vec<PathBuf> {
    let config = reloader.runtime().snapshot().config.clone();
    let mut files = vec![reloader.path().to_path_buf()];
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        for certificate in &tls.certificates {
            files.push(certificate.cert.clone());
            files.push(certificate.key.clone());
        }
    }
    files.extend(
        config
            .upstreams
            .values()
            .filter_map(|u| u.tls.as_ref()?.ca_file.clone()),
    );
    files
}

/// What to watch for a set of files: their directories and the names that matter.
fn watch_set(files: &[PathBuf]) -> (Vec<PathBuf>, Vec<OsString>) {
    let mut dirs = Vec::new();
    let mut names = Vec::new();
    for file in files {
        for dir in directories(file) {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        names.extend(relevant_names(file));
    }
    (dirs, names)
}

pub fn spawn(reloader: Arc<Reloader>) -> notify::Result<()> {
    let (tx, rx) = mpsc::channel::<()>();
    let (mut dirs, names) = watch_set(&watched_files(&reloader));
    let names = Arc::new(Mutex::new(names));
    let filter = Arc::clone(&names);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let names = filter.lock().unwrap_or_else(|p| p.into_inner());
        let relevant = event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| names.iter().any(|name| name == n))
        });
        if relevant {
            let _ = tx.send(());
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Wait for the writes to settle, but not forever.
                let first = Instant::now();
                while first.elapsed() < MAX_DELAY && rx.recv_timeout(DEBOUNCE).is_ok() {}
                if !reloader.path().exists() {
                    // Mid-replacement or deleted: the recreate will send another event.
                    tracing::debug!(target: "gateway::reload", "config file missing; waiting for it to come back");
                    continue;
                }
                if let ReloadResult::Unchanged { .. } = reloader.reload("file") {
                    tracing::trace!(target: "gateway::reload", "file event without content change");
                }
                // The config may now point at other files.
                let (new_dirs, new_names) = watch_set(&watched_files(&reloader));
                for dir in new_dirs.iter().filter(|d| !dirs.contains(d)) {
                    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                        tracing::warn!(target: "gateway::reload", dir = %dir.display(), error = %e, "cannot watch directory");
                    }
                }
                dirs = new_dirs;
                *names.lock().unwrap_or_else(|p| p.into_inner()) = new_names;
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(())
}
