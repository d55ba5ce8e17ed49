//! The cleanup ledger: every AWS resource a bake creates is recorded before the next call, and
//! on failure or Ctrl-C deleted in reverse order (an attached volume is detached first). What a
//! crash leaves is found later by the `bakery:bake-id` tag.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::client::AwsContext;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Resource {
    Volume { region: String, id: String },
    /// A volume attached to this host: detached before the volume is deleted.
    Attachment { region: String, volume_id: String, instance_id: String },
    Snapshot { region: String, id: String },
    Image { region: String, id: String },
}

impl Resource {
    pub fn describe(&self) -> String {
        match self {
            Resource::Volume { region, id } => format!("volume {id} ({region})"),
            Resource::Attachment { region, volume_id, instance_id } => format!("attachment of {volume_id} to {instance_id} ({region})"),
            Resource::Snapshot { region, id } => format!("snapshot {id} ({region})"),
            Resource::Image { region, id } => format!("image {id} ({region})"),
        }
    }

    pub fn region(&self) -> &str {
        match self {
            Resource::Volume { region, .. } | Resource::Attachment { region, .. } | Resource::Snapshot { region, .. } | Resource::Image { region, .. } => region,
        }
    }
}

#[derive(Debug)]
pub struct Ledger {
    pub bake_id: String,
    entries: Mutex<Vec<Resource>>,
}

impl Ledger {
    pub fn new(bake_id: &str) -> Ledger {
        Ledger { bake_id: bake_id.to_string(), entries: Mutex::new(Vec::new()) }
    }

    pub fn record(&self, r: Resource) {
        self.entries.lock().unwrap().push(r);
    }

    /// The resource is gone (deleted on the happy path, e.g. the bake volume): stop tracking it.
    pub fn forget(&self, r: &Resource) {
        self.entries.lock().unwrap().retain(|x| x != r);
    }

    pub fn entries(&self) -> Vec<Resource> {
        self.entries.lock().unwrap().clone()
    }

    /// The bake succeeded: retag its images and snapshots `bakery:bake-state=complete`, so
    /// `bakery gc` never takes a product for a leftover. Call before `commit`.
    pub async fn mark_complete(&self, ctx: &AwsContext) -> anyhow::Result<()> {
        let mut by_region: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for r in self.entries() {
            if let Resource::Image { region, id } | Resource::Snapshot { region, id } = r {
                by_region.entry(region).or_default().push(id);
            }
        }
        let done = std::collections::BTreeMap::from([(super::BAKE_STATE_TAG.to_string(), "complete".to_string())]);
        for (region, ids) in by_region {
            super::ami::tag_resources(&ctx.ec2(&region), &region, &ids, &done).await?;
        }
        Ok(())
    }

    /// The bake succeeded: what is left is the product, keep it.
    pub fn commit(&self) {
        self.entries.lock().unwrap().clear();
    }

    /// Delete everything recorded, newest first. Collects failures instead of stopping.
    pub async fn rollback(&self, ctx: &AwsContext) -> Vec<String> {
        let entries: Vec<Resource> = std::mem::take(&mut *self.entries.lock().unwrap());
        let mut failures = Vec::new();
        let mut told_again = false;
        for (i, r) in entries.iter().enumerate().rev() {
            if crate::sys::signals::count() >= 2 && !told_again {
                // A second Ctrl-C never abandons resources silently: say what is left and how to remove it.
                told_again = true;
                let left: Vec<String> = entries[..=i].iter().map(Resource::describe).collect();
                let regions: std::collections::BTreeSet<&str> = entries[..=i].iter().map(Resource::region).collect();
                warn!(
                    "interrupted again: still removing {}; cleanup goes on. If bakery is killed now, `bakery gc --aws --region {} --grace 0s` removes them (tagged {}={})",
                    left.join(", "),
                    regions.into_iter().collect::<Vec<_>>().join(","),
                    super::BAKE_ID_TAG,
                    self.bake_id
                );
            }
            info!("cleanup: removing {}", r.describe());
            if let Err(e) = delete(ctx, r).await {
                warn!("cleanup: {}: {e}", r.describe());
                failures.push(format!("{}: {e}", r.describe()));
            }
        }
        failures
    }
}

async fn delete(ctx: &AwsContext, r: &Resource) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    match r {
        Resource::Image { region, id } => {
            let ec2 = ctx.ec2(region);
            // Deregistering does not delete the AMI's snapshots; they are in the ledger too when we made them.
            match ec2.deregister_image().image_id(id).send().await {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&super::client::describe_sdk_error(&e)) => Ok(()),
                Err(e) => Err(super::client::describe_sdk_error(&e)),
            }
        }
        Resource::Snapshot { region, id } => {
            let ec2 = ctx.ec2(region);
            for attempt in 0..10 {
                match ec2.delete_snapshot().snapshot_id(id).send().await {
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        let msg = super::client::describe_sdk_error(&e);
                        if is_not_found(&msg) {
                            return Ok(());
                        }
                        // A snapshot still in use by an image being deregistered: retry shortly.
                        if attempt == 9 {
                            return Err(msg);
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            Ok(())
        }
        Resource::Attachment { region, volume_id, instance_id } => {
            let ec2 = ctx.ec2(region);
            match ec2.detach_volume().volume_id(volume_id).instance_id(instance_id).force(true).send().await {
                Ok(_) => {}
                Err(e) => {
                    let msg = super::client::describe_sdk_error(&e);
                    if !is_not_found(&msg) && !msg.contains("IncorrectState") {
                        return Err(msg);
                    }
                }
            }
            // Wait until it is available so the volume can be deleted next.
            for _ in 0..120 {
                let v = ec2.describe_volumes().volume_ids(volume_id).send().await.map_err(|e| err(&super::client::describe_sdk_error(&e)))?;
                let state = v.volumes().first().and_then(|v| v.state()).map(|s| s.as_str().to_string()).unwrap_or_default();
                if state != "in-use" {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(format!("{volume_id} did not detach within 2 minutes"))
        }
        Resource::Volume { region, id } => {
            let ec2 = ctx.ec2(region);
            match ec2.delete_volume().volume_id(id).send().await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let msg = super::client::describe_sdk_error(&e);
                    if is_not_found(&msg) { Ok(()) } else { Err(msg) }
                }
            }
        }
    }
}

fn is_not_found(msg: &str) -> bool {
    msg.contains("NotFound") || msg.contains(".Malformed") && msg.contains("does not exist")
}
