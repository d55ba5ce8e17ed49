//! The bake's own namespaces: everything that runs for the image (maintainer scripts, layer
//! scripts and runs, rpm scriptlets under the host's `rpm --root`, plugins in the session) sees
//! and signals only the bake's own processes, and never the bake host's terminal.
//!
//! The session process (`bakery __session`, already in its own mount namespace) calls
//! [`enter`]: it unshares PID, IPC and UTS namespaces — which, for PID, applies to its children
//! only — and forks once. The child is PID 1 of the new namespace and runs the whole session:
//! it mounts a `/proc` of that namespace over its own `/proc` (and the chroot's `/proc` it mounts
//! later is of that namespace too), starts a new session without a controlling terminal, and
//! reaps the orphans that reparent to it. The parent stays behind as a relay: it forwards
//! SIGTERM/SIGINT to the child and exits with its status. When the child exits, the kernel kills
//! every process left in the namespace (a daemon a postinst started), so nothing of the bake can
//! outlive it; if the relay is killed, the child gets SIGKILL (parent-death signal) and the same
//! happens. The UTS namespace gets the image's host name ([`image_hostname`]).
//! See pid_namespaces(7), namespaces(7).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::sys::signals;

/// Which side of the fork this process is on.
pub enum Role {
    /// The relay: the session child has exited with this code.
    Relay(i32),
    /// PID 1 of the bake's namespaces: run the session.
    Init,
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Unshare PID, IPC and UTS namespaces and fork the namespace's first process (see the module
/// doc). Call in the session process while it is single-threaded.
pub fn enter() -> Result<Role> {
    unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .context("creating the bake's PID, IPC and UTS namespaces")?;
    if threads() != 1 {
        bail!("the session process has more than one thread; it cannot fork safely");
    }
    let (ready_r, ready_w) = nix::unistd::pipe().context("creating a pipe")?;
    // SAFETY: the process has a single thread (checked just above), so the child may run any
    // code after the fork, as the parent would.
    match unsafe { fork() }.context("starting the bake's first process")? {
        ForkResult::Child => {
            drop(ready_w);
            // If the relay dies, so do we (and with us the whole namespace).
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("setting pdeathsig")?;
            // The relay may have died before pdeathsig was set: it writes one byte once it runs.
            let mut b = [0u8; 1];
            match nix::unistd::read(&ready_r, &mut b) {
                Ok(1) => {}
                _ => std::process::exit(1),
            }
            drop(ready_r);
            init().context("setting up the bake's namespaces")?;
            Ok(Role::Init)
        }
        ForkResult::Parent { child } => {
            drop(ready_r);
            let _ = nix::unistd::write(&ready_w, b"1");
            drop(ready_w);
            Ok(Role::Relay(relay(child)))
        }
    }
}

/// PID 1's own set-up: a /proc of this namespace (in our private mount namespace only), no
/// controlling terminal.
fn init() -> Result<()> {
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context("mounting /proc for the bake's PID namespace")?;
    nix::unistd::setsid().context("leaving the terminal's session")?;
    Ok(())
}

/// Wait for the namespace's first process, forwarding termination signals; its exit code.
fn relay(child: Pid) -> i32 {
    let mut forwarded = 0;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return 1,
        }
        let n = signals::count();
        if n > forwarded {
            forwarded = n;
            let _ = kill(child, Signal::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reap the namespace's orphans (processes whose parent exited reparent to PID 1). Call only
/// when no child of ours is being waited for elsewhere.
pub fn reap_orphans() {
    while let Ok(s) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// The host name bake commands see: the first word of the image's /etc/hostname when it is a
/// valid host name (RFC 1123 characters, at most 64), else `localhost`. Never the bake host's.
pub fn image_hostname(etc_hostname: Option<&str>) -> String {
    etc_hostname
        .and_then(|t| {
            t.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
        })
        .filter(|h| {
            h.len() <= 64
                && !h.starts_with(['-', '.'])
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .unwrap_or_else(|| "localhost".into())
}

/// Give the bake's UTS namespace the image's host name.
pub fn set_hostname(name: &str) -> Result<()> {
    nix::unistd::sethostname(name).with_context(|| format!("setting the bake's host name {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_comes_from_the_image_or_is_localhost() {
        assert_eq!(image_hostname(Some("web-base\n")), "web-base");
        assert_eq!(
            image_hostname(Some("# generated\n\n app.example \n")),
            "app.example"
        );
        assert_eq!(image_hostname(Some("")), "localhost");
        assert_eq!(image_hostname(None), "localhost");
        assert_eq!(image_hostname(Some("bad name;rm\n")), "localhost");
        assert_eq!(image_hostname(Some(&"a".repeat(65))), "localhost");
    }
}
