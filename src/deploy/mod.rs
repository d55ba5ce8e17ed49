//! Deploy: move an Auto Scaling group or an Asgard-style cluster onto an image, in every region
//! of a bake manifest, and undo it.
//!
//! - `plan`: pure decisions (next generation, retention, waves, batches, what rollback restores)
//! - `state`: what a deploy records as tags on the groups (rollback/status need nothing else)
//! - `lt`, `asg`, `targets`: launch template versions, groups, target health (target groups and
//!   Classic Load Balancers)
//! - `clone`, `alarms`: the next red/black generation as a faithful copy of the serving one
//! - `swap`, `rolling`, `redblack` (+ `canary`, `canary_stage`): the strategies and their rollbacks
//! - `status`: what a cluster or group runs now
//! - `hooks`: the plugin hook points (pre-deploy, post-deploy, deploy-failed, rollback)

pub mod alarms;
pub mod asg;
pub mod canary;
pub mod canary_stage;
pub mod clone;
pub mod hooks;
pub mod lt;
pub mod plan;
pub mod redblack;
pub mod rolling;
pub mod state;
pub mod status;
pub mod summary;
pub mod swap;
pub mod targets;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{error, info};

use crate::aws::client::AwsContext;
use crate::aws::ledger::Ledger;
use crate::cli::deploy::{DeployArgs, RollbackArgs, StatusArgs, Strategy, TargetArgs, WaitArgs};
use crate::error::{Interrupted, EXIT_INTERRUPTED};
use crate::input;
use crate::plugin::Hook;
use crate::sys::signals;

/// One line for an SDK error of any service.
pub(crate) fn sdk<E, R>(e: aws_sdk_ec2::error::SdkError<E, R>) -> anyhow::Error
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    // Typed, so a caller can branch on the service's code (`aws::error::code_of`).
    crate::aws::error::sdk(e)
}

/// How long and how often to wait for instances, and how many termination signals had arrived
/// when the waiting began: one more stops the wait with [`Interrupted`].
#[derive(Debug, Clone)]
pub struct Wait {
    pub timeout: Duration,
    pub poll: Duration,
    pub signals: usize,
}

impl Wait {
    pub fn of(a: &WaitArgs) -> Wait {
        Wait {
            timeout: Duration::from_secs(a.wait_timeout),
            poll: Duration::from_millis(a.poll_ms.max(10)),
            signals: 0,
        }
    }

    /// The same waits for a rollback: the signals so far started it, only a new one stops it.
    pub fn for_cleanup(&self) -> Wait {
        Wait {
            signals: signals::count(),
            ..self.clone()
        }
    }

    /// Err([`Interrupted`]) once a signal arrived after this wait's start.
    pub fn check(&self) -> Result<()> {
        if signals::count() > self.signals {
            return Err(anyhow::Error::new(Interrupted));
        }
        Ok(())
    }

    /// Sleep `d`, waking within 100 ms of a signal (then Err([`Interrupted`])).
    pub async fn nap(&self, d: Duration) -> Result<()> {
        let end = tokio::time::Instant::now() + d;
        loop {
            self.check()?;
            let now = tokio::time::Instant::now();
            if now >= end {
                return Ok(());
            }
            tokio::time::sleep((end - now).min(Duration::from_millis(100))).await;
        }
    }
}

/// A rollback that a signal stopped: what it left, and the command that finishes it.
#[derive(Debug)]
pub struct Abandoned(pub String);

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Abandoned {}

/// The deploy stopped because of a signal (rolled back, or its rollback stopped too).
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.is::<Interrupted>() || c.is::<Abandoned>())
}

/// Run the cleanup `fut` unless a signal arrives after `base` had (then None: it stopped midway).
pub async fn unless_signalled<T>(base: usize, fut: impl Future<Output = T>) -> Option<T> {
    let watch = async {
        while signals::count() <= base {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        biased;
        r = fut => Some(r),
        _ = watch => None,
    }
}

/// What the user pointed at.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Asg(String),
    Cluster(String),
}

impl Target {
    pub fn of(t: &TargetArgs) -> Result<Target> {
        match (&t.asg, &t.cluster) {
            (Some(a), None) => Ok(Target::Asg(a.clone())),
            (None, Some(c)) => Ok(Target::Cluster(c.clone())),
            _ => Err(input!("give one of --asg NAME or --cluster NAME")),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Target::Asg(n) | Target::Cluster(n) => n,
        }
    }
}

/// (region, image) pairs, and the manifest's JSON when deployed from one.
type Images = (Vec<(String, String)>, Option<Value>);

/// Regions and the image for each, from the manifest (narrowed by --region) or --image.
fn images(args: &DeployArgs, ctx: &AwsContext) -> Result<Images> {
    if let Some(img) = &args.image {
        if !img.starts_with("ami-") {
            return Err(input!("--image {img}: not an AMI id (ami-...)"));
        }
        if args.target.region.len() > 1 {
            return Err(input!("--image names one AMI of one region; give one --region, or deploy a manifest to several regions"));
        }
        let region = ctx.region(args.target.region.first().map(String::as_str))?;
        return Ok((vec![(region, img.clone())], None));
    }
    let path = args
        .manifest
        .as_deref()
        .expect("clap requires --manifest or --image");
    // The type the bake wrote (`bakery bake` and `base build` with `--output ami`).
    let m = crate::manifest::Manifest::load(path)?;
    let raw = serde_json::to_value(&m)?;
    if m.amis.is_empty() {
        return Err(input!(
            "{}: the manifest lists no AMIs (`amis`): was it baked with --output ami?",
            path.display()
        ));
    }
    let have: Vec<&str> = m.amis.iter().map(|a| a.region.as_str()).collect();
    let mut out = Vec::new();
    if args.target.region.is_empty() {
        out.extend(
            m.amis
                .iter()
                .map(|a| (a.region.clone(), a.image_id.clone())),
        );
    } else {
        for r in &args.target.region {
            let a = m.amis.iter().find(|a| &a.region == r).ok_or_else(|| {
                input!(
                    "the manifest {} has no AMI for region {r} (it has {}{})",
                    path.display(),
                    have.join(", "),
                    format!(" of {}", m.name)
                )
            })?;
            out.push((r.clone(), a.image_id.clone()));
        }
    }
    Ok((out, Some(raw)))
}

/// Options every region's deploy shares.
#[derive(Debug, Clone)]
pub struct Options {
    pub deploy_id: String,
    pub strategy: Strategy,
    pub keep: usize,
    pub wait: Wait,
    pub rolling: rolling::RollingOptions,
    pub canary: Option<canary::Canary>,
}

/// What to add when the target is missing in `region` of a deploy to several `regions` (a
/// manifest's): how to deploy to the others only.
pub fn other_regions_hint(region: &str, regions: &[String]) -> String {
    let others: Vec<&str> = regions
        .iter()
        .map(String::as_str)
        .filter(|r| *r != region)
        .collect();
    if others.is_empty() {
        return String::new();
    }
    format!(
        "; this deploy covers {} (every region of the manifest unless --region narrows it): pass --region {} to deploy only there, or create it in {region} first",
        regions.join(", "),
        others.join(",")
    )
}

/// Check one region before anything changes: the image is there, the group or cluster is there
/// and launches from a launch template, every tag bakery writes fits in AWS's limit, and a
/// cluster's serving generation can be cloned faithfully (`clone::check`).
async fn validate(
    ctx: &AwsContext,
    region: &str,
    image: &str,
    target: &Target,
    regions: &[String],
) -> Result<()> {
    let hint = other_regions_hint(region, regions);
    let ec2 = ctx.ec2(region);
    let found = match ec2.describe_images().image_ids(image).send().await {
        Ok(o) => o.images().iter().any(|i| i.image_id() == Some(image)),
        Err(e) => {
            let msg = crate::aws::client::describe_sdk_error(&e);
            if crate::aws::error::code(&e).is_some_and(crate::aws::error::is_unknown_ami) {
                false
            } else {
                return Err(anyhow!(msg).context(format!("looking up image {image} in {region}")));
            }
        }
    };
    if !found {
        return Err(input!("image {image} is not in region {region} (AMIs are regional: copy it there, or deploy the manifest of a bake that did)"));
    }
    let a = ctx.autoscaling(region);
    match target {
        Target::Asg(name) => {
            let g = asg::describe(&a, name)
                .await?
                .ok_or_else(|| input!("no Auto Scaling group named {name} in {region}{hint}"))?;
            asg::source(&g, region)?;
            let keys: Vec<&str> = g.tags().iter().filter_map(|t| t.key()).collect();
            clone::check_tag_room(
                name,
                region,
                &keys,
                &[state::SWAP_TAG],
                "the deploy record bakery keeps for a rollback",
            )?;
        }
        Target::Cluster(c) => {
            let groups = asg::cluster_groups(&a, c).await?;
            let serving = redblack::serving(&groups).ok_or_else(|| {
                if groups.is_empty() {
                    input!("cluster {c} has no generation in {region} (no Auto Scaling group named {c} or {c}-vNNN){hint}")
                } else {
                    input!("cluster {c} has no enabled generation in {region}: nothing serves to copy from")
                }
            })?;
            asg::source(serving, region)?;
            redblack::check_pending(&groups, c, region, image)?;
            let next = redblack::next_name(c, &groups)?;
            let s = clone::read(ctx, region, serving).await?;
            clone::check(&s, region, &next, state::GEN_TAG)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionResult {
    pub region: String,
    pub image_id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

async fn deploy_region(
    ctx: &AwsContext,
    region: &str,
    image: &str,
    target: &Target,
    o: &Options,
) -> Result<Value> {
    let ledger = Ledger::new(&o.deploy_id);
    let base = signals::count();
    let r = match (target, o.strategy) {
        (Target::Asg(name), Strategy::Swap) => swap::swap(ctx, region, name, image, o, &ledger)
            .await
            .map(|r| serde_json::to_value(r).unwrap_or_default()),
        (Target::Asg(name), Strategy::Rolling) => {
            rolling::rolling(ctx, region, name, image, o, &ledger).await
        }
        (Target::Cluster(c), Strategy::RedBlack) => {
            redblack::deploy(ctx, region, c, image, o, &ledger).await
        }
        _ => unreachable!("checked before"),
    };
    if let Err(e) = r {
        let left: Vec<String> = ledger.entries().iter().map(|r| r.describe()).collect();
        let cleanup_base = signals::count().max(base);
        match unless_signalled(cleanup_base, ledger.rollback(ctx)).await {
            Some(failures) if !failures.is_empty() => {
                error!("{region}: cleanup left {}", failures.join("; "))
            }
            Some(_) => {}
            None => {
                return Err(abandoned(
                    &e,
                    &left.join(", "),
                    &format!("{} finishes it", rollback_command(target, region)),
                ));
            }
        }
        return Err(e);
    }
    r
}

/// The error of a deploy whose rollback a signal stopped: why it stopped, what may be left.
/// `finish` says what finishes the rollback.
pub fn abandoned(e: &anyhow::Error, left: &str, finish: &str) -> anyhow::Error {
    anyhow::Error::new(Abandoned(format!(
        "{e:#}; a signal stopped its rollback, which may have left {left}: {finish}"
    )))
}

/// The command that finishes an interrupted deploy's rollback in `region`.
pub fn rollback_command(target: &Target, region: &str) -> String {
    match target {
        Target::Asg(n) => format!("`bakery rollback --asg {n} --region {region}`"),
        Target::Cluster(c) => format!("`bakery rollback --cluster {c} --region {region}`"),
    }
}

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    crate::context::runtime()
}

/// The command layer's result writer: one JSON document on stdout.
#[allow(clippy::print_stdout)]
fn print(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn run_deploy(args: &DeployArgs) -> Result<i32> {
    let started = std::time::Instant::now();
    let target = Target::of(&args.target)?;
    let strategy = match (&target, args.strategy) {
        (Target::Asg(_), None) => Strategy::Swap,
        (Target::Cluster(_), None) => Strategy::RedBlack,
        (Target::Asg(_), Some(Strategy::RedBlack)) => return Err(input!("--strategy red-black deploys a cluster: use --cluster NAME (its generations are NAME-vNNN)")),
        (Target::Cluster(_), Some(s @ (Strategy::Swap | Strategy::Rolling))) => {
            return Err(input!("--strategy {} changes one group: use --asg NAME (or --strategy red-black for a cluster)", if s == Strategy::Swap { "swap" } else { "rolling" }))
        }
        (_, Some(s)) => s,
    };
    if (args.canary_size.is_some() || args.canary_config.is_some())
        && strategy != Strategy::RedBlack
    {
        return Err(input!(
            "--canary-size and --canary need --strategy red-black (the canary is a generation of the cluster)"
        ));
    }
    if args.keep == 0 {
        return Err(input!(
            "--keep 0 would delete the serving generation; keep at least 1 (2 allows a rollback)"
        ));
    }
    let plugins = hooks::resolve(&args.plugins)?;
    let canary = canary::Canary::from_args(args)?;
    // Ctrl-C/SIGTERM: the waits stop, what the deploy made is rolled back, exit 130.
    signals::install();
    let rt = runtime()?;
    let ctx = rt.block_on(AwsContext::load());
    // No credentials, or a BAKERY_AWS_*_TIMEOUT that is not a number: one line, exit 2.
    rt.block_on(ctx.require_credentials())?;
    let (jobs, manifest) = images(args, &ctx)?;
    let regions: Vec<String> = jobs.iter().map(|(r, _)| r.clone()).collect();
    let waves = plan::waves(args.waves.as_deref(), &regions)?;
    let o = Options {
        deploy_id: format!("dp-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        strategy,
        keep: args.keep,
        wait: Wait::of(&args.wait),
        rolling: rolling::RollingOptions::of(args),
        canary,
    };

    // Every region is checked before any is changed: bad input changes nothing.
    rt.block_on(async {
        let checks = jobs
            .iter()
            .map(|(r, img)| validate(&ctx, r, img, &target, &regions));
        for r in futures::future::join_all(checks).await {
            r?;
        }
        canary::preflight(o.canary.as_ref(), &ctx, &regions, &target).await?;
        Ok::<_, anyhow::Error>(())
    })?;

    let images: BTreeMap<&str, &str> = jobs.iter().map(|(r, i)| (r.as_str(), i.as_str())).collect();
    let event = hooks::event(
        Hook::PreDeploy,
        &o.deploy_id,
        &target,
        strategy,
        &images,
        manifest.clone(),
    );
    crate::plugin::run_hook(&plugins, Hook::PreDeploy, &event).context("pre-deploy plugins")?;

    info!(
        "deploy {}: {} {} to {}",
        o.deploy_id,
        strategy_name(strategy),
        target.name(),
        waves
            .iter()
            .map(|w| w.join("+"))
            .collect::<Vec<_>>()
            .join(" then ")
    );
    let mut results: Vec<RegionResult> = Vec::new();
    let (mut failed, mut interrupted) = (false, false);
    for wave in &waves {
        interrupted |= signals::interrupted();
        if failed || interrupted {
            let why = if interrupted {
                "interrupted before it started"
            } else {
                "an earlier wave failed"
            };
            results.extend(wave.iter().map(|r| RegionResult {
                region: r.clone(),
                image_id: images[r.as_str()].to_string(),
                status: "skipped".into(),
                error: Some(why.into()),
                detail: Value::Null,
            }));
            continue;
        }
        let runs = wave.iter().map(|r| {
            let (ctx, target, o) = (&ctx, &target, &o);
            let img = images[r.as_str()];
            async move {
                (
                    r.clone(),
                    img.to_string(),
                    deploy_region(ctx, r, img, target, o).await,
                )
            }
        });
        for (region, image_id, r) in rt.block_on(futures::future::join_all(runs)) {
            match r {
                Ok(detail) => results.push(RegionResult {
                    region,
                    image_id,
                    status: "succeeded".into(),
                    error: None,
                    detail,
                }),
                Err(e) if is_interrupted(&e) => {
                    interrupted = true;
                    let stopped = e.chain().any(|c| c.is::<Abandoned>());
                    error!("{region}: {e:#}");
                    let status = if stopped {
                        "interrupted-rollback-stopped"
                    } else {
                        "interrupted"
                    };
                    results.push(RegionResult {
                        region,
                        image_id,
                        status: status.into(),
                        error: Some(format!("{e:#}")),
                        detail: Value::Null,
                    });
                }
                Err(e) => {
                    failed = true;
                    error!("{region}: {e:#}");
                    results.push(RegionResult {
                        region,
                        image_id,
                        status: "failed".into(),
                        error: Some(format!("{e:#}")),
                        detail: Value::Null,
                    });
                }
            }
        }
    }
    let status = if interrupted {
        "interrupted"
    } else if failed {
        "failed"
    } else {
        "succeeded"
    };
    let out = json!({
        "kind": "deploy", "deploy_id": o.deploy_id, "strategy": strategy, "target": target,
        "status": status, "regions": results,
    });
    let line = if interrupted {
        Some(interrupted_line(&o.deploy_id, &target, &results))
    } else {
        None
    };
    let hook = if failed || interrupted {
        Hook::DeployFailed
    } else {
        Hook::PostDeploy
    };
    let mut ev = hooks::event(hook, &o.deploy_id, &target, strategy, &images, manifest);
    ev.status = Some(status.into());
    ev.extra
        .insert("regions".into(), serde_json::to_value(&results)?);
    if failed || interrupted {
        ev.error = line.clone().or_else(|| {
            results
                .iter()
                .find_map(|r| r.error.clone().map(|e| format!("{}: {e}", r.region)))
        });
    }
    if let Err(e) = crate::plugin::run_hook(&plugins, hook, &ev) {
        error!("{hook} plugins: {e:#}");
    }
    print(&out)?;
    if let Some(line) = line {
        // One line, like every error, but its own: "everything was released" may not be true.
        eprintln!("bakery: error: {line}");
        return Ok(EXIT_INTERRUPTED);
    }
    if failed {
        let first = results
            .iter()
            .find(|r| r.status == "failed")
            .and_then(|r| r.error.clone().map(|e| format!("{}: {e}", r.region)))
            .unwrap_or_default();
        return Err(anyhow!("deploy {} failed ({first})", o.deploy_id));
    }
    crate::progress::done(&summary::deploy_line(&out, started.elapsed().as_secs_f64()));
    Ok(0)
}

/// The one line an interrupted deploy ends with: per region what was undone, what is left.
fn interrupted_line(id: &str, target: &Target, results: &[RegionResult]) -> String {
    let of = |status: &str| {
        results
            .iter()
            .filter(|r| r.status == status)
            .map(|r| r.region.as_str())
            .collect::<Vec<_>>()
    };
    let mut parts = Vec::new();
    let undone = of("interrupted");
    if !undone.is_empty() {
        parts.push(format!("rolled back in {}", undone.join(", ")));
    }
    for r in results
        .iter()
        .filter(|r| r.status == "interrupted-rollback-stopped")
    {
        parts.push(format!(
            "{}: {}",
            r.region,
            r.error.as_deref().unwrap_or_default()
        ));
    }
    let done = of("succeeded");
    if !done.is_empty() {
        parts.push(format!(
            "already deployed in {} (`bakery rollback` undoes it: {})",
            done.join(", "),
            done.iter()
                .map(|r| rollback_command(target, r))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let failed = of("failed");
    if !failed.is_empty() {
        parts.push(format!("failed and rolled back in {}", failed.join(", ")));
    }
    let skipped = of("skipped");
    if !skipped.is_empty() {
        parts.push(format!("not started in {}", skipped.join(", ")));
    }
    format!(
        "deploy {id} to {} interrupted: {}",
        target.name(),
        parts.join("; ")
    )
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Swap => "swap",
        Strategy::Rolling => "rolling",
        Strategy::RedBlack => "red-black",
    }
}

fn regions_of(t: &TargetArgs, ctx: &AwsContext) -> Result<Vec<String>> {
    if t.region.is_empty() {
        Ok(vec![ctx.region(None)?])
    } else {
        Ok(t.region.clone())
    }
}

pub fn run_rollback(args: &RollbackArgs) -> Result<i32> {
    let started = std::time::Instant::now();
    let target = Target::of(&args.target)?;
    let plugins = hooks::resolve(&args.plugins)?;
    let rt = runtime()?;
    let ctx = rt.block_on(AwsContext::load());
    // No credentials, or a BAKERY_AWS_*_TIMEOUT that is not a number: one line, exit 2.
    rt.block_on(ctx.require_credentials())?;
    let regions = regions_of(&args.target, &ctx)?;
    let wait = Wait::of(&args.wait);
    let runs = regions.iter().map(|r| {
        let (ctx, target, wait) = (&ctx, &target, &wait);
        async move {
            let res = match target {
                Target::Asg(n) => swap::rollback(ctx, r, n).await,
                Target::Cluster(c) => redblack::rollback(ctx, r, c, wait).await,
            };
            (r.clone(), res)
        }
    });
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (region, r) in rt.block_on(futures::future::join_all(runs)) {
        match r {
            Ok(v) => out.push(json!({"region": region, "status": "rolled-back", "detail": v})),
            Err(e) => {
                out.push(json!({"region": region, "status": "failed", "error": format!("{e:#}")}));
                errors.push((region, e));
            }
        }
    }
    let status = if errors.is_empty() {
        "succeeded"
    } else {
        "failed"
    };
    let id = format!("rb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut ev = crate::plugin::Event::new(Hook::Rollback, &id)
        .with("deploy_id", id.as_str())
        .with("target", serde_json::to_value(&target)?)
        .with("regions", Value::Array(out.clone()));
    ev.status = Some(status.into());
    if let Err(e) = crate::plugin::run_hook(&plugins, Hook::Rollback, &ev) {
        error!("rollback plugins: {e:#}");
    }
    let record = json!({"kind": "rollback", "rollback_id": id, "target": target, "status": status, "regions": out});
    print(&record)?;
    if let Some((region, e)) = errors.into_iter().next() {
        // An input error (nothing to roll back) keeps its exit code.
        return Err(e.context(format!("rollback of {} in {region}", target.name())));
    }
    crate::progress::done(&summary::rollback_line(
        &record,
        started.elapsed().as_secs_f64(),
    ));
    Ok(0)
}

/// The command layer: the status as a table, or JSON with `--json`, on stdout.
#[allow(clippy::print_stdout)]
pub fn run_status(args: &StatusArgs) -> Result<i32> {
    let target = Target::of(&args.target)?;
    let rt = runtime()?;
    let ctx = rt.block_on(AwsContext::load());
    // No credentials, or a BAKERY_AWS_*_TIMEOUT that is not a number: one line, exit 2.
    rt.block_on(ctx.require_credentials())?;
    let regions = regions_of(&args.target, &ctx)?;
    let runs = regions.iter().map(|r| status::region(&ctx, r, &target));
    let mut out = Vec::new();
    for r in rt.block_on(futures::future::join_all(runs)) {
        out.push(r?);
    }
    if let Target::Cluster(c) = &target {
        if out
            .iter()
            .all(|r| r["generations"].as_array().is_none_or(|g| g.is_empty()))
        {
            return Err(input!(
                "cluster {c} has no generation in {} (no Auto Scaling group named {c} or {c}-vNNN); check --cluster and --region",
                regions.join(", ")
            ));
        }
    }
    let v = json!({"kind": "status", "target": target, "regions": out});
    if args.json {
        print(&v)?;
    } else {
        print!("{}", status::table(&v));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_target_missing_in_one_region_of_several_points_at_region() {
        let rs = ["us-east-1".to_string(), "eu-west-1".to_string()];
        let h = super::other_regions_hint("eu-west-1", &rs);
        assert!(h.contains("--region us-east-1"), "{h}");
        assert!(h.contains("us-east-1, eu-west-1"), "{h}");
        assert_eq!(super::other_regions_hint("us-east-1", &rs[..1]), "");
    }

    use super::*;

    fn res(region: &str, status: &str, error: Option<&str>) -> RegionResult {
        RegionResult {
            region: region.into(),
            image_id: "ami-1".into(),
            status: status.into(),
            error: error.map(String::from),
            detail: Value::Null,
        }
    }

    #[test]
    fn the_interrupted_line_says_per_region_what_was_undone_and_what_is_left() {
        let t = Target::Cluster("shop-prod".into());
        let all = [
            res("us-east-1", "succeeded", None),
            res("eu-west-1", "interrupted", Some("interrupted")),
            res(
                "us-west-2",
                "interrupted-rollback-stopped",
                Some(
                    "left X: `bakery rollback --cluster shop-prod --region us-west-2` finishes it",
                ),
            ),
            res(
                "ap-south-1",
                "skipped",
                Some("interrupted before it started"),
            ),
        ];
        let line = interrupted_line("dp-1", &t, &all);
        assert_eq!(
            line,
            "deploy dp-1 to shop-prod interrupted: rolled back in eu-west-1; us-west-2: left X: `bakery rollback --cluster shop-prod --region us-west-2` finishes it; \
             already deployed in us-east-1 (`bakery rollback` undoes it: `bakery rollback --cluster shop-prod --region us-east-1`); not started in ap-south-1"
        );
        assert_eq!(
            interrupted_line("dp-2", &Target::Asg("api".into()), &all[1..2]),
            "deploy dp-2 to api interrupted: rolled back in eu-west-1"
        );
    }
}
