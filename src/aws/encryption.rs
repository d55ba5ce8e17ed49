//! Encryption of a bake's snapshots, region by region: `--encrypt`, `--kms-key-id KEY` (every
//! region) and `--kms-key-id REGION=KEY` (that region; Packer's `kms_key_id` and
//! `region_kms_key_ids`), and the account's EBS encryption by default, which AWS applies
//! whatever the request says.
//!
//! What each region must get is a [`Want`], decided up front ([`resolve`]: keys looked up with
//! KMS DescribeKey, GetEbsEncryptionByDefault, GetEbsDefaultKmsKeyId) so that a key that does
//! not exist, is disabled, or sits in another region is an input error before anything is made.
//! How the root snapshot is then written is a pure decision ([`snapshot_plan`]), following
//! AWS's rules for the EBS direct APIs (EBS User Guide, "Encryption outcomes for EBS direct
//! APIs"): a snapshot started from a parent takes the parent's encryption and cannot be asked
//! for another (`Encrypted`/`KmsKeyArn` with `ParentSnapshotId` is a ValidationException), and
//! under encryption by default a child of an unencrypted parent is refused. So:
//!
//! - parent already encrypted with the wanted key → the child is uploaded incrementally as
//!   usual and is encrypted with that key;
//! - otherwise the base snapshot is first copied server-side with the wanted key (CopySnapshot,
//!   nothing goes over the uplink), and the child of that copy is uploaded incrementally; the
//!   copy is deleted once the child is complete;
//! - no parent (a base made from nothing): StartSnapshot with `Encrypted` and `KmsKeyArn`, and
//!   **every** block is written, zero blocks included: blocks never written to an encrypted
//!   snapshot read back as noise on a volume (awslabs/coldsnap#395).
//!
//! Copies to other regions are encrypted by CopyImage (`Encrypted`, `KmsKeyId` of that
//! region's key); volume mode creates the bake volume encrypted (CreateVolume `KmsKeyId`).

use std::collections::BTreeMap;

use anyhow::Result;
use tracing::{info, warn};

use crate::aws::client::{describe_sdk_error, AwsContext};
use crate::aws::error::{code, sdk};
use crate::aws::ledger::{Ledger, Resource};
use crate::context::is_region_name;
use crate::input;

/// The KMS keys a bake names: one for every region, and/or one per region (which wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KmsKeys {
    pub every_region: Option<String>,
    pub by_region: BTreeMap<String, String>,
}

/// Encryption options AWS would refuse or that name a key the bake cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionError {
    #[error("--kms-key-id needs --encrypt (or `encrypt: true` in the recipe)")]
    KeyWithoutEncrypt,
    #[error("--kms-key-id `{0}`: give a key id, ARN or alias, or REGION=KEY")]
    Empty(String),
    #[error("--kms-key-id {region}=...: `{region}` is not an AWS region name")]
    BadRegion { region: String },
    #[error("--kms-key-id {region}=...: {region} is not a region of this bake ({regions}); add it to --copy-to or drop the key")]
    RegionNotInBake { region: String, regions: String },
    #[error("--kms-key-id {key}: that key is in {key_region} and KMS keys are regional, so it cannot encrypt in {region}; give --kms-key-id {region}=KEY")]
    KeyInOtherRegion {
        key: String,
        key_region: String,
        region: String,
    },
}

/// The region of a key ARN or alias ARN (`arn:aws:kms:REGION:ACCOUNT:key/...`); None for a
/// key id or alias name, which name a key of whatever region they are used in.
pub fn arn_region(key: &str) -> Option<&str> {
    let mut parts = key.splitn(6, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(r)) if !r.is_empty() => Some(r),
        _ => None,
    }
}

impl KmsKeys {
    /// The recipe's `kms-key-id` and `region-kms-key-ids`, then the flags (`KEY` or
    /// `REGION=KEY`, which win over the recipe).
    pub fn parse(
        every_region: Option<&str>,
        by_region: &BTreeMap<String, String>,
        flags: &[String],
    ) -> Result<KmsKeys, EncryptionError> {
        let mut k = KmsKeys {
            every_region: every_region.map(str::to_string),
            by_region: by_region.clone(),
        };
        for f in flags {
            let f = f.trim();
            match f.split_once('=') {
                Some((region, key)) => {
                    k.by_region
                        .insert(region.trim().to_string(), key.trim().to_string());
                }
                None => k.every_region = Some(f.to_string()),
            }
        }
        if k.every_region.as_deref().is_some_and(str::is_empty) {
            return Err(EncryptionError::Empty(String::new()));
        }
        for (region, key) in &k.by_region {
            if !is_region_name(region) {
                return Err(EncryptionError::BadRegion {
                    region: region.clone(),
                });
            }
            if key.is_empty() {
                return Err(EncryptionError::Empty(format!("{region}=")));
            }
        }
        Ok(k)
    }

    pub fn is_empty(&self) -> bool {
        self.every_region.is_none() && self.by_region.is_empty()
    }

    /// The key named for `region`.
    pub fn for_region(&self, region: &str) -> Option<&str> {
        self.by_region
            .get(region)
            .or(self.every_region.as_ref())
            .map(String::as_str)
    }

    /// Every key names a region of the bake and can be used there (an ARN is regional).
    pub fn check(&self, regions: &[String]) -> Result<(), EncryptionError> {
        for region in self.by_region.keys() {
            if !regions.contains(region) {
                return Err(EncryptionError::RegionNotInBake {
                    region: region.clone(),
                    regions: regions.join(", "),
                });
            }
        }
        for region in regions {
            if let Some(key) = self.for_region(region) {
                if let Some(kr) = arn_region(key) {
                    if kr != region {
                        return Err(EncryptionError::KeyInOtherRegion {
                            key: key.to_string(),
                            key_region: kr.to_string(),
                            region: region.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// What one region's snapshots must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// No encryption asked for and EBS encryption by default off: a snapshot is as its source.
    Plain,
    /// Encrypted with the key `key_arn`. `exact`: this very key (named, or the account's
    /// default key with `--encrypt`); otherwise only encryption by default requires it, and a
    /// source already encrypted with any key is fine.
    Encrypted { key_arn: String, exact: bool },
}

impl Want {
    /// The key to ask AWS for explicitly (CopyImage, CreateVolume, CopySnapshot): the exact
    /// key; None when AWS's own rules give the right result.
    pub fn key_to_ask(&self) -> Option<&str> {
        match self {
            Want::Encrypted {
                key_arn,
                exact: true,
            } => Some(key_arn),
            _ => None,
        }
    }

    /// Does a snapshot encrypted so satisfy this?
    pub fn accepts(&self, s: &SnapshotEncryption) -> bool {
        match self {
            Want::Plain => true,
            Want::Encrypted { key_arn, exact } => {
                s.encrypted && (!exact || s.key_arn.as_deref() == Some(key_arn))
            }
        }
    }
}

/// A region's want from what was asked and the account's settings there (pure).
pub fn want(
    encrypt: bool,
    named_key_arn: Option<String>,
    by_default: bool,
    default_key_arn: Option<String>,
) -> Want {
    match (named_key_arn, encrypt, by_default, default_key_arn) {
        (Some(k), _, _, _) => Want::Encrypted {
            key_arn: k,
            exact: true,
        },
        (None, true, _, Some(d)) => Want::Encrypted {
            key_arn: d,
            exact: true,
        },
        (None, _, true, Some(d)) => Want::Encrypted {
            key_arn: d,
            exact: false,
        },
        _ => Want::Plain,
    }
}

/// How a snapshot is encrypted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotEncryption {
    pub encrypted: bool,
    pub key_arn: Option<String>,
}

/// How direct mode writes the root snapshot (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotPlan {
    /// A child of the base snapshot: only the changed blocks; it takes the parent's encryption.
    Child,
    /// CopySnapshot of the base with `key_arn`, then a child of that copy: still only the
    /// changed blocks.
    ChildOfEncryptedCopy { key_arn: String },
    /// No parent, unencrypted: the non-zero blocks.
    Full,
    /// No parent, encrypted with `key_arn`: every block, zero blocks included.
    FullEncrypted { key_arn: String },
}

/// The plan for a region's want and the base snapshot's encryption (`None`: no parent).
pub fn snapshot_plan(parent: Option<&SnapshotEncryption>, want: &Want) -> SnapshotPlan {
    match (parent, want) {
        (None, Want::Plain) => SnapshotPlan::Full,
        (None, Want::Encrypted { key_arn, .. }) => SnapshotPlan::FullEncrypted {
            key_arn: key_arn.clone(),
        },
        (Some(_), Want::Plain) => SnapshotPlan::Child,
        (Some(p), w @ Want::Encrypted { key_arn, .. }) => {
            if w.accepts(p) {
                SnapshotPlan::Child
            } else {
                SnapshotPlan::ChildOfEncryptedCopy {
                    key_arn: key_arn.clone(),
                }
            }
        }
    }
}

/// Every region's want, decided before the bake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionPlan {
    pub regions: BTreeMap<String, Want>,
}

impl EncryptionPlan {
    pub fn want(&self, region: &str) -> Want {
        self.regions.get(region).cloned().unwrap_or(Want::Plain)
    }

    /// Region → the key CopyImage must name there (regions without one are left out).
    pub fn copy_keys(&self) -> BTreeMap<String, String> {
        self.regions
            .iter()
            .filter_map(|(r, w)| w.key_to_ask().map(|k| (r.clone(), k.to_string())))
            .collect()
    }
}

/// A KMS key as DescribeKey reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyInfo {
    arn: String,
    aws_managed: bool,
}

async fn describe_key(ctx: &AwsContext, region: &str, key: &str, what: &str) -> Result<KeyInfo> {
    match ctx.kms(region).describe_key().key_id(key).send().await {
        Ok(out) => {
            let Some(m) = out.key_metadata() else {
                return Err(input!("{what} {key}: KMS in {region} returned no key metadata"));
            };
            let state = m.key_state().map(|s| s.as_str()).unwrap_or("Enabled");
            if state != "Enabled" {
                return Err(input!(
                    "{what} {key}: the key is {state} in {region}; EBS can only use an enabled key"
                ));
            }
            Ok(KeyInfo {
                arn: m.arn().unwrap_or(key).to_string(),
                aws_managed: m.key_manager().map(|k| k.as_str()) == Some("AWS"),
            })
        }
        Err(e) => match code(&e) {
            Some("NotFoundException" | "InvalidArnException") => Err(input!(
                "{what} {key}: no such KMS key in {region} ({}); check the key, alias or ARN and its region",
                describe_sdk_error(&e)
            )),
            Some("AccessDeniedException") => {
                // The bake may use the key without being allowed to describe it.
                warn!(
                    "{what} {key}: kms:DescribeKey denied in {region}; using the key as given (the manifest shows what AWS used)"
                );
                Ok(KeyInfo {
                    arn: key.to_string(),
                    aws_managed: key.ends_with("alias/aws/ebs"),
                })
            }
            _ => Err(anyhow::anyhow!(
                "looking up KMS key {key} in {region}: {}",
                describe_sdk_error(&e)
            )),
        },
    }
}

/// EBS encryption by default in `region` (false, with a warning, when the call is denied).
async fn encryption_by_default(ctx: &AwsContext, region: &str) -> Result<bool> {
    match ctx.ec2(region).get_ebs_encryption_by_default().send().await {
        Ok(out) => Ok(out.ebs_encryption_by_default().unwrap_or(false)),
        Err(e) if code(&e) == Some("UnauthorizedOperation") => {
            warn!("ec2:GetEbsEncryptionByDefault denied in {region}: assuming it is off");
            Ok(false)
        }
        Err(e) => Err(anyhow::anyhow!(
            "reading EBS encryption by default in {region}: {}",
            describe_sdk_error(&e)
        )),
    }
}

/// The account's default EBS key in `region` (GetEbsDefaultKmsKeyId), as a key.
async fn default_key(ctx: &AwsContext, region: &str) -> Result<KeyInfo> {
    let out = ctx
        .ec2(region)
        .get_ebs_default_kms_key_id()
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "reading the default EBS KMS key in {region}: {}",
                describe_sdk_error(&e)
            )
        })?;
    let id = out.kms_key_id().unwrap_or("alias/aws/ebs").to_string();
    match describe_key(ctx, region, &id, "the default EBS key").await {
        Ok(k) => Ok(k),
        // alias/aws/ebs is made by AWS on first use: until then it cannot be described.
        Err(_) if id.ends_with("alias/aws/ebs") => Ok(KeyInfo {
            arn: id,
            aws_managed: true,
        }),
        Err(e) => Err(e),
    }
}

/// Decide every region's [`Want`] before anything is made. `share_with_accounts`: the AMI is
/// shared with other accounts, which an AWS managed key (aws/ebs) makes impossible.
pub async fn resolve(
    ctx: &AwsContext,
    regions: &[String],
    encrypt: bool,
    keys: &KmsKeys,
    share_with_accounts: bool,
) -> Result<EncryptionPlan> {
    let mut plan = EncryptionPlan::default();
    for region in regions {
        let by_default = encryption_by_default(ctx, region).await?;
        let named = match keys.for_region(region) {
            Some(k) => Some(describe_key(ctx, region, k, "--kms-key-id").await?),
            None => None,
        };
        let default = if named.is_none() && (encrypt || by_default) {
            Some(default_key(ctx, region).await?)
        } else {
            None
        };
        let key = named.as_ref().or(default.as_ref());
        if share_with_accounts && key.is_some_and(|k| k.aws_managed) {
            return Err(input!(
                "--share-with: the AMI in {region} would be encrypted with the AWS managed key aws/ebs{}, which cannot be shared with other accounts; pass --kms-key-id {region}=KEY with a customer managed key whose policy lets those accounts use it",
                if by_default && !encrypt { " (EBS encryption by default is on there)" } else { "" }
            ));
        }
        plan.regions.insert(
            region.clone(),
            want(
                encrypt,
                named.map(|k| k.arn),
                by_default,
                default.map(|k| k.arn),
            ),
        );
    }
    Ok(plan)
}

/// How `snapshot_id` in `region` is encrypted (DescribeSnapshots).
pub async fn snapshot_encryption(
    ctx: &AwsContext,
    region: &str,
    snapshot_id: &str,
) -> Result<SnapshotEncryption> {
    let out = ctx
        .ec2(region)
        .describe_snapshots()
        .snapshot_ids(snapshot_id)
        .send()
        .await
        .map_err(|e| sdk(e).context(format!("describing snapshot {snapshot_id} in {region}")))?;
    let s = out.snapshots().first().ok_or_else(|| {
        anyhow::anyhow!("describing snapshot {snapshot_id} in {region}: AWS does not know it")
    })?;
    Ok(SnapshotEncryption {
        encrypted: s.encrypted().unwrap_or(false),
        key_arn: s.kms_key_id().map(str::to_string),
    })
}

/// CopySnapshot of `snapshot_id` within `region`, encrypted with `key_arn` (server side: no
/// data goes through this host), tagged with the bake id (pending) and recorded in the ledger
/// before the wait; returns the copy once it is completed.
#[allow(clippy::too_many_arguments)]
pub async fn copy_snapshot_encrypted(
    ctx: &AwsContext,
    region: &str,
    snapshot_id: &str,
    key_arn: &str,
    description: &str,
    tags: &BTreeMap<String, String>,
    ledger: &Ledger,
    timeout: std::time::Duration,
) -> Result<String> {
    let ec2 = ctx.ec2(region);
    let tags = crate::aws::ami::with_bake_id(tags, &ledger.bake_id);
    ledger.expect_region(region);
    let out = ec2
        .copy_snapshot()
        .source_snapshot_id(snapshot_id)
        .source_region(region)
        .encrypted(true)
        .kms_key_id(key_arn)
        .description(description)
        .tag_specifications(crate::aws::ami::tag_spec_for(
            aws_sdk_ec2::types::ResourceType::Snapshot,
            &tags,
        ))
        .send()
        .await
        .map_err(|e| {
            sdk(e).context(format!(
                "copying snapshot {snapshot_id} in {region} encrypted with {key_arn}"
            ))
        })?;
    let id = out
        .snapshot_id()
        .ok_or_else(|| anyhow::anyhow!("CopySnapshot of {snapshot_id} in {region} returned no id"))?
        .to_string();
    ledger.record(Resource::Snapshot {
        region: region.to_string(),
        id: id.clone(),
    });
    info!("copying {snapshot_id} in {region} as {id}, encrypted with {key_arn}");
    crate::fault::point(&format!("encrypted copy in {region}"))?;
    crate::aws::ebs::wait_snapshot_completed(&ec2, &id, timeout).await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<String> {
        vec!["us-east-1".into(), "us-west-2".into(), "eu-west-1".into()]
    }

    const EAST: &str = "arn:aws:kms:us-east-1:123456789012:key/1111";
    const WEST: &str = "arn:aws:kms:us-west-2:123456789012:key/2222";

    #[test]
    fn keys_per_region_win_and_must_name_a_region_of_the_bake() {
        let k = KmsKeys::parse(
            Some("alias/bakery"),
            &BTreeMap::new(),
            &[format!("us-west-2={WEST}")],
        )
        .unwrap();
        assert_eq!(k.for_region("us-west-2"), Some(WEST));
        assert_eq!(k.for_region("eu-west-1"), Some("alias/bakery"));
        assert!(k.check(&regions()).is_ok());
        let e = KmsKeys::parse(None, &BTreeMap::new(), &[format!("ap-south-1={EAST}")])
            .unwrap()
            .check(&regions())
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("ap-south-1 is not a region of this bake"),
            "{e}"
        );
        let e = KmsKeys::parse(None, &BTreeMap::new(), &[EAST.to_string()])
            .unwrap()
            .check(&regions())
            .unwrap_err();
        assert!(
            matches!(e, EncryptionError::KeyInOtherRegion { ref region, .. } if region == "us-west-2"),
            "{e}"
        );
        assert!(KmsKeys::parse(None, &BTreeMap::new(), &["mars=alias/x".into()]).is_err());
        assert!(KmsKeys::parse(None, &BTreeMap::new(), &["us-east-1=".into()]).is_err());
        assert_eq!(arn_region(EAST), Some("us-east-1"));
        assert_eq!(arn_region("alias/x"), None);
        assert_eq!(arn_region("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
    }

    #[test]
    fn what_a_region_wants() {
        assert_eq!(want(false, None, false, None), Want::Plain);
        assert_eq!(
            want(true, Some(EAST.into()), false, Some("d".into())),
            Want::Encrypted {
                key_arn: EAST.into(),
                exact: true
            }
        );
        assert_eq!(
            want(true, None, false, Some("d".into())),
            Want::Encrypted {
                key_arn: "d".into(),
                exact: true
            }
        );
        let by_default = want(false, None, true, Some("d".into()));
        assert_eq!(
            by_default,
            Want::Encrypted {
                key_arn: "d".into(),
                exact: false
            }
        );
        assert_eq!(
            by_default.key_to_ask(),
            None,
            "AWS encrypts by default itself"
        );
    }

    #[test]
    fn the_root_snapshot_stays_incremental_whenever_a_parent_exists() {
        let key = |k: &str| Want::Encrypted {
            key_arn: k.into(),
            exact: true,
        };
        let plain = SnapshotEncryption::default();
        let enc = |k: &str| SnapshotEncryption {
            encrypted: true,
            key_arn: Some(k.into()),
        };
        assert_eq!(
            snapshot_plan(Some(&plain), &Want::Plain),
            SnapshotPlan::Child
        );
        assert_eq!(snapshot_plan(None, &Want::Plain), SnapshotPlan::Full);
        assert_eq!(
            snapshot_plan(None, &key(EAST)),
            SnapshotPlan::FullEncrypted {
                key_arn: EAST.into()
            }
        );
        // AWS refuses Encrypted/KmsKeyArn with a parent: encrypt a copy of the parent first.
        assert_eq!(
            snapshot_plan(Some(&plain), &key(EAST)),
            SnapshotPlan::ChildOfEncryptedCopy {
                key_arn: EAST.into()
            }
        );
        assert_eq!(
            snapshot_plan(Some(&enc(EAST)), &key(EAST)),
            SnapshotPlan::Child
        );
        assert_eq!(
            snapshot_plan(Some(&enc("other")), &key(EAST)),
            SnapshotPlan::ChildOfEncryptedCopy {
                key_arn: EAST.into()
            }
        );
        // Encryption by default: any key will do; an unencrypted parent is refused by AWS.
        let by_default = Want::Encrypted {
            key_arn: "d".into(),
            exact: false,
        };
        assert_eq!(
            snapshot_plan(Some(&enc("other")), &by_default),
            SnapshotPlan::Child
        );
        assert_eq!(
            snapshot_plan(Some(&plain), &by_default),
            SnapshotPlan::ChildOfEncryptedCopy {
                key_arn: "d".into()
            }
        );
    }
}
