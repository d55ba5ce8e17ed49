//! Auto Scaling groups as resources a cleanup may have to delete (the deploy's ledger entries):
//! describe one, force-delete one. The deploy strategies' own group operations are in
//! `deploy::asg`.

use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_autoscaling::Client;

use super::error::sdk;

/// The tag a swap or rolling deploy keeps on a group: `deploy::state::SwapRecord` as compact
/// JSON (what a rollback restores).
pub const SWAP_RECORD_TAG: &str = "bakery:swap";

/// What `bakery rollback --asg` would return `g` to, from its swap record: (deploy id, image),
/// or None (no record, or that deploy was rolled back already). Err when the record does not
/// parse. `images prune` keeps that image; the record's writer is `deploy::state`.
pub fn rollback_target(g: &AutoScalingGroup) -> Result<Option<(String, String)>> {
    let Some(v) = g
        .tags()
        .iter()
        .find(|t| t.key() == Some(SWAP_RECORD_TAG))
        .and_then(|t| t.value())
    else {
        return Ok(None);
    };
    let name = g.auto_scaling_group_name().unwrap_or("?");
    let rec: serde_json::Value = serde_json::from_str(v)
        .with_context(|| format!("reading tag {SWAP_RECORD_TAG} of {name}: `{v}`"))?;
    let field = |k: &str| rec.get(k).and_then(|x| x.as_str()).unwrap_or_default();
    if field("ph") == "rolled-back" || field("pimg").is_empty() {
        return Ok(None);
    }
    Ok(Some((field("id").to_string(), field("pimg").to_string())))
}

pub async fn describe(asg: &Client, name: &str) -> Result<Option<AutoScalingGroup>> {
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("describing Auto Scaling group {name}"))?;
    Ok(out
        .auto_scaling_groups()
        .iter()
        .find(|g| g.auto_scaling_group_name() == Some(name))
        .cloned())
}

/// Force-delete a group (its instances go too) and wait until it is gone; one already gone is fine.
pub async fn delete_group(asg: &Client, name: &str) -> Result<()> {
    start_delete(asg, name).await?;
    for _ in 0..600 {
        if describe(asg, name).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!("Auto Scaling group {name} was still being deleted after 10 minutes")
}

/// Force-delete a group without waiting for AWS to finish (retention of old generations).
pub async fn start_delete(asg: &Client, name: &str) -> Result<()> {
    match asg
        .delete_auto_scaling_group()
        .auto_scaling_group_name(name)
        .force_delete(true)
        .send()
        .await
    {
        Ok(_) => {}
        // Auto Scaling answers a generic `ValidationError` for a group that does not exist:
        // whether it is gone is asked, not read from the message.
        Err(e) => {
            if describe(asg, name).await?.is_some() {
                anyhow::bail!(
                    "deleting Auto Scaling group {name}: {}",
                    crate::aws::client::describe_sdk_error(&e)
                );
            }
        }
    }
    Ok(())
}
