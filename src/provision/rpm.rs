//! .rpm packages on a base without rpm (e.g. Debian): the host's rpm installs into the image
//! with `--root` (rpm chroots into the image to run scriptlets, so they run for real), keeping
//! its database at the image's /var/lib/rpm. The image's Debian packages are not in that
//! database, so bakery checks the dependencies itself first: each requirement must be met by
//! one of the rpms being installed, by a path that exists in the image, by an rpm already in the
//! image's rpm database, or by a Debian package of that name installed in the image. Version
//! constraints against Debian packages are not compared. Then it runs rpm with --nodeps.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use super::chroot::Chroot;
use crate::input;
use crate::sys::cmd::run;

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

/// The name part of a requirement (`foo >= 1.2` -> `foo`).
fn req_name(r: &str) -> &str {
    r.split_whitespace().next().unwrap_or(r)
}

/// Requirements left unmet by the transaction itself (pure: the rest is checked against the image).
pub fn unmet_within(requires: &[String], provides: &[String], files: &[String]) -> Vec<String> {
    let provided: std::collections::BTreeSet<&str> = provides.iter().map(|p| req_name(p)).collect();
    let mut left: Vec<String> = requires
        .iter()
        .map(|r| req_name(r).to_string())
        .filter(|r| !r.starts_with("rpmlib(") && !r.starts_with("config("))
        .filter(|r| !provided.contains(r.as_str()) && !files.contains(r))
        .collect();
    left.sort();
    left.dedup();
    left
}

pub fn install_with_host_rpm(chroot: &Chroot, files: &[PathBuf]) -> Result<()> {
    let requires = query(files, "--requires")?;
    let provides = query(files, "--provides")?;
    let own_files = query(files, "--list")?;
    let root = chroot.root.clone();
    let mut unmet = Vec::new();
    for req in unmet_within(&requires, &provides, &own_files) {
        let ok = if req.starts_with('/') {
            std::fs::symlink_metadata(chroot.path(&req)).is_ok()
        } else {
            let in_rpmdb = Command::new("rpm")
                .arg("--root")
                .arg(&root)
                .args(["--dbpath", DBPATH, "-q", "--whatprovides", &req])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            in_rpmdb
                || chroot
                    .sh("dpkg-query -W -f='${Status}' \"$1\" 2>/dev/null | grep -q 'install ok installed'", &[&req], None)
                    .is_ok()
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
        .args(["--dbpath", DBPATH, "-Uvh", "--nodeps"])
        .args(files);
    chroot.run_host(c, "rpm --root").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_satisfies_its_own_requirements() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let left = unmet_within(
            &s(&[
                "rpmlib(CompressedFileNames) <= 3.0.4-1",
                "/bin/sh",
                "libfoo >= 1.0",
                "bash",
                "/opt/app/lib.so",
                "config(app) = 1-1",
            ]),
            &s(&["libfoo = 1.2-1", "app = 1-1"]),
            &s(&["/opt/app/lib.so"]),
        );
        assert_eq!(left, vec!["/bin/sh".to_string(), "bash".to_string()]);
    }
}
