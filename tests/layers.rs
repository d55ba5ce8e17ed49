//! The layer cache (issue 18), with real bakes: a tiny layer whose `apt` step installs a package
//! from an apt repository this test serves over HTTP (the only source of the test base), so a
//! newer version can be published between bakes.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::*;

/// `python3 -m http.server` on a free port of 127.0.0.1, serving `dir`; stopped at drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the test's apt repository did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Write a flat apt repository of `debs` into `repo`: the files, `Packages` and a `Release`
/// that lists it (what `apt-ftparchive` would write, enough for `[trusted=yes]`).
fn publish(repo: &Path, debs: &[PathBuf]) {
    std::fs::create_dir_all(repo).unwrap();
    let mut packages = String::new();
    for d in debs {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read(d).unwrap();
        std::fs::write(repo.join(&name), &body).unwrap();
        let control = run(Command::new("dpkg-deb").arg("-f").arg(d));
        assert_eq!(control.code, 0, "{}", control.stderr);
        packages.push_str(control.stdout.trim_end());
        packages.push_str(&format!(
            "\nFilename: ./{name}\nSize: {}\nSHA256: {}\n\n",
            body.len(),
            sha256_hex(&body)
        ));
    }
    std::fs::write(repo.join("Packages"), &packages).unwrap();
    std::fs::write(
        repo.join("Release"),
        format!(
            "Origin: bakery-tests\nLabel: bakery-tests\nSuite: test\nSHA256:\n {} {} Packages\n",
            sha256_hex(packages.as_bytes()),
            packages.len()
        ),
    )
    .unwrap();
}

fn tool(dir: &Path, version: &str) -> PathBuf {
    build_deb(
        dir,
        &Deb {
            name: "bakery-tool",
            version,
            files: &[("/usr/share/bakery-tool/VERSION", version)],
            ..Default::default()
        },
    )
}

/// A copy of the test base whose only apt source is the test's repository on `port`.
fn base_with_repo(t: &TestDir, port: u16) -> PathBuf {
    let base = t.path("base.raw");
    let r = run(Command::new("cp")
        .arg("--sparse=always")
        .arg(base_image())
        .arg(&base));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = MountedRw::open(&base);
    let _ = std::fs::remove_file(m.path("/etc/apt/sources.list"));
    let d = m.path("/etc/apt/sources.list.d");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    write(
        &d.join("bakery-tests.list"),
        &format!("deb [trusted=yes] http://127.0.0.1:{port}/ ./\n"),
    );
    drop(m);
    base
}

fn layer(dir: &Path, motd: &str) -> PathBuf {
    let l = dir.join("cached-layer");
    std::fs::create_dir_all(&l).unwrap();
    write(&l.join("motd"), motd);
    write(
        &l.join("layer.yaml"),
        "name: cached\nsteps:\n  - apt: [bakery-tool]\n  - file: {src: motd, dest: /etc/cached/motd, mode: \"0644\"}\n",
    );
    l
}

struct Fixture {
    t: TestDir,
    base: PathBuf,
    layer: PathBuf,
    app: PathBuf,
    repo: PathBuf,
    server: Server,
}

fn fixture(name: &str) -> Fixture {
    let t = TestDir::new(name);
    let repo = t.path("repo");
    publish(&repo, &[tool(t.dir.path(), "1.0-1")]);
    let server = Server::start(&repo);
    let base = base_with_repo(&t, server.port);
    let layer = layer(t.dir.path(), "first\n");
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "cache-app",
            files: &[("/opt/cache-app/VERSION", "1")],
            ..Default::default()
        },
    );
    Fixture {
        t,
        base,
        layer,
        app,
        repo,
        server,
    }
}

impl Fixture {
    fn bake(&self, out: &str, extra: &[&str]) -> Command {
        let mut c = self.t.bakery();
        c.args(["bake", "--base"])
            .arg(&self.base)
            .arg("--layer")
            .arg(&self.layer)
            .arg("--package")
            .arg(&self.app)
            .args(extra)
            .arg("--output")
            .arg(self.t.path(out));
        c
    }

    fn cache(&self) -> PathBuf {
        self.t.work().join("layer-cache")
    }

    /// Keys of the complete entries in the cache.
    fn entries(&self) -> Vec<String> {
        let mut keys: Vec<String> = std::fs::read_dir(self.cache())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_suffix(".json")
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }
}

/// Bake `out` and check the image has the layer (motd, tool version) and the app.
fn bake_and_check(
    f: &Fixture,
    out: &str,
    extra: &[&str],
    motd: &str,
    tool: &str,
) -> serde_json::Value {
    let r = run(&mut f.bake(out, extra));
    r.assert_ok();
    let img = Mounted::open(&f.t.path(out));
    assert_eq!(
        img.read("/etc/cached/motd"),
        motd,
        "{out}: the layer's file"
    );
    assert_eq!(
        img.dpkg_version("bakery-tool").as_deref(),
        Some(tool),
        "{out}: the layer's package"
    );
    assert_eq!(img.read("/usr/share/bakery-tool/VERSION"), tool);
    assert_eq!(img.dpkg_version("cache-app").as_deref(), Some("1.0-1"));
    assert!(
        img.read("/etc/apt/sources.list.d/bakery-tests.list")
            .contains("127.0.0.1"),
        "{out}: the base's sources"
    );
    drop(img);
    std::fs::remove_file(f.t.path(out)).unwrap();
    r.json()
}

fn steps_of(m: &serde_json::Value) -> Vec<String> {
    m["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["step"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_layer_cache_is_reused_and_renewed_when_the_layer_or_its_packages_change() {
    let _leaks = LeakCheck::new();
    let f = fixture("layers");

    // Cold: the layers are applied and cached.
    let m1 = bake_and_check(&f, "one.raw", &[], "first\n", "1.0-1");
    assert_eq!(m1["layers_from_cache"], false);
    let k1 = m1["layer_cache_key"].as_str().unwrap().to_string();
    assert_eq!(f.entries(), std::slice::from_ref(&k1));
    assert!(steps_of(&m1)
        .iter()
        .any(|s| s == "cached: apt install bakery-tool"));
    assert!(steps_of(&m1).iter().any(|s| s == "write layer cache"));

    // Warm: the same key, the layers not run again, only the app installed.
    let m2 = bake_and_check(&f, "two.raw", &[], "first\n", "1.0-1");
    assert_eq!(m2["layers_from_cache"], true, "{m2}");
    assert_eq!(m2["layer_cache_key"], k1.as_str());
    let steps = steps_of(&m2);
    assert!(steps.iter().any(|s| s == "copy cached layers"), "{steps:?}");
    assert!(!steps.iter().any(|s| s.starts_with("cached:")), "{steps:?}");
    assert!(
        steps.iter().any(|s| s.starts_with("install cache-app")),
        "{steps:?}"
    );

    // A layer file changed: a new entry, and the image has the new content.
    write(&f.layer.join("motd"), "second\n");
    let m3 = bake_and_check(&f, "three.raw", &[], "second\n", "1.0-1");
    assert_eq!(m3["layers_from_cache"], false);
    let k3 = m3["layer_cache_key"].as_str().unwrap().to_string();
    assert_ne!(k3, k1);

    // A newer version of the layer's package in the image's sources: a new entry with it, never
    // the cached image with the old one.
    publish(
        &f.repo,
        &[tool(f.t.dir.path(), "1.0-1"), tool(f.t.dir.path(), "1.1-1")],
    );
    let m4 = bake_and_check(&f, "four.raw", &[], "second\n", "1.1-1");
    assert_eq!(m4["layers_from_cache"], false, "a stale entry was used");
    let k4 = m4["layer_cache_key"].as_str().unwrap().to_string();
    assert_ne!(k4, k3);
    // The entry it superseded is gone; the other layer definition's stays.
    assert_eq!(f.entries(), {
        let mut v = vec![k1.clone(), k4.clone()];
        v.sort();
        v
    });
    let m5 = bake_and_check(&f, "five.raw", &[], "second\n", "1.1-1");
    assert_eq!(m5["layers_from_cache"], true);
    assert_eq!(m5["layer_cache_key"], k4.as_str());

    // --no-layer-cache: applied in the bake, the cache neither read nor written.
    let m6 = bake_and_check(&f, "six.raw", &["--no-layer-cache"], "second\n", "1.1-1");
    assert_eq!(m6["layers_from_cache"], false);
    assert!(m6.get("layer_cache_key").is_none(), "{m6}");
    assert!(steps_of(&m6)
        .iter()
        .any(|s| s == "cached: apt install bakery-tool"));
    // --refresh-layers: applied again, the entry rewritten under the same key.
    let m7 = bake_and_check(&f, "seven.raw", &["--refresh-layers"], "second\n", "1.1-1");
    assert_eq!(m7["layers_from_cache"], false);
    assert_eq!(m7["layer_cache_key"], k4.as_str());
    let r = run(&mut f.bake("x.raw", &["--refresh-layers", "--no-layer-cache"]));
    assert_eq!(r.code, 2, "{}", r.stderr);

    // gc: an entry unused for weeks goes (--dry-run only lists it); the one in use stays.
    let meta = f.cache().join(format!("{k1}.json"));
    let mut e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    e["last_used"] = serde_json::json!(e["last_used"].as_i64().unwrap() - 30 * 86400);
    std::fs::write(&meta, e.to_string()).unwrap();
    let dry = run(f.t.bakery().args(["gc", "--dry-run", "--json"]));
    dry.assert_ok();
    let found = dry.json()["found"].clone();
    let listed: Vec<&serde_json::Value> = found
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "layer-cache")
        .collect();
    assert_eq!(listed.len(), 1, "{found}");
    assert!(listed[0]["path"].as_str().unwrap().contains(&k1));
    assert!(listed[0]["why"]
        .as_str()
        .unwrap()
        .starts_with("unused for 30 days"));
    assert_eq!(f.entries().len(), 2, "--dry-run removed something");
    run(f.t.bakery().args(["gc"])).assert_ok();
    assert_eq!(f.entries(), std::slice::from_ref(&k4));
    assert!(!f.cache().join(format!("{k1}.raw")).exists());

    drop(f.server);
    assert!(
        leaks_of(f.t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(f.t.dir.path())
    );
}

#[test]
fn a_failure_or_ctrl_c_while_writing_the_cache_leaves_no_entry() {
    let _leaks = LeakCheck::new();
    let f = fixture("layers-fault");
    let r = run(f
        .bake("out.raw", &[])
        .env("BAKERY_FAIL_AT", "write layer cache"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(f.entries().is_empty(), "an entry after a failed write");
    assert!(
        leaks_of(f.t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(f.t.dir.path())
    );

    // Ctrl-C while the entry is being written (held at the point): exit 130, nothing kept.
    let log = f.t.path("fault-log");
    let mut child = f
        .bake("out.raw", &[])
        .env("BAKERY_FAULT_LOG", &log)
        .env("BAKERY_FAIL_AT", "write layer cache")
        .env("BAKERY_FAULT_ACTION", "hang")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .any(|l| l == "holding at write layer cache")
    {
        assert!(
            Instant::now() < deadline,
            "the bake never reached the cache write"
        );
        assert!(child.try_wait().unwrap().is_none(), "the bake ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(f.entries().is_empty(), "an entry after Ctrl-C");
    assert!(
        leaks_of(f.t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(f.t.dir.path())
    );
    assert!(!f.t.path("out.raw").exists());

    // And the next bake writes the entry whole.
    let m = bake_and_check(&f, "out.raw", &[], "first\n", "1.0-1");
    assert_eq!(
        f.entries(),
        [m["layer_cache_key"].as_str().unwrap().to_string()]
    );
    drop(f.server);
    assert_no_leaks(f.t.dir.path());
}
