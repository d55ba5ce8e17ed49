//! Red/black (Asgard, Spinnaker): the next generation `CLUSTER-vNNN` beside the serving one, a
//! faithful clone of it (`clone`: settings, hooks, policies and their alarms, schedule, tags...)
//! launching the new image; once all of it is InService and healthy in every target group and
//! Classic Load Balancer the old generation is disabled (its instances deregistered from both,
//! Launch/Terminate/AddToLoadBalancer suspended) but kept running for an instant rollback;
//! generations beyond `--keep` are deleted (with the alarms bakery made for them). Optionally a
//! canary generation of a few instances is judged first.
//!
//! The deploy's progress is a tag on the new generation ([`GenRecord`]): an interrupted deploy
//! is resumed by running it again, or undone by `bakery rollback`.

use std::collections::HashSet;

use anyhow::{anyhow, Context, Result};
use aws_sdk_autoscaling::types::AutoScalingGroup;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::asg::{self, Size, DISABLE_PROCESSES};
use super::plan::{self, Gen};
use super::state::{self, GenRecord, GEN_TAG};
use super::{alarms, canary, clone, lt, targets, Options, Wait};
use crate::aws::client::AwsContext;
use crate::aws::ledger::{Ledger, Resource};
use crate::input;

fn record(g: &AutoScalingGroup) -> Option<GenRecord> {
    state::read(g, GEN_TAG).ok().flatten()
}

fn in_progress(rec: &GenRecord) -> bool {
    matches!(rec.phase.as_str(), "canary" | "deploying")
}

/// A deploy in progress in the cluster (interrupted, or running elsewhere): its generation and record.
pub fn pending(groups: &[AutoScalingGroup]) -> Option<(AutoScalingGroup, GenRecord)> {
    groups
        .iter()
        .filter_map(|g| record(g).filter(in_progress).map(|r| (g.clone(), r)))
        .next()
}

/// The input error for a deploy of `image` while another one is in progress.
pub fn check_pending(
    groups: &[AutoScalingGroup],
    cluster: &str,
    region: &str,
    image: &str,
) -> Result<()> {
    match pending(groups) {
        Some((g, r)) if r.image != image => Err(input!(
            "deploy {} of {} to {} ({region}) is in progress: run that deploy again to resume it, or `bakery rollback --cluster {cluster}`",
            r.id, r.image, asg::name(&g)
        )),
        _ => Ok(()),
    }
}

/// The serving generation: the newest enabled one that is not a deploy in progress (else the
/// newest enabled one).
pub fn serving(groups: &[AutoScalingGroup]) -> Option<&AutoScalingGroup> {
    let mut enabled: Vec<&AutoScalingGroup> =
        groups.iter().filter(|g| !asg::is_disabled(g)).collect();
    enabled.sort_by_key(|g| std::cmp::Reverse(asg::created_ms(g)));
    enabled
        .iter()
        .find(|g| !record(g).is_some_and(|r| in_progress(&r)))
        .or(enabled.first())
        .copied()
}

pub(crate) fn gens(cluster: &str, groups: &[AutoScalingGroup]) -> Vec<Gen> {
    groups
        .iter()
        .map(|g| Gen {
            name: asg::name(g).to_string(),
            number: plan::generation_of(cluster, asg::name(g)).flatten(),
            created_ms: asg::created_ms(g),
        })
        .collect()
}

/// Put a generation in service: resume its processes, register its instances with its target
/// groups and Classic Load Balancers.
pub async fn enable(ctx: &AwsContext, region: &str, g: &AutoScalingGroup) -> Result<()> {
    asg::resume(&ctx.autoscaling(region), asg::name(g), &DISABLE_PROCESSES).await?;
    targets::register_group(ctx, region, g, true).await
}

/// Take a generation out of service but keep it running: suspend, then deregister its instances
/// from its target groups and Classic Load Balancers (the group stays attached to them, so a
/// rollback knows where to put them back).
pub async fn disable(ctx: &AwsContext, region: &str, g: &AutoScalingGroup) -> Result<()> {
    asg::suspend(&ctx.autoscaling(region), asg::name(g), &DISABLE_PROCESSES).await?;
    targets::register_group(ctx, region, g, false).await
}

/// The name the next generation of `cluster` gets (or the one of the deploy in progress).
pub fn next_name(cluster: &str, groups: &[AutoScalingGroup]) -> Result<String> {
    match pending(groups) {
        Some((g, _)) => Ok(asg::name(&g).to_string()),
        None => plan::next_generation(cluster, &gens(cluster, groups)),
    }
}

pub async fn deploy(
    ctx: &AwsContext,
    region: &str,
    cluster: &str,
    image: &str,
    o: &Options,
    ledger: &Ledger,
) -> Result<Value> {
    let pinned = std::sync::Mutex::new(None);
    let base = crate::sys::signals::count();
    let r = deploy_inner(ctx, region, cluster, image, o, ledger, &pinned).await;
    let unpin = pinned.lock().unwrap().take();
    let Err(e) = r else { return r };
    // Remove what the failed (or interrupted) deploy made first, then let the serving
    // generation follow $Latest again (which is then the version it runs). A signal during
    // this stops it and says what is left.
    let mut left: Vec<String> = ledger
        .entries()
        .iter()
        .rev()
        .map(|r| r.describe())
        .collect();
    if let Some((g, _)) = &unpin {
        left.push(format!(
            "{} pinned to the launch template version it runs (it followed $Latest)",
            asg::name(g)
        ));
    }
    let cleanup = async {
        for f in ledger.rollback(ctx).await {
            warn!("{region}: cleanup: {f}");
        }
        if let Some((g, src)) = &unpin {
            if let Err(e) = asg::set_version(&ctx.autoscaling(region), g, src, "$Latest").await {
                warn!("{region}: {e:#}");
            }
        }
    };
    if !left.is_empty()
        && super::unless_signalled(crate::sys::signals::count().max(base), cleanup)
            .await
            .is_none()
    {
        let finish = format!(
            "{} finishes it",
            super::rollback_command(&super::Target::Cluster(cluster.into()), region)
        );
        return Err(super::abandoned(&e, &left.join(", "), &finish));
    }
    Err(e)
}

#[allow(clippy::too_many_arguments)]
async fn deploy_inner(
    ctx: &AwsContext,
    region: &str,
    cluster: &str,
    image: &str,
    o: &Options,
    ledger: &Ledger,
    pinned: &std::sync::Mutex<Option<(AutoScalingGroup, asg::Source)>>,
) -> Result<Value> {
    let a = ctx.autoscaling(region);
    let ec2 = ctx.ec2(region);
    let groups = asg::cluster_groups(&a, cluster).await?;
    let serving_g = serving(&groups)
        .ok_or_else(|| input!("cluster {cluster} has no enabled generation in {region}"))?
        .clone();
    let src = asg::source(&serving_g, region)?;
    check_pending(&groups, cluster, region, image)?;
    let pending = pending(&groups);

    let mut copied: Option<clone::Copied>;
    let (new_name, mut rec, from_g, resumed, serving_state) = match pending {
        Some((g, r)) if r.image == image => {
            let from = r.from.clone().unwrap_or_default();
            let from_g = groups
                .iter()
                .find(|x| asg::name(x) == from)
                .cloned()
                .ok_or_else(|| {
                    anyhow!(
                        "deploy {} to {} ({region}) came from {from}, which is gone: roll it back",
                        r.id,
                        asg::name(&g)
                    )
                })?;
            info!(
                "{region}: resuming deploy {} of {image} to {}",
                r.id,
                asg::name(&g)
            );
            // A resumed deploy that fails again is removed like a new one.
            ledger.record(Resource::LaunchTemplateVersion {
                region: region.into(),
                template_id: r.lt.clone(),
                version: r.v,
            });
            ledger.record(Resource::AutoScalingGroup {
                region: region.into(),
                name: asg::name(&g).into(),
            });
            // What the interrupted run may not have copied yet (every step is create-or-replace;
            // the checks ran when the generation was made, and `from` may be half-disabled now).
            let serving_state = clone::read(ctx, region, &from_g).await?;
            copied = Some(
                clone::settle(
                    ctx,
                    region,
                    &serving_state,
                    asg::name(&g),
                    r.phase != "canary",
                    ledger,
                )
                .await?,
            );
            (asg::name(&g).to_string(), r, from_g, true, serving_state)
        }
        Some(_) => unreachable!("check_pending refused another image"),
        None => {
            let cur = lt::resolve(&ec2, src.lt()).await?;
            if cur.image_id == image {
                return Ok(
                    json!({"cluster": cluster, "serving": asg::name(&serving_g), "message": format!("{} already serves {image}: nothing to do", asg::name(&serving_g))}),
                );
            }
            let new_name = plan::next_generation(cluster, &gens(cluster, &groups))?;
            // Everything the new generation must carry, read and checked before anything is made.
            let serving_state = clone::read(ctx, region, &serving_g).await?;
            clone::check(&serving_state, region, &new_name, GEN_TAG)?;
            if src.lt().version == "$Latest" {
                // The version made next would become the serving generation's $Latest (and a
                // rollback's): pin it to the number it runs now, which changes nothing it launches.
                asg::set_version(&a, &serving_g, &src, &cur.number.to_string()).await?;
                *pinned.lock().unwrap() = Some((serving_g.clone(), src.clone()));
                info!("{region}: {} followed $Latest; pinned to version {} before making the next one", asg::name(&serving_g), cur.number);
            }
            let v = lt::create_version(
                &ec2,
                &cur.template_id,
                cur.number,
                image,
                &format!("bakery deploy {} of {image} ({new_name})", o.deploy_id),
            )
            .await?;
            ledger.record(Resource::LaunchTemplateVersion {
                region: region.into(),
                template_id: cur.template_id.clone(),
                version: v,
            });
            let rec = GenRecord {
                id: o.deploy_id.clone(),
                phase: if o.canary.is_some() {
                    "canary"
                } else {
                    "deploying"
                }
                .into(),
                from: Some(asg::name(&serving_g).to_string()),
                image: image.into(),
                lt: cur.template_id.clone(),
                v,
            };
            let full = asg::size(&serving_g);
            let sz = match &o.canary {
                Some(c) => Size {
                    min: c.size,
                    max: c.size.max(full.max),
                    desired: c.size,
                },
                None => full,
            };
            let tag = state::tag(&new_name, GEN_TAG, &rec)?;
            ledger.record(Resource::AutoScalingGroup {
                region: region.into(),
                name: new_name.clone(),
            });
            clone::create(
                &a,
                &serving_state,
                &src,
                &new_name,
                &cur.template_id,
                v,
                sz,
                vec![tag],
            )
            .await?;
            // A canary gets the schedule when it is promoted: a scheduled action must not resize it.
            copied = Some(
                clone::settle(
                    ctx,
                    region,
                    &serving_state,
                    &new_name,
                    o.canary.is_none(),
                    ledger,
                )
                .await?,
            );
            info!(
                "{region}: created {new_name} ({} instances{}) from {}",
                sz.desired,
                if o.canary.is_some() { ", canary" } else { "" },
                asg::name(&serving_g)
            );
            (new_name, rec, serving_g.clone(), false, serving_state)
        }
    };
    let from_name = asg::name(&from_g).to_string();

    targets::wait_healthy(ctx, region, &new_name, &HashSet::new(), &o.wait).await?;

    let mut score = None;
    let mut canary_detail = Value::Null;
    if rec.phase == "canary" {
        let c = o.canary.as_ref().ok_or_else(|| input!("{new_name} ({region}) is a canary in progress: resume it with the same --canary-size and --judge (or --canary), or roll it back"))?;
        let gate = canary::Gate {
            ctx,
            region,
            cluster,
            canary: &new_name,
            serving: &from_name,
            image,
            deploy_id: &o.deploy_id,
            wait: &o.wait,
            ledger,
        };
        let (s, detail) = canary::gate(c, &gate).await?;
        score = Some(s);
        canary_detail = detail;
        info!(
            "{region}: canary {new_name} passed with score {}",
            score.unwrap_or_default()
        );
        rec.phase = "deploying".into();
        state::write(&a, &new_name, GEN_TAG, &rec).await?;
        asg::resize(&a, &new_name, asg::size(&from_g)).await?;
        let n = clone::copy_schedule(&a, &serving_state, &new_name).await?;
        if let Some(c) = copied.as_mut() {
            c.scheduled_actions = n;
        }
        targets::wait_healthy(ctx, region, &new_name, &HashSet::new(), &o.wait).await?;
    }

    // Traffic moves: the old generation out (kept running), then the record says done.
    let from_now = asg::require(&a, &from_name).await?;
    if let Err(e) = disable(ctx, region, &from_now).await {
        let _ = enable(ctx, region, &from_now).await;
        return Err(e);
    }
    rec.phase = "done".into();
    if let Err(e) = state::write(&a, &new_name, GEN_TAG, &rec).await {
        let _ = enable(ctx, region, &from_now).await;
        return Err(e);
    }
    ledger.commit();
    info!("{region}: {new_name} serves {image}; {from_name} disabled (kept for rollback)");
    if let Err(e) = clone::protect(&a, &serving_state, &new_name).await {
        warn!("{region}: {e:#}");
    }

    // Retention: never the new (serving) generation nor the one a rollback would re-enable.
    let groups = asg::cluster_groups(&a, cluster).await?;
    let doomed = plan::to_delete(
        &gens(cluster, &groups),
        o.keep,
        &[new_name.as_str(), from_name.as_str()],
    );
    let mut deleted = Vec::new();
    let cw = ctx.cloudwatch(region);
    for d in &doomed {
        // The alarms bakery made for it first: AWS keeps alarms when their group goes, and
        // finds them through the group's policies only while it exists.
        if let Err(e) = alarms::delete_made_for(&a, &cw, d).await {
            warn!("{region}: retention: the alarms of {d}: {e:#}");
        }
        match asg::start_delete(&a, d).await {
            Ok(()) => deleted.push(d.clone()),
            Err(e) => warn!("{region}: retention: {e:#}"),
        }
        // The launch template version a deleted generation was made with goes too (one made by
        // hand, without a record, is left alone).
        let made = groups.iter().find(|g| asg::name(g) == d).and_then(record);
        if let Some(r) = made.filter(|r| !(r.lt == rec.lt && r.v == rec.v)) {
            if let Err(e) = lt::delete_version(&ec2, &r.lt, r.v).await {
                warn!("{region}: retention: {e:#}");
            }
        }
    }
    Ok(json!({
        "cluster": cluster, "serving": new_name, "disabled": from_name, "launch_template": rec.lt,
        "launch_template_version": rec.v, "canary_score": score, "canary": canary_detail, "resumed": resumed, "deleted": deleted,
        "carried": copied,
    }))
}

/// `bakery rollback --cluster`: re-enable the generation the last deploy replaced, wait until it
/// is healthy, then disable (or, if that deploy never finished, delete) the newer one.
pub async fn rollback(ctx: &AwsContext, region: &str, cluster: &str, wait: &Wait) -> Result<Value> {
    let a = ctx.autoscaling(region);
    let mut groups = asg::cluster_groups(&a, cluster).await?;
    if groups.is_empty() {
        return Err(input!("cluster {cluster} has no generation in {region}"));
    }
    groups.sort_by_key(|g| std::cmp::Reverse(asg::created_ms(g)));
    let (newer, rec) = groups
        .iter()
        .filter(|g| !asg::is_disabled(g) || record(g).is_some_and(|r| in_progress(&r)))
        .find_map(|g| {
            record(g)
                .filter(|r| r.phase != "rolled-back")
                .map(|r| (g.clone(), r))
        })
        .ok_or_else(|| input!("cluster {cluster} ({region}): no deploy to roll back"))?;
    let prev_name = rec.from.clone().ok_or_else(|| {
        input!(
            "{} ({region}) records no previous generation",
            asg::name(&newer)
        )
    })?;
    let prev = groups
        .iter()
        .find(|g| asg::name(g) == prev_name)
        .cloned()
        .ok_or_else(|| anyhow!("{prev_name}, the generation before {} ({region}), was deleted: nothing to roll back to", asg::name(&newer)))?;
    // The generation re-enabled launches its own launch template version: its image must still
    // exist, or every instance it launches (now, or to replace one) fails.
    let prev_src = asg::source(&prev, region)?;
    let prev_lt = lt::resolve(&ctx.ec2(region), prev_src.lt()).await?;
    if !lt::image_exists(&ctx.ec2(region), &prev_lt.image_id).await? {
        return Err(input!(
            "cluster {cluster} ({region}): rolling back to {prev_name} would serve image {}, which is no longer registered (pruned or deregistered); nothing was changed: deploy an image that exists instead",
            prev_lt.image_id
        ));
    }
    enable(ctx, region, &prev).await?;
    targets::wait_healthy(ctx, region, &prev_name, &HashSet::new(), wait)
        .await
        .with_context(|| format!("re-enabling {prev_name}"))?;
    let newer_name = asg::name(&newer).to_string();
    let finished = rec.phase == "done";
    if finished {
        disable(ctx, region, &newer).await?;
        let mut r = rec.clone();
        r.phase = "rolled-back".into();
        state::write(&a, &newer_name, GEN_TAG, &r).await?;
    } else {
        // An interrupted deploy: remove what it half-made (its alarms first: they are found
        // through its scaling policies; a canary's baseline too).
        alarms::delete_made_for(&a, &ctx.cloudwatch(region), &newer_name).await?;
        super::canary_stage::remove_baseline(ctx, region, &newer_name).await?;
        asg::delete_group(&a, &newer_name).await?;
        lt::delete_version(&ctx.ec2(region), &rec.lt, rec.v).await?;
    }
    info!(
        "{region}: {prev_name} serves again; {newer_name} {}",
        if finished { "disabled" } else { "deleted" }
    );
    Ok(
        json!({"cluster": cluster, "serving": prev_name, "rolled_back": newer_name, "deploy_id": rec.id, "newer": if finished { "disabled" } else { "deleted" }}),
    )
}
