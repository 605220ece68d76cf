//! Process plumbing for `run`: detaching from the caller (`--daemonize`), the pid file,
//! the one-writer-per-group lock, and watching another process (`--watch-pid`).
//!
//! Why these exist: a Slurm Prolog's process group is killed when the Prolog exits and
//! slurmd waits for EOF on its output pipes, so a prolog-started agent must detach
//! completely and only then let the Prolog return; the Epilog finds it by its pid file.
//! Two agents pushing one group would overwrite each other every cycle, so the second
//! refuses to start.
//!
//! Everything here runs before the async runtime and the signal thread exist (`fork` in a
//! multi-threaded process is unsafe). It never touches metrics.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::{ForkResult, Pid};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("another agent (pid {pid}) is already pushing group {group} (lock {lock}); refusing to start a second writer")]
    Locked {
        pid: String,
        group: String,
        lock: PathBuf,
    },
    #[error("cannot {what} {path}: {reason}")]
    Io {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot daemonize: {0}")]
    Daemonize(String),
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ProcessError + 'a {
    move |e| ProcessError::Io {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The directory of the lock files: `configured` (`lock_dir`), else
/// `/run/arkouda-push-agent/locks` when `/run/arkouda-push-agent` is this user's (the
/// Prolog's state directory, owned by the agents' user), else
/// `$XDG_RUNTIME_DIR/arkouda-push-agent`, else the temp directory. Whichever it is, the
/// locks only go in a directory that no other user can write to ([`private_dir`]): a lock
/// another user could create or hold first would keep a job's agent from starting.
pub fn lock_dir(configured: Option<&Path>) -> Result<PathBuf, ProcessError> {
    let uid = nix::unistd::geteuid().as_raw();
    let base = match configured {
        Some(d) => d.to_path_buf(),
        None => {
            let state = Path::new("/run/arkouda-push-agent");
            let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
            if owned_dir(state, uid) {
                let locks = state.join("locks");
                make_dir(&locks)?;
                locks
            } else if let Some(x) = xdg.filter(|x| x.is_absolute() && owned_dir(x, uid)) {
                let d = x.join("arkouda-push-agent");
                make_dir(&d)?;
                d
            } else {
                std::env::temp_dir()
            }
        }
    };
    private_dir(&base, uid)
}

/// A directory (not a symlink) owned by `uid`.
fn owned_dir(path: &Path, uid: u32) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.uid() == uid)
}

fn make_dir(path: &Path) -> Result<(), ProcessError> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("create the lock directory", path)(e)),
    }
}

/// `dir` itself when only `uid` (or root) can write to it; else `dir/arkouda-push-agent-UID`,
/// created mode 0700, which must be a directory of `uid` that no one else can enter.
pub fn private_dir(dir: &Path, uid: u32) -> Result<PathBuf, ProcessError> {
    let meta = std::fs::metadata(dir).map_err(io_err("use the lock directory", dir))?;
    let owner_ok = meta.uid() == uid || meta.uid() == 0;
    if meta.is_dir() && owner_ok && meta.mode() & 0o022 == 0 {
        return Ok(dir.to_path_buf());
    }
    let own = dir.join(format!("arkouda-push-agent-{uid}"));
    make_dir(&own)?;
    let meta = std::fs::symlink_metadata(&own).map_err(io_err("inspect", &own))?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(ProcessError::Io {
            what: "use the lock directory",
            path: own,
            reason: format!(
                "it is not a directory of uid {uid} (owner uid {}); another user may have made it: set lock_dir to a directory of this user",
                meta.uid()
            ),
        });
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod the lock directory", &own))?;
    }
    Ok(own)
}

/// The lock file of a group: the SHA-256 of its full URL path, so that two groups never
/// share a lock and any label length gives a short file name.
pub fn lock_path(dir: &Path, group_path: &str) -> PathBuf {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, group_path.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("arkouda-push-agent-{hex}.lock"))
}

/// An exclusive lock held for the life of the process (the kernel drops it at exit, so a
/// killed agent never leaves a stale lock). Its file is removed when the lock is dropped.
pub struct GroupLock {
    file: File,
    path: PathBuf,
}

impl GroupLock {
    /// Takes the lock of `group_path` in `dir` (from [`lock_dir`]).
    pub fn acquire(dir: &Path, group_path: &str) -> Result<GroupLock, ProcessError> {
        let path = lock_path(dir, group_path);
        // A holder removes the file as it exits: a lock taken on a file that is no longer
        // the one at `path` is worthless, so take it again on the new one.
        for _ in 0..20 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_err("open the lock file", &path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = (&mut file).take(4096).read_to_string(&mut holder);
                    return Err(ProcessError::Locked {
                        pid: holder.lines().next().unwrap_or_default().trim().to_string(),
                        group: group_path.to_string(),
                        lock: path,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
            }
            let same = match (file.metadata(), std::fs::symlink_metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            // Record the holder and its group, for the next agent's message.
            let _ = file.set_len(0);
            let _ = write!(file, "{}\n{group_path}\n", std::process::id());
            return Ok(GroupLock { file, path });
        }
        Err(ProcessError::Io {
            what: "lock",
            path,
            reason: "the lock file kept changing under us".into(),
        })
    }
}

impl Drop for GroupLock {
    fn drop(&mut self) {
        // Removed while still held: whoever opened it meanwhile sees it is gone and retries.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// A pid file, removed on drop.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn write(path: &Path) -> Result<PidFile, ProcessError> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(io_err("write the pid file", path))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Forks; the parent waits until the child is detached (its own session, stdio on
/// /dev/null, cwd `/`) and reported ready, then exits 0 — or 1 with the child's reason.
/// Returns in the child, which must then call `ready` (or `fail`) on the returned handle.
///
/// Must be called while the process has one thread.
pub fn daemonize() -> Result<Readiness, ProcessError> {
    let (read, write) =
        nix::unistd::pipe().map_err(|e| ProcessError::Daemonize(format!("pipe: {e}")))?;
    // SAFETY: called before any other thread exists (see the module doc), so the child
    // may run arbitrary code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(ProcessError::Daemonize(format!("fork: {e}"))),
        Ok(ForkResult::Parent { .. }) => {
            drop(write);
            let mut answer = String::new();
            let _ = File::from(read).read_to_string(&mut answer);
            match answer.strip_prefix("ok") {
                Some(_) => std::process::exit(0),
                None => {
                    let reason = if answer.is_empty() {
                        "the agent exited before it was ready".to_string()
                    } else {
                        answer
                    };
                    crate::errln!("arkouda-push-agent: error: {reason}");
                    std::process::exit(1)
                }
            }
        }
        Ok(ForkResult::Child) => {
            drop(read);
            let mut ready = Readiness {
                pipe: Some(File::from(write)),
            };
            if let Err(e) = detach() {
                ready.fail(&e.to_string());
                std::process::exit(1);
            }
            Ok(ready)
        }
    }
}

fn detach() -> Result<(), ProcessError> {
    let d =
        |what: &'static str| move |e: nix::Error| ProcessError::Daemonize(format!("{what}: {e}"));
    nix::unistd::setsid().map_err(d("setsid"))?;
    nix::unistd::chdir("/").map_err(d("chdir /"))?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_err("open", Path::new("/dev/null")))?;
    nix::unistd::dup2_stdin(&null).map_err(d("redirect stdin"))?;
    nix::unistd::dup2_stdout(&null).map_err(d("redirect stdout"))?;
    nix::unistd::dup2_stderr(&null).map_err(d("redirect stderr"))?;
    Ok(())
}

/// The daemon's side of the readiness pipe.
pub struct Readiness {
    pipe: Option<File>,
}

impl Readiness {
    /// Lets the parent exit 0.
    pub fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"ok");
        }
    }

    /// Lets the parent exit 1 with `reason`.
    pub fn fail(&mut self, reason: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(reason.as_bytes());
        }
    }
}

/// Whether process `pid` still exists (EPERM: it exists, owned by someone else).
pub fn alive(pid: i32) -> bool {
    !matches!(
        kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Resolves once process `pid` is gone, checking every `every`.
pub async fn gone(pid: i32, every: Duration) {
    while alive(pid) {
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_never_collide_and_stay_short() {
        let dir = Path::new("/run/x");
        let a = lock_path(
            dir,
            "/metrics/job/arkouda/slurm_job_id/42/instance@base64/YS9i",
        );
        let b = lock_path(dir, "/metrics/job/arkouda/slurm_job_id/42/instance/a_b");
        // The old names mapped both `a/b` (base64) and `a_b` to one file: not any more.
        assert_ne!(a, b);
        let long = format!(
            "/metrics/job/arkouda/slurm_job_id/42/x/{}",
            "v".repeat(5000)
        );
        let l = lock_path(dir, &long);
        assert!(l.file_name().unwrap().len() < 100, "{l:?}");
        assert_eq!(l.parent(), Some(dir));
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("apa-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn second_lock_is_refused_with_the_holder_and_nothing_is_left() {
        let dir = scratch("second");
        let group = "/metrics/job/test/slurm_job_id/lock";
        let first = GroupLock::acquire(&dir, group).unwrap();
        let err = GroupLock::acquire(&dir, group).err().unwrap().to_string();
        assert!(
            err.starts_with(&format!("another agent (pid {})", std::process::id())),
            "{err}"
        );
        // Another group: its own lock.
        let other = GroupLock::acquire(&dir, "/metrics/job/test/slurm_job_id/lock2").unwrap();
        drop(first);
        drop(other);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "lock files left"
        );
        let again = GroupLock::acquire(&dir, group);
        assert!(again.is_ok());
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_not_used_as_is() {
        let uid = nix::unistd::geteuid().as_raw();
        let dir = scratch("shared");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let got = private_dir(&dir, uid).unwrap();
        assert_eq!(got, dir.join(format!("arkouda-push-agent-{uid}")));
        let mode = std::fs::metadata(&got).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A private directory is used as it is.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(private_dir(&dir, uid).unwrap(), dir);
        // A symlink planted in place of the private directory is refused.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::remove_dir(&got).unwrap();
        std::os::unix::fs::symlink("/", &got).unwrap();
        assert!(private_dir(&dir, uid).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn liveness() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(i32::MAX - 1));
    }
}
