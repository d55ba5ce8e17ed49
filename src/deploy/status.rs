//! `bakery status`: per region, the generations of a cluster (or one group), which one serves,
//! the image each launches (with its `appversion` tag), instance health, and any deploy in
//! progress. Read-only.

use anyhow::Result;
use aws_sdk_autoscaling::types::AutoScalingGroup;
use serde_json::{json, Value};

use super::state::{self, GenRecord, SwapRecord, GEN_TAG, SWAP_TAG};
use super::{asg, lt, redblack, targets, Target};
use crate::aws::client::AwsContext;
use crate::input;

async fn appversion(ctx: &AwsContext, region: &str, image: &str) -> Option<String> {
    let out = ctx
        .ec2(region)
        .describe_images()
        .image_ids(image)
        .send()
        .await
        .ok()?;
    let img = out.images().first()?;
    img.tags()
        .iter()
        .find(|t| t.key() == Some("appversion"))
        .and_then(|t| t.value())
        .map(String::from)
}

async fn group(ctx: &AwsContext, region: &str, g: &AutoScalingGroup) -> Result<Value> {
    let (lt_json, image) = match asg::source(g, region) {
        Ok(src) => match lt::resolve(&ctx.ec2(region), src.lt()).await {
            Ok(r) => (
                json!({"id": r.template_id, "version": src.lt().version, "resolved": r.number}),
                Some(r.image_id),
            ),
            Err(e) => (json!({"error": format!("{e:#}")}), None),
        },
        Err(e) => (json!({"error": format!("{e:#}")}), None),
    };
    let app = match &image {
        Some(i) => appversion(ctx, region, i).await,
        None => None,
    };
    let sz = asg::size(g);
    Ok(json!({
        "name": asg::name(g),
        "created": g.created_time().map(|t| t.to_string()),
        "enabled": !asg::is_disabled(g),
        "launch_template": lt_json,
        "image_id": image,
        "appversion": app,
        "size": {"min": sz.min, "max": sz.max, "desired": sz.desired},
        "suspended": g.suspended_processes().iter().filter_map(|p| p.process_name()).collect::<Vec<_>>(),
        "instances": targets::instances(ctx, region, g).await?,
    }))
}

pub async fn region(ctx: &AwsContext, region: &str, target: &Target) -> Result<Value> {
    let a = ctx.autoscaling(region);
    match target {
        Target::Asg(name) => {
            let g = asg::describe(&a, name)
                .await?
                .ok_or_else(|| input!("no Auto Scaling group named {name} in {region}"))?;
            let mut v = group(ctx, region, &g).await?;
            let rec: Option<SwapRecord> = state::read(&g, SWAP_TAG)?;
            v["region"] = json!(region);
            v["deploy"] = serde_json::to_value(&rec)?;
            v["in_progress"] = json!(rec.as_ref().is_some_and(|r| r.phase == "rolling"));
            Ok(v)
        }
        Target::Cluster(c) => {
            let mut groups = asg::cluster_groups(&a, c).await?;
            groups.sort_by_key(|g| std::cmp::Reverse(asg::created_ms(g)));
            let serving = redblack::serving(&groups).map(|g| asg::name(g).to_string());
            let mut gens = Vec::new();
            let mut progress = None;
            for g in &groups {
                let mut v = group(ctx, region, g).await?;
                let rec: Option<GenRecord> = state::read(g, GEN_TAG)?;
                if let Some(r) = rec
                    .as_ref()
                    .filter(|r| matches!(r.phase.as_str(), "canary" | "deploying"))
                {
                    progress = Some(
                        json!({"generation": asg::name(g), "deploy_id": r.id, "phase": r.phase, "image_id": r.image, "from": r.from}),
                    );
                }
                v["serving"] = json!(serving.as_deref() == Some(asg::name(g)));
                v["deploy"] = serde_json::to_value(&rec)?;
                gens.push(v);
            }
            Ok(
                json!({"region": region, "cluster": c, "serving": serving, "in_progress": progress, "generations": gens}),
            )
        }
    }
}

/// The human table of a status JSON.
pub fn table(v: &Value) -> String {
    let mut s = String::new();
    for r in v["regions"].as_array().into_iter().flatten() {
        let region = r["region"].as_str().unwrap_or("?");
        let rows: Vec<&Value> = match r["generations"].as_array() {
            Some(g) => g.iter().collect(),
            None => vec![r],
        };
        if let Some(p) = r["in_progress"].as_object() {
            s.push_str(&format!(
                "{region}: deploy {} in progress ({} of {} to {})\n",
                p["deploy_id"].as_str().unwrap_or("?"),
                p["phase"].as_str().unwrap_or("?"),
                p["image_id"].as_str().unwrap_or("?"),
                p["generation"].as_str().unwrap_or("?")
            ));
        }
        for g in rows {
            let healthy = g["instances"]
                .as_array()
                .map(|is| {
                    is.iter()
                        .filter(|i| {
                            i["lifecycle"] == "InService"
                                && i["targets"].as_object().is_none_or(|t| {
                                    t.values()
                                        .all(|s| s.as_str().is_some_and(targets::is_healthy))
                                })
                        })
                        .count()
                })
                .unwrap_or(0);
            let mark = if g["serving"] == true {
                "serving"
            } else if g["enabled"] == true {
                "enabled"
            } else {
                "disabled"
            };
            s.push_str(&format!(
                "{region}  {:<32} {:<8} {:<22} {:<28} {}/{} healthy\n",
                g["name"].as_str().unwrap_or("?"),
                mark,
                g["image_id"].as_str().unwrap_or("-"),
                g["appversion"].as_str().unwrap_or("-"),
                healthy,
                g["size"]["desired"],
            ));
        }
    }
    s
}
