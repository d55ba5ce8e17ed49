//! What a deploy records, as tags on the Auto Scaling groups themselves, so that `rollback` and
//! `status` need no local file and no manifest. Values are compact JSON (a tag value holds 256
//! characters).

use anyhow::{Context, Result};
use aws_sdk_autoscaling::types::{AutoScalingGroup, Tag};
use serde::{Deserialize, Serialize};

/// On an ASG deployed by swap/rolling: [`SwapRecord`].
pub const SWAP_TAG: &str = crate::aws::asg::SWAP_RECORD_TAG;
/// On a generation made by red/black: [`GenRecord`].
pub const GEN_TAG: &str = "bakery:deploy";

/// How the ASG chose its launch template version before the swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Follows {
    /// A version number: the ASG is pointed at the new number.
    Pinned,
    /// `$Default`: the new version becomes the template's default.
    Default,
    /// `$Latest`: the new version is the latest by being made.
    Latest,
}

impl Follows {
    pub fn of(version: &str) -> Follows {
        match version {
            "$Default" => Follows::Default,
            "$Latest" => Follows::Latest,
            _ => Follows::Pinned,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapRecord {
    /// Deploy id.
    pub id: String,
    /// Launch template id.
    pub lt: String,
    #[serde(rename = "f")]
    pub follows: Follows,
    /// The ASG's version string before (`3`, `$Default`, `$Latest`).
    pub prev: String,
    /// The version number that string resolved to.
    #[serde(rename = "pn")]
    pub prev_n: i64,
    /// The version this deploy made.
    pub new: i64,
    #[serde(rename = "img")]
    pub image: String,
    #[serde(rename = "pimg")]
    pub prev_image: String,
    /// `swapped`, `rolling`, `done`, `failed`, `rolled-back`.
    #[serde(rename = "ph")]
    pub phase: String,
}

/// A [`SwapRecord`] as `bakery deploy --json` reports it (README, "Output"): the tag's short keys
/// (a tag value holds 256 characters) spelled out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapRecordReport {
    pub deploy_id: String,
    pub launch_template_id: String,
    pub follows: Follows,
    pub previous_version: String,
    pub previous_version_number: i64,
    pub new_version: i64,
    pub image_id: String,
    pub previous_image_id: String,
    pub phase: String,
}

impl SwapRecord {
    pub fn report(&self) -> SwapRecordReport {
        SwapRecordReport {
            deploy_id: self.id.clone(),
            launch_template_id: self.lt.clone(),
            follows: self.follows,
            previous_version: self.prev.clone(),
            previous_version_number: self.prev_n,
            new_version: self.new,
            image_id: self.image.clone(),
            previous_image_id: self.prev_image.clone(),
            phase: self.phase.clone(),
        }
    }
}

/// `serialize_with` for a result's record: its [`SwapRecordReport`].
pub fn serialize_report<S: serde::Serializer>(
    r: &Option<SwapRecord>,
    s: S,
) -> Result<S::Ok, S::Error> {
    r.as_ref().map(SwapRecord::report).serialize(s)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenRecord {
    pub id: String,
    /// `canary`, `deploying`, `done`, `rolled-back`.
    #[serde(rename = "ph")]
    pub phase: String,
    /// The generation that served when this one was made (what rollback re-enables).
    pub from: Option<String>,
    #[serde(rename = "img")]
    pub image: String,
    /// Launch template id and the version made for this generation.
    pub lt: String,
    pub v: i64,
}

pub fn tag_value(g: &AutoScalingGroup, key: &str) -> Option<String> {
    g.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(String::from)
}

pub fn read<T: for<'de> Deserialize<'de>>(g: &AutoScalingGroup, key: &str) -> Result<Option<T>> {
    match tag_value(g, key) {
        None => Ok(None),
        Some(v) => serde_json::from_str(&v).map(Some).with_context(|| {
            format!(
                "reading tag {key} of {}: `{v}`",
                g.auto_scaling_group_name().unwrap_or("?")
            )
        }),
    }
}

/// The tag (not propagated to instances) that records `value` on group `name`.
pub fn tag<T: Serialize>(name: &str, key: &str, value: &T) -> Result<Tag> {
    let v = serde_json::to_string(value)?;
    anyhow::ensure!(
        v.len() <= 256,
        "deploy record for {name} is {} characters, more than a tag holds: {v}",
        v.len()
    );
    Ok(Tag::builder()
        .resource_id(name)
        .resource_type("auto-scaling-group")
        .key(key)
        .value(v)
        .propagate_at_launch(false)
        .build())
}

pub async fn write<T: Serialize>(
    asg: &aws_sdk_autoscaling::Client,
    name: &str,
    key: &str,
    value: &T,
) -> Result<()> {
    asg.create_or_update_tags()
        .tags(tag(name, key, value)?)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", crate::aws::client::describe_sdk_error(&e)))
        .with_context(|| format!("recording the deploy state on {name} (tag {key})"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reported_record_spells_out_the_tags_short_keys() {
        let r = SwapRecord {
            id: "dp-1".into(),
            lt: "lt-1".into(),
            follows: Follows::Default,
            prev: "$Default".into(),
            prev_n: 3,
            new: 4,
            image: "ami-new".into(),
            prev_image: "ami-old".into(),
            phase: "done".into(),
        };
        let v = serde_json::to_value(r.report()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for short in ["f", "ph", "pimg", "pn", "img"] {
            assert!(!keys.contains(&short), "{keys:?}");
        }
        assert_eq!(v["previous_image_id"], "ami-old");
        assert_eq!(v["follows"], "default");
        // The tag itself keeps the short keys (256 characters per tag value).
        let tag = serde_json::to_value(&r).unwrap();
        assert_eq!(tag["ph"], "done");
    }

    use super::*;

    #[test]
    fn records_fit_in_a_tag() {
        let r = SwapRecord {
            id: "dp-0123456789ab".into(),
            lt: "lt-0123456789abcdef0".into(),
            follows: Follows::Default,
            prev: "$Default".into(),
            prev_n: 123456,
            new: 123457,
            image: "ami-0123456789abcdef0".into(),
            prev_image: "ami-0123456789abcdef1".into(),
            phase: "rolled-back".into(),
        };
        let t = tag("app-prod", SWAP_TAG, &r).unwrap();
        // `images prune` reads the rollback target of this record without this module.
        let g = AutoScalingGroup::builder()
            .auto_scaling_group_name("app-prod")
            .tags(
                aws_sdk_autoscaling::types::TagDescription::builder()
                    .key(SWAP_TAG)
                    .set_value(t.value().map(String::from))
                    .build(),
            )
            .build();
        assert_eq!(
            crate::aws::asg::rollback_target(&g).unwrap(),
            None,
            "a rolled-back deploy has no rollback target"
        );
        let live = tag(
            "app-prod",
            SWAP_TAG,
            &SwapRecord {
                phase: "done".into(),
                ..r.clone()
            },
        )
        .unwrap();
        let g = AutoScalingGroup::builder()
            .tags(
                aws_sdk_autoscaling::types::TagDescription::builder()
                    .key(SWAP_TAG)
                    .set_value(live.value().map(String::from))
                    .build(),
            )
            .build();
        assert_eq!(
            crate::aws::asg::rollback_target(&g).unwrap(),
            Some((r.id.clone(), r.prev_image.clone()))
        );
        assert!(t.value().unwrap().len() < 256);
        assert_eq!(
            serde_json::from_str::<SwapRecord>(t.value().unwrap()).unwrap(),
            r
        );
        let g = GenRecord {
            id: "dp-0123456789ab".into(),
            phase: "deploying".into(),
            from: Some("a-very-long-application-name-stack-detail-v123".into()),
            image: "ami-0123456789abcdef0".into(),
            lt: "lt-0123456789abcdef0".into(),
            v: 123456,
        };
        assert!(tag("x", GEN_TAG, &g).unwrap().value().unwrap().len() < 256);
    }
}
