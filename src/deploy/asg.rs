//! Auto Scaling groups: describe, what they launch from, point them at a launch template
//! version, suspend/resume, resize, delete (`clone` makes a group the copy of another).

use anyhow::{Context, Result};
use aws_sdk_autoscaling::types::{AutoScalingGroup, LaunchTemplate, MixedInstancesPolicy};
use aws_sdk_autoscaling::Client;

use super::lt::LtRef;
use super::plan::generation_of;
use super::sdk;
pub use crate::aws::asg::{delete_group, describe, start_delete};

/// Processes suspended while a generation is disabled (Asgard/Spinnaker).
pub const DISABLE_PROCESSES: [&str; 3] = ["Launch", "Terminate", "AddToLoadBalancer"];

pub async fn require(asg: &Client, name: &str) -> Result<AutoScalingGroup> {
    describe(asg, name)
        .await?
        .with_context(|| format!("Auto Scaling group {name} disappeared"))
}

/// Every generation of `cluster` in this region (any order).
pub async fn cluster_groups(asg: &Client, cluster: &str) -> Result<Vec<AutoScalingGroup>> {
    let mut out = Vec::new();
    let mut pages = asg
        .describe_auto_scaling_groups()
        .max_records(100)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page
            .map_err(sdk)
            .with_context(|| format!("listing the Auto Scaling groups of cluster {cluster}"))?;
        out.extend(
            page.auto_scaling_groups()
                .iter()
                .filter(|g| {
                    generation_of(cluster, g.auto_scaling_group_name().unwrap_or_default())
                        .is_some()
                })
                .cloned(),
        );
    }
    Ok(out)
}

pub fn name(g: &AutoScalingGroup) -> &str {
    g.auto_scaling_group_name().unwrap_or_default()
}

pub fn created_ms(g: &AutoScalingGroup) -> i64 {
    g.created_time()
        .map(|t| t.secs() * 1000 + i64::from(t.subsec_nanos() / 1_000_000))
        .unwrap_or(0)
}

/// What a group launches from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Template(LtRef),
    /// A mixed instances policy's launch template (overrides keep their instance types).
    Mixed(LtRef),
}

impl Source {
    pub fn lt(&self) -> &LtRef {
        match self {
            Source::Template(r) | Source::Mixed(r) => r,
        }
    }
}

/// The launch template of `g`; a launch configuration (or an override with its own template)
/// is an input error: bakery deploys launch templates.
pub fn source(g: &AutoScalingGroup, region: &str) -> Result<Source> {
    let n = name(g);
    if let Some(spec) = g.launch_template() {
        return Ok(Source::Template(LtRef::of(spec)));
    }
    if let Some(spec) = g.mixed_instances_policy().and_then(|p| p.launch_template()) {
        if spec
            .overrides()
            .iter()
            .any(|o| o.launch_template_specification().is_some())
        {
            return Err(crate::input!("Auto Scaling group {n} ({region}): its mixed instances policy gives some instance types their own launch template; bakery deploys one template per group"));
        }
        if let Some(lts) = spec.launch_template_specification() {
            return Ok(Source::Mixed(LtRef::of(lts)));
        }
    }
    if let Some(lc) = g.launch_configuration_name() {
        return Err(crate::input!("Auto Scaling group {n} ({region}) uses launch configuration {lc}, not a launch template: bakery deploys launch templates (move the group to a launch template first)"));
    }
    Err(crate::input!(
        "Auto Scaling group {n} ({region}) has no launch template"
    ))
}

/// The mixed instances policy of `g` with its launch template replaced by `spec`.
pub(crate) fn mixed_with(
    g: &AutoScalingGroup,
    spec: aws_sdk_autoscaling::types::LaunchTemplateSpecification,
) -> Option<MixedInstancesPolicy> {
    let p = g.mixed_instances_policy()?;
    let lt = p.launch_template()?;
    let lt = LaunchTemplate::builder()
        .launch_template_specification(spec)
        .set_overrides(Some(lt.overrides().to_vec()))
        .build();
    Some(
        MixedInstancesPolicy::builder()
            .launch_template(lt)
            .set_instances_distribution(p.instances_distribution().cloned())
            .build(),
    )
}

/// Point group `g` at `version` of its launch template (named as it was: id or name).
pub async fn set_version(
    asg: &Client,
    g: &AutoScalingGroup,
    src: &Source,
    version: &str,
) -> Result<()> {
    let n = name(g);
    let spec = src.lt().spec(version);
    let q = asg.update_auto_scaling_group().auto_scaling_group_name(n);
    let q = match src {
        Source::Template(_) => q.launch_template(spec),
        Source::Mixed(_) => q.set_mixed_instances_policy(mixed_with(g, spec)),
    };
    q.send()
        .await
        .map_err(sdk)
        .with_context(|| format!("pointing {n} at {}", src.lt().spec_desc(version)))?;
    Ok(())
}

impl LtRef {
    fn spec_desc(&self, version: &str) -> String {
        LtRef {
            version: version.to_string(),
            ..self.clone()
        }
        .describe()
    }
}

/// Sizes of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub min: i32,
    pub max: i32,
    pub desired: i32,
}

pub fn size(g: &AutoScalingGroup) -> Size {
    Size {
        min: g.min_size().unwrap_or(0),
        max: g.max_size().unwrap_or(0),
        desired: g.desired_capacity().unwrap_or(0),
    }
}

pub async fn suspend(asg: &Client, name: &str, processes: &[&str]) -> Result<()> {
    asg.suspend_processes()
        .auto_scaling_group_name(name)
        .set_scaling_processes(Some(processes.iter().map(|s| s.to_string()).collect()))
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("suspending {} of {name}", processes.join(", ")))?;
    Ok(())
}

pub async fn resume(asg: &Client, name: &str, processes: &[&str]) -> Result<()> {
    asg.resume_processes()
        .auto_scaling_group_name(name)
        .set_scaling_processes(Some(processes.iter().map(|s| s.to_string()).collect()))
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("resuming {} of {name}", processes.join(", ")))?;
    Ok(())
}

/// A group is disabled (not serving) when AddToLoadBalancer is suspended.
pub fn is_disabled(g: &AutoScalingGroup) -> bool {
    g.suspended_processes()
        .iter()
        .any(|p| p.process_name() == Some("AddToLoadBalancer"))
}

pub async fn resize(asg: &Client, name: &str, sz: Size) -> Result<()> {
    asg.update_auto_scaling_group()
        .auto_scaling_group_name(name)
        .min_size(sz.min)
        .max_size(sz.max)
        .desired_capacity(sz.desired)
        .send()
        .await
        .map_err(sdk)
        .with_context(|| {
            format!(
                "resizing {name} to min {} max {} desired {}",
                sz.min, sz.max, sz.desired
            )
        })?;
    Ok(())
}

/// Terminate one instance; the group launches its replacement (capacity is not decremented).
pub async fn replace_instance(asg: &Client, instance_id: &str) -> Result<()> {
    asg.terminate_instance_in_auto_scaling_group()
        .instance_id(instance_id)
        .should_decrement_desired_capacity(false)
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("replacing instance {instance_id}"))?;
    Ok(())
}

/// Instance ids of `g`.
pub fn instance_ids(g: &AutoScalingGroup) -> Vec<String> {
    g.instances()
        .iter()
        .filter_map(|i| i.instance_id())
        .map(String::from)
        .collect()
}
