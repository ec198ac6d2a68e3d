//! Breaker modes an operator set through the admin API. An override wins over the
//! file's `breaker.mode` until cleared with `{"state": "automatic"}` (or a reset); it is
//! written to `server.state_dir` so that a restart keeps it, and handed to the new
//! process on a graceful upgrade.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
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
    /// The newest operator action (set, clear, reset) per upstream, for a fleet's
    /// newest-wins rule; absent in files written before there were fleets.
    #[serde(default)]
    actions: BTreeMap<String, Stamp>,
}

/// When, and on which instance, an operator action was taken. Across a fleet the
/// greater stamp wins (time first, the instance's name breaking ties), so every
/// instance ends with the same mode whatever order the messages arrive in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    pub at_ms: u64,
    pub instance: String,
}

/// A remote action stamped further ahead than this is refused: a broken clock (or a
/// stranger on the channel) must not pin a mode that no later action can change.
pub const MAX_AHEAD_MS: u64 = 60_000;

/// What happened to an action from another instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    Applied,
    /// Older than (or as old as) what is known here.
    Stale,
    /// Stamped more than `MAX_AHEAD_MS` ahead of this clock.
    FromTheFuture,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Held {
    overrides: BTreeMap<String, Override>,
    actions: BTreeMap<String, Stamp>,
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
    held: Mutex<Held>,
    /// None: no state directory; overrides last as long as the process (and its
    /// upgrades).
    file: Option<PathBuf>,
    /// This instance's name in a fleet (stamps of its own actions).
    instance: OnceLock<String>,
}

impl OperatorModes {
    /// Opens (creating it when missing) the state directory and reads the overrides
    /// kept there. A file that cannot be read as overrides is an error: starting
    /// without an operator's forced-open would be worse than not starting.
    pub fn open(state_dir: Option<&Path>) -> Result<Self, StateError> {
        let Some(dir) = state_dir else {
            return Ok(Self {
                held: Mutex::default(),
                file: None,
                instance: OnceLock::new(),
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
        let held = match fs::read(&file) {
            Ok(bytes) => parse(&bytes).map_err(|message| StateError::Corrupt {
                path: file.clone(),
                message,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Held::default(),
            Err(source) => return Err(StateError::Read { path: file, source }),
        };
        Ok(Self {
            held: Mutex::new(held),
            file: Some(file),
            instance: OnceLock::new(),
        })
    }

    /// Names this instance in the stamps of its own actions (a fleet member).
    pub fn set_instance(&self, name: &str) {
        let _ = self.instance.set(name.to_string());
    }

    fn instance(&self) -> String {
        self.instance
            .get()
            .cloned()
            .unwrap_or_else(|| "local".into())
    }

    /// Whether overrides outlive the process.
    pub fn persisted(&self) -> bool {
        self.file.is_some()
    }

    pub fn get(&self, upstream: &str) -> Option<Override> {
        self.lock().overrides.get(upstream).cloned()
    }

    pub fn all(&self) -> BTreeMap<String, Override> {
        self.lock().overrides.clone()
    }

    /// The newest action known per upstream, for a fleet's sync.
    pub fn actions(&self) -> BTreeMap<String, Stamp> {
        self.lock().actions.clone()
    }

    /// An operator here sets (`Some`) or clears (`None`) the override of `upstream`,
    /// stamped after every action known for it; written to disk before it counts (a
    /// change that could not be kept is not made); then `act` runs with the override's
    /// mode, under the same lock as `with`, so a reload deciding modes at the same
    /// moment sees the change wholly or not at all. Returns the stamp.
    pub fn set(
        &self,
        upstream: &str,
        value: Option<Override>,
        act: impl FnOnce(Option<Mode>),
    ) -> Result<Stamp, StateError> {
        let mut held = self.lock();
        let known = held.actions.get(upstream).map_or(0, |s| s.at_ms);
        let stamp = Stamp {
            at_ms: now_unix_ms().max(known + 1),
            instance: self.instance(),
        };
        self.change(&mut held, upstream, value, stamp.clone())?;
        act(held.overrides.get(upstream).map(|o| o.mode));
        Ok(stamp)
    }

    /// Another instance's action: applied (and `act` run) only when its stamp is newer
    /// than every one known here and not from the future.
    pub fn set_remote(
        &self,
        upstream: &str,
        value: Option<Override>,
        stamp: Stamp,
        act: impl FnOnce(Option<Mode>),
    ) -> Result<Remote, StateError> {
        if stamp.at_ms > now_unix_ms().saturating_add(MAX_AHEAD_MS) {
            return Ok(Remote::FromTheFuture);
        }
        let mut held = self.lock();
        if held
            .actions
            .get(upstream)
            .is_some_and(|known| *known >= stamp)
        {
            return Ok(Remote::Stale);
        }
        self.change(&mut held, upstream, value, stamp)?;
        act(held.overrides.get(upstream).map(|o| o.mode));
        Ok(Remote::Applied)
    }

    fn change(
        &self,
        held: &mut Held,
        upstream: &str,
        value: Option<Override>,
        stamp: Stamp,
    ) -> Result<(), StateError> {
        let mut next = held.clone();
        match value {
            Some(mut o) => {
                o.since_unix_ms = stamp.at_ms;
                next.overrides.insert(upstream.to_string(), o);
            }
            None => {
                next.overrides.remove(upstream);
            }
        }
        next.actions.insert(upstream.to_string(), stamp);
        self.write(&next)?;
        *held = next;
        Ok(())
    }

    /// Calls `act` with the mode of the override of `upstream` in force, under the lock
    /// every change takes.
    pub fn with<R>(&self, upstream: &str, act: impl FnOnce(Option<Mode>) -> R) -> R {
        let held = self.lock();
        act(held.overrides.get(upstream).map(|o| o.mode))
    }

    /// Forgets overrides (and actions) of upstreams that no longer exist; keeps the file
    /// in step.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) -> Result<Vec<String>, StateError> {
        let mut held = self.lock();
        let gone: Vec<String> = held
            .overrides
            .keys()
            .filter(|n| !exists(n))
            .cloned()
            .collect();
        if !gone.is_empty() || held.actions.keys().any(|n| !exists(n)) {
            let mut next = held.clone();
            next.overrides.retain(|name, _| exists(name));
            next.actions.retain(|name, _| exists(name));
            self.write(&next)?;
            *held = next;
        }
        Ok(gone)
    }

    /// Takes another process's overrides and actions (graceful upgrade): they replace
    /// these, in memory even when they cannot be written (an operator's forced-open must
    /// not vanish with an upgrade; the error says they will not outlive this process).
    pub fn adopt(
        &self,
        overrides: BTreeMap<String, Override>,
        actions: BTreeMap<String, Stamp>,
    ) -> Result<(), StateError> {
        let mut held = self.lock();
        let next = Held { overrides, actions };
        if *held == next {
            return Ok(());
        }
        let written = self.write(&next);
        *held = next;
        written
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Temp file, fsync, rename: a crash leaves the old file or the new one, never half.
    fn write(&self, held: &Held) -> Result<(), StateError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let state = StateFile {
            version: VERSION,
            overrides: held.overrides.clone(),
            actions: held.actions.clone(),
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

fn parse(bytes: &[u8]) -> Result<Held, String> {
    let state: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if state.version != VERSION {
        return Err(format!(
            "version {} (this gateway writes version {VERSION})",
            state.version
        ));
    }
    Ok(Held {
        overrides: state.overrides,
        actions: state.actions,
    })
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
        let kept = again.get("api").expect("kept");
        assert_eq!(
            (kept.mode, kept.by.as_str()),
            (Mode::ForcedOpen, "127.0.0.1:1")
        );
        assert!(kept.since_unix_ms > 1_600_000_000_000, "stamped when set");
        assert!(
            again.actions().contains_key("api"),
            "the action's stamp is kept too"
        );
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

    #[test]
    fn the_newest_stamp_wins_and_a_future_one_is_refused() {
        let modes = OperatorModes::open(None).expect("memory");
        modes.set_instance("b");
        let now = now_unix_ms();
        let at = |ms: u64, instance: &str| Stamp {
            at_ms: ms,
            instance: instance.into(),
        };
        let applied = modes
            .set_remote("api", Some(forced("x")), at(now - 10, "a"), |_| {})
            .expect("remote");
        assert_eq!(applied, Remote::Applied);
        // Older, or as old from an instance named before: stale.
        for stamp in [at(now - 20, "c"), at(now - 10, "a")] {
            let r = modes
                .set_remote("api", None, stamp, |_| {})
                .expect("remote");
            assert_eq!(r, Remote::Stale);
        }
        // A tie on time goes to the greater instance name, the same everywhere.
        let r = modes
            .set_remote("api", None, at(now - 10, "c"), |_| {})
            .expect("remote");
        assert_eq!(r, Remote::Applied);
        assert_eq!(modes.get("api"), None, "cleared");
        // A local action is stamped after everything known, even with a slow clock.
        modes
            .set_remote("api", Some(forced("y")), at(now + 30_000, "a"), |_| {})
            .expect("remote");
        let stamp = modes.set("api", None, |_| {}).expect("local");
        assert!(
            stamp.at_ms > now + 30_000 && stamp.instance == "b",
            "{stamp:?}"
        );
        // Beyond a minute ahead of this clock: refused, nothing changes.
        let r = modes
            .set_remote("api", Some(forced("z")), at(now + 3_600_000, "z"), |_| {})
            .expect("remote");
        assert_eq!(r, Remote::FromTheFuture);
        assert_eq!(modes.get("api"), None);
    }
}
