//! The canary gate: a small generation beside the serving one runs for a window, then a judge
//! plugin (protocol hook `judge`) scores it 0-100 against the pass mark.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::cli::deploy::DeployArgs;
use crate::input;
use crate::plugin::{Event, Hook, PluginSpec};

#[derive(Debug, Clone)]
pub struct Canary {
    pub size: i32,
    pub window: Duration,
    pub judge: (PluginSpec, PathBuf),
    pub min_score: f64,
}

impl Canary {
    /// The canary of the command line, its judge found (a missing judge is an input error).
    pub fn from_args(a: &DeployArgs) -> Result<Option<Canary>> {
        let (Some(size), Some(judge)) = (a.canary_size, a.judge.as_deref()) else {
            return Ok(None);
        };
        if size < 1 {
            return Err(input!(
                "--canary-size {size}: a canary needs at least one instance"
            ));
        }
        if !(a.canary_minutes >= 0.0 && a.canary_minutes.is_finite()) {
            return Err(input!(
                "--canary-minutes {}: give the minutes the canary runs before it is judged",
                a.canary_minutes
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
            window: Duration::from_secs_f64(a.canary_minutes * 60.0),
            judge: found.remove(0),
            min_score: a.min_score,
        }))
    }

    /// Ask the judge (blocking: run it off the async workers). Ok(score) when it passes.
    pub async fn judge(&self, event: Event) -> Result<f64> {
        let judge = self.judge.clone();
        let verdicts = tokio::task::spawn_blocking(move || {
            crate::plugin::run_judge(std::slice::from_ref(&judge), &event)
        })
        .await??;
        let v = verdicts
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the judge gave no verdict"))?;
        if v.score < self.min_score {
            return Err(anyhow!(
                "the canary scored {} (judge {}), below --min-score {}{}",
                v.score,
                v.plugin,
                self.min_score,
                v.reason.map(|r| format!(": {r}")).unwrap_or_default()
            ));
        }
        Ok(v.score)
    }
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
