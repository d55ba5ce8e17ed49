//! `bakery base build`, `base refresh`, `base list`: a base spec (or the newest base AMI plus OS
//! updates) as a pipeline job. `base build` is the debootstrap source into a file or AMI sink;
//! `base refresh` is the AMI source with the upgrade as its steps, into the AMI sink.

pub mod refresh;

use anyhow::Result;
use serde::Serialize;

use crate::aws::ami;
use crate::cli::{BaseBuildArgs, BaseListArgs, PublishArgs};
use crate::context::{Aws, Globals};
use crate::disk::image::{Format, PendingOutput};
use crate::manifest::Manifest;
use crate::naming;
use crate::pipeline::sink::ami::AmiTarget;
use crate::pipeline::sink::file::FileTarget;
use crate::pipeline::source::debootstrap;
use crate::pipeline::{self, Sink};
use crate::recipe::base::BaseSpec;

/// What the command layer prints on stdout.
pub enum BaseResult {
    /// `--dry-run`: the plan (JSON).
    Printed(String),
    Built(Box<Manifest>),
}

/// Where a published base goes, with its AMI options (checked: input errors).
pub fn ami_target(a: &PublishArgs) -> Result<AmiTarget> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(AmiTarget {
        region: a.region.clone(),
        copy_to: a.copy_to.clone(),
        share_with: a.share_with.clone(),
        keep_on_error: a.keep_on_error,
        options: a.ami.spec().resolve(now)?,
    })
}

#[derive(Serialize)]
struct BuildPlan<'a> {
    spec: String,
    base: &'a BaseSpec,
    output: &'a std::path::Path,
    format: &'a str,
}

pub fn build(args: &BaseBuildArgs, g: &Globals) -> Result<BaseResult> {
    let (mut spec, origin) = match &args.spec {
        Some(p) => (BaseSpec::load(p)?, p.display().to_string()),
        None => (
            BaseSpec::builtin(),
            "built-in debian-trixie.yaml".to_string(),
        ),
    };
    let to_ami = args.output.as_os_str() == "ami";
    if let Some(s) = &args.disk_size {
        spec.size = crate::recipe::Size::parse(s).map_err(|e| crate::input!("--disk-size {e}"))?;
        spec.validate("--disk-size")?;
        if to_ami {
            crate::disk::grow::whole_gib(spec.size)?;
        }
    }
    let sink = if to_ami {
        let target = ami_target(&args.publish)?;
        target.check()?;
        Sink::Ami(target)
    } else {
        // The one table of AMI-only options (recipe::AMI_ONLY), flags merged as a bake does.
        let mut asked = crate::recipe::Recipe {
            output: Some(args.output.clone()),
            region: args.publish.region.clone(),
            copy_to: args.publish.copy_to.clone(),
            share_with: args.publish.share_with.clone(),
            ..Default::default()
        };
        asked.merge_ami_flags(&args.publish.ami.spec());
        if let Some(o) = asked.ami_only_options_on_a_file().first() {
            return Err(crate::input!(
                "{} applies only to `--output ami`; drop it for a file output ({})",
                o.flag,
                args.output.display()
            ));
        }
        let format = Format::from_output_path(&args.output)?;
        if !args.dry_run {
            PendingOutput::check(&args.output, args.force, "output")?;
        }
        Sink::File(FileTarget {
            path: args.output.clone(),
            format,
            keep_on_error: args.publish.keep_on_error,
        })
    };
    let scratch = tempfile::Builder::new()
        .prefix("bakery-layers-")
        .tempdir()?;
    let layers = crate::recipe::layer::resolve_all(&spec.layers, &args.layer_path, scratch.path())?;
    if args.dry_run {
        let plan = BuildPlan {
            spec: origin,
            base: &spec,
            output: &args.output,
            format: match &sink {
                Sink::Ami(_) => "ami",
                Sink::File(f) => f.format.as_str(),
            },
        };
        return Ok(BaseResult::Printed(serde_json::to_string_pretty(&plan)?));
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let (job, source) = debootstrap::job(&spec, &layers, &env)?;
    naming::validate_ami_name(&job.name).map_err(|e| crate::input!("{e}"))?;
    Ok(BaseResult::Built(Box::new(pipeline::run(
        &job, source, sink, g,
    )?)))
}

/// Refuse a spec that cannot be built here before creating anything.
pub fn require_tools() -> Result<()> {
    debootstrap::require_tools()
}

/// One published version of a base (`bakery base list`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BaseVersion {
    pub image_id: String,
    pub name: String,
    pub created: String,
    pub state: String,
    /// The `base_ami_version` tag.
    pub version: Option<String>,
}

/// `bakery base list`: per region, newest first. JSON: `{"REGION": [BaseVersion, ...]}`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(transparent)]
pub struct BaseList(pub std::collections::BTreeMap<String, Vec<BaseVersion>>);

impl crate::output::Report for BaseList {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .flat_map(|(r, v)| {
                v.iter().map(move |i| {
                    vec![
                        r.clone(),
                        i.version.clone().unwrap_or_else(|| "?".into()),
                        i.image_id.clone(),
                        i.created.clone(),
                        i.state.clone(),
                        i.name.clone(),
                    ]
                })
            })
            .collect();
        crate::output::table(
            &["REGION", "VERSION", "IMAGE", "CREATED", "STATE", "NAME"],
            &rows,
            "no base versions found",
        )
    }
}

/// `bakery base list`: the versions of a base per region, newest first.
pub fn list(a: &BaseListArgs) -> Result<BaseList> {
    let aws = Aws::load(true)?;
    let regions = if a.region.is_empty() {
        vec![aws.region(None)?]
    } else {
        crate::context::check_regions(&a.region, "--region")?;
        a.region.clone()
    };
    let mut out = std::collections::BTreeMap::new();
    for r in regions {
        let images = aws.rt.block_on(ami::list_images(&aws.ctx, &r, &a.name))?;
        out.insert(
            r,
            images
                .iter()
                .map(|i| BaseVersion {
                    image_id: i.id.clone(),
                    name: i.name.clone(),
                    created: i.creation_date.clone(),
                    state: i.state.clone(),
                    version: i.tags.get("base_ami_version").cloned(),
                })
                .collect(),
        );
    }
    Ok(BaseList(out))
}
