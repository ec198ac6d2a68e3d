//! Breaker modes an operator set through the admin API. An override wins over the
//! file's `breaker.mode` until cleared with `{"state": "automatic"}` (or a reset); it is
//! written to `server.state_dir` so that a restart keeps it, and handed to the new
//! process on a graceful upgrade.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::breaker::Mode;

/// The file under `server.state_dir`.
pub const FILE: &str = "breaker-overrides.json";
/// The format the file is written in; another is refused, not guessed at.
const VERSION: u32 = 1;

/// One operator's override of one breaker's mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub mode: Mode,
    pub since_unix_ms: u64,
    /// The admin client's address.
    pub by: String,
    /// Whether the request carried a valid token (false where none is required).
    pub token: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    overrides: BTreeMap<String, Override>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory `{}` (mode 0700): {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("state directory `{}`: {source}", path.display())]
    Unsafe {
        path: PathBuf,
        source: crate::upgrade_socket::SocketPathError,
    },
    #[error("cannot read `{}`: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("`{}` is not a breaker override file: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write `{}`: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Every override in force, and where they are kept.
#[derive(Debug)]
pub struct OperatorModes {
    overrides: Mutex<BTreeMap<String, Override>>,
    /// None: no state directory; overrides last as long as the process (and its
    /// upgrades).
    file: Option<PathBuf>,
}

impl OperatorModes {
    /// Opens (creating it when missing) the state directory and reads the overrides
    /// kept there. A file that cannot be read as overrides is an error: starting
    /// without an operator's forced-open would be worse than not starting.
    pub fn open(state_dir: Option<&Path>) -> Result<Self, StateError> {
        let Some(dir) = state_dir else {
            return Ok(Self {
                overrides: Mutex::default(),
                file: None,
            });
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        let euid = crate::upgrade_socket::effective_uid();
        crate::upgrade_socket::check_private_dir(dir, euid).map_err(|source| {
            StateError::Unsafe {
                path: dir.to_path_buf(),
                source,
            }
        })?;
        let file = dir.join(FILE);
        let overrides = match fs::read(&file) {
            Ok(bytes) => parse(&bytes).map_err(|message| StateError::Corrupt {
                path: file.clone(),
                message,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StateError::Read { path: file, source }),
        };
        Ok(Self {
            overrides: Mutex::new(overrides),
            file: Some(file),
        })
    }

    /// Whether overrides outlive the process.
    pub fn persisted(&self) -> bool {
        self.file.is_some()
    }

    pub fn get(&self, upstream: &str) -> Option<Override> {
        self.lock().get(upstream).cloned()
    }

    pub fn all(&self) -> BTreeMap<String, Override> {
        self.lock().clone()
    }

    /// Sets (`Some`) or clears (`None`) the override of `upstream`, written to disk
    /// before it counts (a change that could not be kept is not made), then calls `act`
    /// with the override's mode, under the same lock as `with`: a reload deciding modes
    /// at the same moment sees the change either wholly or not at all.
    pub fn set(
        &self,
        upstream: &str,
        value: Option<Override>,
        act: impl FnOnce(Option<Mode>),
    ) -> Result<(), StateError> {
        let mut overrides = self.lock();
        let mut next = overrides.clone();
        let mode = value.as_ref().map(|o| o.mode);
        match value {
            Some(o) => next.insert(upstream.to_string(), o),
            None => next.remove(upstream),
        };
        if next != *overrides {
            self.write(&next)?;
            *overrides = next;
        }
        act(mode);
        Ok(())
    }

    /// Calls `act` with the mode of the override of `upstream` in force, under the lock
    /// every change takes.
    pub fn with<R>(&self, upstream: &str, act: impl FnOnce(Option<Mode>) -> R) -> R {
        let overrides = self.lock();
        act(overrides.get(upstream).map(|o| o.mode))
    }

    /// Forgets overrides of upstreams that no longer exist; keeps the file in step.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) -> Result<Vec<String>, StateError> {
        let mut overrides = self.lock();
        let gone: Vec<String> = overrides.keys().filter(|n| !exists(n)).cloned().collect();
        if !gone.is_empty() {
            let mut next = overrides.clone();
            next.retain(|name, _| exists(name));
            self.write(&next)?;
            *overrides = next;
        }
        Ok(gone)
    }

    /// Takes another process's overrides (graceful upgrade): they replace these, in
    /// memory even when they cannot be written (an operator's forced-open must not
    /// vanish with an upgrade; the error says they will not outlive this process).
    pub fn adopt(&self, overrides: BTreeMap<String, Override>) -> Result<(), StateError> {
        let mut current = self.lock();
        if *current == overrides {
            return Ok(());
        }
        let written = self.write(&overrides);
        *current = overrides;
        written
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Override>> {
        self.overrides.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Temp file, fsync, rename: a crash leaves the old file or the new one, never half.
    fn write(&self, overrides: &BTreeMap<String, Override>) -> Result<(), StateError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let state = StateFile {
            version: VERSION,
            overrides: overrides.clone(),
        };
        let error = |source| StateError::Write {
            path: file.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| error(io::Error::other(e)))?;
        let temp = file.with_extension(format!("json.{}.tmp", std::process::id()));
        let written = (|| {
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
            fs::rename(&temp, file)?;
            // The rename itself survives a power loss only once the directory is synced.
            match file.parent() {
                Some(dir) => fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(error(e));
        }
        Ok(())
    }
}

fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Override>, String> {
    let state: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if state.version != VERSION {
        return Err(format!(
            "version {} (this gateway writes version {VERSION})",
            state.version
        ));
    }
    Ok(state.overrides)
}

pub fn now_unix_ms() -> u64 {
    crate::events::unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A fresh directory of this test's own (the OS's temp dir; removed on drop).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("gw-modes-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("scratch dir");
            Self(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn forced(by: &str) -> Override {
        Override {
            mode: Mode::ForcedOpen,
            since_unix_ms: 1,
            by: by.into(),
            token: true,
        }
    }

    #[test]
    fn overrides_survive_a_reopen_and_clearing_removes_them() {
        let dir = Scratch::new("reopen");
        let state = dir.path().join("state");
        let modes = OperatorModes::open(Some(&state)).expect("open");
        modes
            .set("api", Some(forced("127.0.0.1:1")), |_| {})
            .expect("set");
        let mode = fs::metadata(&state).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let again = OperatorModes::open(Some(&state)).expect("reopen");
        assert_eq!(again.get("api"), Some(forced("127.0.0.1:1")));
        again.set("api", None, |_| {}).expect("clear");
        let third = OperatorModes::open(Some(&state)).expect("reopen");
        assert_eq!(third.get("api"), None);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = Scratch::new("corrupt");
        let state = dir.path().join("state");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&state)
            .expect("dir");
        fs::write(
            state.join(FILE),
            b"{\"version\": 1, \"overrides\": {\"api\": 7}}",
        )
        .expect("write");
        let err = OperatorModes::open(Some(&state)).expect_err("corrupt");
        assert!(
            err.to_string().contains(FILE),
            "error names the file: {err}"
        );
        fs::write(state.join(FILE), b"{\"version\": 9, \"overrides\": {}}").expect("write");
        let err = OperatorModes::open(Some(&state)).expect_err("version");
        assert!(err.to_string().contains("version 9"), "{err}");
    }

    #[test]
    fn retain_forgets_removed_upstreams() {
        let modes = OperatorModes::open(None).expect("memory");
        modes.set("api", Some(forced("a")), |_| {}).expect("set");
        modes.set("gone", Some(forced("b")), |_| {}).expect("set");
        let gone = modes.retain(|n| n == "api").expect("retain");
        assert_eq!(gone, vec!["gone".to_string()]);
        assert!(modes.get("api").is_some() && modes.get("gone").is_none());
    }
}
