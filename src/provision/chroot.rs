//! The chroot of one session: mounts the image, builds a private /dev holding only this bake's
//! disk, makes sure no service starts, runs commands inside it, and takes it all down again.
//! Runs only in the session child, inside its own mount namespace.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use sys_mount::{Mount, MountFlags, UnmountFlags};
use tracing::{debug, warn};

use super::plan::PartitionDev;
use super::resolv::{self, Found, Restore, Setup};
use crate::sys::inroot::{InRoot, Kind};
use crate::sys::{procs, signals};

const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const POLICY_RC_D: &str =
    "#!/bin/sh\n# bakery: no service may start while an image is being baked\nexit 101\n";
const POLICY: &str = "/usr/sbin/policy-rc.d";
const POLICY_ORIG: &str = "/usr/sbin/policy-rc.d.bakery-orig";

pub struct Chroot {
    pub root: PathBuf,
    mounts: Vec<PathBuf>,
    log: Arc<Mutex<File>>,
    echo: bool,
    /// What `prepare` changed in the image, undone by `restore`.
    prepared: bool,
    /// The mounted image, reached without leaving it (opened once the root is mounted).
    fs: Option<InRoot>,
    /// How the host's DNS was provided (runtime file or our link), with the host's content.
    resolv: Option<(Setup, String)>,
    /// Warnings about the image said during restore (also logged).
    pub notes: Vec<String>,
}

/// A command of the session that exited unsuccessfully: what ran, how it ended, and what it
/// printed (its last 256 KiB), so the step can tell why from the real run's own output.
#[derive(Debug, thiserror::Error)]
#[error("`{}` failed ({status}): {}", short_cmd(.command), explain_tail(.output))]
pub struct CommandFailed {
    pub command: String,
    /// `exit 100`, or the signal that ended it.
    pub status: String,
    pub output: String,
}

/// [`explain`] over the last 40 lines of `output`.
fn explain_tail(output: &str) -> String {
    let lines: Vec<String> = output.lines().map(str::to_string).collect();
    explain(&lines[lines.len().saturating_sub(40)..])
}

/// What is at `path` in the image, the last component not followed.
fn found(fs: &InRoot, path: &str) -> Found {
    match fs.lstat(path) {
        Err(_) => Found::Missing,
        Ok(e) if e.kind == Kind::Link => Found::Link(
            fs.read_link(path)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        Ok(_) => Found::File(
            String::from_utf8_lossy(&fs.read_limited(path, 64 << 10).unwrap_or_default())
                .into_owned(),
        ),
    }
}

impl Chroot {
    pub fn new(root: &Path, log: &Path, echo: bool) -> Result<Chroot> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        Ok(Chroot {
            root: root.to_path_buf(),
            mounts: Vec::new(),
            log: Arc::new(Mutex::new(log)),
            echo,
            prepared: false,
            fs: None,
            resolv: None,
            notes: Vec::new(),
        })
    }

    /// The mounted image, every path resolved inside it.
    pub fn fs(&self) -> Result<&InRoot> {
        self.fs
            .as_ref()
            .context("the image is not mounted in the session yet")
    }

    pub fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// One line in the bake's log, where a command's output would be (and on stderr at `-vv`):
    /// what the session decided itself instead of running a command.
    pub fn note(&self, line: &str) {
        log_line(&self.log, self.echo, line);
    }

    fn mount(
        &mut self,
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MountFlags,
        data: Option<&str>,
    ) -> Result<()> {
        let mut b = Mount::builder().flags(flags);
        if let Some(t) = fstype {
            b = b.fstype(t);
        }
        if let Some(d) = data {
            b = b.data(d);
        }
        b.mount(source, target)
            .with_context(|| format!("mounting {} on {}", source.display(), target.display()))?;
        self.mounts.push(target.to_path_buf());
        crate::fault::point(&format!(
            "mount /{}",
            target.strip_prefix(&self.root).unwrap_or(target).display()
        ))?;
        Ok(())
    }

    /// Mount the root filesystem, then whatever its fstab puts under /boot (and /usr, /var, /opt).
    pub fn mount_image(&mut self, root_dev: &PartitionDev, parts: &[PartitionDev]) -> Result<()> {
        let fstype = root_dev
            .fs
            .as_ref()
            .map(|f| f.kind.clone())
            .unwrap_or_else(|| "ext4".into());
        let root = self.root.clone();
        self.mount(
            &root_dev.device,
            &root,
            Some(&fstype),
            MountFlags::empty(),
            None,
        )?;
        self.fs = Some(InRoot::open(&root).context("opening the mounted image")?);
        let fstab = std::fs::read_to_string(self.path("/etc/fstab")).unwrap_or_default();
        for e in crate::disk::layout::fstab_extra_mounts(&fstab) {
            let Some(p) = PartitionDev::find_by_spec(parts, &e.source) else {
                warn!(
                    "fstab: {} for {} is not on this disk; not mounted during the bake",
                    e.source, e.target
                );
                continue;
            };
            let dev = p.device.clone();
            let target = self.path(&e.target);
            std::fs::create_dir_all(&target).ok();
            if let Err(err) = self.mount(&dev, &target, Some(&e.fstype), MountFlags::empty(), None)
            {
                if e.fstype == "vfat" && e.target == super::esp::MOUNT_POINT {
                    // The session end brings the unmounted ESP in line (provision::esp).
                    tracing::debug!("{err:#}: the ESP stays unmounted; bakery updates its boot files with mtools");
                } else if e.fstype == "vfat" {
                    warn!("{err:#}; this kernel has no vfat: {} stays unmounted, so do not change EFI files in this bake", e.target);
                } else {
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Make the mounted image usable as a chroot: /proc, /sys, a private /dev with only this
    /// bake's disk (so a bake can never touch another bake's device), tmpfs /run and /tmp,
    /// the host's DNS, and a policy-rc.d that keeps every service from starting.
    pub fn prepare(&mut self, disk: &Path, parts: &[PartitionDev]) -> Result<()> {
        for d in ["proc", "sys", "dev", "run", "tmp"] {
            std::fs::create_dir_all(self.path(d))
                .with_context(|| format!("creating /{d} in the image"))?;
        }
        let nosuid = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        self.mount(
            Path::new("proc"),
            &self.path("proc"),
            Some("proc"),
            nosuid,
            None,
        )?;
        self.mount(
            Path::new("sysfs"),
            &self.path("sys"),
            Some("sysfs"),
            nosuid,
            None,
        )?;
        self.mount(
            Path::new("tmpfs"),
            &self.path("dev"),
            Some("tmpfs"),
            MountFlags::NOSUID,
            Some("mode=0755,size=16m"),
        )?;
        self.populate_dev(disk, parts)?;
        crate::fault::point("populate /dev")?;
        std::fs::create_dir_all(self.path("dev/pts"))?;
        std::fs::create_dir_all(self.path("dev/shm"))?;
        self.mount(
            Path::new("devpts"),
            &self.path("dev/pts"),
            Some("devpts"),
            MountFlags::NOSUID | MountFlags::NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        )?;
        self.mount(
            Path::new("tmpfs"),
            &self.path("dev/shm"),
            Some("tmpfs"),
            nosuid,
            Some("mode=1777"),
        )?;
        self.mount(
            Path::new("tmpfs"),
            &self.path("run"),
            Some("tmpfs"),
            MountFlags::NOSUID | MountFlags::NODEV,
            Some("mode=0755"),
        )?;
        self.mount(
            Path::new("tmpfs"),
            &self.path("tmp"),
            Some("tmpfs"),
            MountFlags::NOSUID | MountFlags::NODEV,
            Some("mode=1777"),
        )?;
        if !self.path("bin/sh").exists() && std::fs::symlink_metadata(self.path("bin/sh")).is_err()
        {
            return Err(crate::input!("the base image has no /bin/sh: its root filesystem is not a Linux system bakery can provision"));
        }
        // The bake's UTS namespace carries the image's name, never the bake host's.
        let fs = self.fs()?;
        let name = super::isolate::image_hostname(fs.read_string("/etc/hostname").ok().as_deref());
        super::isolate::set_hostname(&name)?;
        self.prepared = true;
        self.install_policy()
            .context("preparing the chroot (policy-rc.d)")?;
        self.provide_dns()
            .context("preparing the chroot (DNS in the session's /run)")?;
        Ok(())
    }

    /// A `policy-rc.d` that forbids every service start (the image's own, if any, set aside).
    fn install_policy(&self) -> Result<()> {
        let fs = self.fs()?;
        if fs.exists(POLICY) {
            fs.rename(POLICY, POLICY_ORIG)?;
        }
        fs.create_dir_all("/usr/sbin")?;
        fs.write(POLICY, POLICY_RC_D.as_bytes(), Some(0o755))?;
        Ok(())
    }

    /// The host's DNS for the session, kept on the tmpfs /run (see `resolv`).
    fn provide_dns(&mut self) -> Result<()> {
        let host = String::from_utf8_lossy(&std::fs::read("/etc/resolv.conf").unwrap_or_default())
            .into_owned();
        let fs = self.fs()?;
        let image = found(fs, resolv::RESOLV);
        let setup = resolv::plan_setup(&image);
        match &setup {
            Setup::Runtime { path, .. } => {
                if let Some((dir, _)) = path.rsplit_once('/') {
                    fs.create_dir_all(dir)?;
                }
                fs.write(path, host.as_bytes(), Some(0o644))?;
            }
            Setup::Link => {
                if image != Found::Missing {
                    fs.rename(resolv::RESOLV, resolv::BACKUP)?;
                }
                fs.create_dir_all("/run/bakery")?;
                fs.write(resolv::BAKE_RESOLV, host.as_bytes(), Some(0o644))?;
                fs.create_dir_all("/etc")?;
                fs.symlink(resolv::BAKE_RESOLV, resolv::RESOLV)?;
            }
        }
        self.resolv = Some((setup, host));
        Ok(())
    }

    fn populate_dev(&self, disk: &Path, parts: &[PartitionDev]) -> Result<()> {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        let dev = self.path("dev");
        for (name, major, minor) in [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ] {
            mknod(
                &dev.join(name),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            )
            .with_context(|| format!("creating /dev/{name} in the chroot"))?;
            // mknod's mode is cut by the umask; unprivileged users (apt's _apt) need 0666.
            std::fs::set_permissions(
                dev.join(name),
                std::os::unix::fs::PermissionsExt::from_mode(0o666),
            )?;
        }
        for (link, to) in [
            ("ptmx", "pts/ptmx"),
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            std::os::unix::fs::symlink(to, dev.join(link))?;
        }
        let mut block = vec![disk.to_path_buf()];
        block.extend(
            parts
                .iter()
                .filter(|p| p.number != 0)
                .map(|p| p.device.clone()),
        );
        for b in &block {
            let name = b
                .file_name()
                .context("device without a name")?
                .to_string_lossy()
                .into_owned();
            let nums = std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))
                .with_context(|| format!("reading /sys/class/block/{name}/dev"))?;
            let (ma, mi) = nums
                .trim()
                .split_once(':')
                .context("malformed dev numbers")?;
            mknod(
                &dev.join(&name),
                SFlag::S_IFBLK,
                Mode::from_bits_truncate(0o660),
                makedev(ma.parse()?, mi.parse()?),
            )
            .with_context(|| format!("creating /dev/{name} in the chroot"))?;
        }
        // udev-style links: grub-mkconfig and initramfs-tools look for /dev/disk/by-uuid to
        // write root=UUID=... instead of a loop device name that means nothing at boot.
        for p in parts.iter().filter(|p| p.number != 0) {
            let name = p.device.file_name().unwrap().to_string_lossy().into_owned();
            let target = format!("../../{name}");
            let mut links = vec![];
            if let Some(fs) = &p.fs {
                if let Some(u) = &fs.uuid {
                    links.push(("by-uuid", u.clone()));
                }
                if let Some(l) = &fs.label {
                    links.push(("by-label", l.clone()));
                }
            }
            if let Some(u) = &p.part_uuid {
                links.push(("by-partuuid", u.clone()));
            }
            for (dir, value) in links {
                let d = dev.join("disk").join(dir);
                std::fs::create_dir_all(&d)?;
                let _ = std::os::unix::fs::symlink(&target, d.join(value.replace('/', "\\x2f")));
            }
        }
        Ok(())
    }

    /// A command that runs inside the chroot with a clean environment.
    pub fn command(&self, argv: &[&str]) -> Command {
        // argv[0] is looked up by the chroot's own shell so the image's PATH applies.
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg("exec \"$@\"").arg("sh").args(argv);
        self.confine(&mut c);
        c
    }

    fn confine(&self, c: &mut Command) {
        c.env_clear()
            .env("PATH", CHROOT_PATH)
            .env("HOME", "/root")
            .env("LC_ALL", "C.UTF-8")
            .env("TERM", "dumb")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
            .env("SYSTEMD_OFFLINE", "1")
            .env("BAKERY", "1")
            .current_dir("/");
        let root = self.root.clone();
        // SAFETY: between fork and exec only async-signal-safe calls are made (chroot, chdir,
        // setsid).
        unsafe {
            c.pre_exec(move || {
                nix::unistd::chroot(&root).map_err(std::io::Error::from)?;
                nix::unistd::chdir("/").map_err(std::io::Error::from)?;
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
    }

    /// Run `/bin/sh -c script` in the chroot with positional args and optional stdin.
    pub fn sh(&self, script: &str, args: &[&str], stdin: Option<Vec<u8>>) -> Result<String> {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script).arg("sh").args(args);
        self.confine(&mut c);
        self.run(c, stdin, "shell")
    }

    /// Run a host command (e.g. debootstrap, rpm --root) with output to the session log.
    pub fn run_host(&self, mut c: Command, what: &str) -> Result<String> {
        c.env("LC_ALL", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive");
        // SAFETY: setsid is async-signal-safe. Its own session: no controlling terminal, and
        // one process group to stop on Ctrl-C (rpm's scriptlets included).
        unsafe {
            c.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        self.run(c, None, what)
    }

    /// Run to completion, output to the log (and stderr with -vv). Returns stdout+stderr's last
    /// lines on success; on failure the error is a [`CommandFailed`] naming the command, its
    /// status and carrying what it printed.
    pub fn run(&self, c: Command, stdin: Option<Vec<u8>>, what: &str) -> Result<String> {
        self.run_inner(c, stdin, what, false).map(|(tail, _)| tail)
    }

    /// Run to completion with stdout captured whole and returned (not logged); stderr goes to
    /// the log. For commands whose output bakery reads (queries, simulations).
    pub fn output(&self, c: Command, what: &str) -> Result<String> {
        self.run_inner(c, None, what, true).map(|(_, out)| out)
    }

    fn run_inner(
        &self,
        mut c: Command,
        stdin: Option<Vec<u8>>,
        what: &str,
        capture: bool,
    ) -> Result<(String, String)> {
        const KEEP: usize = 256 << 10;
        signals::check()?;
        let shown = format!(
            "{} {}",
            c.get_program().to_string_lossy(),
            c.get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        debug!(command = %shown, "running");
        let (reader, writer) = std::io::pipe()?;
        if capture {
            c.stdout(Stdio::piped()).stderr(writer);
        } else {
            c.stdout(writer.try_clone()?).stderr(writer);
        }
        // Never the bake host's terminal: stdin is /dev/null unless bakery feeds it.
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c
            .spawn()
            .with_context(|| format!("{what}: cannot start `{shown}`"))?;
        drop(c); // close our copies of the pipes' write ends
        let captured = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = std::io::Read::read_to_end(&mut out, &mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        });
        if let Some(bytes) = stdin {
            let mut si = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = si.write_all(&bytes);
            });
        }
        let tail = Arc::new(Mutex::new((VecDeque::<String>::new(), 0usize)));
        let (log, echo, tail2) = (self.log.clone(), self.echo, tail.clone());
        let pump = std::thread::spawn(move || {
            for line in BufReader::new(reader)
                .lines()
                .map_while(std::io::Result::ok)
            {
                log_line(&log, echo, &line);
                let mut t = tail2.lock().unwrap();
                t.1 += line.len() + 1;
                t.0.push_back(line);
                while t.1 > KEEP && t.0.len() > 1 {
                    let gone = t.0.pop_front().map(|l| l.len() + 1).unwrap_or(0);
                    t.1 -= gone;
                }
            }
        });
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if signals::interrupted() {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
                std::thread::sleep(Duration::from_secs(2));
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                let _ = pump.join();
                return Err(anyhow::Error::new(crate::error::Interrupted));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = pump.join();
        let out = captured
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let lines: Vec<String> = tail.lock().unwrap().0.iter().cloned().collect();
        if !status.success() {
            let code = status
                .code()
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| format!("{status}"));
            let mut output = lines.join("\n");
            if capture && !out.is_empty() {
                output = format!("{out}\n{output}");
            }
            return Err(anyhow::Error::new(CommandFailed {
                command: shown,
                status: code,
                output,
            }));
        }
        let last = &lines[lines.len().saturating_sub(40)..];
        Ok((last.join("\n"), out))
    }

    /// Undo what `prepare` changed in the image: `policy-rc.d`, and `/etc/resolv.conf` back to
    /// the image's own (see `resolv`). Idempotent. Never runs a process in the image.
    pub fn restore(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.prepared) {
            return Ok(());
        }
        let resolv = self.resolv.take();
        let fs = self.fs()?;
        // policy-rc.d: put the original back only where the file is still the one bakery wrote
        // (a package that replaced it knows better).
        let ours = fs.lstat(POLICY).is_ok_and(|e| e.kind == Kind::File)
            && fs.read(POLICY).is_ok_and(|b| b == POLICY_RC_D.as_bytes());
        if ours {
            fs.remove(POLICY)?;
            if fs.exists(POLICY_ORIG) {
                fs.rename(POLICY_ORIG, POLICY)?;
            }
        } else {
            fs.remove(POLICY_ORIG)?;
        }
        let Some((setup, host)) = resolv else {
            return Ok(());
        };
        let now = found(fs, resolv::RESOLV);
        let (runtime, original) = match &setup {
            Setup::Runtime { link, path } => (fs.read_string(path).ok(), Found::Link(link.clone())),
            Setup::Link => (
                fs.read_string(resolv::BAKE_RESOLV).ok(),
                found(fs, resolv::BACKUP),
            ),
        };
        let o = resolv::plan_restore(&setup, &host, &now, runtime.as_deref(), &original);
        match &o.restore {
            Restore::KeepPackagesLink => fs.remove(resolv::BACKUP)?,
            Restore::PutBack { content } => {
                fs.remove(resolv::RESOLV)?;
                if original != Found::Missing {
                    fs.rename(resolv::BACKUP, resolv::RESOLV)?;
                    if let Some(c) = content {
                        fs.write(resolv::RESOLV, c.as_bytes(), None)?;
                    }
                }
            }
            Restore::Nothing => {}
            Restore::Relink => {
                if let Setup::Runtime { link, .. } = &setup {
                    fs.remove(resolv::RESOLV)?;
                    fs.symlink(link, resolv::RESOLV)?;
                }
            }
        }
        // A package that moved "its" resolv.conf aside during the bake (systemd-resolved's
        // postinst renames a file it finds to /etc/.resolv.conf.systemd-resolved.bak) moved our
        // temporary link: such copies point at nothing once /run is gone.
        for name in fs.list("/etc").unwrap_or_default() {
            let p = format!("/etc/{name}");
            if fs
                .read_link(&p)
                .is_ok_and(|t| t == std::path::Path::new(resolv::BAKE_RESOLV))
            {
                fs.remove(&p)?;
            }
        }
        if let Some(i) = &o.info {
            tracing::info!("{i}");
        }
        if let Some(w) = o.warning {
            warn!("{w}");
            self.notes.push(w);
        }
        Ok(())
    }

    /// Stop anything still running with its root inside the image; returns who was stopped.
    pub fn stop_strays(&self) -> Vec<procs::Proc> {
        let strays = procs::rooted_in(&self.root);
        if !strays.is_empty() {
            warn!(
                "stopping processes left running inside the image: {}",
                procs::describe(&strays)
            );
            procs::stop(&strays, Duration::from_secs(3));
        }
        // We are PID 1 of the bake's namespace: what they leave (and other orphans) is ours.
        super::isolate::reap_orphans();
        strays
    }

    /// Trim free space (so the image file stays sparse), then unmount everything in reverse.
    /// Collects every failure instead of stopping at the first.
    pub fn teardown(&mut self) -> Result<()> {
        let mut errors: Vec<String> = Vec::new();
        if let Err(e) = self.restore() {
            errors.push(format!("{e:#}"));
        }
        self.stop_strays();
        // Our descriptor of the root would keep it busy.
        self.fs = None;
        if !self.mounts.is_empty() {
            // Blocks freed in the running journal transaction are not free yet for FITRIM:
            // commit first, or what the bake deleted (apt lists, caches) stays as data in the
            // image file and in every incremental upload.
            if let Ok(dir) = std::fs::File::open(&self.root) {
                // SAFETY: syncfs on a descriptor we own for the duration of the call.
                unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
            }
            let _ = Command::new("fstrim")
                .arg(&self.root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        while let Some(m) = self.mounts.pop() {
            if let Err(e) = unmount_retrying(&m) {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("cleaning up the chroot: {}", errors.join("; ")))
        }
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        if !self.mounts.is_empty() {
            if let Err(e) = self.teardown() {
                warn!("{e:#}");
            }
        }
    }
}

fn unmount_retrying(target: &Path) -> Result<()> {
    for attempt in 0..5 {
        match sys_mount::unmount(target, UnmountFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let holders = procs::rooted_in(target);
                if !holders.is_empty() {
                    procs::stop(&holders, Duration::from_secs(2));
                }
                std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()), // not mounted
            Err(e) => return Err(anyhow!("unmounting {}: {e}", target.display())),
        }
    }
    let holders = procs::rooted_in(target);
    sys_mount::unmount(target, UnmountFlags::DETACH)
        .map_err(|e| anyhow!("unmounting {}: {e}", target.display()))?;
    warn!(
        "{} was busy{}; detached it lazily (the session's namespace releases it on exit)",
        target.display(),
        if holders.is_empty() {
            String::new()
        } else {
            format!(" (held by {})", procs::describe(&holders))
        }
    );
    Ok(())
}

fn short_cmd(shown: &str) -> String {
    let s = shown
        .strip_prefix("/bin/sh -c exec \"$@\" sh ")
        .unwrap_or(shown);
    let s: String = s.chars().take(120).collect();
    s.replace('\n', " ")
}

/// Pick the lines that explain a failure (apt's `E:`, dpkg's errors) over plain noise.
pub fn explain(lines: &[String]) -> String {
    let important: Vec<&String> = lines
        .iter()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("E:")
                || l.starts_with("dpkg: error")
                || l.contains("returned error exit status")
                || l.starts_with("error:")
                || l.contains("rror:")
        })
        .collect();
    let pick: Vec<&String> = if important.is_empty() {
        lines
            .iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    } else {
        important
            .into_iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    };
    pick.iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A line of a session command's output (or of what the session decided itself) into the
/// bake's log, and onto stderr as `  | LINE` when `echo` (`-vv`).
fn log_line(log: &Mutex<File>, echo: bool, line: &str) {
    if let Ok(mut l) = log.lock() {
        let _ = writeln!(l, "{line}");
    }
    if echo {
        eprintln!("  | {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_prefers_error_lines() {
        let lines: Vec<String> = [
            "Reading package lists...",
            "Setting up app (1.0-1) ...",
            "boom from postinst",
            "dpkg: error processing package app (--configure):",
            " installed app package post-installation script subprocess returned error exit status 3",
            "Errors were encountered while processing:",
            " app",
            "E: Sub-process /usr/bin/dpkg returned an error code (1)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let e = explain(&lines);
        assert!(e.starts_with("dpkg: error processing package app"), "{e}");
        assert!(e.contains("exit status 3"));
        assert!(e.ends_with("returned an error code (1)"));
        assert_eq!(explain(&["a".into(), "b".into()]), "a | b");
    }
}
