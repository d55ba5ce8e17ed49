//! A new red/black generation is a faithful clone of the serving one (Asgard's "create next
//! group", Spinnaker's clone server group): everything that defines how the serving group
//! behaves goes to the new one, and what bakery cannot carry is refused before anything is made
//! (an input error naming it), never dropped silently. The list is in README.md ("What a new
//! generation carries over"):
//!
//! - at CreateAutoScalingGroup (so it holds from the first launch): the launch template (a new
//!   version differing only in ImageId) or mixed instances policy, sizes, subnets or zones,
//!   target groups, Classic Load Balancers, health check type and grace period, default
//!   cooldown, default instance warmup, termination policies, scale-in protection of new
//!   instances, max instance lifetime, capacity rebalance, instance maintenance policy,
//!   placement group, service-linked role, desired capacity type, context, zone distribution and
//!   impairment policy, capacity reservations, instance lifecycle policy, tags with their
//!   PropagateAtLaunch, and the **lifecycle hooks** (a launch hook must gate the first instance:
//!   spinnaker/spinnaker#5001);
//! - right after: suspended processes, scaling policies and the CloudWatch alarms that trigger
//!   them (`alarms`), notification configurations, metrics collection, warm pool, and scheduled
//!   actions (for a canary, when it is promoted: a schedule must not resize a canary);
//! - once the deploy succeeded: deletion protection (a half-made generation must stay deletable).
//!
//! Refused: a group managed by an operator, `Launch` suspended (the new generation would never
//! launch), VPC Lattice traffic sources (bakery takes a disabled generation out of target groups
//! and Classic Load Balancers only), composite alarms triggering a scaling policy, and more tags
//! than AWS allows once bakery's record is added (50 per group).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use aws_sdk_autoscaling::types::{
    AutoScalingGroup, LifecycleHook, LifecycleHookSpecification, NotificationConfiguration,
    ScalingPolicy, ScheduledUpdateGroupAction, ScheduledUpdateGroupActionRequest, Tag,
    TagDescription,
};
use aws_sdk_cloudwatch::types::MetricAlarm;
use aws_smithy_types::DateTime;
use tracing::info;

use super::asg::{self, Size, Source};
use super::{alarms, sdk};
use crate::aws::client::AwsContext;
use crate::aws::ledger::{Ledger, Resource};
use crate::input;

/// AWS allows 50 user tags per Auto Scaling group (`aws:` tags do not count).
pub const MAX_GROUP_TAGS: usize = 50;

/// What the serving generation is, beyond DescribeAutoScalingGroups.
#[derive(Debug, Clone)]
pub struct Serving {
    pub group: AutoScalingGroup,
    pub hooks: Vec<LifecycleHook>,
    pub policies: Vec<ScalingPolicy>,
    /// The metric alarms that trigger its simple and step policies, with their tags.
    pub alarms: Vec<(MetricAlarm, Vec<aws_sdk_cloudwatch::types::Tag>)>,
    /// Composite alarms that trigger them (refused).
    pub composite_alarms: Vec<String>,
    pub scheduled: Vec<ScheduledUpdateGroupAction>,
    pub notifications: Vec<NotificationConfiguration>,
}

/// Every scaling policy of `group` (with the alarms AWS lists for each).
pub async fn policies(a: &aws_sdk_autoscaling::Client, group: &str) -> Result<Vec<ScalingPolicy>> {
    let mut out = Vec::new();
    let mut pages = a
        .describe_policies()
        .auto_scaling_group_name(group)
        .into_paginator()
        .send();
    while let Some(p) = pages.next().await {
        let p = p
            .map_err(sdk)
            .with_context(|| format!("listing the scaling policies of {group}"))?;
        out.extend(p.scaling_policies().iter().cloned());
    }
    Ok(out)
}

/// Policies whose alarms are the user's to copy (target tracking alarms are AWS's own: AWS makes
/// new ones when the policy is put; predictive scaling has none).
fn alarm_driven(p: &ScalingPolicy) -> bool {
    !matches!(
        p.policy_type(),
        Some("TargetTrackingScaling" | "PredictiveScaling")
    )
}

/// Read everything that defines how `g` behaves.
pub async fn read(ctx: &AwsContext, region: &str, g: &AutoScalingGroup) -> Result<Serving> {
    let a = ctx.autoscaling(region);
    let name = asg::name(g);
    let hooks = a
        .describe_lifecycle_hooks()
        .auto_scaling_group_name(name)
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("listing the lifecycle hooks of {name}"))?
        .lifecycle_hooks()
        .to_vec();
    let policies = policies(&a, name).await?;
    let alarm_names: Vec<String> = policies
        .iter()
        .filter(|p| alarm_driven(p))
        .flat_map(|p| p.alarms())
        .filter_map(|a| a.alarm_name())
        .map(String::from)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (mut metric_alarms, mut composite_alarms) = (Vec::new(), Vec::new());
    if !alarm_names.is_empty() {
        let cw = ctx.cloudwatch(region);
        let (metric, composite) = alarms::describe(&cw, &alarm_names).await?;
        for m in metric {
            let tags = alarms::tags(&cw, &m).await?;
            metric_alarms.push((m, tags));
        }
        composite_alarms = composite;
    }
    let mut scheduled = Vec::new();
    let mut pages = a
        .describe_scheduled_actions()
        .auto_scaling_group_name(name)
        .into_paginator()
        .send();
    while let Some(p) = pages.next().await {
        let p = p
            .map_err(sdk)
            .with_context(|| format!("listing the scheduled actions of {name}"))?;
        scheduled.extend(p.scheduled_update_group_actions().iter().cloned());
    }
    let mut notifications = Vec::new();
    let mut pages = a
        .describe_notification_configurations()
        .auto_scaling_group_names(name)
        .into_paginator()
        .send();
    while let Some(p) = pages.next().await {
        let p = p
            .map_err(sdk)
            .with_context(|| format!("listing the notification configurations of {name}"))?;
        notifications.extend(p.notification_configurations().iter().cloned());
    }
    Ok(Serving {
        group: g.clone(),
        hooks,
        policies,
        alarms: metric_alarms,
        composite_alarms,
        scheduled,
        notifications,
    })
}

/// The serving group's tags that the new generation gets: not bakery's own records, not `aws:`.
pub fn carried_tags(g: &AutoScalingGroup) -> Vec<&TagDescription> {
    g.tags()
        .iter()
        .filter(|t| {
            t.key()
                .is_some_and(|k| !k.starts_with("bakery:") && !k.starts_with("aws:"))
        })
        .collect()
}

/// How many user tags a group has once bakery writes `writes` on it (AWS: 50 per group, `aws:`
/// tags not counted); an input error naming the group when that is over the limit. `what` says
/// what bakery is about to do.
pub fn check_tag_room(
    group: &str,
    region: &str,
    existing: &[&str],
    writes: &[&str],
    what: &str,
) -> Result<usize> {
    let mut keys: BTreeSet<&str> = existing
        .iter()
        .copied()
        .filter(|k| !k.starts_with("aws:"))
        .collect();
    let before = keys.len();
    keys.extend(writes.iter().copied());
    if keys.len() > MAX_GROUP_TAGS {
        return Err(input!(
            "Auto Scaling group {group} ({region}) has {before} tags; {what} needs {} more ({}) and AWS allows {MAX_GROUP_TAGS} per group: remove {} tag(s) first, nothing was changed",
            keys.len() - before,
            writes.join(", "),
            keys.len() - MAX_GROUP_TAGS
        ));
    }
    Ok(keys.len())
}

/// Processes the new generation gets suspended like the serving one (not the ones bakery itself
/// suspends to disable a generation).
pub fn carried_suspensions(g: &AutoScalingGroup) -> Vec<String> {
    g.suspended_processes()
        .iter()
        .filter_map(|p| p.process_name())
        .filter(|p| !asg::DISABLE_PROCESSES.contains(p))
        .map(String::from)
        .collect()
}

/// Traffic sources that are neither target groups nor Classic Load Balancers of the group
/// (DescribeAutoScalingGroups may list those twice: as traffic sources and the old way).
fn other_traffic_sources(g: &AutoScalingGroup) -> Vec<String> {
    g.traffic_sources()
        .iter()
        .filter_map(|t| t.identifier())
        .filter(|id| {
            !g.target_group_arns().iter().any(|x| x == id)
                && !g.load_balancer_names().iter().any(|x| x == id)
        })
        .map(String::from)
        .collect()
}

/// Everything that makes the serving generation impossible to clone faithfully, as one input
/// error naming the first thing (checked before anything is made). `new_name` is the generation
/// about to be made; `record` the key of the tag bakery adds.
pub fn check(s: &Serving, region: &str, new_name: &str, record: &str) -> Result<()> {
    let g = &s.group;
    let n = asg::name(g);
    if let Some(op) = g.operator() {
        return Err(input!(
            "Auto Scaling group {n} ({region}) is managed by operator {}: only it may change the group, so bakery cannot make or disable generations of this cluster",
            op.principal().unwrap_or("?")
        ));
    }
    if g.suspended_processes()
        .iter()
        .any(|p| p.process_name() == Some("Launch"))
    {
        return Err(input!("serving generation {n} ({region}) has the Launch process suspended: its next generation would never launch an instance; resume Launch (or deploy when it is resumed)"));
    }
    let others = other_traffic_sources(g);
    if !others.is_empty() {
        return Err(input!("serving generation {n} ({region}) has traffic source(s) {} that are neither target groups nor Classic Load Balancers: bakery cannot take a disabled generation out of them, so it does not red/black this cluster (detach them, or use --asg with --strategy rolling)", others.join(", ")));
    }
    if let Some(c) = s.composite_alarms.first() {
        return Err(input!("composite alarm {c} triggers a scaling policy of {n} ({region}): bakery copies metric alarms to the next generation, not composite ones (point it at a metric alarm, or remove that action)"));
    }
    let keys: Vec<&str> = carried_tags(g).iter().filter_map(|t| t.key()).collect();
    check_tag_room(new_name, region, &keys, &[record], "bakery's deploy record").map_err(
        |_| {
            input!(
                "serving generation {n} ({region}) has {} tags: its next generation {new_name} gets them and bakery's deploy record ({record}), one more than the {MAX_GROUP_TAGS} AWS allows per Auto Scaling group; remove a tag from {n} first, nothing was changed",
                keys.len()
            )
        },
    )?;
    for (a, tags) in &s.alarms {
        alarms::copy_of(a, tags, n, new_name, &BTreeMap::new())?;
    }
    Ok(())
}

fn hook_spec(h: &LifecycleHook) -> LifecycleHookSpecification {
    LifecycleHookSpecification::builder()
        .set_lifecycle_hook_name(h.lifecycle_hook_name().map(String::from))
        .set_lifecycle_transition(h.lifecycle_transition().map(String::from))
        .set_notification_metadata(h.notification_metadata().map(String::from))
        .set_heartbeat_timeout(h.heartbeat_timeout())
        .set_default_result(h.default_result().map(String::from))
        .set_notification_target_arn(h.notification_target_arn().map(String::from))
        .set_role_arn(h.role_arn().map(String::from))
        .build()
}

/// A serving group's scheduled action as the new generation gets it, at `now` (seconds since
/// the epoch): None for a one-time action already due or an action whose end passed. A
/// recurring action's StartTime (AWS reports its next run) is kept only when it is still ahead
/// by more than a minute: AWS refuses a StartTime in the past.
pub fn scheduled_request(
    a: &ScheduledUpdateGroupAction,
    now: i64,
) -> Option<ScheduledUpdateGroupActionRequest> {
    let ahead = |t: &DateTime| t.secs() > now + 60;
    if a.end_time().is_some_and(|t| t.secs() <= now) {
        return None;
    }
    let start = a.start_time().filter(|t| ahead(t)).cloned();
    if a.recurrence().is_none() && start.is_none() {
        return None;
    }
    Some(
        ScheduledUpdateGroupActionRequest::builder()
            .set_scheduled_action_name(a.scheduled_action_name().map(String::from))
            .set_start_time(start)
            .set_end_time(a.end_time().cloned())
            .set_recurrence(a.recurrence().map(String::from))
            .set_min_size(a.min_size())
            .set_max_size(a.max_size())
            .set_desired_capacity(a.desired_capacity())
            .set_time_zone(a.time_zone().map(String::from))
            .build(),
    )
}

/// CreateAutoScalingGroup `new_name` as the clone of `s`, launching `template_id` version
/// `version` with size `sz`, its lifecycle hooks in place before the first launch, tagged with
/// the serving group's tags and `extra` (bakery's record).
#[allow(clippy::too_many_arguments)]
pub async fn create(
    a: &aws_sdk_autoscaling::Client,
    s: &Serving,
    src: &Source,
    new_name: &str,
    template_id: &str,
    version: i64,
    sz: Size,
    extra: Vec<Tag>,
) -> Result<()> {
    let from = &s.group;
    let spec = aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
        .launch_template_id(template_id)
        .version(version.to_string())
        .build();
    let mut tags: Vec<Tag> = carried_tags(from)
        .into_iter()
        .map(|t| {
            Tag::builder()
                .resource_id(new_name)
                .resource_type("auto-scaling-group")
                .set_key(t.key().map(String::from))
                .set_value(t.value().map(String::from))
                .set_propagate_at_launch(t.propagate_at_launch())
                .build()
        })
        .collect();
    tags.extend(extra);
    let non_empty = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    let hooks: Vec<LifecycleHookSpecification> = s.hooks.iter().map(hook_spec).collect();
    let mut q = a
        .create_auto_scaling_group()
        .auto_scaling_group_name(new_name)
        .min_size(sz.min)
        .max_size(sz.max)
        .desired_capacity(sz.desired)
        .set_vpc_zone_identifier(
            from.vpc_zone_identifier()
                .filter(|s| !s.is_empty())
                .map(String::from),
        )
        .set_target_group_arns(non_empty(from.target_group_arns()))
        .set_load_balancer_names(non_empty(from.load_balancer_names()))
        .set_health_check_type(from.health_check_type().map(String::from))
        .set_health_check_grace_period(from.health_check_grace_period())
        .set_default_cooldown(from.default_cooldown())
        .set_termination_policies(non_empty(from.termination_policies()))
        .set_new_instances_protected_from_scale_in(from.new_instances_protected_from_scale_in())
        .set_capacity_rebalance(from.capacity_rebalance())
        .set_max_instance_lifetime(from.max_instance_lifetime())
        .set_default_instance_warmup(from.default_instance_warmup())
        .set_instance_maintenance_policy(from.instance_maintenance_policy().cloned())
        .set_placement_group(from.placement_group().map(String::from))
        .set_service_linked_role_arn(from.service_linked_role_arn().map(String::from))
        .set_desired_capacity_type(from.desired_capacity_type().map(String::from))
        .set_context(from.context().map(String::from))
        .set_availability_zone_distribution(from.availability_zone_distribution().cloned())
        .set_availability_zone_impairment_policy(
            from.availability_zone_impairment_policy().cloned(),
        )
        .set_capacity_reservation_specification(from.capacity_reservation_specification().cloned())
        .set_instance_lifecycle_policy(from.instance_lifecycle_policy().cloned())
        .set_lifecycle_hook_specification_list((!hooks.is_empty()).then_some(hooks))
        .set_tags(Some(tags));
    if from.vpc_zone_identifier().is_none_or(|s| s.is_empty()) {
        q = q.set_availability_zones(Some(from.availability_zones().to_vec()));
    }
    q = match src {
        Source::Template(_) => q.launch_template(spec),
        Source::Mixed(_) => q.set_mixed_instances_policy(asg::mixed_with(from, spec)),
    };
    q.send().await.map_err(sdk).with_context(|| {
        format!(
            "creating Auto Scaling group {new_name} (copy of {})",
            asg::name(from)
        )
    })?;
    Ok(())
}

/// What [`settle`] copied, for the log and the deploy's JSON.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Copied {
    pub lifecycle_hooks: usize,
    pub suspended_processes: Vec<String>,
    pub scaling_policies: usize,
    pub alarms: Vec<String>,
    pub notification_configurations: usize,
    pub metrics: usize,
    pub warm_pool: bool,
    pub scheduled_actions: usize,
}

/// Copy to `new_name` what a group takes after its creation: suspended processes, scaling
/// policies and their alarms (each alarm recorded in `ledger` before it is made), notification
/// configurations, metrics collection, the warm pool, and (with `schedule`) scheduled actions.
/// Every call is a create-or-replace, so running it again (a resumed deploy) is safe.
pub async fn settle(
    ctx: &AwsContext,
    region: &str,
    s: &Serving,
    new_name: &str,
    schedule: bool,
    ledger: &Ledger,
) -> Result<Copied> {
    let a = ctx.autoscaling(region);
    let from = &s.group;
    let from_name = asg::name(from);
    let mut done = Copied {
        lifecycle_hooks: s.hooks.len(),
        ..Copied::default()
    };

    let suspend = carried_suspensions(from);
    if !suspend.is_empty() {
        let names: Vec<&str> = suspend.iter().map(String::as_str).collect();
        asg::suspend(&a, new_name, &names).await?;
        done.suspended_processes = suspend;
    }

    // Policies, then the alarms that trigger them (pointed at the new policies' ARNs).
    let mut arns = BTreeMap::new();
    for p in &s.policies {
        let out = a
            .put_scaling_policy()
            .auto_scaling_group_name(new_name)
            .set_policy_name(p.policy_name().map(String::from))
            .set_policy_type(p.policy_type().map(String::from))
            .set_adjustment_type(p.adjustment_type().map(String::from))
            .set_min_adjustment_magnitude(p.min_adjustment_magnitude())
            .set_scaling_adjustment(p.scaling_adjustment())
            .set_cooldown(p.cooldown())
            .set_metric_aggregation_type(p.metric_aggregation_type().map(String::from))
            .set_step_adjustments(Some(p.step_adjustments().to_vec()).filter(|v| !v.is_empty()))
            .set_estimated_instance_warmup(p.estimated_instance_warmup())
            .set_target_tracking_configuration(p.target_tracking_configuration().cloned())
            .set_enabled(p.enabled())
            .set_predictive_scaling_configuration(
                p.predictive_scaling_configuration()
                    .cloned()
                    .filter(|c| !c.metric_specifications().is_empty()),
            )
            .send()
            .await
            .map_err(sdk)
            .with_context(|| {
                format!(
                    "copying scaling policy {} from {from_name} to {new_name}",
                    p.policy_name().unwrap_or("?")
                )
            })?;
        if let (Some(old), Some(new)) = (p.policy_arn(), out.policy_arn()) {
            arns.insert(old.to_string(), new.to_string());
        }
        done.scaling_policies += 1;
    }
    if !s.alarms.is_empty() {
        let cw = ctx.cloudwatch(region);
        for (alarm, tags) in &s.alarms {
            let copy = alarms::copy_of(alarm, tags, from_name, new_name, &arns)?;
            ledger.record(Resource::Alarm {
                region: region.into(),
                name: copy.name.clone(),
            });
            alarms::put(&cw, alarm, &copy).await?;
            done.alarms.push(copy.name);
        }
    }

    let mut topics: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for n in &s.notifications {
        if let (Some(t), Some(ty)) = (n.topic_arn(), n.notification_type()) {
            topics.entry(t).or_default().push(ty.to_string());
        }
    }
    for (topic, types) in &topics {
        a.put_notification_configuration()
            .auto_scaling_group_name(new_name)
            .topic_arn(*topic)
            .set_notification_types(Some(types.clone()))
            .send()
            .await
            .map_err(sdk)
            .with_context(|| format!("copying the notifications to {topic} to {new_name}"))?;
        done.notification_configurations += 1;
    }

    let metrics: Vec<String> = from
        .enabled_metrics()
        .iter()
        .filter_map(|m| m.metric())
        .map(String::from)
        .collect();
    if !metrics.is_empty() {
        let granularity = from
            .enabled_metrics()
            .iter()
            .find_map(|m| m.granularity())
            .unwrap_or("1Minute");
        a.enable_metrics_collection()
            .auto_scaling_group_name(new_name)
            .set_metrics(Some(metrics.clone()))
            .granularity(granularity)
            .send()
            .await
            .map_err(sdk)
            .with_context(|| format!("enabling metrics collection on {new_name}"))?;
        done.metrics = metrics.len();
    }

    if let Some(w) = from.warm_pool_configuration() {
        a.put_warm_pool()
            .auto_scaling_group_name(new_name)
            .set_min_size(w.min_size())
            .set_max_group_prepared_capacity(w.max_group_prepared_capacity())
            .set_pool_state(w.pool_state().cloned())
            .set_instance_reuse_policy(w.instance_reuse_policy().cloned())
            .send()
            .await
            .map_err(sdk)
            .with_context(|| format!("copying the warm pool of {from_name} to {new_name}"))?;
        done.warm_pool = true;
    }

    if schedule {
        done.scheduled_actions = copy_schedule(&a, s, new_name).await?;
    }
    info!(
        "{region}: {new_name} carries {from_name}'s settings: {} lifecycle hook(s), {} scaling policies, {} alarm(s), {} scheduled action(s), {} notification target(s), {} metric(s){}{}",
        done.lifecycle_hooks,
        done.scaling_policies,
        done.alarms.len(),
        done.scheduled_actions,
        done.notification_configurations,
        done.metrics,
        if done.warm_pool { ", a warm pool" } else { "" },
        if done.suspended_processes.is_empty() {
            String::new()
        } else {
            format!(", {} suspended", done.suspended_processes.join("/"))
        }
    );
    Ok(done)
}

/// Copy the scheduled actions of `s` to `new_name` (BatchPutScheduledUpdateGroupAction, 50 at a
/// time); the number copied. A failed action is an error naming it.
pub async fn copy_schedule(
    a: &aws_sdk_autoscaling::Client,
    s: &Serving,
    new_name: &str,
) -> Result<usize> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let reqs: Vec<ScheduledUpdateGroupActionRequest> = s
        .scheduled
        .iter()
        .filter_map(|x| scheduled_request(x, now))
        .collect();
    for chunk in reqs.chunks(50) {
        let out = a
            .batch_put_scheduled_update_group_action()
            .auto_scaling_group_name(new_name)
            .set_scheduled_update_group_actions(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(sdk)
            .with_context(|| format!("copying the scheduled actions to {new_name}"))?;
        if let Some(f) = out.failed_scheduled_update_group_actions().first() {
            anyhow::bail!(
                "copying scheduled action {} to {new_name}: {} {}",
                f.scheduled_action_name().unwrap_or("?"),
                f.error_code().unwrap_or_default(),
                f.error_message().unwrap_or_default()
            );
        }
    }
    Ok(reqs.len())
}

/// Once the deploy succeeded: the serving group's deletion protection (left off until now so a
/// failed deploy can delete the generation it made).
pub async fn protect(a: &aws_sdk_autoscaling::Client, s: &Serving, new_name: &str) -> Result<()> {
    let Some(p) = s.group.deletion_protection() else {
        return Ok(());
    };
    a.update_auto_scaling_group()
        .auto_scaling_group_name(new_name)
        .deletion_protection(p.clone())
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("setting the deletion protection of {new_name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_autoscaling::types::SuspendedProcess;

    fn tag(k: &str) -> TagDescription {
        TagDescription::builder().key(k).value("v").build()
    }

    #[test]
    fn tags_are_counted_with_every_key_bakery_writes() {
        let fifty: Vec<String> = (0..50).map(|i| format!("cost-{i:02}")).collect();
        let keys: Vec<&str> = fifty.iter().map(String::as_str).collect();
        let e = check_tag_room(
            "api",
            "us-east-1",
            &keys,
            &["bakery:swap"],
            "the swap record",
        )
        .unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        assert!(e.to_string().contains("api (us-east-1) has 50 tags"), "{e}");
        // A key bakery already wrote is replaced, not added.
        let mut with_record = keys[..49].to_vec();
        with_record.push("bakery:swap");
        assert_eq!(
            check_tag_room("api", "r", &with_record, &["bakery:swap"], "x").unwrap(),
            50
        );
        // aws: tags do not count.
        let mut with_aws = keys[..49].to_vec();
        with_aws.push("aws:cloudformation:stack-name");
        assert_eq!(
            check_tag_room("api", "r", &with_aws, &["bakery:swap"], "x").unwrap(),
            50
        );
    }

    #[test]
    fn the_clone_refuses_what_it_cannot_carry() {
        let mut tags: Vec<TagDescription> = (0..50).map(|i| tag(&format!("cost-{i:02}"))).collect();
        tags.push(tag("bakery:deploy"));
        let serving = |g: AutoScalingGroup| Serving {
            group: g,
            hooks: vec![],
            policies: vec![],
            alarms: vec![],
            composite_alarms: vec![],
            scheduled: vec![],
            notifications: vec![],
        };
        let g = AutoScalingGroup::builder()
            .auto_scaling_group_name("shop-prod-v001")
            .set_tags(Some(tags.clone()))
            .build();
        let e = check(&serving(g), "us-east-1", "shop-prod-v002", "bakery:deploy").unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        assert!(e.to_string().contains("has 50 tags"), "{e}");
        assert!(e.to_string().contains("shop-prod-v002"), "{e}");

        let ok = AutoScalingGroup::builder()
            .auto_scaling_group_name("shop-prod-v001")
            .set_tags(Some(tags[1..].to_vec()))
            .build();
        check(
            &serving(ok.clone()),
            "us-east-1",
            "shop-prod-v002",
            "bakery:deploy",
        )
        .unwrap();

        let launch = AutoScalingGroup::builder()
            .auto_scaling_group_name("shop-prod-v001")
            .suspended_processes(SuspendedProcess::builder().process_name("Launch").build())
            .build();
        let e = check(
            &serving(launch),
            "us-east-1",
            "shop-prod-v002",
            "bakery:deploy",
        )
        .unwrap_err();
        assert!(e.to_string().contains("Launch"), "{e}");

        let mut comp = serving(ok);
        comp.composite_alarms = vec!["all-bad".into()];
        let e = check(&comp, "us-east-1", "shop-prod-v002", "bakery:deploy").unwrap_err();
        assert!(e.to_string().contains("composite alarm all-bad"), "{e}");
    }

    #[test]
    fn suspended_processes_are_carried_except_the_ones_that_disable() {
        let g = AutoScalingGroup::builder()
            .suspended_processes(
                SuspendedProcess::builder()
                    .process_name("AZRebalance")
                    .build(),
            )
            .suspended_processes(
                SuspendedProcess::builder()
                    .process_name("Terminate")
                    .build(),
            )
            .build();
        assert_eq!(carried_suspensions(&g), ["AZRebalance"]);
    }

    #[test]
    fn scheduled_actions_keep_their_recurrence_and_only_a_start_still_ahead() {
        let now = 1_800_000_000;
        let rec = ScheduledUpdateGroupAction::builder()
            .scheduled_action_name("weekday-morning")
            .recurrence("0 7 * * 1-5")
            .start_time(DateTime::from_secs(now + 30))
            .min_size(4)
            .max_size(8)
            .desired_capacity(6)
            .time_zone("Europe/Paris")
            .build();
        let r = scheduled_request(&rec, now).unwrap();
        assert_eq!(r.recurrence(), Some("0 7 * * 1-5"));
        assert_eq!(
            r.start_time(),
            None,
            "a start a few seconds ahead is dropped"
        );
        assert_eq!(
            (r.min_size(), r.max_size(), r.desired_capacity()),
            (Some(4), Some(8), Some(6))
        );
        assert_eq!(r.time_zone(), Some("Europe/Paris"));

        let later = ScheduledUpdateGroupAction::builder()
            .scheduled_action_name("black-friday")
            .start_time(DateTime::from_secs(now + 86_400))
            .desired_capacity(20)
            .build();
        assert_eq!(
            scheduled_request(&later, now).unwrap().start_time(),
            Some(&DateTime::from_secs(now + 86_400))
        );
        let due = ScheduledUpdateGroupAction::builder()
            .scheduled_action_name("now")
            .start_time(DateTime::from_secs(now - 5))
            .build();
        assert!(scheduled_request(&due, now).is_none());
        let over = ScheduledUpdateGroupAction::builder()
            .scheduled_action_name("over")
            .recurrence("0 7 * * *")
            .end_time(DateTime::from_secs(now - 5))
            .build();
        assert!(scheduled_request(&over, now).is_none());
    }
}
