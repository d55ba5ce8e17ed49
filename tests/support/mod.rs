//! Shared helpers for the integration tests: the built binary, a cached base image, packages
//! built on the fly (dpkg-deb, rpmbuild), read-only views of output images, and leak checks.
//! Every test runs as root against real loop devices, mounts and chroots.
#![allow(dead_code)]

pub mod deploy;
pub mod emulator;
pub mod proxy;
pub mod tmux;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BASE_YAML: &str = include_str!("../../base-images/debian-bookworm.yaml");

/// The bakery binary under test: `BAKERY_TEST_BIN` when set (worktrees that share one
/// CARGO_TARGET_DIR overwrite each other's `target/debug/bakery`; point it at your own
/// `target/debug/deps/bakery-HASH`), else the one cargo built for these tests.
pub fn bakery_exe() -> PathBuf {
    std::env::var_os("BAKERY_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bakery")))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Scratch space shared by all tests of this build (base cache, locks).
pub fn shared_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bakery-tests");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A test's own directory: its work dir, outputs and fixtures. Removed at drop.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(shared_dir())
            .unwrap();
        TestDir { dir }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn work(&self) -> PathBuf {
        self.path("work")
    }
    /// `bakery` with this test's work dir, locks shared with the other tests.
    pub fn bakery(&self) -> Command {
        let mut c = Command::new(bakery_exe());
        c.env("BAKERY_WORK_DIR", self.work())
            .env_remove("BAKERY_LAYER_PATH")
            .current_dir(repo());
        c
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
    /// The error line bakery prints last on stderr.
    pub fn error_line(&self) -> String {
        self.stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("bakery: error:"))
            .unwrap_or_default()
            .to_string()
    }
    pub fn assert_ok(&self) -> &Run {
        assert_eq!(self.code, 0, "bakery failed:\n{}", self.stderr);
        self
    }
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("running bakery");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The test suite's base image (Debian 12, base-images/debian-bookworm.yaml), built once per
/// content of its YAML and of the base builder, under a lock so parallel tests wait for one
/// build.
pub fn base_image() -> PathBuf {
    if let Ok(p) = std::env::var("BAKERY_TEST_BASE") {
        return PathBuf::from(p);
    }
    cached_base("base", BASE_YAML, "base-images/debian-bookworm.yaml")
}

/// The built-in default base (Debian 13, base-images/debian-trixie.yaml), built with
/// `bakery base build` from the spec file, cached like [`base_image`].
pub fn trixie_base() -> PathBuf {
    cached_base(
        "trixie",
        include_str!("../../base-images/debian-trixie.yaml"),
        "base-images/debian-trixie.yaml",
    )
}

fn cached_base(family: &str, yaml: &str, spec: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(
        &(
            yaml,
            include_str!("../../src/pipeline/source/debootstrap.rs"),
            include_str!("../../src/provision/chroot.rs"),
            include_str!("../../src/provision/esp.rs"),
        ),
        &mut h,
    );
    let key = std::hash::Hasher::finish(&h);
    let dir = shared_dir().join("bases");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{family}-{key:016x}.raw"));
    let lock = File::create(dir.join(format!("{family}.lock"))).unwrap();
    lock.lock().unwrap();
    if !path.exists() {
        let work = dir.join(format!("work-{family}"));
        let out = run(Command::new(bakery_exe())
            .env("BAKERY_WORK_DIR", &work)
            .current_dir(repo())
            .args(["base", "build", spec, "--output"])
            .arg(&path));
        assert_eq!(
            out.code, 0,
            "building the test base failed:\n{}",
            out.stderr
        );
    }
    lock.unlock().unwrap();
    path
}

/// A .deb built with dpkg-deb.
pub struct Deb<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub arch: &'a str,
    pub depends: &'a str,
    /// (path in the image, content)
    pub files: &'a [(&'a str, &'a str)],
    pub postinst: Option<&'a str>,
    /// More control fields, as lines (`Conflicts: x\nReplaces: x`).
    pub control: &'a str,
}

impl Default for Deb<'_> {
    fn default() -> Self {
        Deb {
            name: "app",
            version: "1.0-1",
            arch: "all",
            depends: "",
            files: &[],
            postinst: None,
            control: "",
        }
    }
}

pub fn build_deb(dir: &Path, d: &Deb) -> PathBuf {
    let root = dir.join(format!("debroot-{}-{}", d.name, d.version));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: bakery tests <tests@bakery.invalid>\nDescription: bakery test package\n",
        d.name, d.version, d.arch
    );
    if !d.depends.is_empty() {
        control.push_str(&format!("Depends: {}\n", d.depends));
    }
    for l in d.control.lines().filter(|l| !l.trim().is_empty()) {
        control.push_str(l.trim());
        control.push('\n');
    }
    std::fs::write(root.join("DEBIAN/control"), control).unwrap();
    if let Some(script) = d.postinst {
        let p = root.join("DEBIAN/postinst");
        std::fs::write(&p, format!("#!/bin/sh\nset -e\n{script}\n")).unwrap();
        chmod(&p, 0o755);
    }
    for (path, content) in d.files {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let out = dir.join(format!("{}_{}_{}.deb", d.name, d.version, d.arch));
    let r = run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&out));
    assert_eq!(r.code, 0, "dpkg-deb: {}", r.stderr);
    out
}

/// An .rpm built with rpmbuild.
pub struct Rpm<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub release: &'a str,
    pub requires: &'a [&'a str],
    pub files: &'a [(&'a str, &'a str)],
    pub post: Option<&'a str>,
}

pub fn build_rpm(dir: &Path, r: &Rpm) -> PathBuf {
    let top = dir.join(format!("rpmbuild-{}", r.name));
    for d in ["SPECS", "RPMS", "BUILD", "BUILDROOT", "SOURCES"] {
        std::fs::create_dir_all(top.join(d)).unwrap();
    }
    let mut spec = format!(
        "Name: {}\nVersion: {}\nRelease: {}\nSummary: bakery test\nLicense: MIT\nBuildArch: noarch\n",
        r.name, r.version, r.release
    );
    for req in r.requires {
        spec.push_str(&format!("Requires: {req}\n"));
    }
    spec.push_str("\n%description\nbakery test package\n\n%install\n");
    for (path, content) in r.files {
        spec.push_str(&format!("mkdir -p %{{buildroot}}$(dirname {path})\nprintf '%s\\n' '{content}' > %{{buildroot}}{path}\n"));
    }
    if let Some(post) = r.post {
        spec.push_str(&format!("\n%post\n{post}\n"));
    }
    spec.push_str("\n%files\n");
    for (path, _) in r.files {
        spec.push_str(&format!("{path}\n"));
    }
    let spec_path = top.join(format!("SPECS/{}.spec", r.name));
    std::fs::write(&spec_path, spec).unwrap();
    let out = run(Command::new("rpmbuild")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("-bb")
        .arg(&spec_path));
    assert_eq!(out.code, 0, "rpmbuild: {}", out.stderr);
    let rpm = top.join(format!(
        "RPMS/noarch/{}-{}-{}.noarch.rpm",
        r.name, r.version, r.release
    ));
    assert!(rpm.exists(), "rpmbuild made no {}", rpm.display());
    let dest = dir.join(rpm.file_name().unwrap());
    std::fs::copy(&rpm, &dest).unwrap();
    dest
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An output image mounted read-only (root partition) for assertions; released at drop.
pub struct Mounted {
    pub root: PathBuf,
    lo: String,
    raw: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Mounted {
    pub fn open(image: &Path) -> Mounted {
        let dir = tempfile::Builder::new()
            .prefix("mnt-")
            .tempdir_in(shared_dir())
            .unwrap();
        let (raw, tmp) = if image.extension().is_some_and(|e| e == "qcow2") {
            let raw = dir.path().join("image.raw");
            let r = run(Command::new("qemu-img")
                .args(["convert", "-O", "raw"])
                .arg(image)
                .arg(&raw));
            assert_eq!(r.code, 0, "{}", r.stderr);
            (raw.clone(), Some(raw))
        } else {
            (image.to_path_buf(), None)
        };
        let layout = bakery::disk::layout::read_layout(&raw).unwrap();
        let root_part = layout.root().expect("image has a root partition").clone();
        let r = run(Command::new("losetup")
            .args(["--find", "--show", "--read-only", "--offset"])
            .arg(root_part.start.to_string())
            .arg("--sizelimit")
            .arg(root_part.size.to_string())
            .arg(&raw));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let lo = r.stdout.trim().to_string();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        // Read-only without replaying a journal: each filesystem's own option for that.
        let opts = match root_part.fs.as_ref().map(|f| f.kind.as_str()) {
            Some("xfs") => "ro,norecovery",
            Some("btrfs") => "ro",
            _ => "ro,noload",
        };
        let m = run(Command::new("mount").args(["-o", opts, &lo]).arg(&root));
        if m.code != 0 {
            let _ = Command::new("losetup").args(["-d", &lo]).status();
            panic!("mount: {}", m.stderr);
        }
        Mounted {
            root,
            lo,
            raw: tmp,
            _dir: dir,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p))
            .unwrap_or_else(|e| panic!("reading {p} in the image: {e}"))
    }

    /// Version of an installed Debian package, from the image's own dpkg database.
    pub fn dpkg_version(&self, pkg: &str) -> Option<String> {
        let out = Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                self.path("/var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Status} ${Version}", pkg])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.strip_prefix("install ok installed ").map(str::to_string)
    }

    /// `rpm --root IMAGE -q` against the image's rpm database (bakery keeps it at /var/lib/rpm).
    pub fn rpm_q(&self, pkg: &str) -> Option<String> {
        let out = Command::new("rpm")
            .arg("--root")
            .arg(&self.root)
            .args([
                "--dbpath",
                "/var/lib/rpm",
                "-q",
                "--qf",
                "%{VERSION}-%{RELEASE}",
                pkg,
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.root).status();
        let _ = Command::new("losetup").args(["-d", &self.lo]).status();
        if let Some(r) = &self.raw {
            let _ = std::fs::remove_file(r);
        }
    }
}

/// Fails the test if a loop device or mount that belongs to `dir` outlives the bake.
pub fn assert_no_leaks(dir: &Path) {
    let dir_s = dir.display().to_string();
    let loops = String::from_utf8_lossy(
        &Command::new("losetup")
            .args(["-a", "-n", "-O", "NAME,BACK-FILE"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let leaked: Vec<&str> = loops.lines().filter(|l| l.contains(&dir_s)).collect();
    assert!(leaked.is_empty(), "loop devices leaked: {leaked:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&dir_s)).collect();
    assert!(leaked.is_empty(), "mounts leaked: {leaked:?}");
    // Nothing of a bake may stay in the work dir but logs, locks and cached bases.
    let work = dir.join("work").join("work");
    if let Ok(rd) = std::fs::read_dir(&work) {
        let left: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "work files left behind: {left:?}");
    }
}

/// No file other than `keep` in `dir` looks like an output (or its temporary).
pub fn assert_no_output(dir: &Path, keep: &[&str]) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".raw") || n.ends_with(".qcow2") || n.ends_with(".partial"))
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "outputs left behind: {left:?}");
}

/// An image file mounted read-write (root partition), to shape a test base; released at drop.
pub struct MountedRw {
    pub root: PathBuf,
    lo: String,
    _dir: tempfile::TempDir,
}

impl MountedRw {
    pub fn open(raw: &Path) -> MountedRw {
        let dir = tempfile::Builder::new()
            .prefix("mnt-rw-")
            .tempdir_in(shared_dir())
            .unwrap();
        let layout = bakery::disk::layout::read_layout(raw).unwrap();
        let root_part = layout.root().expect("image has a root partition").clone();
        let r = run(Command::new("losetup")
            .args(["--find", "--show", "--offset"])
            .arg(root_part.start.to_string())
            .arg("--sizelimit")
            .arg(root_part.size.to_string())
            .arg(raw));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let lo = r.stdout.trim().to_string();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let m = run(Command::new("mount").arg(&lo).arg(&root));
        if m.code != 0 {
            let _ = Command::new("losetup").args(["-d", &lo]).status();
            panic!("mount: {}", m.stderr);
        }
        MountedRw {
            root,
            lo,
            _dir: dir,
        }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}

impl Drop for MountedRw {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.root).status();
        let _ = Command::new("losetup").args(["-d", &self.lo]).status();
    }
}

/// How many times `needle` occurs in a (sparse) image file, deleted blocks included.
pub fn occurrences(image: &Path, needle: &str) -> usize {
    let out = Command::new("grep")
        .args(["-a", "-c", "-F", needle])
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

pub fn write(p: &Path, text: &str) {
    File::create(p).unwrap().write_all(text.as_bytes()).unwrap();
}

/// Drop guard for tests that start bakery as a child: afterwards no child process of this test
/// is left running, and no loop device or mount refers to a `boot-test-tmp-*` dir.
pub struct LeakCheck;

impl LeakCheck {
    pub fn new() -> LeakCheck {
        LeakCheck
    }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let me = std::process::id().to_string();
        let mut children = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            let fields: Vec<&str> = after.split_whitespace().collect();
            if fields.len() > 1 && fields[1] == me && fields[0] != "Z" {
                children.push(
                    std::fs::read_to_string(e.path().join("comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                );
            }
        }
        assert!(
            children.is_empty(),
            "child processes left running: {children:?}"
        );
        let loops = String::from_utf8_lossy(
            &Command::new("losetup")
                .args(["-a"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        assert!(
            !loops.contains("boot-test-tmp-"),
            "loop devices leaked: {loops}"
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains("boot-test-tmp-"), "mounts leaked");
    }
}

// --- reliability suites (tests/faults.rs, signals.rs, crash.rs, security.rs) -------------------

/// Everything of a bake under `dir` that outlived it, described (empty: nothing leaked): loop
/// devices (and so their partx mappings) backed by a file under `dir`, mounts in any mount
/// namespace naming `dir`, processes whose root is under `dir`, held locks, files left in the
/// per-bake work dirs, `.partial` temporaries, and anything left in `dir/tmp` (the bakes' TMPDIR).
pub fn leaks_of(dir: &Path) -> Vec<String> {
    let dir_s = dir.display().to_string();
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            let back =
                std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
            if back.contains(&dir_s) {
                let parts: Vec<String> = std::fs::read_dir(e.path())
                    .map(|r| {
                        r.flatten()
                            .map(|p| p.file_name().to_string_lossy().into_owned())
                            .filter(|n| {
                                n.starts_with(&e.file_name().to_string_lossy().to_string())
                                    && n.contains('p')
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(format!(
                    "loop device /dev/{} on {} (partitions {parts:?})",
                    e.file_name().to_string_lossy(),
                    back.trim()
                ));
            }
        }
    }
    let mut namespaces = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(root) = std::fs::read_link(e.path().join("root")) {
            if root.starts_with(dir) {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                out.push(format!(
                    "process {pid} ({}) rooted in {}",
                    comm.trim(),
                    root.display()
                ));
            }
        }
        let Ok(ns) = std::fs::read_link(e.path().join("ns/mnt")) else {
            continue;
        };
        if namespaces.insert(ns) {
            let mi = std::fs::read_to_string(e.path().join("mountinfo")).unwrap_or_default();
            for l in mi.lines().filter(|l| l.contains(&dir_s)) {
                out.push(format!("mount (pid {pid}'s namespace): {l}"));
            }
        }
    }
    let locks = dir.join("work").join("locks");
    if let Ok(rd) = std::fs::read_dir(&locks) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".lock") else {
                continue;
            };
            if matches!(
                bakery::sys::lock::HostLock::try_acquire(&locks, stem),
                Ok(None)
            ) {
                out.push(format!("lock {name} still held"));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("work").join("work")) {
        out.extend(
            rd.flatten()
                .map(|e| format!("work files {}", e.path().display())),
        );
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("tmp")) {
        out.extend(
            rd.flatten()
                .map(|e| format!("temporary {}", e.path().display())),
        );
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") {
                out.push(format!("temporary output {}", p.display()));
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                && name != "snapshots"
                && name != "bases"
            {
                stack.push(p);
            }
        }
    }
    out
}

/// A tiny layer with a `run` and a `file` step (no downloads): more provisioning steps, in seconds.
pub fn tiny_layer(dir: &Path) -> PathBuf {
    let l = dir.join("tiny-layer");
    std::fs::create_dir_all(&l).unwrap();
    write(&l.join("motd"), "baked by bakery\n");
    write(
        &l.join("layer.yaml"),
        "name: tiny\nsteps:\n  - run: \"mkdir -p /etc/tiny && echo ran > /etc/tiny/ran\"\n  - file: {src: motd, dest: /etc/tiny/motd, mode: \"0644\"}\n",
    );
    l
}

/// Empty the layer cache of a test's work dir (its entries; the base digests stay remembered), so
/// the next bake is cold.
pub fn clear_layer_cache(work: &Path) {
    for e in std::fs::read_dir(work.join("layer-cache"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Points a bake passed, from its `BAKERY_FAULT_LOG`.
pub fn fault_points(log: &Path) -> Vec<String> {
    bakery::fault::points_in_log(&std::fs::read_to_string(log).unwrap_or_default())
}

/// Seeded xorshift64*: reproducible "random" delays; the seed is printed so a failure can be rerun
/// with `BAKERY_TEST_SEED=...`.
pub struct Rng(u64);

impl Rng {
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("BAKERY_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: seed {seed} (rerun with BAKERY_TEST_SEED={seed})");
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// The bake id a bake logged on stderr (`bake_id=bk-...`).
pub fn bake_id_in(stderr: &str) -> Option<String> {
    let i = stderr.find("bake_id=bk-")? + "bake_id=".len();
    stderr.get(i..i + 15).map(str::to_string)
}

/// Publish `base_image()` as AMI `name` in `region` of the emulator (what `bakery base build
/// --output ami` makes, without the debootstrap), marked complete like a finished bake's product.
pub fn publish_test_base(
    rt: &tokio::runtime::Runtime,
    ctx: &bakery::aws::client::AwsContext,
    region: &str,
    name: &str,
) -> (String, String) {
    use bakery::aws::ami::RegisterSpec;
    let raw = base_image();
    let ledger = bakery::aws::ledger::Ledger::new("bk-000000000000");
    let tags: std::collections::BTreeMap<String, String> =
        [("base_ami_name", name), ("base_ami_version", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    rt.block_on(async {
        let up = bakery::aws::ebs::upload_snapshot(
            &ctx.ebs(region),
            &raw,
            None,
            "bakery test base",
            &tags,
            &ledger,
            region,
            64,
        )
        .await
        .unwrap();
        bakery::aws::ebs::wait_snapshot_completed(
            &ctx.ec2(region),
            &up.snapshot_id,
            std::time::Duration::from_secs(300),
        )
        .await
        .unwrap();
        let size = up.volume_size_gib as i32;
        let base = bakery::pipeline::sink::ami::from_scratch_base(
            name,
            region,
            &up.snapshot_id,
            size,
            "1",
        );
        let spec = RegisterSpec {
            name: name.to_string(),
            description: "bakery test base".into(),
            root_snapshot_id: up.snapshot_id.clone(),
            volume_size_gib: size,
            base,
            tags,
        };
        let r = bakery::aws::ami::register(ctx, region, &spec, &ledger)
            .await
            .unwrap();
        ledger.mark_complete(ctx).await.unwrap();
        ledger.commit();
        (r.image_id, up.snapshot_id)
    })
}

async fn tagged_with(
    ctx: &bakery::aws::client::AwsContext,
    regions: &[&str],
    filters: Vec<aws_sdk_ec2::types::Filter>,
) -> Vec<String> {
    let mut left = Vec::new();
    for r in regions {
        let ec2 = ctx.ec2(r);
        let imgs = ec2
            .describe_images()
            .owners("self")
            .set_filters(Some(filters.clone()))
            .send()
            .await
            .unwrap();
        left.extend(
            imgs.images()
                .iter()
                .map(|i| format!("{r}:{}", i.image_id().unwrap_or_default())),
        );
        let snaps = ec2
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(filters.clone()))
            .send()
            .await
            .unwrap();
        left.extend(
            snaps
                .snapshots()
                .iter()
                .map(|s| format!("{r}:{}", s.snapshot_id().unwrap_or_default())),
        );
        let vols = ec2
            .describe_volumes()
            .set_filters(Some(filters.clone()))
            .send()
            .await
            .unwrap();
        left.extend(
            vols.volumes()
                .iter()
                .map(|v| format!("{r}:{}", v.volume_id().unwrap_or_default())),
        );
    }
    left
}

/// Every image, snapshot and volume still tagged with `bake_id`, in these regions.
pub async fn tagged(
    ctx: &bakery::aws::client::AwsContext,
    regions: &[&str],
    bake_id: &str,
) -> Vec<String> {
    let f = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{}", bakery::aws::BAKE_ID_TAG))
        .values(bake_id)
        .build();
    tagged_with(ctx, regions, vec![f]).await
}

/// The same, only those still marked `pending` (not a finished bake's products).
pub async fn tagged_pending(
    ctx: &bakery::aws::client::AwsContext,
    regions: &[&str],
    bake_id: &str,
) -> Vec<String> {
    let f = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{}", bakery::aws::BAKE_ID_TAG))
        .values(bake_id)
        .build();
    let p = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{}", bakery::aws::BAKE_STATE_TAG))
        .values("pending")
        .build();
    tagged_with(ctx, regions, vec![f, p]).await
}

/// The tokio runtime the AWS tests drive the SDK clients with (two workers: this host's cores).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// EC2 tags as a map, key to value.
pub fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> std::collections::BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
