//! .rpm packages on a base without rpm (e.g. Debian): the host's rpm installs into the image
//! with `--root` (rpm chroots into the image to run scriptlets, so they run for real), keeping
//! its database at the image's /var/lib/rpm. The image's Debian packages are not in that
//! database, so bakery checks the dependencies itself first, against what the image really has:
//!
//! - one of the rpms of the transaction provides it (versions compared as rpm does);
//! - a path (`/bin/sh`, `/usr/bin/python3`) exists in the image (links followed inside it);
//! - a shared library (`libc.so.6()(64bit)`, `libc.so.6(GLIBC_2.34)(64bit)`) is on the image's
//!   library path with that ELF class and symbol version, and `rtld(GNU_HASH)` is a glibc
//!   dynamic linker (see `libs`);
//! - an rpm already in the image's rpm database provides it (`rpm --whatprovides`);
//! - a Debian package (or a Debian `Provides:`) of that name is installed; version constraints
//!   against Debian packages are not compared (the two version schemes differ);
//! - boolean ("rich") expressions — `(bash or zsh)`, `(a if b else c)`, `with`, `without`,
//!   `unless`, nested — are evaluated over the above (see `package::richdep`).
//!
//! Then it runs rpm with --nodeps. An unmet requirement is an input error naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use super::chroot::Chroot;
use super::libs::{self, LibraryPath};
use crate::input;
use crate::package::richdep::{self, Providers};
use crate::package::version::compare_rpm;
use crate::sys::cmd::run;
use crate::sys::inroot::InRoot;

pub const DBPATH: &str = "/var/lib/rpm";

fn query(files: &[PathBuf], what: &str) -> Result<Vec<String>> {
    let out = run(
        Command::new("rpm").args(["-qp", what]).args(files),
        "reading rpm metadata",
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

pub fn names(files: &[PathBuf]) -> Result<Vec<String>> {
    let out = run(
        Command::new("rpm")
            .args(["-qp", "--qf", "%{NAME}\\n"])
            .args(files),
        "reading rpm names",
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// `name [OP version]` as rpm prints a provide or simple requirement.
fn split_dep(r: &str) -> (&str, Option<(&str, &str)>) {
    let mut w = r.split_whitespace();
    let name = w.next().unwrap_or(r);
    match (w.next(), w.next()) {
        (Some(op), Some(v)) => (name, Some((op, v))),
        _ => (name, None),
    }
}

/// Whether a provide `name = pv` (or unversioned) meets `OP want`, by rpm's ordering.
pub fn version_meets(provided: Option<&str>, cmp: Option<(&str, &str)>) -> bool {
    let Some((op, want)) = cmp else {
        return true;
    };
    let Some(have) = provided else {
        // An unversioned provide meets any versioned requirement (rpm's rule).
        return true;
    };
    let o = compare_rpm(have, want);
    match op {
        "=" | "==" => o.is_eq(),
        "<" => o.is_lt(),
        ">" => o.is_gt(),
        "<=" | "=<" => o.is_le(),
        ">=" | "=>" => o.is_ge(),
        _ => false,
    }
}

/// Requirements left after the ones rpm handles itself (`rpmlib(...)`), the package's own
/// `config(...)`, and repeats.
pub fn requirements(requires: &[String]) -> Vec<String> {
    let mut left: Vec<String> = requires
        .iter()
        .filter(|r| !r.starts_with("rpmlib(") && !r.starts_with("config("))
        .cloned()
        .collect();
    left.sort();
    left.dedup();
    left
}

/// What the transaction and the image offer, as providers of a simple requirement.
struct Image<'a> {
    fs: &'a InRoot,
    libs: LibraryPath<'a>,
    machine: Option<object::elf::Machine>,
    /// Transaction provides: name -> (provider rpm, version).
    own: BTreeMap<String, Vec<(String, Option<String>)>>,
    own_files: BTreeSet<String>,
    debian: BTreeSet<String>,
    rpmdb: Option<(PathBuf, bool)>,
}

impl Providers for Image<'_> {
    fn providers(&mut self, name: &str, cmp: Option<(&str, &str)>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (pkg, v) in self.own.get(name).into_iter().flatten() {
            if version_meets(v.as_deref(), cmp) {
                out.insert(format!("rpm:{pkg}"));
            }
        }
        if name.starts_with('/') {
            if self.own_files.contains(name) {
                out.insert("transaction".into());
            } else if self.fs.resolves(name) || self.fs.exists(name) {
                out.insert(format!("file:{name}"));
            }
            return out;
        }
        if !out.is_empty() {
            return out;
        }
        if let Some(req) = libs::parse_soname_req(name) {
            if self.libs.satisfies(&req, self.machine) {
                out.insert(format!("lib:{}", req.soname));
            }
            return out;
        }
        if name == "rtld(GNU_HASH)" {
            if self.libs.rtld_gnu_hash(self.machine) {
                out.insert("glibc".into());
            }
            return out;
        }
        if self.debian.contains(name) {
            out.insert(format!("deb:{name}"));
            return out;
        }
        if let Some((root, true)) = &self.rpmdb {
            let spec = match cmp {
                Some((op, v)) => format!("{name} {op} {v}"),
                None => name.to_string(),
            };
            let found = Command::new("rpm")
                .arg("--root")
                .arg(root)
                .args([
                    "--dbpath",
                    DBPATH,
                    "-q",
                    "--qf",
                    "%{NAME}\\n",
                    "--whatprovides",
                    &spec,
                ])
                .output()
                .ok()
                .filter(|o| o.status.success());
            if let Some(o) = found {
                for n in String::from_utf8_lossy(&o.stdout).lines() {
                    out.insert(format!("rpm:{n}"));
                }
            }
        }
        out
    }
}

pub fn install_with_host_rpm(
    chroot: &Chroot,
    files: &[PathBuf],
    allow_downgrade: bool,
) -> Result<()> {
    let requires = query(files, "--requires")?;
    let provides = query(files, "--provides")?;
    let own_files = query(files, "--list")?;
    let arch = run(
        Command::new("rpm")
            .args(["-qp", "--qf", "%{ARCH}\\n"])
            .args(files),
        "reading rpm architectures",
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default();
    let root = chroot.root.clone();
    let fs = chroot.fs()?;
    let mut own: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
    for p in &provides {
        let (n, cmp) = split_dep(p);
        own.entry(n.to_string())
            .or_default()
            .push(("transaction".into(), cmp.map(|(_, v)| v.to_string())));
    }
    let debian = super::pkgdb::read_dpkg(fs)
        .map(|t| super::pkgdb::dpkg_names_and_provides(&t))
        .unwrap_or_default();
    let has_rpmdb = fs.exists(DBPATH);
    let mut image = Image {
        fs,
        libs: LibraryPath::of(fs),
        machine: arch.lines().find_map(libs::machine_of),
        own,
        own_files: own_files.into_iter().collect(),
        debian,
        rpmdb: Some((root.clone(), has_rpmdb)),
    };
    let mut unmet = Vec::new();
    for req in requirements(&requires) {
        let ok = match richdep::parse(&req) {
            Ok(dep) => richdep::satisfied(&dep, &mut image),
            Err(e) => {
                unmet.push(format!("{req} (cannot read it: {e})"));
                continue;
            }
        };
        if !ok {
            unmet.push(req);
        }
    }
    if !unmet.is_empty() {
        return Err(input!(
            "{}: dependencies not met in the image: {}; add a layer or package that provides them",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            unmet.join(", ")
        ));
    }
    std::fs::create_dir_all(chroot.path(DBPATH))
        .context("creating the image's rpm database directory")?;
    let mut c = Command::new("rpm");
    c.arg("--root")
        .arg(&root)
        .args(["--dbpath", DBPATH, "-Uvh", "--nodeps"]);
    if allow_downgrade {
        c.arg("--oldpackage");
    }
    c.args(files);
    chroot.run_host(c, "rpm --root").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_drop_rpms_own_and_repeats() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let left = requirements(&s(&[
            "rpmlib(CompressedFileNames) <= 3.0.4-1",
            "/bin/sh",
            "libfoo >= 1.0",
            "(bash or zsh)",
            "/bin/sh",
            "config(app) = 1-1",
        ]));
        assert_eq!(left, s(&["(bash or zsh)", "/bin/sh", "libfoo >= 1.0"]));
    }

    #[test]
    fn versions_of_provides_are_compared_like_rpm() {
        assert!(version_meets(Some("1.2-1"), Some((">=", "1.0"))));
        assert!(!version_meets(Some("0.9-1"), Some((">=", "1.0"))));
        assert!(version_meets(Some("2.0"), Some(("=", "2.0"))));
        assert!(version_meets(None, Some((">=", "9"))));
        assert!(version_meets(Some("1"), None));
        assert_eq!(
            split_dep("libfoo = 1.2-1"),
            ("libfoo", Some(("=", "1.2-1")))
        );
        assert_eq!(split_dep("bash"), ("bash", None));
    }
}
