//! Source: the layer cache for a base AMI in direct mode (issue 18). An entry is a **layered
//! base AMI**: the base AMI with the bake's layers applied, private, in the registering region,
//! its tags the entry ([`super::layer_tags`]); keys and freshness are [`super::layer_key`]'s, as
//! for the local cache. The lookup key's base is the base AMI, its root snapshot and the
//! encryption the bake's snapshots get.
//!
//! - **Hit** (the newest complete entry of the lookup key is fresh): the layered snapshot is read
//!   with the EBS direct APIs into `<work-dir>/snapshots` (once per host, like any base
//!   snapshot, held against `bakery gc` while copied), only the steps after the layers run, and
//!   the app's snapshot is uploaded incrementally against the layered one.
//! - **Miss** (none, stale, `--refresh-layers`): the base snapshot is read, the layer steps run
//!   in their own sealed session, the disk is uploaded against the base snapshot (stage `layer
//!   cache: upload snapshot`) and registered shaped like the base (`layer cache: register
//!   image`, named [`layer_tags::image_name`]), both under the bake's ledger until they are
//!   tagged `bakery:bake-state=complete` and leave it (`layer cache: keep entry`): a failure or
//!   Ctrl-C before that removes them, after it they are a cache entry the bake's rollback never
//!   touches. The older entries of its family (the same layers by name on the same base: a
//!   refreshed entry, an edited layer's old definition) are deregistered with their snapshots
//!   unless `images prune`'s rules keep them (in use). The bake then goes on on the
//!   same disk, and its upload is incremental against the layered snapshot.
//!
//! A host lock per lookup key (the local cache's) makes concurrent bakes on one host wait for
//! one build. Bakes on different hosts may each build an entry; the newest wins, the others are
//! superseded.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::layer_cache::{self, now, short, LayerCache, Used};
use super::layer_key::{self, EntryMeta};
use super::layer_tags;
use super::{ami_direct, BaseOrigin, From, SourceDisk};
use crate::aws::ami::{self, BaseAmi};
use crate::aws::encryption::Want;
use crate::aws::ledger::{self, Resource};
use crate::aws::{BAKE_ID_TAG, BAKE_STATE_TAG};
use crate::context::Globals;
use crate::images::prune_plan::{self, Action, Candidate, LayerCandidate};
use crate::pipeline::sink::ami::Cloud;
use crate::pipeline::{Job, Stages};
use crate::workdir::WorkDir;

/// A layered base AMI found for a lookup key.
#[derive(Debug, Clone)]
struct Found {
    candidate: LayerCandidate,
    /// Its entry, when its tags are a whole one.
    meta: Option<EntryMeta>,
}

impl Found {
    fn snapshot(&self) -> Option<&str> {
        self.candidate.image.snapshots.first().map(String::as_str)
    }
}

/// Open the disk for `job` from a base AMI with the layer cache in front: a layered base AMI's
/// snapshot, or the base with the layers applied now (and registered as an entry). Returns the
/// disk, the job left to run on it (the steps after the layers, no `--disk-size`: the layered
/// disk has it) and how the layers were applied.
#[allow(clippy::too_many_arguments)]
pub fn open(
    job: &Job,
    lc: &LayerCache,
    base: &BaseAmi,
    cloud: &Cloud,
    disk: &Path,
    work: &WorkDir,
    stages: &mut Stages,
    g: &Globals,
) -> Result<(SourceDisk, Job, Used)> {
    let (rt, region) = (cloud.aws.rt, cloud.region.as_str());
    let ec2 = cloud.aws.ctx.ec2(region);
    let (layer_job, rest_job) = layer_cache::split_job(job);
    let encryption = match cloud.encryption.want(region) {
        Want::Plain => None,
        Want::Encrypted { key_arn, .. } => Some(key_arn),
    };
    let base_id =
        layer_tags::base_identity(&base.id, &base.root_snapshot_id, encryption.as_deref());
    let (lookup, _lock, hit) = stages.run("layer cache lookup", |st| {
        let (lookup, lock) = layer_cache::lookup_and_lock(&base_id, &layer_job, g)?;
        let found =
            crate::sys::signals::block_on(rt, find(&ec2, region, layer_tags::LOOKUP_TAG, &lookup))?;
        let newest = newest_entry(&found);
        let named = newest.map(|(f, e)| {
            let name = format!("{} ({})", short(&e.key), f.candidate.image.image_id);
            (e, name)
        });
        let missing = format!("no layered base AMI in {region}");
        let fresh = layer_cache::use_entry(st, lc.refresh, named, &missing);
        let hit = newest
            .filter(|_| fresh)
            .map(|(f, e)| (f.clone(), e.clone()));
        Ok((lookup, lock, hit))
    })?;
    if let Some((f, e)) = hit {
        let snapshot = f.snapshot().unwrap_or_default().to_string();
        let (hashes, bytes_read) =
            ami_direct::fetch(&snapshot, "layered base", cloud, disk, stages, g)?;
        let opened = SourceDisk {
            path: disk.to_path_buf(),
            origin: BaseOrigin::of_ami(base),
            root_partition: None,
            bootstrap: None,
            from: From::Snapshot {
                base: base.clone(),
                parent_snapshot_id: snapshot,
                hashes,
                bytes_read,
            },
        };
        let used = Used {
            key: e.key,
            from_cache: true,
            package_changes: e.package_changes,
            image: Some(f.candidate.image.image_id),
            upload: None,
        };
        return Ok((opened, rest_job, used));
    }

    let opened = ami_direct::open(base, cloud, disk, stages, g)?;
    let facts = crate::pipeline::provision(&layer_job, &opened, Some(cloud), work, stages, g)?;
    let key = layer_key::entry_key(&lookup, &facts.apt_releases);
    let t = now();
    let meta = EntryMeta {
        key: key.clone(),
        lookup: lookup.clone(),
        created: t,
        last_used: t,
        base: base_id,
        layers: job.layers.clone(),
        releases: facts.apt_releases.clone(),
        package_changes: facts.package_changes.clone(),
    };
    let mut used = Used {
        key: key.clone(),
        from_cache: false,
        package_changes: facts.package_changes.clone(),
        image: None,
        upload: None,
    };
    let family = layer_tags::family(&meta.base, &job.layers, job.disk_size.map(|s| s.bytes()));
    let mut tags = match layer_tags::encode(&meta, &family) {
        Ok(t) => t,
        Err(e) => {
            // The bake goes on from the base; only the cache is skipped.
            warn!("layer cache: not caching these layers: {e}");
            return Ok((opened, rest_job, used));
        }
    };
    tags.insert("base_ami_id".into(), base.id.clone());
    tags.insert("base_ami_name".into(), base.name.clone());
    if let Some(v) = &base.version {
        tags.insert("base_ami_version".into(), v.clone());
    }
    tags.insert(BAKE_ID_TAG.into(), job.bake_id.clone());
    let name = layer_tags::image_name(&job.layers, &key, &job.bake_id);
    let description: String = format!(
        "{name}: bakery layer cache, layers {} on {} ({})",
        job.layers.join(", "),
        base.name,
        base.id
    )
    .chars()
    .take(255)
    .collect();
    let written = crate::pipeline::sink::ami::write(
        &opened,
        &layer_job,
        &description,
        &tags,
        cloud,
        stages,
        true,
    )?;
    let spec = ami::RegisterSpec {
        name: name.clone(),
        description,
        root_snapshot_id: written.snapshot_id.clone(),
        volume_size_gib: crate::pipeline::sink::ami::root_volume_size(
            written.volume_size_gib,
            Some(base.root_volume_size_gib),
        ),
        base: base.clone(),
        tags,
    };
    let ctx = &cloud.aws.ctx;
    let registered = stages.run("layer cache: register image", |st| {
        let r =
            crate::sys::signals::block_on(rt, ami::register(ctx, region, &spec, &cloud.ledger))?;
        st.say(format!("layer cache: registered {} ({name})", r.image_id));
        Ok(r)
    })?;
    let made = [
        Resource::Image {
            region: region.to_string(),
            id: registered.image_id.clone(),
        },
        Resource::Snapshot {
            region: region.to_string(),
            id: written.snapshot_id.clone(),
        },
    ];
    stages.run_aws(
        "layer cache: keep entry",
        "keep the layered base AMI",
        rt,
        async {
            let done = BTreeMap::from([(BAKE_STATE_TAG.to_string(), "complete".to_string())]);
            let ids = [registered.image_id.clone(), written.snapshot_id.clone()];
            ami::tag_resources(&ec2, region, &ids, &done).await?;
            // Complete: a cache entry from now on, never rolled back with the bake.
            for r in &made {
                cloud.ledger.forget(r);
            }
            Ok(())
        },
    )?;
    info!(
        "layer cache: {} ({name}) is the entry {} of {}",
        registered.image_id,
        short(&key),
        job.layers.join(", ")
    );
    stages.run("layer cache: remove superseded", |st| {
        let r = crate::sys::signals::block_on(
            rt,
            remove_superseded(cloud, &family, &registered.image_id),
        );
        match r {
            Ok(gone) if !gone.is_empty() => {
                st.say(format!("layer cache: deregistered {}", gone.join(", ")))
            }
            Ok(_) => {}
            Err(e) if e.chain().any(|c| c.is::<crate::error::Interrupted>()) => return Err(e),
            // The entry is made; what it supersedes is left for `images prune`.
            Err(e) => warn!("layer cache: removing superseded entries: {e:#}"),
        }
        Ok(())
    })?;
    used.image = Some(registered.image_id);
    used.upload = written.upload;
    let from = match opened.from {
        From::Snapshot {
            base, bytes_read, ..
        } => From::Snapshot {
            base,
            parent_snapshot_id: written.snapshot_id,
            hashes: written.hashes,
            bytes_read,
        },
        other => other,
    };
    Ok((SourceDisk { from, ..opened }, rest_job, used))
}

/// The newest complete entry among `found` (the order `images prune` keeps by).
fn newest_entry(found: &[Found]) -> Option<(&Found, &EntryMeta)> {
    let mut usable: Vec<(&Found, &EntryMeta)> = found
        .iter()
        .filter(|f| {
            f.candidate.complete && f.candidate.image.state == "available" && f.snapshot().is_some()
        })
        .filter_map(|f| f.meta.as_ref().map(|m| (f, m)))
        .collect();
    usable.sort_by(|a, b| prune_plan::newest_layer_first(&a.0.candidate, &b.0.candidate));
    usable.into_iter().next()
}

/// This account's layered base AMIs in `region` whose tag `tag` is `value` (a lookup key or a
/// family).
async fn find(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    tag: &str,
    value: &str,
) -> Result<Vec<Found>> {
    let f = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{tag}"))
        .values(value)
        .build();
    let images = ami::describe_own_images(ec2, region, vec![f])
        .await
        .with_context(|| format!("looking up the layer cache in {region}"))?;
    Ok(images
        .iter()
        .filter_map(|i| {
            let tags = ami::tag_map(i.tags());
            let state = i
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            if tags.get(tag).map(String::as_str) != Some(value) || state == "deregistered" {
                return None;
            }
            let meta = layer_tags::decode(&tags);
            Some(Found {
                candidate: LayerCandidate {
                    image: Candidate {
                        image_id: i.image_id()?.to_string(),
                        name: i.name().unwrap_or_default().to_string(),
                        created: i.creation_date().unwrap_or_default().to_string(),
                        state,
                        snapshots: ami::snapshot_ids(i).into_iter().take(1).collect(),
                    },
                    lookup: tags.get(layer_tags::LOOKUP_TAG)?.clone(),
                    family: tags
                        .get(layer_tags::FAMILY_TAG)
                        .cloned()
                        .unwrap_or_default(),
                    created_unix: meta.as_ref().map(|m| m.created).unwrap_or(0),
                    complete: tags.get(BAKE_STATE_TAG).map(String::as_str) == Some("complete"),
                },
                meta,
            })
        })
        .collect())
}

/// Deregister the entries of `family` that `newest` supersedes, with their snapshots, by
/// `images prune`'s rules (never one in use). Returns the images deregistered.
async fn remove_superseded(cloud: &Cloud, family: &str, newest: &str) -> Result<Vec<String>> {
    let (ctx, region) = (&cloud.aws.ctx, cloud.region.as_str());
    let ec2 = ctx.ec2(region);
    let found = find(&ec2, region, layer_tags::FAMILY_TAG, family).await?;
    if found.iter().all(|f| f.candidate.image.image_id == newest) {
        return Ok(vec![]);
    }
    let in_use = crate::images::usage::images_in_use(ctx, region).await?;
    let mine: Vec<&str> = found
        .iter()
        .map(|f| f.candidate.image.image_id.as_str())
        .collect();
    let others: Vec<(String, Vec<String>)> = ami::describe_own_images(&ec2, region, vec![])
        .await?
        .iter()
        .filter_map(|i| {
            let id = i.image_id()?;
            (!mine.contains(&id)).then(|| (id.to_string(), ami::snapshot_ids(i)))
        })
        .collect();
    let candidates: Vec<LayerCandidate> = found.into_iter().map(|f| f.candidate).collect();
    let mut gone = Vec::new();
    for d in prune_plan::plan_layer_cache(
        &candidates,
        &in_use,
        &others,
        prune_plan::Supersede::ByFamily,
    ) {
        if d.action != Action::Delete {
            continue;
        }
        info!(
            "layer cache: deregistering {} ({})",
            d.image_id,
            d.reasons.join("; ")
        );
        ledger::delete(
            ctx,
            &Resource::Image {
                region: region.to_string(),
                id: d.image_id.clone(),
            },
        )
        .await
        .with_context(|| format!("deregistering {}", d.image_id))?;
        for s in &d.delete_snapshots {
            ledger::delete(
                ctx,
                &Resource::Snapshot {
                    region: region.to_string(),
                    id: s.clone(),
                },
            )
            .await
            .with_context(|| format!("deleting snapshot {s} of {}", d.image_id))?;
        }
        gone.push(d.image_id);
    }
    Ok(gone)
}
