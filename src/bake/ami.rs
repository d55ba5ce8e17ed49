//! `bakery bake ... --output ami`: the same bake, ending as registered, tagged AMIs in every
//! target region. Direct mode reads the base snapshot with the EBS direct APIs and uploads only
//! the changed blocks; volume mode bakes on an EBS volume attached to this EC2 host.

use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::{info, warn};

use super::{manifest, provision_image, Globals, Prepared};
use crate::aws::ami::{self, BaseRef};
use crate::aws::client::AwsContext;
use crate::aws::ledger::Ledger;
use crate::aws::{ebs, imds, volume, BAKE_ID_TAG};
use crate::cli::AwsMode;
use crate::disk::image;
use crate::input;
use crate::manifest::{AmiOutput, BaseSummary, Manifest, Timing, UploadSummary};
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::sys::signals;
use crate::workdir::WorkDir;

/// Regions look like `us-east-1`, `eu-west-3`, `us-gov-west-1`, `ap-southeast-4`.
pub fn is_region_name(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// The source region (when given) first, then the copies, without duplicates.
pub fn target_regions(recipe: &Recipe) -> Vec<String> {
    let mut out: Vec<String> = recipe.region.iter().cloned().collect();
    for r in &recipe.copy_to {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

pub fn check_regions(recipe: &Recipe) -> Result<()> {
    for r in recipe.region.iter().chain(recipe.copy_to.iter()) {
        if !is_region_name(r) {
            return Err(input!(
                "region `{r}` is not an AWS region name (like us-east-1); check --region/--copy-to"
            ));
        }
    }
    for a in &recipe.share_with {
        if a.len() != 12 || !a.chars().all(|c| c.is_ascii_digit()) {
            return Err(input!("--share-with `{a}`: an AWS account id is 12 digits"));
        }
    }
    Ok(())
}

pub fn bake(p: Prepared, keep_on_error: bool, g: &Globals) -> Result<Manifest> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let progress = Progress::new(g.quiet);
    let ctx = rt.block_on(AwsContext::load());
    rt.block_on(ctx.require_credentials())?;
    let work = WorkDir::create(&g.work_dir, &p.bake_id)?;
    let region = ctx.region(p.recipe.region.as_deref())?;
    let copies: Vec<String> = p
        .recipe
        .copy_to
        .iter()
        .filter(|r| **r != region)
        .cloned()
        .collect();
    let base_ref = match (&p.recipe.base_name, &p.recipe.base) {
        (Some(n), _) => BaseRef::NamePattern(n.clone()),
        (None, Some(b)) => BaseRef::Id(b.display().to_string()),
        _ => unreachable!("checked in prepare"),
    };
    let base = rt.block_on(ami::resolve_base(&ctx, &region, &base_ref))?;
    info!(bake_id = %p.bake_id, "baking {} from {} ({}) in {region}", p.name, base.id, base.name);
    let ledger = Ledger::new(&p.bake_id);
    let result = bake_with_ledger(
        &rt, &ctx, &region, &copies, &base, &p, &ledger, &work, &progress, g,
    )
    .and_then(|m| {
        signals::block_on(&rt, ledger.mark_complete(&ctx))
            .and_then(|()| crate::fault::point("mark complete"))
            .map(|()| m)
    });
    match result {
        Ok(m) => {
            ledger.commit();
            Ok(m)
        }
        Err(e) => {
            let left = ledger.entries();
            if keep_on_error {
                if !left.is_empty() {
                    warn!(
                        "--keep-on-error: keeping {}",
                        left.iter()
                            .map(|r| r.describe())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                return Err(e);
            }
            if !left.is_empty() {
                progress.println(&format!(
                    "cleaning up {} AWS resource(s) this bake made",
                    left.len()
                ));
            }
            let failures = rt.block_on(ledger.rollback(&ctx));
            if failures.is_empty() {
                Err(e)
            } else {
                Err(e.context(format!(
                    "and cleanup failed for: {} (remove them by hand or with `bakery gc`; they are tagged {BAKE_ID_TAG}={})",
                    failures.join("; "),
                    p.bake_id
                )))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn bake_with_ledger(
    rt: &tokio::runtime::Runtime,
    ctx: &AwsContext,
    region: &str,
    copies: &[String],
    base: &ami::BaseAmi,
    p: &Prepared,
    ledger: &Ledger,
    work: &WorkDir,
    progress: &Progress,
    g: &Globals,
) -> Result<Manifest> {
    let mut timings = Vec::new();
    let ec2 = ctx.ec2(region);
    let base_summary = BaseSummary {
        image: base.id.clone(),
        name: base.name.clone(),
        version: base.version.clone().unwrap_or_else(|| "unknown".into()),
        format: None,
    };
    let mut tags_manifest = manifest(p, base_summary.clone(), &Default::default(), vec![], work)?;
    let mut tags = tags_manifest.tags.clone();
    tags.insert(BAKE_ID_TAG.to_string(), p.bake_id.clone());
    let description = format!(
        "{} baked by bakery from {} ({})",
        p.name, base.name, base.id
    );

    // Idempotent reruns: an AMI of this name already in the source region is reused, not rebaked.
    let existing = rt.block_on(ami::find_image_by_name(&ec2, &p.name))?;
    let mut upload = None;
    let mut facts = crate::provision::plan::ImageFacts::default();
    let registered = if let Some(found) = existing {
        progress.println(&format!(
            "{} already exists in {region} as {}: reusing it",
            p.name, found.0
        ));
        ami::Registered {
            image_id: found.0,
            snapshot_id: found.1.first().cloned().unwrap_or_default(),
            reused: true,
        }
    } else {
        let mode = match p.recipe.mode {
            Some(m) => m,
            None => {
                if rt.block_on(imds::detect()).is_some() {
                    AwsMode::Volume
                } else {
                    AwsMode::Direct
                }
            }
        };
        let snapshot_id = match mode {
            AwsMode::Direct => {
                let ebs_client = ctx.ebs(region);
                let t = Instant::now();
                progress.start_step(&format!("download {}", base.root_snapshot_id));
                let cache = g.work_dir.join("snapshots");
                std::fs::create_dir_all(&cache)?;
                let (cached, hashes, dstats) = signals::block_on(
                    rt,
                    ebs::cached_download(&ebs_client, &base.root_snapshot_id, &cache, 32),
                )?;
                timings.push(Timing::new(
                    "download base snapshot",
                    t.elapsed().as_secs_f64(),
                ));
                progress.finish_step("download base snapshot", t.elapsed().as_secs_f64());
                crate::fault::point("download base snapshot")?;
                signals::check()?;
                let t = Instant::now();
                let disk = work.join("disk.raw");
                image::copy_sparse(&cached, &disk)?;
                crate::fault::point("copy base")?;
                timings.push(Timing::new("copy base", t.elapsed().as_secs_f64()));
                let outcome = provision_image(&disk, &base.id, p, work, progress, g)?;
                timings.extend(
                    outcome
                        .timings
                        .iter()
                        .map(|(s, secs)| Timing::new(s, *secs)),
                );
                facts = outcome.facts;
                signals::check()?;
                let t = Instant::now();
                progress.start_step("upload changed blocks");
                let up = signals::block_on(
                    rt,
                    ebs::upload_snapshot(
                        &ebs_client,
                        &disk,
                        Some((&base.root_snapshot_id, &hashes)),
                        &description,
                        &tags,
                        ledger,
                        region,
                        64,
                    ),
                )?;
                timings.push(Timing::new("upload snapshot", t.elapsed().as_secs_f64()));
                progress.finish_step(
                    &format!("upload {} changed blocks", up.blocks_changed),
                    t.elapsed().as_secs_f64(),
                );
                crate::fault::point("upload snapshot")?;
                let t = Instant::now();
                signals::block_on(
                    rt,
                    ebs::wait_snapshot_completed(&ec2, &up.snapshot_id, Duration::from_secs(3600)),
                )?;
                crate::fault::point("snapshot completed")?;
                timings.push(Timing::new("wait snapshot", t.elapsed().as_secs_f64()));
                upload = Some(UploadSummary {
                    mode: "direct",
                    base_snapshot_id: base.root_snapshot_id.clone(),
                    snapshot_id: up.snapshot_id.clone(),
                    bytes_read: dstats.bytes_read,
                    blocks_total: up.blocks_total,
                    blocks_changed: up.blocks_changed,
                    bytes_uploaded: up.bytes_uploaded,
                });
                up.snapshot_id
            }
            AwsMode::Volume => {
                let host = rt
                    .block_on(imds::detect())
                    .ok_or_else(|| input!("--mode volume needs an EC2 bake host (IMDSv2 did not answer); use --mode direct elsewhere"))?;
                let t = Instant::now();
                let attached = signals::block_on(
                    rt,
                    volume::create_and_attach(
                        ctx,
                        &host,
                        &base.root_snapshot_id,
                        base.root_volume_size_gib,
                        ledger,
                        &crate::sys::lock::host_wide_dir(),
                    ),
                )?;
                crate::fault::point("attach volume")?;
                timings.push(Timing::new(
                    "create and attach volume",
                    t.elapsed().as_secs_f64(),
                ));
                let outcome = provision_image(&attached.device, &base.id, p, work, progress, g)?;
                timings.extend(
                    outcome
                        .timings
                        .iter()
                        .map(|(s, secs)| Timing::new(s, *secs)),
                );
                facts = outcome.facts;
                let t = Instant::now();
                let volume_id = attached.volume_id.clone();
                signals::block_on(rt, volume::detach(ctx, &host, &attached, ledger))?;
                crate::fault::point("detach volume")?;
                let snap = signals::block_on(
                    rt,
                    volume::snapshot_volume(ctx, region, &volume_id, &description, &tags, ledger),
                )?;
                crate::fault::point("snapshot volume")?;
                signals::block_on(rt, volume::delete(ctx, region, &volume_id, ledger))?;
                timings.push(Timing::new("snapshot volume", t.elapsed().as_secs_f64()));
                snap
            }
        };
        signals::check()?;
        // Tags the pre/post-provision plugins returned go on the AMI too.
        tags.extend(facts.plugin_tags.clone());
        crate::naming::validate_tags(&tags).map_err(|e| input!("tags with plugin tags: {e}"))?;
        let t = Instant::now();
        progress.start_step("register image");
        let spec = ami::RegisterSpec {
            name: p.name.clone(),
            description: description.clone(),
            root_snapshot_id: snapshot_id,
            volume_size_gib: base.root_volume_size_gib,
            base: base.clone(),
            tags: tags.clone(),
        };
        let r = signals::block_on(rt, ami::register(ctx, region, &spec, ledger))?;
        timings.push(Timing::new("register image", t.elapsed().as_secs_f64()));
        progress.finish_step(
            &format!("registered {}", r.image_id),
            t.elapsed().as_secs_f64(),
        );
        r
    };
    if !p.plugins.is_empty() && !registered.reused {
        let ev = crate::plugin::Event::new(crate::plugin::Hook::PostRegister, &p.bake_id)
            .with("region", region)
            .with("image_id", registered.image_id.as_str());
        let extra = crate::plugin::run_hook(&p.plugins, crate::plugin::Hook::PostRegister, &ev)?;
        if !extra.is_empty() {
            rt.block_on(ami::tag_resources(
                &ec2,
                region,
                &[registered.image_id.clone(), registered.snapshot_id.clone()],
                &extra,
            ))?;
            tags.extend(extra);
        }
    }
    if !p.recipe.share_with.is_empty() {
        signals::block_on(
            rt,
            ami::share(&ec2, &registered.image_id, &p.recipe.share_with),
        )?;
        crate::fault::point(&format!("share image in {region}"))?;
    }
    signals::check()?;
    let mut amis = vec![AmiOutput {
        region: region.to_string(),
        image_id: registered.image_id.clone(),
        snapshot_id: registered.snapshot_id.clone(),
        reused: registered.reused,
    }];
    if !copies.is_empty() {
        let t = Instant::now();
        progress.start_step(&format!("copy to {}", copies.join(", ")));
        let copied = signals::block_on(
            rt,
            ami::copy_to_regions(
                ctx,
                region,
                &registered,
                &p.name,
                &description,
                copies,
                &tags,
                &p.recipe.share_with,
                ledger,
                4,
            ),
        )?;
        timings.push(Timing::new("copy to regions", t.elapsed().as_secs_f64()));
        crate::fault::point("copy to regions")?;
        progress.finish_step(
            &format!("copied to {} regions", copied.len()),
            t.elapsed().as_secs_f64(),
        );
        amis.extend(copied.into_iter().map(|c| AmiOutput {
            region: c.region,
            image_id: c.image_id,
            snapshot_id: c.snapshot_id,
            reused: c.reused,
        }));
    }
    let facts_base = facts.base.clone();
    tags_manifest.os = facts.os.clone();
    tags_manifest.arch = facts.arch.clone();
    tags_manifest
        .packages
        .iter_mut()
        .for_each(|s| s.installed_version = facts.installed.get(&s.name).cloned());
    tags_manifest.package = tags_manifest.packages.first().cloned();
    if base.version.is_none() {
        if let Some(v) = facts_base.as_ref().and_then(|b| b["version"].as_str()) {
            tags_manifest.base.version = v.to_string();
            tags_manifest
                .tags
                .insert("base_ami_version".into(), v.to_string());
        }
    }
    tags_manifest.tags = tags.into_iter().filter(|(k, _)| k != BAKE_ID_TAG).collect();
    tags_manifest.amis = amis;
    tags_manifest.upload = upload;
    tags_manifest.timings = timings;
    tags_manifest.total_seconds = (p.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(tags_manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for ok in ["us-east-1", "eu-west-3", "us-gov-west-1", "ap-southeast-4"] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in ["us-east", "useast1", "US-EAST-1", "mars-north-1x", ""] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn target_regions_put_the_source_first() {
        let r = Recipe {
            region: Some("us-east-1".into()),
            copy_to: vec!["us-west-2".into(), "us-east-1".into(), "eu-west-1".into()],
            ..Default::default()
        };
        assert_eq!(target_regions(&r), ["us-east-1", "us-west-2", "eu-west-1"]);
    }
}
