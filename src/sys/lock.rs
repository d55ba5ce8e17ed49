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

    /// Share the lock named `name` with other shared holders (the bakes reading one cache
    /// entry); wait (up to 10 minutes) while someone holds it exclusively (`bakery gc` removing
    /// that entry). A lock file removed by its exclusive holder while we waited is not the lock
    /// any more: then we open the new one and wait again.
    pub fn acquire_shared(dir: &Path, name: &str) -> Result<HostLock> {
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
            match Flock::lock(f, FlockArg::LockSharedNonblock) {
                Ok(l) if is_current(&l, &path) => return Ok(HostLock { _lock: l, path }),
                Ok(_) => {}
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, e)) => bail!("could not take lock {}: {e}", path.display()),
            }
        }
    }

    /// Take the lock named `name` exclusively if nobody (shared or exclusive) holds it now, and
    /// only if its file is still the one at its path (see [`HostLock::acquire_shared`]). Creates
    /// no file: a missing lock file means nobody holds it (`Ok(Some(None))`).
    pub fn try_acquire_existing(dir: &Path, name: &str) -> Result<Option<Option<HostLock>>> {
        let path = dir.join(format!("{name}.lock"));
        let f = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(None)),
            Err(e) => return Err(e).with_context(|| format!("opening lock {}", path.display())),
        };
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) if is_current(&l, &path) => Ok(Some(Some(HostLock { _lock: l, path }))),
            // Removed (with what it guarded) by another holder since we opened it.
            Ok(_) => Ok(Some(None)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => bail!("could not take lock {}: {e}", path.display()),
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
            Ok(l) if is_current(&l, &path) => Ok(Some(HostLock { _lock: l, path })),
            // Removed by its holder since we opened it: that holder was busy with it just now.
            Ok(_) => Ok(None),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => bail!("could not take lock {}: {e}", path.display()),
        }
    }
}

/// Is the locked file still the one at `path` (not unlinked, nor replaced, by a holder that
/// removed it after we opened it)?
fn is_current(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_holders_keep_out_an_exclusive_taker() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            matches!(
                HostLock::try_acquire_existing(d.path(), "c").unwrap(),
                Some(None)
            ),
            "no lock file: nobody holds it"
        );
        let a = HostLock::acquire_shared(d.path(), "c").unwrap();
        let b = HostLock::acquire_shared(d.path(), "c").unwrap();
        assert!(HostLock::try_acquire_existing(d.path(), "c")
            .unwrap()
            .is_none());
        drop(a);
        assert!(HostLock::try_acquire_existing(d.path(), "c")
            .unwrap()
            .is_none());
        drop(b);
        let x = HostLock::try_acquire_existing(d.path(), "c").unwrap();
        assert!(matches!(x, Some(Some(_))));
        // The exclusive holder removes the lock file with what it guarded: a shared taker that
        // opened the old file does not count it as the lock.
        std::fs::remove_file(d.path().join("c.lock")).unwrap();
        drop(x);
        let s = HostLock::acquire_shared(d.path(), "c").unwrap();
        assert!(s.path.exists());
    }

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
