//! The canary analysis stage of a red/black deploy (`bakery deploy --cluster C --canary
//! canary.yaml`), the way Spinnaker runs Kayenta's: beside the canary generation
//! `C-vNNN` (the new image, `--canary-size` instances) a **baseline** group `C-vNNN-baseline` runs
//! the serving image (the serving generation's own launch template version), the same size, in
//! the same target groups, so that both take the same traffic at the same time. Once both are
//! healthy the canary is judged every `--interval` for `--canary-minutes` on everything both
//! have reported since, by `crate::canary`'s judge over the config's CloudWatch/Prometheus
//! sources (`{group}` = each group's name). Then ([`crate::canary::stage`]):
//!
//! - any judgement that is **Fail** ends it at once; the last judgement decides:
//! - **Pass**: the baseline goes, the canary is grown to full size and the red/black continues;
//! - **Fail**: the deploy fails: both groups (and the canary's launch template version) are
//!   removed, the serving generation was never touched, `deploy-failed` runs, exit 1;
//! - **Marginal**: as the config's `marginal` says: `fail`, `pass`, or `manual`: the canary's
//!   record says it waits, and `bakery canary approve|reject --cluster C` (a tag on the canary
//!   generation) decides; no decision within `--approval-timeout` is a rejection.
//!
//! The baseline is in the deploy's ledger like the canary: a failure or Ctrl-C removes both. A
//! deploy killed outright leaves them tagged: running it again resumes it (the baseline is
//! reused, the canary judged afresh), `bakery rollback --cluster C` removes both. Every
//! judgement can be written as a report (`--canary-report DIR`: `C-REGION.html` and `.json`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{info, warn};

use super::asg::{self, Size};
use super::canary::Gate;
use super::state::{self, GenRecord, GEN_TAG};
use super::{lt, targets};
use crate::aws::client::AwsContext;
use crate::aws::ledger::Resource;
use crate::canary::config::Config;
use crate::canary::judge::Judgement;
use crate::canary::stage::{self, Decision};
use crate::canary::{report, source};
use crate::cli::canary::ApprovalArgs;
use crate::cli::deploy::DeployArgs;
use crate::input;

/// On the canary generation: how its analysis goes ([`Progress`]).
pub const CANARY_TAG: &str = "bakery:canary";
/// On the canary generation: a person's decision on a Marginal canary ([`Approval`]).
pub const APPROVAL_TAG: &str = "bakery:canary-approval";
/// On the baseline group: which canary it is the baseline of ([`BaselineRecord`]).
pub const BASELINE_TAG: &str = "bakery:canary-baseline";

/// The built-in analysis of `--canary FILE`.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub config: Config,
    pub path: PathBuf,
    pub interval: Duration,
    pub report_dir: Option<PathBuf>,
    pub approval_timeout: Duration,
}

impl Analysis {
    /// Read and check the config and the stage's flags (input errors).
    pub fn from_args(path: &Path, a: &DeployArgs) -> Result<Analysis> {
        let config = Config::load(path)?;
        config.check_sources(&path.display().to_string())?;
        let interval = crate::canary::parse_duration(&a.interval)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                input!(
                    "--interval {}: give how often to judge, e.g. 30s, 5m, 1h",
                    a.interval
                )
            })?;
        if let Some(d) = &a.canary_report {
            if !d.is_dir() {
                return Err(input!(
                    "--canary-report {}: no such directory; create it first",
                    d.display()
                ));
            }
        }
        Ok(Analysis {
            config,
            path: path.to_path_buf(),
            interval,
            report_dir: a.canary_report.clone(),
            approval_timeout: Duration::from_secs(a.approval_timeout),
        })
    }
}

/// The baseline group of canary generation `canary` (not a generation of the cluster:
/// `plan::generation_of` never matches it).
pub fn baseline_name(canary: &str) -> String {
    format!("{canary}-baseline")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineRecord {
    pub id: String,
    pub canary: String,
    #[serde(rename = "img")]
    pub image: String,
}

/// `st`: `running` or `awaiting-approval`; the latest judgement's score and verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(rename = "b")]
    pub baseline: String,
    pub st: String,
    pub n: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// `approve` or `reject`.
    pub d: String,
    pub by: String,
}

/// The metrics of `cluster`'s serving generation read once (both sides), before anything
/// changes: a query a source refuses is an input error, an unreachable source a failure.
pub async fn preflight(a: &Analysis, ctx: &AwsContext, region: &str, cluster: &str) -> Result<()> {
    let groups = asg::cluster_groups(&ctx.autoscaling(region), cluster).await?;
    let Some(serving) = super::redblack::serving(&groups) else {
        return Ok(()); // validate() says why
    };
    let name = asg::name(serving).to_string();
    let end = crate::canary::now();
    source::fetch(
        &a.config,
        Some(&source::Aws { ctx, region }),
        &source::Groups {
            baseline: name.clone(),
            canary: name,
        },
        source::Window {
            start: end - 300.0,
            end,
        },
    )
    .await
    .with_context(|| {
        format!(
            "checking the metrics of {} ({region}) before the canary",
            a.path.display()
        )
    })?;
    Ok(())
}

/// Run the analysis of canary `g.canary` against a new baseline group; Ok((score, detail)) when
/// it may be promoted (the baseline is gone then), Err when it failed.
pub async fn run(
    a: &Analysis,
    size: i32,
    lifetime: Duration,
    g: &Gate<'_>,
) -> Result<(f64, Value)> {
    let (region, canary) = (g.region, g.canary);
    let aws = g.ctx.autoscaling(region);
    let baseline = baseline_name(canary);
    let serving_image = make_baseline(size, g, &baseline).await?;
    targets::wait_healthy(g.ctx, region, &baseline, &HashSet::new(), g.wait)
        .await
        .with_context(|| format!("baseline {baseline} ({region})"))?;
    let times = stage::judgement_times(lifetime, a.interval);
    info!(
        "{region}: canary {canary} ({}) and baseline {baseline} ({serving_image}) healthy; judged {} time(s) over {:.0}s",
        g.image,
        times.len(),
        lifetime.as_secs_f64()
    );
    let started = tokio::time::Instant::now();
    let start = crate::canary::now();
    let mut progress = Progress {
        baseline: baseline.clone(),
        st: "running".into(),
        n: 0,
        score: None,
        v: None,
    };
    state::write(&aws, canary, CANARY_TAG, &progress).await?;
    let mut history = Vec::new();
    for (i, t) in times.iter().enumerate() {
        let due = started + *t;
        g.wait
            .nap(due.saturating_duration_since(tokio::time::Instant::now()))
            .await
            .with_context(|| format!("canary {canary} ({region}) while it ran"))?;
        let end = crate::canary::now().max(start + 1.0);
        let j = judge_once(a, g, &baseline, start, end, i + 1, times.len()).await?;
        history.push(json!({"after_seconds": (end - start).round(), "score": j.score, "classification": j.classification}));
        progress.n = i + 1;
        progress.score = Some(j.score);
        progress.v = Some(j.classification.as_str().into());
        let last = i + 1 == times.len();
        let decision = stage::decide(j.classification, last, a.config.marginal);
        info!(
            "{region}: canary {canary} judgement {}/{} after {:.0}s: {}",
            i + 1,
            times.len(),
            end - start,
            j.summary_line()
        );
        let verdict = match decision {
            Decision::Continue => {
                state::write(&aws, canary, CANARY_TAG, &progress).await?;
                continue;
            }
            Decision::Stop => Err(anyhow!(
                "canary {canary} ({region}) failed: {}; it and its baseline are removed",
                j.summary_line()
            )),
            Decision::Promote => Ok("promoted"),
            Decision::AwaitApproval => {
                progress.st = "awaiting-approval".into();
                state::write(&aws, canary, CANARY_TAG, &progress).await?;
                await_approval(a, g, &j).await
            }
        };
        let decided = verdict?;
        // The baseline has served its purpose.
        asg::delete_group(&aws, &baseline).await?;
        g.ledger.forget(&Resource::AutoScalingGroup {
            region: region.into(),
            name: baseline.clone(),
        });
        return Ok((
            j.score,
            json!({
                "baseline": baseline, "baseline_image": serving_image, "classification": j.classification,
                "decision": decided, "judgements": history,
                "metrics": j.metrics.iter().map(|m| json!({"name": m.name, "classification": m.classification, "ratio": m.ratio})).collect::<Vec<_>>(),
                "report": a.report_dir.as_ref().map(|d| report_path(d, g.cluster, region, "html")),
            }),
        ));
    }
    unreachable!("judgement_times always ends with the last judgement")
}

/// The baseline group: a copy of the serving generation at `size` running its launch template
/// version (so its image); reused when a resumed deploy finds it. The serving image.
async fn make_baseline(size: i32, g: &Gate<'_>, baseline: &str) -> Result<String> {
    let (region, aws) = (g.region, g.ctx.autoscaling(g.region));
    // Read now: a serving generation that followed $Latest was pinned to its number before the
    // canary's version was made, and it is that number the baseline must run.
    let serving = asg::require(&aws, g.serving).await?;
    let src = asg::source(&serving, region)?;
    let cur = lt::resolve(&g.ctx.ec2(region), src.lt()).await?;
    if cur.image_id == g.image {
        return Err(anyhow!(
            "{} ({region}) launches the canary's image through {} ({}): no baseline of the serving image can be made",
            g.serving,
            src.lt().version,
            cur.image_id
        ));
    }
    g.ledger.record(Resource::AutoScalingGroup {
        region: region.into(),
        name: baseline.into(),
    });
    if let Some(old) = crate::aws::asg::describe(&aws, baseline).await? {
        let runs = old
            .launch_template()
            .and_then(|l| l.version())
            .map(String::from);
        if runs.as_deref() == Some(cur.number.to_string().as_str()) {
            info!("{region}: reusing baseline {baseline}");
            asg::resize(
                &aws,
                baseline,
                Size {
                    min: size,
                    max: size,
                    desired: size,
                },
            )
            .await?;
            return Ok(cur.image_id);
        }
        warn!(
            "{region}: {baseline} runs another version than {}: replaced",
            g.serving
        );
        asg::delete_group(&aws, baseline).await?;
    }
    let tag = state::tag(
        baseline,
        BASELINE_TAG,
        &BaselineRecord {
            id: g.deploy_id.into(),
            canary: g.canary.into(),
            image: cur.image_id.clone(),
        },
    )?;
    // A faithful copy of the serving generation (its lifecycle hooks gate the first launch, the
    // same target groups and balancers), at a fixed size: no scaling policies or schedule.
    let serving_state = super::clone::read(g.ctx, region, &serving).await?;
    super::clone::create(
        &aws,
        &serving_state,
        &src,
        baseline,
        &cur.template_id,
        cur.number,
        Size {
            min: size,
            max: size,
            desired: size,
        },
        vec![tag],
    )
    .await?;
    info!(
        "{region}: created baseline {baseline} ({size} instances of {}, version {} of {}) beside canary {}",
        cur.image_id, cur.number, cur.template_id, g.canary
    );
    Ok(cur.image_id)
}

/// One judgement of both groups over [start, end]; its report written when asked.
async fn judge_once(
    a: &Analysis,
    g: &Gate<'_>,
    baseline: &str,
    start: f64,
    end: f64,
    n: usize,
    of: usize,
) -> Result<Judgement> {
    let (b, c) = source::fetch(
        &a.config,
        Some(&source::Aws {
            ctx: g.ctx,
            region: g.region,
        }),
        &source::Groups {
            baseline: baseline.into(),
            canary: g.canary.into(),
        },
        source::Window { start, end },
    )
    .await
    .with_context(|| format!("reading the canary's metrics ({})", a.path.display()))?;
    let j = crate::canary::judge::judge(&a.config, &b, &c);
    if let Some(dir) = &a.report_dir {
        let meta = report::Meta {
            baseline: baseline.into(),
            canary: format!("{} ({})", g.canary, g.image),
            generated: crate::canary::rfc3339(end),
            title: Some(format!(
                "Canary {} against baseline {baseline}, {} — judgement {n} of {of}, {} to {}",
                g.canary,
                g.region,
                crate::canary::rfc3339(start),
                crate::canary::rfc3339(end)
            )),
        };
        crate::canary::write_report(&report_path(dir, g.cluster, g.region, "html"), &j, &meta)?;
        crate::disk::image::write_atomic(
            &report_path(dir, g.cluster, g.region, "json"),
            format!("{}\n", serde_json::to_string_pretty(&j)?).as_bytes(),
        )?;
    }
    Ok(j)
}

fn report_path(dir: &Path, cluster: &str, region: &str, ext: &str) -> PathBuf {
    dir.join(format!("{cluster}-{region}.{ext}"))
}

/// Wait for `bakery canary approve|reject`: Ok("approved") or the rejection as an error.
async fn await_approval(a: &Analysis, g: &Gate<'_>, j: &Judgement) -> Result<&'static str> {
    let (region, canary) = (g.region, g.canary);
    warn!(
        "{region}: canary {canary} is Marginal with score {} (pass {}): waiting up to {:.0}s for `bakery canary approve --cluster {} --region {region}` (or `reject`)",
        j.score,
        j.thresholds.pass,
        a.approval_timeout.as_secs_f64(),
        g.cluster
    );
    let aws = g.ctx.autoscaling(region);
    let until = tokio::time::Instant::now() + a.approval_timeout;
    loop {
        let now = asg::require(&aws, canary).await?;
        if let Some(ap) = state::read::<Approval>(&now, APPROVAL_TAG)? {
            return match ap.d.as_str() {
                "approve" => {
                    info!("{region}: canary {canary} approved by {}", ap.by);
                    Ok("approved")
                }
                _ => Err(anyhow!(
                    "canary {canary} ({region}) is Marginal (score {}) and {} rejected it; it and its baseline are removed",
                    j.score,
                    ap.by
                )),
            };
        }
        if tokio::time::Instant::now() >= until {
            return Err(anyhow!(
                "canary {canary} ({region}) is Marginal (score {}) and nobody approved it within {:.0}s (--approval-timeout); it and its baseline are removed",
                j.score,
                a.approval_timeout.as_secs_f64()
            ));
        }
        g.wait
            .nap(g.wait.poll.max(Duration::from_millis(200)))
            .await
            .with_context(|| format!("canary {canary} ({region}) while it waited for approval"))?;
    }
}

/// `bakery rollback` of a deploy that never finished: its canary's baseline goes with it.
pub async fn remove_baseline(ctx: &AwsContext, region: &str, canary: &str) -> Result<()> {
    crate::aws::asg::delete_group(&ctx.autoscaling(region), &baseline_name(canary)).await
}

/// `bakery canary approve|reject --cluster C`: decide every region's waiting canary.
pub fn run_approval(args: &ApprovalArgs, approve: bool) -> Result<Value> {
    let aws = crate::context::Aws::load(true)?;
    let regions = if args.region.is_empty() {
        vec![aws.region(None)?]
    } else {
        crate::context::check_regions(&args.region, "--region")?;
        args.region.clone()
    };
    let by = crate::context::creator(&crate::context::env_map());
    let d = if approve { "approve" } else { "reject" };
    let mut out = Vec::new();
    for region in &regions {
        let v = aws
            .rt
            .block_on(decide_region(&aws.ctx, region, &args.cluster, d, &by))?;
        out.push(v);
    }
    Ok(json!({"kind": "canary-approval", "cluster": args.cluster, "decision": d, "regions": out}))
}

async fn decide_region(
    ctx: &AwsContext,
    region: &str,
    cluster: &str,
    d: &str,
    by: &str,
) -> Result<Value> {
    let aws = ctx.autoscaling(region);
    let groups = asg::cluster_groups(&aws, cluster).await?;
    let waiting = groups.iter().find(|g| {
        state::read::<GenRecord>(g, GEN_TAG)
            .ok()
            .flatten()
            .is_some_and(|r| r.phase == "canary")
            && state::read::<Progress>(g, CANARY_TAG)
                .ok()
                .flatten()
                .is_some_and(|p| p.st == "awaiting-approval")
    });
    let Some(g) = waiting else {
        return Err(input!(
            "no canary of cluster {cluster} waits for a decision in {region} (none is Marginal with `marginal: manual`, or its deploy is still judging it)"
        ));
    };
    let name = asg::name(g).to_string();
    state::write(
        &aws,
        &name,
        APPROVAL_TAG,
        &Approval {
            d: d.into(),
            by: by.into(),
        },
    )
    .await?;
    info!("{region}: canary {name}: {d} (by {by})");
    Ok(json!({"region": region, "canary": name, "decision": d}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_is_no_generation_of_the_cluster() {
        let b = baseline_name("shop-prod-v012");
        assert_eq!(b, "shop-prod-v012-baseline");
        assert_eq!(super::super::plan::generation_of("shop-prod", &b), None);
    }

    #[test]
    fn records_fit_a_tag() {
        let p = Progress {
            baseline: baseline_name(&"c".repeat(200)),
            st: "awaiting-approval".into(),
            n: 12,
            score: Some(66.67),
            v: Some("Marginal".into()),
        };
        assert!(serde_json::to_string(&p).unwrap().len() > 200);
        let short = Progress {
            baseline: baseline_name("shop-prod-v012"),
            ..p
        };
        let tag = state::tag("shop-prod-v012", CANARY_TAG, &short).unwrap();
        assert_eq!(
            tag.value(),
            Some(
                r#"{"b":"shop-prod-v012-baseline","st":"awaiting-approval","n":12,"score":66.67,"v":"Marginal"}"#
            )
        );
    }
}
