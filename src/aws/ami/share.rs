//! Sharing, in every region: `--share-with ACCOUNT|ORG-ARN|OU-ARN`.
//!
//! - An account gets launch permission on the AMI **and** createVolumePermission on each of
//!   its EBS snapshots, so it can copy the AMI (e.g. to re-encrypt it with its own key), not
//!   only launch it (Packer's `ami_users` + `snapshot_users`; hashicorp/packer#3344).
//! - An organization or OU (`arn:aws:organizations::...:organization/o-...`,
//!   `...:ou/o-.../ou-...`) gets launch permission. EBS snapshots cannot be shared with an
//!   organization (ModifySnapshotAttribute takes account ids only), so its accounts can launch
//!   the AMI but not copy it; share with the accounts that must copy.
//!
//! An AMI encrypted with a customer managed key is usable by another account only if the key's
//! policy lets it use the key (bakery does not edit key policies); one encrypted with the AWS
//! managed key `aws/ebs` cannot be shared at all (checked before the bake, `encryption.rs`).

use std::fmt;

use anyhow::Result;
use aws_sdk_ec2::types::{
    LaunchPermission, LaunchPermissionModifications, OperationType, SnapshotAttributeName,
};
use tracing::info;

use crate::aws::error::sdk;

/// Who an AMI is shared with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShareTarget {
    /// A 12-digit AWS account id.
    Account(String),
    /// An AWS Organizations organization ARN.
    Organization(String),
    /// An AWS Organizations organizational unit ARN.
    OrganizationalUnit(String),
}

impl fmt::Display for ShareTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShareTarget::Account(a)
            | ShareTarget::Organization(a)
            | ShareTarget::OrganizationalUnit(a) => f.write_str(a),
        }
    }
}

/// A `--share-with` value that is neither an account id nor an organization/OU ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--share-with `{0}`: an AWS account id is 12 digits; an organization is arn:aws:organizations::ACCOUNT:organization/o-..., an OU arn:aws:organizations::ACCOUNT:ou/o-.../ou-...")]
pub struct ShareTargetError(pub String);

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.chars().all(|c| c.is_ascii_digit())
}

fn is_id_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl ShareTarget {
    /// An account id, or an organization / OU ARN (partitions aws, aws-cn, aws-us-gov).
    pub fn parse(s: &str) -> Result<ShareTarget, ShareTargetError> {
        let bad = || ShareTargetError(s.to_string());
        if is_account(s) {
            return Ok(ShareTarget::Account(s.to_string()));
        }
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts[..] else {
            return Err(bad());
        };
        if arn != "arn"
            || !matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
            || service != "organizations"
            || !region.is_empty()
            || !is_account(account)
        {
            return Err(bad());
        }
        let path: Vec<&str> = resource.split('/').collect();
        match path[..] {
            ["organization", org] if org.starts_with("o-") && is_id_part(org) => {
                Ok(ShareTarget::Organization(s.to_string()))
            }
            ["ou", org, ou]
                if org.starts_with("o-")
                    && is_id_part(org)
                    && ou.starts_with("ou-")
                    && is_id_part(ou) =>
            {
                Ok(ShareTarget::OrganizationalUnit(s.to_string()))
            }
            _ => Err(bad()),
        }
    }

    pub fn parse_all(values: &[String]) -> Result<Vec<ShareTarget>, ShareTargetError> {
        let mut out: Vec<ShareTarget> = Vec::new();
        for v in values {
            let t = ShareTarget::parse(v.trim())?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(out)
    }

    pub fn account(&self) -> Option<&str> {
        match self {
            ShareTarget::Account(a) => Some(a),
            _ => None,
        }
    }

    fn launch_permission(&self) -> LaunchPermission {
        let b = LaunchPermission::builder();
        match self {
            ShareTarget::Account(a) => b.user_id(a),
            ShareTarget::Organization(a) => b.organization_arn(a),
            ShareTarget::OrganizationalUnit(a) => b.organizational_unit_arn(a),
        }
        .build()
    }
}

/// Share `image_id` with `targets`: launch permission on the image (ModifyImageAttribute), and
/// for accounts createVolumePermission on each of `snapshot_ids` (ModifySnapshotAttribute).
/// Idempotent.
pub async fn share(
    ec2: &aws_sdk_ec2::Client,
    image_id: &str,
    snapshot_ids: &[String],
    targets: &[ShareTarget],
) -> Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let region = ec2
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "?".into());
    let names = targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let perms = LaunchPermissionModifications::builder()
        .set_add(Some(
            targets.iter().map(ShareTarget::launch_permission).collect(),
        ))
        .build();
    ec2.modify_image_attribute()
        .image_id(image_id)
        .launch_permission(perms)
        .send()
        .await
        .map_err(|e| {
            sdk(e).context(format!("sharing image {image_id} in {region} with {names}"))
        })?;
    let accounts: Vec<String> = targets
        .iter()
        .filter_map(|t| t.account().map(str::to_string))
        .collect();
    if !accounts.is_empty() {
        for snap in snapshot_ids {
            ec2.modify_snapshot_attribute()
                .snapshot_id(snap)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .operation_type(OperationType::Add)
                .set_user_ids(Some(accounts.clone()))
                .send()
                .await
                .map_err(|e| {
                    sdk(e).context(format!(
                        "sharing snapshot {snap} of {image_id} in {region} with {}",
                        accounts.join(", ")
                    ))
                })?;
        }
    }
    info!(
        "shared image {image_id}{} in {region} with {names}",
        if accounts.is_empty() || snapshot_ids.is_empty() {
            String::new()
        } else {
            format!(" and its snapshots {}", snapshot_ids.join(", "))
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_organizations_and_ous() {
        assert_eq!(
            ShareTarget::parse("123456789012"),
            Ok(ShareTarget::Account("123456789012".into()))
        );
        let org = "arn:aws:organizations::123456789012:organization/o-a1b2c3d4e5";
        assert_eq!(
            ShareTarget::parse(org),
            Ok(ShareTarget::Organization(org.into()))
        );
        let ou = "arn:aws:organizations::123456789012:ou/o-a1b2c3d4e5/ou-ab12-cdef3456";
        assert_eq!(
            ShareTarget::parse(ou),
            Ok(ShareTarget::OrganizationalUnit(ou.into()))
        );
        for bad in [
            "12",
            "12345678901x",
            "arn:aws:iam::123456789012:root",
            "arn:aws:organizations::123456789012:organization/x-1",
            "arn:aws:organizations:us-east-1:123456789012:organization/o-a1b2",
            "arn:aws:organizations::123456789012:ou/o-a1b2",
        ] {
            let e = ShareTarget::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("12 digits"),
                "{e}"
            );
        }
        let all =
            ShareTarget::parse_all(&["123456789012".into(), org.into(), "123456789012".into()])
                .unwrap();
        assert_eq!(all.len(), 2, "duplicates are shared once");
        assert_eq!(all[0].account(), Some("123456789012"));
        assert_eq!(all[1].account(), None);
    }
}
