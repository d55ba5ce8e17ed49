//! The caches bakes keep under the work dir on purpose — base snapshots read with the EBS direct
//! APIs (`snapshots/`), built-in bases (`bases/`) — and the rule that keeps `bakery gc` from
//! removing an entry a bake is using.
//!
//! An entry is every file of one cache directory whose name starts with the same key (the name
//! up to its first `.`): `snap-0123.raw`, `snap-0123.raw.hashes` and `snap-0123.lock` are the
//! entry `snap-0123`. Names starting with `.` (a sink's temporary output) are no entry.
//!
//! A bake holds an entry with [`Use::hold`] from before it fills or reads it until it has copied
//! it: a shared lock `<work-dir>/locks/cache-<kind>-<key>.lock`, so any number of bakes share
//! it; `bakery gc` removes an entry only under that lock taken exclusively, so never while a
//! bake holds it. A new cache joins retention by adding its [`CacheKind`] to [`kinds`] and
//! holding its entries with [`Use`].

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::sys::lock::HostLock;

/// One cache directory under the work dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKind {
    /// Singular, as reports name an entry: `snapshot`, `base`.
    pub name: &'static str,
    pub dir: PathBuf,
}

/// Every cache under `work_dir` that `bakery gc` keeps within `--cache-budget`.
pub fn kinds(work_dir: &Path) -> Vec<CacheKind> {
    vec![
        CacheKind {
            name: "snapshot",
            dir: work_dir.join("snapshots"),
        },
        CacheKind {
            name: "base",
            dir: work_dir.join("bases"),
        },
    ]
}

/// The name of the lock that guards entry `key` of cache `kind`.
pub fn lock_name(kind: &str, key: &str) -> String {
    format!("cache-{kind}-{key}")
}

/// A bake's hold on one cache entry: while any bake holds it, `bakery gc` leaves it alone.
#[derive(Debug)]
pub struct Use {
    _lock: HostLock,
}

impl Use {
    /// Hold entry `key` of cache `kind` (waits while `bakery gc` is removing it).
    pub fn hold(work_dir: &Path, kind: &str, key: &str) -> Result<Use> {
        let lock = HostLock::acquire_shared(&work_dir.join("locks"), &lock_name(kind, key))
            .with_context(|| format!("holding the cached {kind} {key}"))?;
        Ok(Use { _lock: lock })
    }

    /// Record that the bake used `path` now (its access time, which least-recently-used
    /// retention reads; mounts with `noatime` or `relatime` would not).
    pub fn touch(&self, path: &Path) {
        let now = std::fs::FileTimes::new().set_accessed(SystemTime::now());
        if let Err(e) = std::fs::File::open(path).and_then(|f| f.set_times(now)) {
            tracing::debug!("marking {} as used: {e}", path.display());
        }
    }
}

/// An entry's key: its file name up to the first `.`; `None` for hidden names.
pub fn key_of(file_name: &str) -> Option<&str> {
    if file_name.starts_with('.') || file_name.is_empty() {
        return None;
    }
    Some(file_name.split('.').next().unwrap_or(file_name))
}

/// The entries of one cache directory: key -> its paths (sorted). A missing directory has none.
pub fn entries(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(key) = key_of(&name) {
            out.entry(key.to_string()).or_default().push(e.path());
        }
    }
    for paths in out.values_mut() {
        paths.sort();
    }
    out
}

/// Bytes allocated on disk by `paths` (directories walked, symlinks not followed) and their
/// latest modification — or, with `with_access`, access — time.
pub fn measure(paths: &[PathBuf], with_access: bool) -> (u64, SystemTime) {
    fn walk(p: &Path, with_access: bool, bytes: &mut u64, latest: &mut SystemTime) {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return;
        };
        // st_blocks is in 512-byte units whatever the filesystem's block size (stat(2)).
        *bytes += m.blocks() * 512;
        let mut t = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if with_access {
            t = t.max(m.accessed().unwrap_or(SystemTime::UNIX_EPOCH));
        }
        *latest = (*latest).max(t);
        if m.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), with_access, bytes, latest);
            }
        }
    }
    let (mut bytes, mut latest) = (0, SystemTime::UNIX_EPOCH);
    for p in paths {
        walk(p, with_access, &mut bytes, &mut latest);
    }
    (bytes, latest)
}

/// Is entry `key` of cache `kind` held by a bake now? (Takes and drops the lock; creates no file.)
pub fn in_use(work_dir: &Path, kind: &str, key: &str) -> bool {
    !matches!(
        HostLock::try_acquire_existing(&work_dir.join("locks"), &lock_name(kind, key)),
        Ok(Some(_))
    )
}

/// Remove entry `key` of cache `kind` (its `paths`) unless a bake holds it: `Ok(false)` then.
/// Its lock file goes too, while still held.
pub fn remove(work_dir: &Path, kind: &str, key: &str, paths: &[PathBuf]) -> Result<bool> {
    let Some(lock) = HostLock::try_acquire(&work_dir.join("locks"), &lock_name(kind, key))? else {
        return Ok(false);
    };
    let mut failed = Vec::new();
    for p in paths {
        let r = match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
            Ok(_) => std::fs::remove_file(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            failed.push(format!("{}: {e}", p.display()));
        }
    }
    let _ = std::fs::remove_file(&lock.path);
    anyhow::ensure!(failed.is_empty(), "removing {}", failed.join("; "));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_group_files_by_key() {
        assert_eq!(key_of("snap-0123.raw.hashes"), Some("snap-0123"));
        assert_eq!(
            key_of("debian-bookworm-00ff.raw"),
            Some("debian-bookworm-00ff")
        );
        assert_eq!(key_of(".x.raw.bakery-bk-0123456789ab.partial"), None);
        let d = tempfile::tempdir().unwrap();
        for f in [
            "snap-1.raw",
            "snap-1.raw.hashes",
            "snap-1.lock",
            "snap-2.raw",
            ".tmp",
        ] {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        let e = entries(d.path());
        assert_eq!(e.keys().collect::<Vec<_>>(), ["snap-1", "snap-2"]);
        assert_eq!(e["snap-1"].len(), 3);
        assert!(entries(&d.path().join("missing")).is_empty());
    }

    #[test]
    fn a_held_entry_is_not_removed() {
        let top = tempfile::tempdir().unwrap();
        let f = top.path().join("snap-1.raw");
        std::fs::write(&f, vec![1u8; 8192]).unwrap();
        let (bytes, _) = measure(std::slice::from_ref(&f), true);
        assert!(bytes >= 8192, "{bytes}");
        assert!(!in_use(top.path(), "snapshot", "snap-1"));
        let u = Use::hold(top.path(), "snapshot", "snap-1").unwrap();
        assert!(in_use(top.path(), "snapshot", "snap-1"));
        assert!(!remove(top.path(), "snapshot", "snap-1", std::slice::from_ref(&f)).unwrap());
        assert!(f.exists());
        drop(u);
        assert!(remove(top.path(), "snapshot", "snap-1", std::slice::from_ref(&f)).unwrap());
        assert!(!f.exists());
        assert!(
            !top.path().join("locks/cache-snapshot-snap-1.lock").exists(),
            "the lock file goes with its entry"
        );
    }
}
