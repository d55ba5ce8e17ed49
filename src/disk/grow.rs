//! Growing a disk to `--disk-size` (recipe `disk-size`): the disk (file or volume) is made
//! bigger, then the root partition grown to fill it with `growpart` (cloud-guest-utils; for GPT
//! it also moves the backup header to the new end of the disk), then the root filesystem grown
//! by the chroot session: ext2/3/4 before it is mounted (`e2fsck -f -p`, then `resize2fs`:
//! offline growth needs no CAP_SYS_RESOURCE, which online ext4 growth does and a container may
//! lack), xfs and btrfs once mounted (`xfs_growfs`, `btrfs filesystem resize max`: they only
//! grow mounted).
//!
//! What can grow is decided by [`plan`], a pure function of the disk's layout: the root must be
//! the last partition (nothing after it to move) and its filesystem one of those three.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::layout::{Layout, TableKind};
use crate::input;
use crate::recipe::Size;

/// What growing the disk to a size means for one layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    /// The new size of the whole disk, bytes.
    pub size: u64,
    /// The partition `growpart` grows; `None`: the whole disk is the filesystem.
    pub partition: Option<u32>,
    /// The root filesystem's kind (ext4, xfs, btrfs...), grown in the session.
    pub fs: String,
}

/// Filesystems the session can grow online.
pub const GROWABLE: &[&str] = &["ext2", "ext3", "ext4", "xfs", "btrfs"];

/// Decide the growth of `layout` to `size` bytes, `root` being the partition holding `/`.
/// A disk already that size (a volume created at the size) still gets its partition and
/// filesystem grown when they do not fill it (`growpart` and the growers do nothing
/// otherwise). Input errors (exit 2): a size smaller than the
/// disk (a filesystem is never shrunk), a root partition with another partition after it, a
/// root filesystem that cannot be grown online.
pub fn plan(layout: &Layout, root: u32, size: Size) -> Result<Growth> {
    let size = size.bytes();
    if size < layout.disk_size {
        return Err(input!(
            "--disk-size {}: the base's disk is {}; a disk is never shrunk, give at least {}",
            Size(size),
            Size(layout.disk_size),
            Size(layout.disk_size)
        ));
    }
    let part = layout
        .partitions
        .iter()
        .find(|p| p.number == root)
        .ok_or_else(|| input!("--disk-size: the base has no partition {root} to grow"))?;
    let fs = part.fs.as_ref().map(|f| f.kind.clone()).unwrap_or_default();
    if !GROWABLE.contains(&fs.as_str()) {
        return Err(input!(
            "--disk-size: the base's root filesystem is `{fs}`; only {} can be grown",
            GROWABLE.join(", ")
        ));
    }
    if let Some(after) = layout
        .partitions
        .iter()
        .find(|p| p.number != root && p.start > part.start)
    {
        return Err(input!(
            "--disk-size: partition {} lies after the root partition {root}, so the root cannot grow; bake without --disk-size and grow it at boot (cloud-init growpart)",
            after.number
        ));
    }
    Ok(Growth {
        size,
        partition: (layout.table != TableKind::None && root > 0).then_some(root),
        fs,
    })
}

/// Grow `disk` (an image file, or a block device already made that size) and its root
/// partition as `g` says. The filesystem is grown later, in the session.
pub fn grow_disk(disk: &Path, g: &Growth) -> Result<()> {
    let is_device = std::fs::metadata(disk)
        .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        .unwrap_or(false);
    if !is_device {
        std::fs::OpenOptions::new()
            .write(true)
            .open(disk)
            .and_then(|f| f.set_len(g.size))
            .with_context(|| format!("growing {} to {}", disk.display(), Size(g.size)))?;
    }
    let Some(n) = g.partition else {
        return Ok(());
    };
    let out = Command::new("growpart")
        .arg(disk)
        .arg(n.to_string())
        .env("LC_ALL", "C")
        .output()
        .context("running growpart (install cloud-guest-utils)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // growpart: 0 grown, 1 with NOCHANGE when there was nothing to grow, else a failure.
    if out.status.success() || stdout.starts_with("NOCHANGE") {
        return Ok(());
    }
    Err(anyhow::anyhow!(
        "growpart {} {n} failed: {}{}",
        disk.display(),
        crate::sys::cmd::tail(&stdout, 3),
        crate::sys::cmd::tail(&String::from_utf8_lossy(&out.stderr), 3)
    ))
}

/// Is `fs` grown before it is mounted ([`grow_offline`]) rather than after
/// ([`grow_mounted_command`])?
pub fn grows_offline(fs: &str) -> bool {
    matches!(fs, "ext2" | "ext3" | "ext4")
}

/// Grow the unmounted ext2/3/4 filesystem on `device` to fill it: `e2fsck -f -p` first (what
/// `resize2fs` demands; exit 1, "errors corrected", is fine), then `resize2fs`.
pub fn grow_offline(device: &Path) -> Result<()> {
    let fsck = Command::new("e2fsck")
        .args(["-f", "-p"])
        .arg(device)
        .env("LC_ALL", "C")
        .output()
        .context("running e2fsck")?;
    if !matches!(fsck.status.code(), Some(0 | 1)) {
        return Err(anyhow::anyhow!(
            "e2fsck -f -p {} before growing it failed ({}): {}",
            device.display(),
            fsck.status,
            crate::sys::cmd::tail(&String::from_utf8_lossy(&fsck.stdout), 3)
        ));
    }
    crate::sys::cmd::run(
        Command::new("resize2fs").arg(device),
        "growing the root filesystem (resize2fs)",
    )
    .map(|_| ())
}

/// The command that grows the mounted root filesystem `fs` (xfs, btrfs) mounted at `mount`.
pub fn grow_mounted_command(fs: &str, mount: &Path) -> Option<Vec<String>> {
    let m = mount.display().to_string();
    match fs {
        "xfs" => Some(vec!["xfs_growfs".into(), m]),
        "btrfs" => Some(vec![
            "btrfs".into(),
            "filesystem".into(),
            "resize".into(),
            "max".into(),
            m,
        ]),
        _ => None,
    }
}

/// A whole number of GiB (EBS volumes are sized in GiB): input error naming the flag otherwise.
pub fn whole_gib(size: Size) -> Result<i32> {
    let b = size.bytes();
    if !b.is_multiple_of(1 << 30) || b == 0 {
        let up = b.div_ceil(1 << 30).max(1);
        return Err(input!(
            "--disk-size {size}: an EBS volume is a whole number of GiB; use {up}GiB"
        ));
    }
    i32::try_from(b >> 30).map_err(|_| input!("--disk-size {size} is too large for an EBS volume"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::{FsInfo, Partition};

    fn part(number: u32, start: u64, fs: Option<&str>) -> Partition {
        Partition {
            number,
            start,
            size: 1 << 20,
            type_id: String::new(),
            part_uuid: None,
            fs: fs.map(|k| FsInfo {
                kind: k.into(),
                uuid: None,
                label: None,
            }),
        }
    }

    fn gpt(parts: Vec<Partition>) -> Layout {
        Layout {
            table: TableKind::Gpt,
            disk_size: 2 << 30,
            partitions: parts,
        }
    }

    #[test]
    fn the_last_root_partition_grows_and_a_whole_disk_filesystem_grows_alone() {
        let l = gpt(vec![part(1, 1 << 20, None), part(2, 2 << 20, Some("ext4"))]);
        let g = plan(&l, 2, Size(6 << 30)).unwrap();
        assert_eq!(
            g,
            Growth {
                size: 6 << 30,
                partition: Some(2),
                fs: "ext4".into()
            }
        );
        assert_eq!(plan(&l, 2, Size(2 << 30)).unwrap().size, 2 << 30);
        let whole = Layout {
            table: TableKind::None,
            disk_size: 1 << 30,
            partitions: vec![part(0, 0, Some("xfs"))],
        };
        assert_eq!(plan(&whole, 0, Size(2 << 30)).unwrap().partition, None);
    }

    #[test]
    fn shrinking_a_root_in_the_middle_and_vfat_roots_are_input_errors() {
        let l = gpt(vec![part(1, 1 << 20, None), part(2, 2 << 20, Some("ext4"))]);
        let e = plan(&l, 2, Size(1 << 30)).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        assert!(e.to_string().contains("never shrunk"), "{e}");
        let mid = gpt(vec![part(2, 2 << 20, Some("ext4")), part(3, 9 << 20, None)]);
        assert!(plan(&mid, 2, Size(4 << 30))
            .unwrap_err()
            .to_string()
            .contains("partition 3 lies after"));
        let odd = gpt(vec![part(1, 1 << 20, Some("vfat"))]);
        assert!(plan(&odd, 1, Size(4 << 30))
            .unwrap_err()
            .to_string()
            .contains("`vfat`"));
    }

    #[test]
    fn growth_commands_per_filesystem_and_ebs_sizes_in_whole_gib() {
        let m = Path::new("/r");
        assert!(grows_offline("ext4") && !grows_offline("xfs"));
        assert_eq!(
            grow_mounted_command("xfs", m).unwrap(),
            ["xfs_growfs", "/r"]
        );
        assert_eq!(
            grow_mounted_command("btrfs", m).unwrap(),
            ["btrfs", "filesystem", "resize", "max", "/r"]
        );
        assert!(grow_mounted_command("vfat", m).is_none());
        assert_eq!(whole_gib(Size(6 << 30)).unwrap(), 6);
        let e = whole_gib(Size(5000 << 20)).unwrap_err().to_string();
        assert!(e.contains("use 5GiB"), "{e}");
    }
}
