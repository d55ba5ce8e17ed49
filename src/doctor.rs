//! `bakery doctor`: can this host bake? Each check says what is wrong and how to fix it.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::cli::DoctorArgs;
use crate::context::{which, Globals};
use crate::input;

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    /// "ok", "missing" (bakes fail without it) or "optional" (some features need it).
    pub status: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &str, ok: bool, required: bool, detail: String, fix: &str) -> Check {
    Check {
        name: name.into(),
        status: if ok {
            "ok"
        } else if required {
            "missing"
        } else {
            "optional"
        },
        detail,
        fix: (!ok).then(|| fix.to_string()),
    }
}

pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(input!(
            "`bakery {what}` needs root (loop devices, mounts, chroot); run it as root (or with sudo)"
        ));
    }
    Ok(())
}

fn tool(name: &str, package: &str, required: bool, why: &str) -> Check {
    let found = which(name);
    check(
        name,
        found.is_some(),
        required,
        found
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("not found ({why})")),
        &format!("apt-get install {package}"),
    )
}

/// How many more loop devices can be used: free existing ones plus what max_loop still allows.
fn free_loop_devices() -> (usize, String) {
    let mut free = 0;
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("loop") {
                total += 1;
                if !e.path().join("loop/backing_file").exists() {
                    free += 1;
                }
            }
        }
    }
    let max: usize = std::fs::read_to_string("/sys/module/loop/parameters/max_loop")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    // max_loop=0 means loop-control creates devices on demand (up to the minor number space).
    let more = if max == 0 {
        1 << 20
    } else {
        max.saturating_sub(total)
    };
    (
        free + more,
        format!(
            "{free} free of {total}, {}",
            if max == 0 {
                "more created on demand".to_string()
            } else {
                format!("limit {max}")
            }
        ),
    )
}

fn kvm_usable() -> (bool, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpu
        .lines()
        .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")));
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    match (flags, dev) {
        (true, true) => (true, "CPU has vmx/svm and /dev/kvm opens".into()),
        (false, true) => (
            false,
            "/dev/kvm exists but the CPU has no vmx/svm: QEMU falls back to TCG (slow)".into(),
        ),
        _ => (false, "no usable KVM: QEMU runs under TCG (slow)".into()),
    }
}

pub fn checks(g: &Globals) -> Vec<Check> {
    let root = nix::unistd::geteuid().is_root();
    let (free, loop_detail) = free_loop_devices();
    let (kvm, kvm_detail) = kvm_usable();
    let work_parent = std::iter::successors(Some(g.work_dir.as_path()), |p| p.parent())
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let reflink = crate::disk::image::dir_supports_reflink(work_parent);
    let avail = nix::sys::statvfs::statvfs(work_parent)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    vec![
        check("root", root, true, if root { "running as root".into() } else { "not root".into() }, "run bakery as root (or with sudo)"),
        check(
            "loop-control",
            Path::new("/dev/loop-control").exists(),
            true,
            "/dev/loop-control".into(),
            "modprobe loop (or run on a host/container with loop device access)",
        ),
        check("free loop devices", free > 0, true, loop_detail, "detach unused ones with `losetup -D` or raise max_loop"),
        tool("partx", "util-linux", true, "maps partitions of loop devices"),
        tool("sgdisk", "gdisk", true, "partitions new base disks"),
        tool("mkfs.ext4", "e2fsprogs", true, "formats base root filesystems"),
        tool("growpart", "cloud-guest-utils", false, "grows root partitions (`--disk-size`)"),
        tool("fstrim", "util-linux", false, "keeps images sparse"),
        tool("debootstrap", "debootstrap", true, "builds Debian bases"),
        tool("qemu-img", "qemu-utils", true, "reads and writes qcow2"),
        tool("rpm", "rpm", false, "installs .rpm packages on Debian bases"),
        tool("qemu-system-x86_64", "-t bookworm-backports qemu-system-x86", false, "`bakery boot`"),
        check("kvm", kvm, false, kvm_detail, "use a host with hardware virtualization for fast boots"),
        check(
            "reflink copies",
            reflink,
            false,
            if reflink {
                format!("{} clones files (bases and cached layers are copied instantly)", work_parent.display())
            } else {
                format!("{}'s filesystem cannot clone files: each bake makes a full copy of its base or cached layers", work_parent.display())
            },
            "optional: a work dir on XFS (reflink=1, mkfs.xfs's default) or btrfs makes those copies instant (--work-dir / BAKERY_WORK_DIR)",
        ),
        check(
            "work dir space",
            avail > 8 << 30,
            false,
            format!("{} GiB free for {}", avail >> 30, g.work_dir.display()),
            "free space or point --work-dir / BAKERY_WORK_DIR elsewhere (a bake needs ~2x the image size)",
        ),
    ]
}

/// The command layer's result writer: the checks on stdout (a table, or JSON with `--json`).
#[allow(clippy::print_stdout)]
pub fn run(args: &DoctorArgs, g: &Globals) -> Result<i32> {
    let checks = checks(g);
    let missing = checks.iter().filter(|c| c.status == "missing").count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"ready": missing == 0, "checks": checks})
            )?
        );
    } else {
        for c in &checks {
            let mark = match c.status {
                "ok" => "ok  ",
                "missing" => "FAIL",
                _ => "warn",
            };
            println!("[{mark}] {:<20} {}", c.name, c.detail);
            if let Some(f) = &c.fix {
                println!("       fix: {f}");
            }
        }
        println!(
            "{}",
            if missing == 0 {
                "this host can bake".to_string()
            } else {
                format!("{missing} required check(s) failed: this host cannot bake yet")
            }
        );
    }
    Ok(if missing == 0 { 0 } else { 1 })
}
