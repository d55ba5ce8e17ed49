//! `bakery bake`: base image + layers + packages -> a new image file and its manifest.

pub mod ami;
pub mod disk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tracing::info;

use crate::cli::BakeArgs;
use crate::disk::image::{self, Format, PendingOutput};
use crate::disk::layout::{self, Layout};
use crate::input;
use crate::manifest::{BaseSummary, Manifest, OutputSummary, PackageSummary, Timing};
use crate::naming;
use crate::package::{self, PackageInfo, PackageKind};
use crate::progress::Progress;
use crate::provision::plan::{PackageCheck, Step};
use crate::recipe::layer::{self, Layer, LayerStep};
use crate::recipe::Recipe;
use crate::sys::signals;
use crate::workdir::{new_bake_id, WorkDir};

/// Global options every command shares.
#[derive(Debug, Clone)]
pub struct Globals {
    pub work_dir: PathBuf,
    pub verbose: u8,
    pub quiet: bool,
}

/// What `--dry-run` prints: everything the bake would do, nothing done.
#[derive(Debug, Serialize)]
pub struct BakePlan {
    pub base: String,
    pub output: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    pub name: String,
    pub layers: Vec<String>,
    pub steps: Vec<String>,
    pub packages: Vec<PackageInfo>,
    pub tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
}

pub enum BakeResult {
    Printed,
    Baked(Box<Manifest>),
}

fn layer_steps(l: &Layer) -> Vec<Step> {
    let name = l.name.clone();
    l.file
        .steps
        .iter()
        .map(|s| match s {
            LayerStep::Apt(p) => Step::Apt {
                layer: name.clone(),
                packages: p.clone(),
            },
            LayerStep::Script(p) => Step::Script {
                layer: name.clone(),
                path: l.dir.join(p),
            },
            LayerStep::Run(c) => Step::Run {
                layer: name.clone(),
                command: c.clone(),
            },
            LayerStep::Enable(u) => Step::Enable {
                layer: name.clone(),
                units: u.clone(),
            },
            LayerStep::File(f) => Step::CopyFile {
                layer: name.clone(),
                src: l.dir.join(&f.src),
                dest: f.dest.clone(),
                mode: u32::from_str_radix(&f.mode, 8).unwrap_or(0o644),
            },
        })
        .collect()
}

/// Layers first, then packages grouped by kind in the order given (adjacent packages of one
/// kind install in one transaction, so they may depend on each other).
pub fn plan_steps(layers: &[Layer], packages: &[PackageInfo]) -> Vec<Step> {
    let mut steps: Vec<Step> = layers.iter().flat_map(layer_steps).collect();
    let mut i = 0;
    while i < packages.len() {
        let kind = packages[i].kind;
        let group: Vec<PathBuf> = packages[i..]
            .iter()
            .take_while(|p| p.kind == kind)
            .map(|p| p.path.clone())
            .collect();
        i += group.len();
        steps.push(match kind {
            PackageKind::Deb => Step::InstallDebs { files: group },
            PackageKind::Rpm => Step::InstallRpms { files: group },
        });
    }
    steps
}

pub fn resolve_layers(names: &[String], extra: &[PathBuf], scratch: &Path) -> Result<Vec<Layer>> {
    names
        .iter()
        .map(|n| layer::resolve(n, extra, scratch))
        .collect()
}

pub fn inspect_packages(paths: &[PathBuf]) -> Result<Vec<PackageInfo>> {
    paths
        .iter()
        .map(|p| {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            package::inspect(&abs).map_err(|e| input!("{e}"))
        })
        .collect()
}

/// Who baked: the user behind sudo, else the login user, else the effective user's name.
pub fn creator(env: &BTreeMap<String, String>) -> String {
    env.get("SUDO_USER")
        .or_else(|| env.get("USER"))
        .filter(|u| !u.is_empty())
        .cloned()
        .unwrap_or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| "bakery".into())
        })
}

/// Tags an image of this bake gets (Aminator's set), plus CI and user tags.
pub fn image_tags(
    app: Option<&PackageInfo>,
    base: &BaseSummary,
    creation_time: &str,
    user_tags: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    if let Some(p) = app {
        tags.insert("appversion".into(), naming::appversion(p));
    }
    tags.insert("base_ami_id".into(), base.image.clone());
    tags.insert("base_ami_name".into(), base.name.clone());
    tags.insert("base_ami_version".into(), base.version.clone());
    tags.insert("creator".into(), creator(env));
    tags.insert("creation_time".into(), creation_time.into());
    tags.extend(naming::ci_tags(env));
    tags.extend(user_tags.clone());
    tags
}

/// A bake whose input has been checked: nothing was created yet.
pub struct Prepared {
    pub recipe: Recipe,
    pub packages: Vec<PackageInfo>,
    pub layers: Vec<Layer>,
    pub steps: Vec<Step>,
    pub name: String,
    pub now: time::OffsetDateTime,
    pub bake_id: String,
    pub started: Instant,
    /// Local base file (None: the built-in base, or an AMI).
    pub base_path: Option<PathBuf>,
    /// Plugins found and checked up front.
    pub plugins: Vec<(crate::plugin::PluginSpec, PathBuf)>,
    _scratch: tempfile::TempDir,
}

impl Prepared {
    /// A bake with steps of its own (e.g. a base refresh) rather than layers and packages.
    pub fn custom(
        recipe: Recipe,
        steps: Vec<Step>,
        name: String,
        bake_id: String,
    ) -> Result<Prepared> {
        Ok(Prepared {
            recipe,
            packages: vec![],
            layers: vec![],
            steps,
            name,
            now: time::OffsetDateTime::now_utc(),
            bake_id,
            started: Instant::now(),
            base_path: None,
            plugins: vec![],
            _scratch: tempfile::Builder::new()
                .prefix("bakery-layers-")
                .tempdir()?,
        })
    }

    pub fn app(&self) -> Option<&PackageInfo> {
        self.packages.first()
    }

    pub fn package_checks(&self) -> Vec<PackageCheck> {
        self.packages
            .iter()
            .map(|p| PackageCheck {
                file: p.path.display().to_string(),
                kind: p.kind,
                arch: p.normalized_arch().to_string(),
            })
            .collect()
    }
}

/// Check everything a bake needs before anything is created. `None`: a dry run or
/// --print-config printed what was asked and there is nothing to do.
pub fn prepare(args: &BakeArgs) -> Result<Option<Prepared>> {
    let started = Instant::now();
    let recipe = match &args.recipe {
        Some(p) => Recipe::load(p)?,
        None => Recipe::default(),
    }
    .merge_flags(args)?;
    if args.print_config {
        print!("{}", serde_yaml_ng::to_string(&recipe)?);
        return Ok(None);
    }

    let output = recipe.output.clone().ok_or_else(|| input!("no output given: pass --output FILE.qcow2 (or .raw, or `ami`), or set `output:` in the recipe"))?;
    let ami = recipe.wants_ami();
    let format = if ami {
        None
    } else {
        Some(Format::from_output_path(&output)?)
    };
    if !args.dry_run && !ami {
        PendingOutput::check(&output, args.force, "output")?;
    }
    if recipe.packages.is_empty() && recipe.layers.is_empty() {
        return Err(input!(
            "nothing to bake: pass --package FILE (.deb or .rpm) and/or --layer NAME"
        ));
    }
    let packages = inspect_packages(&recipe.packages)?;
    naming::validate_tags(&recipe.tags).map_err(|e| input!("--tag: {e}"))?;
    // With bakery's own tags too (the base's are filled in later; their keys count now).
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let placeholder = BaseSummary {
        image: "-".into(),
        name: "-".into(),
        version: "-".into(),
        format: None,
    };
    naming::validate_tags(&image_tags(
        packages.first(),
        &placeholder,
        "-",
        &recipe.tags,
        &env,
    ))
    .map_err(|e| {
        input!(
            "tags (your --tag values plus bakery's own {} tags): {e}",
            image_tags(packages.first(), &placeholder, "-", &BTreeMap::new(), &env).len()
        )
    })?;
    let base_is_ami = recipe.base_name.is_some()
        || recipe
            .base
            .as_ref()
            .is_some_and(|b| crate::recipe::is_ami_id(&b.to_string_lossy()));
    if base_is_ami && !ami {
        return Err(input!("a base AMI needs `--output ami`; for a local file output pass --base FILE (raw or qcow2)"));
    }
    if ami {
        crate::bake::ami::check_regions(&recipe)?;
        if !base_is_ami {
            return Err(input!(
                "`--output ami` needs a base AMI: pass --base ami-... or --base-name 'PATTERN'"
            ));
        }
    }
    let base_path = match &recipe.base {
        Some(p) if !base_is_ami => {
            let fmt = image::detect_format(p)?;
            if fmt == Format::Raw {
                let l = layout::read_layout(p)?;
                if l.root().is_none()
                    && !l.partitions.is_empty()
                    && l.table != layout::TableKind::None
                {
                    return Err(input!(
                        "base `{}`: its partition table ({} partition(s)) has no Linux root filesystem; pass a bootable disk image (e.g. from `bakery base build`)",
                        p.display(),
                        l.partitions.len()
                    ));
                }
                if l.root().is_none() {
                    return Err(input!(
                        "base `{}`: no partition table or Linux root filesystem found; pass a raw or qcow2 disk image (e.g. from `bakery base build`)",
                        p.display()
                    ));
                }
            }
            Some(std::path::absolute(p)?)
        }
        _ => None,
    };
    let bake_id = new_bake_id();
    let now = time::OffsetDateTime::now_utc();
    let stamp = naming::stamp(now);
    let name = match packages.first() {
        Some(p) => naming::image_name(p, &stamp),
        None => naming::sanitize_name_part(&format!("{}-{stamp}", recipe.layers.join("-"))),
    };
    naming::validate_ami_name(&name).map_err(|e| input!("{e}"))?;

    // Named for the bake, so `bakery gc` can tell whose it is after a crash.
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{}{bake_id}-", crate::gc::SCRATCH_PREFIX))
        .tempdir()?;
    let layers = resolve_layers(&recipe.layers, &args.layer_path, scratch.path())?;
    let steps = plan_steps(&layers, &packages);
    let plugins = crate::plugin::resolve(&recipe.plugins, &[])?;

    if args.dry_run {
        let base = if let Some(n) = &recipe.base_name {
            format!("newest AMI named {n}")
        } else if base_is_ami {
            recipe.base.as_ref().unwrap().display().to_string()
        } else {
            base_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in debian-bookworm (cached)".into())
        };
        let plan = BakePlan {
            base,
            output: output.clone(),
            format,
            name,
            layers: recipe.layers.clone(),
            steps: steps.iter().map(Step::label).collect(),
            packages,
            tags: recipe.tags.clone(),
            regions: if ami {
                Some(crate::bake::ami::target_regions(&recipe))
            } else {
                None
            },
        };
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(None);
    }
    Ok(Some(Prepared {
        recipe,
        packages,
        layers,
        steps,
        name,
        now,
        bake_id,
        started,
        base_path,
        plugins,
        _scratch: scratch,
    }))
}

pub fn run(args: &BakeArgs, g: &Globals) -> Result<BakeResult> {
    // Before anything is made, so a signal at any point after start-up ends in cleanup and 130.
    signals::install();
    let Some(p) = prepare(args)? else {
        return Ok(BakeResult::Printed);
    };
    let plugins = p.plugins.clone();
    let bake_id = p.bake_id.clone();
    let result = if p.recipe.wants_ami() {
        ami::bake(p, args.aws.publish.keep_on_error, g)
    } else {
        bake_file(p, g)
    };
    if !plugins.is_empty() {
        // post-bake is told how it went; it never changes the result.
        let mut ev = crate::plugin::Event::new(crate::plugin::Hook::PostBake, &bake_id);
        match &result {
            Ok(m) => {
                ev.status = Some("succeeded".into());
                ev.manifest = serde_json::to_value(m).ok();
            }
            Err(e) => {
                ev.status = Some("failed".into());
                ev.error = Some(
                    format!("{e:#}")
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
        if let Err(e) = crate::plugin::run_hook(&plugins, crate::plugin::Hook::PostBake, &ev) {
            tracing::warn!("post-bake plugins: {e:#}");
        }
    }
    Ok(BakeResult::Baked(Box::new(result?)))
}

fn bake_file(p: Prepared, g: &Globals) -> Result<Manifest> {
    let output = p.recipe.output.clone().expect("checked in prepare");
    let format = Format::from_output_path(&output)?;
    let progress = Progress::new(g.quiet);
    let work = WorkDir::create(&g.work_dir, &p.bake_id)?;
    info!(bake_id = %p.bake_id, log = %work.log().display(), "baking {}", p.name);
    let base_path = match &p.base_path {
        Some(b) => b.clone(),
        None => crate::base::cached_default(g, &progress)?,
    };
    let base_format = image::detect_format(&base_path)?;
    let mut timings = Vec::new();

    // The disk we provision: the output's temporary file itself for raw (no second copy), a
    // scratch raw file converted at the end for qcow2.
    let t = Instant::now();
    progress.start_step("copy base");
    let pending = PendingOutput::new(&output, &p.bake_id);
    work.note_partial_output(&pending.tmp)?;
    let disk = if format == Format::Raw {
        pending.tmp.clone()
    } else {
        work.join("disk.raw")
    };
    match base_format {
        Format::Raw => {
            image::copy_sparse(&base_path, &disk)?;
        }
        Format::Qcow2 => image::convert(&base_path, Format::Qcow2, &disk, Format::Raw)?,
    }
    timings.push(Timing::new("copy base", t.elapsed().as_secs_f64()));
    progress.finish_step("copy base", t.elapsed().as_secs_f64());
    crate::fault::point("copy base")?;
    signals::check()?;

    let outcome = provision_image(
        &disk,
        &base_path.display().to_string(),
        &p,
        &work,
        &progress,
        g,
    )?;
    timings.extend(
        outcome
            .timings
            .iter()
            .map(|(s, secs)| Timing::new(s, *secs)),
    );
    signals::check()?;

    if format == Format::Qcow2 {
        let t = Instant::now();
        progress.start_step("write qcow2");
        image::convert(&disk, Format::Raw, &pending.tmp, Format::Qcow2)?;
        crate::fault::point("write qcow2")?;
        timings.push(Timing::new("write qcow2", t.elapsed().as_secs_f64()));
        progress.finish_step("write qcow2", t.elapsed().as_secs_f64());
    }
    signals::check()?;
    let size_bytes = image::virtual_size(&pending.tmp, format)?;
    pending.commit()?;

    let facts = outcome.facts;
    let base_info = facts.base.clone().unwrap_or_default();
    let base = BaseSummary {
        image: base_path.display().to_string(),
        name: base_info["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| file_stem(&base_path)),
        version: base_info["version"]
            .as_str()
            .unwrap_or("unknown")
            .to_string(),
        format: Some(base_format.as_str()),
    };
    let mut m = manifest(&p, base, &facts, timings, &work)?;
    m.output = Some(OutputSummary {
        path: std::path::absolute(&output)?,
        format: format.as_str(),
        size_bytes,
        file_bytes: image::allocated_bytes(&output),
    });
    Ok(m)
}

/// Provision a disk (image file or block device) with the bake's steps.
pub fn provision_image(
    disk: &Path,
    base_label: &str,
    p: &Prepared,
    work: &WorkDir,
    progress: &Progress,
    g: &Globals,
) -> Result<crate::provision::driver::SessionOutcome> {
    let layout: Layout = layout::read_layout(disk)?;
    let root = layout
        .root()
        .ok_or_else(|| input!("base `{base_label}`: no Linux root filesystem found on the disk"))?
        .number;
    let job = disk::DiskJob {
        disk,
        layout: &layout,
        root_partition: root,
        bootstrap: None,
        steps: p.steps.clone(),
        packages: p.package_checks(),
        echo_output: g.verbose >= 2,
        plugins: p.plugins.clone(),
        policy: Some(crate::provision::pkgdb::Policy {
            allow_downgrade: p.recipe.allow_downgrade,
            allow_remove: p.recipe.allow_remove.clone(),
        }),
    };
    disk::provision(job, work, progress).map_err(|e| with_log_hint(e, work))
}

/// The manifest common to every sink; the caller fills `output` or `amis`.
pub fn manifest(
    p: &Prepared,
    base: BaseSummary,
    facts: &crate::provision::plan::ImageFacts,
    timings: Vec<Timing>,
    work: &WorkDir,
) -> Result<Manifest> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let creation_time = p
        .now
        .format(&time::format_description::well_known::Rfc3339)?;
    let mut tags = image_tags(p.app(), &base, &creation_time, &p.recipe.tags, &env);
    tags.extend(facts.plugin_tags.clone());
    naming::validate_tags(&tags).map_err(|e| input!("tags: {e}"))?;
    let summaries: Vec<PackageSummary> = p
        .packages
        .iter()
        .map(|x| PackageSummary::new(x, &facts.installed))
        .collect();
    Ok(Manifest {
        bakery_version: env!("CARGO_PKG_VERSION"),
        kind: "bake",
        bake_id: p.bake_id.clone(),
        name: p.name.clone(),
        package: summaries.first().cloned(),
        packages: summaries,
        base,
        layers: p.layers.iter().map(|l| l.name.clone()).collect(),
        output: None,
        amis: vec![],
        upload: None,
        os: facts.os.clone(),
        arch: facts.arch.clone(),
        package_changes: facts.package_changes.clone(),
        tags,
        timings,
        total_seconds: (p.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        log: work.log(),
    })
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Point at the full log when a step fails (the error line carries only its last lines).
pub fn with_log_hint(e: anyhow::Error, work: &WorkDir) -> anyhow::Error {
    if e.chain().any(|c| c.is::<crate::error::Interrupted>()) {
        return e;
    }
    let log = work.log();
    if log.exists() {
        eprintln!("bakery: full output of the failed step: {}", log.display());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, kind: PackageKind) -> PackageInfo {
        PackageInfo {
            kind,
            path: format!("/p/{name}").into(),
            name: name.into(),
            ..PackageInfo::for_tests()
        }
    }

    #[test]
    fn packages_group_by_kind_in_order_after_layers() {
        let scratch = tempfile::tempdir().unwrap();
        let layers = resolve_layers(&["jvm-tomcat".into()], &[], scratch.path()).unwrap();
        let pk = [
            pkg("a.deb", PackageKind::Deb),
            pkg("b.deb", PackageKind::Deb),
            pkg("c.rpm", PackageKind::Rpm),
            pkg("d.deb", PackageKind::Deb),
        ];
        let steps = plan_steps(&layers, &pk);
        let labels: Vec<String> = steps.iter().map(Step::label).collect();
        let n = labels.len();
        assert!(
            labels[0].starts_with("jvm-tomcat: apt install openjdk-17-jre-headless"),
            "{labels:?}"
        );
        assert_eq!(labels[n - 3], "install a.deb, b.deb");
        assert_eq!(labels[n - 2], "install c.rpm");
        assert_eq!(labels[n - 1], "install d.deb");
    }

    #[test]
    fn tags_have_the_aminator_set_and_user_tags_win() {
        let p = PackageInfo {
            name: "app".into(),
            version: "1.2".into(),
            release: "3".into(),
            ..PackageInfo::for_tests()
        };
        let base = BaseSummary {
            image: "/b/base.raw".into(),
            name: "bakery-base-bookworm".into(),
            version: "202611250000".into(),
            format: Some("raw"),
        };
        let mut user = BTreeMap::new();
        user.insert("team".to_string(), "payments".to_string());
        user.insert("creator".to_string(), "ci-bot".to_string());
        let env: BTreeMap<String, String> = [
            ("USER", "root"),
            ("SUDO_USER", "alice"),
            ("BUILD_NUMBER", "12"),
            ("JOB_NAME", "app"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let t = image_tags(Some(&p), &base, "2026-11-25T00:00:00Z", &user, &env);
        assert_eq!(t["appversion"], "app-1.2-3");
        assert_eq!(t["base_ami_name"], "bakery-base-bookworm");
        assert_eq!(t["base_ami_version"], "202611250000");
        assert_eq!(t["creation_time"], "2026-11-25T00:00:00Z");
        assert_eq!(t["creator"], "ci-bot");
        assert_eq!(t["build_number"], "12");
        assert_eq!(t["team"], "payments");
        let t = image_tags(Some(&p), &base, "x", &BTreeMap::new(), &env);
        assert_eq!(t["creator"], "alice");
    }
}
