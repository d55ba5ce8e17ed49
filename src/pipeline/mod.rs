//! The one bake pipeline. Every command that makes an image — `bakery bake` (file or AMI),
//! `base build` (file or AMI), `base refresh`, and the built-in base a first bake builds — is a
//! [`Job`] (what to install, how to name and tag it) run through the same five steps of
//! ARCHITECTURE.md:
//!
//! ```text
//!  source ──> device ──> chroot session ──> seal ──> sink
//!  source/   device.rs   session.rs        seal.rs   sink/
//! ```
//!
//! - [`source`]: where the disk comes from — a raw/qcow2 file (`file.rs`), the built-in base
//!   (`builtin.rs`), a base spec built with debootstrap (`debootstrap.rs`), a base AMI's snapshot
//!   read with the EBS direct APIs (`ami_direct.rs`) or as a volume attached to this EC2 host
//!   (`ami_volume.rs`). A source hands over a disk (file or block device) and what it knows of
//!   the base.
//! - [`device`]: the disk as a block device: a loop device and its partition mappings.
//! - [`session`]: the chroot session child mounts, provisions (layers, packages, plugins) and
//!   trims the image.
//! - [`seal`]: the disk is released (partitions unmapped, loop device or volume detached): what
//!   the sink gets is final.
//! - [`sink`]: where the image goes — a raw/qcow2 file (`file.rs`), or AMIs (`ami.rs`: upload
//!   or snapshot, register, share, copy to regions, tag, all under the cleanup ledger).
//!
//! Every stage passes through [`Stages::run`]: the signal check, the progress line, the timing
//! recorded in the manifest and the stage's fault point (`BAKERY_FAULT_LOG`/`BAKERY_FAIL_AT`),
//! so no path can skip them.
//!
//! `--disk-size` is [`device::grow`], between [`source`] and [`device::attach`]: the file (or
//! the volume, created that size) and its root partition grow there, the filesystem in the
//! session.
//!
//! Seams for what comes next (not implemented here):
//! - a UEFI+BIOS layout is a property of the debootstrap source's disk layout
//!   (`source::debootstrap::partition`);
//! - AMI attributes, encryption and sharing are properties of [`sink::ami::AmiTarget`];
//! - a layer cache (a cached image of base + layers) is another [`source::Source`] variant;
//! - progress and log routing: [`Stages`] is the one place stages are reported.

pub mod device;
pub mod digest;
pub mod seal;
pub mod session;
pub mod sink;
pub(crate) use digest::sha256_file;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use tracing::info;

use crate::context::Globals;
use crate::manifest::{BaseSummary, Kind, Manifest, PackageSummary, Timing, SCHEMA_VERSION};
use crate::package::{PackageInfo, PackageSource};
use crate::plugin::PluginSpec;
use crate::progress::Progress;
use crate::provision::plan::{ImageFacts, Step};
use crate::sys::signals;
use crate::workdir::WorkDir;

pub use sink::Sink;
pub use source::Source;

/// What to bake, decided before anything is made: the command's spec turned into steps.
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: Kind,
    pub bake_id: String,
    /// The image name (AMI name; Aminator's rule for bakes, `{family}-{version}` for bases).
    pub name: String,
    /// When the bake started (UTC): the name's stamp and the `creation_time` tag.
    pub now: time::OffsetDateTime,
    pub started: Instant,
    /// What the chroot session runs, in order.
    pub steps: Vec<Step>,
    /// The package files installed (the first is the application).
    pub packages: Vec<PackageInfo>,
    /// Layer names, for the manifest.
    pub layers: Vec<String>,
    /// Plugins found and checked up front.
    pub plugins: Vec<(PluginSpec, PathBuf)>,
    pub tags: TagRule,
    /// The package policy a bake's steps are held to (downgrades, removals of base packages);
    /// `None` for base builds and refreshes, which may change any package.
    pub policy: Option<crate::provision::pkgdb::Policy>,
    /// The bake key ([`crate::naming::bake_key`]) once the base is known (the AMI sink sets
    /// it); written as `bakery:bake-key` on every resource.
    pub bake_key: Option<String>,
    /// `--disk-size`: grow the disk, its root partition and filesystem to this size before
    /// the session (checked up front against the base; AMI sinks take it as the root volume's
    /// size). `None`: the base's size.
    pub disk_size: Option<crate::recipe::Size>,
    /// `bake --shell`: an interactive shell in the image before the seal, on this terminal.
    pub shell: Option<crate::provision::plan::ShellPlan>,
}

/// How a job's image is tagged (the tags go on every AMI and snapshot, and into the manifest).
#[derive(Debug, Clone)]
pub enum TagRule {
    /// Aminator's set from the application package and the base, CI tags, then these user tags
    /// (which win), then plugin tags: `bakery bake`, `base refresh`.
    Image(BTreeMap<String, String>),
    /// Exactly these, plus plugin tags: `base build`.
    Fixed(BTreeMap<String, String>),
}

impl Job {
    /// The job's tags once the base and the image's facts are known, checked against AWS limits
    /// (input error). `env`: the process environment (CI variables, the user).
    pub fn tags(
        &self,
        base: &BaseSummary,
        facts: &ImageFacts,
        env: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let mut tags = match &self.tags {
            TagRule::Image(user) => {
                let creation_time = self
                    .now
                    .format(&time::format_description::well_known::Rfc3339)?;
                let packages = self.resolved_packages(facts);
                crate::naming::image_tags(packages.first(), base, &creation_time, user, env)
            }
            TagRule::Fixed(t) => t.clone(),
        };
        tags.extend(facts.plugin_tags.clone());
        if let Some(k) = &self.bake_key {
            tags.insert(crate::naming::BAKE_KEY_TAG.to_string(), k.clone());
        }
        // Counted as written: with bakery:bake-id and bakery:bake-state.
        crate::naming::validate_tags(&crate::naming::resource_tags(&tags, &self.bake_id))
            .map_err(|e| crate::input!("tags (with bakery's own): {e}"))?;
        Ok(tags)
    }

    /// The job's packages with what the session read back for those installed by name (kind,
    /// exact version, architecture); the others as they are.
    pub fn resolved_packages(&self, facts: &ImageFacts) -> Vec<PackageInfo> {
        self.packages
            .iter()
            .map(|p| match (&p.source, facts.named.get(&p.name)) {
                (PackageSource::Name { .. }, Some(n)) => crate::package::resolve::installed(
                    p,
                    n.kind,
                    &n.version,
                    &n.arch,
                    n.sha256.as_deref(),
                ),
                _ => p.clone(),
            })
            .collect()
    }

    /// The image name once the session has installed the packages, when the first package was
    /// named without a pin (before the bake its version was unknown), else `None`:
    /// `{package}-{version}-{release}-{stamp}` from what was installed. A named package's
    /// architecture is known only after the install, so its names leave it out, pinned or not:
    /// an unpinned bake and one pinned to what it installed get the same name (and bake key).
    pub fn name_after_install(&self, facts: &ImageFacts) -> Option<String> {
        let first = self.packages.first()?;
        if !(first.is_named() && first.version.is_empty()) {
            return None;
        }
        let mut resolved = self.resolved_packages(facts).into_iter().next()?;
        resolved.arch.clear();
        if resolved.version.is_empty() {
            return None;
        }
        let name = crate::naming::image_name(&resolved, &crate::naming::stamp(self.now));
        crate::naming::validate_ami_name(&name).ok()?;
        Some(name)
    }

    /// Whether a package is named without a version pin: its version is known only once the
    /// session has installed it.
    pub fn has_unpinned_names(&self) -> bool {
        self.packages
            .iter()
            .any(|p| p.is_named() && p.version.is_empty())
    }

    /// What the bake key is computed from ([`crate::naming::bake_key`]): `base` (the base's
    /// identity), the packages (files and URLs by SHA-256, names by the version installed —
    /// `installed`, the session's versions by name — or pinned), the step files by SHA-256,
    /// the package policy, plugins and user tags. A name with neither (before an unpinned bake)
    /// makes a key of this bake only: no earlier image is reused for it. Reads the package and
    /// layer files (errors name the file).
    pub fn bake_key_input(
        &self,
        base: String,
        installed: &BTreeMap<String, String>,
    ) -> Result<crate::naming::BakeKeyInput> {
        let packages = self
            .packages
            .iter()
            .map(|p| {
                if p.is_named() {
                    let version = match installed.get(&p.name) {
                        Some(v) => v.clone(),
                        None if !p.version.is_empty() => p.evr(),
                        None => format!("unpinned, bake {}", self.bake_id),
                    };
                    // An architecture asked for (`name:arch`) is part of what is installed.
                    return Ok(match p.named_arch() {
                        Some(a) => format!("name {}:{a} {version}", p.name),
                        None => format!("name {} {version}", p.name),
                    });
                }
                Ok(format!(
                    "{:?} {} {}:{}-{} {} sha256:{}",
                    p.kind,
                    p.name,
                    p.epoch.as_deref().unwrap_or(""),
                    p.version,
                    p.release,
                    p.arch,
                    sha256_file(&p.path)?
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let steps = self
            .steps
            .iter()
            .map(|st| {
                Ok(match st {
                    // The package files are in `packages` (by content, not by path).
                    Step::InstallDebs { .. } | Step::InstallRpms { .. } => st.label(),
                    // The names and their versions are in `packages`.
                    Step::InstallNamed { .. } => "install by name".to_string(),
                    // Layer files live in the bake's scratch dir: by content.
                    Step::Script { layer, path } => {
                        format!("{layer}: script sha256:{}", sha256_file(path)?)
                    }
                    Step::CopyFile {
                        layer,
                        src,
                        dest,
                        mode,
                    } => format!(
                        "{layer}: file {} {mode:o} sha256:{}",
                        dest.display(),
                        sha256_file(src)?
                    ),
                    other => format!("{other:?}"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut options = vec![format!("{:?}", self.policy)];
        options.extend(
            self.plugins
                .iter()
                .map(|(p, _)| format!("plugin {} {}", p.name, p.config)),
        );
        let tags = match &self.tags {
            TagRule::Image(t) | TagRule::Fixed(t) => t.clone(),
        };
        Ok(crate::naming::BakeKeyInput {
            base,
            packages,
            steps,
            options,
            tags,
        })
    }

    /// The manifest of this job; the sink fills `output` or `amis` and `upload`.
    pub fn manifest(
        &self,
        base: BaseSummary,
        facts: &ImageFacts,
        tags: BTreeMap<String, String>,
        timings: Vec<Timing>,
        work: &WorkDir,
    ) -> Manifest {
        let packages: Vec<PackageSummary> = self
            .resolved_packages(facts)
            .iter()
            .map(|p| PackageSummary::new(p, &facts.installed))
            .collect();
        Manifest {
            schema_version: SCHEMA_VERSION,
            bakery_version: env!("CARGO_PKG_VERSION").to_string(),
            kind: self.kind,
            bake_id: self.bake_id.clone(),
            name: self.name.clone(),
            package: packages.first().cloned(),
            packages,
            base,
            layers: self.layers.clone(),
            layers_from_cache: false,
            layer_cache_key: None,
            output: None,
            amis: vec![],
            upload: None,
            layer_upload: None,
            os: facts.os.clone(),
            arch: facts.arch.clone(),
            package_changes: facts.package_changes.clone(),
            tags: tags
                .into_iter()
                .filter(|(k, _)| !k.starts_with("bakery:"))
                .collect(),
            timings,
            total_seconds: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            log: work.log(),
        }
    }
}

/// Run `job` from `source` to `sink`: the whole bake. On any error or signal everything made
/// is released (guards; the cleanup ledger for AWS) and the error says which stage failed.
pub fn run(job: &Job, source: Source, sink: Sink, g: &Globals) -> Result<Manifest> {
    // Before anything is made, so a signal at any point ends in cleanup and exit 130.
    signals::install();
    // The manifest records each package file's digest: taken meanwhile, off the critical path.
    digest::prefetch(
        job.packages
            .iter()
            .filter(|p| matches!(p.source, crate::package::PackageSource::File))
            .map(|p| p.path.clone())
            .collect(),
    );
    let mut stages = Stages::new(Progress::new(g.quiet));
    let m = match sink {
        Sink::File(target) => sink::file::run(job, source, &target, &mut stages, g),
        Sink::Ami(target) => sink::ami::run(job, source, &target, &mut stages, g),
    }?;
    stages
        .progress()
        .success(&made(&m), job.started.elapsed().as_secs_f64());
    Ok(m)
}

/// What a run made, for its final line: `baked app-1.2-3 → app.qcow2 (1.4 GiB)` or
/// `baked app-1.2-3 → ami-0abc (us-east-1), ami-0def (us-west-2)`.
pub fn made(m: &Manifest) -> String {
    let verb = match m.kind {
        Kind::Bake => "baked",
        _ => "built",
    };
    let what = match &m.output {
        Some(o) => format!(
            "{} ({:.1} GiB, {})",
            o.path.display(),
            o.size_bytes as f64 / (1u64 << 30) as f64,
            o.format.as_str()
        ),
        None => m
            .amis
            .iter()
            .map(|a| format!("{} ({})", a.image_id, a.region))
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!("{verb} {} → {what}", m.name)
}

/// The disk between source and sink: the steps every sink runs on it (device, session, seal).
/// Returns the facts the session read from the image.
pub(crate) fn provision(
    job: &Job,
    disk: &source::SourceDisk,
    cloud: Option<&sink::ami::Cloud>,
    work: &WorkDir,
    stages: &mut Stages,
    g: &Globals,
) -> Result<ImageFacts> {
    let grown = match job.disk_size {
        Some(size) => Some(device::grow(disk, size, stages)?),
        None => None,
    };
    let attached = device::attach(&disk.path, stages)?;
    let facts = session::provision(job, disk, &attached, grown.as_ref(), work, stages, g)
        .map_err(|e| with_log_hint(e, work))?;
    seal::seal(attached, disk, cloud, stages)?;
    Ok(facts)
}

/// Point at the full log when a step fails (the error line carries only its last lines).
pub fn with_log_hint(e: anyhow::Error, work: &WorkDir) -> anyhow::Error {
    if e.chain().any(|c| c.is::<crate::error::Interrupted>()) {
        return e;
    }
    let log = work.log();
    if log.exists() {
        crate::progress::eprintln(&format!(
            "bakery: full output of the failed step: {}",
            log.display()
        ));
    }
    e
}

/// The stage runner: every stage of every bake passes through [`Stages::run`].
pub struct Stages {
    progress: Progress,
    timings: Vec<Timing>,
}

/// A stage in progress: it may rename its timing or its closing progress line, and record
/// timings it measured inside (the chroot session's steps).
pub struct Stage<'a> {
    progress: &'a Progress,
    timing: Option<String>,
    said: Option<String>,
    inner: Vec<Timing>,
}

impl Stage<'_> {
    /// Progress for what the stage reports itself.
    pub fn progress(&self) -> &Progress {
        self.progress
    }

    /// Timings measured inside the stage, recorded before the stage's own.
    pub fn record(&mut self, timings: impl IntoIterator<Item = Timing>) {
        self.inner.extend(timings);
    }

    /// Record the stage's timing under `label` (default: the stage's name).
    pub fn timing(&mut self, label: impl Into<String>) {
        self.timing = Some(label.into());
    }

    /// Close the stage's progress line with `msg` (default: the timing label).
    pub fn say(&mut self, msg: impl Into<String>) {
        self.said = Some(msg.into());
    }
}

impl Stages {
    pub fn new(progress: Progress) -> Stages {
        Stages {
            progress,
            timings: Vec::new(),
        }
    }

    /// Run stage `name`: signal check, progress, `f`, timing, fault point `name`, signal check.
    pub fn run<T>(&mut self, name: &str, f: impl FnOnce(&mut Stage) -> Result<T>) -> Result<T> {
        self.run_shown(name, name, f)
    }

    /// [`Stages::run`], showing `shown` while it runs (e.g. `copy to us-west-2, eu-west-1`).
    pub fn run_shown<T>(
        &mut self,
        name: &str,
        shown: &str,
        f: impl FnOnce(&mut Stage) -> Result<T>,
    ) -> Result<T> {
        signals::check()?;
        self.progress.start_step(shown);
        let t = Instant::now();
        let mut stage = Stage {
            progress: &self.progress,
            timing: None,
            said: None,
            inner: Vec::new(),
        };
        let out = f(&mut stage);
        let Stage {
            timing,
            said,
            inner,
            ..
        } = stage;
        let out = match out {
            Ok(v) => v,
            Err(e) => {
                self.progress.fail_step(shown, &e);
                return Err(e);
            }
        };
        let secs = t.elapsed().as_secs_f64();
        let label = timing.unwrap_or_else(|| name.to_string());
        self.progress
            .finish_step(said.as_deref().unwrap_or(&label), secs);
        self.timings.extend(inner);
        self.timings.push(Timing::new(&label, secs));
        crate::fault::point(name)?;
        signals::check()?;
        Ok(out)
    }

    /// A stage that is an AWS call: dropped at once with `Interrupted` when a signal arrives
    /// (a long upload or wait does not delay the cleanup).
    pub fn run_aws<T>(
        &mut self,
        name: &str,
        shown: &str,
        rt: &tokio::runtime::Runtime,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.run_shown(name, shown, |_| signals::block_on(rt, fut))
    }

    pub fn timings(&self) -> Vec<Timing> {
        self.timings.clone()
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }
}

/// Log the start of a run (tests and `bakery gc` read the bake id from this line), and from now
/// on give the bake's log file a timestamped header per step.
pub(crate) fn announce(job: &Job, work: &WorkDir, from: &str, stages: &Stages) {
    info!(bake_id = %job.bake_id, log = %work.log().display(), "baking {} from {from}", job.name);
    stages.progress().log_to(
        &work.log(),
        &format!(
            "bakery {} {}: baking {} from {from}",
            env!("CARGO_PKG_VERSION"),
            job.bake_id,
            job.name
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(tags: TagRule) -> Job {
        Job {
            kind: Kind::Bake,
            bake_id: "bk-0123456789ab".into(),
            name: "app-1.2-3-all-202611250000".into(),
            now: time::macros::datetime!(2026-11-25 00:00 UTC),
            started: Instant::now(),
            steps: vec![],
            packages: vec![PackageInfo {
                name: "app".into(),
                version: "1.2".into(),
                release: "3".into(),
                ..PackageInfo::for_tests()
            }],
            layers: vec![],
            plugins: vec![],
            tags,
            policy: None,
            bake_key: None,
            disk_size: None,
            shell: None,
        }
    }

    fn base() -> BaseSummary {
        BaseSummary {
            image: "ami-0abc".into(),
            name: "bakery-base-bookworm".into(),
            version: "7".into(),
            format: None,
        }
    }

    #[test]
    fn image_tags_come_from_the_base_and_plugins_add_theirs() {
        let user = BTreeMap::from([("team".to_string(), "web".to_string())]);
        let facts = ImageFacts {
            plugin_tags: BTreeMap::from([("scanned".to_string(), "yes".to_string())]),
            ..Default::default()
        };
        let t = job(TagRule::Image(user))
            .tags(&base(), &facts, &BTreeMap::new())
            .unwrap();
        assert_eq!(t["appversion"], "app-1.2-3");
        assert_eq!(t["base_ami_version"], "7");
        assert_eq!(t["creation_time"], "2026-11-25T00:00:00Z");
        assert_eq!(t["team"], "web");
        assert_eq!(t["scanned"], "yes");
        let fixed = BTreeMap::from([("base_ami_name".to_string(), "b".to_string())]);
        let t = job(TagRule::Fixed(fixed))
            .tags(&base(), &ImageFacts::default(), &BTreeMap::new())
            .unwrap();
        assert_eq!(t.len(), 1);
        let too_long = BTreeMap::from([("k".to_string(), "v".repeat(300))]);
        let e = job(TagRule::Fixed(too_long))
            .tags(&base(), &ImageFacts::default(), &BTreeMap::new())
            .unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
    }

    #[test]
    fn a_named_package_keys_and_names_by_its_installed_version() {
        let mut j = job(TagRule::Image(BTreeMap::new()));
        j.packages = vec![crate::package::resolve::named("jq", None)];
        assert!(j.has_unpinned_names());
        let none = BTreeMap::new();
        let installed = BTreeMap::from([("jq".to_string(), "1.6-2.1".to_string())]);
        // Before the bake an unpinned name is this bake's own: never an earlier image.
        let before = j.bake_key_input("b".into(), &none).unwrap();
        assert!(
            before.packages[0].contains(&j.bake_id),
            "{:?}",
            before.packages
        );
        let after = j.bake_key_input("b".into(), &installed).unwrap();
        assert_eq!(after.packages, ["name jq 1.6-2.1"]);
        // A later bake pinned to what was installed has the same key: it reuses the image.
        let mut pinned = job(TagRule::Image(BTreeMap::new()));
        pinned.bake_id = "bk-other".into();
        pinned.packages = vec![crate::package::resolve::named("jq", Some("1.6-2.1"))];
        assert!(!pinned.has_unpinned_names());
        assert_eq!(
            crate::naming::bake_key(&pinned.bake_key_input("b".into(), &none).unwrap()),
            crate::naming::bake_key(&after)
        );
        let facts = ImageFacts {
            named: BTreeMap::from([(
                "jq".to_string(),
                crate::provision::plan::NamedInstall {
                    kind: crate::package::PackageKind::Deb,
                    version: "1.6-2.1".into(),
                    arch: "amd64".into(),
                    sha256: None,
                },
            )]),
            ..Default::default()
        };
        assert_eq!(
            j.name_after_install(&facts).as_deref(),
            Some("jq-1.6-2.1-202611250000")
        );
        assert_eq!(pinned.name_after_install(&facts), None);
        let t = j.tags(&base(), &facts, &BTreeMap::new()).unwrap();
        assert_eq!(t["appversion"], "jq-1.6-2.1");
        let top = tempfile::tempdir().unwrap();
        let work = WorkDir::create(top.path(), &j.bake_id).unwrap();
        let m = j.manifest(base(), &facts, t, vec![], &work);
        let p = m.package.unwrap();
        assert_eq!(p.origin, crate::package::spec::Origin::Name);
        assert_eq!(p.source.as_deref(), Some("jq"));
        assert_eq!(
            (p.version.as_str(), p.release.as_str(), p.arch.as_str()),
            ("1.6", "2.1", "amd64")
        );
    }

    #[test]
    fn the_runner_times_every_stage_and_stops_at_its_fault_point() {
        let mut s = Stages::new(Progress::new(true));
        let v = s
            .run("first stage", |st| {
                st.timing("first, renamed");
                Ok(7)
            })
            .unwrap();
        assert_eq!(v, 7);
        let e = s
            .run("second stage", |_| -> Result<()> {
                anyhow::bail!("broken")
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "broken");
        let steps: Vec<String> = s.timings().into_iter().map(|t| t.step).collect();
        assert_eq!(
            steps,
            ["first, renamed"],
            "a failed stage records no timing"
        );
    }
}
