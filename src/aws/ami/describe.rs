//! What AWS says an AMI is, after the bake: its launch attributes and lifecycle settings
//! (DescribeImages) and each EBS snapshot with the KMS key that encrypts it (DescribeSnapshots).
//! The manifest records this read-back, not what was asked for.

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use super::find::snapshot_ids;
use crate::aws::error::sdk;

/// The attributes of a registered AMI, as DescribeImages reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAttributes {
    /// `legacy-bios`, `uefi` or `uefi-preferred`; absent: the instance type's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<String>,
    /// `v2.0`: instances launched from it require IMDSv2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds_support: Option<String>,
    /// `v2.0`: NitroTPM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_support: Option<String>,
    #[serde(default)]
    pub ena_support: bool,
    /// `simple`: SR-IOV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov_net_support: Option<String>,
    /// When the AMI deprecates (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation_time: Option<String>,
    /// `disabled`, `enabled-without-cooldown`, `enabled-with-cooldown`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistration_protection: Option<String>,
}

/// One EBS snapshot of an AMI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub device_name: String,
    pub snapshot_id: String,
    /// The volume size the AMI's mapping gives it (GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size_gib: Option<i32>,
    #[serde(default)]
    pub encrypted: bool,
    /// The ARN of the KMS key that encrypts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

/// An AMI as AWS reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageReport {
    pub attributes: ImageAttributes,
    /// The root snapshot first.
    pub snapshots: Vec<SnapshotInfo>,
}

/// DescribeImages + DescribeSnapshots for one image.
pub async fn describe_image(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    image_id: &str,
) -> Result<ImageReport> {
    let out = ec2
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .map_err(|e| sdk(e).context(format!("describing {image_id} in {region}")))?;
    let image = out
        .images()
        .first()
        .ok_or_else(|| anyhow!("describing {image_id} in {region}: AWS does not know it"))?;
    let attributes = ImageAttributes {
        boot_mode: image.boot_mode().map(|v| v.as_str().to_string()),
        imds_support: image.imds_support().map(|v| v.as_str().to_string()),
        tpm_support: image.tpm_support().map(|v| v.as_str().to_string()),
        ena_support: image.ena_support().unwrap_or(false),
        sriov_net_support: image.sriov_net_support().map(str::to_string),
        deprecation_time: image.deprecation_time().map(str::to_string),
        deregistration_protection: image.deregistration_protection().map(str::to_string),
    };
    let ids = snapshot_ids(image);
    let mut snapshots: Vec<SnapshotInfo> = ids
        .iter()
        .map(|id| {
            let m = image
                .block_device_mappings()
                .iter()
                .find(|m| m.ebs().and_then(|e| e.snapshot_id()) == Some(id.as_str()));
            SnapshotInfo {
                device_name: m
                    .and_then(|m| m.device_name())
                    .unwrap_or_default()
                    .to_string(),
                snapshot_id: id.clone(),
                volume_size_gib: m.and_then(|m| m.ebs()).and_then(|e| e.volume_size()),
                ..Default::default()
            }
        })
        .collect();
    if !ids.is_empty() {
        let out = ec2
            .describe_snapshots()
            .set_snapshot_ids(Some(ids.clone()))
            .send()
            .await
            .map_err(|e| {
                sdk(e).context(format!(
                    "describing the snapshots of {image_id} in {region}"
                ))
            })?;
        for s in out.snapshots() {
            if let Some(info) = snapshots
                .iter_mut()
                .find(|i| Some(i.snapshot_id.as_str()) == s.snapshot_id())
            {
                info.encrypted = s.encrypted().unwrap_or(false);
                info.kms_key_id = s.kms_key_id().map(str::to_string);
            }
        }
    }
    Ok(ImageReport {
        attributes,
        snapshots,
    })
}
