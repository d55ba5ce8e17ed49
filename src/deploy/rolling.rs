//! Rolling: swap, then replace every instance: StartInstanceRefresh where the endpoint has it,
//! else bakery's own batches (terminate without decrementing capacity, wait until the
//! replacements are InService and healthy in their target groups, next batch). A failure (or a
//! signal) puts the previous launch template back and replaces what the deploy launched. Running
//! a killed rolling deploy again resumes it: the group already launches the image, and the
//! instances still on another image are replaced.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use aws_sdk_autoscaling::types::{AutoScalingGroup, RefreshPreferences};
use serde_json::{json, Value};
use tracing::{info, warn};

use super::state::{self, Follows, SwapRecord, SWAP_TAG};
use super::{asg, lt, plan, sdk, swap, targets, Options, Wait};
use crate::aws::client::AwsContext;
use crate::aws::ledger::Ledger;
use crate::cli::deploy::{DeployArgs, ReplaceWith};

#[derive(Debug, Clone)]
pub struct RollingOptions {
    pub min_healthy: u8,
    pub warmup: Option<u64>,
    pub checkpoints: Vec<u8>,
    pub checkpoint_delay: u64,
    pub replace_with: ReplaceWith,
}

impl RollingOptions {
    pub fn of(a: &DeployArgs) -> RollingOptions {
        RollingOptions {
            min_healthy: a.min_healthy_percentage,
            warmup: a.instance_warmup,
            checkpoints: a.checkpoints.clone(),
            checkpoint_delay: a.checkpoint_delay,
            replace_with: a.replace_with,
        }
    }
}

pub async fn rolling(
    ctx: &AwsContext,
    region: &str,
    name: &str,
    image: &str,
    o: &Options,
    ledger: &Ledger,
) -> Result<Value> {
    let a = ctx.autoscaling(region);
    let g = asg::require(&a, name).await?;
    let prior: Option<SwapRecord> = state::read(&g, SWAP_TAG)?;
    // The instances to replace: every one not on the image (all of them, unless an interrupted
    // deploy of this image already replaced some).
    let stale: Vec<String> = running(ctx, region, &g)
        .await?
        .into_iter()
        .filter(|(_, img)| img != image)
        .map(|(id, _)| id)
        .collect();
    let sw = swap::swap(ctx, region, name, image, o, ledger).await?;
    let resumed = sw.record.is_none();
    // A rerun after an interruption: the group already launches the image. Its record (when the
    // interrupted deploy was a rolling one of this image) lets a failure now roll it all back.
    let rec = match sw.record.clone() {
        Some(r) => Some(r),
        // (Only a rolling deploy's: a finished swap of the image stays that swap's, to roll back by hand.)
        None => prior.filter(|r| r.image == image && r.phase == "rolling"),
    };
    if resumed && stale.is_empty() {
        return Ok(json!({"swap": sw, "replaced": 0}));
    }
    if resumed {
        info!("{name} ({region}) already launches {image}; {} instance(s) still run an older image: replacing them{}", stale.len(), rec.as_ref().map(|r| format!(" (resuming deploy {})", r.id)).unwrap_or_default());
    }
    if let Some(mut r) = rec.clone() {
        r.phase = "rolling".into();
        state::write(&a, name, SWAP_TAG, &r).await?;
    }
    match replace(ctx, region, name, &stale, &o.rolling, &o.wait).await {
        Ok(how) => {
            if let Some(mut r) = rec {
                r.phase = "done".into();
                state::write(&a, name, SWAP_TAG, &r).await?;
            }
            Ok(
                json!({"swap": sw, "replaced": stale.len(), "replaced_with": how, "resumed": resumed}),
            )
        }
        Err(e) => {
            let Some(rec) = rec else {
                // Nothing of this run to undo: the template was as it is before it started.
                return Err(e.context(format!("replacing the instances of {name} ({region}) that run an older image than {image} (the launch template was not changed)")));
            };
            warn!("{name} ({region}): {e:#}; rolling back");
            let wait = o.wait.for_cleanup();
            let undo = async {
                swap::undo(ctx, region, name, &rec).await?;
                let g = asg::require(&a, name).await?;
                // Whatever runs the deployed image (this run's, and an interrupted run's it resumed).
                let launched: Vec<String> = running(ctx, region, &g)
                    .await?
                    .into_iter()
                    .filter(|(_, img)| img == image)
                    .map(|(id, _)| id)
                    .collect();
                // Back as fast as --min-healthy-percentage allows: no checkpoint pauses.
                let back = RollingOptions {
                    checkpoints: vec![],
                    ..o.rolling.clone()
                };
                own_batches(ctx, region, name, &launched, &back, &wait).await?;
                if rec.follows != Follows::Latest {
                    // Nothing points at the failed version any more: leave nothing half-made.
                    lt::delete_version(&ctx.ec2(region), &rec.lt, rec.new).await?;
                }
                let mut r = rec.clone();
                r.phase = "failed".into();
                state::write(&a, name, SWAP_TAG, &r).await
            };
            match super::unless_signalled(wait.signals, undo).await {
                Some(Ok(())) => Err(e.context(format!(
                    "rolling deploy of {name} ({region}) rolled back to launch template version {}",
                    rec.prev
                ))),
                Some(Err(u))
                    if super::is_interrupted(&u) || crate::sys::signals::count() > wait.signals =>
                {
                    Err(stopped(&e, &rec, name, region))
                }
                Some(Err(u)) => Err(anyhow!("{e:#}; the rollback failed too: {u:#}")),
                None => Err(stopped(&e, &rec, name, region)),
            }
        }
    }
}

/// A rollback a signal stopped: what may be left.
fn stopped(e: &anyhow::Error, rec: &SwapRecord, name: &str, region: &str) -> anyhow::Error {
    let left = format!(
        "{name} on launch template {} version {} ({}) instead of {}, and instances running {}",
        rec.lt, rec.new, rec.image, rec.prev, rec.image
    );
    let finish = format!(
        "{} puts version {} back, then `bakery deploy --strategy rolling --image {} --asg {name} --region {region}` replaces those instances",
        super::rollback_command(&super::Target::Asg(name.into()), region),
        rec.prev,
        rec.prev_image
    );
    super::abandoned(e, &left, &finish)
}

/// The group's instances (not on their way out) and the image each runs.
pub async fn running(
    ctx: &AwsContext,
    region: &str,
    g: &AutoScalingGroup,
) -> Result<Vec<(String, String)>> {
    let ids: Vec<String> = g
        .instances()
        .iter()
        .filter(|i| {
            !i.lifecycle_state()
                .map(|s| s.as_str())
                .unwrap_or_default()
                .starts_with("Terminat")
        })
        .filter_map(|i| i.instance_id())
        .map(String::from)
        .collect();
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let out = ctx
        .ec2(region)
        .describe_instances()
        .set_instance_ids(Some(ids.clone()))
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("describing the instances of {}", asg::name(g)))?;
    let images: std::collections::HashMap<&str, &str> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| Some((i.instance_id()?, i.image_id()?)))
        .collect();
    Ok(ids
        .iter()
        .filter_map(|id| {
            images
                .get(id.as_str())
                .map(|img| (id.clone(), img.to_string()))
        })
        .collect())
}

/// Replace `old` (the group's instances before the swap). Returns how.
async fn replace(
    ctx: &AwsContext,
    region: &str,
    name: &str,
    old: &[String],
    r: &RollingOptions,
    wait: &Wait,
) -> Result<&'static str> {
    if r.replace_with != ReplaceWith::Batches {
        match instance_refresh(ctx, region, name, r, wait).await {
            Ok(()) => return Ok("instance-refresh"),
            Err(e)
                if r.replace_with == ReplaceWith::Auto
                    && crate::aws::error::code_of(&e)
                        .is_some_and(crate::aws::error::is_invalid_action) =>
            {
                info!("{name} ({region}): no instance refresh on this endpoint ({e:#}); replacing in batches");
            }
            Err(e) => return Err(e),
        }
    }
    own_batches(ctx, region, name, old, r, wait).await?;
    Ok("batches")
}

async fn instance_refresh(
    ctx: &AwsContext,
    region: &str,
    name: &str,
    r: &RollingOptions,
    wait: &Wait,
) -> Result<()> {
    let a = ctx.autoscaling(region);
    let mut p = RefreshPreferences::builder()
        .min_healthy_percentage(r.min_healthy as i32)
        .skip_matching(true);
    if let Some(w) = r.warmup {
        p = p.instance_warmup(w as i32);
    }
    if !r.checkpoints.is_empty() {
        p = p
            .set_checkpoint_percentages(Some(r.checkpoints.iter().map(|c| *c as i32).collect()))
            .checkpoint_delay(r.checkpoint_delay as i32);
    }
    let id = a
        .start_instance_refresh()
        .auto_scaling_group_name(name)
        .preferences(p.build())
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("starting an instance refresh of {name}"))?
        .instance_refresh_id()
        .unwrap_or_default()
        .to_string();
    info!("{name} ({region}): instance refresh {id} started");
    let started = Instant::now();
    loop {
        let out = a
            .describe_instance_refreshes()
            .auto_scaling_group_name(name)
            .instance_refresh_ids(&id)
            .send()
            .await
            .map_err(sdk)?;
        let status = out
            .instance_refreshes()
            .first()
            .and_then(|r| r.status())
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        match status.as_str() {
            "Successful" => return Ok(()),
            "Failed" | "Cancelled" | "RollbackSuccessful" | "RollbackFailed" | "Baseline" => {
                let reason = out
                    .instance_refreshes()
                    .first()
                    .and_then(|r| r.status_reason())
                    .unwrap_or("");
                anyhow::bail!("instance refresh {id} of {name}: {status} {reason}");
            }
            _ => {}
        }
        if let Err(e) = wait.check() {
            let _ = a
                .cancel_instance_refresh()
                .auto_scaling_group_name(name)
                .send()
                .await;
            return Err(e.context(format!("instance refresh {id} of {name} (cancelled)")));
        }
        if started.elapsed() >= wait.timeout {
            let _ = a
                .cancel_instance_refresh()
                .auto_scaling_group_name(name)
                .send()
                .await;
            anyhow::bail!(
                "instance refresh {id} of {name} did not finish within {}s (cancelled)",
                wait.timeout.as_secs()
            );
        }
        let _ = wait.nap(wait.poll).await;
    }
}

/// Replace `ids` of group `name` in batches that keep `min_healthy` percent in service.
pub async fn own_batches(
    ctx: &AwsContext,
    region: &str,
    name: &str,
    ids: &[String],
    r: &RollingOptions,
    wait: &Wait,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let a = ctx.autoscaling(region);
    let desired = asg::require(&a, name)
        .await?
        .desired_capacity()
        .unwrap_or(0) as usize;
    let batch = plan::batch_size(desired.max(ids.len()), r.min_healthy);
    let mut gone: HashSet<String> = HashSet::new();
    let mut next_checkpoint = r
        .checkpoints
        .iter()
        .copied()
        .filter(|c| *c < 100)
        .collect::<Vec<_>>();
    next_checkpoint.sort();
    for chunk in ids.chunks(batch) {
        wait.check()?;
        for id in chunk {
            asg::replace_instance(&a, id).await?;
            gone.insert(id.clone());
        }
        info!(
            "{name} ({region}): replacing {} ({}/{})",
            chunk.join(", "),
            gone.len(),
            ids.len()
        );
        targets::wait_healthy(ctx, region, name, &gone, wait).await?;
        if let Some(w) = r.warmup.filter(|w| *w > 0) {
            wait.nap(Duration::from_secs(w)).await?;
        }
        let done_pct = (gone.len() * 100 / ids.len()) as u8;
        if next_checkpoint.first().is_some_and(|c| done_pct >= *c) {
            next_checkpoint.retain(|c| *c > done_pct);
            if r.checkpoint_delay > 0 {
                info!(
                    "{name} ({region}): checkpoint at {done_pct}%, pausing {}s",
                    r.checkpoint_delay
                );
                wait.nap(Duration::from_secs(r.checkpoint_delay)).await?;
            }
        }
    }
    Ok(())
}
