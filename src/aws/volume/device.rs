//! Which block device did the kernel give our volume? Pure functions over a `/sys` and `/dev`
//! root so they are tested on a fake tree.
//!
//! - Nitro: every EBS volume is an NVMe controller `/sys/class/nvme/nvmeN` whose `serial` is the
//!   volume id without its dash (`vol0123...`) and whose `model` is "Amazon Elastic Block Store";
//!   the disk is namespace 1, `/dev/nvmeNn1`, whatever device name was asked for.
//! - Xen: a requested `/dev/sdf` shows up as `/dev/xvdf` (or as `/dev/sdf` on old kernels).

use std::path::{Path, PathBuf};

/// The device names we hand out: /dev/sdf ... /dev/sdp (the range AWS recommends for EBS).
pub const DEVICE_LETTERS: std::ops::RangeInclusive<char> = 'f'..='p';

const EBS_MODEL: &str = "Amazon Elastic Block Store";

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// `/dev/sdf` -> `f`-style suffix (`sdf`, `xvdf` -> `f`).
fn letter_suffix(name: &str) -> Option<&str> {
    let base = name.trim_start_matches("/dev/");
    base.strip_prefix("xvd")
        .or_else(|| base.strip_prefix("sd"))
        .filter(|s| !s.is_empty())
}

/// The kernel device of `volume_id`, attached as `requested_name`, if it is there yet.
pub fn find_device(
    sys_root: &Path,
    dev_root: &Path,
    volume_id: &str,
    requested_name: &str,
) -> Option<PathBuf> {
    let serial = volume_id.replace('-', "");
    if let Ok(entries) = std::fs::read_dir(sys_root.join("class/nvme")) {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        for ctrl in names {
            let dir = sys_root.join("class/nvme").join(&ctrl);
            let s = read_trim(&dir.join("serial")).unwrap_or_default();
            let m = read_trim(&dir.join("model")).unwrap_or_default();
            if (s == serial || s == volume_id) && m.starts_with(EBS_MODEL) {
                let dev = dev_root.join(format!("{ctrl}n1"));
                return dev.exists().then_some(dev);
            }
        }
    }
    let suffix = letter_suffix(requested_name)?;
    [format!("xvd{suffix}"), format!("sd{suffix}")]
        .into_iter()
        .map(|n| dev_root.join(n))
        .find(|p| p.exists())
}

/// Candidate names `/dev/sdf`..`/dev/sdp` that are free here: neither the sd nor the xvd form
/// exists under `dev_root`, and EC2 does not report it attached to this instance (`attached`:
/// device names as EC2 reports them, e.g. `/dev/sdf` or `xvdg`; on Nitro only EC2 knows them).
pub fn free_device_names(dev_root: &Path, attached: &[String]) -> Vec<String> {
    let taken: Vec<&str> = attached.iter().filter_map(|a| letter_suffix(a)).collect();
    DEVICE_LETTERS
        .map(|c| c.to_string())
        .filter(|l| !taken.contains(&l.as_str()))
        .filter(|l| {
            !dev_root.join(format!("sd{l}")).exists() && !dev_root.join(format!("xvd{l}")).exists()
        })
        .map(|l| format!("/dev/sd{l}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Tree {
        _d: tempfile::TempDir,
        sys: PathBuf,
        dev: PathBuf,
    }

    fn tree() -> Tree {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path().join("sys");
        let dev = d.path().join("dev");
        fs::create_dir_all(sys.join("class")).unwrap();
        fs::create_dir_all(&dev).unwrap();
        Tree { _d: d, sys, dev }
    }

    fn nvme(t: &Tree, ctrl: &str, serial: &str, model: &str) {
        let dir = t.sys.join("class/nvme").join(ctrl);
        fs::create_dir_all(&dir).unwrap();
        // The kernel pads these with spaces.
        fs::write(dir.join("serial"), format!("{serial}    \n")).unwrap();
        fs::write(dir.join("model"), format!("{model}                    \n")).unwrap();
        fs::write(t.dev.join(format!("{ctrl}n1")), "").unwrap();
    }

    #[test]
    fn nitro_volumes_are_found_by_serial() {
        let t = tree();
        nvme(&t, "nvme0", "vol0aaaaaaaaaaaaaaaaa", EBS_MODEL);
        nvme(
            &t,
            "nvme1",
            "AWS1234567890",
            "Amazon EC2 NVMe Instance Storage",
        );
        nvme(&t, "nvme2", "vol0123456789abcdef0", EBS_MODEL);
        assert_eq!(
            find_device(&t.sys, &t.dev, "vol-0123456789abcdef0", "/dev/sdf"),
            Some(t.dev.join("nvme2n1"))
        );
        assert_eq!(
            find_device(&t.sys, &t.dev, "vol-0fffffffffffffff0", "/dev/sdf"),
            None
        );
    }

    #[test]
    fn an_nvme_controller_without_its_namespace_is_not_ready() {
        let t = tree();
        nvme(&t, "nvme3", "vol0123456789abcdef0", EBS_MODEL);
        fs::remove_file(t.dev.join("nvme3n1")).unwrap();
        assert_eq!(
            find_device(&t.sys, &t.dev, "vol-0123456789abcdef0", "/dev/sdf"),
            None
        );
    }

    #[test]
    fn instance_store_with_the_same_serial_is_not_ebs() {
        let t = tree();
        nvme(
            &t,
            "nvme1",
            "vol0123456789abcdef0",
            "Amazon EC2 NVMe Instance Storage",
        );
        assert_eq!(
            find_device(&t.sys, &t.dev, "vol-0123456789abcdef0", "/dev/sdf"),
            None
        );
    }

    #[test]
    fn xen_maps_sd_to_xvd_and_back() {
        let t = tree();
        assert_eq!(find_device(&t.sys, &t.dev, "vol-1", "/dev/sdf"), None);
        fs::write(t.dev.join("xvdf"), "").unwrap();
        assert_eq!(
            find_device(&t.sys, &t.dev, "vol-1", "/dev/sdf"),
            Some(t.dev.join("xvdf"))
        );
        fs::write(t.dev.join("sdg"), "").unwrap();
        assert_eq!(
            find_device(&t.sys, &t.dev, "vol-1", "/dev/xvdg"),
            Some(t.dev.join("sdg"))
        );
        assert_eq!(find_device(&t.sys, &t.dev, "vol-1", "/dev/sdh"), None);
    }

    #[test]
    fn free_names_skip_existing_devices_and_ec2_attachments() {
        let t = tree();
        fs::write(t.dev.join("xvdf"), "").unwrap();
        fs::write(t.dev.join("sdg"), "").unwrap();
        let attached = vec![
            "/dev/sdh".to_string(),
            "xvdi".to_string(),
            "/dev/xvda".to_string(),
        ];
        let free = free_device_names(&t.dev, &attached);
        assert_eq!(free.first().map(String::as_str), Some("/dev/sdj"));
        assert_eq!(free.last().map(String::as_str), Some("/dev/sdp"));
        assert_eq!(free.len(), 7);
        // On Nitro the NVMe nodes say nothing about names: only EC2's list counts.
        nvme(&t, "nvme1", "vol0123", EBS_MODEL);
        assert_eq!(free_device_names(&t.dev, &attached).len(), 7);
    }
}
