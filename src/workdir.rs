//! The per-bake work directory under `<work-dir>/work/<bake-id>`: scratch files live here and go
//! away with the bake; logs and cached bases live beside it and stay.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::warn;

use crate::sys::lock::HostLock;

#[derive(Debug)]
pub struct WorkDir {
    pub top: PathBuf,
    pub dir: PathBuf,
    pub bake_id: String,
    /// Held for the life of the bake: `bakery gc` knows a bake is running by this lock, and the
    /// kernel drops it if the process dies, however it dies.
    _alive: HostLock,
}

/// The lock name that marks bake `id` as running.
pub fn alive_lock_name(id: &str) -> String {
    format!("bake-{id}")
}

/// Prefix of a bake's scratch directory in $TMPDIR: `bakery-layers-<bake-id>-XXXXXX`.
pub const SCRATCH_PREFIX: &str = "bakery-layers-";

/// File in a bake's work dir naming the temporary output it is writing (for `bakery gc`).
pub const PARTIAL_OUTPUT_NOTE: &str = "partial-output";

impl WorkDir {
    pub fn create(top: &Path, bake_id: &str) -> Result<WorkDir> {
        let alive = HostLock::acquire(&top.join("locks"), &alive_lock_name(bake_id))?;
        let dir = top.join("work").join(bake_id);
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "creating work directory {} (set --work-dir or BAKERY_WORK_DIR)",
                dir.display()
            )
        })?;
        std::fs::create_dir_all(top.join("logs"))?;
        std::fs::write(dir.join("pid"), format!("{}\n", std::process::id()))?;
        Ok(WorkDir {
            top: top.to_path_buf(),
            dir,
            bake_id: bake_id.to_string(),
            _alive: alive,
        })
    }

    /// Remember the temporary output file, so `bakery gc` can remove it after a crash.
    pub fn note_partial_output(&self, tmp: &Path) -> Result<()> {
        let abs = std::path::absolute(tmp)?;
        std::fs::write(
            self.dir.join(PARTIAL_OUTPUT_NOTE),
            abs.as_os_str().as_encoded_bytes(),
        )?;
        Ok(())
    }

    pub fn log(&self) -> PathBuf {
        self.top.join("logs").join(format!("{}.log", self.bake_id))
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // The bake's lock file goes while the lock is still held (released right after, when
        // the field drops): bake ids are never reused, so nothing else waits on this file, and
        // `/var/lib/bakery/locks` does not keep one file per bake forever.
        let _ = std::fs::remove_file(&self._alive.path);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!("removing {}: {e}", self.dir.display());
            }
        }
    }
}

/// `bk-` and 12 hex digits: short enough for tags and file names, unique per host and time.
pub fn new_bake_id() -> String {
    format!("bk-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}
