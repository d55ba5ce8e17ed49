//! Commands run for the image (maintainer scripts, rpm scriptlets under the host's `rpm --root`,
//! layer `run:` steps) cannot touch the bake host: they run in the bake's own PID, IPC and UTS
//! namespaces, see only the bake's processes, carry the image's host name, and never get the
//! bake host's terminal or stdin (issue 13 §1; cases postinst-kills-host and tty-prompt).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// What every probe records, from wherever it runs in the bake.
fn probe(tag: &str, victim: &str) -> String {
    format!(
        "mkdir -p /var/lib/probe; \
         ps -e -o pid=,comm= > /var/lib/probe/{tag}-ps; \
         ls /proc | grep -c '^[0-9]' > /var/lib/probe/{tag}-procs; \
         hostname > /var/lib/probe/{tag}-hostname; \
         readlink /proc/self/ns/pid /proc/self/ns/ipc /proc/self/ns/uts > /var/lib/probe/{tag}-ns; \
         ( [ -t 0 ] && echo tty || echo notty ) > /var/lib/probe/{tag}-stdin; \
         ( exec 3</dev/tty ) 2>/dev/null && echo has-ctty > /var/lib/probe/{tag}-ctty || echo no-ctty > /var/lib/probe/{tag}-ctty; \
         pkill -x {victim} || true"
    )
}

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

/// A host process named `victim` survives a postinst, an rpm %post and a layer `run:` that
/// `pkill` it; each saw only the bake's few processes, its own namespaces and the image's name.
/// Fails on main: the postinst killed the host process and saw every host process.
#[test]
fn scripts_cannot_see_or_signal_host_processes() {
    let t = TestDir::new("isolation");
    let base = base_image();
    let victim = format!("bkvictim{}", std::process::id() % 100000);
    let victim_exe = t.path(&victim);
    std::fs::copy("/bin/sleep", &victim_exe).unwrap();
    let mut host_proc = Command::new(&victim_exe).arg("600").spawn().unwrap();
    let deb = build_deb(
        t.dir.path(),
        &Deb {
            name: "hunt-pkill",
            postinst: Some(&probe("deb", &victim)),
            ..Default::default()
        },
    );
    let rpm = build_rpm(
        t.dir.path(),
        &Rpm {
            name: "rpkill",
            version: "1.0",
            release: "1",
            requires: &[],
            files: &[("/opt/rpkill/VERSION", "1")],
            post: Some(&probe("rpm", &victim)),
        },
    );
    let layer = t.path("probe-layer");
    std::fs::create_dir_all(&layer).unwrap();
    write(
        &layer.join("layer.yaml"),
        &format!(
            "name: probe\nsteps:\n  - run: \"{}\"\n",
            probe("layer", &victim).replace('"', "\\\"")
        ),
    );
    let out = t.path("iso.raw");
    let r = run(t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--layer")
        .arg(&layer)
        .arg("--package")
        .arg(&deb)
        .arg("--package")
        .arg(&rpm)
        .arg("--output")
        .arg(&out)
        .stdin(Stdio::null()));
    let alive = host_proc.try_wait().unwrap().is_none();
    let _ = host_proc.kill();
    let _ = host_proc.wait();
    r.assert_ok();
    assert!(
        alive,
        "a script of the bake killed the host process {victim}"
    );
    let img = Mounted::open(&out);
    for tag in ["deb", "rpm", "layer"] {
        let ps = img.read(&format!("/var/lib/probe/{tag}-ps"));
        assert!(
            !ps.contains(&victim),
            "{tag}: the script saw the host process {victim}:\n{ps}"
        );
        let procs: usize = img
            .read(&format!("/var/lib/probe/{tag}-procs"))
            .trim()
            .parse()
            .unwrap();
        assert!(
            procs < 15,
            "{tag}: the script saw {procs} processes (the host's, not just the bake's):\n{ps}"
        );
        let pid1 = ps
            .lines()
            .find(|l| l.trim_start().starts_with("1 "))
            .unwrap_or_default();
        assert!(
            pid1.contains("bakery"),
            "{tag}: PID 1 of the scripts' namespace is not the bake's session: {pid1:?}\n{ps}"
        );
        assert_eq!(
            img.read(&format!("/var/lib/probe/{tag}-hostname")).trim(),
            img.read("/etc/hostname").trim(),
            "{tag}: the host name inside is not the image's"
        );
        let ns = img.read(&format!("/var/lib/probe/{tag}-ns"));
        for kind in ["pid", "ipc", "uts"] {
            assert!(
                !ns.contains(&host_ns(kind)),
                "{tag}: shares the host's {kind} namespace ({ns})"
            );
        }
        assert_eq!(
            img.read(&format!("/var/lib/probe/{tag}-stdin")).trim(),
            "notty",
            "{tag}: stdin is a terminal"
        );
        assert_eq!(
            img.read(&format!("/var/lib/probe/{tag}-ctty")).trim(),
            "no-ctty",
            "{tag}: the script has a controlling terminal"
        );
    }
    drop(img);
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(t.dir.path())
    );
}

/// Run `cmd` under a fresh pseudo-terminal (`setsid script`), as a developer at a terminal
/// would; gives up after `limit` (Ctrl-C, then kill). Returns (exit code printed, typescript).
fn under_a_terminal(t: &TestDir, cmd: &str, limit: Duration) -> (Option<i32>, String) {
    let typescript = t.path("typescript");
    let mut child = Command::new("setsid")
        .arg("script")
        .arg("-qec")
        .arg(format!("{cmd}; echo BAKERY_RC=$?"))
        .arg(&typescript)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut hung = false;
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            hung = true;
            // Interrupt the bake (it cleans up), then the terminal.
            let _ = Command::new("pkill")
                .args(["-INT", "-f", &format!("bakery.*{}", t.dir.path().display())])
                .status();
            std::thread::sleep(Duration::from_secs(20));
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let text =
        String::from_utf8_lossy(&std::fs::read(&typescript).unwrap_or_default()).into_owned();
    let rc = text
        .rsplit("BAKERY_RC=")
        .next()
        .filter(|_| text.contains("BAKERY_RC=") && !hung)
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    (rc, text)
}

/// A postinst that asks on /dev/tty gets no terminal and takes its default, under a terminal
/// exactly as under CI; one that reads stdin under `set -e` fails with its own prompt named.
/// Fails on main: under a terminal the bake stopped (SIGTTIN) and never finished.
#[test]
fn a_prompting_postinst_never_reaches_the_terminal() {
    let t = TestDir::new("tty");
    let base = base_image();
    let asktty = build_deb(
        t.dir.path(),
        &Deb {
            name: "hunt-asktty",
            postinst: Some(
                "if [ \"$1\" = configure ]; then\n  printf 'Admin e-mail [root]: ' >/dev/tty 2>/dev/null || true\n  answer=''\n  read -r answer </dev/tty 2>/dev/null || answer=root\n  echo \"admin=${answer:-root}\" > /etc/hunt-asktty.conf\nfi",
            ),
            ..Default::default()
        },
    );
    let out = t.path("tty.raw");
    let cmd = format!(
        "BAKERY_WORK_DIR={} {} bake --base {} --package {} --output {}",
        t.work().display(),
        bakery_exe().display(),
        base.display(),
        asktty.display(),
        out.display()
    );
    let (rc, text) = under_a_terminal(&t, &cmd, Duration::from_secs(240));
    assert_eq!(
        rc,
        Some(0),
        "the bake under a terminal did not finish with 0 (hung on /dev/tty?):\n{}",
        text.chars()
            .rev()
            .take(2000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );
    assert!(
        !text.contains("Admin e-mail"),
        "the script's prompt reached the terminal"
    );
    let img = Mounted::open(&out);
    assert_eq!(img.read("/etc/hunt-asktty.conf"), "admin=root\n");
    drop(img);

    let askstdin = build_deb(
        t.dir.path(),
        &Deb {
            name: "hunt-askstdin",
            postinst: Some(
                "if [ \"$1\" = configure ]; then\n  printf 'Admin e-mail: '\n  read -r answer\n  echo \"admin=$answer\" > /etc/hunt-askstdin.conf\nfi",
            ),
            ..Default::default()
        },
    );
    let r = run(t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&askstdin)
        .arg("--output")
        .arg(t.path("stdin.raw"))
        .stdin(Stdio::null()));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let line = r.error_line();
    assert!(
        line.contains("hunt-askstdin")
            && line.contains("postinst")
            && line.contains("Admin e-mail"),
        "the error does not name the script and what it printed: {line}"
    );
    assert_no_output(t.dir.path(), &["tty.raw"]);
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(t.dir.path())
    );
}
