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
use std::os::unix::fs::OpenOptionsExt;
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

/// The default directory of lock files: `/run/lock` (shared by every user and not hidden
/// by a unit's PrivateTmp), else the temp directory.
pub fn default_lock_dir() -> PathBuf {
    let run_lock = Path::new("/run/lock");
    if run_lock.is_dir() {
        run_lock.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// The lock file of a group: its URL path, made a file name.
pub fn lock_path(dir: &Path, group_path: &str) -> PathBuf {
    let name: String = group_path
        .trim_start_matches("/metrics/")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("arkouda-push-agent.{name}.lock"))
}

/// An exclusive lock held for the life of the process (the kernel drops it at exit, so a
/// killed agent never leaves a stale lock).
pub struct GroupLock {
    // Held, never read: the lock lives as long as this descriptor.
    _file: File,
}

impl GroupLock {
    pub fn acquire(dir: &Path, group_path: &str) -> Result<GroupLock, ProcessError> {
        let path = lock_path(dir, group_path);
        // Readable by all, so another user's agent for the same job can see the holder.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .or_else(|_| File::open(&path))
            .map_err(io_err("open the lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(ProcessError::Locked {
                    pid: pid.trim().to_string(),
                    group: group_path.to_string(),
                    lock: path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        // Record the holder (best effort: a read-only open cannot, and need not).
        let _ = file.set_len(0);
        let _ = write!(file, "{}", std::process::id());
        Ok(GroupLock { _file: file })
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
    fn lock_names_are_file_names() {
        let p = lock_path(
            Path::new("/run/lock"),
            "/metrics/job/arkouda/slurm_job_id/42/instance@base64/YS9i",
        );
        assert_eq!(
            p,
            PathBuf::from("/run/lock/arkouda-push-agent.job_arkouda_slurm_job_id_42_instance@base64_YS9i.lock")
        );
    }

    #[test]
    fn second_lock_is_refused_with_the_holder() {
        let dir = std::env::temp_dir();
        let group = format!("/metrics/job/test/slurm_job_id/lock-{}", std::process::id());
        let first = GroupLock::acquire(&dir, &group).unwrap();
        let err = GroupLock::acquire(&dir, &group).err().unwrap().to_string();
        assert!(
            err.starts_with(&format!("another agent (pid {})", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = GroupLock::acquire(&dir, &group);
        assert!(again.is_ok());
        let _ = std::fs::remove_file(lock_path(&dir, &group));
    }

    #[test]
    fn liveness() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(i32::MAX - 1));
    }
}
