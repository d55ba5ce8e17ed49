//! Host-wide advisory locks (flock on files under the lock dir): released by the kernel when the
//! holder dies, so a crashed bake never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// Where locks on host-global things live (loop device attach, EC2 device names): the same
/// directory for every bake on the host, whatever its `--work-dir`, so two bakes with different
/// work dirs still serialize. Under /run: a tmpfs, emptied at boot, like the devices it guards.
pub fn host_wide_dir() -> PathBuf {
    PathBuf::from("/run/lock/bakery")
}

#[derive(Debug)]
pub struct HostLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

impl HostLock {
    /// Block (up to 10 minutes) until the lock named `name` is ours.
    pub fn acquire(dir: &Path, name: &str) -> Result<HostLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating lock directory {}", dir.display()))?;
        let path = dir.join(format!("{name}.lock"));
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening lock {}", path.display()))?;
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(mut l) => {
                    let _ = l.set_len(0);
                    let _ = writeln!(*l, "{}", std::process::id());
                    return Ok(HostLock { _lock: l, path });
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, e)) => bail!("could not take lock {}: {e}", path.display()),
            }
        }
    }

    /// Take the lock only if it is free now.
    pub fn try_acquire(dir: &Path, name: &str) -> Result<Option<HostLock>> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating lock directory {}", dir.display()))?;
        let path = dir.join(format!("{name}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(HostLock { _lock: l, path })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => bail!("could not take lock {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_not_granted_twice() {
        let d = tempfile::tempdir().unwrap();
        let a = HostLock::try_acquire(d.path(), "dev").unwrap();
        assert!(a.is_some());
        assert!(HostLock::try_acquire(d.path(), "dev").unwrap().is_none());
        drop(a);
        assert!(HostLock::try_acquire(d.path(), "dev").unwrap().is_some());
    }
}
