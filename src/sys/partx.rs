//! Partition nodes for a loop device. The kernel here does not scan partition tables on loop
//! devices, so `partx -a` adds them (BLKPG) and `partx -d` must remove them before detaching.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use tracing::warn;

use super::cmd::run;

#[derive(Debug)]
pub struct PartitionsGuard {
    disk: PathBuf,
    active: bool,
}

impl PartitionsGuard {
    /// Add partition nodes and wait until `/dev/<disk>pN` exist for `numbers`.
    pub fn add(disk: &Path, numbers: &[u32]) -> Result<PartitionsGuard> {
        let mut guard = PartitionsGuard {
            disk: disk.to_path_buf(),
            active: true,
        };
        if numbers.is_empty() {
            return Ok(guard);
        }
        // A real disk (an attached EBS volume) is scanned by the kernel itself: those
        // partitions are not ours to add or remove.
        let is_loop = disk
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("loop"));
        if !is_loop && numbers.iter().all(|n| part_path(disk, *n).exists()) {
            guard.active = false;
            return Ok(guard);
        }
        // A loop device we just attached has no partitions of ours yet: nodes a killed bake left
        // (partx mappings outlive the detach) would make `partx -a` fail or point at old data.
        if is_loop && has_partitions(disk) {
            let _ = run(
                std::process::Command::new("partx").arg("-d").arg(disk),
                "removing stale partitions with partx -d",
            );
        }
        run(
            std::process::Command::new("partx").arg("-a").arg(disk),
            "mapping partitions with partx -a",
        )?;
        for _ in 0..50 {
            if numbers.iter().all(|n| part_path(disk, *n).exists()) {
                return Ok(guard);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "partition nodes of {} did not appear after partx -a",
            disk.display()
        )
    }

    pub fn close(mut self) -> Result<()> {
        self.remove()
    }

    fn remove(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.active) {
            return Ok(());
        }
        let mut last = None;
        for attempt in 0..10 {
            match run(
                std::process::Command::new("partx")
                    .arg("-d")
                    .arg(&self.disk),
                "removing partitions with partx -d",
            ) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    if !has_partitions(&self.disk) {
                        return Ok(());
                    }
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
                }
            }
        }
        Err(last.unwrap())
    }
}

impl Drop for PartitionsGuard {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            warn!("{e:#}");
        }
    }
}

/// `/dev/loop3` + 2 -> `/dev/loop3p2`; number 0 is the whole disk.
pub fn part_path(disk: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return disk.to_path_buf();
    }
    let s = disk.display().to_string();
    let sep = if s.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    PathBuf::from(format!("{s}{sep}{n}"))
}

fn has_partitions(disk: &Path) -> bool {
    let name = disk
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::read_dir(format!("/sys/class/block/{name}"))
        .map(|rd| {
            rd.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}p"))
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_paths() {
        assert_eq!(
            part_path(Path::new("/dev/loop3"), 2),
            PathBuf::from("/dev/loop3p2")
        );
        assert_eq!(
            part_path(Path::new("/dev/nvme1n1"), 1),
            PathBuf::from("/dev/nvme1n1p1")
        );
        assert_eq!(
            part_path(Path::new("/dev/xvdf"), 1),
            PathBuf::from("/dev/xvdf1")
        );
        assert_eq!(
            part_path(Path::new("/dev/loop3"), 0),
            PathBuf::from("/dev/loop3")
        );
    }
}
