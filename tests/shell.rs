//! `bakery bake --shell` (issue 13 §5, Aminator's `-i`): an interactive shell in the image after
//! provisioning and before the seal, on a real pseudo-terminal (a private tmux server), with the
//! isolation of the bake's scripts. On main before this change `--shell` was an unknown flag
//! (exit 2, nothing baked).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::tmux::Tmux;
use support::*;

/// Bake `deb` with `--shell` on a tmux terminal, type `keys` once the shell's banner shows, and
/// wait for bakery to end: (exit code, screen, stdout).
fn bake_with_shell(t: &TestDir, deb: &Path, out: &Path, keys: &str) -> (i32, String, String) {
    let dir = t.path("tty");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "export BAKERY_WORK_DIR='{work}'\nunset BAKERY_LAYER_PATH CI JENKINS_URL\ncd '{repo}'\n'{exe}' bake --base '{base}' --package '{deb}' --output '{out}' --shell >'{d}/stdout'; echo $? >'{d}/rc.tmp'; mv '{d}/rc.tmp' '{d}/rc'; sleep 600\n",
        work = t.work().display(),
        repo = repo().display(),
        exe = bakery_exe().display(),
        base = base_image().display(),
        deb = deb.display(),
        out = out.display(),
        d = dir.display(),
    );
    write(&dir.join("run.sh"), &script);
    let run = format!("bash {}/run.sh", dir.display());
    let tmux = Tmux::start(&dir, 160, 50, &run);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !tmux.screen().contains("a shell in the image") {
        assert!(
            Instant::now() < deadline && !dir.join("rc").exists(),
            "no shell banner:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    tmux.type_line(keys);
    let rc = loop {
        if let Ok(rc) = std::fs::read_to_string(dir.join("rc")) {
            break rc.trim().parse::<i32>().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the bake did not end:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let screen = tmux.screen();
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    (rc, screen, stdout)
}

#[test]
fn a_shell_in_the_image_writes_into_it_with_the_bake_isolation_and_exit_1_stops_the_bake() {
    let _leaks = LeakCheck::new();
    let t = TestDir::new("shell");
    let deb = build_deb(&t.path(""), &Deb::default());
    let out = t.path("shell.raw");
    let (rc, screen, stdout) = bake_with_shell(
        &t,
        &deb,
        &out,
        "echo \"pid=$$ tty=$(tty)\" > /root/from-shell; ps -e -o pid=,comm= > /root/ps.txt; hostname > /root/hostname.txt; touch /etc/made-in-shell; exit",
    );
    assert_eq!(rc, 0, "{screen}");
    let m: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        m["timings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["step"] == "shell"),
        "{m}"
    );
    {
        let img = Mounted::open(&out);
        assert!(img.path("/etc/made-in-shell").exists(), "{screen}");
        let who = img.read("/root/from-shell");
        // The shell's terminal is a pty of the image's own devpts.
        assert!(who.contains("tty=/dev/pts/"), "{who}");
        // Its own PID namespace: PID 1 is the bake's session, and only the bake's few
        // processes are there (none of this host's: no tmux, no test runner).
        let ps = img.read("/root/ps.txt");
        let first = ps.lines().next().unwrap_or_default();
        assert!(first.trim_start().starts_with("1 "), "{ps}");
        assert!(ps.lines().count() <= 8, "{ps}");
        assert!(!ps.contains("tmux") && !ps.contains("cargo"), "{ps}");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_ne!(img.read("/root/hostname.txt").trim(), host.trim());
        // The package was installed before the shell ran.
        assert_eq!(img.dpkg_version("app").as_deref(), Some("1.0-1"));
    }
    assert_no_leaks(t.dir.path());

    // A non-zero exit stops the bake: exit 1, no output, nothing left.
    let out2 = t.path("stopped.raw");
    let (rc, screen, _) = bake_with_shell(&t, &deb, &out2, "exit 3");
    assert_eq!(rc, 1, "{screen}");
    assert!(screen.contains("--shell exited with status 3"), "{screen}");
    assert!(!out2.exists());
    assert_no_output(t.dir.path(), &["shell.raw"]);
    assert_no_leaks(t.dir.path());
}

#[test]
fn the_shell_is_refused_without_a_terminal() {
    let t = TestDir::new("shell-refused");
    let deb = build_deb(&t.path(""), &Deb::default());
    let out = t.path("x.raw");
    let r = run(t
        .bakery()
        .env_remove("CI")
        .stdin(std::process::Stdio::null())
        .arg("bake")
        .arg("--base")
        .arg(base_image())
        .arg("--package")
        .arg(&deb)
        .arg("--output")
        .arg(&out)
        .arg("--shell"));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.error_line().contains("--shell needs a terminal on stdin"),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
    let r = run(t
        .bakery()
        .env("CI", "true")
        .stdin(std::process::Stdio::null())
        .args(["bake", "--package"])
        .arg(&deb)
        .arg("--output")
        .arg(&out)
        .arg("--shell"));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.error_line().contains("this is CI"), "{}", r.stderr);
    assert_no_leaks(t.dir.path());
}
