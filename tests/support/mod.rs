//! Shared helpers for the integration tests: the built binary, a cached base image, packages
//! built on the fly (dpkg-deb, rpmbuild), read-only views of output images, and leak checks.
//! Every test runs as root against real loop devices, mounts and chroots.
#![allow(dead_code)]

pub mod emulator;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BASE_YAML: &str = include_str!("../../base-images/debian-bookworm.yaml");

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
        let mut c = Command::new(env!("CARGO_BIN_EXE_bakery"));
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

/// The default base image, built once per content of its YAML and of the base builder, under a
/// lock so parallel tests wait for one build.
pub fn base_image() -> PathBuf {
    if let Ok(p) = std::env::var("BAKERY_TEST_BASE") {
        return PathBuf::from(p);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(
        &(
            BASE_YAML,
            include_str!("../../src/base/mod.rs"),
            include_str!("../../src/provision/chroot.rs"),
        ),
        &mut h,
    );
    let key = std::hash::Hasher::finish(&h);
    let dir = shared_dir().join("bases");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("base-{key:016x}.raw"));
    let lock = File::create(dir.join("build.lock")).unwrap();
    lock.lock().unwrap();
    if !path.exists() {
        let work = dir.join("work");
        let out = run(Command::new(env!("CARGO_BIN_EXE_bakery"))
            .env("BAKERY_WORK_DIR", &work)
            .current_dir(repo())
            .args([
                "base",
                "build",
                "base-images/debian-bookworm.yaml",
                "--output",
            ])
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
        }
    }
}

pub fn build_deb(dir: &Path, d: &Deb) -> PathBuf {
    let root = dir.join(format!("debroot-{}", d.name));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: bakery tests <tests@bakery.invalid>\nDescription: bakery test package\n",
        d.name, d.version, d.arch
    );
    if !d.depends.is_empty() {
        control.push_str(&format!("Depends: {}\n", d.depends));
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
        let m = run(Command::new("mount")
            .args(["-o", "ro,noload", &lo])
            .arg(&root));
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
