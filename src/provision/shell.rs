//! `bakery bake --shell` (Aminator's `-i`): an interactive shell in the image after the
//! provisioning steps and before the seal, for a developer debugging a bake.
//!
//! The shell runs like every other process of the bake (see `isolate`): in the bake's PID, IPC
//! and UTS namespaces (it sees only the bake's processes; its `$$` is small), its mount
//! namespace and chroot, with a clean environment, and services forbidden. It gets a terminal of
//! its own: a new pseudo-terminal whose slave is the shell's controlling terminal (its own
//! session, `TIOCSCTTY`), relayed to and from the user's terminal, which is put in raw mode for
//! the time of the shell (so Ctrl-C and Ctrl-Z go to the shell, not to bakery) and restored
//! after, as `systemd-nspawn` and `machinectl shell` do. The user's terminal never becomes a
//! controlling terminal of anything in the bake. See pty(7), tty_ioctl(4).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::Winsize;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

use super::chroot::Chroot;
use crate::sys::signals;

/// The user's terminal in raw mode until dropped (then as it was).
struct RawMode<'a> {
    tty: &'a File,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(tty: &'a File) -> Result<RawMode<'a>> {
        let saved = tcgetattr(tty.as_fd()).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(tty.as_fd(), SetArg::TCSANOW, &raw).context("setting the terminal raw")?;
        Ok(RawMode { tty, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.tty.as_fd(), SetArg::TCSAFLUSH, &self.saved);
    }
}

fn window_size(tty: &File) -> Option<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` (nix's Winsize is that struct) through the
    // pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some(ws)
}

/// A pseudo-terminal of the image's own devpts instance (the chroot's `/dev/ptmx`, so `tty`
/// in the shell names it), sized as the user's terminal: (master, slave).
fn open_pty(chroot: &Chroot, size: Option<&Winsize>) -> Result<(File, OwnedFd)> {
    let master = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(chroot.path("/dev/ptmx"))
        .context("opening the image's /dev/ptmx")?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, valid for the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unlocking the pseudo-terminal");
    }
    // SAFETY: TIOCGPTPEER (Linux 4.13) takes open flags by value and returns a new fd of the
    // slave, which we own from here on.
    let fd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening the pseudo-terminal's slave");
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if let Some(ws) = size {
        // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, valid for the call.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, ws) };
    }
    Ok((master, slave))
}

/// The shell the image has: `/bin/bash -l`, else `/bin/sh -l`.
pub fn shell_argv(has_bash: bool) -> [&'static str; 2] {
    if has_bash {
        ["/bin/bash", "-l"]
    } else {
        ["/bin/sh", "-l"]
    }
}

/// Run the shell on the user's terminal `tty` (a path on the host, `TERM` = `term`) until it
/// exits; returns its exit status (128 + signal when killed). A signal to bakery ends the shell
/// (SIGHUP, then SIGKILL) and returns `Interrupted`.
pub fn run(chroot: &Chroot, tty: &Path, term: &str, banner: &str) -> Result<i32> {
    let user = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(tty)
        .with_context(|| format!("opening the terminal {}", tty.display()))?;
    let (master, slave) = open_pty(chroot, window_size(&user).as_ref())?;
    let has_bash = chroot.path("/bin/bash").exists();
    let argv = shell_argv(has_bash);
    let mut c = Command::new(argv[0]);
    c.arg(argv[1])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("TERM", term)
        .env("LANG", "C.UTF-8")
        .env("BAKERY", "1")
        .env("BAKERY_SHELL", "1")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("SYSTEMD_OFFLINE", "1")
        .current_dir("/")
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    let root = chroot.root.clone();
    // SAFETY: between fork and exec only async-signal-safe calls are made (chroot, chdir,
    // setsid, ioctl).
    unsafe {
        c.pre_exec(move || {
            nix::unistd::chroot(&root).map_err(std::io::Error::from)?;
            nix::unistd::chdir("/").map_err(std::io::Error::from)?;
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // The pty slave (stdin) becomes the new session's controlling terminal, and the
            // shell's process group its foreground group.
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut out = &user;
    let _ = out.write_all(format!("{banner}\r\n").as_bytes());
    let raw = RawMode::enter(&user)?;
    let mut child = c.spawn().with_context(|| format!("starting {}", argv[0]))?;
    // Our copies of the slave are gone with `c`: the master reads EIO once the shell (and
    // everything it started on the terminal) has closed it.
    drop(c);
    let relayed = relay(&user, &master);
    let status = match relayed {
        Ok(()) => child.wait().context("waiting for the shell")?,
        Err(e) => {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGHUP);
            std::thread::sleep(std::time::Duration::from_millis(200));
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            drop(raw);
            return Err(e);
        }
    };
    drop(raw);
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Copy the user's keys to the pty and the shell's output to the user until the pty closes.
fn relay(user: &File, master: &File) -> Result<()> {
    let mut buf = [0u8; 8192];
    let (mut u, mut m) = (user, master);
    loop {
        signals::check()?;
        let mut fds = [
            PollFd::new(user.as_fd(), PollFlags::POLLIN),
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting on the terminal"),
        }
        let (ur, mr) = (fds[0].revents(), fds[1].revents());
        if mr.is_some_and(|r| r.intersects(PollFlags::POLLIN)) {
            match m.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => u.write_all(&buf[..n])?,
                // EIO: every slave fd is closed (the shell exited).
                Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading the shell's terminal"),
            }
        } else if mr.is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)) {
            return Ok(());
        }
        if ur.is_some_and(|r| r.intersects(PollFlags::POLLIN)) {
            match u.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => m.write_all(&buf[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading the terminal"),
            }
        }
    }
}

/// Why `--shell` cannot run here (input error text), or `None`: it needs a terminal on stdin
/// and is refused in CI (`CI` set and not `false`/`0`, as GitHub Actions, GitLab CI and most
/// others set it, or Jenkins' `JENKINS_URL`), where nobody would answer it.
pub fn refusal(stdin_is_terminal: bool, ci: Option<&str>, jenkins: Option<&str>) -> Option<String> {
    let in_ci = ci.is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
        || jenkins.is_some_and(|v| !v.is_empty());
    if in_ci {
        return Some("--shell is for a developer at a terminal, and this is CI (CI or JENKINS_URL is set); drop --shell, or debug the bake locally".into());
    }
    if !stdin_is_terminal {
        return Some("--shell needs a terminal on stdin (an interactive shell in the image); run bakery from a terminal, or drop --shell".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_is_refused_without_a_terminal_and_in_ci() {
        assert_eq!(refusal(true, None, None), None);
        assert_eq!(refusal(true, Some("false"), None), None);
        assert!(refusal(false, None, None)
            .unwrap()
            .contains("terminal on stdin"));
        assert!(refusal(true, Some("true"), None).unwrap().contains("CI"));
        assert!(refusal(true, None, Some("http://jenkins/"))
            .unwrap()
            .contains("CI"));
        assert_eq!(shell_argv(true), ["/bin/bash", "-l"]);
        assert_eq!(shell_argv(false), ["/bin/sh", "-l"]);
    }
}
