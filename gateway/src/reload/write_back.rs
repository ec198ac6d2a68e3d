//! Settings changed through the admin API, written back into the config file: the
//! file stays the single source of truth, so a later reload, restart or upgrade keeps
//! what an operator set, and the file in version control says what runs.
//!
//! The order makes a change all or nothing: the file on disk must be the text that is
//! running (else someone edited it: 409 naming its new hash, never overwritten); the
//! edit is checked by the same rules and messages as the file; the new text is written
//! (temp file, fsync, rename) before the runtime is swapped, and put back if the swap
//! is refused.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::config::edit::{self, EditError};
use crate::config::{self, Config};
use crate::upstream::Fresh;

/// The sections of an upstream the settings API may change.
pub const SECTIONS: [&str; 4] = [
    "breaker",
    "retries",
    "outlier_detection",
    "max_concurrent_requests",
];

/// One change asked for.
pub struct SectionChange<'a> {
    pub upstream: &'a str,
    pub section: &'a str,
    /// Merged into the section: an object key by key, `null` removes.
    pub change: &'a Json,
    /// The file hash the client last saw (`If-Match`), if it said.
    pub if_match: Option<&'a str>,
    /// Names the change in logs and the reload record.
    pub trigger: &'a str,
}

/// What a change did.
#[derive(Debug)]
pub struct Written {
    pub old: Json,
    pub new: Json,
    pub old_hash: String,
    pub new_hash: String,
    pub generation: u64,
    pub fresh_upstreams: Vec<Fresh>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteBackError {
    #[error("no upstream named `{0}`")]
    UnknownUpstream(String),
    #[error("`{0}` is not a section the API changes; use one of {SECTIONS:?}")]
    UnknownSection(String),
    #[error(
        "the config file changed since it was loaded (its hash is now {file_hash}); nothing was written: reload or read it again, then retry"
    )]
    Conflict { file_hash: String },
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write config file {}: {source}; nothing was changed", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("the change does not pass the config's checks; nothing was written")]
    Invalid(Vec<String>),
}

/// The checked new text and config, before anything is written.
pub struct Prepared {
    /// The hash of the file as read (= the running text's).
    pub on_disk: String,
    pub text: String,
    pub config: Config,
    pub old: Json,
    pub new: Json,
    pub old_hash: String,
}

pub fn prepare(
    path: &Path,
    running: &Config,
    change: &SectionChange<'_>,
) -> Result<Prepared, WriteBackError> {
    if !running.upstreams.contains_key(change.upstream) {
        return Err(WriteBackError::UnknownUpstream(change.upstream.to_string()));
    }
    if !SECTIONS.contains(&change.section) {
        return Err(WriteBackError::UnknownSection(change.section.to_string()));
    }
    let on_disk = std::fs::read_to_string(path).map_err(|source| WriteBackError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let running_hash = config::text_hash(&running.text);
    let disk_hash = config::text_hash(&on_disk);
    if disk_hash != running_hash || change.if_match.is_some_and(|h| h != running_hash) {
        return Err(WriteBackError::Conflict {
            file_hash: disk_hash,
        });
    }
    let at = ["upstreams", change.upstream, change.section];
    let text = edit::merge(&on_disk, &at, change.change)?;
    let known = config::KnownHosts::of(running);
    let config = config::parse_knowing(&text, path, &known).map_err(|errors| {
        WriteBackError::Invalid(errors.0.iter().map(ToString::to_string).collect())
    })?;
    Ok(Prepared {
        on_disk: disk_hash,
        old: edit::section(&on_disk, &at)?,
        new: edit::section(&text, &at)?,
        text,
        config,
        old_hash: running_hash,
    })
}

/// Replaces the file at `path` (the file a symlink points at, so the link stays) with
/// `text`, if the file still reads as `expected` (its text hash) just before the
/// rename: an edit saved while the change was being checked (which may take seconds:
/// host names are looked up, plugins loaded) is never overwritten. A temp file beside
/// it (created new, with the file's mode, before anything is written to it), fsync,
/// rename, fsync of the directory: a reader sees the old file or the new one.
pub fn write_if_unchanged(path: &Path, expected: &str, text: &str) -> Result<(), WriteBackError> {
    let failed = |source| WriteBackError::Write {
        path: path.to_path_buf(),
        source,
    };
    let target = std::fs::canonicalize(path).map_err(failed)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.gateway-{}.tmp", std::process::id()));
    let mode = std::fs::metadata(&target).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(failed)?;
    let prepared = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = prepared {
        let _ = std::fs::remove_file(&temp);
        return Err(failed(e));
    }
    let on_disk = std::fs::read_to_string(&target).map_err(failed);
    match on_disk {
        Ok(now) if config::text_hash(&now) == expected => {}
        other => {
            let _ = std::fs::remove_file(&temp);
            let file_hash = other.map(|now| config::text_hash(&now))?;
            return Err(WriteBackError::Conflict { file_hash });
        }
    }
    if let Err(e) = std::fs::rename(&temp, &target) {
        let _ = std::fs::remove_file(&temp);
        return Err(failed(e));
    }
    // The file is replaced; a directory that cannot be synced only weakens durability.
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(target: "gateway::reload", dir = %dir.display(), error = %e, "config file written; its directory could not be synced");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_a_symlink_points_at() {
        let dir = std::env::temp_dir().join(format!("gw-write-back-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let real = dir.join("real.yaml");
        let link = dir.join("gateway.yaml");
        std::fs::write(&real, "old").expect("write");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        write_if_unchanged(&link, &config::text_hash("old"), "new").expect("write back");
        assert_eq!(std::fs::read_to_string(&real).expect("read"), "new");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink()
        );
        let leftovers = std::fs::read_dir(&dir)
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .count();
        assert_eq!(leftovers, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod conflict_tests {
    use super::*;

    #[test]
    fn a_file_changed_before_the_rename_is_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("gw-write-back-c-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("gateway.yaml");
        std::fs::write(&file, "edited by someone else").expect("write");
        let error = write_if_unchanged(&file, &config::text_hash("what we read"), "ours")
            .expect_err("conflict");
        assert!(
            matches!(&error, WriteBackError::Conflict { file_hash } if *file_hash == config::text_hash("edited by someone else")),
            "{error}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            "edited by someone else"
        );
        assert_eq!(
            std::fs::read_dir(&dir).expect("dir").count(),
            1,
            "no temp file left"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
