//! Instance health: InService in the group, healthy in every target group and InService in
//! every Classic Load Balancer it is attached to; register and deregister a generation's
//! instances with both (Asgard disabled a generation by taking its instances out of its Classic
//! Load Balancers, and enabled it by putting them back); wait until a group is all healthy.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use anyhow::{Context, Result};
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use serde::Serialize;
use tracing::{debug, info};

use super::{asg, sdk, Wait};
use crate::aws::client::AwsContext;

/// State per instance per target group ARN (`healthy`, `unhealthy`, `initial`, `draining`...)
/// and per Classic Load Balancer name (`InService`, `OutOfService`, `Unknown`).
pub type Health = BTreeMap<String, BTreeMap<String, String>>;

/// Healthy in a target group, or in service in a Classic Load Balancer.
pub fn is_healthy(state: &str) -> bool {
    state == "healthy" || state == "InService"
}

/// Health of `ids` in the target groups and Classic Load Balancers of `g`.
pub async fn group_health(
    ctx: &AwsContext,
    region: &str,
    g: &aws_sdk_autoscaling::types::AutoScalingGroup,
    ids: &[String],
) -> Result<Health> {
    let mut h = health(&ctx.elbv2(region), g.target_group_arns(), ids).await?;
    if !g.load_balancer_names().is_empty() {
        classic_health(&ctx.elb(region), g.load_balancer_names(), ids, &mut h).await?;
    }
    Ok(h)
}

/// Add the Classic Load Balancer state of `ids` to `out` (an instance the balancer does not list
/// is not registered there, and gets no entry).
pub async fn classic_health(
    elb: &aws_sdk_elasticloadbalancing::Client,
    names: &[String],
    ids: &[String],
    out: &mut Health,
) -> Result<()> {
    for lb in names {
        // Without instances: every registered one (naming an unregistered one is an error on AWS).
        let r = elb
            .describe_instance_health()
            .load_balancer_name(lb)
            .send()
            .await
            .map_err(sdk)
            .with_context(|| format!("describing instance health in Classic Load Balancer {lb}"))?;
        for st in r.instance_states() {
            let id = st.instance_id().unwrap_or_default();
            if ids.iter().any(|i| i == id) {
                out.entry(id.to_string())
                    .or_default()
                    .insert(lb.clone(), st.state().unwrap_or("Unknown").to_string());
            }
        }
    }
    Ok(())
}

/// Register (`on`) or deregister `ids` with the Classic Load Balancers `names`.
pub async fn register_classic(
    elb: &aws_sdk_elasticloadbalancing::Client,
    names: &[String],
    ids: &[String],
    on: bool,
) -> Result<()> {
    use aws_sdk_elasticloadbalancing::types::Instance;
    if ids.is_empty() {
        return Ok(());
    }
    let instances: Vec<Instance> = ids
        .iter()
        .map(|i| Instance::builder().instance_id(i).build())
        .collect();
    for lb in names {
        if on {
            elb.register_instances_with_load_balancer()
                .load_balancer_name(lb)
                .set_instances(Some(instances.clone()))
                .send()
                .await
                .map_err(sdk)
                .with_context(|| {
                    format!(
                        "registering {} with Classic Load Balancer {lb}",
                        ids.join(", ")
                    )
                })?;
        } else {
            elb.deregister_instances_from_load_balancer()
                .load_balancer_name(lb)
                .set_instances(Some(instances.clone()))
                .send()
                .await
                .map_err(sdk)
                .with_context(|| {
                    format!(
                        "deregistering {} from Classic Load Balancer {lb}",
                        ids.join(", ")
                    )
                })?;
        }
    }
    Ok(())
}

/// Put `g`'s instances into (`on`) or take them out of every target group and Classic Load
/// Balancer it is attached to.
pub async fn register_group(
    ctx: &AwsContext,
    region: &str,
    g: &aws_sdk_autoscaling::types::AutoScalingGroup,
    on: bool,
) -> Result<()> {
    let ids = asg::instance_ids(g);
    register(&ctx.elbv2(region), g.target_group_arns(), &ids, on).await?;
    register_classic(&ctx.elb(region), g.load_balancer_names(), &ids, on).await
}

pub async fn health(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    tgs: &[String],
    ids: &[String],
) -> Result<Health> {
    let mut out: Health = ids.iter().map(|i| (i.clone(), BTreeMap::new())).collect();
    if ids.is_empty() {
        return Ok(out);
    }
    for tg in tgs {
        let targets: Vec<TargetDescription> = ids
            .iter()
            .map(|i| TargetDescription::builder().id(i).build())
            .collect();
        let r = elb
            .describe_target_health()
            .target_group_arn(tg)
            .set_targets(Some(targets))
            .send()
            .await
            .map_err(sdk)
            .with_context(|| format!("describing target health in {tg}"))?;
        for d in r.target_health_descriptions() {
            let id = d
                .target()
                .and_then(|t| t.id())
                .unwrap_or_default()
                .to_string();
            let state = d
                .target_health()
                .and_then(|h| h.state())
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "unknown".into());
            out.entry(id).or_default().insert(tg.clone(), state);
        }
    }
    Ok(out)
}

pub async fn register(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    tgs: &[String],
    ids: &[String],
    on: bool,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    for tg in tgs {
        let targets: Vec<TargetDescription> = ids
            .iter()
            .map(|i| TargetDescription::builder().id(i).build())
            .collect();
        if on {
            elb.register_targets()
                .target_group_arn(tg)
                .set_targets(Some(targets))
                .send()
                .await
                .map_err(sdk)
                .with_context(|| format!("registering {} in {tg}", ids.join(", ")))?;
        } else {
            elb.deregister_targets()
                .target_group_arn(tg)
                .set_targets(Some(targets))
                .send()
                .await
                .map_err(sdk)
                .with_context(|| format!("deregistering {} from {tg}", ids.join(", ")))?;
        }
    }
    Ok(())
}

/// One instance as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceHealth {
    pub id: String,
    pub lifecycle: String,
    pub health: String,
    pub targets: BTreeMap<String, String>,
}

/// The instances of group `g` with their target health.
pub async fn instances(
    ctx: &AwsContext,
    region: &str,
    g: &aws_sdk_autoscaling::types::AutoScalingGroup,
) -> Result<Vec<InstanceHealth>> {
    let ids = asg::instance_ids(g);
    let h = group_health(ctx, region, g, &ids).await?;
    Ok(g.instances()
        .iter()
        .map(|i| {
            let id = i.instance_id().unwrap_or_default().to_string();
            InstanceHealth {
                lifecycle: i
                    .lifecycle_state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                health: i.health_status().unwrap_or_default().to_string(),
                targets: h.get(&id).cloned().unwrap_or_default(),
                id,
            }
        })
        .collect())
}

/// Wait until group `name` has its desired capacity of instances (none of `exclude`) InService,
/// Healthy, healthy in every target group and InService in every Classic Load Balancer it is
/// attached to. Returns their ids.
pub async fn wait_healthy(
    ctx: &AwsContext,
    region: &str,
    name: &str,
    exclude: &HashSet<String>,
    wait: &Wait,
) -> Result<Vec<String>> {
    let a = ctx.autoscaling(region);
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        wait.check()
            .with_context(|| format!("waiting for {name} ({region}) to be healthy"))?;
        let g = asg::require(&a, name).await?;
        let desired = g.desired_capacity().unwrap_or(0) as usize;
        let ready: Vec<String> = g
            .instances()
            .iter()
            .filter(|i| {
                i.lifecycle_state().map(|s| s.as_str()) == Some("InService")
                    && i.health_status() == Some("Healthy")
            })
            .filter_map(|i| i.instance_id())
            .filter(|i| !exclude.contains(*i))
            .map(String::from)
            .collect();
        let h = group_health(ctx, region, &g, &ready).await?;
        let tgs = g.target_group_arns().len() + g.load_balancer_names().len();
        let bad: Vec<String> = h
            .iter()
            .filter(|(_, per_tg)| per_tg.len() < tgs || per_tg.values().any(|s| !is_healthy(s)))
            .map(|(id, per_tg)| {
                let states: Vec<&str> = per_tg.values().map(String::as_str).collect();
                format!(
                    "{id}: {}",
                    if states.is_empty() {
                        "not registered".to_string()
                    } else {
                        states.join("/")
                    }
                )
            })
            .collect();
        let healthy = ready.len() - bad.len().min(ready.len());
        debug!(
            group = name,
            desired, healthy, "waiting for healthy instances"
        );
        if healthy >= desired && bad.is_empty() {
            return Ok(ready);
        }
        if started.elapsed() >= wait.timeout {
            let mut msg = format!("{name} ({region}): {healthy} of {desired} instances InService and healthy in every target group and load balancer after {}s", wait.timeout.as_secs());
            if !bad.is_empty() {
                msg.push_str(&format!(" ({})", bad.join(", ")));
            }
            anyhow::bail!(msg);
        }
        if last_log.elapsed().as_secs() >= 30 {
            info!("{name} ({region}): {healthy}/{desired} instances healthy, waiting");
            last_log = Instant::now();
        }
        wait.nap(wait.poll)
            .await
            .with_context(|| format!("waiting for {name} ({region}) to be healthy"))?;
    }
}
