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
    /// A launch template version a deploy made (deleted with DeleteLaunchTemplateVersions).
    LaunchTemplateVersion { region: String, template_id: String, version: i64 },
    /// An Auto Scaling group a deploy made (force-deleted: its instances go with it).
    AutoScalingGroup { region: String, name: String },
}

impl Resource {
    pub fn describe(&self) -> String {
        match self {
            Resource::Volume { region, id } => format!("volume {id} ({region})"),
            Resource::Attachment { region, volume_id, instance_id } => format!("attachment of {volume_id} to {instance_id} ({region})"),
            Resource::Snapshot { region, id } => format!("snapshot {id} ({region})"),
            Resource::Image { region, id } => format!("image {id} ({region})"),
            Resource::LaunchTemplateVersion { region, template_id, version } => format!("launch template {template_id} version {version} ({region})"),
            Resource::AutoScalingGroup { region, name } => format!("Auto Scaling group {name} ({region})"),
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

    /// The bake succeeded: what is left is the product, keep it.
    pub fn commit(&self) {
        self.entries.lock().unwrap().clear();
    }

    /// Delete everything recorded, newest first. Collects failures instead of stopping.
    pub async fn rollback(&self, ctx: &AwsContext) -> Vec<String> {
        let entries: Vec<Resource> = std::mem::take(&mut *self.entries.lock().unwrap());
        let mut failures = Vec::new();
        for r in entries.iter().rev() {
            info!("cleanup: removing {}", r.describe());
            if let Err(e) = delete(ctx, r).await {
                warn!("cleanup: {}: {e}", r.describe());
                failures.push(format!("{}: {e}", r.describe()));
            }
        }
        failures
    }
}

pub async fn delete(ctx: &AwsContext, r: &Resource) -> Result<(), String> {
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
        Resource::LaunchTemplateVersion { region, template_id, version } => {
            crate::deploy::lt::delete_version(&ctx.ec2(region), template_id, *version).await.map_err(|e| format!("{e:#}"))
        }
        Resource::AutoScalingGroup { region, name } => {
            crate::deploy::asg::delete_group(&ctx.autoscaling(region), name).await.map_err(|e| format!("{e:#}"))
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
