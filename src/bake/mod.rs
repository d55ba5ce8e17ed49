//! `bakery bake`: recipe + flags → checked inputs → a pipeline [`Job`] from a base [`Source`] to
//! a file or AMI [`Sink`]. Everything the bake needs is checked here before anything is made;
//! the bake itself is `pipeline::run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::aws::ami::BaseRef;
use crate::cli::BakeArgs;
use crate::context::Globals;
use crate::disk::image::{self, Format, PendingOutput};
use crate::disk::layout;
use crate::input;
use crate::manifest::{BaseSummary, Kind, Manifest};
use crate::naming;
use crate::package::{self, PackageInfo};
use crate::pipeline::sink::ami::AmiTarget;
use crate::pipeline::sink::file::FileTarget;
use crate::pipeline::source::layer_cache::LayerCache;
use crate::pipeline::{self, session, Job, Sink, Source, TagRule};
use crate::provision::plan::Step;
use crate::recipe::{is_ami_id, Recipe};
use crate::workdir::new_bake_id;

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
    /// The package files given (read without root or network); names and URLs are resolved
    /// by the bake and only listed in `package_sources`.
    pub packages: Vec<PackageInfo>,
    /// Every package as given, in order: `origin` (`file`, `name`, `url`) and `source`.
    pub package_sources: Vec<SpecSummary>,
    pub tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<crate::recipe::Size>,
}

/// A package as given, for `--dry-run`.
#[derive(Debug, Serialize)]
pub struct SpecSummary {
    pub origin: crate::package::spec::Origin,
    pub source: String,
}

/// What the command layer prints on stdout.
pub enum BakeResult {
    /// `--print-config` (YAML) or `--dry-run` (JSON): printed as is.
    Printed(String),
    Baked(Box<Manifest>),
}

pub use crate::recipe::layer::resolve_all as resolve_layers;

/// Where the bake's packages were given, for errors: the flag, or the recipe key when no flag
/// replaced the recipe's list.
pub fn packages_field(args: &BakeArgs) -> &'static str {
    if args.packages.is_empty() && args.recipe.is_some() {
        "recipe `packages`"
    } else {
        "--package"
    }
}

/// A bake whose input has been checked: nothing was created yet.
pub struct Prepared {
    pub job: Job,
    pub source: Source,
    pub sink: Sink,
    /// The layers' files, written out for the session (removed with the bake).
    _scratch: tempfile::TempDir,
}

/// What `--base`/`--base-name` name: a base AMI (by id or name pattern), a file, or nothing
/// (the built-in base).
fn base_ref(recipe: &Recipe) -> Option<BaseRef> {
    match (&recipe.base_name, &recipe.base) {
        (Some(n), _) => Some(BaseRef::NamePattern(n.clone())),
        (None, Some(b)) if is_ami_id(&b.to_string_lossy()) => {
            Some(BaseRef::Id(b.display().to_string()))
        }
        _ => None,
    }
}

/// A local base file must hold a Linux root filesystem (input error otherwise).
fn check_base_file(p: &Path) -> Result<PathBuf> {
    let fmt = image::detect_format(p)?;
    if fmt == Format::Raw {
        let l = layout::read_layout(p)?;
        if l.root().is_none() && !l.partitions.is_empty() && l.table != layout::TableKind::None {
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
    Ok(std::path::absolute(p)?)
}

/// `--disk-size` against what is known before anything is made: a whole number of GiB for an
/// AMI (its size against the base AMI is checked once the base is resolved, in the AMI sink),
/// never smaller than a local base file or the built-in base.
fn check_disk_size(size: crate::recipe::Size, ami: bool, base_file: Option<&Path>) -> Result<()> {
    if ami {
        crate::disk::grow::whole_gib(size)?;
        return Ok(());
    }
    let (base, base_size) = match base_file {
        Some(p) => (
            format!("base `{}`", p.display()),
            image::virtual_size(p, image::detect_format(p)?)?,
        ),
        None => (
            "the built-in base".to_string(),
            crate::recipe::base::BaseSpec::builtin().size.bytes(),
        ),
    };
    if size.bytes() < base_size {
        let base_size = crate::recipe::Size(base_size);
        return Err(input!(
            "--disk-size {size} is smaller than {base} ({base_size}); a disk is never shrunk, give at least {base_size}"
        ));
    }
    Ok(())
}

/// What [`prepare`] found to do.
pub enum Prep {
    /// A bake to run.
    Bake(Box<Prepared>),
    /// `--dry-run` or `--print-config`: this text is the whole result.
    Print(String),
}

/// Check everything a bake needs before anything is created.
pub fn prepare(args: &BakeArgs) -> Result<Prep> {
    let started = Instant::now();
    let recipe = match &args.recipe {
        Some(p) => {
            let r = Recipe::load(p)?;
            // The recipe's own tags are the file's fault, not a flag's.
            naming::validate_tags(&r.tags).map_err(|e| input!("{}: `tags`: {e}", p.display()))?;
            r
        }
        None => Recipe::default(),
    }
    .merge_flags(&args.overrides())?;
    if args.print_config {
        return Ok(Prep::Print(serde_yaml_ng::to_string(&recipe)?));
    }

    let output = recipe.output.clone().ok_or_else(|| input!("no output given: pass --output FILE.qcow2 (or .raw, or `ami`), or set `output:` in the recipe"))?;
    let ami = recipe.wants_ami();
    if let Some(o) = recipe.ami_only_options_on_a_file().first() {
        return Err(input!(
            "{} (recipe key `{}`) applies only to `--output ami`; drop it for a file output ({})",
            o.flag,
            o.key,
            output.display()
        ));
    }
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
    let shell = if args.shell && !args.dry_run && !args.print_config {
        use std::io::IsTerminal;
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        if let Some(why) = crate::provision::shell::refusal(
            stdin.is_terminal(),
            std::env::var("CI").ok().as_deref(),
            std::env::var("JENKINS_URL").ok().as_deref(),
        ) {
            return Err(input!("{why}"));
        }
        let tty = nix::unistd::ttyname(stdin.as_fd())
            .map_err(|e| input!("--shell: cannot name the terminal on stdin ({e})"))?;
        Some(crate::provision::plan::ShellPlan {
            tty,
            term: std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
        })
    } else {
        None
    };
    let field = packages_field(args);
    let specs = package::resolve::parse_all(&recipe.packages, field, !args.packages.is_empty())?;
    naming::validate_tags(&recipe.tags).map_err(|e| input!("--tag: {e}"))?;
    let base_ami = base_ref(&recipe);
    if base_ami.is_some() && !ami {
        return Err(input!("a base AMI needs `--output ami`; for a local file output pass --base FILE (raw or qcow2)"));
    }
    let now = time::OffsetDateTime::now_utc();
    let ami_options = recipe.ami_options();
    let target = AmiTarget {
        region: recipe.region.clone(),
        copy_to: recipe.copy_to.clone(),
        share_with: recipe.share_with.clone(),
        keep_on_error: args.aws.publish.keep_on_error,
        options: ami_options.resolve(now.unix_timestamp())?,
    };
    if ami {
        target.check()?;
        if base_ami.is_none() {
            return Err(input!(
                "`--output ami` needs a base AMI: pass --base ami-... or --base-name 'PATTERN'"
            ));
        }
    }
    let base_file = match &recipe.base {
        Some(p) if base_ami.is_none() => Some(check_base_file(p)?),
        _ => None,
    };
    if let Some(size) = recipe.disk_size {
        check_disk_size(size, ami, base_file.as_deref())?;
    }
    let bake_id = new_bake_id();
    // Named for the bake, so `bakery gc` can tell whose it is after a crash; layer files and
    // downloaded packages live here until the bake ends.
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{}{bake_id}-", crate::workdir::SCRATCH_PREFIX))
        .tempdir()?;
    let layers = resolve_layers(&recipe.layers, &args.layer_path, scratch.path())?;
    let plugins = crate::plugin::resolve(&recipe.plugins, &[])?;
    // Downloads last: every cheaper check has passed.
    let packages = if args.dry_run {
        // No network and no root: files are read, names and URLs only listed.
        let files: Vec<_> = specs
            .iter()
            .filter(|s| matches!(s, package::spec::PackageSpec::File(_)))
            .cloned()
            .collect();
        let mut named = specs.iter().filter_map(package::resolve::named_spec);
        let mut files = package::resolve::resolve(&files, field, scratch.path())?.into_iter();
        // In order; a URL has nothing to show before it is downloaded.
        specs
            .iter()
            .filter_map(|s| match s {
                package::spec::PackageSpec::File(_) => files.next(),
                package::spec::PackageSpec::Name { .. } => named.next(),
                package::spec::PackageSpec::Url { .. } => None,
            })
            .collect::<Vec<_>>()
    } else {
        package::resolve::resolve(&specs, field, scratch.path())?
    };
    // With bakery's own tags too (the base's are filled in later; their keys count now).
    let env = crate::context::env_map();
    let placeholder = BaseSummary {
        image: "-".into(),
        name: "-".into(),
        version: "-".into(),
        format: None,
    };
    // Every tag bakery writes on a snapshot or AMI: the image tags, the bake key, then
    // bakery:bake-id and bakery:bake-state (naming::resource_tags, as the writers add them).
    let own = |user: &BTreeMap<String, String>| {
        let mut t = naming::image_tags(packages.first(), &placeholder, "-", user, &env);
        if recipe.wants_ami() {
            t.insert(naming::BAKE_KEY_TAG.to_string(), "-".into());
            if !layers.is_empty() && !args.no_layer_cache {
                t.insert(
                    crate::pipeline::source::layer_tags::LAYER_BASE_AMI_TAG.to_string(),
                    "-".into(),
                );
            }
            t = naming::resource_tags(&t, "-");
        }
        t
    };
    naming::validate_tags(&own(&recipe.tags)).map_err(|e| {
        input!(
            "tags (your --tag values plus bakery's own {} tags): {e}",
            own(&BTreeMap::new()).len()
        )
    })?;
    let stamp = naming::stamp(now);
    let name = match (specs.first(), packages.first()) {
        (Some(package::spec::PackageSpec::Url { url, .. }), _) if args.dry_run => {
            format!("(the package at {url})-{stamp}")
        }
        (_, Some(p)) => naming::image_name(p, &stamp),
        _ => naming::sanitize_name_part(&format!("{}-{stamp}", recipe.layers.join("-"))),
    };
    if !name.starts_with('(') {
        naming::validate_ami_name(&name).map_err(|e| input!("{e}"))?;
    }

    let steps = session::plan_steps(&layers, &packages, field);

    if args.dry_run {
        let base = match (&recipe.base_name, &base_ami, &base_file) {
            (Some(n), _, _) => format!("newest AMI named {n}"),
            (None, Some(BaseRef::Id(id)), _) => id.clone(),
            (_, _, Some(p)) => p.display().to_string(),
            _ => "built-in debian-trixie (cached)".into(),
        };
        let plan = BakePlan {
            base,
            output: output.clone(),
            format,
            name,
            layers: recipe.layers.clone(),
            steps: steps.iter().map(Step::label).collect(),
            packages: packages.into_iter().filter(|p| !p.is_named()).collect(),
            package_sources: specs
                .iter()
                .map(|s| SpecSummary {
                    origin: s.origin(),
                    source: s.to_string(),
                })
                .collect(),
            tags: recipe.tags.clone(),
            regions: ami.then(|| target.regions()),
            disk_size: recipe.disk_size,
        };
        return Ok(Prep::Print(serde_json::to_string_pretty(&plan)?));
    }
    let source = match (base_ami, base_file) {
        (Some(base), _) => Source::Ami {
            base,
            mode: recipe.mode,
        },
        (None, Some(f)) => Source::File(f),
        (None, None) => Source::Builtin,
    };
    // Bakes with layers start from the layer cache unless told not to (AMI bakes in direct
    // mode; in volume mode the sink applies the layers itself).
    let source = if !layers.is_empty() && !args.no_layer_cache {
        Source::LayerCache(Box::new(LayerCache {
            base: source,
            refresh: args.refresh_layers,
        }))
    } else {
        source
    };
    let sink = match format {
        Some(format) => Sink::File(FileTarget {
            path: output,
            format,
            keep_on_error: args.aws.publish.keep_on_error,
        }),
        None => Sink::Ami(target),
    };
    Ok(Prep::Bake(Box::new(Prepared {
        job: Job {
            kind: Kind::Bake,
            bake_id,
            name,
            now,
            started,
            steps,
            packages,
            layers: layers.iter().map(|l| l.name.clone()).collect(),
            plugins,
            tags: TagRule::Image(recipe.tags.clone()),
            bake_key: None,
            policy: Some(crate::provision::pkgdb::Policy {
                allow_downgrade: recipe.allow_downgrade,
                allow_remove: recipe.allow_remove.clone(),
            }),
            disk_size: recipe.disk_size,
            shell,
        },
        source,
        sink,
        _scratch: scratch,
    })))
}

pub fn run(args: &BakeArgs, g: &Globals) -> Result<BakeResult> {
    // Before anything is made, so a signal at any point after start-up ends in cleanup and 130.
    crate::sys::signals::install();
    let p = match prepare(args)? {
        Prep::Bake(p) => p,
        Prep::Print(text) => return Ok(BakeResult::Printed(text)),
    };
    let result = pipeline::run(&p.job, p.source.clone(), p.sink.clone(), g);
    post_bake(&p.job, &result);
    Ok(BakeResult::Baked(Box::new(result?)))
}

/// The post-bake plugins are told how it went; they never change the result.
fn post_bake(job: &Job, result: &Result<Manifest>) {
    if job.plugins.is_empty() {
        return;
    }
    let mut ev = crate::plugin::Event::new(crate::plugin::Hook::PostBake, &job.bake_id);
    match result {
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
    if let Err(e) = crate::plugin::run_hook(&job.plugins, crate::plugin::Hook::PostBake, &ev) {
        tracing::warn!("post-bake plugins: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::PackageKind;

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
        let steps = session::plan_steps(&layers, &pk, "--package");
        let labels: Vec<String> = steps.iter().map(Step::label).collect();
        let n = labels.len();
        assert!(
            labels[0].starts_with("jvm-tomcat: apt install default-jre-headless"),
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
            format: Some(Format::Raw),
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
        let t = naming::image_tags(Some(&p), &base, "2026-11-25T00:00:00Z", &user, &env);
        assert_eq!(t["appversion"], "app-1.2-3");
        assert_eq!(t["base_ami_name"], "bakery-base-bookworm");
        assert_eq!(t["base_ami_version"], "202611250000");
        assert_eq!(t["creation_time"], "2026-11-25T00:00:00Z");
        assert_eq!(t["creator"], "ci-bot");
        assert_eq!(t["build_number"], "12");
        assert_eq!(t["team"], "payments");
        let t = naming::image_tags(Some(&p), &base, "x", &BTreeMap::new(), &env);
        assert_eq!(t["creator"], "alice");
    }
}
