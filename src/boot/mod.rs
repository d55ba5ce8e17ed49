//! `bakery boot`: start a baked image under QEMU the way a cloud would (its own bootloader,
//! virtio disk and network, a cloud-init NoCloud seed), on a throw-away overlay, and wait until
//! its app answers.
//!
//! Pure decisions live in [`spec`], [`accel`], [`console`], [`seed`] and [`qemu::args`]; the
//! effects (temp dir, QEMU process, signal handlers) are guards whose `Drop` cleans up, so every
//! exit path (success, error, Ctrl-C) leaves no process or temp file behind.

pub mod accel;
pub mod console;
pub mod ports;
pub mod probe;
pub mod qemu;
pub mod seed;
pub mod signals;
pub mod spec;
pub mod workdir;

use crate::cli::boot::{Accel, BootArgs};
use anyhow::{anyhow, bail, Context, Result};
use qemu::{PortForward, Qemu, VmConfig};
use spec::{ForwardSpec, HealthSpec};
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How many console lines a failure shows.
const TAIL_LINES: usize = 20;
/// Time between health probes.
const PROBE_EVERY: Duration = Duration::from_millis(1500);
/// How long one `--health-cmd` may run.
const SSH_CMD_LIMIT: Duration = Duration::from_secs(30);

/// What `bakery boot` prints (as JSON) on stdout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BootReport {
    /// The image booted (absolute path).
    pub image: PathBuf,
    /// The image format, as qemu-img saw it (`raw`, `qcow2`...).
    pub format: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// `bios` or `uefi`.
    pub firmware: crate::cli::boot::Firmware,
    /// Why that accelerator.
    pub accel_reason: String,
    /// Did the health check pass?
    pub healthy: bool,
    /// Seconds from QEMU's start until the health check passed.
    pub boot_seconds: Option<f64>,
    /// The `--health` check, normalized.
    pub health: Option<String>,
    /// The `--health-cmd` command.
    pub health_cmd: Option<String>,
    /// Guest ports and the 127.0.0.1 host ports they were forwarded to.
    pub forwards: Vec<PortForward>,
    /// Where the serial console log was kept (`--console-log`), or null if it was deleted.
    pub console_log: Option<PathBuf>,
    /// How the VM ended: `check` (stopped after the health check), `interrupted` (Ctrl-C or a
    /// signal), or `guest-exited` (the guest powered off).
    pub stopped: String,
}

/// A boot that failed in a way the user should see with the console: one line saying what
/// failed (and a hint), then the last console lines.
#[derive(Debug)]
pub struct BootFailure {
    pub what: String,
    pub console_log: Option<PathBuf>,
    pub tail: Vec<String>,
}

impl fmt::Display for BootFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "boot: {}", self.what)?;
        match &self.console_log {
            Some(p) => write!(f, " (serial console log: {})", p.display()),
            None => Ok(()),
        }
    }
}

impl BootFailure {
    /// The console tail as printed on stderr before the error line.
    pub fn tail_text(&self) -> String {
        let mut s = match &self.console_log {
            Some(p) => format!(
                "--- last {} lines of the serial console ({}) ---\n",
                self.tail.len(),
                p.display()
            ),
            None => format!(
                "--- last {} lines of the serial console ---\n",
                self.tail.len()
            ),
        };
        if self.tail.is_empty() {
            s += "  (the console printed nothing)\n";
        }
        for l in &self.tail {
            s += &format!("  | {l}\n");
        }
        s
    }
}

impl std::error::Error for BootFailure {}

/// The validated request: everything decided before anything is started.
#[derive(Debug, Clone)]
struct Plan {
    health: Option<HealthSpec>,
    health_cmd: Option<(String, PathBuf)>,
    ssh_pubkey: Option<String>,
    forwards: Vec<ForwardSpec>,
    timeout: Duration,
}

fn plan(args: &BootArgs) -> Result<Plan> {
    let health = args
        .health
        .as_deref()
        .map(spec::parse_health)
        .transpose()
        .map_err(|e| crate::input!("boot: {e}"))?;
    if args.check && health.is_none() && args.health_cmd.is_none() {
        return Err(crate::input!(
            "boot: --check needs --health URL|tcp:PORT or --health-cmd CMD"
        ));
    }
    if !seed::valid_hostname(&args.hostname) {
        return Err(crate::input!(
            "boot: --hostname {:?} is not a valid hostname",
            args.hostname
        ));
    }
    if args.memory < 128 {
        return Err(crate::input!(
            "boot: --memory {} MiB is too little (at least 128; the default is 1536)",
            args.memory
        ));
    }
    if args.cpus == 0 {
        return Err(crate::input!("boot: --cpus must be at least 1"));
    }
    if args.timeout == 0 {
        return Err(crate::input!("boot: --timeout must be at least 1 second"));
    }
    let ssh_pubkey = match &args.ssh_key {
        Some(p) => {
            let key = std::fs::read_to_string(p)
                .map_err(|e| crate::input!("boot: reading --ssh-key {}: {e}", p.display()))?;
            let key = key.trim().to_string();
            if !key.starts_with("ssh-") && !key.starts_with("ecdsa-") && !key.starts_with("sk-") {
                return Err(crate::input!(
                    "boot: --ssh-key {} does not look like a public key (ssh-ed25519 ...)",
                    p.display()
                ));
            }
            Some(key)
        }
        None => None,
    };
    let health_cmd = match (&args.health_cmd, &args.ssh_key) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(crate::input!(
                "boot: --health-cmd runs over ssh and needs --ssh-key PUBKEY_FILE"
            ))
        }
        (Some(cmd), Some(pubkey)) => {
            let private = private_key_for(pubkey);
            if !private.is_file() {
                return Err(crate::input!(
                    "boot: --health-cmd needs the private key next to {} (looked for {})",
                    pubkey.display(),
                    private.display()
                ));
            }
            Some((cmd.clone(), private))
        }
    };
    let explicit = args
        .forward
        .iter()
        .map(|f| spec::parse_forward(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crate::input!("boot: {e}"))?;
    let mut auto = Vec::new();
    if let Some(h) = &health {
        auto.push(h.guest_port());
    }
    if ssh_pubkey.is_some() {
        auto.push(22);
    }
    Ok(Plan {
        health,
        health_cmd,
        ssh_pubkey,
        forwards: spec::merge_forwards(&explicit, &auto),
        timeout: Duration::from_secs(args.timeout),
    })
}

/// `id_ed25519.pub` -> `id_ed25519`.
fn private_key_for(pubkey: &Path) -> PathBuf {
    match pubkey.to_str().and_then(|s| s.strip_suffix(".pub")) {
        Some(p) => PathBuf::from(p),
        None => pubkey.with_extension(""),
    }
}

/// The image format according to `qemu-img info`.
fn image_format(image: &Path) -> Result<String> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(image)
        .output()
        .context("boot: running qemu-img (install qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "boot: qemu-img cannot read {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("boot: parsing qemu-img info")?;
    v["format"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("boot: qemu-img info gave no format for {}", image.display()))
}

/// `qemu-img create -f qcow2 -F FMT -b IMAGE overlay`: QEMU writes here, never to the image.
fn create_overlay(image: &Path, format: &str, overlay: &Path) -> Result<()> {
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(image)
        .arg(overlay)
        .output()
        .context("boot: running qemu-img create")?;
    if !out.status.success() {
        bail!(
            "boot: creating the overlay failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Boot an image (`bakery boot`).
pub fn run(args: &BootArgs) -> Result<BootReport> {
    let plan = plan(args)?;
    let image = std::fs::canonicalize(&args.image)
        .map_err(|e| crate::input!("boot: image {}: {e}", args.image.display()))?;
    if !image.is_file() {
        return Err(crate::input!(
            "boot: image {} is not a file",
            image.display()
        ));
    }
    let format = image_format(&image)?;
    let secure = args.firmware == crate::cli::boot::Firmware::UefiSecure;
    let ovmf = match args.firmware {
        crate::cli::boot::Firmware::Bios => None,
        _ => Some(qemu::ovmf(&qemu::ovmf_dir(), secure)?),
    };
    let accel = accel::choose(args.accel).map_err(|e| anyhow!("boot: {e}"))?;
    info!(
        "accelerator: {} ({}){}",
        accel.name(),
        accel.reason,
        if accel.kvm {
            ""
        } else {
            "; TCG is slow: expect about a minute to boot"
        }
    );

    let signals = signals::SignalGuard::install().context("boot")?;
    let mut work = workdir::WorkDir::create().context("boot: creating the temp dir")?;
    let overlay = work.path().join("overlay.qcow2");
    create_overlay(&image, &format, &overlay)?;
    // UEFI: the firmware code read-only, a writable copy of its variable store per boot.
    let uefi = match ovmf {
        Some((code, vars)) => {
            let copy = work.path().join("OVMF_VARS.fd");
            std::fs::copy(&vars, &copy)
                .with_context(|| format!("boot: copying {}", vars.display()))?;
            Some(qemu::Uefi {
                code,
                vars: copy,
                secure,
            })
        }
        None => None,
    };
    let instance_id = format!("bakery-{}", uuid::Uuid::new_v4().simple());
    let seed = seed::build(
        work.path(),
        &seed::meta_data(&instance_id, &args.hostname),
        &seed::user_data(&args.hostname, plan.ssh_pubkey.as_deref()),
    )
    .context("boot: writing the cloud-init seed")?;

    let vm = VmFiles {
        overlay: &overlay,
        seed: &seed,
        uefi: uefi.as_ref(),
    };
    let result = boot_and_wait(args, &plan, &accel, &mut work, &vm, &signals);

    // Keep the console log where the user asked for it, in every case.
    let console_copy =
        args.console_log
            .as_ref()
            .and_then(|dst| match std::fs::copy(work.console_log(), dst) {
                Ok(_) => Some(dst.clone()),
                Err(e) => {
                    warn!("boot: copying the console log to {}: {e}", dst.display());
                    None
                }
            });
    let outcome = match result {
        Ok(o) => o,
        Err(mut e) => {
            // On failure the temp dir keeps the console log for the user; everything else goes.
            if let Some(f) = e.downcast_mut::<BootFailure>() {
                match &console_copy {
                    Some(p) => f.console_log = Some(p.clone()),
                    None if std::fs::metadata(work.console_log()).is_ok_and(|m| m.len() > 0) => {
                        work.keep_console()
                    }
                    None => f.console_log = None,
                }
                // main prints the error as one line; the console tail goes before it.
                eprint!("{}", f.tail_text());
            }
            drop(work);
            return Err(e);
        }
    };
    let errors = work.cleanup();
    drop(work);
    if !errors.is_empty() {
        warn!("boot: cleanup: {}", errors.join("; "));
    }
    Ok(BootReport {
        image,
        format,
        accel: accel.name().to_string(),
        accel_reason: accel.reason.clone(),
        firmware: args.firmware,
        healthy: outcome.boot_seconds.is_some(),
        boot_seconds: outcome.boot_seconds,
        health: plan.health.as_ref().map(|h| h.to_string()),
        health_cmd: plan.health_cmd.as_ref().map(|(c, _)| c.clone()),
        forwards: outcome.forwards,
        console_log: console_copy,
        stopped: outcome.stopped.to_string(),
    })
}

/// `bakery bake ... --boot-check URL`: boot the fresh image with defaults and `--check`.
pub fn boot_check(image: &Path, health: &str, timeout: Duration) -> Result<BootReport> {
    let args = BootArgs {
        image: image.to_path_buf(),
        health: Some(health.to_string()),
        health_cmd: None,
        timeout: timeout.as_secs().max(1),
        forward: Vec::new(),
        ssh_key: None,
        check: true,
        console: false,
        console_log: None,
        accel: Accel::Auto,
        memory: 1536,
        cpus: 2,
        hostname: "bakery-boot".to_string(),
        firmware: crate::cli::boot::Firmware::Bios,
    };
    run(&args)
}

struct Outcome {
    boot_seconds: Option<f64>,
    forwards: Vec<PortForward>,
    stopped: &'static str,
}

/// Start QEMU (retrying if a released port was taken in between) and wait for health; then
/// stop (`--check`) or stay in the foreground until a signal or the guest exits.
/// The files a VM boots from.
struct VmFiles<'a> {
    overlay: &'a Path,
    seed: &'a Path,
    uefi: Option<&'a qemu::Uefi>,
}

fn boot_and_wait(
    args: &BootArgs,
    plan: &Plan,
    accel: &accel::AccelChoice,
    work: &mut workdir::WorkDir,
    vm_files: &VmFiles,
    signals: &signals::SignalGuard,
) -> Result<Outcome> {
    let (overlay, seed) = (vm_files.overlay, vm_files.seed);
    let console_log = work.console_log();
    let qemu_log = work.path().join("qemu.log");
    let fail = |what: String| -> anyhow::Error {
        anyhow::Error::new(BootFailure {
            what,
            tail: console::tail_file(&console_log, TAIL_LINES),
            console_log: Some(console_log.clone()),
        })
    };

    let mut attempt = 0;
    let (mut vm, forwards, started) = loop {
        attempt += 1;
        let reservation = ports::reserve(&plan.forwards).context("boot")?;
        let forwards = reservation.release();
        let cfg = VmConfig {
            kvm: accel.kvm,
            memory_mib: args.memory,
            cpus: args.cpus,
            overlay: overlay.to_path_buf(),
            seed: seed.to_path_buf(),
            console_log: console_log.clone(),
            forwards: forwards.clone(),
            uefi: vm_files.uefi.cloned(),
        };
        let started = Instant::now();
        let mut vm = Qemu::spawn(&cfg, &qemu_log).context("boot")?;
        // A hostfwd that lost the race for its port makes QEMU exit at once.
        std::thread::sleep(Duration::from_millis(300));
        if vm.exited().is_some() && attempt < 3 {
            let log = std::fs::read_to_string(&qemu_log).unwrap_or_default();
            if log.contains("host forwarding") {
                warn!("boot: a forwarded port was taken before QEMU bound it; retrying with new ports");
                continue;
            }
        }
        break (vm, forwards, started);
    };
    info!(
        "qemu started (pid {}); console log {}",
        vm.pid().unwrap_or(0),
        console_log.display()
    );
    for f in &forwards {
        info!("forwarding guest port {} to 127.0.0.1:{}", f.guest, f.host);
    }
    let host_port = |guest: u16| forwards.iter().find(|f| f.guest == guest).map(|f| f.host);

    let mut follower = console::Follower::new(&console_log);
    let stream = |follower: &mut console::Follower| -> Option<console::Fatal> {
        let new = follower.read_new();
        if args.console && !new.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&new);
            let _ = err.flush();
        }
        follower.scan(&new)
    };
    let qemu_exit_msg = |st: std::process::ExitStatus| -> String {
        let log = std::fs::read_to_string(&qemu_log).unwrap_or_default();
        let last = log
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        let last = last.strip_prefix("qemu-system-x86_64: ").unwrap_or(&last);
        if last.is_empty() {
            format!("QEMU exited ({st}) before the image was healthy")
        } else {
            format!("QEMU exited ({st}) before the image was healthy: {last}")
        }
    };

    let checks = plan.health.is_some() || plan.health_cmd.is_some();
    let spinner = (checks && !args.console && std::io::stderr().is_terminal()).then(|| {
        let pb = crate::progress::spinner();
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    });
    let deadline = started + plan.timeout;
    let mut next_probe = started + Duration::from_secs(3);
    let mut last = String::from("no answer yet");
    let mut boot_seconds = None;

    if checks {
        loop {
            if let Some(sig) = signals.received() {
                if let Some(pb) = &spinner {
                    pb.finish_and_clear();
                }
                // Not a boot failure: no console tail, and nothing is kept.
                return Err(anyhow::Error::new(crate::error::Interrupted)
                    .context(format!("boot: {sig} before the image was healthy")));
            }
            if let Some(st) = vm.exited() {
                if let Some(pb) = &spinner {
                    pb.finish_and_clear();
                }
                return Err(fail(qemu_exit_msg(st)));
            }
            if let Some(f) = stream(&mut follower) {
                if let Some(pb) = &spinner {
                    pb.finish_and_clear();
                }
                return Err(fail(format!(
                    "{} (console shows {:?}) after {:.0}s",
                    f.meaning,
                    f.pattern,
                    started.elapsed().as_secs_f64()
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                if let Some(pb) = &spinner {
                    pb.finish_and_clear();
                }
                let what = match (&plan.health, &plan.health_cmd) {
                    (Some(h), _) => format!("health {h}"),
                    (None, Some((c, _))) => format!("--health-cmd {c:?}"),
                    (None, None) => unreachable!(),
                };
                let hint = match &plan.health {
                    Some(HealthSpec::Http { .. }) => "answer 2xx",
                    _ => "pass",
                };
                return Err(fail(format!(
                    "{what} did not {hint} within {}s (last: {last}); hint: is the service enabled in the image{}?",
                    plan.timeout.as_secs(),
                    if accel.kvm { "" } else { ", and is --timeout long enough under TCG" }
                )));
            }
            if now >= next_probe {
                match probe_all(plan, &host_port) {
                    Ok(()) => {
                        boot_seconds =
                            Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
                        break;
                    }
                    Err(e) => last = e.0,
                }
                next_probe = Instant::now() + PROBE_EVERY;
                if let Some(pb) = &spinner {
                    pb.set_message(format!(
                        "booting ({}) {:.0}s, last: {last}",
                        accel.name(),
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(pb) = &spinner {
            pb.finish_and_clear();
        }
        let secs = boot_seconds.unwrap_or_default();
        match &plan.health {
            Some(h) => info!("healthy after {secs:.1}s ({}): {h}", accel.name()),
            None => info!(
                "healthy after {secs:.1}s ({}): --health-cmd passed",
                accel.name()
            ),
        }
        if args.check {
            vm.stop(Duration::from_secs(5));
            return Ok(Outcome {
                boot_seconds,
                forwards,
                stopped: "check",
            });
        }
    }

    // Foreground: keep the VM until Ctrl-C (or the guest powers off).
    info!(
        "VM running; press Ctrl-C to stop it (console log {})",
        console_log.display()
    );
    if let (Some(port), Some(k)) = (host_port(22), &args.ssh_key) {
        info!(
            "ssh: ssh -i {} -p {port} root@127.0.0.1",
            private_key_for(k).display()
        );
    }
    let stopped = loop {
        if signals.received().is_some() {
            break "interrupted";
        }
        if vm.exited().is_some() {
            break "guest-exited";
        }
        let _ = stream(&mut follower);
        std::thread::sleep(Duration::from_millis(200));
    };
    info!("stopping the VM ({stopped})");
    vm.stop(Duration::from_secs(5));
    Ok(Outcome {
        boot_seconds,
        forwards,
        stopped,
    })
}

/// Run every configured check once; all must pass.
fn probe_all(plan: &Plan, host_port: &dyn Fn(u16) -> Option<u16>) -> Result<(), probe::Unhealthy> {
    if let Some(h) = &plan.health {
        let port = host_port(h.guest_port()).ok_or("internal: health port not forwarded")?;
        match h {
            HealthSpec::Http {
                path, authority, ..
            } => {
                probe::http(port, authority, path)?;
            }
            HealthSpec::Tcp { .. } => probe::tcp_banner(port)?,
        }
    }
    if let Some((cmd, key)) = &plan.health_cmd {
        let port = host_port(22).ok_or("internal: ssh port not forwarded")?;
        probe::ssh_cmd(key, port, cmd, SSH_CMD_LIMIT)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> BootArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct W {
            #[command(flatten)]
            a: BootArgs,
        }
        let mut v = vec!["bakery-boot", "img.qcow2"];
        v.extend_from_slice(extra);
        W::parse_from(v).a
    }

    #[test]
    fn plan_forwards_health_and_ssh_ports() {
        let dir = tempfile::tempdir().unwrap();
        let pubkey = dir.path().join("id_ed25519.pub");
        std::fs::write(&pubkey, "ssh-ed25519 AAAAC3Nza me@host\n").unwrap();
        std::fs::write(dir.path().join("id_ed25519"), "private").unwrap();
        let p = plan(&args(&[
            "--health",
            "http://localhost:8080/hello/",
            "--forward",
            "9000:80",
            "--ssh-key",
            pubkey.to_str().unwrap(),
            "--health-cmd",
            "true",
        ]))
        .unwrap();
        let guests: Vec<u16> = p.forwards.iter().map(|f| f.guest).collect();
        assert_eq!(guests, vec![80, 8080, 22]);
        assert_eq!(p.forwards[0].host, Some(9000));
        assert_eq!(
            p.ssh_pubkey.as_deref(),
            Some("ssh-ed25519 AAAAC3Nza me@host")
        );
        assert_eq!(p.health_cmd.unwrap().1, dir.path().join("id_ed25519"));
    }

    #[test]
    fn plan_rejects_bad_requests() {
        let e = |a: &[&str]| plan(&args(a)).unwrap_err().to_string();
        assert!(e(&["--check"]).contains("--check needs --health"));
        assert!(e(&["--health", "ftp://x"]).starts_with("boot: --health"));
        assert!(e(&["--health-cmd", "true"]).contains("needs --ssh-key"));
        assert!(e(&["--hostname", "a_b"]).contains("not a valid hostname"));
        assert!(e(&["--forward", "x"]).starts_with("boot: --forward"));
        assert!(e(&["--memory", "64"]).contains("too little"));
    }

    #[test]
    fn private_key_path() {
        assert_eq!(
            private_key_for(Path::new("/k/id.pub")),
            PathBuf::from("/k/id")
        );
        assert_eq!(
            private_key_for(Path::new("/k/id.key")),
            PathBuf::from("/k/id")
        );
    }

    #[test]
    fn failure_message_is_one_line_then_tail() {
        let f = BootFailure {
            what: "health http://localhost:8080/ did not answer 2xx within 300s (last: connection refused)".into(),
            console_log: Some("/tmp/x/console.log".into()),
            tail: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            f.to_string(),
            "boot: health http://localhost:8080/ did not answer 2xx within 300s (last: connection refused) (serial console log: /tmp/x/console.log)"
        );
        assert_eq!(
            f.tail_text(),
            "--- last 2 lines of the serial console (/tmp/x/console.log) ---\n  | a\n  | b\n"
        );
    }

    #[test]
    fn bad_input_exits_2() {
        let e = plan(&args(&["--check"])).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
    }
}
