//! CopyImage to every other region at once (bounded), each copy waited for, tagged (AMI and
//! snapshots), its snapshots encrypted with that region's key (CopyImage `Encrypted` +
//! `KmsKeyId`), shared (launch permission and createVolumePermission) and deprecated. A rerun
//! reuses copies that already exist by name.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_ec2::types::ResourceType;
use futures::stream::{self, StreamExt};
use tracing::info;

use super::find::{find_image_by_name, snapshot_ids};
use super::lifecycle::deprecate;
use super::register::Registered;
use super::share::{share, ShareTarget};
use super::tags::{tag_resources, tag_spec_for, with_bake_id};
use super::wait::{wait_image_available, WaitConfig};
use crate::aws::client::{describe_sdk_error, AwsContext};
use crate::aws::ledger::{Ledger, Resource};

/// What every copy gets besides the image itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyOptions {
    /// Region -> KMS key (ARN): CopyImage encrypts that region's snapshots with it. A region
    /// without one gets AWS's default (an encrypted source, or encryption by default there,
    /// still gives encrypted copies, with that region's default key).
    pub kms_key_ids: BTreeMap<String, String>,
    pub share_with: Vec<ShareTarget>,
    /// EnableImageDeprecation on each copy (CopyImage does not carry it).
    pub deprecate_at: Option<aws_smithy_types::DateTime>,
}

impl CopyOptions {
    /// Only sharing with these accounts (12-digit ids).
    pub fn sharing(accounts: &[String]) -> CopyOptions {
        CopyOptions {
            share_with: accounts
                .iter()
                .map(|a| ShareTarget::Account(a.clone()))
                .collect(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionalImage {
    pub region: String,
    pub image_id: String,
    /// The root snapshot of the copy.
    pub snapshot_id: String,
    pub reused: bool,
}

/// Copy with the default wait (30 min per copy, or `BAKERY_AMI_WAIT_TIMEOUT` seconds).
#[allow(clippy::too_many_arguments)]
pub async fn copy_to_regions(
    ctx: &AwsContext,
    source_region: &str,
    source: &Registered,
    name: &str,
    description: &str,
    regions: &[String],
    tags: &BTreeMap<String, String>,
    opts: &CopyOptions,
    ledger: &Ledger,
    concurrency: usize,
) -> Result<Vec<RegionalImage>> {
    copy_to_regions_with(
        ctx,
        source_region,
        source,
        name,
        description,
        regions,
        tags,
        opts,
        ledger,
        concurrency,
        &WaitConfig::from_env(),
    )
    .await
}

/// Copies run `concurrency` at a time, so the total is about the slowest region. Every copy is
/// carried to its end (recorded in the ledger) even when another fails; then the failures are
/// reported together, each naming its region. Results are in the order of `regions`.
#[allow(clippy::too_many_arguments)]
pub async fn copy_to_regions_with(
    ctx: &AwsContext,
    source_region: &str,
    source: &Registered,
    name: &str,
    description: &str,
    regions: &[String],
    tags: &BTreeMap<String, String>,
    opts: &CopyOptions,
    ledger: &Ledger,
    concurrency: usize,
    wait: &WaitConfig,
) -> Result<Vec<RegionalImage>> {
    let tags = with_bake_id(tags, &ledger.bake_id);
    let tags = &tags;
    let meter = crate::progress::meter();
    meter.count(regions.len() as u64, "regions");
    let meter = &meter;
    let results: Vec<(usize, Result<RegionalImage>)> = stream::iter(regions.iter().enumerate())
        .map(|(i, region)| async move {
            let r = copy_one(
                ctx,
                source_region,
                source,
                name,
                description,
                region,
                tags,
                opts,
                ledger,
                wait,
            )
            .await
            .with_context(|| {
                format!(
                    "copying {} ({name}) from {source_region} to {region}",
                    source.image_id
                )
            });
            meter.inc(1);
            (i, r)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut ok: Vec<(usize, RegionalImage)> = Vec::new();
    let mut failures = Vec::new();
    for (i, r) in results {
        match r {
            Ok(img) => ok.push((i, img)),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} region copies failed: {}",
            failures.len(),
            regions.len(),
            failures.join("; ")
        );
    }
    ok.sort_by_key(|(i, _)| *i);
    Ok(ok.into_iter().map(|(_, img)| img).collect())
}

#[allow(clippy::too_many_arguments)]
async fn copy_one(
    ctx: &AwsContext,
    source_region: &str,
    source: &Registered,
    name: &str,
    description: &str,
    region: &str,
    tags: &BTreeMap<String, String>,
    opts: &CopyOptions,
    ledger: &Ledger,
    wait: &WaitConfig,
) -> Result<RegionalImage> {
    let ec2 = ctx.ec2(region);
    let (image_id, reused) = match find_image_by_name(&ec2, name).await? {
        Some((id, _, state)) => {
            info!(
                "reusing image {id} ({name}) in {region}: an image of that name exists ({state})"
            );
            (id, true)
        }
        None => {
            // CopyImageTags copies the source's tags; TagSpecifications put ours (with the bake
            // id) on the new AMI and its snapshots at creation, so `gc` finds them even if we die
            // before the CreateTags below.
            ledger.expect_region(region);
            // Said before the call: under CI no spinner shows which region is being waited on.
            info!(
                "copy to {region}: CopyImage of {} from {source_region}",
                source.image_id
            );
            let key = opts.kms_key_ids.get(region);
            let out = ec2
                .copy_image()
                .source_image_id(&source.image_id)
                .source_region(source_region)
                .name(name)
                .description(description)
                .copy_image_tags(true)
                .set_encrypted(key.map(|_| true))
                .set_kms_key_id(key.cloned())
                .tag_specifications(tag_spec_for(ResourceType::Image, tags))
                .tag_specifications(tag_spec_for(ResourceType::Snapshot, tags))
                .send()
                .await
                .map_err(|e| anyhow!("CopyImage in {region}: {}", describe_sdk_error(&e)))?;
            let id = out
                .image_id()
                .ok_or_else(|| anyhow!("CopyImage in {region} returned no image id"))?
                .to_string();
            ledger.record(Resource::Image {
                region: region.to_string(),
                id: id.clone(),
            });
            info!(
                "copying {} from {source_region} to {region} as {id}",
                source.image_id
            );
            crate::fault::point(&format!("copy image to {region}"))?;
            (id, false)
        }
    };
    let image = wait_image_available(&ec2, region, &image_id, wait).await?;
    let snaps = snapshot_ids(&image);
    if !reused && !snaps.is_empty() {
        // The copy's snapshots are ours too. Keep the image last in the ledger so a rollback
        // deregisters it before deleting its snapshots (AWS refuses to delete a snapshot in use).
        let img = Resource::Image {
            region: region.to_string(),
            id: image_id.clone(),
        };
        ledger.forget(&img);
        for s in &snaps {
            ledger.record(Resource::Snapshot {
                region: region.to_string(),
                id: s.clone(),
            });
        }
        ledger.record(img);
    }
    crate::fault::point(&format!("image available in {region}"))?;
    let mut ids = vec![image_id.clone()];
    ids.extend(snaps.iter().cloned());
    if reused {
        // A product of an earlier run keeps its own bake id: this run's rollback or `gc` must
        // not take it for one of its own leftovers.
        let mut t = tags.clone();
        t.remove(crate::aws::BAKE_ID_TAG);
        t.remove(crate::aws::BAKE_STATE_TAG);
        tag_resources(&ec2, region, &ids, &t).await?;
    } else {
        tag_resources(&ec2, region, &ids, tags).await?;
    }
    crate::fault::point(&format!("tag image in {region}"))?;
    share(&ec2, &image_id, &snaps, &opts.share_with).await?;
    crate::fault::point(&format!("share image in {region}"))?;
    if let Some(at) = opts.deprecate_at {
        deprecate(&ec2, region, &image_id, at).await?;
        crate::fault::point(&format!("deprecate image in {region}"))?;
    }
    Ok(RegionalImage {
        region: region.to_string(),
        snapshot_id: snaps.first().cloned().unwrap_or_default(),
        image_id,
        reused,
    })
}
