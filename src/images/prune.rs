//! `bakery images prune`: per region, find the app's AMIs by bakery's `appversion` tag, find what
//! uses AMIs (usage.rs), decide (prune_plan.rs), then deregister and delete snapshots — unless
//! `--dry-run`. A region whose usage cannot be read is skipped with an error, never guessed.
//!
//! Layered base AMIs (the layer cache's entries, tagged `bakery:layer-cache-lookup`) are their
//! own kind, listed under `layer_cache` whatever the app: the newest entry of each lookup key
//! and any in use stay, superseded ones go (`prune_plan::plan_layer_cache`).

use anyhow::{anyhow, Result};
use serde::Serialize;
use tracing::{info, warn};

use super::prune_plan::{self, Action, Candidate, Decision};
use super::usage;
use crate::aws::ami::{describe_own_images, snapshot_ids, tag_map};
use crate::aws::client::AwsContext;
use crate::aws::ledger::{self, Resource};
use crate::cli::images::PruneArgs;
use crate::input;

#[derive(Debug, Serialize)]
pub struct RegionReport {
    pub region: String,
    pub images: Vec<Decision>,
    /// The region's layered base AMIs (layer cache entries, of any app's bakes).
    pub layer_cache: Vec<Decision>,
    /// Images deregistered and snapshots deleted (empty on a dry run).
    pub deleted_images: Vec<String>,
    pub deleted_snapshots: Vec<String>,
    /// What could not be done (the region's lookups, or a deletion).
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub app: String,
    pub keep: usize,
    pub dry_run: bool,
    pub regions: Vec<RegionReport>,
}

impl PruneReport {
    pub fn failed(&self) -> bool {
        self.regions.iter().any(|r| !r.errors.is_empty())
    }

    /// One line per image: region, id, name, created, keep/delete, reasons.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for r in &self.regions {
            for (kind, d) in r
                .images
                .iter()
                .map(|d| ("", d))
                .chain(r.layer_cache.iter().map(|d| ("layer cache: ", d)))
            {
                let act = match (d.action, self.dry_run) {
                    (Action::Keep, _) => "keep",
                    (Action::Delete, true) => "would delete",
                    (Action::Delete, false) if r.deleted_images.contains(&d.image_id) => "deleted",
                    (Action::Delete, false) => "delete failed",
                };
                s.push_str(&format!(
                    "{}\t{}\t{kind}{}\t{}\t{act}\t{}\n",
                    r.region,
                    d.image_id,
                    d.name,
                    d.created,
                    d.reasons.join("; ")
                ));
            }
            for e in &r.errors {
                s.push_str(&format!("{}\terror\t{e}\n", r.region));
            }
        }
        s
    }
}

pub fn run(args: &PruneArgs) -> Result<PruneReport> {
    if args.app.is_empty() || args.app.contains(['*', '?', ' ']) {
        return Err(input!("--app `{}`: give the package name of the app (as in its appversion tag), without wildcards", args.app));
    }
    crate::context::check_regions(&args.region, "--region")?;
    let rt = crate::context::runtime()?;
    rt.block_on(async {
        let ctx = AwsContext::load().await;
        ctx.require_credentials().await?;
        let regions = if args.region.is_empty() {
            vec![ctx.region(None)?]
        } else {
            args.region.clone()
        };
        let mut reports = Vec::new();
        for region in regions {
            reports.push(
                prune_region(&ctx, &region, &args.app, args.keep as usize, args.dry_run).await,
            );
        }
        if reports
            .iter()
            .all(|r| r.images.is_empty() && r.errors.is_empty())
        {
            let names: Vec<&str> = reports.iter().map(|r| r.region.as_str()).collect();
            return Err(input!(
                "no AMI of app `{}` in {} (an app's AMIs are this account's images whose `appversion` tag is `{}-VERSION[-RELEASE]`); check --app and --region",
                args.app,
                names.join(", "),
                args.app
            ));
        }
        Ok(PruneReport {
            app: args.app.clone(),
            keep: args.keep as usize,
            dry_run: args.dry_run,
            regions: reports,
        })
    })
}

async fn prune_region(
    ctx: &AwsContext,
    region: &str,
    app: &str,
    keep: usize,
    dry_run: bool,
) -> RegionReport {
    let mut report = RegionReport {
        region: region.to_string(),
        images: vec![],
        layer_cache: vec![],
        deleted_images: vec![],
        deleted_snapshots: vec![],
        errors: vec![],
    };
    let (decisions, layered) = match plan_region(ctx, region, app, keep).await {
        Ok(d) => d,
        Err(e) => {
            report
                .errors
                .push(format!("{e:#}; nothing was pruned in {region}"));
            return report;
        }
    };
    report.images = decisions;
    report.layer_cache = layered;
    if dry_run {
        return report;
    }
    let deleting: Vec<Decision> = report
        .images
        .iter()
        .chain(&report.layer_cache)
        .filter(|d| d.action == Action::Delete)
        .cloned()
        .collect();
    for d in &deleting {
        info!("pruning {} ({}) in {region}", d.image_id, d.name);
        let image = Resource::Image {
            region: region.to_string(),
            id: d.image_id.clone(),
        };
        if let Err(e) = ledger::delete(ctx, &image).await {
            report
                .errors
                .push(format!("deregistering {} in {region}: {e}", d.image_id));
            continue; // its snapshots are still in use by it
        }
        report.deleted_images.push(d.image_id.clone());
        for s in &d.delete_snapshots {
            match ledger::delete(
                ctx,
                &Resource::Snapshot {
                    region: region.to_string(),
                    id: s.clone(),
                },
            )
            .await
            {
                Ok(()) => report.deleted_snapshots.push(s.clone()),
                Err(e) => report.errors.push(format!(
                    "deleting snapshot {s} of {} in {region}: {e}",
                    d.image_id
                )),
            }
        }
    }
    if !report.errors.is_empty() {
        warn!("pruning in {region}: {}", report.errors.join("; "));
    }
    report
}

async fn plan_region(
    ctx: &AwsContext,
    region: &str,
    app: &str,
    keep: usize,
) -> Result<(Vec<Decision>, Vec<Decision>)> {
    use crate::pipeline::source::layer_tags;
    let ec2 = ctx.ec2(region);
    let images = describe_own_images(&ec2, region, vec![]).await?;
    let mut candidates = Vec::new();
    let mut layered = Vec::new();
    let mut others = Vec::new();
    let mut all = Vec::new();
    for i in &images {
        let id = i.image_id().unwrap_or_default().to_string();
        let state = i
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if state == "deregistered" {
            continue;
        }
        let tags = tag_map(i.tags());
        all.push((id.clone(), snapshot_ids(i)));
        if let Some(lookup) = tags.get(layer_tags::LOOKUP_TAG) {
            others.push((id.clone(), snapshot_ids(i)));
            layered.push(prune_plan::LayerCandidate {
                image: Candidate {
                    image_id: id,
                    name: i.name().unwrap_or_default().to_string(),
                    created: i.creation_date().unwrap_or_default().to_string(),
                    state,
                    snapshots: snapshot_ids(i).into_iter().take(1).collect(),
                },
                lookup: lookup.clone(),
                family: tags
                    .get(layer_tags::FAMILY_TAG)
                    .cloned()
                    .unwrap_or_default(),
                created_unix: tags
                    .get(layer_tags::CREATED_TAG)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
                complete: tags.get(crate::aws::BAKE_STATE_TAG).map(String::as_str)
                    == Some("complete"),
            });
        } else if tags
            .get("appversion")
            .is_some_and(|v| prune_plan::is_app_image(app, v))
        {
            candidates.push(Candidate {
                image_id: id,
                name: i.name().unwrap_or_default().to_string(),
                created: i.creation_date().unwrap_or_default().to_string(),
                state,
                // Only the root snapshot is the bake's own; the other mappings are the base's
                // (their snapshots belong to the base image, possibly another account's).
                snapshots: snapshot_ids(i).into_iter().take(1).collect(),
            });
        } else {
            others.push((id, snapshot_ids(i)));
        }
    }
    let in_use = usage::images_in_use(ctx, region)
        .await
        .map_err(|e| anyhow!("{e:#}"))?;
    let app = prune_plan::plan(&candidates, keep, &in_use, &others);
    // A layered base's snapshots are its own; any other image's (an app's) stay.
    let layer_ids: std::collections::BTreeSet<&str> =
        layered.iter().map(|l| l.image.image_id.as_str()).collect();
    let not_layered: Vec<(String, Vec<String>)> = all
        .into_iter()
        .filter(|(id, _)| !layer_ids.contains(id.as_str()))
        .collect();
    let layers = prune_plan::plan_layer_cache(
        &layered,
        &in_use,
        &not_layered,
        prune_plan::Supersede::ByLookup,
    );
    Ok((app, layers))
}
