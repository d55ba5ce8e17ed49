//! The QEMU command line (pure) and the running QEMU process (a guard that stops it).

use anyhow::{Context, Result};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// A guest port forwarded to a host port on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PortForward {
    pub guest: u16,
    pub host: u16,
}

/// Everything the QEMU command line depends on.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kvm: bool,
    pub memory_mib: u32,
    pub cpus: u32,
    pub overlay: PathBuf,
    pub seed: PathBuf,
    pub console_log: PathBuf,
    pub forwards: Vec<PortForward>,
    /// Boot with UEFI (OVMF) instead of SeaBIOS.
    pub uefi: Option<Uefi>,
}

/// OVMF's two flash images: the firmware code (read-only) and this boot's own copy of the
/// variable store (written by the firmware: boot entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uefi {
    pub code: PathBuf,
    pub vars: PathBuf,
    /// Secure Boot enforced: the `secboot` code needs SMM (q35 machine) and a flash that only
    /// SMM code may write, or a guest could rewrite the key store.
    pub secure: bool,
}

/// Where OVMF's images are: `BAKERY_OVMF_DIR`, else Debian's `ovmf` package directory.
pub fn ovmf_dir() -> PathBuf {
    std::env::var_os("BAKERY_OVMF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/OVMF"))
}

/// OVMF's code and variable-store images in `dir`: the 4 MiB build Debian ships, else the older
/// 2 MiB names. Without `secure`, `OVMF_CODE_4M.fd` + `OVMF_VARS_4M.fd` (no Secure Boot); with
/// it, `OVMF_CODE_4M.secboot.fd` + `OVMF_VARS_4M.ms.fd` (Secure Boot enforced, Microsoft's KEK
/// and db enrolled: what Debian's signed shim needs; see the ovmf package's README.Debian).
/// An input error naming the package when neither is there.
pub fn ovmf(dir: &Path, secure: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    let pairs: [(&str, &str); 2] = if secure {
        [
            ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
            ("OVMF_CODE.secboot.fd", "OVMF_VARS.ms.fd"),
        ]
    } else {
        [
            ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
            ("OVMF_CODE.fd", "OVMF_VARS.fd"),
        ]
    };
    for (code, vars) in pairs {
        let (c, v) = (dir.join(code), dir.join(vars));
        if c.is_file() && v.is_file() {
            return Ok((c, v));
        }
    }
    Err(crate::input!(
        "--firmware {} needs OVMF and {} has none; install it with `apt-get install ovmf`",
        if secure { "uefi-secure" } else { "uefi" },
        dir.display()
    ))
}

/// `-netdev user` option string with one `hostfwd` per forward, bound to 127.0.0.1 only.
pub fn netdev_arg(forwards: &[PortForward]) -> String {
    let mut s = String::from("user,id=net0");
    for f in forwards {
        s += &format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest);
    }
    s
}

/// Quote a path for a QEMU option value (commas are doubled).
fn opt_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// The machine type: i440fx (`pc`) for BIOS and plain UEFI; q35 with SMM for Secure Boot (the
/// `secboot` OVMF build will not start without SMM). graphics=off makes SeaBIOS and OVMF print
/// to the serial port, so "No bootable device" or a Secure Boot refusal shows in the console log.
fn machine(cfg: &VmConfig) -> &'static str {
    match &cfg.uefi {
        Some(u) if u.secure => "q35,smm=on,graphics=off",
        _ => "pc,graphics=off",
    }
}

/// The QEMU arguments (without the program name).
pub fn args(cfg: &VmConfig) -> Vec<OsString> {
    let accel = if cfg.kvm { "kvm" } else { "tcg" };
    let cpu = if cfg.kvm { "host" } else { "max" };
    let list: Vec<String> = vec![
        "-nodefaults".into(),
        "-no-user-config".into(),
        // graphics=off makes SeaBIOS print to the serial port, so "No bootable device" shows up
        // in the console log.
        "-machine".into(),
        machine(cfg).into(),
        "-accel".into(),
        accel.into(),
        "-cpu".into(),
        cpu.into(),
        "-m".into(),
        cfg.memory_mib.to_string(),
        "-smp".into(),
        cfg.cpus.to_string(),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{}", cfg.console_log.to_string_lossy()),
        "-drive".into(),
        format!(
            "file={},if=none,id=disk0,format=qcow2,discard=unmap",
            opt_path(&cfg.overlay)
        ),
        "-device".into(),
        "virtio-blk-pci,drive=disk0,bootindex=0".into(),
        "-drive".into(),
        format!(
            "file={},if=none,id=seed,format=raw,readonly=on",
            opt_path(&cfg.seed)
        ),
        "-device".into(),
        "virtio-blk-pci,drive=seed".into(),
        "-netdev".into(),
        netdev_arg(&cfg.forwards),
        // romfile= : no iPXE option ROM, so a disk without a bootloader fails at once instead
        // of trying a network boot.
        "-device".into(),
        "virtio-net-pci,netdev=net0,romfile=".into(),
        "-device".into(),
        "virtio-rng-pci".into(),
    ];
    let mut list = list;
    if let Some(u) = &cfg.uefi {
        if u.secure {
            // The variable store's flash is writable from SMM only.
            list.extend([
                "-global".into(),
                "driver=cfi.pflash01,property=secure,value=on".into(),
            ]);
        }
        list.extend([
            "-drive".into(),
            format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                opt_path(&u.code)
            ),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", opt_path(&u.vars)),
        ]);
    }
    list.into_iter().map(OsString::from).collect()
}

/// The running QEMU. Dropping it stops QEMU (SIGTERM, then SIGKILL) and reaps it.
pub struct Qemu {
    child: Option<Child>,
    status: Option<ExitStatus>,
}

impl Qemu {
    /// Start QEMU in its own process group (so a terminal's Ctrl-C reaches bakery, which then
    /// stops QEMU in order) and with a parent-death signal (so it cannot outlive bakery).
    pub fn spawn(cfg: &VmConfig, stderr_log: &Path) -> Result<Qemu> {
        let args = args(cfg);
        debug!(cmd = %format!("{QEMU} {}", args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")), "starting qemu");
        let err = File::create(stderr_log)
            .with_context(|| format!("creating {}", stderr_log.display()))?;
        let mut cmd = Command::new(QEMU);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(err.try_clone().context("duplicating the qemu log fd")?)
            .stderr(err)
            .process_group(0);
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe, between fork and
        // exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "{QEMU} not found; install qemu-system-x86 (from bookworm-backports on Debian 12)"
                )
            } else {
                anyhow::Error::new(e).context(format!("starting {QEMU}"))
            }
        })?;
        Ok(Qemu {
            child: Some(child),
            status: None,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Has QEMU exited? (non-blocking)
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = c.try_wait().ok().flatten();
            }
        }
        self.status
    }

    /// Stop QEMU: SIGTERM, wait up to `grace`, then SIGKILL; always reaps it.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.status.is_some() || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.wait();
            return;
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        warn!(pid = child.id(), "qemu did not stop on SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kvm: bool) -> VmConfig {
        VmConfig {
            kvm,
            memory_mib: 1536,
            cpus: 2,
            overlay: "/tmp/b,x/overlay.qcow2".into(),
            seed: "/tmp/b/seed.img".into(),
            console_log: "/tmp/b/console.log".into(),
            uefi: None,
            forwards: vec![
                PortForward {
                    guest: 8080,
                    host: 41000,
                },
                PortForward {
                    guest: 22,
                    host: 41001,
                },
            ],
        }
    }

    fn joined(c: &VmConfig) -> String {
        args(c)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn hostfwd_binds_localhost() {
        assert_eq!(netdev_arg(&[]), "user,id=net0");
        assert_eq!(
            netdev_arg(&cfg(false).forwards),
            "user,id=net0,hostfwd=tcp:127.0.0.1:41000-:8080,hostfwd=tcp:127.0.0.1:41001-:22"
        );
    }

    #[test]
    fn command_line() {
        let a = joined(&cfg(false));
        assert!(a.contains("-accel tcg -cpu max"), "{a}");
        assert!(a.contains("-m 1536 -smp 2"));
        assert!(a.contains("-serial file:/tmp/b/console.log"));
        assert!(a.contains("file=/tmp/b,,x/overlay.qcow2,if=none,id=disk0,format=qcow2"));
        assert!(a.contains("virtio-blk-pci,drive=disk0,bootindex=0"));
        assert!(a.contains("format=raw,readonly=on"));
        assert!(a.contains("virtio-net-pci,netdev=net0,romfile="));
        assert!(a.contains("-display none"));
        assert!(
            !a.contains("-kernel"),
            "the image's own bootloader boots it"
        );
        assert!(joined(&cfg(true)).contains("-accel kvm -cpu host"));
        assert!(!a.contains("pflash"), "BIOS by default");
    }

    #[test]
    fn uefi_boots_from_ovmf_flash_with_a_writable_variable_store() {
        let mut c = cfg(false);
        c.uefi = Some(Uefi {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            vars: "/tmp/b/OVMF_VARS.fd".into(),
            secure: false,
        });
        let a = joined(&c);
        assert!(a.contains(
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
        ));
        assert!(a.contains("-drive if=pflash,format=raw,unit=1,file=/tmp/b/OVMF_VARS.fd"));
        let dir = tempfile::tempdir().unwrap();
        assert!(a.contains("-machine pc,graphics=off"));
        assert!(!a.contains("smm"), "{a}");
        c.uefi.as_mut().unwrap().secure = true;
        let s = joined(&c);
        assert!(s.contains("-machine q35,smm=on,graphics=off"), "{s}");
        assert!(s.contains("-global driver=cfi.pflash01,property=secure,value=on"));
        let e = ovmf(dir.path(), false).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        assert!(e.to_string().contains("apt-get install ovmf"));
        std::fs::write(dir.path().join("OVMF_CODE_4M.fd"), "").unwrap();
        std::fs::write(dir.path().join("OVMF_VARS_4M.fd"), "").unwrap();
        assert_eq!(
            ovmf(dir.path(), false).unwrap().1,
            dir.path().join("OVMF_VARS_4M.fd")
        );
        let e = ovmf(dir.path(), true).unwrap_err();
        assert!(e.to_string().contains("--firmware uefi-secure"), "{e}");
        std::fs::write(dir.path().join("OVMF_CODE_4M.secboot.fd"), "").unwrap();
        std::fs::write(dir.path().join("OVMF_VARS_4M.ms.fd"), "").unwrap();
        assert_eq!(
            ovmf(dir.path(), true).unwrap(),
            (
                dir.path().join("OVMF_CODE_4M.secboot.fd"),
                dir.path().join("OVMF_VARS_4M.ms.fd")
            )
        );
    }
}
