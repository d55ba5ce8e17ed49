//! The CloudWatch alarms that trigger a serving generation's simple and step scaling policies,
//! copied for the next generation: the same alarm, watching the new group where it watched the
//! old one (its `AutoScalingGroupName` dimension, in the alarm's metric or its metric math), and
//! triggering the new group's policies where it triggered the old group's (other actions, such
//! as SNS topics, stay). Without this the new generation's policies exist but nothing ever
//! triggers them: AWS attaches an alarm to policies by ARN, and a new group's policies have new
//! ARNs (Spinnaker's clone copies them the same way).
//!
//! Target tracking policies are not here: AWS makes their alarms when the policy is put.
//! Each copy is tagged `bakery:generation=<group>`, so retention (and a rollback of a half-made
//! generation) deletes exactly the alarms bakery made: AWS keeps an alarm when its group goes.
//! Composite alarms that trigger a policy are refused (see `clone`).

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricAlarm, MetricDataQuery, MetricStat, Tag};

use crate::input;

/// The tag on every alarm bakery makes: the Auto Scaling group it was made for.
pub const GENERATION_TAG: &str = "bakery:generation";

/// The dimension an Auto Scaling group's metrics carry.
const GROUP_DIMENSION: &str = "AutoScalingGroupName";

/// CloudWatch allows 255 characters in an alarm name and 50 tags per alarm.
const MAX_NAME: usize = 255;
const MAX_TAGS: usize = 50;

/// One alarm as the new generation gets it; the fields not here are the source alarm's.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmCopy {
    pub name: String,
    pub dimensions: Vec<Dimension>,
    pub metrics: Vec<MetricDataQuery>,
    pub alarm_actions: Vec<String>,
    pub ok_actions: Vec<String>,
    pub insufficient_data_actions: Vec<String>,
    pub tags: Vec<Tag>,
}

/// The copy's name: the old group's name replaced by the new one's where the alarm name has it
/// (`shop-prod-v001-cpu-high` -> `shop-prod-v002-cpu-high`), else `-<new group>` appended.
pub fn renamed(alarm: &str, from: &str, to: &str) -> String {
    if !from.is_empty() && alarm.contains(from) {
        alarm.replace(from, to)
    } else {
        format!("{alarm}-{to}")
    }
}

fn repoint_dims(dims: &[Dimension], from: &str, to: &str) -> Vec<Dimension> {
    dims.iter()
        .map(|d| {
            if d.name() == Some(GROUP_DIMENSION) && d.value() == Some(from) {
                Dimension::builder().name(GROUP_DIMENSION).value(to).build()
            } else {
                d.clone()
            }
        })
        .collect()
}

fn repoint_query(q: &MetricDataQuery, from: &str, to: &str) -> MetricDataQuery {
    let stat = q.metric_stat().map(|s| {
        let metric = s.metric().map(|m| {
            Metric::builder()
                .set_namespace(m.namespace().map(String::from))
                .set_metric_name(m.metric_name().map(String::from))
                .set_dimensions(Some(repoint_dims(m.dimensions(), from, to)))
                .build()
        });
        MetricStat::builder()
            .set_metric(metric)
            .set_period(s.period())
            .set_stat(s.stat().map(String::from))
            .set_unit(s.unit().cloned())
            .build()
    });
    MetricDataQuery::builder()
        .set_id(q.id().map(String::from))
        .set_metric_stat(stat)
        .set_expression(q.expression().map(String::from))
        .set_label(q.label().map(String::from))
        .set_return_data(q.return_data())
        .set_period(q.period())
        .set_account_id(q.account_id().map(String::from))
        .build()
}

/// The copy of `alarm` (with its `tags`) for group `to`, replacing group `from`; `policies` maps
/// each of `from`'s policy ARNs to the new group's policy of the same name. An input error when
/// the copy cannot exist (name too long, no room for bakery's tag).
pub fn copy_of(
    alarm: &MetricAlarm,
    tags: &[Tag],
    from: &str,
    to: &str,
    policies: &BTreeMap<String, String>,
) -> Result<AlarmCopy> {
    let old = alarm.alarm_name().unwrap_or_default();
    let name = renamed(old, from, to);
    if name.len() > MAX_NAME {
        return Err(input!("CloudWatch alarm {old} (it triggers a scaling policy of {from}): its copy for {to} would be named `{name}`, longer than CloudWatch's {MAX_NAME} characters; shorten the alarm's name"));
    }
    let mut copied: Vec<Tag> = tags
        .iter()
        .filter(|t| {
            t.key()
                .is_some_and(|k| k != GENERATION_TAG && !k.starts_with("aws:"))
        })
        .cloned()
        .collect();
    if copied.len() >= MAX_TAGS {
        return Err(input!("CloudWatch alarm {old} (it triggers a scaling policy of {from}) has {} tags: its copy for {to} needs one more ({GENERATION_TAG}) and CloudWatch allows {MAX_TAGS}; remove one", copied.len()));
    }
    copied.push(Tag::builder().key(GENERATION_TAG).value(to).build());
    let actions = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|a| policies.get(a).cloned().unwrap_or_else(|| a.clone()))
            .collect()
    };
    Ok(AlarmCopy {
        name,
        dimensions: repoint_dims(alarm.dimensions(), from, to),
        metrics: alarm
            .metrics()
            .iter()
            .map(|q| repoint_query(q, from, to))
            .collect(),
        alarm_actions: actions(alarm.alarm_actions()),
        ok_actions: actions(alarm.ok_actions()),
        insufficient_data_actions: actions(alarm.insufficient_data_actions()),
        tags: copied,
    })
}

/// Metric alarms (and the names of composite alarms) among `names`.
pub async fn describe(
    cw: &aws_sdk_cloudwatch::Client,
    names: &[String],
) -> Result<(Vec<MetricAlarm>, Vec<String>)> {
    use aws_sdk_cloudwatch::types::AlarmType;
    let (mut metric, mut composite) = (Vec::new(), Vec::new());
    for chunk in names.chunks(100) {
        let mut token = None;
        loop {
            let out = cw
                .describe_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(super::sdk)
                .with_context(|| format!("describing CloudWatch alarms {}", chunk.join(", ")))?;
            metric.extend(out.metric_alarms().iter().cloned());
            composite.extend(
                out.composite_alarms()
                    .iter()
                    .filter_map(|c| c.alarm_name())
                    .map(String::from),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    Ok((metric, composite))
}

pub async fn tags(cw: &aws_sdk_cloudwatch::Client, alarm: &MetricAlarm) -> Result<Vec<Tag>> {
    let Some(arn) = alarm.alarm_arn() else {
        return Ok(vec![]);
    };
    let out = cw
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(super::sdk)
        .with_context(|| format!("listing the tags of CloudWatch alarm {arn}"))?;
    Ok(out.tags().to_vec())
}

/// Put the copy (PutMetricAlarm creates or replaces the alarm of that name).
pub async fn put(cw: &aws_sdk_cloudwatch::Client, src: &MetricAlarm, c: &AlarmCopy) -> Result<()> {
    let some = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    cw.put_metric_alarm()
        .alarm_name(&c.name)
        .set_alarm_description(src.alarm_description().map(String::from))
        .set_actions_enabled(src.actions_enabled())
        .set_ok_actions(some(&c.ok_actions))
        .set_alarm_actions(some(&c.alarm_actions))
        .set_insufficient_data_actions(some(&c.insufficient_data_actions))
        .set_metric_name(src.metric_name().map(String::from))
        .set_namespace(src.namespace().map(String::from))
        .set_statistic(src.statistic().cloned())
        .set_extended_statistic(src.extended_statistic().map(String::from))
        .set_dimensions((!c.dimensions.is_empty()).then(|| c.dimensions.clone()))
        .set_period(src.period())
        .set_unit(src.unit().cloned())
        .set_evaluation_periods(src.evaluation_periods())
        .set_datapoints_to_alarm(src.datapoints_to_alarm())
        .set_threshold(src.threshold())
        .set_comparison_operator(src.comparison_operator().cloned())
        .set_treat_missing_data(src.treat_missing_data().map(String::from))
        .set_evaluate_low_sample_count_percentile(
            src.evaluate_low_sample_count_percentile().map(String::from),
        )
        .set_metrics((!c.metrics.is_empty()).then(|| c.metrics.clone()))
        .set_threshold_metric_id(src.threshold_metric_id().map(String::from))
        .set_tags(Some(c.tags.clone()))
        .send()
        .await
        .map_err(super::sdk)
        .with_context(|| {
            format!(
                "creating CloudWatch alarm {} (a copy of {})",
                c.name,
                src.alarm_name().unwrap_or("?")
            )
        })?;
    Ok(())
}

pub use crate::aws::alarm::delete;

/// The alarms bakery made for `group` (tagged [`GENERATION_TAG`]) among those that trigger its
/// scaling policies: what to delete with the group.
pub async fn made_for(
    asg: &aws_sdk_autoscaling::Client,
    cw: &aws_sdk_cloudwatch::Client,
    group: &str,
) -> Result<Vec<String>> {
    let policies = super::clone::policies(asg, group).await?;
    let names: Vec<String> = policies
        .iter()
        .flat_map(|p| p.alarms())
        .filter_map(|a| a.alarm_name())
        .map(String::from)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if names.is_empty() {
        return Ok(vec![]);
    }
    let (metric, _) = describe(cw, &names).await?;
    let mut out = Vec::new();
    for a in &metric {
        let tags = tags(cw, a).await?;
        if tags
            .iter()
            .any(|t| t.key() == Some(GENERATION_TAG) && t.value() == Some(group))
        {
            out.push(
                a.alarm_name()
                    .ok_or_else(|| anyhow!("an alarm of {group} has no name"))?
                    .to_string(),
            );
        }
    }
    Ok(out)
}

/// Delete the alarms bakery made for `group` (before or after the group itself goes).
pub async fn delete_made_for(
    asg: &aws_sdk_autoscaling::Client,
    cw: &aws_sdk_cloudwatch::Client,
    group: &str,
) -> Result<Vec<String>> {
    let names = made_for(asg, cw, group).await?;
    delete(cw, &names).await?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(n: &str, v: &str) -> Dimension {
        Dimension::builder().name(n).value(v).build()
    }

    fn alarm() -> MetricAlarm {
        MetricAlarm::builder()
            .alarm_name("shop-prod-v001-cpu-high")
            .alarm_actions("arn:aws:autoscaling:us-east-1:1:scalingPolicy:a:autoScalingGroupName/shop-prod-v001:policyName/out")
            .alarm_actions("arn:aws:sns:us-east-1:1:oncall")
            .ok_actions("arn:aws:sns:us-east-1:1:oncall")
            .dimensions(dim("AutoScalingGroupName", "shop-prod-v001"))
            .dimensions(dim("Other", "shop-prod-v001"))
            .metric_name("CPUUtilization")
            .build()
    }

    #[test]
    fn names_follow_the_group_or_get_it_appended() {
        assert_eq!(
            renamed(
                "shop-prod-v001-cpu-high",
                "shop-prod-v001",
                "shop-prod-v002"
            ),
            "shop-prod-v002-cpu-high"
        );
        assert_eq!(
            renamed("cpu-high", "shop-prod-v001", "shop-prod-v002"),
            "cpu-high-shop-prod-v002"
        );
        // A bare cluster name as the serving generation.
        assert_eq!(
            renamed("shop-prod-scale-out", "shop-prod", "shop-prod-v000"),
            "shop-prod-v000-scale-out"
        );
    }

    #[test]
    fn a_copy_watches_and_triggers_the_new_group_and_keeps_other_actions() {
        let arns = BTreeMap::from([(
            "arn:aws:autoscaling:us-east-1:1:scalingPolicy:a:autoScalingGroupName/shop-prod-v001:policyName/out".to_string(),
            "arn:aws:autoscaling:us-east-1:1:scalingPolicy:b:autoScalingGroupName/shop-prod-v002:policyName/out".to_string(),
        )]);
        let tags = [
            Tag::builder().key("team").value("shop").build(),
            Tag::builder()
                .key(GENERATION_TAG)
                .value("shop-prod-v001")
                .build(),
        ];
        let c = copy_of(&alarm(), &tags, "shop-prod-v001", "shop-prod-v002", &arns).unwrap();
        assert_eq!(c.name, "shop-prod-v002-cpu-high");
        assert_eq!(
            c.alarm_actions,
            [
                "arn:aws:autoscaling:us-east-1:1:scalingPolicy:b:autoScalingGroupName/shop-prod-v002:policyName/out",
                "arn:aws:sns:us-east-1:1:oncall"
            ]
        );
        assert_eq!(c.ok_actions, ["arn:aws:sns:us-east-1:1:oncall"]);
        assert_eq!(
            c.dimensions,
            [
                dim("AutoScalingGroupName", "shop-prod-v002"),
                dim("Other", "shop-prod-v001")
            ]
        );
        let keys: Vec<(&str, &str)> = c
            .tags
            .iter()
            .map(|t| (t.key().unwrap(), t.value().unwrap()))
            .collect();
        assert_eq!(keys, [("team", "shop"), (GENERATION_TAG, "shop-prod-v002")]);
    }

    #[test]
    fn metric_math_alarms_are_repointed_too() {
        let q = MetricDataQuery::builder()
            .id("m1")
            .return_data(false)
            .metric_stat(
                MetricStat::builder()
                    .metric(
                        Metric::builder()
                            .namespace("AWS/EC2")
                            .metric_name("CPUUtilization")
                            .dimensions(dim("AutoScalingGroupName", "shop-prod-v001"))
                            .build(),
                    )
                    .period(60)
                    .stat("Average")
                    .build(),
            )
            .build();
        let e = MetricDataQuery::builder()
            .id("e1")
            .expression("m1 * 2")
            .build();
        let a = MetricAlarm::builder()
            .alarm_name("math")
            .metrics(q)
            .metrics(e.clone())
            .build();
        let c = copy_of(
            &a,
            &[],
            "shop-prod-v001",
            "shop-prod-v002",
            &BTreeMap::new(),
        )
        .unwrap();
        let dims = c.metrics[0]
            .metric_stat()
            .unwrap()
            .metric()
            .unwrap()
            .dimensions();
        assert_eq!(dims, [dim("AutoScalingGroupName", "shop-prod-v002")]);
        assert_eq!(c.metrics[0].metric_stat().unwrap().period(), Some(60));
        assert_eq!(c.metrics[0].return_data(), Some(false));
        assert_eq!(c.metrics[1], e);
    }

    #[test]
    fn an_alarm_that_cannot_be_copied_is_an_input_error_naming_it() {
        let long = MetricAlarm::builder().alarm_name("x".repeat(250)).build();
        let e = copy_of(
            &long,
            &[],
            "shop-prod-v001",
            "shop-prod-v002",
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        let full: Vec<Tag> = (0..50)
            .map(|i| Tag::builder().key(format!("k{i}")).value("v").build())
            .collect();
        let e = copy_of(
            &alarm(),
            &full,
            "shop-prod-v001",
            "shop-prod-v002",
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("shop-prod-v001-cpu-high"), "{e}");
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
    }
}
