//! CreateSnapshot of the baked volume, tagged and recorded, waited until completed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use aws_sdk_ec2::types::ResourceType;
use tracing::info;

use crate::aws::ami::{tag_spec_for, with_bake_id};
use crate::aws::client::{describe_sdk_error, AwsContext};
use crate::aws::ledger::{Ledger, Resource};

/// [`snapshot_volume_with`] with a 1 h timeout, or `BAKERY_SNAPSHOT_WAIT_TIMEOUT` seconds.
pub async fn snapshot_volume(
    ctx: &AwsContext,
    region: &str,
    volume_id: &str,
    description: &str,
    tags: &BTreeMap<String, String>,
    ledger: &Ledger,
) -> Result<String> {
    let timeout = std::env::var("BAKERY_SNAPSHOT_WAIT_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(3600));
    snapshot_volume_with(ctx, region, volume_id, description, tags, ledger, timeout).await
}

pub async fn snapshot_volume_with(
    ctx: &AwsContext,
    region: &str,
    volume_id: &str,
    description: &str,
    tags: &BTreeMap<String, String>,
    ledger: &Ledger,
    timeout: Duration,
) -> Result<String> {
    let ec2 = ctx.ec2(region);
    let tags = with_bake_id(tags, &ledger.bake_id);
    let out = ec2
        .create_snapshot()
        .volume_id(volume_id)
        .description(description)
        .tag_specifications(tag_spec_for(ResourceType::Snapshot, &tags))
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "snapshotting volume {volume_id} ({region}): {}",
                describe_sdk_error(&e)
            )
        })?;
    let snapshot_id = out
        .snapshot_id()
        .ok_or_else(|| anyhow!("CreateSnapshot of {volume_id} ({region}) returned no id"))?
        .to_string();
    ledger.record(Resource::Snapshot {
        region: region.to_string(),
        id: snapshot_id.clone(),
    });
    info!("snapshot {snapshot_id} of {volume_id} started");

    let start = Instant::now();
    let mut last_log = Instant::now();
    let mut poll = Duration::from_millis(500);
    loop {
        let out = ec2
            .describe_snapshots()
            .snapshot_ids(&snapshot_id)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "waiting for snapshot {snapshot_id} ({region}): {}",
                    describe_sdk_error(&e)
                )
            })?;
        let snap = out.snapshots().first();
        let state = snap
            .and_then(|s| s.state())
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "pending".into());
        let progress = snap.and_then(|s| s.progress()).unwrap_or("0%").to_string();
        match state.as_str() {
            "completed" => {
                info!(
                    "snapshot {snapshot_id} completed in {}s",
                    start.elapsed().as_secs()
                );
                return Ok(snapshot_id);
            }
            "error" | "recoverable" | "recovering" => {
                let msg = snap
                    .and_then(|s| s.state_message())
                    .unwrap_or("no reason given");
                bail!("snapshot {snapshot_id} of {volume_id} ({region}) is {state}: {msg}");
            }
            _ => {}
        }
        if start.elapsed() >= timeout {
            bail!("snapshot {snapshot_id} of {volume_id} ({region}) is still {state} ({progress}) after {}s; raise BAKERY_SNAPSHOT_WAIT_TIMEOUT", timeout.as_secs());
        }
        if last_log.elapsed() >= Duration::from_secs(30) {
            info!(
                "snapshot {snapshot_id}: {state} {progress} ({}s)",
                start.elapsed().as_secs()
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(Duration::from_secs(15));
    }
}
