//! The private temporary directory of one boot (overlay, seed, console log). Removed on drop;
//! on failure only the console log is kept, for the user to read.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tracing::warn;

pub struct WorkDir {
    path: PathBuf,
    keep_console: bool,
}

impl WorkDir {
    /// Create `$TMPDIR/bakery-boot-XXXXXXXX` (mode 0700).
    pub fn create() -> Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let path = std::env::temp_dir().join(format!("bakery-boot-{}", &id[..12]));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir {
            path,
            keep_console: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }

    /// Keep the console log (and the directory holding it) when dropped.
    pub fn keep_console(&mut self) {
        self.keep_console = true;
    }

    /// Remove everything (or everything but the console log); returns the failures.
    pub fn cleanup(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if !self.path.exists() {
            return errors;
        }
        if !self.keep_console {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                errors.push(format!("removing {}: {e}", self.path.display()));
            }
            return errors;
        }
        let console = self.console_log();
        match std::fs::read_dir(&self.path) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let p = e.path();
                    if p == console {
                        continue;
                    }
                    let r = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    if let Err(e) = r {
                        errors.push(format!("removing {}: {e}", p.display()));
                    }
                }
            }
            Err(e) => errors.push(format!("reading {}: {e}", self.path.display())),
        }
        errors
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        for e in self.cleanup() {
            warn!("boot cleanup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_on_drop() {
        let w = WorkDir::create().unwrap();
        let p = w.path().to_path_buf();
        std::fs::write(p.join("overlay.qcow2"), b"x").unwrap();
        std::fs::create_dir(p.join("seed-src")).unwrap();
        drop(w);
        assert!(!p.exists());
    }

    #[test]
    fn keeps_only_the_console_log() {
        let mut w = WorkDir::create().unwrap();
        let p = w.path().to_path_buf();
        std::fs::write(w.console_log(), b"log").unwrap();
        std::fs::write(p.join("overlay.qcow2"), b"x").unwrap();
        std::fs::create_dir(p.join("seed-src")).unwrap();
        w.keep_console();
        drop(w);
        let left: Vec<_> = std::fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("console.log")]);
        std::fs::remove_dir_all(&p).unwrap();
    }
}
