//! The cleanup ledger: every AWS resource a bake creates is recorded before the next call, and
//! on failure or Ctrl-C deleted in reverse order (an attached volume is detached first). What a
//! crash leaves is found later by the `bakery:bake-id` tag.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::client::{describe_sdk_error, AwsContext};
use super::error::{code, is_already_gone, is_incorrect_state};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Resource {
    Volume {
        region: String,
        id: String,
    },
    /// A volume attached to this host: detached before the volume is deleted.
    Attachment {
        region: String,
        volume_id: String,
        instance_id: String,
    },
    Snapshot {
        region: String,
        id: String,
    },
    Image {
        region: String,
        id: String,
    },
    /// A launch template version a deploy made (deleted with DeleteLaunchTemplateVersions).
    LaunchTemplateVersion {
        region: String,
        template_id: String,
        version: i64,
    },
    /// An Auto Scaling group a deploy made (force-deleted: its instances go with it).
    AutoScalingGroup {
        region: String,
        name: String,
    },
    /// A CloudWatch alarm a deploy made for a new generation's scaling policy (AWS keeps an
    /// alarm when its group is deleted).
    Alarm {
        region: String,
        name: String,
    },
}

impl Resource {
    pub fn describe(&self) -> String {
        match self {
            Resource::Volume { region, id } => format!("volume {id} ({region})"),
            Resource::Attachment {
                region,
                volume_id,
                instance_id,
            } => format!("attachment of {volume_id} to {instance_id} ({region})"),
            Resource::Snapshot { region, id } => format!("snapshot {id} ({region})"),
            Resource::Image { region, id } => format!("image {id} ({region})"),
            Resource::LaunchTemplateVersion {
                region,
                template_id,
                version,
            } => format!("launch template {template_id} version {version} ({region})"),
            Resource::AutoScalingGroup { region, name } => {
                format!("Auto Scaling group {name} ({region})")
            }
            Resource::Alarm { region, name } => format!("CloudWatch alarm {name} ({region})"),
        }
    }

    pub fn region(&self) -> &str {
        match self {
            Resource::Volume { region, .. }
            | Resource::Attachment { region, .. }
            | Resource::Snapshot { region, .. }
            | Resource::Image { region, .. }
            | Resource::LaunchTemplateVersion { region, .. }
            | Resource::AutoScalingGroup { region, .. }
            | Resource::Alarm { region, .. } => region,
        }
    }
}

#[derive(Debug)]
pub struct Ledger {
    pub bake_id: String,
    entries: Mutex<Vec<Resource>>,
    /// Regions this bake made (or asked AWS to make) something in: a rollback sweeps them.
    regions: Mutex<std::collections::BTreeSet<String>>,
}

impl Ledger {
    pub fn new(bake_id: &str) -> Ledger {
        Ledger {
            bake_id: bake_id.to_string(),
            entries: Mutex::new(Vec::new()),
            regions: Mutex::new(Default::default()),
        }
    }

    pub fn record(&self, r: Resource) {
        self.regions.lock().unwrap().insert(r.region().to_string());
        self.entries.lock().unwrap().push(r);
    }

    /// A call that creates something in `region` is about to be made (its id may never reach
    /// us if we are interrupted during the call): the rollback sweeps `region` by tag.
    pub fn expect_region(&self, region: &str) {
        self.regions.lock().unwrap().insert(region.to_string());
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
        let done = std::collections::BTreeMap::from([(
            super::BAKE_STATE_TAG.to_string(),
            "complete".to_string(),
        )]);
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
                let regions: std::collections::BTreeSet<&str> =
                    entries[..=i].iter().map(Resource::region).collect();
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
                warn!("cleanup: {}: {e:#}", r.describe());
                failures.push(format!("{}: {e:#}", r.describe()));
            }
        }
        // What AWS made for us that we never saw an id of (the snapshots of a copy still in
        // progress) carries our bake id too: sweep each region we touched by that tag.
        let regions: Vec<String> = self.regions.lock().unwrap().iter().cloned().collect();
        for region in regions {
            for r in tagged_with_bake_id(ctx, &region, &self.bake_id).await {
                info!(
                    "cleanup: removing {} (found by its {} tag)",
                    r.describe(),
                    super::BAKE_ID_TAG
                );
                if let Err(e) = delete(ctx, &r).await {
                    warn!("cleanup: {}: {e:#}", r.describe());
                    failures.push(format!("{}: {e:#}", r.describe()));
                }
            }
        }
        failures
    }
}

/// Images, then snapshots, tagged with `bake_id` in `region` (in the order they can be deleted),
/// except those already marked `bakery:bake-state=complete`: a bake may keep a product of its
/// own before it ends (a layered base AMI of the layer cache), which its rollback leaves alone.
async fn tagged_with_bake_id(ctx: &AwsContext, region: &str, bake_id: &str) -> Vec<Resource> {
    let ec2 = ctx.ec2(region);
    let f = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{}", super::BAKE_ID_TAG))
        .values(bake_id)
        .build();
    let mut out = Vec::new();
    if let Ok(imgs) = ec2
        .describe_images()
        .owners("self")
        .filters(f.clone())
        .send()
        .await
    {
        out.extend(
            imgs.images()
                .iter()
                .filter(|i| !is_complete(i.tags()))
                .filter_map(|i| i.image_id())
                .map(|id| Resource::Image {
                    region: region.to_string(),
                    id: id.to_string(),
                }),
        );
    }
    if let Ok(snaps) = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(f)
        .send()
        .await
    {
        out.extend(
            snaps
                .snapshots()
                .iter()
                .filter(|s| !is_complete(s.tags()))
                .filter_map(|s| s.snapshot_id())
                .map(|id| Resource::Snapshot {
                    region: region.to_string(),
                    id: id.to_string(),
                }),
        );
    }
    out
}

fn is_complete(tags: &[aws_sdk_ec2::types::Tag]) -> bool {
    tags.iter()
        .any(|t| t.key() == Some(super::BAKE_STATE_TAG) && t.value() == Some("complete"))
}

/// Delete one recorded resource; one already gone counts as deleted.
pub async fn delete(ctx: &AwsContext, r: &Resource) -> anyhow::Result<()> {
    let describe = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    match r {
        Resource::Image { region, id } => {
            let ec2 = ctx.ec2(region);
            // Deregistering does not delete the AMI's snapshots; they are in the ledger too when we made them.
            match ec2.deregister_image().image_id(id).send().await {
                Ok(_) => Ok(()),
                Err(e) if code(&e).is_some_and(is_already_gone) => Ok(()),
                // Refused: when deregistration protection is why, lift it and try again.
                Err(e) => super::ami::lifecycle::deregister_protected(&ec2, region, id)
                    .await
                    .unwrap_or_else(|| Err(describe(&describe_sdk_error(&e)))),
            }
        }
        Resource::Snapshot { region, id } => {
            let ec2 = ctx.ec2(region);
            for attempt in 0..10 {
                match ec2.delete_snapshot().snapshot_id(id).send().await {
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        if code(&e).is_some_and(is_already_gone) {
                            return Ok(());
                        }
                        // A snapshot still in use by an image being deregistered: retry shortly.
                        if attempt == 9 {
                            return Err(describe(&describe_sdk_error(&e)));
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            Ok(())
        }
        Resource::Attachment {
            region,
            volume_id,
            instance_id,
        } => {
            let ec2 = ctx.ec2(region);
            match ec2
                .detach_volume()
                .volume_id(volume_id)
                .instance_id(instance_id)
                .force(true)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    if !code(&e).is_some_and(|c| is_already_gone(c) || is_incorrect_state(c)) {
                        return Err(describe(&describe_sdk_error(&e)));
                    }
                }
            }
            // Wait until it is available so the volume can be deleted next.
            for _ in 0..120 {
                let v = ec2
                    .describe_volumes()
                    .volume_ids(volume_id)
                    .send()
                    .await
                    .map_err(|e| describe(&describe_sdk_error(&e)))?;
                let state = v
                    .volumes()
                    .first()
                    .and_then(|v| v.state())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default();
                if state != "in-use" {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(anyhow::anyhow!(
                "{volume_id} did not detach within 2 minutes"
            ))
        }
        Resource::LaunchTemplateVersion {
            region,
            template_id,
            version,
        } => super::launch_template::delete_version(&ctx.ec2(region), template_id, *version).await,
        Resource::AutoScalingGroup { region, name } => {
            super::asg::delete_group(&ctx.autoscaling(region), name).await
        }
        Resource::Alarm { region, name } => {
            super::alarm::delete(&ctx.cloudwatch(region), std::slice::from_ref(name)).await
        }
        Resource::Volume { region, id } => {
            let ec2 = ctx.ec2(region);
            match ec2.delete_volume().volume_id(id).send().await {
                Ok(_) => Ok(()),
                Err(e) if code(&e).is_some_and(is_already_gone) => Ok(()),
                Err(e) => Err(describe(&describe_sdk_error(&e))),
            }
        }
    }
}
