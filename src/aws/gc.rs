//! `bakery gc --region R,...`: AWS resources a killed bake left. Every volume, snapshot and AMI a
//! bake creates is tagged `bakery:bake-id=<id>` and `bakery:bake-state=pending`; a bake that
//! finishes retags its products `complete` (see `Ledger::mark_complete`). So a leftover is a
//! resource still `pending` whose bake is not running on this host (its liveness lock is free)
//! and that is older than the grace period (which protects bakes running on other hosts).
//! Resources without the state tag (made by older bakery versions, or by hand) are never touched.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use aws_sdk_ec2::types::Filter;
use serde::Serialize;

use super::ami::tag_map;
use super::client::{describe_sdk_error, AwsContext};
use super::ledger::{Ledger, Resource};
use super::{BAKE_ID_TAG, BAKE_STATE_TAG};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AwsLeftover {
    /// `image`, `snapshot` or `volume`.
    pub resource: &'static str,
    pub region: String,
    pub id: String,
    pub bake_id: String,
    pub age_seconds: u64,
    /// For a volume: the instance it is still attached to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_to: Option<String>,
}

impl AwsLeftover {
    pub fn describe(&self) -> String {
        let att = self
            .attached_to
            .as_ref()
            .map(|i| format!(", attached to {i}"))
            .unwrap_or_default();
        format!(
            "{} {} in {} (bake {}, {} s old{att})",
            self.resource, self.id, self.region, self.bake_id, self.age_seconds
        )
    }
}

/// Is a resource with these tags and this age a leftover? (Pure: the decision `gc` acts on.)
pub fn is_leftover(
    tags: &BTreeMap<String, String>,
    age: Duration,
    grace: Duration,
    running: impl Fn(&str) -> bool,
) -> Option<String> {
    let id = tags.get(BAKE_ID_TAG)?;
    if tags.get(BAKE_STATE_TAG).map(String::as_str) != Some("pending") {
        return None;
    }
    if age < grace || running(id) {
        return None;
    }
    Some(id.clone())
}

/// A `--grace` value that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraceError {
    #[error("`{0}` is not a duration like 2h, 30m, 90s or 0")]
    NotADuration(String),
    #[error("`{text}`: unknown unit `{unit}` (use s, m, h or d)")]
    UnknownUnit { text: String, unit: String },
}

/// `2h`, `30m`, `90s`, `1d`, `0`: the grace period of `--grace`.
pub fn parse_grace(s: &str) -> std::result::Result<Duration, GraceError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| GraceError::NotADuration(s.to_string()))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(GraceError::UnknownUnit {
                text: s.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| GraceError::NotADuration(s.to_string()))
}

fn age_of(created: Option<&aws_smithy_types::DateTime>) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    created
        .map(|c| Duration::from_secs((now - c.secs()).max(0) as u64))
        .unwrap_or(Duration::MAX)
}

fn age_of_iso(created: Option<&str>) -> Duration {
    let t = created.and_then(|c| {
        aws_smithy_types::DateTime::from_str(c, aws_smithy_types::date_time::Format::DateTime).ok()
    });
    age_of(t.as_ref())
}

/// Is bake `id` running on this host? Its liveness lock (held for the whole bake) says so.
/// A lock file that does not exist is a bake of another host or a gone one: not running here.
pub fn running_here(work_top: &Path, id: &str) -> bool {
    let name = crate::workdir::alive_lock_name(id);
    if !work_top.join("locks").join(format!("{name}.lock")).exists() {
        return false;
    }
    !matches!(
        crate::sys::lock::HostLock::try_acquire(&work_top.join("locks"), &name),
        Ok(Some(_))
    )
}

/// The pending resources of dead bakes in `region`.
pub async fn find(
    ctx: &AwsContext,
    region: &str,
    grace: Duration,
    running: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<AwsLeftover>> {
    let ec2 = ctx.ec2(region);
    let pending = Filter::builder()
        .name(format!("tag:{BAKE_STATE_TAG}"))
        .values("pending")
        .build();
    let has_id = Filter::builder()
        .name("tag-key")
        .values(BAKE_ID_TAG)
        .build();
    let err =
        |what: &str, e: String| anyhow!("listing {what} tagged {BAKE_ID_TAG} in {region}: {e}");
    let mut out = Vec::new();
    let mut leftover = |resource: &'static str,
                        id: Option<&str>,
                        tags: &[aws_sdk_ec2::types::Tag],
                        age: Duration,
                        attached_to: Option<String>| {
        if let (Some(id), Some(bake_id)) = (id, is_leftover(&tag_map(tags), age, grace, running)) {
            out.push(AwsLeftover {
                resource,
                region: region.to_string(),
                id: id.to_string(),
                bake_id,
                age_seconds: age.as_secs().min(u32::MAX as u64),
                attached_to,
            });
        }
    };
    let images = ec2
        .describe_images()
        .owners("self")
        .filters(pending.clone())
        .filters(has_id.clone())
        .send()
        .await
        .map_err(|e| err("images", describe_sdk_error(&e)))?;
    for i in images.images() {
        leftover(
            "image",
            i.image_id(),
            i.tags(),
            age_of_iso(i.creation_date()),
            None,
        );
    }
    let mut token = None;
    loop {
        let page = ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(pending.clone())
            .filters(has_id.clone())
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| err("snapshots", describe_sdk_error(&e)))?;
        for s in page.snapshots() {
            leftover(
                "snapshot",
                s.snapshot_id(),
                s.tags(),
                age_of(s.start_time()),
                None,
            );
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let vols = ec2
        .describe_volumes()
        .filters(pending)
        .filters(has_id)
        .send()
        .await
        .map_err(|e| err("volumes", describe_sdk_error(&e)))?;
    for v in vols.volumes() {
        let attached = v
            .attachments()
            .iter()
            .find_map(|a| a.instance_id())
            .map(str::to_string);
        leftover(
            "volume",
            v.volume_id(),
            v.tags(),
            age_of(v.create_time()),
            attached,
        );
    }
    Ok(out)
}

/// Remove leftovers in a safe order: images first (so their snapshots are free), then
/// snapshots, then volumes (detached first). Returns the failures, one per resource.
pub async fn remove(ctx: &AwsContext, found: &[AwsLeftover]) -> Vec<String> {
    // The ledger's rollback deletes newest first: record in the reverse of the deletion order.
    let ledger = Ledger::new("gc");
    for l in found.iter().filter(|l| l.resource == "volume") {
        ledger.record(Resource::Volume {
            region: l.region.clone(),
            id: l.id.clone(),
        });
        if let Some(instance_id) = &l.attached_to {
            ledger.record(Resource::Attachment {
                region: l.region.clone(),
                volume_id: l.id.clone(),
                instance_id: instance_id.clone(),
            });
        }
    }
    for l in found.iter().filter(|l| l.resource == "snapshot") {
        ledger.record(Resource::Snapshot {
            region: l.region.clone(),
            id: l.id.clone(),
        });
    }
    for l in found.iter().filter(|l| l.resource == "image") {
        ledger.record(Resource::Image {
            region: l.region.clone(),
            id: l.id.clone(),
        });
    }
    ledger.rollback(ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_pending_resources_of_dead_bakes_past_the_grace_period_are_leftovers() {
        let hour = Duration::from_secs(3600);
        let dead = |_: &str| false;
        let pending = tags(&[(BAKE_ID_TAG, "bk-1"), (BAKE_STATE_TAG, "pending")]);
        assert_eq!(
            is_leftover(&pending, 3 * hour, 2 * hour, dead).as_deref(),
            Some("bk-1")
        );
        assert_eq!(
            is_leftover(&pending, hour, 2 * hour, dead),
            None,
            "younger than the grace period"
        );
        assert_eq!(
            is_leftover(&pending, 3 * hour, 2 * hour, |id| id == "bk-1"),
            None,
            "its bake is running"
        );
        let done = tags(&[(BAKE_ID_TAG, "bk-1"), (BAKE_STATE_TAG, "complete")]);
        assert_eq!(
            is_leftover(&done, 3 * hour, Duration::ZERO, dead),
            None,
            "a product is never a leftover"
        );
        let legacy = tags(&[(BAKE_ID_TAG, "bk-1")]);
        assert_eq!(
            is_leftover(&legacy, 3 * hour, Duration::ZERO, dead),
            None,
            "no state tag: not ours to judge"
        );
        assert_eq!(
            is_leftover(
                &tags(&[(BAKE_STATE_TAG, "pending")]),
                3 * hour,
                Duration::ZERO,
                dead
            ),
            None
        );
    }

    #[test]
    fn grace_periods() {
        assert_eq!(parse_grace("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_grace("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_grace("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_grace("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_grace("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_grace("2 hours").is_err());
        assert!(parse_grace("h").is_err());
    }

    #[test]
    fn iso_creation_dates_give_ages() {
        assert!(age_of_iso(Some("2020-01-01T00:00:00.000Z")) > Duration::from_secs(86400));
        assert_eq!(age_of_iso(None), Duration::MAX);
    }
}
