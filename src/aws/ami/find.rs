//! Finding images: the base by id or by name pattern (the newest `available` one we own, like
//! Aminator's `-B`), an image by exact name (idempotent reruns), and listings for `base list`.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use aws_sdk_ec2::types::{BlockDeviceMapping, DeviceType, Filter, Image};
use serde::{Deserialize, Serialize};

use super::tags::tag_map;
use crate::aws::client::{describe_sdk_error, AwsContext};
use crate::input;

/// Which base AMI to bake on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseRef {
    /// `ami-0123...`
    Id(String),
    /// A name with `*`/`?` wildcards: the newest available image of ours that matches.
    NamePattern(String),
}

/// One block device mapping of an image, in a form we can serialize and turn back into the
/// SDK's type for RegisterImage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub device_name: String,
    pub snapshot_id: Option<String>,
    pub volume_size_gib: Option<i32>,
    pub volume_type: Option<String>,
    pub delete_on_termination: Option<bool>,
    pub encrypted: Option<bool>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    /// `ephemeralN` for instance store mappings.
    pub virtual_name: Option<String>,
    /// The mapping suppresses a device of the same name.
    pub no_device: bool,
}

impl BlockDevice {
    pub fn from_sdk(m: &BlockDeviceMapping) -> BlockDevice {
        let ebs = m.ebs();
        BlockDevice {
            device_name: m.device_name().unwrap_or_default().to_string(),
            snapshot_id: ebs.and_then(|e| e.snapshot_id()).map(str::to_string),
            volume_size_gib: ebs.and_then(|e| e.volume_size()),
            volume_type: ebs
                .and_then(|e| e.volume_type())
                .map(|t| t.as_str().to_string()),
            delete_on_termination: ebs.and_then(|e| e.delete_on_termination()),
            encrypted: ebs.and_then(|e| e.encrypted()),
            iops: ebs.and_then(|e| e.iops()),
            throughput: ebs.and_then(|e| e.throughput()),
            virtual_name: m.virtual_name().map(str::to_string),
            no_device: m.no_device().is_some(),
        }
    }

    pub fn is_ebs(&self) -> bool {
        !self.no_device && self.virtual_name.is_none()
    }
}

/// The base AMI a bake starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseAmi {
    pub id: String,
    pub name: String,
    pub region: String,
    pub root_device_name: String,
    pub root_snapshot_id: String,
    pub root_volume_size_gib: i32,
    pub block_device_mappings: Vec<BlockDevice>,
    pub architecture: String,
    pub boot_mode: Option<String>,
    pub ena_support: bool,
    pub virtualization_type: String,
    pub tags: BTreeMap<String, String>,
    /// The `base_ami_version` tag, when the base was published by bakery.
    pub version: Option<String>,
    /// `v2.0` when instances must use IMDSv2 (inherited by images baked on it).
    #[serde(default)]
    pub imds_support: Option<String>,
    /// `v2.0` for NitroTPM.
    #[serde(default)]
    pub tpm_support: Option<String>,
    /// `simple` for SR-IOV (Intel 82599 VF).
    #[serde(default)]
    pub sriov_net_support: Option<String>,
}

/// A line of `bakery base list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    pub id: String,
    pub name: String,
    pub creation_date: String,
    pub tags: BTreeMap<String, String>,
    pub state: String,
}

/// `*` matches any run of characters, `?` any one character (EC2 filter semantics).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Newest first: by creation date, then by name (descending) for images made in the same instant.
fn newest_first(a: &Image, b: &Image) -> std::cmp::Ordering {
    b.creation_date()
        .unwrap_or_default()
        .cmp(a.creation_date().unwrap_or_default())
        .then_with(|| {
            b.name()
                .unwrap_or_default()
                .cmp(a.name().unwrap_or_default())
        })
}

/// DescribeImages owned by this account, all pages.
pub(crate) async fn describe_own_images(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    filters: Vec<Filter>,
) -> Result<Vec<Image>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let resp = ec2
            .describe_images()
            .owners("self")
            .set_filters(Some(filters.clone()))
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| anyhow!("listing images in {region}: {}", describe_sdk_error(&e)))?;
        out.extend(resp.images().iter().cloned());
        match resp.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// Resolve `--base`/`--base-name` to the base AMI's facts. Input errors when it does not exist,
/// nothing matches, or it is not EBS-backed (nothing to snapshot from).
pub async fn resolve_base(ctx: &AwsContext, region: &str, base: &BaseRef) -> Result<BaseAmi> {
    let ec2 = ctx.ec2(region);
    let image = match base {
        BaseRef::Id(id) => {
            let resp = ec2.describe_images().image_ids(id).send().await;
            match resp {
                Ok(out) => out.images().first().cloned().ok_or_else(|| {
                    input!("base AMI {id} not found in {region}; check the id and region")
                })?,
                Err(e) => {
                    let msg = describe_sdk_error(&e);
                    if crate::aws::error::code(&e).is_some_and(crate::aws::error::is_unknown_ami) {
                        return Err(input!(
                            "base AMI {id} not found in {region}; check the id and region ({msg})"
                        ));
                    }
                    return Err(anyhow!("looking up base AMI {id} in {region}: {msg}"));
                }
            }
        }
        BaseRef::NamePattern(pattern) => {
            let mut images: Vec<Image> = describe_own_images(
                &ec2,
                region,
                vec![filter("name", pattern), filter("state", "available")],
            )
            .await?
            .into_iter()
            .filter(|i| {
                glob_match(pattern, i.name().unwrap_or_default())
                    && i.state().map(|s| s.as_str()) == Some("available")
            })
            .collect();
            images.sort_by(newest_first);
            images.into_iter().next().ok_or_else(|| {
                input!("no available AMI owned by this account matches `{pattern}` in {region}; check --base-name (wildcards: *) and the region, or list them with `bakery base list`")
            })?
        }
    };
    base_from_image(&image, region)
}

fn base_from_image(image: &Image, region: &str) -> Result<BaseAmi> {
    let id = image.image_id().unwrap_or_default().to_string();
    let name = image.name().unwrap_or_default().to_string();
    if image.root_device_type() != Some(&DeviceType::Ebs) {
        return Err(input!(
            "base AMI {id} ({name}) in {region} is not EBS-backed (root device type {}); bakery needs an EBS root snapshot",
            image.root_device_type().map(|t| t.as_str()).unwrap_or("unknown")
        ));
    }
    let root_device_name = image
        .root_device_name()
        .ok_or_else(|| input!("base AMI {id} ({name}) in {region} has no root device name"))?
        .to_string();
    let mappings: Vec<BlockDevice> = image
        .block_device_mappings()
        .iter()
        .map(BlockDevice::from_sdk)
        .collect();
    let root = mappings
        .iter()
        .find(|m| same_device(&m.device_name, &root_device_name) && m.snapshot_id.is_some())
        .ok_or_else(|| input!("base AMI {id} ({name}) in {region} has no EBS snapshot for its root device {root_device_name}"))?;
    let tags = tag_map(image.tags());
    let state = image.state().map(|s| s.as_str()).unwrap_or("unknown");
    if state != "available" {
        return Err(input!(
            "base AMI {id} ({name}) in {region} is {state}, not available"
        ));
    }
    Ok(BaseAmi {
        id: id.clone(),
        name,
        region: region.to_string(),
        root_device_name: root_device_name.clone(),
        root_snapshot_id: root.snapshot_id.clone().unwrap_or_default(),
        // AWS always reports the root size; 8 GiB is the EC2 default should it not.
        root_volume_size_gib: root.volume_size_gib.unwrap_or(8),
        block_device_mappings: mappings.clone(),
        architecture: image
            .architecture()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| "x86_64".into()),
        boot_mode: image.boot_mode().map(|b| b.as_str().to_string()),
        ena_support: image.ena_support().unwrap_or(true),
        virtualization_type: image
            .virtualization_type()
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| "hvm".into()),
        version: tags.get("base_ami_version").cloned(),
        tags,
        imds_support: image.imds_support().map(|v| v.as_str().to_string()),
        tpm_support: image.tpm_support().map(|v| v.as_str().to_string()),
        sriov_net_support: image.sriov_net_support().map(str::to_string),
    })
}

/// `/dev/xvda` and `xvda` name the same device.
pub(crate) fn same_device(a: &str, b: &str) -> bool {
    a.trim_start_matches("/dev/") == b.trim_start_matches("/dev/")
}

/// The root snapshot first, then the other EBS snapshots of an image.
pub(crate) fn snapshot_ids(image: &Image) -> Vec<String> {
    let root = image.root_device_name().unwrap_or_default();
    let mut ids: Vec<(bool, String)> = image
        .block_device_mappings()
        .iter()
        .filter_map(|m| {
            let sid = m.ebs()?.snapshot_id()?;
            Some((
                !same_device(m.device_name().unwrap_or_default(), root),
                sid.to_string(),
            ))
        })
        .collect();
    ids.sort_by_key(|(not_root, _)| *not_root);
    ids.into_iter().map(|(_, s)| s).collect()
}

/// The image of ours with exactly this name, if any: `(image_id, snapshot_ids (root first), state)`.
/// Deregistered images are ignored. If several exist (a race), the newest wins.
pub async fn find_image_by_name(
    ec2: &aws_sdk_ec2::Client,
    name: &str,
) -> Result<Option<(String, Vec<String>, String)>> {
    Ok(newest_named(ec2, name).await?.map(|i| {
        (
            i.image_id().unwrap_or_default().to_string(),
            snapshot_ids(&i),
            i.state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
        )
    }))
}

/// As [`find_image_by_name`], with the image's tags instead of its state.
pub async fn find_tagged_image_by_name(
    ec2: &aws_sdk_ec2::Client,
    name: &str,
) -> Result<Option<(String, Vec<String>, BTreeMap<String, String>)>> {
    Ok(newest_named(ec2, name).await?.map(|i| {
        (
            i.image_id().unwrap_or_default().to_string(),
            snapshot_ids(&i),
            tag_map(i.tags()),
        )
    }))
}

async fn newest_named(ec2: &aws_sdk_ec2::Client, name: &str) -> Result<Option<Image>> {
    let region = ec2
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "?".into());
    let mut images: Vec<Image> = describe_own_images(ec2, &region, vec![filter("name", name)])
        .await
        .map_err(|e| e.context(format!("looking for an image named {name}")))?
        .into_iter()
        .filter(|i| {
            i.name() == Some(name)
                && !matches!(
                    i.state().map(|s| s.as_str()),
                    Some("deregistered") | Some("invalid") | Some("failed")
                )
        })
        .collect();
    images.sort_by(newest_first);
    Ok(images.into_iter().next())
}

/// Our images whose name matches `name_pattern` (wildcards `*`), any state, newest first.
pub async fn list_images(
    ctx: &AwsContext,
    region: &str,
    name_pattern: &str,
) -> Result<Vec<ImageSummary>> {
    let ec2 = ctx.ec2(region);
    let mut images: Vec<Image> =
        describe_own_images(&ec2, region, vec![filter("name", name_pattern)])
            .await?
            .into_iter()
            .filter(|i| glob_match(name_pattern, i.name().unwrap_or_default()))
            .collect();
    images.sort_by(newest_first);
    Ok(images
        .iter()
        .map(|i| ImageSummary {
            id: i.image_id().unwrap_or_default().to_string(),
            name: i.name().unwrap_or_default().to_string(),
            creation_date: i.creation_date().unwrap_or_default().to_string(),
            tags: tag_map(i.tags()),
            state: i
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{EbsBlockDevice, ImageState, Tag};

    #[test]
    fn globs_match_like_ec2_filters() {
        assert!(glob_match(
            "bakery-base-bookworm-*",
            "bakery-base-bookworm-20240101"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("bakery-base-*", "other-base-1"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    fn image(root_type: DeviceType, with_snapshot: bool) -> Image {
        let ebs = EbsBlockDevice::builder()
            .set_snapshot_id(with_snapshot.then(|| "snap-1".to_string()))
            .volume_size(10)
            .build();
        Image::builder()
            .image_id("ami-1")
            .name("base-1")
            .state(ImageState::Available)
            .root_device_type(root_type)
            .root_device_name("/dev/xvda")
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(ebs)
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/sdb")
                    .virtual_name("ephemeral0")
                    .build(),
            )
            .tags(Tag::builder().key("base_ami_version").value("3").build())
            .build()
    }

    #[test]
    fn base_facts_come_from_the_image() {
        let b = base_from_image(&image(DeviceType::Ebs, true), "us-east-1").unwrap();
        assert_eq!(b.root_snapshot_id, "snap-1");
        assert_eq!(b.root_volume_size_gib, 10);
        assert_eq!(b.version.as_deref(), Some("3"));
        assert!(b.ena_support);
        assert_eq!(b.block_device_mappings.len(), 2);
        assert!(!b.block_device_mappings[1].is_ebs());
    }

    #[test]
    fn bases_without_an_ebs_root_snapshot_are_refused() {
        let e = base_from_image(&image(DeviceType::InstanceStore, true), "us-east-1").unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        assert!(e.to_string().contains("not EBS-backed"), "{e}");
        let e = base_from_image(&image(DeviceType::Ebs, false), "us-east-1").unwrap_err();
        assert!(e.to_string().contains("no EBS snapshot"), "{e}");
    }
}
