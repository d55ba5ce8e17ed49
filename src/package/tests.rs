//! End-to-end tests: real packages built with the host's dpkg-deb and rpmbuild, hand-made
//! archives for the broken cases, and truncated or bit-flipped copies of all of them.
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ar::test_support as ar;
use super::*;

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("note: {tool} is not installed; skipping this test");
    }
    found
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In-memory inspect, as the tests cut and flip bytes thousands of times.
fn inspect_bytes(name: &str, bytes: &[u8]) -> Result<PackageInfo, PackageError> {
    inspect_reader(Path::new(name), &mut Cursor::new(bytes), bytes.len() as u64)
}

/// Every proper prefix (after the first byte) must be reported as truncated or malformed.
fn assert_every_cut_fails(name: &str, bytes: &[u8]) {
    for cut in 1..bytes.len() {
        match inspect_bytes(name, &bytes[..cut]) {
            Err(PackageError::Truncated { .. } | PackageError::Malformed { .. }) => {}
            other => panic!("{name} cut at {cut}/{}: {other:?}", bytes.len()),
        }
    }
}

/// Flipping any byte must never panic (it may still parse: payload bytes are not checked).
fn flip_every_byte(name: &str, bytes: &[u8], upto: usize) {
    let mut copy = bytes.to_vec();
    for i in 0..upto.min(bytes.len()) {
        for mask in [0xff, 0x01, 0x80] {
            copy[i] ^= mask;
            let _ = inspect_bytes(name, &copy);
            copy[i] ^= mask;
        }
    }
}

fn assert_one_line(e: &PackageError, path: &str) {
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{path}: ")), "{msg}");
    assert!(!msg.contains('\n') && !msg.ends_with('.'), "{msg}");
}

const CONTROL: &str = "Package: hello-bake
Version: 2:1.4.2-3ubuntu1
Architecture: amd64
Maintainer: Bakery Tests <tests@example.com>
Pre-Depends: dpkg (>= 1.15)
Depends: libc6 (>= 2.34),
 adduser | passwd
Provides: httpd, web-server (= 1.0)
Description: test package
 for bakery
";

/// Builds a .deb with `dpkg-deb -Z<compression>` in `dir`.
fn build_deb(dir: &Path, compression: &str) -> PathBuf {
    let root = dir.join(format!("root-{compression}"));
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::create_dir_all(root.join("usr/share/hello-bake")).unwrap();
    fs::write(root.join("DEBIAN/control"), CONTROL).unwrap();
    fs::write(
        root.join("usr/share/hello-bake/greeting"),
        "hello\n".repeat(100),
    )
    .unwrap();
    let out = dir.join(format!("hello-{compression}.deb"));
    run(Command::new("dpkg-deb")
        .arg(format!("-Z{compression}"))
        .arg("--root-owner-group")
        .arg("--build")
        .arg(&root)
        .arg(&out));
    out
}

#[test]
fn reads_debs_built_by_dpkg_deb() {
    if !have("dpkg-deb") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (compression, member) in [
        ("xz", "control.tar.xz"),
        ("gzip", "control.tar.gz"),
        ("zstd", "control.tar.zst"),
        ("none", "control.tar"),
    ] {
        let path = build_deb(dir.path(), compression);
        let bytes = fs::read(&path).unwrap();
        assert!(
            bytes.windows(member.len()).any(|w| w == member.as_bytes()),
            "{compression}: expected a {member} member"
        );
        let info = inspect(&path).unwrap_or_else(|e| panic!("{compression}: {e}"));
        assert_eq!(info.kind, PackageKind::Deb);
        assert_eq!(info.path, path);
        assert_eq!(info.name, "hello-bake");
        assert_eq!(info.version, "1.4.2");
        assert_eq!(info.release, "3ubuntu1");
        assert_eq!(info.epoch.as_deref(), Some("2"));
        assert_eq!(info.full_version(), "1.4.2-3ubuntu1");
        assert_eq!(info.arch, "amd64");
        assert_eq!(info.normalized_arch(), "x86_64");
        assert!(!info.is_arch_independent());
        assert_eq!(info.depends, ["libc6 (>= 2.34)", "adduser | passwd"]);
        assert_eq!(info.pre_depends, ["dpkg (>= 1.15)"]);
        assert_eq!(info.provides, ["httpd", "web-server (= 1.0)"]);
        assert!(info.requires.is_empty());
    }
}

#[test]
fn truncated_and_flipped_debs_never_pass_or_panic() {
    if !have("dpkg-deb") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for compression in ["xz", "gzip", "zstd", "none"] {
        let bytes = fs::read(build_deb(dir.path(), compression)).unwrap();
        assert_every_cut_fails(&format!("{compression}.deb"), &bytes);
        flip_every_byte(&format!("{compression}.deb"), &bytes, bytes.len());
    }
    // Through a real file too, with the message from the brief.
    let bytes = fs::read(build_deb(dir.path(), "xz")).unwrap();
    let control_end = {
        let at = bytes
            .windows(14)
            .position(|w| w == b"control.tar.xz")
            .unwrap();
        at + 60 + 10
    };
    let cut = dir.path().join("app.deb");
    fs::write(&cut, &bytes[..control_end]).unwrap();
    let err = inspect(&cut).unwrap_err();
    assert!(matches!(err, PackageError::Truncated { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: truncated package (control.tar.xz ends early); rebuild or re-download it",
            cut.display()
        )
    );
}

/// A control.tar.gz holding `control` (built with the tar and flate2 crates).
fn control_tar_gz(control: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(control.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "./control", control.as_bytes())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn hand_deb(control_member: &str, control: &[u8]) -> Vec<u8> {
    ar::build(&[
        ("debian-binary", b"2.0\n"),
        (control_member, control),
        ("data.tar.gz", b"not checked"),
    ])
}

#[test]
fn hand_made_debs() {
    let good = hand_deb("control.tar.gz", &control_tar_gz(CONTROL));
    let info = inspect_bytes("good.deb", &good).unwrap();
    assert_eq!(
        (info.name.as_str(), info.version.as_str()),
        ("hello-bake", "1.4.2")
    );
    assert_every_cut_fails("good.deb", &good);
    flip_every_byte("good.deb", &good, good.len());

    let err = |bytes: &[u8]| inspect_bytes("app.deb", bytes).unwrap_err();

    let no_version = hand_deb(
        "control.tar.gz",
        &control_tar_gz("Package: a\nArchitecture: all\n"),
    );
    let e = err(&no_version);
    assert!(matches!(e, PackageError::Malformed { .. }));
    assert!(
        e.to_string()
            .starts_with("app.deb: control file has no Version field; "),
        "{e}"
    );

    // The gzip stream stops half-way, though the ar member is complete.
    let gz = control_tar_gz(CONTROL);
    let e = err(&hand_deb("control.tar.gz", &gz[..gz.len() / 2]));
    assert!(
        matches!(&e, PackageError::Truncated { part, .. } if part == "control.tar.gz"),
        "{e}"
    );

    let e = err(&hand_deb("control.tar.gz", b"this is not gzip at all"));
    assert!(matches!(e, PackageError::Malformed { .. }), "{e}");
    let e = err(&hand_deb(
        "control.tar.xz",
        b"\xfd7zXZ\0 garbage garbage garbage",
    ));
    assert!(matches!(e, PackageError::Malformed { .. }), "{e}");
    let e = err(&hand_deb(
        "control.tar.zst",
        b"\x28\xb5\x2f\xfd garbage garbage",
    ));
    assert!(matches!(e, PackageError::Malformed { .. }), "{e}");
    let e = err(&hand_deb("control.tar.bz2", b"BZh"));
    assert!(e.to_string().contains("unsupported control member"), "{e}");

    let e = err(&ar::build(&[("debian-binary", b"3.0\n"), ("x", b"")]));
    assert!(
        e.to_string().contains("unsupported deb format '3.0'"),
        "{e}"
    );

    let e = err(&ar::build(&[
        ("debian-binary", b"2.0\n"),
        ("data.tar.gz", b""),
    ]));
    assert!(e.to_string().contains("no control.tar member"), "{e}");

    let e = err(&ar::build(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", &gz),
    ]));
    assert!(e.to_string().contains("no data.tar member"), "{e}");

    // A static library is an ar archive but not a package.
    let e = err(&ar::build(&[("/", b"symbols"), ("hello.o", b"\x7fELF")]));
    assert!(matches!(e, PackageError::NotAPackage { .. }), "{e}");

    let e = err(DEB_MAGIC);
    assert!(matches!(e, PackageError::Truncated { .. }), "{e}");
}

const SPEC: &str = "Name: hello-bake
Version: 1.4.2
Release: 3.el9
Epoch: 2
Summary: bakery test package
License: MIT
BuildArch: noarch
Requires: bash >= 4
Requires: coreutils
Provides: webserver

%description
A test package for bakery.

%install
mkdir -p %{buildroot}/usr/share/hello-bake
echo hello > %{buildroot}/usr/share/hello-bake/greeting

%post
echo installed

%files
/usr/share/hello-bake/greeting
";

/// Builds the binary (`-bb`) or source (`-bs`) rpm of [`SPEC`] in `dir`.
fn build_rpm(dir: &Path, mode: &str) -> PathBuf {
    let spec = dir.join("hello-bake.spec");
    fs::write(&spec, SPEC).unwrap();
    run(Command::new("rpmbuild")
        .arg("--define")
        .arg(format!("_topdir {}", dir.display()))
        .arg("--define")
        .arg("__os_install_post %{nil}")
        .arg(mode)
        .arg(&spec));
    let sub = if mode == "-bs" {
        "SRPMS"
    } else {
        "RPMS/noarch"
    };
    let found: Vec<PathBuf> = fs::read_dir(dir.join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

#[test]
fn reads_rpms_built_by_rpmbuild() {
    if !have("rpmbuild") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = build_rpm(dir.path(), "-bb");
    let info = inspect(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.kind, PackageKind::Rpm);
    assert_eq!(info.name, "hello-bake");
    assert_eq!(info.version, "1.4.2");
    assert_eq!(info.release, "3.el9");
    assert_eq!(info.epoch.as_deref(), Some("2"));
    assert_eq!(info.full_version(), "1.4.2-3.el9");
    assert_eq!(info.arch, "noarch");
    assert!(info.is_arch_independent());
    for req in ["bash", "coreutils", "/bin/sh"] {
        assert!(
            info.requires.iter().any(|r| r == req),
            "{req} in {:?}",
            info.requires
        );
    }
    for prov in ["webserver", "hello-bake"] {
        assert!(
            info.provides.iter().any(|p| p == prov),
            "{prov} in {:?}",
            info.provides
        );
    }
    assert!(info.depends.is_empty() && info.pre_depends.is_empty());

    // The name lies; the content decides.
    let liar = dir.path().join("x.deb");
    fs::copy(&path, &liar).unwrap();
    let info = inspect(&liar).unwrap();
    assert_eq!(
        (info.kind, info.name.as_str()),
        (PackageKind::Rpm, "hello-bake")
    );
}

#[test]
fn truncated_and_flipped_rpms_never_pass_or_panic() {
    if !have("rpmbuild") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bytes = fs::read(build_rpm(dir.path(), "-bb")).unwrap();
    assert_every_cut_fails("hello.rpm", &bytes);
    // The lead and both headers; the payload after them is only length-checked.
    flip_every_byte("hello.rpm", &bytes, 16 * 1024);
    for cut in [1, 50, 96, 100, 200, bytes.len() / 2, bytes.len() - 1] {
        let path = dir.path().join(format!("cut-{cut}.rpm"));
        fs::write(&path, &bytes[..cut]).unwrap();
        let e = inspect(&path).unwrap_err();
        assert!(
            matches!(
                e,
                PackageError::Truncated { .. } | PackageError::Malformed { .. }
            ),
            "{cut}: {e}"
        );
        assert_one_line(&e, &path.display().to_string());
    }
}

#[test]
fn source_rpm_is_rejected() {
    if !have("rpmbuild") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = build_rpm(dir.path(), "-bs");
    let e = inspect(&path).unwrap_err();
    assert!(matches!(e, PackageError::SourceRpm { .. }), "{e}");
    assert!(e.to_string().contains("is a source rpm"), "{e}");
    assert_one_line(&e, &path.display().to_string());
}

#[test]
fn deb_named_rpm_is_read_as_deb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("really-a-deb.rpm");
    fs::write(&path, hand_deb("control.tar.gz", &control_tar_gz(CONTROL))).unwrap();
    assert_eq!(inspect(&path).unwrap().kind, PackageKind::Deb);
}

#[test]
fn file_level_errors() {
    let dir = tempfile::tempdir().unwrap();
    let shown = |p: &Path| p.display().to_string();

    let missing = dir.path().join("missing.deb");
    let e = inspect(&missing).unwrap_err();
    assert!(matches!(e, PackageError::NotFound { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: no such file; check the --package path",
            shown(&missing)
        )
    );
    assert_eq!(e.path(), missing);

    let zip = dir.path().join("app.deb");
    fs::write(&zip, b"PK\x03\x04\x14\x00\x00\x00rest").unwrap();
    let e = inspect(&zip).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: not a .deb or .rpm package (starts with 'PK\\x03\\x04'); pass a package built by dpkg-deb or rpmbuild",
            shown(&zip)
        )
    );

    let empty = dir.path().join("empty.rpm");
    fs::write(&empty, b"").unwrap();
    let e = inspect(&empty).unwrap_err();
    assert!(e.to_string().contains("(it is empty)"), "{e}");

    let e = inspect(dir.path()).unwrap_err();
    assert!(e.to_string().contains("(it is a directory)"), "{e}");
    for e in [
        e,
        inspect(&missing).unwrap_err(),
        inspect(&zip).unwrap_err(),
    ] {
        assert_one_line(&e, &shown(e.path()));
    }

    // A file cut inside the magic is truncated, not "not a package".
    for head in [&b"!<ar"[..], &[0xed, 0xab][..]] {
        let e = inspect_bytes("t.pkg", head).unwrap_err();
        assert!(matches!(e, PackageError::Truncated { .. }), "{e}");
    }
}

#[test]
fn arch_and_version_helpers() {
    let info = |arch: &str, release: &str| PackageInfo {
        version: "1.0".into(),
        release: release.into(),
        epoch: Some("1".into()),
        arch: arch.into(),
        ..PackageInfo::for_tests()
    };
    for (arch, norm, indep) in [
        ("amd64", "x86_64", false),
        ("x86_64", "x86_64", false),
        ("arm64", "arm64", false),
        ("aarch64", "arm64", false),
        ("all", "noarch", true),
        ("noarch", "noarch", true),
        ("i386", "x86", false),
        ("i686", "x86", false),
        ("riscv64", "riscv64", false),
    ] {
        assert_eq!(info(arch, "").normalized_arch(), norm, "{arch}");
        assert_eq!(info(arch, "").is_arch_independent(), indep, "{arch}");
    }
    assert_eq!(info("all", "").full_version(), "1.0");
    assert_eq!(info("all", "2").full_version(), "1.0-2");
    assert_eq!(PackageKind::Rpm.to_string(), "rpm");
}

#[test]
fn cut_compressed_control_streams_are_truncated() {
    if !have("dpkg-deb") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (compression, member) in [
        ("xz", "control.tar.xz"),
        ("gzip", "control.tar.gz"),
        ("zstd", "control.tar.zst"),
    ] {
        let bytes = fs::read(build_deb(dir.path(), compression)).unwrap();
        let members = super::ar::members(&mut Cursor::new(&bytes), bytes.len() as u64).unwrap();
        let m = members.iter().find(|m| m.name == member).unwrap();
        let stream = &bytes[m.offset as usize..][..m.size as usize];
        // The ar member is whole; the compressed stream inside it is not.
        for cut in 1..stream.len() {
            let e = inspect_bytes("x.deb", &hand_deb(member, &stream[..cut])).unwrap_err();
            assert!(
                matches!(
                    e,
                    PackageError::Truncated { .. } | PackageError::Malformed { .. }
                ),
                "{member} cut at {cut}: {e}"
            );
            if cut == stream.len() / 2 {
                assert!(matches!(e, PackageError::Truncated { .. }), "{e}");
            }
        }
    }
}
