//! Device: the disk as a block device the session can mount. An image file is attached to a
//! loop device (autoclear; claimed under the host-wide loop lock) and its partitions mapped with
//! `partx -a` (this kernel does not scan partition tables on loop devices); an attached volume
//! is already a block device and only gets its partitions mapped.
//!
//! `--disk-size` is [`grow`], before [`attach`]: the file (a volume is created that size) and
//! its root partition grow; the session grows the filesystem once it is mounted.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::source::SourceDisk;
use crate::disk::grow::{self, Growth};
use crate::disk::layout::{self, Layout};
use crate::pipeline::Stages;
use crate::recipe::Size;
use crate::sys::loopdev::LoopGuard;
use crate::sys::partx::PartitionsGuard;

/// The disk attached and its partitions mapped. Dropped, it releases both (partitions first);
/// [`crate::pipeline::seal`] releases them explicitly and reports failures.
pub struct Attached {
    /// The whole-disk device (`/dev/loopN`, `/dev/nvme1n1`).
    pub dev: PathBuf,
    /// The partition table and filesystems, read before anything was attached.
    pub layout: Layout,
    pub(crate) parts: Option<PartitionsGuard>,
    pub(crate) lo: Option<LoopGuard>,
}

/// Grow `disk` to `size` (stage `grow disk`): the file, then the root partition
/// ([`crate::disk::grow`]). Returns what the session grows next (the root filesystem).
pub fn grow(disk: &SourceDisk, size: Size, stages: &mut Stages) -> Result<Growth> {
    let layout = layout::read_layout(&disk.path)?;
    let root = match disk.root_partition {
        Some(n) => n,
        None => {
            layout
                .root()
                .ok_or_else(|| {
                    crate::input!(
                        "base `{}`: no Linux root filesystem found on the disk",
                        disk.origin.image
                    )
                })?
                .number
        }
    };
    let g = grow::plan(&layout, root, size)?;
    stages.run("grow disk", |st| {
        st.say(format!("grow disk to {size}"));
        grow::grow_disk(&disk.path, &g)
    })?;
    Ok(g)
}

/// Attach `disk` (stages `attach loop device`, timed as `attach /dev/loopN`, and `map
/// partitions`).
pub fn attach(disk: &Path, stages: &mut Stages) -> Result<Attached> {
    let layout = layout::read_layout(disk)?;
    let is_device = super::source::is_block_device(disk)?;
    let mut attached = Attached {
        dev: disk.to_path_buf(),
        layout,
        parts: None,
        lo: None,
    };
    if !is_device {
        // A failure after the attach (the stage's fault point, a signal) drops the guard,
        // which detaches the device.
        let lo = stages.run("attach loop device", |st| {
            let lo = LoopGuard::attach(disk, &crate::sys::lock::host_wide_dir())?;
            st.timing(format!("attach {}", lo.path.display()));
            Ok(lo)
        })?;
        attached.dev = lo.path.clone();
        attached.lo = Some(lo);
    }
    let numbers: Vec<u32> = attached
        .layout
        .partitions
        .iter()
        .map(|p| p.number)
        .filter(|&n| n > 0)
        .collect();
    let dev = attached.dev.clone();
    attached.parts = Some(stages.run("map partitions", |_| PartitionsGuard::add(&dev, &numbers))?);
    Ok(attached)
}
