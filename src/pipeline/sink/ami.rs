//! Sink: AMIs in every target region. Written once for `bake --output ami`, `base build --output
//! ami` and `base refresh`:
//!
//! 1. idempotent reruns: an AMI of the job's name already in the source region is reused, and
//!    nothing is baked;
//! 2. the snapshot: the disk uploaded with the EBS direct APIs (`upload snapshot`: only the
//!    512 KiB blocks that differ from the base snapshot, or every non-zero block of a disk made
//!    from nothing), or the bake volume snapshotted (`snapshot volume`) and deleted;
//! 3. RegisterImage shaped like the base AMI (or like a from-scratch base: HVM, ENA, the boot
//!    mode its disk can boot, one gp3 root) with the launch attributes the bake decided
//!    (inherited from the base, overridden per attribute: `aws::ami::attributes`), the root
//!    volume as large as the snapshot (never smaller than the base's), tagged;
//! 4. post-register plugins, sharing (launch permission, and createVolumePermission on every
//!    snapshot), deprecation, CopyImage to every other region concurrently (encrypted with
//!    that region's key, tagged, shared and deprecated there too), deregistration protection
//!    last (so a failure before it never meets a protected image);
//! 5. every AMI read back (`describe images`: attributes, snapshots and their KMS keys, for the
//!    manifest), every resource retagged `bakery:bake-state=complete` (`mark complete`).
//!
//! Encryption (`aws::encryption`) is decided per region before anything is made; the root
//! snapshot stays incremental whenever there is a base snapshot. Everything made is recorded in
//! the [`Ledger`] before the next call; on failure or Ctrl-C it is deleted newest first (unless
//! `--keep-on-error`). The options of issue 15 are [`AmiTarget::options`].

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use tracing::{info, warn};

use crate::aws::ami::{
    self, attributes, BaseAmi, BlockDevice, DiskFirmware, Registered, ShareTarget,
};
use crate::aws::ebs;
use crate::aws::encryption::{self, EncryptionPlan, SnapshotPlan, Want};
use crate::aws::ledger::Ledger;
use crate::aws::{volume, BAKE_ID_TAG};
use crate::context::{check_regions, Aws, Globals};
use crate::input;
use crate::manifest::{AmiOutput, Manifest, UploadSummary};
use crate::pipeline::source::{self, BaseOrigin, From, Source, SourceDisk};
use crate::pipeline::{announce, Job, Stages};
use crate::provision::plan::ImageFacts;
use crate::recipe::Mode;
use crate::workdir::WorkDir;

/// PutSnapshotBlock calls in flight.
const UPLOAD_CONCURRENCY: usize = 64;
/// Region copies in flight.
const COPY_CONCURRENCY: usize = 4;
/// How long a new snapshot may take to complete.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where the AMIs go.
#[derive(Debug, Clone, Default)]
pub struct AmiTarget {
    /// Region to register in (default: the environment's/profile's).
    pub region: Option<String>,
    /// Regions to copy to (the source region among them is ignored).
    pub copy_to: Vec<String>,
    /// Accounts, organization ARNs and OU ARNs the AMI is shared with in every region (see
    /// `aws::ami::share`).
    pub share_with: Vec<String>,
    /// On failure keep what was made (for debugging) instead of rolling it back.
    pub keep_on_error: bool,
    /// Launch attributes, lifecycle, encryption (issue 15).
    pub options: super::ami_options::AmiOptions,
}

impl AmiTarget {
    /// Input checks before anything is made: region names, share targets, KMS keys of regions
    /// the bake has (exit 2).
    pub fn check(&self) -> Result<()> {
        check_regions(
            self.region.iter().chain(self.copy_to.iter()),
            "--region/--copy-to",
        )?;
        self.share_targets()?;
        if self.region.is_some() {
            self.options
                .kms_keys
                .check(&self.regions())
                .map_err(|e| input!("{e}"))?;
        }
        Ok(())
    }

    /// `share_with` parsed: accounts, organizations, OUs (input error otherwise).
    pub fn share_targets(&self) -> Result<Vec<ShareTarget>> {
        ShareTarget::parse_all(&self.share_with).map_err(|e| input!("{e}"))
    }

    /// The source region (when given) first, then the copies, without duplicates.
    pub fn regions(&self) -> Vec<String> {
        let mut out: Vec<String> = self.region.iter().cloned().collect();
        for r in &self.copy_to {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }
}

/// The AWS side of one run: runtime and clients, the source region, the cleanup ledger.
pub struct Cloud {
    pub aws: Aws,
    pub region: String,
    pub ledger: Ledger,
    /// What each region's snapshots must be (decided before anything is made).
    pub encryption: EncryptionPlan,
}

/// The whole bake into AMIs, under the ledger: rolled back on any error or signal.
pub fn run(
    job: &Job,
    source: Source,
    target: &AmiTarget,
    stages: &mut Stages,
    g: &Globals,
) -> Result<Manifest> {
    let aws = Aws::load(true)?;
    let work = WorkDir::create(&g.work_dir, &job.bake_id)?;
    let region = aws.region(target.region.as_deref())?;
    let regions: Vec<String> = std::iter::once(region.clone())
        .chain(target.copy_to.iter().filter(|r| **r != region).cloned())
        .collect();
    // Every region is one the account has, before anything else is asked of it (an unknown
    // region is an input error, not a retried endpoint failure).
    aws.rt.block_on(crate::aws::regions::check_regions_exist(
        &aws.ctx, &region, &regions,
    ))?;
    let opts = &target.options;
    opts.kms_keys.check(&regions).map_err(|e| input!("{e}"))?;
    let shares = target.share_targets()?;
    // Keys looked up, the account's encryption settings read: before anything is made.
    let encryption = aws.rt.block_on(encryption::resolve(
        &aws.ctx,
        &regions,
        opts.encrypt,
        &opts.kms_keys,
        shares.iter().any(|t| t.account().is_some()),
    ))?;
    let cloud = Cloud {
        aws,
        region,
        ledger: Ledger::new(&job.bake_id),
        encryption,
    };
    // The base AMI is looked up before anything is made (a missing one is an input error), and
    // the attributes it passes on checked with the overrides.
    let base_ami = match source.base_ami_ref() {
        Some(base) => {
            let b =
                cloud
                    .aws
                    .rt
                    .block_on(ami::resolve_base(&cloud.aws.ctx, &cloud.region, base))?;
            attributes::check(&attributes::apply_overrides(&b, &opts.attributes))
                .map_err(|e| input!("{e} (base AMI {} in {})", b.id, cloud.region))?;
            Some(b)
        }
        _ => None,
    };
    if let (Some(size), Some(b)) = (job.disk_size, &base_ami) {
        check_disk_size(size, b)?;
    }
    let from = match &base_ami {
        Some(b) => format!("{} ({}) in {}", b.id, b.name, cloud.region),
        None => format!("scratch in {}", cloud.region),
    };
    announce(job, &work, &from, stages);
    let result = bake(
        job,
        source,
        base_ami.as_ref(),
        target,
        &cloud,
        &work,
        stages,
        g,
    )
    .and_then(|m| {
        stages.run_aws(
            "mark complete",
            "mark complete",
            cloud.aws.rt,
            cloud.ledger.mark_complete(&cloud.aws.ctx),
        )?;
        Ok(m)
    });
    settle(result, &cloud, target.keep_on_error, stages)
}

/// Keep the product (commit the ledger), or roll back everything made, newest first.
fn settle(
    result: Result<Manifest>,
    cloud: &Cloud,
    keep_on_error: bool,
    stages: &Stages,
) -> Result<Manifest> {
    let e = match result {
        Ok(m) => {
            cloud.ledger.commit();
            return Ok(m);
        }
        Err(e) => e,
    };
    let left = cloud.ledger.entries();
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
        stages.progress().println(&format!(
            "cleaning up {} AWS resource(s) this bake made",
            left.len()
        ));
    }
    let failures = cloud.aws.rt.block_on(cloud.ledger.rollback(&cloud.aws.ctx));
    if failures.is_empty() {
        Err(e)
    } else {
        Err(e.context(format!(
            "and cleanup failed for: {} (remove them by hand or with `bakery gc`; they are tagged {BAKE_ID_TAG}={})",
            failures.join("; "),
            cloud.ledger.bake_id
        )))
    }
}

/// What the AMI's root snapshot was made from, for the manifest's `upload`.
pub(crate) struct Written {
    pub snapshot_id: String,
    /// The snapshot's volume size (GiB).
    pub volume_size_gib: i32,
    pub upload: Option<UploadSummary>,
    /// The uploaded disk's block hashes (direct mode; empty for a volume's snapshot).
    pub hashes: Vec<Option<ebs::BlockHash>>,
}

/// The root volume size to register: the snapshot's, never smaller than the base AMI's root
/// (a base registered with a larger root than its snapshot keeps it).
pub fn root_volume_size(snapshot_gib: i32, base_gib: Option<i32>) -> i32 {
    snapshot_gib.max(base_gib.unwrap_or(0))
}

#[allow(clippy::too_many_arguments)]
fn bake(
    job: &Job,
    source: Source,
    base_ami: Option<&BaseAmi>,
    target: &AmiTarget,
    cloud: &Cloud,
    work: &WorkDir,
    stages: &mut Stages,
    g: &Globals,
) -> Result<Manifest> {
    let (rt, ctx, region) = (cloud.aws.rt, &cloud.aws.ctx, cloud.region.as_str());
    let ec2 = ctx.ec2(region);
    let env = crate::context::env_map();
    let copies: Vec<String> = target
        .copy_to
        .iter()
        .filter(|r| r.as_str() != region)
        .cloned()
        .collect();

    let opts = &target.options;
    let shares = target.share_targets()?;

    // The AMI name: reused only for the same bake (equal bake key), else the next attempt name.
    let identity = base_identity(&source, base_ami);
    let key = crate::naming::bake_key(&job.bake_key_input(identity.clone(), &BTreeMap::new())?);
    let (name, existing) = choose_name(rt, &ec2, &job.name, &key)?;
    if name != job.name {
        stages.progress().println(&format!(
            "AMI name {} is taken by another bake's image (different base, packages, layers or tags); naming this one {name}",
            job.name
        ));
    }
    let job = Job {
        name,
        bake_key: Some(key),
        ..job.clone()
    };
    let job = &job;
    let (registered, snapshots, facts, base, mut tags, upload, description, resolved, layered) =
        if let Some((id, snaps)) = existing {
            stages.progress().println(&format!(
            "{} already exists in {region} as {id}, made by the same bake (equal {}): reusing it",
            job.name,
            crate::naming::BAKE_KEY_TAG
        ));
            let facts = ImageFacts::default();
            let base = origin(&source, base_ami).summary(&facts);
            let tags = job.tags(&base, &facts, &env)?;
            let registered = Registered {
                image_id: id,
                snapshot_id: snaps.first().cloned().unwrap_or_default(),
                reused: true,
            };
            let description = description(&job.name, base_ami, None);
            (
                registered,
                snaps,
                facts,
                base,
                tags,
                None,
                description,
                None,
                None,
            )
        } else {
            let (disk, layered) = open(job, source, base_ami, cloud, work, stages, g)?;
            // What the disk can boot decides a from-scratch base's boot mode, and refuses a
            // --boot-mode it cannot boot (before the bake's long steps).
            let firmware = crate::disk::layout::read_layout(&disk.path)
                .ok()
                .map(|l| DiskFirmware::of(&l));
            if let (Some(f), Some(mode)) = (firmware, opts.attributes.boot_mode) {
                f.check(mode).map_err(|e| input!("{e}"))?;
            }
            let scratch_boot_mode = firmware.and_then(|f| f.default_boot_mode());
            if disk.from.base_ami().is_none() {
                let mut scratch = from_scratch_base(&job.name, region, "", 1, "");
                scratch.boot_mode = scratch_boot_mode.map(|m| m.as_str().to_string());
                attributes::check(&attributes::apply_overrides(&scratch, &opts.attributes))
                    .map_err(|e| input!("{e}"))?;
            }
            // With the layer cache, the layers are in the disk already: the rest of the steps run.
            let run_job = layered.as_ref().map(|(j, _)| j).unwrap_or(job);
            let mut facts =
                crate::pipeline::provision(run_job, &disk, Some(cloud), work, stages, g)?;
            if let Some((_, u)) = &layered {
                // The layers' changes to the base's packages come first (the later session saw
                // the layered disk as its base).
                let mut changes = u.package_changes.clone();
                changes.append(&mut facts.package_changes);
                facts.package_changes = changes;
            }
            // A package named without a pin: the key of what was really installed (a later
            // bake pinned to these versions reuses this image).
            // The name then says the version installed, if no other image has it (else the
            // name chosen before the bake, free then, stays).
            let resolved = if job.has_unpinned_names() {
                let input = job.bake_key_input(identity.clone(), &facts.installed)?;
                let key = crate::naming::bake_key(&input);
                let name = match job.name_after_install(&facts) {
                    Some(n) => match choose_name(rt, &ec2, &n, &key)? {
                        (n, None) => n,
                        (_, Some(_)) => job.name.clone(),
                    },
                    None => job.name.clone(),
                };
                Some(Job {
                    name,
                    bake_key: Some(key),
                    ..job.clone()
                })
            } else {
                None
            };
            let job = resolved.as_ref().unwrap_or(job);
            let base = disk.origin.summary(&facts);
            let mut tags = job.tags(&base, &facts, &env)?;
            if let Some(id) = layered.as_ref().and_then(|(_, u)| u.image.as_ref()) {
                tags.insert(
                    source::layer_tags::LAYER_BASE_AMI_TAG.to_string(),
                    id.clone(),
                );
            }
            tags.insert(BAKE_ID_TAG.to_string(), job.bake_id.clone());
            let description = description(&job.name, disk.from.base_ami(), facts.os.as_deref());
            let written = write(&disk, job, &description, &tags, cloud, stages, false)?;
            let mut register_base = match disk.from.base_ami() {
                Some(b) => b.clone(),
                None => {
                    let mut b = from_scratch_base(
                        &job.name,
                        region,
                        &written.snapshot_id,
                        written.volume_size_gib,
                        &base.version,
                    );
                    b.boot_mode = scratch_boot_mode.map(|m| m.as_str().to_string());
                    b
                }
            };
            register_base = attributes::apply_overrides(&register_base, &opts.attributes);
            encrypt_other_snapshots(&mut register_base, &description, &tags, cloud, stages)?;
            let volume_size_gib = root_volume_size(
                written.volume_size_gib,
                disk.from.base_ami().map(|b| b.root_volume_size_gib),
            );
            let mut snapshots = vec![written.snapshot_id.clone()];
            snapshots.extend(
                register_base
                    .block_device_mappings
                    .iter()
                    .filter(|m| {
                        !crate::aws::ami::same_device(
                            &m.device_name,
                            &register_base.root_device_name,
                        )
                    })
                    .filter_map(|m| m.snapshot_id.clone()),
            );
            let spec = ami::RegisterSpec {
                name: job.name.clone(),
                description: description.clone(),
                root_snapshot_id: written.snapshot_id.clone(),
                volume_size_gib,
                base: register_base,
                tags: tags.clone(),
            };
            let registered = stages.run("register image", |st| {
                let r = crate::sys::signals::block_on(
                    rt,
                    ami::register(ctx, region, &spec, &cloud.ledger),
                )?;
                st.say(format!("registered {}", r.image_id));
                Ok(r)
            })?;
            (
                registered,
                snapshots,
                facts,
                base,
                tags,
                written.upload,
                description,
                resolved,
                layered.map(|(_, u)| u),
            )
        };
    // The name and key of what an unpinned name installed, from here on (copies, manifest).
    let job = resolved.as_ref().unwrap_or(job);

    if !job.plugins.is_empty() && !registered.reused {
        stages.run("post-register plugins", |_| {
            let ev = crate::plugin::Event::new(crate::plugin::Hook::PostRegister, &job.bake_id)
                .with("region", region)
                .with("image_id", registered.image_id.as_str());
            let extra =
                crate::plugin::run_hook(&job.plugins, crate::plugin::Hook::PostRegister, &ev)?;
            if !extra.is_empty() {
                let mut all = tags.clone();
                all.extend(extra.clone());
                crate::naming::validate_tags(&crate::naming::resource_tags(&all, &job.bake_id))
                    .map_err(|e| crate::input!("tags with the post-register plugins' own: {e}"))?;
                rt.block_on(ami::tag_resources(
                    &ec2,
                    region,
                    &[registered.image_id.clone(), registered.snapshot_id.clone()],
                    &extra,
                ))?;
                tags.extend(extra);
            }
            Ok(())
        })?;
    }
    if !shares.is_empty() {
        stages.run_aws(
            &format!("share image in {region}"),
            &format!("share image in {region}"),
            rt,
            ami::share(&ec2, &registered.image_id, &snapshots, &shares),
        )?;
    }
    if let Some(at) = opts.lifecycle.deprecate_at {
        stages.run_aws(
            &format!("deprecate image in {region}"),
            &format!("deprecate image in {region}"),
            rt,
            ami::lifecycle::deprecate(&ec2, region, &registered.image_id, at),
        )?;
    }
    let mut amis = vec![AmiOutput {
        region: region.to_string(),
        image_id: registered.image_id.clone(),
        snapshot_id: registered.snapshot_id.clone(),
        reused: registered.reused,
        ..Default::default()
    }];
    if !copies.is_empty() {
        let copy_opts = ami::CopyOptions {
            kms_key_ids: cloud.encryption.copy_keys(),
            share_with: shares.clone(),
            deprecate_at: opts.lifecycle.deprecate_at,
        };
        let copied = stages.run_shown(
            "copy to regions",
            &format!("copy to {}", copies.join(", ")),
            |st| {
                let c = crate::sys::signals::block_on(
                    rt,
                    ami::copy_to_regions(
                        ctx,
                        region,
                        &registered,
                        &job.name,
                        &description,
                        &copies,
                        &tags,
                        &copy_opts,
                        &cloud.ledger,
                        COPY_CONCURRENCY,
                    ),
                )?;
                st.say(format!("copied to {} regions", c.len()));
                Ok(c)
            },
        )?;
        amis.extend(copied.into_iter().map(|c| AmiOutput {
            region: c.region,
            image_id: c.image_id,
            snapshot_id: c.snapshot_id,
            reused: c.reused,
            ..Default::default()
        }));
    }
    // Last: a failure before this point never has to lift a protection to roll back.
    if let Some(cooldown) = opts.lifecycle.protects() {
        let images: Vec<(String, String)> = amis
            .iter()
            .map(|a| (a.region.clone(), a.image_id.clone()))
            .collect();
        stages.run_aws(
            "protect images",
            "protect images from deregistration",
            rt,
            async {
                for (r, id) in &images {
                    ami::lifecycle::protect(&ctx.ec2(r), r, id, cooldown).await?;
                }
                Ok(())
            },
        )?;
    }
    let reports = stages.run_aws("describe images", "read back the images", rt, async {
        let mut out = Vec::new();
        for a in &amis {
            out.push(ami::describe_image(&ctx.ec2(&a.region), &a.region, &a.image_id).await?);
        }
        Ok(out)
    })?;
    for (a, r) in amis.iter_mut().zip(reports) {
        a.attributes = Some(r.attributes);
        a.snapshots = r.snapshots;
        a.shared_with = shares.iter().map(ToString::to_string).collect();
    }
    let mut m = job.manifest(base, &facts, tags, stages.timings(), work);
    m.amis = amis;
    m.upload = upload;
    if let Some(u) = layered {
        m.layers_from_cache = u.from_cache;
        m.layer_cache_key = Some(u.key);
        m.layer_upload = u.upload;
    }
    Ok(m)
}

/// Under encryption, the base AMI's other EBS snapshots (data volumes) must be encrypted with
/// the region's key too: each one that is not is copied encrypted (CopySnapshot, server side)
/// and the mapping points at the copy (stage `encrypt other snapshots`).
fn encrypt_other_snapshots(
    register_base: &mut BaseAmi,
    description: &str,
    tags: &BTreeMap<String, String>,
    cloud: &Cloud,
    stages: &mut Stages,
) -> Result<()> {
    let (rt, ctx, region) = (cloud.aws.rt, &cloud.aws.ctx, cloud.region.as_str());
    let want = cloud.encryption.want(region);
    let Want::Encrypted { key_arn, .. } = &want else {
        return Ok(());
    };
    let root = register_base.root_device_name.clone();
    let others: Vec<usize> = register_base
        .block_device_mappings
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            m.snapshot_id.is_some() && !crate::aws::ami::same_device(&m.device_name, &root)
        })
        .map(|(i, _)| i)
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let maps = &mut register_base.block_device_mappings;
    stages.run_aws(
        "encrypt other snapshots",
        "encrypt the base's other snapshots",
        rt,
        async {
            for i in others {
                let sid = maps[i].snapshot_id.clone().unwrap_or_default();
                let enc = encryption::snapshot_encryption(ctx, region, &sid).await?;
                if want.accepts(&enc) {
                    continue;
                }
                let copy = encryption::copy_snapshot_encrypted(
                    ctx,
                    region,
                    &sid,
                    key_arn,
                    description,
                    tags,
                    &cloud.ledger,
                    SNAPSHOT_TIMEOUT,
                )
                .await?;
                maps[i].snapshot_id = Some(copy);
                maps[i].encrypted = None;
            }
            Ok(())
        },
    )
}

/// An AMI found by name: its id and snapshot ids (root first).
type ExistingImage = (String, Vec<String>);

/// The first free name among `name`, `name-2`, `name-3`… ([`crate::naming::attempt_name`]), or
/// the first whose AMI was made by the same bake (then with that AMI's id and snapshots).
fn choose_name(
    rt: &tokio::runtime::Runtime,
    ec2: &aws_sdk_ec2::Client,
    name: &str,
    key: &str,
) -> Result<(String, Option<ExistingImage>)> {
    use crate::naming::{attempt_name, name_verdict, NameVerdict, BAKE_KEY_TAG, MAX_NAME_ATTEMPTS};
    for n in 1..=MAX_NAME_ATTEMPTS {
        let candidate = attempt_name(name, n);
        let found =
            crate::sys::signals::block_on(rt, ami::find_tagged_image_by_name(ec2, &candidate))?;
        let verdict = name_verdict(
            found
                .as_ref()
                .map(|(_, _, tags)| tags.get(BAKE_KEY_TAG).map(String::as_str)),
            key,
        );
        match (verdict, found) {
            (NameVerdict::Free, _) => return Ok((candidate, None)),
            (NameVerdict::Same, Some((id, snaps, _))) => return Ok((candidate, Some((id, snaps)))),
            _ => continue,
        }
    }
    Err(crate::input!(
        "AMI names {name} to {} are all taken by other bakes' images; deregister some or bake again in a minute",
        attempt_name(name, MAX_NAME_ATTEMPTS)
    ))
}

/// The base's identity for the bake key: the base AMI and its root snapshot, or a file's path,
/// size and modification time, or the built-in/debootstrap base's definition.
fn base_identity(source: &Source, base_ami: Option<&BaseAmi>) -> String {
    match (source, base_ami) {
        (_, Some(b)) => format!("ami {} snapshot {}", b.id, b.root_snapshot_id),
        (Source::File(p), _) => {
            let meta = std::fs::metadata(p).ok();
            format!(
                "file {} size {:?} mtime {:?}",
                p.display(),
                meta.as_ref().map(|m| m.len()),
                meta.and_then(|m| m.modified().ok())
            )
        }
        (other, None) => format!("{other:?}"),
    }
}

/// The layer cache's part of a bake: the job left to run on the disk (the steps after the
/// layers) and how the layers were applied.
type Layered = (Job, source::layer_cache::Used);

/// Open the source into a disk: an AMI's snapshot (direct) or volume, or a local disk. With the
/// layer cache in front of a base AMI in direct mode, the disk holds the layers already
/// (`source::layer_cache_ami`).
fn open(
    job: &Job,
    source: Source,
    base_ami: Option<&BaseAmi>,
    cloud: &Cloud,
    work: &WorkDir,
    stages: &mut Stages,
    g: &Globals,
) -> Result<(SourceDisk, Option<Layered>)> {
    let disk = work.join("disk.raw");
    let mode_of = |mode: Option<Mode>| match mode {
        Some(m) => m,
        None if cloud.aws.rt.block_on(crate::aws::imds::detect()).is_some() => Mode::Volume,
        None => Mode::Direct,
    };
    let plain = |d: Result<SourceDisk>| d.map(|d| (d, None));
    match (source, base_ami) {
        (Source::LayerCache(lc), Some(base)) => match &lc.base {
            Source::Ami { mode, .. } if mode_of(*mode) == Mode::Direct => {
                let (d, rest, used) =
                    source::layer_cache_ami::open(job, &lc, base, cloud, &disk, work, stages, g)?;
                Ok((d, Some((rest, used))))
            }
            _ => {
                tracing::debug!(
                    "layer cache: not used in volume mode (direct mode only); the layers are applied in this bake"
                );
                open(job, lc.base, base_ami, cloud, work, stages, g)
            }
        },
        (Source::Ami { mode, .. }, Some(base)) => {
            let mode = mode_of(mode);
            plain(match mode {
                Mode::Direct => source::ami_direct::open(base, cloud, &disk, stages, g),
                Mode::Volume => {
                    let size_gib = match job.disk_size {
                        Some(s) => crate::disk::grow::whole_gib(s)?,
                        None => base.root_volume_size_gib,
                    };
                    source::ami_volume::open(base, cloud, size_gib, stages)
                }
            })
        }
        (Source::Ami { .. }, None) => unreachable!("the base AMI is resolved before"),
        (Source::File(p), _) => plain(source::file::open(&p, &disk, stages)),
        (Source::Builtin, _) => plain(source::builtin::open(g, &disk, stages)),
        (Source::Debootstrap(d), _) => plain(source::debootstrap::open(&d, &disk, stages)),
        (Source::LayerCache(lc), None) => open(job, lc.base, base_ami, cloud, work, stages, g),
    }
}

/// What a source is, without opening it (an AMI reused by name skips the bake).
fn origin(source: &Source, base_ami: Option<&BaseAmi>) -> BaseOrigin {
    match (source, base_ami) {
        (_, Some(b)) => BaseOrigin::of_ami(b),
        (Source::Debootstrap(d), _) => source::debootstrap::origin(d),
        (Source::File(p), _) => BaseOrigin {
            image: p.display().to_string(),
            name: None,
            fallback_name: source::file_stem(p),
            version: None,
            format: crate::disk::image::detect_format(p).ok(),
        },
        (Source::LayerCache(lc), None) => origin(&lc.base, None),
        (Source::Builtin | Source::Ami { .. }, None) => BaseOrigin {
            image: "built-in".into(),
            name: None,
            fallback_name: "bakery-base-bookworm".into(),
            version: None,
            format: None,
        },
    }
}

/// The sealed disk as the AMI's root snapshot: uploaded (only the blocks that differ from the
/// snapshot it was read from, when there is one), or the bake volume snapshotted and deleted.
/// `layers`: the layer cache's layered base (its stages are named `layer cache: ...`).
pub(crate) fn write(
    disk: &SourceDisk,
    job: &Job,
    description: &str,
    tags: &BTreeMap<String, String>,
    cloud: &Cloud,
    stages: &mut Stages,
    layers: bool,
) -> Result<Written> {
    let (rt, ctx, region) = (cloud.aws.rt, &cloud.aws.ctx, cloud.region.as_str());
    let stage = |name: &str| {
        if layers {
            format!("layer cache: {name}")
        } else {
            name.to_string()
        }
    };
    let ec2 = ctx.ec2(region);
    if let From::Volume { base, attached, .. } = &disk.from {
        // Encrypted, when asked, since CreateVolume (source::ami_volume): the snapshot follows.
        let snapshot_id = stages.run_aws(
            "snapshot volume",
            "snapshot volume",
            rt,
            volume::snapshot_volume(
                ctx,
                region,
                &attached.volume_id,
                description,
                tags,
                &cloud.ledger,
            ),
        )?;
        stages.run_aws(
            "delete volume",
            "delete volume",
            rt,
            volume::delete(ctx, region, &attached.volume_id, &cloud.ledger),
        )?;
        let volume_size_gib = match job.disk_size {
            Some(s) => crate::disk::grow::whole_gib(s)?,
            None => rt
                .block_on(snapshot_size_gib(&ec2, &snapshot_id))
                .unwrap_or(base.root_volume_size_gib),
        };
        return Ok(Written {
            snapshot_id,
            volume_size_gib,
            upload: None,
            hashes: vec![],
        });
    }
    let (parent, base_snapshot_id, bytes_read) = match &disk.from {
        From::Snapshot {
            parent_snapshot_id,
            hashes,
            bytes_read,
            ..
        } => (
            Some((parent_snapshot_id.clone(), hashes.as_slice())),
            parent_snapshot_id.clone(),
            *bytes_read,
        ),
        _ => (None, String::new(), 0),
    };
    let want = cloud.encryption.want(region);
    let parent_encryption = match (&parent, &want) {
        (Some((id, _)), Want::Encrypted { .. }) => {
            Some(rt.block_on(encryption::snapshot_encryption(ctx, region, id))?)
        }
        (Some(_), Want::Plain) => Some(Default::default()),
        (None, _) => None,
    };
    let plan = encryption::snapshot_plan(parent_encryption.as_ref(), &want);
    // A parent that cannot take the wanted key: encrypt a copy of it first (server side), and
    // upload the child of that copy, still incrementally.
    let encrypted_copy = match &plan {
        SnapshotPlan::ChildOfEncryptedCopy { key_arn } => {
            let base_id = base_snapshot_id.clone();
            Some(stages.run_aws(
                &stage("encrypt base snapshot"),
                &format!("encrypted copy of {base_id}"),
                rt,
                encryption::copy_snapshot_encrypted(
                    ctx,
                    region,
                    &base_id,
                    key_arn,
                    &format!("{description} (encrypted parent, deleted after the bake)"),
                    tags,
                    &cloud.ledger,
                    SNAPSHOT_TIMEOUT,
                ),
            )?)
        }
        _ => None,
    };
    let parent_ref = parent
        .as_ref()
        .map(|(id, h)| (encrypted_copy.as_deref().unwrap_or(id.as_str()), *h));
    let upload_opts = ebs::UploadOptions {
        kms_key_arn: match &plan {
            SnapshotPlan::FullEncrypted { key_arn } => Some(key_arn.clone()),
            _ => None,
        },
    };
    let mut up = stages.run_shown(&stage("upload snapshot"), "upload changed blocks", |st| {
        let up = crate::sys::signals::block_on(
            rt,
            ebs::upload_snapshot_with(
                &ctx.ebs(region),
                &disk.path,
                parent_ref,
                description,
                tags,
                &cloud.ledger,
                region,
                UPLOAD_CONCURRENCY,
                &upload_opts,
            ),
        )?;
        st.say(format!("upload {} changed blocks", up.blocks_changed));
        Ok(up)
    })?;
    stages.run_shown(
        &stage("snapshot completed"),
        "wait for the snapshot",
        |st| {
            st.timing(stage("wait snapshot"));
            crate::sys::signals::block_on(
                rt,
                ebs::wait_snapshot_completed(&ec2, &up.snapshot_id, SNAPSHOT_TIMEOUT),
            )
        },
    )?;
    if let Some(copy) = &encrypted_copy {
        // The child is complete and stands on its own: the encrypted copy of the base is not
        // needed any more. Left behind (still tagged pending) if AWS refuses: `gc` takes it.
        let r = crate::aws::ledger::Resource::Snapshot {
            region: region.to_string(),
            id: copy.clone(),
        };
        match rt.block_on(crate::aws::ledger::delete(ctx, &r)) {
            Ok(()) => info!("deleted {copy}, the encrypted copy of {base_snapshot_id}"),
            Err(e) => warn!("could not delete {copy} (the encrypted copy of {base_snapshot_id}; `bakery gc` removes it): {e:#}"),
        }
        cloud.ledger.forget(&r);
    }
    let kms_key_id = match &plan {
        SnapshotPlan::Full => None,
        _ => {
            rt.block_on(encryption::snapshot_encryption(
                ctx,
                region,
                &up.snapshot_id,
            ))?
            .key_arn
        }
    };
    // With `--disk-size` the uploaded disk, so the snapshot's volume, is that size (a child
    // snapshot may be larger than its parent).
    Ok(Written {
        snapshot_id: up.snapshot_id.clone(),
        hashes: std::mem::take(&mut up.hashes),
        volume_size_gib: i32::try_from(up.volume_size_gib).unwrap_or(i32::MAX),
        upload: Some(UploadSummary {
            mode: Mode::Direct,
            base_snapshot_id,
            snapshot_id: up.snapshot_id,
            bytes_read,
            blocks_total: up.blocks_total,
            blocks_changed: up.blocks_changed,
            bytes_uploaded: up.bytes_uploaded,
            kms_key_id,
            encrypted_parent_snapshot_id: encrypted_copy,
        }),
    })
}

/// The volume size of a snapshot (GiB), from DescribeSnapshots.
async fn snapshot_size_gib(ec2: &aws_sdk_ec2::Client, snapshot_id: &str) -> Option<i32> {
    let out = ec2
        .describe_snapshots()
        .snapshot_ids(snapshot_id)
        .send()
        .await
        .ok()?;
    out.snapshots().first()?.volume_size()
}

/// `--disk-size` against the base AMI, before anything is made: a whole number of GiB, at
/// least the base's root volume (input errors).
pub fn check_disk_size(size: crate::recipe::Size, base: &BaseAmi) -> Result<i32> {
    let gib = crate::disk::grow::whole_gib(size)?;
    if gib < base.root_volume_size_gib {
        return Err(crate::input!(
            "--disk-size {size} is smaller than the root volume of base AMI {} ({} GiB); a disk is never shrunk, give at least {}GiB",
            base.id,
            base.root_volume_size_gib,
            base.root_volume_size_gib
        ));
    }
    Ok(gib)
}

/// The AMI's description: what it was baked from, or what it is (a base made from nothing).
pub fn description(name: &str, base: Option<&BaseAmi>, os: Option<&str>) -> String {
    match base {
        Some(b) => format!("{name} baked by bakery from {} ({})", b.name, b.id),
        None => format!("{name}: bakery base ({})", os.unwrap_or_default()),
    }
}

/// What a from-scratch base looks like to RegisterImage: HVM, ENA, BIOS boot (the bake replaces
/// it with what the disk boots: `DiskFirmware`), one gp3 root (`/dev/xvda`) from `snapshot_id`.
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
        imds_support: None,
        tpm_support: None,
        sriov_net_support: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_regions_put_the_source_first() {
        let t = AmiTarget {
            region: Some("us-east-1".into()),
            copy_to: vec!["us-west-2".into(), "us-east-1".into(), "eu-west-1".into()],
            ..Default::default()
        };
        assert_eq!(t.regions(), ["us-east-1", "us-west-2", "eu-west-1"]);
        assert!(t.check().is_ok());
        let bad = AmiTarget {
            share_with: vec!["12".into()],
            ..Default::default()
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn descriptions_say_where_the_image_came_from() {
        let b = from_scratch_base("base-1", "us-east-1", "snap-1", 2, "1");
        assert_eq!(b.root_device_name, "/dev/xvda");
        assert_eq!(
            b.block_device_mappings[0].snapshot_id.as_deref(),
            Some("snap-1")
        );
        let with_id = BaseAmi {
            id: "ami-0abc".into(),
            ..b
        };
        assert_eq!(
            description("app-1", Some(&with_id), None),
            "app-1 baked by bakery from base-1 (ami-0abc)"
        );
        assert_eq!(
            description("base-2", None, Some("Debian GNU/Linux 12 (bookworm)")),
            "base-2: bakery base (Debian GNU/Linux 12 (bookworm))"
        );
    }

    #[test]
    fn a_disk_size_is_whole_gib_and_never_below_the_base_volume() {
        let b = from_scratch_base("base-1", "us-east-1", "snap-1", 8, "1");
        assert_eq!(
            check_disk_size(crate::recipe::Size(10 << 30), &b).unwrap(),
            10
        );
        let e = check_disk_size(crate::recipe::Size(6 << 30), &b).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        assert!(e.to_string().contains("at least 8GiB"), "{e}");
        assert!(check_disk_size(crate::recipe::Size(9 << 29), &b).is_err());
    }
}
