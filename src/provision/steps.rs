//! Carrying out each provisioning step inside the chroot.
//!
//! Packages by name ([`Step::InstallNamed`]) are installed in the user's apt spelling
//! (`name`, `name=version`, `name/release`, `name:arch`) or dnf's ([`dnf_spelling`]); what was
//! installed is read back: the version and architecture from the package database (checked
//! against a pin, a release's choice and the architecture asked for), and the SHA-256 of the
//! archive from the apt package index, the hash apt verified the download against (see
//! `Runner::index_sha256` for why the index rather than the downloaded file). Only the packages
//! the user named get a checksum; what apt pulled in with them is in `package_changes` when
//! it changed the base. On rpm images no checksum is recorded yet: the counterpart would be
//! the repository metadata's package checksum (`primary.xml`, what dnf verifies a download
//! against), not an rpm header digest, and no test here exercises dnf by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use sha2::Digest;

use super::chroot::{Chroot, CommandFailed};
use super::failure::{self, Cause};
use super::generalize;
use super::pkgdb::{self, Snapshot};
use super::plan::{AptRelease, Bootstrap, ImageFacts, NamedInstall, SessionPlan, Step};
use super::rpm;
use crate::input;
use crate::package::deb822;
use crate::package::spec::PackageSpec;
use crate::package::version::{compare_deb, compare_rpm};
use crate::package::PackageKind;

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
    /// The base's packages and watched per-machine files, recorded before the first step
    /// (bakes only).
    base_packages: Option<Snapshot>,
    base_files: Option<generalize::Snapshot>,
    pub facts: ImageFacts,
}

impl<'a> Runner<'a> {
    pub fn new(chroot: &'a mut Chroot, plan: &'a SessionPlan) -> Runner<'a> {
        Runner {
            chroot,
            plan,
            apt_updated: false,
            apt_lists_were_empty: None,
            base_packages: None,
            base_files: None,
            facts: ImageFacts::default(),
        }
    }

    /// Before the first step of a bake: record the base's packages and per-machine files.
    pub fn begin(&mut self) {
        if self.plan.policy.is_none() {
            return;
        }
        self.base_packages = Some(self.packages_now());
        if let Ok(fs) = self.chroot.fs() {
            self.base_files = Some(generalize::take(fs));
        }
    }

    /// What the image's package databases hold now (dpkg's read directly; rpm's asked).
    fn packages_now(&self) -> Snapshot {
        let deb = self
            .chroot
            .fs()
            .ok()
            .and_then(pkgdb::read_dpkg)
            .map(|t| pkgdb::parse_dpkg_status(&t))
            .unwrap_or_default();
        const QF: &str = "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE}\\n";
        let rpm = if self.has("/usr/bin/rpm") {
            self.chroot
                .output(self.chroot.command(&["rpm", "-qa", "--qf", QF]), "rpm -qa")
                .ok()
        } else if self.has(rpm::DBPATH) {
            let mut c = Command::new("rpm");
            c.arg("--root").arg(&self.chroot.root).args([
                "--dbpath",
                rpm::DBPATH,
                "-qa",
                "--qf",
                QF,
            ]);
            c.output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            None
        };
        Snapshot {
            deb,
            rpm: rpm.map(|t| pkgdb::parse_rpm_list(&t)).unwrap_or_default(),
        }
    }

    /// Refuse one of this step's own packages that is older than the version in the image
    /// (unless downgrades are allowed), before the package manager runs: the same answer on
    /// every path, whatever the package's dependencies.
    fn check_downgrades(&self, files: &[PathBuf]) -> Result<()> {
        let Some(policy) = &self.plan.policy else {
            return Ok(());
        };
        if policy.allow_downgrade {
            return Ok(());
        }
        let now = self.packages_now();
        for f in files {
            let Ok(p) = crate::package::inspect(f) else {
                continue;
            };
            let (installed, older) = match p.kind {
                PackageKind::Deb => match now.deb.get(&p.name) {
                    Some(v) => (v, compare_deb(&p.evr(), v).is_lt()),
                    None => continue,
                },
                PackageKind::Rpm => match now.rpm.get(&p.name) {
                    Some(v) => (v, compare_rpm(&p.evr(), v).is_lt()),
                    None => continue,
                },
            };
            if older {
                return Err(input!(
                    "{} {} is older than the {} the image has: a downgrade, refused; pass --allow-downgrade (recipe: `allow-downgrade: true`) to install it anyway",
                    p.name,
                    p.evr(),
                    installed
                ));
            }
        }
        Ok(())
    }

    /// After a step: every removal, upgrade and downgrade of the base's packages so far, and
    /// the policy's verdict on them.
    fn check_changes(&mut self) -> Result<()> {
        let (Some(policy), Some(base)) = (&self.plan.policy, &self.base_packages) else {
            return Ok(());
        };
        let changes = pkgdb::changes(base, &self.packages_now());
        let refused = pkgdb::refused(&changes, policy);
        if !refused.is_empty() {
            return Err(input!("{}", pkgdb::refusal_message(&refused)));
        }
        self.facts.package_changes = changes;
        Ok(())
    }

    fn allow_downgrade(&self) -> bool {
        self.plan.policy.as_ref().is_some_and(|p| p.allow_downgrade)
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
        self.chroot.run_host(c, "debootstrap")?;
        // debootstrap copies the host's resolv.conf and hostname into the new system: neither
        // is the image's (the session provides DNS on its tmpfs; the base names itself).
        let fs = self.chroot.fs()?;
        for f in ["/etc/resolv.conf", "/etc/hostname"] {
            let host = std::fs::read(f).unwrap_or_default();
            let is_file = fs
                .lstat(f)
                .is_ok_and(|e| e.kind == crate::sys::inroot::Kind::File);
            if is_file && fs.read(f).is_ok_and(|b| b == host) {
                fs.remove(f)?;
            }
        }
        Ok(())
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

    /// Whether the image has apt package lists (a generalized base has none).
    fn apt_has_lists(&self) -> bool {
        std::fs::read_dir(self.chroot.path("/var/lib/apt/lists"))
            .map(|rd| {
                rd.flatten().any(|e| {
                    e.file_name().to_string_lossy().ends_with("Packages")
                        || e.file_name().to_string_lossy().ends_with("Packages.lz4")
                })
            })
            .unwrap_or(false)
    }

    fn apt_update(&mut self) -> Result<()> {
        if !self.apt_updated {
            if self.apt_lists_were_empty.is_none() {
                self.apt_lists_were_empty = Some(!self.apt_has_lists());
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
        let what: Vec<&str> = what.iter().map(String::as_str).collect();
        // Captured, never classified: before `apt-get update` apt calls whatever it has no list
        // for "not installable", which says nothing about the real run.
        let Some(out) = self.apt_simulate(&what) else {
            return false;
        };
        offline_plan(&out, local)
    }

    /// Whether the step's .deb files can go straight to `dpkg -i` without asking apt
    /// ([`crate::package::debrel::dpkg_alone_suffices`]: every dependency installed, nothing
    /// conflicting, nothing to upgrade): the plain case of an app on a base or layer that already
    /// holds what it needs.
    fn dpkg_alone_suffices(&self, debs: &[crate::package::PackageInfo]) -> bool {
        let Ok(fs) = self.chroot.fs() else {
            return false;
        };
        pkgdb::read_dpkg(fs)
            .is_some_and(|status| crate::package::debrel::dpkg_alone_suffices(debs, &status))
    }

    fn apt_install(&mut self, what: &[String], local: &[String]) -> Result<()> {
        if self.resolvable_offline(what, local) {
            // Everything apt would unpack is in `what` and every dependency is already in the
            // image: dpkg installs the files as apt would, without apt first re-reading and
            // hashing each .deb (most of a local bake's package step for a large package).
            return self.dpkg_install(what);
        }
        self.apt_update()?;
        self.apt_get_install(what)
    }

    /// `dpkg -i` of `what` (file paths inside the image), with apt's answers to conffile
    /// prompts.
    fn dpkg_install(&self, what: &[String]) -> Result<()> {
        let mut argv: Vec<&str> = vec!["dpkg", "--force-confdef", "--force-confold", "-i"];
        argv.extend(what.iter().map(String::as_str));
        self.chroot
            .run(self.chroot.command(&argv), None, "dpkg -i")
            .map(|_| ())
    }

    /// `apt-get install` of `what` (file paths inside the image, `name`, `name=version`).
    fn apt_get_install(&self, what: &[String]) -> Result<()> {
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
        if self.allow_downgrade() {
            argv.push("--allow-downgrades");
        }
        argv.extend(what.iter().map(String::as_str));
        self.chroot
            .run(self.chroot.command(&argv), None, "apt-get install")
            .map(|_| ())
    }

    /// Packages by name from the image's own sources, in any spelling of
    /// [`crate::package::spec::parse`] (`name`, `name=version`, `name/release`, `name:arch`).
    /// With apt, `apt-get install` takes them as spelled, after `apt-get update` only when the
    /// image has no lists (or the first try failed on lists that may be stale); an architecture
    /// the image does not have (native or added with `dpkg --add-architecture`) is refused first.
    /// With dnf/yum they are spelled as dnf does ([`dnf_spelling`]). A name, version or release
    /// the sources do not have is an input error naming `field`. The installed versions are read
    /// back from the package database: a pinned version must be the one installed, and a
    /// release's choice must be too (a simulation of the same request after the install must
    /// have nothing left to do). Each package's checksum is then read from the package index
    /// ([`Runner::index_sha256`]).
    fn install_named(&mut self, specs: &[String], field: &str) -> Result<()> {
        let pm = self.package_manager();
        let reqs: Vec<NamedRequest> = specs
            .iter()
            .map(|s| NamedRequest::parse(s).map_err(|e| input!("{field}: {e}")))
            .collect::<Result<_>>()?;
        let releases: Vec<&NamedRequest> = reqs.iter().filter(|r| r.release.is_some()).collect();
        let unknown = |e: anyhow::Error| -> anyhow::Error {
            let Some(out) = e
                .chain()
                .find_map(|c| c.downcast_ref::<CommandFailed>())
                .map(|f| f.output.clone())
            else {
                return e;
            };
            let lines = unknown_packages(&out);
            if lines.is_empty() {
                return e;
            }
            let paths = if releases.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} read as apt's name/release (no such file): write ./PATH for a file",
                    releases
                        .iter()
                        .map(|r| format!("`{}`", r.spec))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            input!(
                "{field}: {} not in the image's package sources ({}); check the name, version, release and architecture (`apt-cache policy NAME` / `dnf list NAME` in the image lists what its sources have), or add the source with a layer{paths}",
                specs.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "),
                lines.join("; ")
            )
        };
        let kind = match pm {
            PackageManager::Apt => {
                let arches = self.dpkg_arches()?;
                if let Some(msg) = foreign_arch_refusal(&reqs, &arches) {
                    return Err(input!("{field}: {msg}"));
                }
                if !self.apt_has_lists() {
                    self.apt_update()?;
                }
                let mut r = self.apt_get_install(specs);
                if r.is_err() && !self.apt_updated {
                    self.apt_update()?;
                    r = self.apt_get_install(specs);
                }
                r.map_err(unknown)?;
                PackageKind::Deb
            }
            PackageManager::Dnf | PackageManager::Yum => {
                let what = reqs
                    .iter()
                    .map(|r| dnf_spelling(r).map_err(|e| input!("{field}: {e}")))
                    .collect::<Result<Vec<_>>>()?;
                self.dnf_install(&what, pm).map_err(unknown)?;
                PackageKind::Rpm
            }
            PackageManager::None => {
                return Err(input!(
                    "{field}: {} is a package name, but the image has no apt-get, dnf or yum to install it from its sources; pass the package file or URL instead",
                    specs.join(", ")
                ))
            }
        };
        let mut names: Vec<&str> = reqs.iter().map(|r| r.name.as_str()).collect();
        names.dedup();
        let query = match kind {
            PackageKind::Deb => {
                "dpkg-query -W -f='${Package} ${Version} ${Architecture}\\n' \"$@\""
            }
            PackageKind::Rpm => {
                "rpm -q --qf '%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE} %{ARCH}\\n' \"$@\""
            }
        };
        let out = self
            .chroot
            .output(
                self.chroot
                    .command(&[&["sh", "-c", query, "sh"], &names[..]].concat()),
                "package query",
            )
            .context("reading the installed versions back from the package database")?;
        let rows: Vec<(&str, &str, &str)> = out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?, w.next()?, w.next()?))
            })
            .collect();
        for r in &reqs {
            // Of several architectures installed (multiarch), the one asked for, else the first.
            let Some(&(n, v, a)) = rows
                .iter()
                .filter(|(n, _, _)| *n == r.name)
                .find(|(_, _, a)| r.arch.as_deref().is_none_or(|want| arch_matches(want, a)))
            else {
                anyhow::bail!(
                    "{} is not installed after the step, though the package manager reported success",
                    r.spec
                );
            };
            let have = v.strip_prefix("0:").unwrap_or(v).to_string();
            if let Some(pin) = &r.version {
                let same = match kind {
                    PackageKind::Deb => compare_deb(&have, pin).is_eq(),
                    PackageKind::Rpm => {
                        have == *pin
                            || have.starts_with(&format!("{pin}-"))
                            || compare_rpm(&have, pin).is_eq()
                    }
                };
                if !same {
                    anyhow::bail!(
                        "{field}: {} was asked for, but the package manager installed {n} {have}",
                        r.spec
                    );
                }
            }
            if r.release.is_some() && kind == PackageKind::Deb {
                if let Some(offered) = self.apt_would_install(&r.spec, &r.name) {
                    anyhow::bail!(
                        "{field}: {} was asked for, whose version is {} {offered}, but the package manager installed {have}",
                        r.spec,
                        r.name
                    );
                }
            }
            let sha256 = match kind {
                PackageKind::Deb => self.index_sha256(n, &have, a),
                PackageKind::Rpm => None,
            };
            if sha256.is_none() && kind == PackageKind::Deb {
                tracing::warn!(
                    "{n} {have} ({a}): the image's package index lists no SHA-256 for it (the version is only in the package database); the manifest records none"
                );
            }
            self.facts.installed.insert(n.to_string(), have.clone());
            self.facts.named.insert(
                n.to_string(),
                NamedInstall {
                    kind,
                    version: have,
                    arch: a.to_string(),
                    sha256,
                },
            );
        }
        Ok(())
    }

    /// The image's dpkg architectures: the native one first, then those added with
    /// `dpkg --add-architecture`.
    fn dpkg_arches(&self) -> Result<Vec<String>> {
        let out = self
            .chroot
            .output(
                self.chroot.command(&[
                    "sh",
                    "-c",
                    "dpkg --print-architecture && dpkg --print-foreign-architectures",
                ]),
                "dpkg --print-architecture",
            )
            .context("reading the image's architectures (dpkg)")?;
        Ok(out.split_whitespace().map(str::to_string).collect())
    }

    /// The SHA-256 of the archive of `name` `version` `arch` as the image's apt package index
    /// lists it (`apt-cache show NAME:ARCH=VERSION`, its `SHA256:` field), or `None`.
    ///
    /// Why the index and not the downloaded file: the index entry is what apt verified the
    /// download against before dpkg unpacked it (apt refuses an archive whose hash differs),
    /// and the index itself is verified through the `SHA256` list of the source's Release
    /// file, signed unless the source is marked `trusted=yes`. So it is the checksum of the
    /// exact archive installed, from the same chain of trust as the install, and it is there
    /// whether or not apt kept the file (`APT::Keep-Downloaded-Packages`, an archive already
    /// in the cache). Hashing `/var/cache/apt/archives/*.deb` would depend on both, and the
    /// seal removes those files anyway (`apt-get clean`). A version that only the package
    /// database knows (the base's, no longer in the sources) has no index entry: `None`.
    fn index_sha256(&self, name: &str, version: &str, arch: &str) -> Option<String> {
        let what = format!("{name}:{arch}={version}");
        let argv = [
            "apt-cache",
            "-o",
            "Dir::Cache::pkgcache=",
            "-o",
            "Dir::Cache::srcpkgcache=",
            "show",
            what.as_str(),
        ];
        let out = self
            .chroot
            .output(self.chroot.command(&argv), "apt-cache show")
            .ok()?;
        index_sha256(&out, name, version, arch)
    }

    /// The version apt would still install for `spec` (a simulation, nothing changed), or
    /// `None` when it has nothing to do for `name`: what was installed is what `spec` selects.
    fn apt_would_install(&self, spec: &str, name: &str) -> Option<String> {
        let out = self.apt_simulate(&[spec])?;
        simulated_version(&out, name)
    }

    /// The output of `apt-get -s install --no-install-recommends WHAT` in the image (a
    /// simulation: nothing changes), or `None` when it fails. In-memory caches: a simulation
    /// leaves no pkgcache.bin behind for the seal to clean.
    fn apt_simulate(&self, what: &[&str]) -> Option<String> {
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
        argv.extend_from_slice(what);
        self.chroot
            .output(self.chroot.command(&argv), "apt-get -s install")
            .ok()
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
            // The database bakery keeps in the image (Debian's rpm defaults to ~/.rpmdb).
            c.arg("--root")
                .arg(&self.chroot.root)
                .args(["--dbpath", rpm::DBPATH])
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

    /// The package manager's word is checked: each package of the step must now be installed at
    /// its own version (dnf, for one, answers "Nothing to do" for an older local package and
    /// exits 0).
    fn verify_installed(&self, files: &[PathBuf]) -> Result<()> {
        for f in files {
            let Ok(p) = crate::package::inspect(f) else {
                continue;
            };
            // rpm -q reports `version-release` (no epoch); dpkg-query the whole version.
            let want = match p.kind {
                PackageKind::Deb => p.evr(),
                PackageKind::Rpm => p.full_version(),
            };
            let same = |have: &str| match p.kind {
                PackageKind::Deb => compare_deb(have, &want).is_eq(),
                PackageKind::Rpm => compare_rpm(have, &want).is_eq(),
            };
            match self.facts.installed.get(&p.name) {
                Some(have) if same(have) => {}
                Some(have) => anyhow::bail!(
                    "{}: the package manager left {} {have} installed, not {want} from this file",
                    f.display(),
                    p.name
                ),
                None => anyhow::bail!(
                    "{}: {} is not installed after the step, though the package manager reported success",
                    f.display(),
                    p.name
                ),
            }
        }
        Ok(())
    }

    /// Run one step; a failure whose output shows an input problem (unmet dependencies, a
    /// refused downgrade or removal, the image out of space) becomes an input error that says
    /// what to change, and a failing maintainer script shows its own last lines. Only the output
    /// of the command that failed is read. After a step that may change packages, the base's
    /// packages are checked against the policy.
    pub fn step(&mut self, step: &Step) -> Result<()> {
        if let Step::InstallDebs { files } | Step::InstallRpms { files } = step {
            self.check_downgrades(files)?;
        }
        let r = self.run_step(step);
        if let Err(e) = r {
            return Err(self.explain_failure(e));
        }
        if !matches!(
            step,
            Step::Enable { .. } | Step::CopyFile { .. } | Step::WriteFile { .. }
        ) {
            self.check_changes()?;
        }
        Ok(())
    }

    fn explain_failure(&self, e: anyhow::Error) -> anyhow::Error {
        if e.chain()
            .any(|c| c.is::<crate::error::Interrupted>() || c.is::<crate::error::InputError>())
        {
            return e;
        }
        let Some(output) = e
            .chain()
            .find_map(|c| c.downcast_ref::<CommandFailed>())
            .map(|f| f.output.clone())
        else {
            return e;
        };
        match failure::classify(&output) {
            Some(Cause::Unmet(lines)) => input!(
                "dependencies cannot be met from the image's package sources: {}; pass the packages that provide them with --package (they install in the same transaction) or add a layer whose sources have them",
                lines.join("; ")
            ),
            Some(Cause::NoSpace) => {
                let (free, total) = fs_space(&self.chroot.root);
                input!(
                    "the image's root filesystem ({} MiB, {} MiB free after the failed step) ran out of space (No space left on device): the base is too small for what this step installs; use a base with a bigger disk (`size:` in the base YAML) or install less",
                    total >> 20,
                    free >> 20
                )
            }
            Some(Cause::Downgrade(names)) => input!(
                "the package manager would downgrade {}: refused; pass --allow-downgrade (recipe: `allow-downgrade: true`) to allow it",
                if names.is_empty() { "packages".to_string() } else { names.join(", ") }
            ),
            Some(Cause::Removal(names)) => input!(
                "it would remove essential package(s) {}: refused; fix the package's Conflicts/Breaks",
                names.join(", ")
            ),
            Some(Cause::Script(f)) => anyhow::anyhow!("{}", f.message()),
            None => e,
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
            Step::InstallNamed { packages, field } => self.install_named(packages, field),
            Step::InstallDebs { files } => {
                if self.package_manager() != PackageManager::Apt {
                    return Err(input!(
                        "{}: .deb packages need a base image with apt; this one has none",
                        files[0].display()
                    ));
                }
                let staged = self.stage(files)?;
                let debs: Vec<_> = files
                    .iter()
                    .filter_map(|f| crate::package::inspect(f).ok())
                    .collect();
                let names: Vec<String> = debs.iter().map(|p| p.name.clone()).collect();
                let r = if debs.len() == files.len() && self.dpkg_alone_suffices(&debs) {
                    self.dpkg_install(&staged)
                } else {
                    self.apt_install(&staged, &names)
                };
                let _ = std::fs::remove_dir_all(self.chroot.path("/tmp/bakery-packages"));
                r?;
                self.record_versions("deb", &names);
                self.verify_installed(files)
            }
            Step::InstallRpms { files } => {
                let staged = self.stage(files)?;
                let r = match self.package_manager() {
                    pm @ (PackageManager::Dnf | PackageManager::Yum) => {
                        self.dnf_install(&staged, pm)
                    }
                    _ if self.has("/usr/bin/rpm") => {
                        let mut argv = vec!["rpm", "-Uvh"];
                        if self.allow_downgrade() {
                            argv.push("--oldpackage");
                        }
                        argv.extend(staged.iter().map(String::as_str));
                        self.chroot
                            .run(self.chroot.command(&argv), None, "rpm -U")
                            .map(|_| ())
                    }
                    _ => rpm::install_with_host_rpm(self.chroot, files, self.allow_downgrade()),
                };
                let _ = std::fs::remove_dir_all(self.chroot.path("/tmp/bakery-packages"));
                r?;
                let names = rpm::names(files)?;
                self.record_versions("rpm", &names);
                self.verify_installed(files)
            }
            Step::Script { layer, path } => {
                let body =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                self.chroot
                    .sh("set -e; f=/run/bakery-step; cat > \"$f\"; chmod 0755 \"$f\"; BAKERY_LAYER=\"$1\" \"$f\" </dev/null; rm -f \"$f\"", &[layer], Some(body))
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
        self.sync_esp(true)
    }

    /// Bring the ESP (a hybrid disk's; none on a BIOS-only disk, which is left as it is, e.g.
    /// a base built by an older bakery and refreshed) in line with the image's shim and GRUB
    /// packages, through mtools (see [`super::esp`]). `required`: the GRUB step, where a
    /// missing signed package on a disk with an ESP is an error.
    fn sync_esp(&self, required: bool) -> Result<()> {
        let fs = self.chroot.fs()?;
        let fstab = fs.read_string("/etc/fstab").unwrap_or_default();
        let Some(esp) = super::esp::find(&fstab, &self.plan.partitions) else {
            return Ok(());
        };
        let root_uuid = self
            .plan
            .partitions
            .iter()
            .find(|p| p.number == self.plan.root_partition)
            .and_then(|p| p.fs.as_ref())
            .and_then(|f| f.uuid.clone())
            .context("the root filesystem has no UUID")?;
        if self.esp_recorded(&root_uuid) {
            self.chroot.note(
                "ESP up to date (shim, GRUB and the root UUID are those it was written from)",
            );
            return Ok(());
        }
        let out = self
            .chroot
            .sh(
                super::esp::SYNC_SCRIPT,
                &[
                    &esp.display().to_string(),
                    &root_uuid,
                    if required { "required" } else { "optional" },
                ],
                None,
            )
            .context("updating the EFI System Partition")?;
        tracing::info!("{}", out.trim());
        Ok(())
    }

    /// The script's first check, made here without its four processes in the chroot (0.08 s
    /// a bake): the ESP is not mounted, mtools is there, and [`super::esp::RECORD`] names the
    /// image's shim, GRUB (and MokManager) and `root_uuid`. Anything else (a file missing, a
    /// binary changed, the ESP mounted) is left to the script, which says or fixes it.
    fn esp_recorded(&self, root_uuid: &str) -> bool {
        use super::esp::{self, GRUB, MOK_MANAGER, SHIM};
        use std::os::unix::fs::MetadataExt;
        let Ok(fs) = self.chroot.fs() else {
            return false;
        };
        // `mountpoint`: another filesystem than its parent's.
        let dev = |p: &str| std::fs::symlink_metadata(self.chroot.path(p)).map(|m| m.dev());
        let mounted = match (dev(esp::MOUNT_POINT), dev("/boot")) {
            (Ok(m), Ok(parent)) => m != parent,
            _ => false,
        };
        if mounted || !fs.resolves("/usr/bin/mcopy") {
            return false;
        }
        let Ok(record) = fs.read_string(esp::RECORD) else {
            return false;
        };
        let mut files = Vec::new();
        for (path, needed) in [(SHIM, true), (GRUB, true), (MOK_MANAGER, false)] {
            match fs.read(path) {
                Ok(bytes) => files.push((path, sha2::Sha256::digest(&bytes).into())),
                Err(_) if !needed => {}
                Err(_) => return false,
            }
        }
        record.trim_end_matches('\n') == esp::fingerprint(&files, root_uuid)
    }

    fn generalize(&self) -> Result<()> {
        self.chroot.sh(
            "set -e
             : > /etc/machine-id
             rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
             rm -f /var/lib/systemd/random-seed /var/lib/urandom/random-seed /var/lib/systemd/credential.secret
             rm -f /etc/udev/rules.d/70-persistent-net.rules /root/.bash_history
             find /var/tmp -mindepth 1 -delete
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

    /// The Release files this session's `apt-get update` read, by URI and SHA-256 (before
    /// the seal drops the lists): `apt-get update --print-uris` names each source's `InRelease`
    /// and the list file apt keeps it in (a source without InRelease keeps `Release`).
    fn apt_releases(&self) -> Vec<AptRelease> {
        let Ok(fs) = self.chroot.fs() else {
            return vec![];
        };
        let argv = ["apt-get", "-q", "update", "--print-uris"];
        let Ok(out) = self
            .chroot
            .output(self.chroot.command(&argv), "apt-get update --print-uris")
        else {
            return vec![];
        };
        release_uris(&out)
            .into_iter()
            .map(|(uri, list)| {
                let found = [(uri.clone(), list.clone())]
                    .into_iter()
                    .chain(
                        uri.strip_suffix("InRelease")
                            .zip(list.strip_suffix("InRelease"))
                            .map(|(u, l)| (format!("{u}Release"), format!("{l}Release"))),
                    )
                    .find_map(|(u, l)| {
                        fs.read(&format!("/var/lib/apt/lists/{l}"))
                            .ok()
                            .map(|body| (u, body))
                    });
                match found {
                    Some((uri, body)) => AptRelease {
                        uri,
                        sha256: Some(hex::encode(sha2::Sha256::digest(&body))),
                    },
                    None => AptRelease { uri, sha256: None },
                }
            })
            .collect()
    }

    /// End of the bake: drop package caches, read the facts the manifest reports.
    pub fn seal(&mut self) -> Result<()> {
        if self.apt_updated {
            self.facts.apt_releases = self.apt_releases();
        }
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
        if self.facts.arch.is_none() {
            self.facts.arch = self.image_arch();
        }
        // Package hooks (shim, GRUB upgrades) could not reach the unmounted ESP.
        self.sync_esp(false)?;
        // bakery's own changes go first (policy-rc.d, resolv.conf), then what the bake's
        // scripts made per machine or per host (see `generalize`).
        self.chroot.restore()?;
        self.facts.warnings.append(&mut self.chroot.notes);
        let fs = self.chroot.fs()?;
        if let Some(before) = &self.base_files {
            let plan = generalize::plan(before, &generalize::take(fs));
            let done = generalize::apply(fs, &plan).context("keeping the image generalized")?;
            for d in &done {
                tracing::info!("seal: {d}");
            }
            for w in &plan.warnings {
                tracing::warn!("{w}");
            }
            self.facts.sealed = done;
            self.facts.warnings.extend(plan.warnings);
        }
        let os = fs.read_string("/etc/os-release").unwrap_or_default();
        self.facts.os = os_pretty_name(&os);
        self.facts.base = fs
            .read_string("/etc/bakery/base.json")
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        Ok(())
    }
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

/// The package manager's lines saying a name, version or release is not in the image's sources
/// (apt: "Unable to locate package", "Version ... was not found", "Release ... was not found",
/// "has no installation candidate"; dnf: "No match for argument", "Unable to find a match").
pub fn unknown_packages(output: &str) -> Vec<String> {
    output
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.contains("Unable to locate package")
                || (l.starts_with("E: Version") && l.contains("was not found"))
                || (l.starts_with("E: Release") && l.contains("was not found"))
                || l.contains("has no installation candidate")
                || l.contains("No match for argument")
                || l.contains("Unable to find a match")
        })
        .map(|l| {
            l.trim_start_matches("E: ")
                .trim_start_matches("Error: ")
                .to_string()
        })
        .collect()
}

/// One package named for the image's sources, as the session installs it: the spec as the
/// user gave it (apt's spelling) and its parts ([`crate::package::spec::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRequest {
    pub spec: String,
    pub name: String,
    pub arch: Option<String>,
    pub version: Option<String>,
    pub release: Option<String>,
}

impl NamedRequest {
    /// Parse a spec of a [`Step::InstallNamed`]; anything but a name is refused (it was
    /// classified on the host already, so this is a plan that did not come from bakery).
    pub fn parse(spec: &str) -> Result<NamedRequest, String> {
        match crate::package::spec::parse(spec, false) {
            Ok(PackageSpec::Name {
                name,
                arch,
                version,
                release,
            }) => Ok(NamedRequest {
                spec: spec.to_string(),
                name,
                arch,
                version,
                release,
            }),
            Ok(_) => Err(format!("`{spec}` is not a package name")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// apt's architecture wildcards (`name:any`, `name:native`, apt-get(8)): no architecture of
/// their own to check.
const APT_ARCH_WILDCARDS: [&str; 3] = ["all", "any", "native"];

/// Whether the package database's architecture `have` satisfies `name:want`: the same, an
/// apt wildcard, or an architecture-independent package (dpkg's `all`, rpm's `noarch`), which
/// apt and dnf install for any of the image's architectures.
pub fn arch_matches(want: &str, have: &str) -> bool {
    want == have || APT_ARCH_WILDCARDS.contains(&want) || have == "all" || have == "noarch"
}

/// The refusal (without the field) for the first request whose architecture the image does
/// not have, or `None`. `arches`: the image's dpkg architectures, native first (apt's `all`,
/// `any` and `native` are always accepted).
pub fn foreign_arch_refusal(reqs: &[NamedRequest], arches: &[String]) -> Option<String> {
    let r = reqs.iter().find(|r| {
        r.arch
            .as_deref()
            .is_some_and(|a| !APT_ARCH_WILDCARDS.contains(&a) && !arches.iter().any(|x| x == a))
    })?;
    let a = r.arch.as_deref().unwrap_or_default();
    let have = match arches {
        [] => "none".to_string(),
        [native] => format!("{native} only"),
        [native, foreign @ ..] => format!("{native}, and {} added", foreign.join(", ")),
    };
    Some(format!(
        "`{}` asks for architecture {a}, which the image does not have ({have}); use one it has, or add {a} in a layer (`dpkg --add-architecture {a}`, with an apt source that has it); `apt-cache policy {}` in the image lists what its sources have",
        r.spec, r.name
    ))
}

/// The request in dnf's spelling: `name`, `name.arch`, `name-version`, `name-version.arch`
/// (dnf's NEVRA forms; the architecture in rpm's vocabulary, `x86_64`, `noarch`). A target
/// release is apt's alone: the error says what to do instead.
pub fn dnf_spelling(r: &NamedRequest) -> Result<String, String> {
    if let Some(rel) = &r.release {
        return Err(format!(
            "`{}`: a target release (`/{rel}`) is apt's; this image installs with dnf, which picks from every enabled repository: enable the repository in a layer and pass `{}` or `{}=VERSION`",
            r.spec, r.name, r.name
        ));
    }
    let mut s = r.name.clone();
    if let Some(v) = &r.version {
        s.push('-');
        s.push_str(v);
    }
    if let Some(a) = &r.arch {
        s.push('.');
        s.push_str(a);
    }
    Ok(s)
}

/// The `SHA256:` of the first stanza of `apt-cache show` output whose `Package`, `Version` and
/// `Architecture` are `name`, `version`, `arch` (lowercase hex), or `None` (no such stanza, or
/// one without a well-formed SHA-256: the package database's own record has none).
pub fn index_sha256(show: &str, name: &str, version: &str, arch: &str) -> Option<String> {
    deb822::paragraphs(show).find_map(|stanza| {
        let field = |key: &str| stanza.field(key);
        let matches = field("Package") == Some(name)
            && field("Version") == Some(version)
            && field("Architecture") == Some(arch);
        let sha = field("SHA256")?;
        (matches && sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| sha.to_ascii_lowercase())
    })
}

/// In `apt-get -s install` output, the version apt would install for `name` (an
/// `Inst NAME[:ARCH] [OLD] (NEW ...)` line), or `None` when it would install nothing for it.
pub fn simulated_version(sim: &str, name: &str) -> Option<String> {
    sim.lines().find_map(|l| {
        let rest = l.strip_prefix("Inst ")?;
        let (pkg, rest) = rest.split_once(' ')?;
        let pkg = pkg.split(':').next()?;
        if pkg != name {
            return None;
        }
        let (_, after) = rest.split_once('(')?;
        after.split_whitespace().next().map(str::to_string)
    })
}

/// The `InRelease` URIs and their list file names in `apt-get update --print-uris` output
/// (`'URI' FILE SIZE HASH` lines).
pub fn release_uris(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let uri = w.next()?.strip_prefix('\'')?.strip_suffix('\'')?;
            let file = w.next()?;
            uri.ends_with("/InRelease")
                .then(|| (uri.to_string(), file.to_string()))
        })
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
    fn unknown_names_are_found_in_apt_and_dnf_output() {
        let apt = "Reading package lists...\nE: Unable to locate package nosuch\nE: Version '9' for 'jq' was not found\nE: Package 'x' has no installation candidate\n";
        assert_eq!(
            super::unknown_packages(apt),
            [
                "Unable to locate package nosuch",
                "Version '9' for 'jq' was not found",
                "Package 'x' has no installation candidate"
            ]
        );
        assert_eq!(
            super::unknown_packages(
                "No match for argument: nosuch\nError: Unable to find a match: nosuch\n"
            )
            .len(),
            2
        );
        assert!(super::unknown_packages("E: Failed to fetch http://x 404 Not Found\n").is_empty());
        assert_eq!(
            super::unknown_packages("E: Release 'nosuch' for 'jq' was not found\n"),
            ["Release 'nosuch' for 'jq' was not found"]
        );
    }

    fn req(spec: &str) -> super::NamedRequest {
        super::NamedRequest::parse(spec).unwrap()
    }

    #[test]
    fn named_requests_keep_apt_spelling_and_refuse_what_is_not_a_name() {
        let r = req("jq:amd64=1.6-2.1+deb12u1");
        assert_eq!(
            (r.name.as_str(), r.arch.as_deref(), r.version.as_deref()),
            ("jq", Some("amd64"), Some("1.6-2.1+deb12u1"))
        );
        assert_eq!(r.spec, "jq:amd64=1.6-2.1+deb12u1");
        assert_eq!(
            req("jq/bookworm-backports").release.as_deref(),
            Some("bookworm-backports")
        );
        assert!(super::NamedRequest::parse("http://h/x.deb").is_err());
        assert!(super::NamedRequest::parse("jq@1").is_err());
    }

    #[test]
    fn an_architecture_the_image_lacks_is_refused_naming_what_to_do() {
        let arches = vec!["amd64".to_string()];
        assert_eq!(
            super::foreign_arch_refusal(
                &[req("jq"), req("libc6:amd64"), req("tzdata:all")],
                &arches
            ),
            None
        );
        let m = super::foreign_arch_refusal(&[req("jq"), req("jq:arm64")], &arches).unwrap();
        assert!(
            m.starts_with("`jq:arm64` asks for architecture arm64"),
            "{m}"
        );
        assert!(m.contains("amd64 only"), "{m}");
        assert!(m.contains("dpkg --add-architecture arm64"), "{m}");
        assert!(m.contains("apt-cache policy jq"), "{m}");
        let with_i386 = vec!["amd64".to_string(), "i386".to_string()];
        assert_eq!(
            super::foreign_arch_refusal(&[req("libc6:i386")], &with_i386),
            None
        );
        let m = super::foreign_arch_refusal(&[req("libc6:armhf")], &with_i386).unwrap();
        assert!(m.contains("amd64, and i386 added"), "{m}");
        assert!(super::arch_matches("amd64", "all"));
        assert!(!super::arch_matches("amd64", "i386"));
    }

    #[test]
    fn dnf_is_asked_in_its_own_spelling_and_a_release_is_refused() {
        assert_eq!(super::dnf_spelling(&req("jq")).unwrap(), "jq");
        assert_eq!(super::dnf_spelling(&req("jq:x86_64")).unwrap(), "jq.x86_64");
        assert_eq!(
            super::dnf_spelling(&req("jq=1.6-3.fc39")).unwrap(),
            "jq-1.6-3.fc39"
        );
        assert_eq!(
            super::dnf_spelling(&req("jq:x86_64=1.6-3.fc39")).unwrap(),
            "jq-1.6-3.fc39.x86_64"
        );
        let e = super::dnf_spelling(&req("jq/updates")).unwrap_err();
        assert!(e.contains("`jq/updates`") && e.contains("apt's"), "{e}");
    }

    #[test]
    fn the_index_checksum_is_the_stanza_of_the_version_installed() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let show = format!(
            "Package: jq\nVersion: 1.6-2.1+deb12u3\nArchitecture: amd64\nFilename: pool/j/jq_u3.deb\nSHA256: {a}\n\nPackage: jq\nVersion: 1.6-2.1+deb12u2\nArchitecture: amd64\nSHA256: {b}\n\nPackage: jq\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.6-2.1+deb12u1\n\n"
        );
        assert_eq!(
            super::index_sha256(&show, "jq", "1.6-2.1+deb12u3", "amd64"),
            Some(a.clone())
        );
        assert_eq!(
            super::index_sha256(&show, "jq", "1.6-2.1+deb12u2", "amd64"),
            Some(b.to_ascii_lowercase())
        );
        // Only the package database's record: no checksum.
        assert_eq!(
            super::index_sha256(&show, "jq", "1.6-2.1+deb12u1", "amd64"),
            None
        );
        assert_eq!(
            super::index_sha256(&show, "jq", "1.6-2.1+deb12u3", "i386"),
            None
        );
        assert_eq!(
            super::index_sha256(&show, "jq-dev", "1.6-2.1+deb12u3", "amd64"),
            None
        );
        let short = "Package: x\nVersion: 1\nArchitecture: all\nSHA256: abc\n";
        assert_eq!(super::index_sha256(short, "x", "1", "all"), None);
    }

    #[test]
    fn a_simulation_says_which_version_apt_would_still_install() {
        let sim = "NOTE: This is only a simulation!\nInst libjq1 [1.6-2.1+deb12u1] (1.6-2.1+deb12u2 Debian:12.15/oldstable [amd64])\nInst jq [1.6-2.1+deb12u1] (1.6-2.1+deb12u2 Debian:12.15/oldstable [amd64])\nInst libc6:i386 (2.36-9 Debian:12 [i386])\n";
        assert_eq!(
            super::simulated_version(sim, "jq").as_deref(),
            Some("1.6-2.1+deb12u2")
        );
        assert_eq!(
            super::simulated_version(sim, "libc6").as_deref(),
            Some("2.36-9")
        );
        assert_eq!(super::simulated_version(sim, "libjq"), None);
        assert_eq!(
            super::simulated_version(
                "jq is already the newest version (1.6-2.1).\n0 upgraded\n",
                "jq"
            ),
            None
        );
    }

    #[test]
    fn release_files_are_read_from_print_uris() {
        let out = "'http://deb.debian.org/debian/dists/bookworm/InRelease' deb.debian.org_debian_dists_bookworm_InRelease 0 \n'http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz' deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages 0 \n'file:/srv/repo/./InRelease' _srv_repo_._InRelease 0 \n";
        assert_eq!(
            super::release_uris(out),
            [
                (
                    "http://deb.debian.org/debian/dists/bookworm/InRelease".to_string(),
                    "deb.debian.org_debian_dists_bookworm_InRelease".to_string()
                ),
                (
                    "file:/srv/repo/./InRelease".to_string(),
                    "_srv_repo_._InRelease".to_string()
                )
            ]
        );
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
