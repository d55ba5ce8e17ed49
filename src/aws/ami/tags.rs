//! Tags: conversions between our `BTreeMap` and the SDK's `Tag`, and CreateTags on several
//! resources at once. Limits (50 tags, key/value lengths) are checked in `naming.rs` before any
//! resource is made.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};

use crate::aws::client::describe_sdk_error;

pub fn ec2_tags(map: &BTreeMap<String, String>) -> Vec<Tag> {
    map.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

pub fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// The caller's tags plus `bakery:bake-id=<bake_id>` (the ledger's id wins) and
/// `bakery:bake-state=pending` (until the bake succeeds; see `Ledger::mark_complete`): what
/// every resource gets, as counted by [`crate::naming::resource_tags`].
pub fn with_bake_id(tags: &BTreeMap<String, String>, bake_id: &str) -> BTreeMap<String, String> {
    crate::naming::resource_tags(tags, bake_id)
}

/// A TagSpecification of `kind` with these tags, for create calls that tag at creation.
pub fn tag_spec_for(kind: ResourceType, map: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(ec2_tags(map)))
        .build()
}

/// CreateTags on all `ids` (AMIs, snapshots, volumes) in one call.
pub async fn tag_resources(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    ids: &[String],
    tags: &BTreeMap<String, String>,
) -> Result<()> {
    if ids.is_empty() || tags.is_empty() {
        return Ok(());
    }
    ec2.create_tags()
        .set_resources(Some(ids.to_vec()))
        .set_tags(Some(ec2_tags(tags)))
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "tagging {} in {region}: {}",
                ids.join(", "),
                describe_sdk_error(&e)
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::BAKE_ID_TAG;

    #[test]
    fn tags_round_trip_and_carry_the_bake_id() {
        let mut m = BTreeMap::new();
        m.insert("appversion".to_string(), "app-1.0-1".to_string());
        m.insert(BAKE_ID_TAG.to_string(), "stale".to_string());
        let m = with_bake_id(&m, "b-123");
        assert_eq!(m[BAKE_ID_TAG], "b-123");
        // Created pending: gc may take it for a leftover until the bake marks it complete.
        assert_eq!(m[crate::aws::BAKE_STATE_TAG], "pending");
        let t = ec2_tags(&m);
        assert_eq!(t.len(), 3);
        assert_eq!(tag_map(&t), m);
    }
}
