//! Compiled components on disk, so that a restart, an upgrade, `gateway check` and a
//! reload do not compile a component the machine has compiled before.
//!
//! Loading machine code from disk is `unsafe` in wasmtime (`Component::deserialize`),
//! and this workspace forbids `unsafe`. What stays safe is wasmtime's own compilation
//! cache (`Config::cache`): `Component::new` looks up an entry keyed by the component's
//! bytes and the engine's compilation settings (target, flags, tunables, features,
//! wasmtime version), checks its header, and compiles (and stores) on a miss. That
//! cache trusts its directory's contents, so this module guards it:
//!
//! - the directory is ours alone (mode 0700, our uid, no ancestor others could swap);
//! - every entry is produced by a child process (`gateway compile-plugin`, niced) into
//!   a staging directory, then recorded in `index/` by its SHA-256 and moved into place:
//!   compilation's memory (hundreds of MB for a large component, which the allocator
//!   would keep) goes away with the child, and its CPU runs below the proxy's priority;
//! - before `Component::new`, the entry is checked against that record; a missing,
//!   corrupt or substituted entry is deleted and compiled again, never loaded.
//!
//! Layout: `wasmtime/` is wasmtime's (its worker deletes files it does not know),
//! `index/<key>` our records, `staging/` the children's output.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component as PathPart, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::{Cache, CacheConfig, Engine};

use crate::config::WasmFile;

/// Bumped when the layout or the key changes, so old records are never read.
const LAYOUT: &str = "edge-gateway plugin cache 1";
/// The hidden subcommand a child compiles with (`cli.rs`).
pub const COMPILE_COMMAND: &str = "compile-plugin";
/// A child's exit status when the component itself was refused (its error on stderr).
pub const EXIT_REFUSED: u8 = 3;
/// How much lower than the proxy a compiling child runs.
const CHILD_NICENESS: i32 = 19;

/// Why the cache cannot be used, or an entry cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("plugin cache directory `{}`: {source}", path.display())]
    Directory {
        path: PathBuf,
        source: crate::upgrade_socket::SocketPathError,
    },
    #[error("plugin cache `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("plugin cache: wasmtime refused the cache configuration: {0}")]
    Wasmtime(String),
    #[error("the compiling process could not run: {0}")]
    Child(String),
    #[error("the compiling process left no entry in `{}`", .0.display())]
    NoEntry(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cache of one engine: its directory and wasmtime's cache handle (whose hit
/// counter says whether a compilation was served from disk).
#[derive(Debug)]
pub struct PluginCache {
    dir: PathBuf,
    wasmtime: Cache,
}

/// What `check` found for a component.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// Recorded and intact: wasmtime may load it.
    Verified,
    /// No record (never compiled here, or under other engine settings).
    Missing,
    /// Recorded, but the file is gone, differs from the record, or the record is
    /// malformed: deleted, to be compiled again.
    Corrupt(String),
}

impl PluginCache {
    /// Prepares `dir` (created with mode 0700 when missing, then checked private) and
    /// the wasmtime cache inside it.
    pub fn open(dir: &Path) -> Result<(Self, Cache), CacheError> {
        let euid = crate::upgrade_socket::effective_uid();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        crate::upgrade_socket::check_private_dir(dir, euid).map_err(|source| {
            CacheError::Directory {
                path: dir.to_path_buf(),
                source,
            }
        })?;
        for sub in ["index", "staging", "wasmtime"] {
            let path = dir.join(sub);
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .map_err(io_error(&path))?;
        }
        let wasmtime = wasmtime_cache(&dir.join("wasmtime"))?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                wasmtime: wasmtime.clone(),
            },
            wasmtime,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Compilations wasmtime served from this cache so far.
    pub fn hits(&self) -> usize {
        self.wasmtime.cache_hits()
    }

    /// The record's name for `wasm` compiled by `engine`: the component's SHA-256 and
    /// everything of the engine that compiled code depends on.
    pub fn key(engine: &Engine, wasm: &WasmFile) -> String {
        use std::hash::Hash;
        let mut hasher = Sha256Hasher(Sha256::new());
        LAYOUT.hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        wasm.sha256.hash(&mut hasher);
        hex(&hasher.0.finalize())
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join("index").join(key)
    }

    /// Whether the entry recorded under `key` may be loaded. A corrupt one is deleted
    /// (entry and record) so that the next compilation replaces it.
    pub fn check(&self, key: &str) -> Entry {
        let record_path = self.record_path(key);
        let record = match fs::read_to_string(&record_path) {
            Ok(record) => record,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Entry::Missing,
            Err(e) => return self.discard(key, None, format!("record unreadable: {e}")),
        };
        let Some((relative, digest)) = parse_record(&record) else {
            return self.discard(key, None, "record malformed".into());
        };
        let entry = self.dir.join("wasmtime").join(relative);
        match file_digest(&entry) {
            Ok(actual) if actual == digest => Entry::Verified,
            Ok(_) => self.discard(key, Some(&entry), "entry differs from its record".into()),
            Err(e) => self.discard(key, Some(&entry), format!("entry unreadable: {e}")),
        }
    }

    fn discard(&self, key: &str, entry: Option<&Path>, why: String) -> Entry {
        // Removal failures are harmless here: a later compilation replaces both files.
        if let Some(entry) = entry {
            let _ = fs::remove_file(entry);
        }
        let _ = fs::remove_file(self.record_path(key));
        Entry::Corrupt(why)
    }

    /// Compiles `bytes` in a child process into the cache under `key`. `Err(Ok(message))`
    /// when the component itself was refused; `Err(Err(_))` when the child could not do
    /// its work (the caller may compile in-process instead).
    pub fn compile_in_child(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<(), Result<String, CacheError>> {
        let mut child = Command::new(current_exe())
            .arg(COMPILE_COMMAND)
            .arg("--cache-dir")
            .arg(&self.dir)
            .arg("--key")
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Err(CacheError::Child(format!("cannot start it: {e}"))))?;
        let input = child.stdin.take();
        let (written, output) = std::thread::scope(|scope| {
            // Written from a thread of its own: the child may fill its stderr pipe
            // before reading all of stdin. Dropping `input` closes the child's stdin.
            let writer = scope.spawn(move || input.map(|mut i| i.write_all(bytes)));
            let output = child.wait_with_output();
            (writer.join(), output)
        });
        let output = output.map_err(|e| Err(CacheError::Child(e.to_string())))?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        match output.status.code() {
            Some(0) => Ok(()),
            Some(code) if code == i32::from(EXIT_REFUSED) => Err(Ok(stderr)),
            _ => Err(Err(CacheError::Child(format!(
                "{} (stdin: {}): {stderr}",
                output.status,
                match written {
                    Ok(Some(Err(e))) => e.to_string(),
                    _ => "written".into(),
                }
            )))),
        }
    }

    /// Removes entries in wasmtime's directory that no record names, before a
    /// compilation in this process (whose lookup would otherwise load them unchecked).
    pub fn sweep_unrecorded(&self) -> Result<usize, CacheError> {
        let index = self.dir.join("index");
        let mut recorded = std::collections::HashSet::new();
        for record in fs::read_dir(&index).map_err(io_error(&index))? {
            let path = record.map_err(io_error(&index))?.path();
            if let Ok(text) = fs::read_to_string(&path)
                && let Some((relative, _)) = parse_record(&text)
            {
                recorded.insert(self.dir.join("wasmtime").join(relative));
            }
        }
        let mut removed = 0;
        for entry in entries(&self.dir.join("wasmtime"))? {
            if !recorded.contains(&entry) && fs::remove_file(&entry).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The child's side (`gateway compile-plugin`): reads the component from stdin,
/// compiles it with an engine like its parent's whose wasmtime cache is a fresh staging
/// directory, then records the one entry that appeared and moves it into the cache.
pub fn compile_child(
    dir: &Path,
    key: &str,
    build: impl FnOnce(Cache) -> Result<Engine, String>,
) -> Result<(), ChildFailure> {
    // Below the proxy's priority: a reload's compilation must not slow requests.
    let _ = rustix::process::nice(CHILD_NICENESS);
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ChildFailure::Other(format!("`{key}` is not a cache key")));
    }
    let mut bytes = Vec::new();
    io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| ChildFailure::Other(format!("reading the component: {e}")))?;
    let staging = dir.join("staging").join(format!(
        "{}-{}",
        std::process::id(),
        STAGING_SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let result = stage(dir, key, &staging, &bytes, build);
    let _ = fs::remove_dir_all(&staging);
    result
}

static STAGING_SERIAL: AtomicU64 = AtomicU64::new(0);

/// How a child failed.
#[derive(Debug)]
pub enum ChildFailure {
    /// The component does not compile.
    Refused(String),
    Other(String),
}

fn stage(
    dir: &Path,
    key: &str,
    staging: &Path,
    bytes: &[u8],
    build: impl FnOnce(Cache) -> Result<Engine, String>,
) -> Result<(), ChildFailure> {
    let other = |e: CacheError| ChildFailure::Other(e.to_string());
    fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .map_err(io_error(staging))
        .map_err(other)?;
    let cache = wasmtime_cache(staging).map_err(other)?;
    let engine = build(cache).map_err(ChildFailure::Other)?;
    wasmtime::component::Component::new(&engine, bytes)
        .map_err(|e| ChildFailure::Refused(format!("{e:#}")))?;
    let produced = entries(staging).map_err(other)?;
    let [entry] = produced.as_slice() else {
        return Err(other(CacheError::NoEntry(staging.to_path_buf())));
    };
    let relative = entry
        .strip_prefix(staging)
        .map_err(|_| other(CacheError::NoEntry(staging.to_path_buf())))?;
    let digest = file_digest(entry).map_err(io_error(entry)).map_err(other)?;
    let target = dir.join("wasmtime").join(relative);
    if let Some(parent) = target.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_error(parent))
            .map_err(other)?;
    }
    // The record first, then the entry: an entry in place always has its record.
    let record = dir.join("index").join(key);
    write_atomically(
        &record,
        format!("{}\n{digest}\n", relative.display()).as_bytes(),
    )
    .map_err(other)?;
    fs::rename(entry, &target)
        .map_err(io_error(&target))
        .map_err(other)
}

fn wasmtime_cache(dir: &Path) -> Result<Cache, CacheError> {
    let mut config = CacheConfig::new();
    config
        .with_directory(dir)
        // wasmtime would recompress a much-used entry in place, which its record
        // would then refuse.
        .with_optimized_compression_usage_counter_threshold(u64::MAX);
    Cache::new(config).map_err(|e| CacheError::Wasmtime(format!("{e:#}")))
}

/// Compiled entries below `dir/modules/<compiler>/`: files without an extension
/// (wasmtime's `.stats` and `.wip-*` files are not entries).
fn entries(dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let modules = dir.join("modules");
    let mut found = Vec::new();
    let compilers = match fs::read_dir(&modules) {
        Ok(compilers) => compilers,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(io_error(&modules)(e)),
    };
    for compiler in compilers {
        let compiler = compiler.map_err(io_error(&modules))?.path();
        if !compiler.is_dir() {
            continue;
        }
        for file in fs::read_dir(&compiler).map_err(io_error(&compiler))? {
            let path = file.map_err(io_error(&compiler))?.path();
            if path.is_file() && path.extension().is_none() {
                found.push(path);
            }
        }
    }
    Ok(found)
}

/// A record: the entry's path below `wasmtime/` (`modules/<compiler>/<name>`, nothing
/// else) and its SHA-256 in hex.
fn parse_record(text: &str) -> Option<(&Path, &str)> {
    let mut lines = text.lines();
    let (relative, digest) = (Path::new(lines.next()?), lines.next()?);
    let parts: Vec<_> = relative.components().collect();
    let plain = parts.len() == 3
        && parts[0] == PathPart::Normal("modules".as_ref())
        && parts.iter().all(|p| matches!(p, PathPart::Normal(_)));
    let hex_digest = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    (plain && hex_digest && lines.next().is_none()).then_some((relative, digest))
}

/// Temporary file and rename: a reader sees the old file or the whole new one.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), CacheError> {
    let temporary = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        STAGING_SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let written = fs::File::create(&temporary)
        .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.map_err(io_error(path))
}

/// This very binary, even when its file was replaced or deleted since it started
/// (an upgrade in place): Linux keeps `/proc/self/exe` pointing at what runs.
fn current_exe() -> PathBuf {
    let proc_self = PathBuf::from("/proc/self/exe");
    if proc_self.exists() {
        proc_self
    } else {
        std::env::current_exe().unwrap_or(proc_self)
    }
}

/// SHA-256 of a file, read in pieces (no copy of a large entry on the heap).
fn file_digest(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `Hash` output into SHA-256 (`finish` is never called: the digest is read whole).
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn records_name_a_plain_entry_and_a_digest() {
        let record = format!("modules/wasmtime-48.0.8/abc\n{DIGEST}\n");
        assert_eq!(
            parse_record(&record),
            Some((Path::new("modules/wasmtime-48.0.8/abc"), DIGEST))
        );
    }

    #[test]
    fn records_leading_elsewhere_are_refused() {
        for relative in [
            "/etc/passwd",
            "modules/../../x",
            "modules/x",
            "other/wasmtime-48.0.8/abc",
            "modules/wasmtime/../abc",
            "modules/a/b/c",
        ] {
            assert_eq!(
                parse_record(&format!("{relative}\n{DIGEST}\n")),
                None,
                "{relative}"
            );
        }
        assert_eq!(parse_record("modules/a/b\nnot-hex\n"), None);
        assert_eq!(
            parse_record(&format!("modules/a/b\n{DIGEST}\nmore\n")),
            None
        );
        assert_eq!(parse_record(""), None);
    }
}
