//! Auto Scaling groups as resources a cleanup may have to delete (the deploy's ledger entries):
//! describe one, force-delete one. The deploy strategies' own group operations are in
//! `deploy::asg`.

use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_autoscaling::Client;

use super::error::sdk;

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
