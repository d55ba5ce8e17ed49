//! Sink: AMIs in every target region. Written once for `bake --output ami`, `base build --output
//! ami` and `base refresh`:
//!
//! 1. idempotent reruns: an AMI of the job's name already in the source region is reused, and
//!    nothing is baked;
//! 2. the snapshot: the disk uploaded with the EBS direct APIs (`upload snapshot`: only the
//!    512 KiB blocks that differ from the base snapshot, or every non-zero block of a disk made
//!    from nothing), or the bake volume snapshotted (`snapshot volume`) and deleted;
//! 3. RegisterImage shaped like the base AMI (or like a from-scratch base: HVM, ENA, BIOS, one
//!    gp3 root), tagged;
//! 4. post-register plugins, launch permissions, CopyImage to every other region concurrently
//!    (tagged and shared there too);
//! 5. every resource retagged `bakery:bake-state=complete` (`mark complete`).
//!
//! Everything made is recorded in the [`Ledger`] before the next call; on failure or Ctrl-C it
//! is deleted newest first (unless `--keep-on-error`). AMI attributes, encryption and sharing
//! options (issue 15) are fields of [`AmiTarget`].

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use tracing::warn;

use crate::aws::ami::{self, BaseAmi, BlockDevice, Registered};
use crate::aws::ebs;
use crate::aws::ledger::Ledger;
use crate::aws::{volume, BAKE_ID_TAG};
use crate::context::{check_account_ids, check_regions, Aws, Globals};
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
    /// Accounts granted launch permission in every region.
    pub share_with: Vec<String>,
    /// On failure keep what was made (for debugging) instead of rolling it back.
    pub keep_on_error: bool,
}

impl AmiTarget {
    /// Input checks before anything is made: region names, account ids (exit 2).
    pub fn check(&self) -> Result<()> {
        check_regions(
            self.region.iter().chain(self.copy_to.iter()),
            "--region/--copy-to",
        )?;
        check_account_ids(&self.share_with)
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
    let cloud = Cloud {
        aws,
        region,
        ledger: Ledger::new(&job.bake_id),
    };
    // The base AMI is looked up before anything is made (a missing one is an input error).
    let base_ami = match &source {
        Source::Ami { base, .. } => Some(cloud.aws.rt.block_on(ami::resolve_base(
            &cloud.aws.ctx,
            &cloud.region,
            base,
        ))?),
        _ => None,
    };
    if let (Some(size), Some(b)) = (job.disk_size, &base_ami) {
        check_disk_size(size, b)?;
    }
    let from = match &base_ami {
        Some(b) => format!("{} ({}) in {}", b.id, b.name, cloud.region),
        None => format!("scratch in {}", cloud.region),
    };
    announce(job, &work, &from);
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
struct Written {
    snapshot_id: String,
    volume_size_gib: i32,
    upload: Option<UploadSummary>,
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

    let existing = rt.block_on(ami::find_image_by_name(&ec2, &job.name))?;
    let (registered, facts, base, mut tags, upload, description) =
        if let Some((id, snaps, _)) = existing {
            stages.progress().println(&format!(
                "{} already exists in {region} as {id}: reusing it",
                job.name
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
            (registered, facts, base, tags, None, description)
        } else {
            let disk = open(job, source, base_ami, cloud, work, stages, g)?;
            let boot = crate::disk::layout::read_layout(&disk.path)
                .map(|l| DiskBoot::of(&l))
                .unwrap_or(DiskBoot::Unknown);
            let facts = crate::pipeline::provision(job, &disk, Some(cloud), work, stages, g)?;
            let base = disk.origin.summary(&facts);
            let mut tags = job.tags(&base, &facts, &env)?;
            tags.insert(BAKE_ID_TAG.to_string(), job.bake_id.clone());
            let description = description(&job.name, disk.from.base_ami(), facts.os.as_deref());
            let written = write(&disk, job, &description, &tags, cloud, stages)?;
            let facts_of_disk = DiskFacts {
                size_gib: written.volume_size_gib,
                boot,
            };
            let register_base = match disk.from.base_ami() {
                Some(b) => b.clone(),
                None => {
                    let mut b = from_scratch_base(
                        &job.name,
                        region,
                        &written.snapshot_id,
                        written.volume_size_gib,
                        &base.version,
                    );
                    if let Some(m) = facts_of_disk.boot.boot_mode() {
                        b.boot_mode = Some(m.to_string());
                    }
                    b
                }
            };
            let spec = ami::RegisterSpec {
                name: job.name.clone(),
                description: description.clone(),
                root_snapshot_id: written.snapshot_id.clone(),
                volume_size_gib: written.volume_size_gib,
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
            (registered, facts, base, tags, written.upload, description)
        };

    if !job.plugins.is_empty() && !registered.reused {
        stages.run("post-register plugins", |_| {
            let ev = crate::plugin::Event::new(crate::plugin::Hook::PostRegister, &job.bake_id)
                .with("region", region)
                .with("image_id", registered.image_id.as_str());
            let extra =
                crate::plugin::run_hook(&job.plugins, crate::plugin::Hook::PostRegister, &ev)?;
            if !extra.is_empty() {
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
    if !target.share_with.is_empty() {
        stages.run_aws(
            &format!("share image in {region}"),
            &format!("share image in {region}"),
            rt,
            ami::share(&ec2, &registered.image_id, &target.share_with),
        )?;
    }
    let mut amis = vec![AmiOutput {
        region: region.to_string(),
        image_id: registered.image_id.clone(),
        snapshot_id: registered.snapshot_id.clone(),
        reused: registered.reused,
    }];
    if !copies.is_empty() {
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
                        &target.share_with,
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
        }));
    }
    let mut m = job.manifest(base, &facts, tags, stages.timings(), work);
    m.amis = amis;
    m.upload = upload;
    Ok(m)
}

/// Open the source into a disk: an AMI's snapshot (direct) or volume, or a local disk.
fn open(
    job: &Job,
    source: Source,
    base_ami: Option<&BaseAmi>,
    cloud: &Cloud,
    work: &WorkDir,
    stages: &mut Stages,
    g: &Globals,
) -> Result<SourceDisk> {
    let disk = work.join("disk.raw");
    match (source, base_ami) {
        (Source::Ami { mode, .. }, Some(base)) => {
            let mode = match mode {
                Some(m) => m,
                None if cloud.aws.rt.block_on(crate::aws::imds::detect()).is_some() => Mode::Volume,
                None => Mode::Direct,
            };
            match mode {
                Mode::Direct => source::ami_direct::open(base, cloud, &disk, stages, g),
                Mode::Volume => {
                    let size_gib = match job.disk_size {
                        Some(s) => crate::disk::grow::whole_gib(s)?,
                        None => base.root_volume_size_gib,
                    };
                    source::ami_volume::open(base, cloud, size_gib, stages)
                }
            }
        }
        (Source::Ami { .. }, None) => unreachable!("the base AMI is resolved before"),
        (Source::File(p), _) => source::file::open(&p, &disk, stages),
        (Source::Builtin, _) => source::builtin::open(g, &disk, stages),
        (Source::Debootstrap(d), _) => source::debootstrap::open(&d, &disk, stages),
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
/// base snapshot, when there is one), or the bake volume snapshotted and deleted.
fn write(
    disk: &SourceDisk,
    job: &Job,
    description: &str,
    tags: &BTreeMap<String, String>,
    cloud: &Cloud,
    stages: &mut Stages,
) -> Result<Written> {
    let (rt, ctx, region) = (cloud.aws.rt, &cloud.aws.ctx, cloud.region.as_str());
    if let From::Volume { base, attached, .. } = &disk.from {
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
            None => base.root_volume_size_gib,
        };
        return Ok(Written {
            snapshot_id,
            volume_size_gib,
            upload: None,
        });
    }
    let (parent, base_snapshot_id, bytes_read) = match &disk.from {
        From::Snapshot {
            base,
            hashes,
            bytes_read,
        } => (
            Some((base.root_snapshot_id.as_str(), hashes.as_slice())),
            base.root_snapshot_id.clone(),
            *bytes_read,
        ),
        _ => (None, String::new(), 0),
    };
    let up = stages.run_shown("upload snapshot", "upload changed blocks", |st| {
        let up = crate::sys::signals::block_on(
            rt,
            ebs::upload_snapshot(
                &ctx.ebs(region),
                &disk.path,
                parent,
                description,
                tags,
                &cloud.ledger,
                region,
                UPLOAD_CONCURRENCY,
            ),
        )?;
        st.say(format!("upload {} changed blocks", up.blocks_changed));
        Ok(up)
    })?;
    stages.run_shown("snapshot completed", "wait for the snapshot", |st| {
        st.timing("wait snapshot");
        crate::sys::signals::block_on(
            rt,
            ebs::wait_snapshot_completed(&ctx.ec2(region), &up.snapshot_id, SNAPSHOT_TIMEOUT),
        )
    })?;
    // `--disk-size`: the uploaded disk is that size, and so is the snapshot's volume (a child
    // snapshot may be larger than its parent).
    let uploaded = i32::try_from(up.volume_size_gib).unwrap_or(i32::MAX);
    let volume_size_gib = match (disk.from.base_ami(), job.disk_size) {
        (_, Some(_)) => uploaded,
        (Some(b), None) => b.root_volume_size_gib,
        (None, None) => uploaded,
    };
    Ok(Written {
        snapshot_id: up.snapshot_id.clone(),
        volume_size_gib,
        upload: Some(UploadSummary {
            mode: Mode::Direct,
            base_snapshot_id,
            snapshot_id: up.snapshot_id,
            bytes_read,
            blocks_total: up.blocks_total,
            blocks_changed: up.blocks_changed,
            bytes_uploaded: up.bytes_uploaded,
        }),
    })
}

/// What the sealed disk says of itself, for the AMI's attributes: the root volume's size (GiB,
/// `--disk-size` or the base's) and which firmware can boot it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFacts {
    pub size_gib: i32,
    pub boot: DiskBoot,
}

/// Which firmware a disk boots under, from its partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBoot {
    /// GPT with a BIOS boot partition and an EFI System Partition (bakery's bases).
    Hybrid,
    /// A BIOS boot partition (or an MBR) and no ESP.
    BiosOnly,
    /// An ESP and no BIOS boot partition.
    UefiOnly,
    /// Neither found.
    Unknown,
}

impl DiskBoot {
    pub fn of(l: &crate::disk::layout::Layout) -> DiskBoot {
        use crate::disk::layout::{TableKind, GPT_BIOS_BOOT, GPT_ESP};
        let esp = l.partitions.iter().any(|p| p.type_id == GPT_ESP);
        let bios =
            l.table == TableKind::Mbr || l.partitions.iter().any(|p| p.type_id == GPT_BIOS_BOOT);
        match (bios, esp) {
            (true, true) => DiskBoot::Hybrid,
            (true, false) => DiskBoot::BiosOnly,
            (false, true) => DiskBoot::UefiOnly,
            (false, false) => DiskBoot::Unknown,
        }
    }

    /// The AMI boot mode such a disk registers with by default (EC2's `BootMode`): a hybrid
    /// disk `uefi-preferred` (UEFI on instance types that have it, BIOS elsewhere), a
    /// BIOS-only disk `legacy-bios`, a UEFI-only disk `uefi`. `None`: keep what is known.
    pub fn boot_mode(self) -> Option<&'static str> {
        match self {
            DiskBoot::Hybrid => Some("uefi-preferred"),
            DiskBoot::BiosOnly => Some("legacy-bios"),
            DiskBoot::UefiOnly => Some("uefi"),
            DiskBoot::Unknown => None,
        }
    }
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

/// What a from-scratch base looks like to RegisterImage: HVM, ENA, BIOS boot, one gp3 root
/// (`/dev/xvda`) from `snapshot_id`.
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
    fn hybrid_disks_register_uefi_preferred_and_bios_only_ones_legacy_bios() {
        use crate::disk::layout::{Layout, Partition, TableKind, GPT_BIOS_BOOT, GPT_ESP};
        let p = |t: &str| Partition {
            number: 1,
            start: 0,
            size: 0,
            type_id: t.into(),
            part_uuid: None,
            fs: None,
        };
        let gpt = |parts| Layout {
            table: TableKind::Gpt,
            disk_size: 0,
            partitions: parts,
        };
        let hybrid = gpt(vec![p(GPT_BIOS_BOOT), p(GPT_ESP), p("root")]);
        assert_eq!(DiskBoot::of(&hybrid).boot_mode(), Some("uefi-preferred"));
        let bios = gpt(vec![p(GPT_BIOS_BOOT), p("root")]);
        assert_eq!(DiskBoot::of(&bios).boot_mode(), Some("legacy-bios"));
        assert_eq!(
            DiskBoot::of(&gpt(vec![p(GPT_ESP)])).boot_mode(),
            Some("uefi")
        );
        assert_eq!(DiskBoot::of(&gpt(vec![p("root")])).boot_mode(), None);
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
