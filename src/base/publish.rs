//! Publishing a base disk as an AMI (`bakery base build --output ami`) and listing versions
//! (`bakery base list`). The whole disk is uploaded with the EBS direct APIs, zero blocks left
//! out (no parent: unwritten blocks read back as zeros), registered as `NAME-VERSION` with
//! `base_ami_name`/`base_ami_version` tags, then copied to the other regions.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::info;

use crate::aws::ami::{self, BaseAmi, BlockDevice};
use crate::aws::client::AwsContext;
use crate::aws::ebs;
use crate::aws::ledger::Ledger;
use crate::aws::BAKE_ID_TAG;
use crate::bake::ami::is_region_name;
use crate::bake::Globals;
use crate::cli::{BaseListArgs, PublishArgs};
use crate::input;
use crate::manifest::{AmiOutput, Manifest, Timing, UploadSummary};
use crate::naming;

pub fn check(a: &PublishArgs) -> Result<()> {
    for r in a.region.iter().chain(a.copy_to.iter()) {
        if !is_region_name(r) {
            return Err(input!(
                "region `{r}` is not an AWS region name (like us-east-1); check --region/--copy-to"
            ));
        }
    }
    Ok(())
}

/// What a from-scratch base looks like to RegisterImage: HVM, ENA, BIOS boot, one gp3 root.
pub fn from_scratch_base(
    name: &str,
    region: &str,
    snapshot_id: &str,
    size_gib: i32,
    version: &str,
) -> BaseAmi {
    BaseAmi {
        id: String::new(),
        name: name.to_string(),
        region: region.to_string(),
        root_device_name: "/dev/xvda".into(),
        root_snapshot_id: snapshot_id.to_string(),
        root_volume_size_gib: size_gib,
        block_device_mappings: vec![BlockDevice {
            device_name: "/dev/xvda".into(),
            snapshot_id: Some(snapshot_id.to_string()),
            volume_size_gib: Some(size_gib),
            volume_type: Some("gp3".into()),
            delete_on_termination: Some(true),
            encrypted: None,
            iops: None,
            throughput: None,
            virtual_name: None,
            no_device: false,
        }],
        architecture: "x86_64".into(),
        boot_mode: Some("legacy-bios".into()),
        ena_support: true,
        virtualization_type: "hvm".into(),
        tags: BTreeMap::new(),
        version: Some(version.to_string()),
    }
}

pub fn publish(raw: &Path, mut built: Manifest, a: &PublishArgs, _g: &Globals) -> Result<Manifest> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let ctx = rt.block_on(AwsContext::load());
    rt.block_on(ctx.require_credentials())?;
    let region = ctx.region(a.region.as_deref())?;
    let copies: Vec<String> = a
        .copy_to
        .iter()
        .filter(|r| **r != region)
        .cloned()
        .collect();
    let name = built.name.clone();
    naming::validate_ami_name(&name).map_err(|e| input!("{e}"))?;
    let mut tags = built.tags.clone();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    tags.insert("creator".into(), crate::bake::creator(&env));
    tags.extend(naming::ci_tags(&env));
    tags.insert(BAKE_ID_TAG.into(), built.bake_id.clone());
    naming::validate_tags(&tags).map_err(|e| input!("tags: {e}"))?;
    let description = format!(
        "{name}: bakery base ({})",
        built.os.clone().unwrap_or_default()
    );
    let ledger = Ledger::new(&built.bake_id);
    let version = built.base.version.clone();
    let result = (|| -> Result<(Vec<AmiOutput>, Option<UploadSummary>, Vec<Timing>)> {
        let ec2 = ctx.ec2(&region);
        let mut timings = Vec::new();
        let mut upload = None;
        let registered =
            if let Some((id, snaps, _)) = rt.block_on(ami::find_image_by_name(&ec2, &name))? {
                info!("{name} already exists in {region} as {id}: reusing it");
                ami::Registered {
                    image_id: id,
                    snapshot_id: snaps.first().cloned().unwrap_or_default(),
                    reused: true,
                }
            } else {
                let t = Instant::now();
                let up = rt.block_on(ebs::upload_snapshot(
                    &ctx.ebs(&region),
                    raw,
                    None,
                    &description,
                    &tags,
                    &ledger,
                    &region,
                    64,
                ))?;
                rt.block_on(ebs::wait_snapshot_completed(
                    &ec2,
                    &up.snapshot_id,
                    Duration::from_secs(3600),
                ))?;
                timings.push(Timing::new("upload snapshot", t.elapsed().as_secs_f64()));
                let t = Instant::now();
                let base = from_scratch_base(
                    &name,
                    &region,
                    &up.snapshot_id,
                    up.volume_size_gib as i32,
                    &version,
                );
                let spec = ami::RegisterSpec {
                    name: name.clone(),
                    description: description.clone(),
                    root_snapshot_id: up.snapshot_id.clone(),
                    volume_size_gib: up.volume_size_gib as i32,
                    base,
                    tags: tags.clone(),
                };
                let r = rt.block_on(ami::register(&ctx, &region, &spec, &ledger))?;
                timings.push(Timing::new("register image", t.elapsed().as_secs_f64()));
                upload = Some(UploadSummary {
                    mode: "direct",
                    base_snapshot_id: String::new(),
                    snapshot_id: up.snapshot_id,
                    bytes_read: 0,
                    blocks_total: up.blocks_total,
                    blocks_changed: up.blocks_changed,
                    bytes_uploaded: up.bytes_uploaded,
                });
                r
            };
        if !a.share_with.is_empty() {
            rt.block_on(ami::share(&ec2, &registered.image_id, &a.share_with))?;
        }
        let mut amis = vec![AmiOutput {
            region: region.clone(),
            image_id: registered.image_id.clone(),
            snapshot_id: registered.snapshot_id.clone(),
            reused: registered.reused,
        }];
        if !copies.is_empty() {
            let t = Instant::now();
            let copied = rt.block_on(ami::copy_to_regions(
                &ctx,
                &region,
                &registered,
                &name,
                &description,
                &copies,
                &tags,
                &a.share_with,
                &ledger,
                4,
            ))?;
            timings.push(Timing::new("copy to regions", t.elapsed().as_secs_f64()));
            amis.extend(copied.into_iter().map(|c| AmiOutput {
                region: c.region,
                image_id: c.image_id,
                snapshot_id: c.snapshot_id,
                reused: c.reused,
            }));
        }
        rt.block_on(ledger.mark_complete(&ctx))?;
        Ok((amis, upload, timings))
    })();
    match result {
        Ok((amis, upload, timings)) => {
            ledger.commit();
            built.output = None;
            built.amis = amis;
            built.upload = upload;
            built.tags = tags;
            built.timings.extend(timings);
            Ok(built)
        }
        Err(e) => {
            if a.keep_on_error {
                return Err(e);
            }
            let failures = rt.block_on(ledger.rollback(&ctx));
            if failures.is_empty() {
                Err(e)
            } else {
                Err(e.context(format!("and cleanup failed for: {}", failures.join("; "))))
            }
        }
    }
}

pub fn list(a: &BaseListArgs) -> Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ctx = rt.block_on(AwsContext::load());
    rt.block_on(ctx.require_credentials())?;
    let regions = if a.region.is_empty() {
        vec![ctx.region(None)?]
    } else {
        a.region.clone()
    };
    let mut out = serde_json::Map::new();
    for r in regions {
        let images = rt.block_on(ami::list_images(&ctx, &r, &a.name))?;
        for i in &images {
            eprintln!(
                "{r}  {}  {}  {}  version {}",
                i.id,
                i.name,
                i.creation_date,
                i.tags
                    .get("base_ami_version")
                    .map(String::as_str)
                    .unwrap_or("?")
            );
        }
        out.insert(
            r,
            serde_json::Value::Array(
                images
                    .iter()
                    .map(|i| serde_json::json!({"image_id": i.id, "name": i.name, "created": i.creation_date, "state": i.state, "version": i.tags.get("base_ami_version")}))
                    .collect(),
            ),
        );
    }
    Ok(serde_json::Value::Object(out))
}
