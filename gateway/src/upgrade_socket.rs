//! Where the graceful upgrade's Unix socket lives, and the checks that keep another local
//! user away from it.
//!
//! On SIGQUIT the running process connects to this socket and sends its listening sockets
//! to whoever listens there; `run --upgrade` binds it (mode 0666, Pingora's choice) and
//! takes the sockets from whoever connects first. Pingora 0.9 creates, connects or
//! accepts, transfers and closes the connection inside one call (`transfer_fd`), so the
//! peer's credentials cannot be read on the connection itself. What guards it is the
//! directory: owned by this process's uid, no access for group or others, on a path no
//! other user can swap out. Checked at config load, before `--upgrade` binds, and right
//! before SIGQUIT's send (then with the socket file's owner too). docs/SECURITY.md says
//! what remains unchecked.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Directory created for the socket under the runtime or state directory.
pub const APP_DIR: &str = "edge-gateway";
pub const SOCKET_FILE: &str = "upgrade.sock";
/// `sun_path` holds 108 bytes on Linux, the terminating NUL included. Pingora would
/// panic on a longer path.
pub const MAX_PATH_BYTES: usize = 107;

const STICKY: u32 = 0o1000;
/// Write permission for group or others.
const SHARED_WRITE: u32 = 0o022;
/// Any permission for group or others.
const SHARED_ANY: u32 = 0o077;

/// Why a path is not safe (or not usable) for the upgrade socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    #[error("`{}` is not an absolute path", .0.display())]
    Relative(PathBuf),
    #[error("`{}` contains `..`; write the directory without it", .0.display())]
    ParentComponent(PathBuf),
    #[error("`{}` names no file", .0.display())]
    NoFileName(PathBuf),
    #[error("`{}` is {len} bytes long; a Unix socket path holds at most {MAX_PATH_BYTES}", path.display())]
    TooLong { path: PathBuf, len: usize },
    #[error("cannot inspect `{}`: {source}", path.display())]
    Inspect { path: PathBuf, source: io::Error },
    #[error("cannot create directory `{}` (mode 0700): {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("`{}` is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error(
        "directory `{}` is owned by uid {owner}, not by this process's uid {euid}",
        path.display()
    )]
    DirectoryNotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "directory `{}` (mode {mode:04o}) is {what} by group or others; it must be a private directory (mode 0700)",
        path.display()
    )]
    DirectoryShared {
        path: PathBuf,
        mode: u32,
        what: &'static str,
    },
    #[error(
        "`{}`, on the way to the socket, is owned by uid {owner}; only root or uid {euid} may own it",
        path.display()
    )]
    AncestorNotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "`{}`, on the way to the socket, is writable by group or others without the sticky bit (mode {mode:04o}): another user could replace what lies below it",
        path.display()
    )]
    AncestorShared { path: PathBuf, mode: u32 },
    #[error("`{}` exists and is not a socket (an upgrade would delete it)", .0.display())]
    NotASocket(PathBuf),
    #[error(
        "`{}` is owned by uid {owner}, not by this process's uid {euid}",
        path.display()
    )]
    SocketNotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "no process listens on `{}` (start `gateway run --upgrade` first)",
        .0.display()
    )]
    NoListener(PathBuf),
    #[error(
        "no private directory to put it in: XDG_RUNTIME_DIR is {xdg}, the process is not root, and HOME is not an absolute path; set it"
    )]
    NoDefault { xdg: &'static str },
}

/// What the default location depends on.
#[derive(Debug, Clone)]
pub struct Environment {
    pub euid: u32,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Environment {
    pub fn current() -> Self {
        Self {
            euid: effective_uid(),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The default socket path: `$XDG_RUNTIME_DIR/edge-gateway/upgrade.sock` when that is a
/// directory of ours with mode 0700 (what the XDG spec promises), else
/// `/run/edge-gateway/upgrade.sock` for root, else
/// `$HOME/.local/state/edge-gateway/upgrade.sock`.
pub fn default_path(env: &Environment) -> Result<PathBuf, SocketPathError> {
    let xdg = env.xdg_runtime_dir.as_deref();
    if let Some(dir) = xdg.filter(|dir| is_private_runtime_dir(dir, env.euid)) {
        return Ok(dir.join(APP_DIR).join(SOCKET_FILE));
    }
    if env.euid == 0 {
        return Ok(Path::new("/run").join(APP_DIR).join(SOCKET_FILE));
    }
    match env.home.as_deref().filter(|home| home.is_absolute()) {
        Some(home) => Ok(home.join(".local/state").join(APP_DIR).join(SOCKET_FILE)),
        None => Err(SocketPathError::NoDefault {
            xdg: if xdg.is_some() {
                "not a 0700 directory of this user"
            } else {
                "unset"
            },
        }),
    }
}

fn is_private_runtime_dir(dir: &Path, euid: u32) -> bool {
    dir.is_absolute()
        && fs::metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == euid && m.mode() & 0o777 == 0o700)
}

/// The checks a config load makes (no side effects): the path's shape, its directory
/// when it exists (else the nearest existing ancestor, since `run` creates the rest),
/// and that nothing but a socket sits at the path.
pub fn check_configured(socket: &Path, euid: u32) -> Result<(), SocketPathError> {
    let dir = directory_of(socket)?;
    match fs::metadata(dir) {
        Ok(_) => check_private_dir(dir, euid)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let existing = dir
                .ancestors()
                .find(|a| a.exists())
                .unwrap_or(Path::new("/"));
            check_ancestor(existing, euid)?;
            check_ancestors(existing, euid)?;
        }
        Err(source) => {
            return Err(SocketPathError::Inspect {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    match fs::symlink_metadata(socket) {
        Ok(meta) if !meta.file_type().is_socket() => {
            Err(SocketPathError::NotASocket(socket.to_path_buf()))
        }
        _ => Ok(()),
    }
}

/// At start: creates the socket's directory (mode 0700) when missing, then checks it,
/// and that a file already at the path is a socket of ours (`--upgrade` replaces it).
pub fn prepare(socket: &Path, euid: u32) -> Result<(), SocketPathError> {
    let dir = directory_of(socket)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SocketPathError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    check_private_dir(dir, euid)?;
    match fs::symlink_metadata(socket) {
        Ok(meta) => check_own_socket(socket, &meta, euid),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SocketPathError::Inspect {
            path: socket.to_path_buf(),
            source,
        }),
    }
}

/// Right before SIGQUIT's send: the directory is still private and the socket there was
/// bound by a process of our uid (a socket file belongs to the uid that bound it).
pub fn check_listener(socket: &Path, euid: u32) -> Result<(), SocketPathError> {
    let dir = directory_of(socket)?;
    check_private_dir(dir, euid)?;
    match fs::symlink_metadata(socket) {
        Ok(meta) => check_own_socket(socket, &meta, euid),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(SocketPathError::NoListener(socket.to_path_buf()))
        }
        Err(source) => Err(SocketPathError::Inspect {
            path: socket.to_path_buf(),
            source,
        }),
    }
}

fn directory_of(socket: &Path) -> Result<&Path, SocketPathError> {
    if !socket.is_absolute() {
        return Err(SocketPathError::Relative(socket.to_path_buf()));
    }
    if socket.components().any(|c| c == Component::ParentDir) {
        return Err(SocketPathError::ParentComponent(socket.to_path_buf()));
    }
    let len = socket.as_os_str().len();
    if len > MAX_PATH_BYTES {
        return Err(SocketPathError::TooLong {
            path: socket.to_path_buf(),
            len,
        });
    }
    match (socket.parent(), socket.file_name()) {
        (Some(dir), Some(_)) => Ok(dir),
        _ => Err(SocketPathError::NoFileName(socket.to_path_buf())),
    }
}

fn check_own_socket(socket: &Path, meta: &Metadata, euid: u32) -> Result<(), SocketPathError> {
    if !meta.file_type().is_socket() {
        return Err(SocketPathError::NotASocket(socket.to_path_buf()));
    }
    if meta.uid() != euid {
        return Err(SocketPathError::SocketNotOwned {
            path: socket.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    Ok(())
}

fn inspect(path: &Path) -> Result<Metadata, SocketPathError> {
    fs::metadata(path).map_err(|source| SocketPathError::Inspect {
        path: path.to_path_buf(),
        source,
    })
}

/// The socket's own directory: ours, no access for group or others (Pingora makes the
/// socket itself 0666, so the directory is the only gate), and every directory above
/// it safe.
pub fn check_private_dir(dir: &Path, euid: u32) -> Result<(), SocketPathError> {
    let meta = inspect(dir)?;
    if !meta.is_dir() {
        return Err(SocketPathError::NotADirectory(dir.to_path_buf()));
    }
    if meta.uid() != euid {
        return Err(SocketPathError::DirectoryNotOwned {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & SHARED_ANY != 0 {
        let what = if mode & SHARED_WRITE == 0 {
            "readable or searchable"
        } else if mode & STICKY != 0 {
            "writable (sticky bit or not)"
        } else {
            "writable"
        };
        return Err(SocketPathError::DirectoryShared {
            path: dir.to_path_buf(),
            mode,
            what,
        });
    }
    check_ancestors(dir, euid)
}

/// Every directory above `dir`, as written and with symbolic links resolved: owned by
/// root or us, and not writable by others unless sticky (as /tmp is), so nobody else
/// can rename or replace the directories below it.
fn check_ancestors(dir: &Path, euid: u32) -> Result<(), SocketPathError> {
    let canonical = fs::canonicalize(dir).map_err(|source| SocketPathError::Inspect {
        path: dir.to_path_buf(),
        source,
    })?;
    for ancestor in dir.ancestors().skip(1).chain(canonical.ancestors().skip(1)) {
        check_ancestor(ancestor, euid)?;
    }
    Ok(())
}

fn check_ancestor(path: &Path, euid: u32) -> Result<(), SocketPathError> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    let meta = inspect(path)?;
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(SocketPathError::AncestorNotOwned {
            path: path.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & SHARED_WRITE != 0 && mode & STICKY == 0 {
        return Err(SocketPathError::AncestorShared {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str, mode: u32) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("gw-upgrade-socket-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("create test dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
        dir
    }

    #[test]
    fn the_default_prefers_a_private_xdg_runtime_dir() {
        let euid = effective_uid();
        let private = temp_dir("xdg-private", 0o700);
        let shared = temp_dir("xdg-shared", 0o755);
        let env = |xdg: Option<&Path>, euid: u32, home: Option<&str>| Environment {
            euid,
            xdg_runtime_dir: xdg.map(Path::to_path_buf),
            home: home.map(PathBuf::from),
        };
        assert_eq!(
            default_path(&env(Some(&private), euid, Some("/home/op"))).expect("xdg"),
            private.join("edge-gateway/upgrade.sock")
        );
        // A runtime dir open to others, or not ours, is passed over.
        assert_eq!(
            default_path(&env(Some(&shared), 0, None)).expect("root"),
            Path::new("/run/edge-gateway/upgrade.sock")
        );
        let not_ours = euid.wrapping_add(1);
        assert_eq!(
            default_path(&env(Some(&private), not_ours, Some("/home/op"))).expect("home"),
            Path::new("/home/op/.local/state/edge-gateway/upgrade.sock")
        );
        assert!(matches!(
            default_path(&env(None, not_ours.max(1), Some("relative"))),
            Err(SocketPathError::NoDefault { xdg: "unset" })
        ));
        fs::remove_dir_all(private).ok();
        fs::remove_dir_all(shared).ok();
    }

    #[test]
    fn shared_or_foreign_directories_are_refused() {
        let euid = effective_uid();
        for (mode, fragment) in [
            (0o1777, "writable (sticky bit or not)"),
            (0o777, "is writable by group"),
            (0o750, "readable or searchable"),
        ] {
            let dir = temp_dir(&format!("mode-{mode:o}"), mode);
            let error = check_configured(&dir.join("upgrade.sock"), euid)
                .expect_err("shared directory refused")
                .to_string();
            assert!(error.contains(fragment), "{mode:o}: {error}");
            fs::remove_dir_all(dir).ok();
        }
        let dir = temp_dir("foreign", 0o700);
        let error = check_configured(&dir.join("upgrade.sock"), euid.wrapping_add(1))
            .expect_err("not ours")
            .to_string();
        assert!(error.contains("is owned by uid"), "{error}");
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn an_open_ancestor_without_sticky_bit_is_refused() {
        let euid = effective_uid();
        let open = temp_dir("open-ancestor", 0o777);
        let private = open.join("private");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .expect("private dir");
        let error = check_configured(&private.join("upgrade.sock"), euid)
            .expect_err("open ancestor")
            .to_string();
        assert!(error.contains("without the sticky bit"), "{error}");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).expect("chmod");
        check_configured(&private.join("upgrade.sock"), euid).expect("sticky ancestor is fine");
        fs::remove_dir_all(open).ok();
    }

    #[test]
    fn prepare_creates_the_directory_private_and_keeps_files_that_are_not_sockets() {
        let euid = effective_uid();
        let base = temp_dir("prepare", 0o700);
        let socket = base.join("a/b/upgrade.sock");
        check_configured(&socket, euid).expect("missing directory is created at run");
        prepare(&socket, euid).expect("prepared");
        for dir in [base.join("a"), base.join("a/b")] {
            let mode = fs::metadata(&dir).expect("created").mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        assert!(matches!(
            check_listener(&socket, euid),
            Err(SocketPathError::NoListener(_))
        ));
        fs::write(&socket, b"precious").expect("a regular file");
        for result in [
            check_configured(&socket, euid),
            prepare(&socket, euid),
            check_listener(&socket, euid),
        ] {
            assert!(matches!(result, Err(SocketPathError::NotASocket(_))));
        }
        fs::remove_file(&socket).expect("remove file");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        check_listener(&socket, euid).expect("our own listener");
        assert!(matches!(
            check_listener(&socket, euid.wrapping_add(1)),
            Err(SocketPathError::DirectoryNotOwned { .. })
        ));
        fs::remove_dir_all(base).ok();
    }

    #[test]
    fn paths_pingora_cannot_use_are_refused() {
        for (path, fragment) in [
            ("relative/upgrade.sock", "not an absolute path"),
            ("/run/../tmp/upgrade.sock", "contains `..`"),
            ("/", "names no file"),
        ] {
            let error = check_configured(Path::new(path), 0)
                .expect_err(path)
                .to_string();
            assert!(error.contains(fragment), "{path}: {error}");
        }
        let long = format!("/run/{}/upgrade.sock", "x".repeat(100));
        let error = check_configured(Path::new(&long), 0)
            .expect_err("too long")
            .to_string();
        assert!(error.contains("at most 107"), "{error}");
    }
}
