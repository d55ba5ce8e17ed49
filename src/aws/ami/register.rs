//! RegisterImage for a baked root snapshot, shaped like the base (root device name, other
//! mappings, architecture) with the launch attributes the bake decided (boot mode, IMDS,
//! NitroTPM, ENA, SR-IOV: `attributes.rs`), idempotent by name.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ImdsSupportValues,
    ResourceType, TpmSupportValues, VolumeType,
};
use tracing::{info, warn};

use super::find::{find_image_by_name, same_device, snapshot_ids, BaseAmi, BlockDevice};
use super::tags::{tag_resources, tag_spec_for, with_bake_id};
use super::wait::{wait_image_available, WaitConfig};
use crate::aws::client::{describe_sdk_error, AwsContext};
use crate::aws::ledger::{Ledger, Resource};

#[derive(Debug, Clone)]
pub struct RegisterSpec {
    pub name: String,
    pub description: String,
    /// The baked root snapshot (ours: uploaded or snapshotted by this bake).
    pub root_snapshot_id: String,
    pub volume_size_gib: i32,
    pub base: BaseAmi,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub image_id: String,
    /// The root snapshot of the image.
    pub snapshot_id: String,
    /// An image of this name already existed and was reused.
    pub reused: bool,
}

/// The block device mappings for the new image: the base's, with the root mapping pointing at our
/// snapshot (gp3, `volume_size_gib`, deleted on termination). Encryption is not restated: the
/// volumes inherit it from their snapshots.
pub fn mappings_for(
    base: &BaseAmi,
    root_snapshot_id: &str,
    volume_size_gib: i32,
) -> Vec<BlockDeviceMapping> {
    let root = || {
        BlockDeviceMapping::builder()
            .device_name(&base.root_device_name)
            .ebs(
                EbsBlockDevice::builder()
                    .snapshot_id(root_snapshot_id)
                    .volume_size(volume_size_gib)
                    .volume_type(VolumeType::Gp3)
                    .delete_on_termination(true)
                    .build(),
            )
            .build()
    };
    let mut out = vec![root()];
    for m in &base.block_device_mappings {
        if same_device(&m.device_name, &base.root_device_name) {
            continue;
        }
        out.push(other_mapping(m));
    }
    out
}

fn other_mapping(m: &BlockDevice) -> BlockDeviceMapping {
    let b = BlockDeviceMapping::builder().device_name(&m.device_name);
    if m.no_device {
        return b.no_device("").build();
    }
    if let Some(v) = &m.virtual_name {
        return b.virtual_name(v).build();
    }
    let mut ebs = EbsBlockDevice::builder()
        .set_snapshot_id(m.snapshot_id.clone())
        .set_volume_size(m.volume_size_gib)
        .set_volume_type(m.volume_type.as_deref().map(VolumeType::from))
        .set_delete_on_termination(m.delete_on_termination)
        .set_iops(m.iops)
        .set_throughput(m.throughput);
    if m.snapshot_id.is_none() {
        ebs = ebs.set_encrypted(m.encrypted);
    }
    b.ebs(ebs.build()).build()
}

/// Register with the default wait (30 min, or `BAKERY_AMI_WAIT_TIMEOUT` seconds).
pub async fn register(
    ctx: &AwsContext,
    region: &str,
    spec: &RegisterSpec,
    ledger: &Ledger,
) -> Result<Registered> {
    register_with(ctx, region, spec, ledger, &WaitConfig::from_env()).await
}

pub async fn register_with(
    ctx: &AwsContext,
    region: &str,
    spec: &RegisterSpec,
    ledger: &Ledger,
    wait: &WaitConfig,
) -> Result<Registered> {
    let ec2 = ctx.ec2(region);
    let tags = with_bake_id(&spec.tags, &ledger.bake_id);

    if let Some(found) = find_image_by_name(&ec2, &spec.name).await? {
        return reuse(ctx, region, spec, ledger, wait, found).await;
    }

    let mut req = ec2
        .register_image()
        .name(&spec.name)
        .description(&spec.description)
        .architecture(ArchitectureValues::from(spec.base.architecture.as_str()))
        .virtualization_type("hvm")
        .ena_support(spec.base.ena_support)
        .root_device_name(&spec.base.root_device_name)
        .set_block_device_mappings(Some(mappings_for(
            &spec.base,
            &spec.root_snapshot_id,
            spec.volume_size_gib,
        )))
        .tag_specifications(tag_spec_for(ResourceType::Image, &tags));
    if let Some(mode) = &spec.base.boot_mode {
        req = req.boot_mode(BootModeValues::from(mode.as_str()));
    }
    if let Some(v) = &spec.base.imds_support {
        req = req.imds_support(ImdsSupportValues::from(v.as_str()));
    }
    if let Some(v) = &spec.base.tpm_support {
        req = req.tpm_support(TpmSupportValues::from(v.as_str()));
    }
    if let Some(v) = &spec.base.sriov_net_support {
        req = req.sriov_net_support(v);
    }
    ledger.expect_region(region);
    let out = match req.send().await {
        Ok(out) => out,
        Err(e) => {
            let msg = describe_sdk_error(&e);
            if crate::aws::error::code(&e).is_some_and(crate::aws::error::is_duplicate_ami_name) {
                // Another bake registered this name between our lookup and our call (AMI names
                // are unique per account and region): theirs is the image, ours is not needed.
                info!(
                    "{} was registered in {region} by another bake meanwhile: reusing it",
                    spec.name
                );
                for attempt in 0..10u64 {
                    if let Some(found) = find_image_by_name(&ec2, &spec.name).await? {
                        return reuse(ctx, region, spec, ledger, wait, found).await;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
            bail!(
                "registering image {} from snapshot {} in {region}: {msg}",
                spec.name,
                spec.root_snapshot_id
            );
        }
    };
    let Some(image_id) = out.image_id().map(str::to_string) else {
        bail!(
            "registering image {} in {region}: AWS returned no image id",
            spec.name
        );
    };
    ledger.record(Resource::Image {
        region: region.to_string(),
        id: image_id.clone(),
    });
    info!("registered image {image_id} ({}) in {region}", spec.name);
    crate::fault::point(&format!("register image in {region}"))?;

    // RegisterImage cannot tag snapshots; the image's tags are in the request (and reapplied here
    // so both always carry the same set).
    tag_resources(
        &ec2,
        region,
        &[image_id.clone(), spec.root_snapshot_id.clone()],
        &tags,
    )
    .await?;
    crate::fault::point(&format!("tag image in {region}"))?;
    let image = wait_image_available(&ec2, region, &image_id, wait).await?;
    crate::fault::point(&format!("image available in {region}"))?;
    let snapshot_id = snapshot_ids(&image)
        .into_iter()
        .next()
        .unwrap_or_else(|| spec.root_snapshot_id.clone());
    Ok(Registered {
        image_id,
        snapshot_id,
        reused: false,
    })
}

/// An image of this name exists (a rerun, or another bake won the race): use it. Our own root
/// snapshot, when the image does not use it, is deleted now — committing the ledger would
/// otherwise keep it as an orphan.
async fn reuse(
    ctx: &AwsContext,
    region: &str,
    spec: &RegisterSpec,
    ledger: &Ledger,
    wait: &WaitConfig,
    (image_id, snaps, state): (String, Vec<String>, String),
) -> Result<Registered> {
    let ec2 = ctx.ec2(region);
    info!(
        "reusing image {image_id} ({}) in {region}: an image of that name exists ({state})",
        spec.name
    );
    if !snaps.contains(&spec.root_snapshot_id) {
        let ours = Resource::Snapshot {
            region: region.to_string(),
            id: spec.root_snapshot_id.clone(),
        };
        match crate::aws::ledger::delete(ctx, &ours).await {
            Ok(()) => {
                ledger.forget(&ours);
                info!(
                    "deleted snapshot {}: the reused image {image_id} does not use it",
                    spec.root_snapshot_id
                );
            }
            Err(e) => warn!(
                "snapshot {} is not used by the reused image {image_id} and could not be deleted: {e}; it carries the {} tag of this bake",
                spec.root_snapshot_id,
                crate::aws::BAKE_ID_TAG
            ),
        }
    }
    if state != "available" {
        wait_image_available(&ec2, region, &image_id, wait).await?;
    }
    Ok(Registered {
        snapshot_id: snaps.first().cloned().unwrap_or_default(),
        image_id,
        reused: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BaseAmi {
        let dev = |name: &str, snap: Option<&str>, virt: Option<&str>| BlockDevice {
            device_name: name.into(),
            snapshot_id: snap.map(Into::into),
            volume_size_gib: Some(8),
            volume_type: Some("gp2".into()),
            delete_on_termination: Some(true),
            encrypted: Some(false),
            iops: None,
            throughput: None,
            virtual_name: virt.map(Into::into),
            no_device: false,
        };
        BaseAmi {
            id: "ami-base".into(),
            name: "base".into(),
            region: "us-east-1".into(),
            root_device_name: "/dev/xvda".into(),
            root_snapshot_id: "snap-base".into(),
            root_volume_size_gib: 8,
            block_device_mappings: vec![
                dev("/dev/xvda", Some("snap-base"), None),
                dev("/dev/sdb", None, Some("ephemeral0")),
                dev("/dev/sdc", Some("snap-data"), None),
            ],
            architecture: "arm64".into(),
            boot_mode: Some("uefi".into()),
            ena_support: true,
            virtualization_type: "hvm".into(),
            tags: BTreeMap::new(),
            version: None,
            imds_support: None,
            tpm_support: None,
            sriov_net_support: None,
        }
    }

    #[test]
    fn the_root_mapping_points_at_our_snapshot_and_the_rest_is_kept() {
        let m = mappings_for(&base(), "snap-ours", 20);
        assert_eq!(m.len(), 3);
        let root = m[0].ebs().unwrap();
        assert_eq!(m[0].device_name(), Some("/dev/xvda"));
        assert_eq!(root.snapshot_id(), Some("snap-ours"));
        assert_eq!(root.volume_size(), Some(20));
        assert_eq!(root.volume_type(), Some(&VolumeType::Gp3));
        assert_eq!(root.delete_on_termination(), Some(true));
        assert_eq!(m[1].virtual_name(), Some("ephemeral0"));
        assert!(m[1].ebs().is_none());
        assert_eq!(m[2].ebs().unwrap().snapshot_id(), Some("snap-data"));
        assert_eq!(
            m[2].ebs().unwrap().encrypted(),
            None,
            "encryption comes from the snapshot"
        );
    }
}
