//! Carrying out each provisioning step inside the chroot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::chroot::Chroot;
use super::failure;
use super::plan::{Bootstrap, ImageFacts, SessionPlan, Step};
use super::rpm;
use crate::input;

/// Which package manager the image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    Apt,
    Dnf,
    Yum,
    None,
}

pub struct Runner<'a> {
    pub chroot: &'a mut Chroot,
    plan: &'a SessionPlan,
    apt_updated: bool,
    /// The base shipped without apt lists (generalized): the bake removes the ones it fetched,
    /// which keeps images small and incremental uploads to the blocks that really changed.
    apt_lists_were_empty: Option<bool>,
    pub facts: ImageFacts,
}

impl<'a> Runner<'a> {
    pub fn new(chroot: &'a mut Chroot, plan: &'a SessionPlan) -> Runner<'a> {
        Runner {
            chroot,
            plan,
            apt_updated: false,
            apt_lists_were_empty: None,
            facts: ImageFacts::default(),
        }
    }

    fn has(&self, inside: &str) -> bool {
        std::fs::symlink_metadata(self.chroot.path(inside)).is_ok()
    }

    pub fn package_manager(&self) -> PackageManager {
        if self.has("/usr/bin/apt-get") {
            PackageManager::Apt
        } else if self.has("/usr/bin/dnf") {
            PackageManager::Dnf
        } else if self.has("/usr/bin/yum") {
            PackageManager::Yum
        } else {
            PackageManager::None
        }
    }

    pub fn bootstrap(&mut self, b: &Bootstrap) -> Result<()> {
        let mut c = Command::new("debootstrap");
        c.arg("--variant=minbase")
            .arg(format!("--arch={}", b.arch))
            .arg(format!("--components={}", b.components.join(",")))
            .arg("--merged-usr");
        if !b.include.is_empty() {
            c.arg(format!("--include={}", b.include.join(",")));
        }
        c.arg(&b.suite).arg(&self.chroot.root).arg(&b.mirror);
        self.chroot.run_host(c, "debootstrap").map(|_| ())
    }

    /// The image's architecture, normalized like package architectures.
    fn image_arch(&self) -> Option<String> {
        let out = if self.has("/usr/bin/dpkg") {
            self.chroot.sh("dpkg --print-architecture", &[], None).ok()
        } else if self.has("/usr/bin/rpm") {
            self.chroot.sh("rpm --eval %_arch", &[], None).ok()
        } else {
            None
        }?;
        Some(crate::package::normalize_arch(out.lines().last()?.trim()).to_string())
    }

    /// Refuse packages built for another architecture before anything is installed.
    pub fn check_packages(&mut self) -> Result<()> {
        self.facts.arch = self.image_arch();
        let Some(arch) = self.facts.arch.clone() else {
            return Ok(());
        };
        for p in &self.plan.packages {
            if p.arch != "noarch" && p.arch != arch {
                return Err(input!(
                    "{}: built for {}, but the base image is {arch}; build the package for {arch} or use a matching base",
                    p.file, p.arch
                ));
            }
        }
        Ok(())
    }

    fn apt_update(&mut self) -> Result<()> {
        if !self.apt_updated {
            if self.apt_lists_were_empty.is_none() {
                let lists = std::fs::read_dir(self.chroot.path("/var/lib/apt/lists"))
                    .map(|rd| {
                        rd.flatten().any(|e| {
                            e.file_name().to_string_lossy().ends_with("Packages")
                                || e.file_name().to_string_lossy().ends_with("Packages.lz4")
                        })
                    })
                    .unwrap_or(false);
                self.apt_lists_were_empty = Some(!lists);
            }
            self.chroot
                .sh("apt-get -q -o Acquire::Retries=3 update", &[], None)
                .context("apt-get update in the image (are the image's apt sources reachable?)")?;
            self.apt_updated = true;
        }
        Ok(())
    }

    /// Whether apt can install `what` from what the image already has: every package the
    /// simulation would unpack is one of `local` (the .deb files of this step), so nothing is
    /// downloaded and `apt-get update` — a network round trip per source, most of a small
    /// bake's time — can be skipped.
    fn resolvable_offline(&self, what: &[String], local: &[String]) -> bool {
        if local.is_empty() {
            return false;
        }
        // In-memory caches: a simulation leaves no pkgcache.bin behind for the seal to clean.
        let mut argv: Vec<&str> = vec![
            "apt-get",
            "-s",
            "-q",
            "-o",
            "Dir::Cache::pkgcache=",
            "-o",
            "Dir::Cache::srcpkgcache=",
            "install",
            "--no-install-recommends",
        ];
        argv.extend(what.iter().map(String::as_str));
        let Ok(out) = self
            .chroot
            .run(self.chroot.command(&argv), None, "apt-get -s install")
        else {
            return false;
        };
        // `run` keeps the last 40 lines: a longer plan may hide Inst lines, so play safe.
        if out.lines().count() >= 40 {
            return false;
        }
        offline_plan(&out, local)
    }

    fn apt_install(&mut self, what: &[String], local: &[String]) -> Result<()> {
        if self.resolvable_offline(what, local) {
            // Everything apt would unpack is in `what` and every dependency is already in the
            // image: dpkg installs the files as apt would, without apt first re-reading and
            // hashing each .deb (most of a local bake's package step for a large package).
            let mut argv: Vec<&str> = vec!["dpkg", "--force-confdef", "--force-confold", "-i"];
            argv.extend(what.iter().map(String::as_str));
            return self
                .chroot
                .run(self.chroot.command(&argv), None, "dpkg -i")
                .map(|_| ());
        }
        self.apt_update()?;
        let mut argv: Vec<&str> = vec![
            "apt-get",
            "-q",
            "-y",
            "-o",
            "Acquire::Retries=3",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            "install",
            "--no-install-recommends",
        ];
        argv.extend(what.iter().map(String::as_str));
        self.chroot
            .run(self.chroot.command(&argv), None, "apt-get install")
            .map(|_| ())
    }

    fn dnf_install(&mut self, what: &[String], pm: PackageManager) -> Result<()> {
        let tool = if pm == PackageManager::Dnf {
            "dnf"
        } else {
            "yum"
        };
        let mut argv: Vec<&str> = vec![tool, "-y", "install"];
        argv.extend(what.iter().map(String::as_str));
        self.chroot
            .run(self.chroot.command(&argv), None, "dnf install")
            .map(|_| ())
    }

    /// Copy package files into the image's tmpfs /tmp (gone after the bake), returning their paths inside.
    fn stage(&self, files: &[PathBuf]) -> Result<Vec<String>> {
        let dir = self.chroot.path("/tmp/bakery-packages");
        std::fs::create_dir_all(&dir)?;
        files
            .iter()
            .map(|f| {
                let name = f
                    .file_name()
                    .context("package path has no file name")?
                    .to_string_lossy()
                    .into_owned();
                std::fs::copy(f, dir.join(&name))
                    .with_context(|| format!("copying {} into the image", f.display()))?;
                Ok(format!("/tmp/bakery-packages/{name}"))
            })
            .collect()
    }

    fn record_versions(&mut self, kind: &str, names: &[String]) {
        let query = match kind {
            "deb" => "dpkg-query -W -f='${Package} ${Version}\\n' \"$@\"",
            _ => "rpm -q --qf '%{NAME} %{VERSION}-%{RELEASE}\\n' \"$@\"",
        };
        let out = if kind == "rpm" && !self.has("/usr/bin/rpm") {
            let mut c = Command::new("rpm");
            c.arg("--root")
                .arg(&self.chroot.root)
                .args(["-q", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\\n"])
                .args(names);
            self.chroot.run_host(c, "rpm -q")
        } else {
            let args: Vec<&str> = names.iter().map(String::as_str).collect();
            self.chroot.sh(query, &args, None)
        };
        if let Ok(text) = out {
            for l in text.lines() {
                if let Some((n, v)) = l.split_once(' ') {
                    self.facts.installed.insert(n.to_string(), v.to_string());
                }
            }
        }
    }

    /// Run one step; a failure whose output shows an input problem (unmet dependencies, the image
    /// out of space) becomes an input error that says what to change.
    pub fn step(&mut self, step: &Step) -> Result<()> {
        let mark = std::fs::metadata(&self.plan.log)
            .map(|m| m.len())
            .unwrap_or(0);
        let r = self.run_step(step);
        let Err(e) = r else { return Ok(()) };
        if e.chain()
            .any(|c| c.is::<crate::error::Interrupted>() || c.is::<crate::error::InputError>())
        {
            return Err(e);
        }
        let output = read_from(&self.plan.log, mark);
        match failure::classify(&output) {
            Some(failure::Cause::Unmet(lines)) => Err(input!(
                "dependencies cannot be met from the image's package sources: {}; pass the packages that provide them with --package (they install in the same transaction) or add a layer whose sources have them",
                lines.join("; ")
            )),
            Some(failure::Cause::NoSpace) => {
                let (free, total) = fs_space(&self.chroot.root);
                Err(input!(
                    "the image's root filesystem ({} MiB, {} MiB free after the failed step) ran out of space (No space left on device): the base is too small for what this step installs; use a base with a bigger disk (`size:` in the base YAML) or install less",
                    total >> 20,
                    free >> 20
                ))
            }
            None => Err(e),
        }
    }

    fn run_step(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::Apt { packages, .. } => match self.package_manager() {
                PackageManager::Apt => self.apt_install(packages, &[]),
                pm @ (PackageManager::Dnf | PackageManager::Yum) => self.dnf_install(packages, pm),
                PackageManager::None => Err(input!(
                    "the image has no apt-get, dnf or yum to install {}",
                    packages.join(" ")
                )),
            },
            Step::InstallDebs { files } => {
                if self.package_manager() != PackageManager::Apt {
                    return Err(input!(
                        "{}: .deb packages need a base image with apt; this one has none",
                        files[0].display()
                    ));
                }
                let staged = self.stage(files)?;
                let names = deb_names(&self.plan.packages, files);
                let r = self.apt_install(&staged, &names);
                let _ = std::fs::remove_dir_all(self.chroot.path("/tmp/bakery-packages"));
                r?;
                self.record_versions("deb", &names);
                Ok(())
            }
            Step::InstallRpms { files } => {
                let staged = self.stage(files)?;
                let r = match self.package_manager() {
                    pm @ (PackageManager::Dnf | PackageManager::Yum) => {
                        self.dnf_install(&staged, pm)
                    }
                    _ if self.has("/usr/bin/rpm") => {
                        let mut argv = vec!["rpm", "-Uvh"];
                        argv.extend(staged.iter().map(String::as_str));
                        self.chroot
                            .run(self.chroot.command(&argv), None, "rpm -U")
                            .map(|_| ())
                    }
                    _ => rpm::install_with_host_rpm(self.chroot, files),
                };
                let _ = std::fs::remove_dir_all(self.chroot.path("/tmp/bakery-packages"));
                r?;
                let names = rpm::names(files)?;
                self.record_versions("rpm", &names);
                Ok(())
            }
            Step::Script { layer, path } => {
                let body =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                self.chroot
                    .sh("set -e; f=/run/bakery-step; cat > \"$f\"; chmod 0755 \"$f\"; BAKERY_LAYER=\"$1\" \"$f\"; rm -f \"$f\"", &[layer], Some(body))
                    .map(|_| ())
            }
            Step::Run { command, .. } => self.chroot.sh(command, &[], None).map(|_| ()),
            Step::Enable { units, .. } => {
                let mut argv = vec!["systemctl", "enable"];
                argv.extend(units.iter().map(String::as_str));
                self.chroot
                    .run(self.chroot.command(&argv), None, "systemctl enable")
                    .map(|_| ())
            }
            Step::CopyFile {
                src, dest, mode, ..
            } => {
                let body =
                    std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
                self.write_file(dest, body, *mode)
            }
            Step::WriteFile {
                dest,
                content,
                mode,
            } => self.write_file(dest, content.clone().into_bytes(), *mode),
            Step::Grub => self.grub(),
            Step::Generalize => self.generalize(),
        }
    }

    /// Write through the chroot's own `install`, so a symlink in the image cannot redirect the write onto the host.
    fn write_file(&self, dest: &Path, body: Vec<u8>, mode: u32) -> Result<()> {
        let dest = dest.display().to_string();
        let mode = format!("{mode:o}");
        self.chroot
            .sh(
                "install -D -m \"$1\" /dev/stdin \"$2\"",
                &[&mode, &dest],
                Some(body),
            )
            .map(|_| ())
    }

    fn grub(&self) -> Result<()> {
        let disk = format!(
            "/dev/{}",
            self.plan.disk.file_name().unwrap().to_string_lossy()
        );
        self.chroot.sh(
            "set -e
             grub-install --target=i386-pc --modules='part_gpt ext2' \"$1\"
             grub-mkconfig -o /boot/grub/grub.cfg
             grep -q 'root=UUID=' /boot/grub/grub.cfg || { echo 'error: grub.cfg does not boot by UUID' >&2; exit 1; }",
            &[&disk],
            None,
        )?;
        Ok(())
    }

    fn generalize(&self) -> Result<()> {
        self.chroot.sh(
            "set -e
             : > /etc/machine-id
             rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
             if command -v cloud-init >/dev/null; then cloud-init clean --logs >/dev/null 2>&1 || true; fi
             apt-get clean
             rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
             find /var/log -type f -exec truncate -s 0 {} +",
            &[],
            None,
        )?;
        Ok(())
    }

    /// Whether `apt-get clean` has anything to remove (downloaded .debs, apt's binary caches);
    /// when it has not, the seal skips it (a tenth of a second on a small bake). Read-only
    /// look at the image, so a symlink inside it cannot redirect anything.
    fn apt_cache_dirty(&self) -> bool {
        let any = |dir: &str, keep: &dyn Fn(&str) -> bool| {
            std::fs::read_dir(self.chroot.path(dir))
                .map(|rd| rd.flatten().any(|e| keep(&e.file_name().to_string_lossy())))
                .unwrap_or(false)
        };
        any("/var/cache/apt", &|n| n.ends_with(".bin"))
            || any("/var/cache/apt/archives", &|n| n.ends_with(".deb"))
            || any("/var/cache/apt/archives/partial", &|_| true)
    }

    /// End of the bake: drop package caches, read the facts the manifest reports.
    pub fn seal(&mut self) -> Result<()> {
        if self.package_manager() == PackageManager::Apt {
            if self.apt_cache_dirty() {
                self.chroot.sh("apt-get clean", &[], None)?;
            }
            if self.apt_lists_were_empty == Some(true) {
                self.chroot.sh(
                    "find /var/lib/apt/lists -mindepth 1 -maxdepth 1 -type f ! -name lock -delete",
                    &[],
                    None,
                )?;
            }
        }
        let os = std::fs::read_to_string(self.chroot.path("/etc/os-release")).unwrap_or_default();
        self.facts.os = os_pretty_name(&os);
        if self.facts.arch.is_none() {
            self.facts.arch = self.image_arch();
        }
        if let Ok(text) = self
            .chroot
            .sh("cat /etc/bakery/base.json 2>/dev/null || true", &[], None)
        {
            self.facts.base = serde_json::from_str(&text).ok();
        }
        Ok(())
    }
}

/// The session log from byte `from` on (what the failed step printed), at most its last 256 KiB.
fn read_from(log: &Path, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.max(len.saturating_sub(256 << 10));
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_ok() {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Free (for root) and total bytes of the filesystem at `p`.
fn fs_space(p: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(p) {
        Ok(s) => (
            s.blocks_free() * s.fragment_size(),
            s.blocks() * s.fragment_size(),
        ),
        Err(_) => (0, 0),
    }
}

/// Whether the simulated plan (`apt-get -s install` output) only unpacks the step's own .deb
/// files and removes nothing: then no download is needed and `dpkg -i` does the same install.
pub fn offline_plan(sim: &str, local: &[String]) -> bool {
    let inst: Vec<&str> = sim
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    let removes = sim.lines().any(|l| l.starts_with("Remv "));
    !removes && !inst.is_empty() && inst.iter().all(|n| local.iter().any(|l| l == n))
}

fn deb_names(pkgs: &[super::plan::PackageCheck], files: &[PathBuf]) -> Vec<String> {
    let _ = pkgs;
    files
        .iter()
        .filter_map(|f| crate::package::inspect(f).ok().map(|p| p.name))
        .collect()
}

pub fn os_pretty_name(os_release: &str) -> Option<String> {
    let map: BTreeMap<&str, &str> = os_release
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    map.get("PRETTY_NAME")
        .map(|v| v.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn offline_plan_only_when_apt_would_unpack_just_the_local_debs() {
        let local = vec!["app".to_string(), "lib-app".to_string()];
        let ok = "NOTE: This is only a simulation!\nInst app (1.0-1 local-deb [all])\nInst lib-app (2 local-deb [all])\nConf app (1.0-1 local-deb [all])\n";
        assert!(super::offline_plan(ok, &local));
        let needs_download =
            "Inst curl (7.88 Debian:12/stable [amd64])\nInst app (1.0-1 local-deb [all])\n";
        assert!(!super::offline_plan(needs_download, &local));
        let removes = "Remv old-app [0.9]\nInst app (1.0-1 local-deb [all])\n";
        assert!(!super::offline_plan(removes, &local));
        assert!(!super::offline_plan(
            "0 upgraded, 0 newly installed\n",
            &local
        ));
    }

    #[test]
    fn pretty_name() {
        let t = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            super::os_pretty_name(t).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(super::os_pretty_name(""), None);
    }
}
