//! Swap: a launch template version that differs from the group's current one only in ImageId,
//! and the group pointed at it (pinned version), or made the default (`$Default`), or simply the
//! latest (`$Latest`). What it replaced is recorded on the group for an exact rollback.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::info;

use super::plan::{restore, Restore};
use super::state::{self, Follows, SwapRecord, SWAP_TAG};
use super::{asg, lt, Options};
use crate::aws::client::AwsContext;
use crate::aws::ledger::{Ledger, Resource};
use crate::input;

#[derive(Debug, Clone, Serialize)]
pub struct SwapResult {
    pub asg: String,
    pub launch_template: String,
    pub previous_version: String,
    pub previous_image: String,
    pub new_version: Option<i64>,
    /// What changed: `asg` (the group points at the new number), `default` (the new version is
    /// the template's default, the group follows $Default), `latest` (the group follows $Latest).
    pub applied: String,
    pub message: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::state::serialize_report"
    )]
    pub record: Option<SwapRecord>,
}

pub async fn swap(
    ctx: &AwsContext,
    region: &str,
    name: &str,
    image: &str,
    o: &Options,
    ledger: &Ledger,
) -> Result<SwapResult> {
    let a = ctx.autoscaling(region);
    let ec2 = ctx.ec2(region);
    let g = asg::describe(&a, name)
        .await?
        .ok_or_else(|| input!("no Auto Scaling group named {name} in {region}"))?;
    let src = asg::source(&g, region)?;
    let cur = lt::resolve(&ec2, src.lt()).await?;
    let follows = Follows::of(&src.lt().version);
    if cur.image_id == image {
        return Ok(SwapResult {
            asg: name.into(),
            launch_template: cur.template_id,
            previous_version: src.lt().version.clone(),
            previous_image: cur.image_id,
            new_version: None,
            applied: "none".into(),
            message: format!("{name} ({region}) already launches {image}: nothing to do"),
            record: None,
        });
    }
    let new = lt::create_version(
        &ec2,
        &cur.template_id,
        cur.number,
        image,
        &format!("bakery deploy {} of {image}", o.deploy_id),
    )
    .await?;
    ledger.record(Resource::LaunchTemplateVersion {
        region: region.into(),
        template_id: cur.template_id.clone(),
        version: new,
    });
    let (applied, message) = match follows {
        Follows::Pinned => {
            asg::set_version(&a, &g, &src, &new.to_string()).await?;
            ("asg", format!("{name} ({region}) now uses launch template {} version {new} (was {})", cur.template_id, src.lt().version))
        }
        Follows::Default => {
            lt::set_default(&ec2, &cur.template_id, new).await?;
            ("default", format!("{name} ({region}) follows $Default: version {new} is now the default of launch template {} (was {})", cur.template_id, cur.number))
        }
        Follows::Latest => ("latest", format!("{name} ({region}) follows $Latest: version {new} of launch template {} is the latest (was {})", cur.template_id, cur.number)),
    };
    let rec = SwapRecord {
        id: o.deploy_id.clone(),
        lt: cur.template_id.clone(),
        follows,
        prev: src.lt().version.clone(),
        prev_n: cur.number,
        new,
        image: image.into(),
        prev_image: cur.image_id.clone(),
        phase: "swapped".into(),
    };
    if let Err(e) = state::write(&a, name, SWAP_TAG, &rec).await {
        // Without the record a rollback could not be exact: undo the swap now.
        let _ = undo(ctx, region, name, &rec).await;
        return Err(e);
    }
    ledger.commit();
    info!("{message}");
    Ok(SwapResult {
        asg: name.into(),
        launch_template: cur.template_id,
        previous_version: src.lt().version.clone(),
        previous_image: cur.image_id,
        new_version: Some(new),
        applied: applied.into(),
        message,
        record: Some(rec),
    })
}

/// Put the group/template back as `rec` says it was. Returns what was done.
pub async fn undo(ctx: &AwsContext, region: &str, name: &str, rec: &SwapRecord) -> Result<String> {
    let a = ctx.autoscaling(region);
    let ec2 = ctx.ec2(region);
    let g = asg::describe(&a, name)
        .await?
        .ok_or_else(|| input!("no Auto Scaling group named {name} in {region}"))?;
    let src = asg::source(&g, region)?;
    let now = lt::resolve(
        &ec2,
        &lt::LtRef {
            id: Some(rec.lt.clone()),
            name: None,
            version: "$Latest".into(),
        },
    )
    .await?;
    Ok(match restore(rec, now.latest_number) {
        Restore::AsgVersion(v) => {
            asg::set_version(&a, &g, &src, &v).await?;
            format!(
                "{name} ({region}) points at launch template {} version {v} again",
                rec.lt
            )
        }
        Restore::DefaultVersion(v) => {
            lt::set_default(&ec2, &rec.lt, v).await?;
            format!(
                "version {v} is the default of launch template {} again ({name}, {region})",
                rec.lt
            )
        }
        Restore::DeleteLatest(v) => {
            lt::delete_version(&ec2, &rec.lt, v).await?;
            format!("deleted version {v} of launch template {}: version {} is the latest again ({name}, {region})", rec.lt, rec.prev_n)
        }
        Restore::CopyAsLatest(v) => {
            let n = lt::create_version(
                &ec2,
                &rec.lt,
                v,
                &rec.prev_image,
                &format!("bakery rollback of {}", rec.id),
            )
            .await?;
            format!("launch template {} has newer versions than {}: version {n}, a copy of {v}, is the latest ({name}, {region})", rec.lt, rec.new)
        }
    })
}

/// `bakery rollback --asg`: undo the recorded swap.
pub async fn rollback(ctx: &AwsContext, region: &str, name: &str) -> Result<Value> {
    let a = ctx.autoscaling(region);
    let g = asg::describe(&a, name)
        .await?
        .ok_or_else(|| input!("no Auto Scaling group named {name} in {region}"))?;
    let mut rec: SwapRecord = state::read(&g, SWAP_TAG)?.ok_or_else(|| {
        input!("{name} ({region}) has no deploy to roll back (no {SWAP_TAG} tag)")
    })?;
    if rec.phase == "rolled-back" {
        return Err(input!(
            "the last deploy of {name} ({region}), {}, was already rolled back",
            rec.id
        ));
    }
    // Never point a group back at an image that is gone (pruned, deregistered by hand): its
    // instances would fail to launch.
    if !lt::image_exists(&ctx.ec2(region), &rec.prev_image).await? {
        return Err(input!(
            "{name} ({region}): rolling back deploy {} would return it to image {}, which is no longer registered (pruned or deregistered); nothing was changed: deploy an image that exists instead",
            rec.id,
            rec.prev_image
        ));
    }
    let did = undo(ctx, region, name, &rec)
        .await
        .with_context(|| format!("rolling back deploy {} of {name}", rec.id))?;
    rec.phase = "rolled-back".into();
    state::write(&a, name, SWAP_TAG, &rec).await?;
    info!("{did}");
    Ok(
        json!({"asg": name, "deploy_id": rec.id, "restored_version": rec.prev, "image_id": rec.prev_image, "message": did}),
    )
}
