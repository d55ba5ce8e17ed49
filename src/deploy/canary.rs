//! The canary gate of a red/black deploy: a small generation beside the serving one runs for a
//! window, then is judged, and only a passing canary is grown and put in service. Two judges:
//!
//! - a judge plugin (`--judge PLUGIN`, protocol hook `judge`) scoring it 0-100 against
//!   `--min-score` once the window is over;
//! - built-in canary analysis (`--canary canary.yaml`, [`super::canary_stage`]): a baseline
//!   group of the serving image beside it, both judged every `--interval` by the statistical
//!   judge of `crate::canary`, with Marginal results handled as the config says.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use tracing::info;

use super::{canary_stage, Target, Wait};
use crate::aws::client::AwsContext;
use crate::aws::ledger::Ledger;
use crate::cli::deploy::DeployArgs;
use crate::input;
use crate::plugin::{Event, Hook, PluginSpec};

#[derive(Debug, Clone)]
pub struct Canary {
    /// Instances of the canary generation (and of the baseline group with `--canary`).
    pub size: i32,
    /// How long the canary runs: the plugin judges after it, the analysis judges during it.
    pub window: Duration,
    pub judge: Judge,
}

#[derive(Debug, Clone)]
pub enum Judge {
    /// A judge plugin and the lowest passing score.
    Plugin {
        plugin: (PluginSpec, PathBuf),
        min_score: f64,
    },
    /// Built-in canary analysis against a baseline group.
    Analysis(Box<canary_stage::Analysis>),
}

/// Where a canary runs, for the gate.
pub struct Gate<'a> {
    pub ctx: &'a AwsContext,
    pub region: &'a str,
    pub cluster: &'a str,
    /// The canary generation.
    pub canary: &'a str,
    /// The serving generation (what the baseline copies).
    pub serving: &'a str,
    pub image: &'a str,
    pub deploy_id: &'a str,
    pub wait: &'a Wait,
    pub ledger: &'a Ledger,
}

impl Canary {
    /// The canary of the command line, its judge found and its config read (bad input is an
    /// input error, before anything changes).
    pub fn from_args(a: &DeployArgs) -> Result<Option<Canary>> {
        if a.canary_size.is_none() && a.judge.is_none() && a.canary_config.is_none() {
            return Ok(None);
        }
        if !(a.canary_minutes >= 0.0 && a.canary_minutes.is_finite()) {
            return Err(input!(
                "--canary-minutes {}: give the minutes the canary runs before it is judged",
                a.canary_minutes
            ));
        }
        let window = Duration::from_secs_f64(a.canary_minutes * 60.0);
        if let Some(path) = &a.canary_config {
            let size = a.canary_size.unwrap_or(1);
            if size < 1 {
                return Err(input!(
                    "--canary-size {size}: a canary needs at least one instance"
                ));
            }
            let analysis = canary_stage::Analysis::from_args(path, a)?;
            return Ok(Some(Canary {
                size,
                window,
                judge: Judge::Analysis(Box::new(analysis)),
            }));
        }
        let (Some(size), Some(judge)) = (a.canary_size, a.judge.as_deref()) else {
            return Err(input!(
                "a canary needs a judge: --canary canary.yaml (built-in analysis), or --canary-size N with --judge PLUGIN"
            ));
        };
        if size < 1 {
            return Err(input!(
                "--canary-size {size}: a canary needs at least one instance"
            ));
        }
        if !(0.0..=100.0).contains(&a.min_score) {
            return Err(input!("--min-score {}: a score is 0 to 100", a.min_score));
        }
        let config: Value = match &a.judge_config {
            Some(j) => {
                serde_json::from_str(j).map_err(|e| input!("--judge-config: not JSON: {e}"))?
            }
            None => Value::Null,
        };
        let spec = PluginSpec {
            config,
            ..PluginSpec::named(judge)
        };
        let mut found = crate::plugin::resolve(std::slice::from_ref(&spec), &[])
            .map_err(|e| input!("judge plugin: {e:#}"))?;
        Ok(Some(Canary {
            size,
            window,
            judge: Judge::Plugin {
                plugin: found.remove(0),
                min_score: a.min_score,
            },
        }))
    }
}

/// Before anything changes: can every region's metrics be read (built-in analysis only)?
pub async fn preflight(
    c: Option<&Canary>,
    ctx: &AwsContext,
    regions: &[String],
    target: &Target,
) -> Result<()> {
    let (
        Some(Canary {
            judge: Judge::Analysis(a),
            ..
        }),
        Target::Cluster(cluster),
    ) = (c, target)
    else {
        return Ok(());
    };
    for r in regions {
        canary_stage::preflight(a, ctx, r, cluster).await?;
    }
    Ok(())
}

/// Run the canary `c` to its verdict: Ok((score, what the judge found)) when it may be promoted;
/// an error when it failed (the deploy then removes it, as any failed deploy's leftovers).
pub async fn gate(c: &Canary, g: &Gate<'_>) -> Result<(f64, Value)> {
    match &c.judge {
        Judge::Plugin { plugin, min_score } => {
            info!(
                "{}: canary {} healthy; judging in {:.0}s",
                g.region,
                g.canary,
                c.window.as_secs_f64()
            );
            g.wait.nap(c.window).await.with_context(|| {
                format!("canary {} ({}) before it was judged", g.canary, g.region)
            })?;
            let ev = event(
                g.deploy_id,
                g.region,
                g.cluster,
                g.canary,
                g.serving,
                g.image,
                c.window.as_secs_f64() / 60.0,
            );
            let score = judge_plugin(plugin, *min_score, ev)
                .await
                .with_context(|| {
                    format!("canary {} ({}) failed; it is torn down", g.canary, g.region)
                })?;
            Ok((score, json!({"judge": plugin.0.name})))
        }
        Judge::Analysis(a) => canary_stage::run(a, c.size, c.window, g).await,
    }
}

/// Ask the judge plugin (blocking: run it off the async workers). Ok(score) when it passes.
async fn judge_plugin(judge: &(PluginSpec, PathBuf), min_score: f64, event: Event) -> Result<f64> {
    let judge = judge.clone();
    let verdicts = tokio::task::spawn_blocking(move || {
        crate::plugin::run_judge(std::slice::from_ref(&judge), &event)
    })
    .await??;
    let v = verdicts
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the judge gave no verdict"))?;
    if v.score < min_score {
        return Err(anyhow!(
            "the canary scored {} (judge {}), below --min-score {min_score}{}",
            v.score,
            v.plugin,
            v.reason.map(|r| format!(": {r}")).unwrap_or_default()
        ));
    }
    Ok(v.score)
}

/// The judge's event: which generation is the canary, which is the baseline, where.
pub fn event(
    deploy_id: &str,
    region: &str,
    cluster: &str,
    canary: &str,
    baseline: &str,
    image: &str,
    minutes: f64,
) -> Event {
    Event::new(Hook::Judge, deploy_id)
        .with("deploy_id", deploy_id)
        .with("region", region)
        .with("cluster", cluster)
        .with("canary", canary)
        .with("baseline", baseline)
        .with("image_id", image)
        .with("canary_minutes", minutes)
}
