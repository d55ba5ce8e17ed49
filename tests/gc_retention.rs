//! `bakery gc` retention on real files: bake logs by age and total size, cached snapshots and
//! bases by a size budget (least recently used first, by their access and modification times),
//! and never a cache entry a running bake holds — neither one held through the library's
//! `cache::Use` nor the built-in base a real bake is copying (held at a fault point).

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use support::*;

const DAY: Duration = Duration::from_secs(86400);

/// A file of `kib` KiB of real (non-sparse) data, last written and read `days_ago`.
fn file(p: &Path, kib: usize, days_ago: u32) -> PathBuf {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, vec![7u8; kib << 10]).unwrap();
    let t = SystemTime::now() - DAY * days_ago;
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
        .unwrap();
    p.to_path_buf()
}

fn gc(t: &TestDir, args: &[&str]) -> Run {
    let r = run(t.bakery().args(["gc", "--json"]).args(args));
    assert_eq!(r.code, 0, "bakery gc {args:?} failed:\n{}", r.stderr);
    r
}

/// (kind, key, reason) of each retired item, in the report's order.
fn retired(r: &Run) -> Vec<(String, String, String)> {
    r.json()["retention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["kind"].as_str().unwrap().to_string(),
                x["key"].as_str().unwrap().to_string(),
                x["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn tuple(k: &str, key: &str, reason: &str) -> (String, String, String) {
    (k.into(), key.into(), reason.into())
}

#[test]
fn gc_keeps_logs_and_caches_within_their_limits() {
    let t = TestDir::new("gc-retention");
    let w = t.work();
    let old_log = file(&w.join("logs/bk-000000000001.log"), 4, 40);
    let new_log = file(&w.join("logs/bk-000000000002.log"), 4, 1);
    // Snapshot cache: snap-a least recently used (its hashes file goes with it).
    let snap_a = file(&w.join("snapshots/snap-a.raw"), 1024, 10);
    let snap_a_hashes = file(&w.join("snapshots/snap-a.raw.hashes"), 4, 10);
    let snap_b = file(&w.join("snapshots/snap-b.raw"), 1024, 2);
    let base = file(
        &w.join("bases/debian-bookworm-0011223344556677.raw"),
        1024,
        5,
    );
    // Written long ago but read by a bake yesterday: recently used.
    let snap_c = file(&w.join("snapshots/snap-c.raw"), 1024, 20);
    std::fs::File::open(&snap_c)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_accessed(SystemTime::now() - DAY))
        .unwrap();

    // Defaults: 30 days of logs, 20 GiB of caches: only the old log goes. Dry run first.
    let r = gc(&t, &["--dry-run"]);
    assert_eq!(retired(&r), [tuple("log", "bk-000000000001", "age")]);
    assert!(old_log.exists(), "--dry-run removed a log");

    // 3.5 MiB of cache for four 1 MiB entries: the least recently used one goes.
    let r = gc(&t, &["--dry-run", "--cache-budget", "3584K"]);
    let want = [
        tuple("log", "bk-000000000001", "age"),
        tuple("snapshot", "snap-a", "size"),
    ];
    assert_eq!(retired(&r), want, "{}", r.stdout);
    assert!(snap_a.exists() && snap_a_hashes.exists());

    let r = gc(&t, &["--cache-budget", "3584K"]);
    assert_eq!(retired(&r), want);
    assert_eq!(r.json()["removed"], 2, "{}", r.stdout);
    assert!(!old_log.exists() && new_log.exists());
    assert!(!snap_a.exists() && !snap_a_hashes.exists());
    assert!(snap_b.exists() && snap_c.exists() && base.exists());

    // A shorter log age, and a budget only one entry fits: oldest used first.
    let r = gc(&t, &["--keep-logs-for", "12h", "--cache-budget", "1100K"]);
    assert_eq!(
        retired(&r),
        [
            tuple("log", "bk-000000000002", "age"),
            tuple("base", "debian-bookworm-0011223344556677", "size"),
            tuple("snapshot", "snap-b", "size"),
        ]
    );
    assert!(snap_c.exists() && !snap_b.exists() && !base.exists());
    let locks: Vec<_> = std::fs::read_dir(w.join("locks"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(locks.is_empty(), "lock files left: {locks:?}");

    // The table names what went and why.
    let r = run(t.bakery().args(["gc", "--dry-run", "--cache-budget", "0"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("would remove")
            && r.stdout.contains("snap-c.raw")
            && r.stdout
                .contains("least recently used over the size budget"),
        "{}",
        r.stdout
    );

    // Bad values are input errors naming the flag.
    for (flag, v) in [
        ("--cache-budget", "lots"),
        ("--log-budget", "2 parsecs"),
        ("--keep-logs-for", "soon"),
    ] {
        let r = run(t.bakery().args(["gc", flag, v]));
        assert_eq!(r.code, 2, "{flag} {v}: {}", r.stderr);
        assert!(r.error_line().contains(flag), "{flag}: {}", r.error_line());
    }
    assert!(snap_c.exists());
}

#[test]
fn gc_never_removes_a_cache_entry_a_bake_holds() {
    let t = TestDir::new("gc-held");
    let w = t.work();
    let held = file(&w.join("snapshots/snap-held.raw"), 64, 300);
    let free = file(&w.join("snapshots/snap-free.raw"), 64, 1);
    let u = bakery::cache::Use::hold(&w, "snapshot", "snap-held").unwrap();
    let r = gc(&t, &["--cache-budget", "0"]);
    assert_eq!(retired(&r), [tuple("snapshot", "snap-free", "size")]);
    assert!(held.exists(), "gc removed a cache entry a bake holds");
    assert!(!free.exists());
    drop(u);
    let r = gc(&t, &["--cache-budget", "0"]);
    assert_eq!(retired(&r), [tuple("snapshot", "snap-held", "size")]);
    assert!(!held.exists());
}

#[test]
fn gc_leaves_the_base_a_running_bake_is_copying() {
    let _leaks = LeakCheck::new();
    let t = TestDir::new("gc-bake-holds");
    let w = t.work();
    // The built-in base, as a bake that built it left it (its content is never read: the bake
    // is held right after taking it, before the copy).
    let key = bakery::pipeline::source::builtin::cache_key();
    let base = file(&w.join(format!("bases/{key}.raw")), 64, 100);
    let app = build_deb(t.dir.path(), &Deb::default());
    let log = t.path("faults.log");
    let point = "hold cached base";
    let stderr = t.path("bake.stderr");
    let mut bake = t
        .bakery()
        .args(["bake", "--package"])
        .arg(&app)
        .arg("--output")
        .arg(t.path("out.raw"))
        .env("BAKERY_FAULT_LOG", &log)
        .env("BAKERY_FAIL_AT", point)
        .env("BAKERY_FAULT_ACTION", "hang")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .any(|l| l == format!("holding at {point}"))
    {
        if let Ok(Some(s)) = bake.try_wait() {
            panic!(
                "the bake ended ({s}) before `{point}`:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the bake never reached `{point}`"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = gc(&t, &["--cache-budget", "0"]);
    let gone: Vec<_> = retired(&r).into_iter().filter(|x| x.0 == "base").collect();
    assert!(gone.is_empty(), "{gone:?}");
    assert!(base.exists(), "gc removed the base a running bake holds");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bake.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = bake.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    let r = gc(&t, &["--cache-budget", "0"]);
    assert_eq!(retired(&r), [tuple("base", &key, "size")]);
    assert!(!base.exists());
}
