//! SIGINT/SIGTERM at random points of a bake (seeded, the seed printed): every interrupted bake
//! exits 130 with one line and leaves nothing (loop devices, mounts, processes, locks, work files,
//! temporaries, outputs; AWS: nothing tagged with its bake id). A second Ctrl-C during cleanup
//! never abandons resources silently: it says what is still held and how to remove it.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::emulator::Emulator;
use support::*;

/// A bake running in the background, its stderr collected line by line.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    rx: mpsc::Receiver<String>,
}

impl Running {
    fn start(mut c: Command) -> Running {
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Running { child, lines, rx }
    }

    fn signal(&self, s: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), s);
    }

    /// Wait (up to `secs`) for a stderr line containing `needle`.
    fn wait_for_line(&self, needle: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        if self
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
        {
            return true;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    fn finish(mut self) -> Run {
        let status = self.child.wait().unwrap();
        // The reader ends at EOF, right after the process.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
        let stderr = self.lines.lock().unwrap().join("\n");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr,
        }
    }
}

fn local_cmd(t: &TestDir, base: &Path, layer: &Path, app: &Path, out: &Path) -> Command {
    let mut c = t.bakery();
    c.env("TMPDIR", t.path("tmp"))
        .env_remove("BAKERY_FAIL_AT")
        .env_remove("BAKERY_FAULT_LOG");
    c.args(["bake", "--base"])
        .arg(base)
        .arg("--layer")
        .arg(layer)
        .arg("--package")
        .arg(app)
        .arg("--output")
        .arg(out)
        .arg("--manifest")
        .arg(out.with_extension("json"));
    c
}

/// Judge one bake that got `sig` after `delay`: interrupted cleanly (130), or finished first.
fn judge(r: &Run, out: &Path, dir: &Path, what: &str) -> (bool, Vec<String>) {
    let mut problems = Vec::new();
    let interrupted = match r.code {
        130 => {
            if !r.error_line().contains("interrupted") {
                problems.push(format!(
                    "exit 130 without the interrupted line: {}",
                    r.error_line()
                ));
            }
            if r.stderr
                .lines()
                .filter(|l| l.starts_with("bakery: error:"))
                .count()
                != 1
            {
                problems.push("not exactly one error line".into());
            }
            if out.exists() || out.with_extension("json").exists() {
                problems.push("an interrupted bake left its output or manifest".into());
            }
            true
        }
        0 => {
            // The signal came after the bake had finished its work.
            let _ = std::fs::remove_file(out);
            let _ = std::fs::remove_file(out.with_extension("json"));
            false
        }
        c => {
            problems.push(format!(
                "exit code {c} (want 130, or 0 when the bake finished first)"
            ));
            true
        }
    };
    problems.extend(leaks_of(dir));
    if !problems.is_empty() {
        problems.push(format!("{what}; stderr:\n{}", r.stderr));
    }
    (interrupted, problems)
}

#[test]
fn sigint_and_sigterm_at_random_points_leave_nothing() {
    let t = TestDir::new("signals");
    std::fs::create_dir_all(t.path("tmp")).unwrap();
    let base = base_image();
    let layer = tiny_layer(t.dir.path());
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "sigapp",
            files: &[("/opt/sigapp/VERSION", "1")],
            postinst: Some("sleep 1"),
            ..Default::default()
        },
    );
    let out = t.path("sig.qcow2");

    // How long a whole bake takes here: the random delays cover it (and a little past the end).
    let started = Instant::now();
    run(&mut local_cmd(&t, &base, &layer, &app, &out)).assert_ok();
    let whole = started.elapsed();
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(out.with_extension("json")).unwrap();

    let mut rng = Rng::from_env("signals");
    let n = 14;
    let (mut interrupted, mut finished, mut problems) = (0, 0, Vec::new());
    for i in 0..n {
        let delay = Duration::from_millis(rng.range(20, whole.as_millis() as u64 * 21 / 20));
        let sig = if rng.next().is_multiple_of(2) {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        // Cold, like the bake the delays were measured on (it filled the layer cache).
        clear_layer_cache(&t.work());
        let bake = Running::start(local_cmd(&t, &base, &layer, &app, &out));
        std::thread::sleep(delay);
        bake.signal(sig);
        let r = bake.finish();
        let what = format!("bake {i}: {sig:?} after {delay:?}");
        let (was_interrupted, p) = judge(&r, &out, t.dir.path(), &what);
        eprintln!(
            "{what}: exit {}{}",
            r.code,
            if p.is_empty() {
                String::new()
            } else {
                format!(" PROBLEMS {p:?}")
            }
        );
        if was_interrupted {
            interrupted += 1
        } else {
            finished += 1
        }
        problems.extend(p);
    }
    eprintln!("signals: {n} local bakes ({interrupted} interrupted with 130, {finished} finished before the signal), {} problems", problems.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        interrupted >= n / 2,
        "too few bakes were interrupted ({interrupted} of {n}): the delays miss the bake"
    );
    assert_no_leaks(t.dir.path());
}

/// Wait (up to 2 minutes) until a bake log under `work` shows `needle`.
fn wait_for_log(work: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        for e in std::fs::read_dir(work.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains(needle)
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the bake never logged `{needle}`");
}

#[test]
fn a_second_ctrl_c_during_cleanup_says_what_is_left_and_how_to_remove_it() {
    let t = TestDir::new("sigtwice");
    std::fs::create_dir_all(t.path("tmp")).unwrap();
    let base = base_image();
    let layer = tiny_layer(t.dir.path());
    // A postinst that ignores SIGTERM: stopping it takes the session's whole grace period, so
    // the cleanup is still going when the second Ctrl-C comes.
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "stubborn",
            postinst: Some("trap '' TERM; echo stubborn-running; sleep 60"),
            ..Default::default()
        },
    );
    let out = t.path("twice.raw");
    let bake = Running::start(local_cmd(&t, &base, &layer, &app, &out));
    wait_for_log(&t.work(), "Setting up stubborn");
    bake.signal(Signal::SIGINT);
    assert!(
        bake.wait_for_line("interrupted: stopping the chroot session", 30),
        "the first Ctrl-C was not acknowledged"
    );
    bake.signal(Signal::SIGINT);
    let r = bake.finish();
    assert_eq!(r.code, 130, "{}", r.stderr);
    let again: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("interrupted again"))
        .collect();
    assert_eq!(
        again.len(),
        1,
        "the second Ctrl-C must be answered once: {}",
        r.stderr
    );
    assert!(
        again[0].contains("bakery gc"),
        "it does not say how to remove what is left: {}",
        again[0]
    );
    assert!(
        again[0].contains("/dev/loop"),
        "it does not name the loop device: {}",
        again[0]
    );
    assert!(
        again[0].contains(&t.work().display().to_string()),
        "the gc hint lacks the work dir: {}",
        again[0]
    );
    assert!(r.error_line().contains("interrupted"), "{}", r.stderr);
    // The cleanup went on to the end.
    let left = leaks_of(t.dir.path());
    assert!(left.is_empty(), "{left:?}");
    assert!(!out.exists());
    assert_no_leaks(t.dir.path());
    let strays = Command::new("pgrep")
        .args(["-f", "sleep 60"])
        .output()
        .unwrap();
    assert!(strays.stdout.is_empty(), "the postinst's sleep survived");
}

// --- AWS ------------------------------------------------------------------------------------

fn aws_cmd(t: &TestDir, emu: &Emulator, app: &Path) -> Command {
    let mut c = t.bakery();
    emu.apply(&mut c);
    c.env("TMPDIR", t.path("tmp"))
        .env_remove("BAKERY_FAIL_AT")
        .env_remove("BAKERY_FAULT_LOG");
    c.args(["bake", "--base-name", "signals-base-*", "--package"])
        .arg(app)
        .args([
            "--output",
            "ami",
            "--region",
            "us-east-1",
            "--copy-to",
            "us-west-2",
            "--mode",
            "direct",
        ]);
    c
}

#[test]
fn aws_bakes_interrupted_at_random_points_leave_nothing_tagged() {
    // Slow AWS steps a little so the random delays land in the upload, the registration and the
    // copy as often as in the local part; deletions are slowed so a second Ctrl-C lands in the
    // rollback.
    let emu = Emulator::start_on(
        support::emulator::free_port(),
        &[
            "--delay-ms-for",
            "PutSnapshotBlock=150",
            "--delay-ms-for",
            "RegisterImage=800",
            "--delay-ms-for",
            "CopyImage=800",
            "--delay-ms-for",
            "DeregisterImage=1500",
        ],
    );
    for (k, v) in emu.env() {
        std::env::set_var(k, v);
    }
    let t = TestDir::new("sigaws");
    std::fs::create_dir_all(t.path("tmp")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    publish_test_base(&rt, &ctx, "us-east-1", "signals-base-1");
    let regions = ["us-east-1", "us-west-2"];
    let app = |v: u32| -> PathBuf {
        build_deb(
            t.dir.path(),
            &Deb {
                name: "sigcloud",
                version: &format!("1.{v}-1"),
                ..Default::default()
            },
        )
    };

    // The first bake downloads the base snapshot into the cache; the second is a typical one.
    run(&mut aws_cmd(&t, &emu, &app(0))).assert_ok();
    let started = Instant::now();
    run(&mut aws_cmd(&t, &emu, &app(1))).assert_ok();
    let whole = started.elapsed();
    eprintln!("a whole AWS bake takes {whole:?}");

    let mut rng = Rng::from_env("signals (AWS)");
    let n = 8;
    let (mut interrupted, mut problems) = (0, Vec::new());
    // The shortest bake seen so far: a bake that finishes before its signal shortens it, so the
    // later delays keep landing inside a bake however the machine's speed drifts.
    let mut shortest = whole;
    for i in 0..n {
        // Past the local part (tested above): the later part of the bake is AWS work. The range
        // ends before the shortest bake does; the last fifth is mostly the final describe.
        let ms = shortest.as_millis() as u64;
        let delay = Duration::from_millis(rng.range(ms / 3, ms * 4 / 5));
        let started = Instant::now();
        let bake = Running::start(aws_cmd(&t, &emu, &app(i + 2)));
        std::thread::sleep(delay);
        bake.signal(Signal::SIGINT);
        let r = bake.finish();
        if r.code == 0 {
            shortest = shortest.min(started.elapsed());
        }
        let what = format!("AWS bake {i}: SIGINT after {delay:?}");
        let (was, mut p) = judge(&r, Path::new("/nonexistent"), t.dir.path(), &what);
        if was {
            interrupted += 1;
            match bake_id_in(&r.stderr) {
                Some(id) => {
                    let left = rt.block_on(tagged(&ctx, &regions, &id));
                    if !left.is_empty() {
                        p.push(format!("{what}: AWS resources left: {left:?}"));
                    }
                }
                None => p.push(format!("{what}: no bake id logged")),
            }
        }
        eprintln!(
            "{what}: exit {}{}",
            r.code,
            if p.is_empty() {
                String::new()
            } else {
                format!(" PROBLEMS {p:?}")
            }
        );
        problems.extend(p);
    }

    // A second Ctrl-C while the rollback deregisters (slowed): it names what is left and the gc
    // command, and the rollback still finishes.
    let bake = Running::start(aws_cmd(&t, &emu, &app(100)));
    assert!(
        bake.wait_for_line("copy to us-west-2", 240),
        "the bake never reached the copy"
    );
    bake.signal(Signal::SIGINT);
    assert!(bake.wait_for_line("cleaning up", 60), "no cleanup started");
    bake.signal(Signal::SIGINT);
    let r = bake.finish();
    assert_eq!(r.code, 130, "{}", r.stderr);
    let again: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("interrupted again"))
        .collect();
    assert_eq!(again.len(), 1, "{}", r.stderr);
    assert!(
        again[0].contains("bakery gc --aws --region us-east-1"),
        "{}",
        again[0]
    );
    assert!(
        again[0].contains("ami-") || again[0].contains("snap-"),
        "it does not list what is being removed: {}",
        again[0]
    );
    let id = bake_id_in(&r.stderr).unwrap();
    let left = rt.block_on(tagged(&ctx, &regions, &id));
    assert!(
        left.is_empty(),
        "after a second Ctrl-C the rollback left {left:?}"
    );

    eprintln!("signals: {n} AWS bakes ({interrupted} interrupted with 130) + 1 double Ctrl-C, {} problems", problems.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        interrupted >= n / 2,
        "too few AWS bakes were interrupted ({interrupted} of {n})"
    );
    assert_no_leaks(t.dir.path());
}
