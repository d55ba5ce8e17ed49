//! What uses an AMI in a region, for pruning: the launch template version each ASG resolves to
//! (its own template, and every template of a mixed-instances policy, with `$Default`/`$Latest`
//! resolved), each ASG's launch configuration, the `$Default` and `$Latest` version of **every**
//! launch template (a template no group uses still launches instances: RunInstances, Spot
//! fleets, a batch job; widdix/aws-amicleaner#5), the image a bakery rollback record on a group
//! would return it to (`bakery:swap`: a red/black rollback re-enables a generation, whose own
//! template version is counted above), and every instance that is pending, running, stopping or
//! stopped. Any lookup that fails fails the whole region: never prune on a guess.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, Result};
use aws_sdk_ec2::types::Filter;

use crate::aws::client::{describe_sdk_error, AwsContext};
use crate::aws::launch_template::LtRef;

/// The highest version number among those DescribeLaunchTemplateVersions returned for
/// `$Default` and `$Latest` (the latest one).
fn latest_of(
    out: &aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput,
) -> i64 {
    out.launch_template_versions()
        .iter()
        .filter_map(|v| v.version_number())
        .max()
        .unwrap_or_default()
}

/// Every launch template (with version) an ASG launches from.
pub fn asg_templates(g: &aws_sdk_autoscaling::types::AutoScalingGroup) -> Vec<LtRef> {
    let mut out = BTreeSet::new();
    if let Some(t) = g.launch_template().and_then(LtRef::named) {
        out.insert(t);
    }
    if let Some(lt) = g.mixed_instances_policy().and_then(|m| m.launch_template()) {
        if let Some(t) = lt.launch_template_specification().and_then(LtRef::named) {
            out.insert(t);
        }
        for o in lt.overrides() {
            if let Some(t) = o.launch_template_specification().and_then(LtRef::named) {
                out.insert(t);
            }
        }
    }
    out.into_iter().collect()
}

/// Image id -> what uses it, one line each.
pub async fn images_in_use(
    ctx: &AwsContext,
    region: &str,
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let asc = ctx.autoscaling(region);
    let ec2 = ctx.ec2(region);

    let mut groups = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = asc
            .describe_auto_scaling_groups()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "listing Auto Scaling groups in {region}: {}",
                    describe_sdk_error(&e)
                )
            })?;
        groups.extend(page.auto_scaling_groups().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }

    let mut resolved: BTreeMap<LtRef, (String, String)> = BTreeMap::new();
    let mut configs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in &groups {
        let asg = g.auto_scaling_group_name().unwrap_or_default();
        for t in asg_templates(g) {
            if !resolved.contains_key(&t) {
                let mut req = ec2.describe_launch_template_versions().versions(&t.version);
                req = match (&t.id, &t.name) {
                    (Some(id), _) => req.launch_template_id(id),
                    (None, Some(n)) => req.launch_template_name(n),
                    _ => continue,
                };
                let out = req.send().await.map_err(|e| {
                    anyhow!(
                        "reading launch template {} version {} (used by ASG {asg}) in {region}: {}",
                        t.label(),
                        t.version,
                        describe_sdk_error(&e)
                    )
                })?;
                let v = out.launch_template_versions().first().ok_or_else(|| {
                    anyhow!("launch template {} version {} (used by ASG {asg}) in {region}: AWS returned no version", t.label(), t.version)
                })?;
                let image = v
                    .launch_template_data()
                    .and_then(|d| d.image_id())
                    .unwrap_or_default()
                    .to_string();
                if image.starts_with("resolve:ssm:") {
                    return Err(anyhow!(
                        "launch template {} version {} (used by ASG {asg}) in {region} takes its image from SSM ({image}); bakery cannot tell which AMI that is, so nothing is pruned in {region}",
                        t.label(),
                        t.version
                    ));
                }
                let number = v
                    .version_number()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into());
                resolved.insert(t.clone(), (image, number));
            }
            let (image, number) = &resolved[&t];
            if !image.is_empty() {
                let how = if t.version.starts_with('$') {
                    format!(" ({})", t.version)
                } else {
                    String::new()
                };
                uses.entry(image.clone()).or_default().push(format!(
                    "ASG {asg} (launch template {} version {number}{how})",
                    t.label()
                ));
            }
        }
        if let Some(lc) = g.launch_configuration_name() {
            configs
                .entry(lc.to_string())
                .or_default()
                .push(asg.to_string());
        }
    }

    // Every launch template's $Default and $Latest, used by a group or not.
    let mut token: Option<String> = None;
    let mut templates: Vec<(String, String)> = Vec::new();
    loop {
        let page = ec2
            .describe_launch_templates()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "listing launch templates in {region}: {}",
                    describe_sdk_error(&e)
                )
            })?;
        templates.extend(page.launch_templates().iter().filter_map(|t| {
            Some((
                t.launch_template_id()?.to_string(),
                t.launch_template_name().unwrap_or_default().to_string(),
            ))
        }));
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    for (id, name) in &templates {
        let out = ec2
            .describe_launch_template_versions()
            .launch_template_id(id)
            .versions("$Default")
            .versions("$Latest")
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "reading launch template {name} ({id}) in {region}: {}",
                    describe_sdk_error(&e)
                )
            })?;
        let mut seen = BTreeSet::new();
        for v in out.launch_template_versions() {
            let number = v.version_number().unwrap_or_default();
            if !seen.insert(number) {
                continue;
            }
            let image = v
                .launch_template_data()
                .and_then(|d| d.image_id())
                .unwrap_or_default();
            if image.starts_with("resolve:ssm:") {
                return Err(anyhow!(
                    "launch template {name} ({id}) version {number} in {region} takes its image from SSM ({image}); bakery cannot tell which AMI that is, so nothing is pruned in {region}"
                ));
            }
            if image.is_empty() {
                continue;
            }
            let which = match (v.default_version(), number == latest_of(&out)) {
                (Some(true), true) => "$Default, $Latest",
                (Some(true), false) => "$Default",
                _ => "$Latest",
            };
            uses.entry(image.to_string())
                .or_default()
                .push(format!("launch template {name} version {number} ({which})"));
        }
    }

    // What a bakery rollback would return a group to.
    for g in &groups {
        let asg = g.auto_scaling_group_name().unwrap_or_default();
        let target = crate::aws::asg::rollback_target(g)
            .map_err(|e| anyhow!("{e:#} (in {region}); nothing is pruned in {region}"))?;
        if let Some((id, image)) = target {
            uses.entry(image).or_default().push(format!(
                "`bakery rollback --asg {asg}` returns to it (deploy {id})"
            ));
        }
    }

    // Launch configurations, 50 names per call.
    let names: Vec<String> = configs.keys().cloned().collect();
    for chunk in names.chunks(50) {
        let out = asc
            .describe_launch_configurations()
            .set_launch_configuration_names(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "reading launch configurations in {region}: {}",
                    describe_sdk_error(&e)
                )
            })?;
        for lc in out.launch_configurations() {
            let name = lc.launch_configuration_name().unwrap_or_default();
            if let Some(image) = lc.image_id() {
                for asg in configs.get(name).into_iter().flatten() {
                    uses.entry(image.to_string())
                        .or_default()
                        .push(format!("ASG {asg} (launch configuration {name})"));
                }
            }
        }
    }

    // Instances that exist (or may start again).
    let states = Filter::builder()
        .name("instance-state-name")
        .set_values(Some(
            ["pending", "running", "stopping", "stopped"]
                .map(String::from)
                .to_vec(),
        ))
        .build();
    let mut token: Option<String> = None;
    loop {
        let page = ec2
            .describe_instances()
            .filters(states.clone())
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| anyhow!("listing instances in {region}: {}", describe_sdk_error(&e)))?;
        for r in page.reservations() {
            for i in r.instances() {
                if let Some(image) = i.image_id() {
                    let state = i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str())
                        .unwrap_or("unknown");
                    uses.entry(image.to_string()).or_default().push(format!(
                        "instance {} ({state})",
                        i.instance_id().unwrap_or_default()
                    ));
                }
            }
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(uses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_autoscaling::types::{
        AutoScalingGroup, LaunchTemplate, LaunchTemplateOverrides, LaunchTemplateSpecification,
        MixedInstancesPolicy,
    };

    fn spec(id: &str, version: Option<&str>) -> LaunchTemplateSpecification {
        LaunchTemplateSpecification::builder()
            .launch_template_id(id)
            .set_version(version.map(String::from))
            .build()
    }

    #[test]
    fn an_asg_uses_its_template_and_every_template_of_its_mixed_policy() {
        let g = AutoScalingGroup::builder()
            .launch_template(spec("lt-a", None))
            .build();
        assert_eq!(
            asg_templates(&g),
            [LtRef {
                id: Some("lt-a".into()),
                name: None,
                version: "$Default".into()
            }]
        );

        let mixed = MixedInstancesPolicy::builder()
            .launch_template(
                LaunchTemplate::builder()
                    .launch_template_specification(spec("lt-b", Some("$Latest")))
                    .overrides(
                        LaunchTemplateOverrides::builder()
                            .instance_type("m7g.large")
                            .launch_template_specification(spec("lt-c", Some("4")))
                            .build(),
                    )
                    .overrides(
                        LaunchTemplateOverrides::builder()
                            .instance_type("m7i.large")
                            .build(),
                    )
                    .build(),
            )
            .build();
        let g = AutoScalingGroup::builder()
            .mixed_instances_policy(mixed)
            .build();
        let got: Vec<(String, String)> = asg_templates(&g)
            .into_iter()
            .map(|t| (t.id.unwrap(), t.version))
            .collect();
        assert_eq!(
            got,
            [
                ("lt-b".to_string(), "$Latest".to_string()),
                ("lt-c".to_string(), "4".to_string())
            ]
        );

        let g = AutoScalingGroup::builder()
            .launch_configuration_name("lc")
            .build();
        assert!(asg_templates(&g).is_empty());
    }
}
