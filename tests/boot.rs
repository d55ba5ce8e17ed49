//! `bakery boot` end to end: real QEMU (TCG here), real images, the built binary.
//!
//! Boots are expensive under TCG (~40-60 s each), so the tests share one baked image and run
//! their boots one at a time (BOOT_LOCK). Every test gives the child a private TMPDIR and checks
//! afterwards that no QEMU process referring to it is left and that the dir holds nothing but
//! what the test expects.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const BAKERY: &str = env!("CARGO_BIN_EXE_bakery");

/// One boot at a time: parallel TCG guests on a small runner only make every boot slower.
static BOOT_LOCK: Mutex<()> = Mutex::new(());

fn boot_lock() -> MutexGuard<'static, ()> {
    BOOT_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A private TMPDIR for one bakery run.
struct Tmp(tempfile::TempDir);

impl Tmp {
    fn new() -> Tmp {
        Tmp(tempfile::Builder::new()
            .prefix("boot-test-tmp-")
            .tempdir()
            .unwrap())
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
    /// Everything left in the dir, as relative paths.
    fn leftovers(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                if p.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), self.path(), &mut out);
        out.sort();
        out
    }
    /// Processes whose command line mentions this dir (a QEMU that was not stopped).
    fn processes(&self) -> Vec<String> {
        let needle = self.path().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
            {
                continue;
            }
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(&needle) {
                    found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
                }
            }
        }
        found
    }
}

fn bakery(tmp: &Tmp) -> Command {
    let mut c = Command::new(BAKERY);
    c.env("TMPDIR", tmp.path())
        .env("RUST_LOG", "bakery=info")
        .stdin(Stdio::null());
    c
}

fn run(cmd: &mut Command) -> (Output, Duration) {
    let start = Instant::now();
    let out = cmd.output().expect("running bakery");
    (out, start.elapsed())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The page the test app serves.
const PAGE_PATH: &str = "/hello/index.html";
const PAGE: &str = "<html><body>bakery boot test page</body></html>\n";

/// Tests that boot the shared app image; the last one to finish deletes it.
const APP_IMAGE_USERS: usize = 5;
static APP_IMAGE_LEFT: AtomicUsize = AtomicUsize::new(APP_IMAGE_USERS);

fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("boot-test-app")
}

/// The default base (Debian 13) + jvm-tomcat + a .deb dropping a static page into Tomcat's webapps (served
/// as /hello/), baked once per test run. Call with the boot lock held.
fn app_image() -> AppImage {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    let path = IMG
        .get_or_init(|| {
            let dir = app_dir();
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let deb = support::build_deb(
                &dir,
                &support::Deb {
                    name: "hello-boot",
                    files: &[("/var/lib/tomcat10/webapps/hello/index.html", PAGE)],
                    ..Default::default()
                },
            );
            // Debian 13, the built-in default base (issue 15: a trixie bake boots both ways).
            let base = support::trixie_base();
            let out_img = dir.join("app.qcow2");
            let r = support::run(
                Command::new(BAKERY)
                    .env("BAKERY_WORK_DIR", dir.join("work"))
                    .current_dir(support::repo())
                    .args(["bake", "--base"])
                    .arg(&base)
                    .args(["--layer", "jvm-tomcat", "--package"])
                    .arg(&deb)
                    .arg("--output")
                    .arg(&out_img)
                    .stdin(Stdio::null()),
            );
            r.assert_ok();
            out_img
        })
        .clone();
    AppImage(path)
}

/// The shared app image; the last user removes it (and the bake's work dir).
struct AppImage(PathBuf);

impl Drop for AppImage {
    fn drop(&mut self) {
        if APP_IMAGE_LEFT.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _ = std::fs::remove_dir_all(app_dir());
        }
    }
}

#[test]
fn baked_tomcat_app_answers_and_nothing_is_left() {
    let _lock = boot_lock();
    let app = app_image();
    let image = app.0.as_path();
    let _leaks = support::LeakCheck::new();
    let before = (
        sha256(image),
        std::fs::metadata(image).unwrap().modified().unwrap(),
    );
    let tmp = Tmp::new();
    // The seed's hostname and SSH key reach the guest: --health-cmd runs over ssh with the key
    // and checks the hostname, on the same boot as the HTTP check.
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id_ed25519");
    let kg = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        kg.status.success(),
        "{}",
        String::from_utf8_lossy(&kg.stderr)
    );
    let url = format!("http://localhost:8080{PAGE_PATH}");
    let (out, took) = run(bakery(&tmp)
        .arg("boot")
        .arg(image)
        // Debian 13's JVM 21 starting Tomcat under TCG on a 2-core CI host: minutes, not seconds.
        .args(["--health", &url, "--check", "--timeout", BOOT_TIMEOUT])
        .args(["--hostname", "boot-test-vm", "--ssh-key"])
        .arg(key.with_extension("pub"))
        .args(["--health-cmd", "test \"$(hostname)\" = boot-test-vm"]));
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "boot --check failed after {took:?}:\n{err}"
    );

    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON report ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(report["healthy"], true, "{report}");
    assert_eq!(report["stopped"], "check");
    assert_eq!(report["health"], url.as_str());
    assert_eq!(report["format"], "qcow2");
    assert!(report["health_cmd"]
        .as_str()
        .unwrap()
        .contains("boot-test-vm"));
    let accel = report["accel"].as_str().unwrap();
    assert!(accel == "kvm" || accel == "tcg", "{report}");
    assert!(
        err.contains(&format!("accelerator: {accel}")),
        "says which accelerator:\n{err}"
    );
    let secs = report["boot_seconds"].as_f64().unwrap();
    assert!(
        secs > 0.0 && secs < BOOT_TIMEOUT.parse().unwrap(),
        "{report}"
    );
    eprintln!("boot: healthy after {secs}s under {accel} (whole command {took:?})");
    let fwd = report["forwards"].as_array().unwrap();
    let host_port = fwd
        .iter()
        .find(|f| f["guest"] == 8080)
        .expect("8080 forwarded")["host"]
        .as_u64()
        .unwrap() as u16;
    assert!(
        err.contains(&format!("127.0.0.1:{host_port}")),
        "prints the port:\n{err}"
    );

    // Nothing left: no QEMU, no overlay/seed/console files, the port is free again, and the
    // image itself was never written.
    assert_eq!(tmp.processes(), Vec::<String>::new());
    assert_eq!(tmp.leftovers(), Vec::<String>::new());
    assert!(
        fwd.iter().any(|f| f["guest"] == 22),
        "--ssh-key forwards 22: {report}"
    );
    for f in fwd {
        let port = f["host"].as_u64().unwrap() as u16;
        assert!(port_is_free(port), "host port {port} still bound");
    }
    let after = (
        sha256(image),
        std::fs::metadata(image).unwrap().modified().unwrap(),
    );
    assert_eq!(before, after, "the baked image changed");
}

/// Seconds a boot of the shared app image may take to answer (TCG, 2 cores, JVM 21 + Tomcat).
const BOOT_TIMEOUT: &str = "900";

/// Boot the shared app image with `--firmware FIRMWARE` and `--health HEALTH` (`http://...`
/// or `tcp:22`). Returns the JSON report and the console log; asserts nothing is left.
fn boot_app_with(firmware: &str, health: &str) -> (serde_json::Value, String) {
    let app = app_image();
    let image = app.0.as_path();
    let _leaks = support::LeakCheck::new();
    let tmp = Tmp::new();
    let logs = tempfile::tempdir().unwrap();
    let console = logs.path().join("console.log");
    let (out, took) = run(bakery(&tmp)
        .arg("boot")
        .arg(image)
        .args(["--firmware", firmware, "--health", health, "--check"])
        .args(["--timeout", BOOT_TIMEOUT, "--console-log"])
        .arg(&console));
    let err = stderr(&out);
    // Lossy: firmware and GRUB menus write bytes that are not UTF-8.
    let log = String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
    let tail: String = log
        .chars()
        .rev()
        .take(3000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        out.status.success(),
        "boot --firmware {firmware} failed after {took:?}:\n{err}\n--- console:\n{tail}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["firmware"], firmware, "{report}");
    assert_eq!(report["healthy"], true, "{report}");
    // OVMF's boot manager ran (SeaBIOS prints no BdsDxe) and reached the image's kernel
    // through shim and GRUB from the ESP.
    assert!(log.contains("BdsDxe"), "OVMF did not boot it:\n{tail}");
    assert!(
        log.contains("Linux version"),
        "no kernel on the console:\n{tail}"
    );
    eprintln!(
        "boot: healthy under {firmware} after {}s",
        report["boot_seconds"]
    );
    assert_eq!(tmp.processes(), Vec::<String>::new());
    assert_eq!(tmp.leftovers(), Vec::<String>::new());
    (report, log)
}

/// The same bake boots through the other firmware and answers HTTP: OVMF → shim → GRUB from
/// the ESP's removable-media path (no boot entry, as on a fresh instance).
#[test]
fn the_same_image_boots_under_uefi_and_answers() {
    let _lock = boot_lock();
    let (_, log) = boot_app_with("uefi", &format!("http://localhost:8080{PAGE_PATH}"));
    assert!(
        log.contains("secureboot: Secure boot disabled"),
        "plain OVMF does not enforce Secure Boot, and the kernel says so"
    );
}

/// With Secure Boot enforced and Microsoft's keys enrolled (as on EC2's `uefi` boot mode with
/// Secure Boot, and most hardware) the image still boots: the ESP holds Debian's signed chain
/// (shim signed by Microsoft, GRUB and the kernel signed by Debian), and the kernel says Secure
/// Boot is on.
#[test]
fn the_same_image_boots_with_secure_boot_enforced() {
    let _lock = boot_lock();
    // sshd answering is enough here: the app's HTTP under UEFI is proven above.
    let (_, log) = boot_app_with("uefi-secure", "tcp:22");
    let tail: String = log
        .chars()
        .rev()
        .take(3000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        log.contains("secureboot: Secure boot enabled"),
        "the kernel did not see Secure Boot on:\n{tail}"
    );
}

#[test]
fn app_that_does_not_answer_fails_within_the_timeout_with_console_tail() {
    let _lock = boot_lock();
    let app = app_image();
    let image = app.0.as_path();
    let _leaks = support::LeakCheck::new();
    let tmp = Tmp::new();
    let (out, took) = run(bakery(&tmp).arg("boot").arg(image).args([
        "--health",
        "http://localhost:8080/nope/",
        "--check",
        "--timeout",
        "90",
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(90 + 30), "took {took:?}");
    assert!(out.stdout.is_empty(), "no report on failure");
    let error_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("bakery: error:"))
        .collect();
    assert_eq!(error_lines.len(), 1, "one error line:\n{err}");
    assert!(
        error_lines[0]
            .contains("boot: health http://localhost:8080/nope/ did not answer 2xx within 90s"),
        "{err}"
    );
    assert!(err.contains("--- last "), "console tail printed:\n{err}");
    assert!(
        err.lines().filter(|l| l.starts_with("  | ")).count() >= 5,
        "{err}"
    );

    // Only the console log stays, for the user to read.
    assert_eq!(tmp.processes(), Vec::<String>::new());
    let left = tmp.leftovers();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left[0].starts_with("bakery-boot-") && left[1].ends_with("/console.log"),
        "{left:?}"
    );
    assert!(
        error_lines[0].contains(&left[1]),
        "the error names the kept log:\n{err}"
    );
}

#[test]
fn image_without_bootloader_fails_fast() {
    let _lock = boot_lock();
    let _leaks = support::LeakCheck::new();
    let tmp = Tmp::new();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("zero.raw");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let log = dir.path().join("console.log");
    let (out, took) = run(bakery(&tmp)
        .arg("boot")
        .arg(&image)
        .args(["--health", "tcp:22", "--check", "--timeout", "120"])
        .arg("--console-log")
        .arg(&log));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}:\n{err}");
    assert!(err.to_lowercase().contains("no bootable device"), "{err}");
    assert!(
        err.contains("  | No bootable device"),
        "console tail:\n{err}"
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("No bootable device"));
    assert_eq!(tmp.processes(), Vec::<String>::new());
    assert_eq!(
        tmp.leftovers(),
        Vec::<String>::new(),
        "--console-log given: nothing else kept"
    );
}

#[test]
fn sigterm_while_booting_stops_qemu_and_removes_everything() {
    let _lock = boot_lock();
    let app = app_image();
    let image = app.0.as_path();
    let _leaks = support::LeakCheck::new();
    let tmp = Tmp::new();
    let mut child = bakery(&tmp)
        .arg("boot")
        .arg(image)
        .args(["--health", "tcp:22", "--timeout", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains("qemu started") {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("qemu started"), "{seen}");
    assert_eq!(tmp.processes().len(), 1, "qemu runs: {:?}", tmp.processes());
    std::thread::sleep(Duration::from_secs(5));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t = Instant::now();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("interrupted"), "{rest}");
    assert_eq!(tmp.processes(), Vec::<String>::new());
    assert_eq!(tmp.leftovers(), Vec::<String>::new());
}
