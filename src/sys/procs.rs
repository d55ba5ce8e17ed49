//! Processes that would keep a chroot busy: anything whose root directory is inside it.
//! "target is busy" on unmount is the most common chroot failure; find and stop them first.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub comm: String,
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Processes whose root (`/proc/PID/root`) is `root` or below it.
pub fn rooted_in(root: &Path) -> Vec<Proc> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/root"))
                .map(|r: PathBuf| r.starts_with(root))
                .unwrap_or(false)
        })
        .map(|pid| Proc {
            pid,
            comm: comm(pid),
        })
        .collect()
}

/// Processes in the mount namespace with inode `ns` (e.g. daemons a chroot session left behind).
pub fn in_mount_namespace(ns: &str) -> Vec<Proc> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                .map(|l| l.to_string_lossy() == ns)
                .unwrap_or(false)
        })
        .map(|pid| Proc {
            pid,
            comm: comm(pid),
        })
        .collect()
}

/// SIGTERM, wait up to `grace`, then SIGKILL whatever is left. Returns who was stopped.
pub fn stop(procs: &[Proc], grace: Duration) -> Vec<Proc> {
    for p in procs {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && procs.iter().any(|p| alive(p.pid)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in procs.iter().filter(|p| alive(p.pid)) {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
    procs.to_vec()
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry but holds no mounts; treat it as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .map(|r| !r.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

pub fn describe(procs: &[Proc]) -> String {
    procs
        .iter()
        .map(|p| format!("{} (pid {})", p.comm, p.pid))
        .collect::<Vec<_>>()
        .join(", ")
}
