//! Launch permissions: `--share-with ACCOUNT` in every region.

use anyhow::{anyhow, Result};
use aws_sdk_ec2::types::{LaunchPermission, LaunchPermissionModifications};
use tracing::info;

use crate::aws::client::describe_sdk_error;

/// Let `accounts` launch `image_id` (ModifyImageAttribute, LaunchPermission add). Idempotent.
pub async fn share(ec2: &aws_sdk_ec2::Client, image_id: &str, accounts: &[String]) -> Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let region = ec2
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "?".into());
    let perms = LaunchPermissionModifications::builder()
        .set_add(Some(
            accounts
                .iter()
                .map(|a| LaunchPermission::builder().user_id(a).build())
                .collect(),
        ))
        .build();
    ec2.modify_image_attribute()
        .image_id(image_id)
        .launch_permission(perms)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "sharing image {image_id} in {region} with {}: {}",
                accounts.join(", "),
                describe_sdk_error(&e)
            )
        })?;
    info!(
        "shared image {image_id} in {region} with {}",
        accounts.join(", ")
    );
    Ok(())
}
