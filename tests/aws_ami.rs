//! AMIs and volume mode against the local AWS emulator (tests/support/aws-emulator: moto with
//! the patches that make RegisterImage honour block device mappings and tags, and CopyImage copy
//! snapshots and tags). Nothing here can reach real AWS: the endpoint, the credentials and the
//! config files are all overridden before any client is built.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, Filter,
    ImageAttributeName, InstanceType, ResourceType,
};
use bakery::aws::ami::{self, BaseRef, RegisterSpec, WaitConfig};
use bakery::aws::client::AwsContext;
use bakery::aws::imds::Ec2Host;
use bakery::aws::ledger::{Ledger, Resource};
use bakery::aws::volume::{self, AttachOptions, AttachedVolume};
use bakery::aws::BAKE_ID_TAG;

const REGION: &str = "us-east-1";
const AZ: &str = "us-east-1a";
const COPY_REGIONS: [&str; 3] = ["us-west-2", "eu-west-1", "ap-southeast-2"];
const COPY_DELAY_MS: u64 = 1500;

// --- the emulator -------------------------------------------------------------------------

mod support;

use support::emulator::Emulator;

/// The emulator of this test process (see `support::emulator::shared`).
fn emulator() -> Arc<Emulator> {
    support::emulator::shared(&["--delay-ms-for", &format!("CopyImage={COPY_DELAY_MS}")])
}

/// Runs a test body in its own tokio runtime with the emulator up.
fn run<F, Fut>(f: F)
where
    F: FnOnce(AwsContext) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _emu = emulator();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ctx = AwsContext::load().await;
        f(ctx).await
    });
}

// --- fixtures -----------------------------------------------------------------------------

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        uuid::Uuid::new_v4().simple().to_string().get(..10).unwrap()
    )
}

fn fast_wait() -> WaitConfig {
    WaitConfig {
        timeout: Duration::from_secs(60),
        poll: Duration::from_millis(100),
        max_poll: Duration::from_millis(500),
        log_every: Duration::from_secs(5),
    }
}

fn tag_filter(bake_id: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{BAKE_ID_TAG}"))
        .values(bake_id)
        .build()
}

/// A volume and its snapshot, made directly through the SDK (as a bake's upload would).
async fn make_snapshot(
    ec2: &aws_sdk_ec2::Client,
    size: i32,
    tags: &BTreeMap<String, String>,
) -> String {
    let v = ec2
        .create_volume()
        .availability_zone(AZ)
        .size(size)
        .send()
        .await
        .unwrap();
    let vid = v.volume_id().unwrap().to_string();
    let mut req = ec2.create_snapshot().volume_id(&vid);
    if !tags.is_empty() {
        req = req.tag_specifications(ami::tag_spec_for(ResourceType::Snapshot, tags));
    }
    let s = req.send().await.unwrap();
    ec2.delete_volume().volume_id(&vid).send().await.unwrap();
    s.snapshot_id().unwrap().to_string()
}

/// A base AMI like `bakery base build` publishes: root /dev/xvda from a snapshot, a data volume,
/// an instance store mapping, arm64, UEFI, ENA, tagged with its version.
async fn make_base(ec2: &aws_sdk_ec2::Client, name: &str, version: &str) -> (String, String) {
    let root = make_snapshot(ec2, 8, &BTreeMap::new()).await;
    let data = make_snapshot(ec2, 4, &BTreeMap::new()).await;
    let out = ec2
        .register_image()
        .name(name)
        .architecture(ArchitectureValues::Arm64)
        .virtualization_type("hvm")
        .ena_support(true)
        .boot_mode(BootModeValues::Uefi)
        .root_device_name("/dev/xvda")
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(&root)
                        .volume_size(8)
                        .build(),
                )
                .build(),
        )
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/sdb")
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(&data)
                        .volume_size(4)
                        .build(),
                )
                .build(),
        )
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/sdc")
                .virtual_name("ephemeral0")
                .build(),
        )
        .tag_specifications(ami::tag_spec_for(
            ResourceType::Image,
            &BTreeMap::from([("base_ami_version".to_string(), version.to_string())]),
        ))
        .send()
        .await
        .unwrap();
    (out.image_id().unwrap().to_string(), root)
}

async fn image_tags(ec2: &aws_sdk_ec2::Client, id: &str) -> BTreeMap<String, String> {
    let out = ec2.describe_images().image_ids(id).send().await.unwrap();
    ami::tag_map(out.images()[0].tags())
}

async fn snapshot_tags(ec2: &aws_sdk_ec2::Client, id: &str) -> BTreeMap<String, String> {
    let out = ec2
        .describe_snapshots()
        .snapshot_ids(id)
        .send()
        .await
        .unwrap();
    ami::tag_map(out.snapshots()[0].tags())
}

/// Everything in `regions` still tagged with the bake id: images, snapshots, volumes.
async fn tagged_leftovers(ctx: &AwsContext, regions: &[&str], bake_id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for r in regions {
        let ec2 = ctx.ec2(r);
        let imgs = ec2
            .describe_images()
            .owners("self")
            .filters(tag_filter(bake_id))
            .send()
            .await
            .unwrap();
        left.extend(
            imgs.images()
                .iter()
                .map(|i| format!("{r} {}", i.image_id().unwrap())),
        );
        let snaps = ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(tag_filter(bake_id))
            .send()
            .await
            .unwrap();
        left.extend(
            snaps
                .snapshots()
                .iter()
                .map(|s| format!("{r} {}", s.snapshot_id().unwrap())),
        );
        let vols = ec2
            .describe_volumes()
            .filters(tag_filter(bake_id))
            .send()
            .await
            .unwrap();
        left.extend(
            vols.volumes()
                .iter()
                .map(|v| format!("{r} {}", v.volume_id().unwrap())),
        );
    }
    left
}

fn is_input_error(e: &anyhow::Error) -> bool {
    bakery::error::exit_code(e) == bakery::error::EXIT_INPUT
}

// --- base AMIs ----------------------------------------------------------------------------

#[test]
fn resolve_base_by_id_and_newest_by_name_pattern() {
    run(|ctx| async move {
        let ec2 = ctx.ec2(REGION);
        let family = unique("bakery-base-test");
        // The older one sorts last by name, so only the creation date can pick the newer.
        let (old_id, _) = make_base(&ec2, &format!("{family}-z-old"), "1").await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (new_id, new_root) = make_base(&ec2, &format!("{family}-a-new"), "2").await;

        let b = ami::resolve_base(&ctx, REGION, &BaseRef::NamePattern(format!("{family}-*")))
            .await
            .unwrap();
        assert_eq!(b.id, new_id, "the newest image of the family wins");
        assert_eq!(b.version.as_deref(), Some("2"));
        assert_eq!(b.root_snapshot_id, new_root);

        let b = ami::resolve_base(&ctx, REGION, &BaseRef::Id(old_id.clone()))
            .await
            .unwrap();
        assert_eq!(b.id, old_id);
        assert_eq!(b.name, format!("{family}-z-old"));
        assert_eq!(b.root_device_name, "/dev/xvda");
        assert_eq!(b.root_volume_size_gib, 8);
        assert_eq!(b.architecture, "arm64");
        assert_eq!(b.boot_mode.as_deref(), Some("uefi"));
        assert!(b.ena_support);
        assert_eq!(b.virtualization_type, "hvm");
        assert_eq!(
            b.block_device_mappings.len(),
            3,
            "{:?}",
            b.block_device_mappings
        );
        assert_eq!(b.region, REGION);

        let e = ami::resolve_base(
            &ctx,
            REGION,
            &BaseRef::NamePattern(format!("{family}-nothing-*")),
        )
        .await
        .unwrap_err();
        assert!(is_input_error(&e), "{e:#}");
        assert!(
            e.to_string().contains(&format!("{family}-nothing-*")),
            "{e}"
        );

        let e = ami::resolve_base(&ctx, REGION, &BaseRef::Id("ami-0123456789abcdef0".into()))
            .await
            .unwrap_err();
        assert!(is_input_error(&e), "{e:#}");
        assert!(
            e.to_string().contains(
                "base AMI ami-0123456789abcdef0 not found in us-east-1; check the id and region"
            ),
            "{e}"
        );

        let list = ami::list_images(&ctx, REGION, &format!("{family}-*"))
            .await
            .unwrap();
        assert_eq!(
            list.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            [new_id.as_str(), old_id.as_str()]
        );
        assert_eq!(
            list[0].tags.get("base_ami_version").map(String::as_str),
            Some("2")
        );
        assert_eq!(list[0].state, "available");
    });
}

// --- register -----------------------------------------------------------------------------

#[test]
fn register_copies_the_base_mappings_and_a_rerun_reuses() {
    run(|ctx| async move {
        let ec2 = ctx.ec2(REGION);
        let (base_id, _) = make_base(&ec2, &unique("bakery-base-reg"), "7").await;
        let base = ami::resolve_base(&ctx, REGION, &BaseRef::Id(base_id))
            .await
            .unwrap();
        let ledger = Ledger::new(&unique("bake-reg"));
        let ours = make_snapshot(
            &ec2,
            8,
            &BTreeMap::from([(BAKE_ID_TAG.to_string(), ledger.bake_id.clone())]),
        )
        .await;
        ledger.record(Resource::Snapshot {
            region: REGION.into(),
            id: ours.clone(),
        });
        let spec = RegisterSpec {
            name: unique("app-1.0-1-arm64"),
            description: "test bake".into(),
            root_snapshot_id: ours.clone(),
            volume_size_gib: 12,
            base: base.clone(),
            tags: BTreeMap::from([("appversion".to_string(), "app-1.0-1".to_string())]),
        };
        let r = ami::register_with(&ctx, REGION, &spec, &ledger, &fast_wait())
            .await
            .unwrap();
        assert!(!r.reused);
        assert_eq!(r.snapshot_id, ours);
        assert!(ledger.entries().contains(&Resource::Image {
            region: REGION.into(),
            id: r.image_id.clone()
        }));

        let img = ec2
            .describe_images()
            .image_ids(&r.image_id)
            .send()
            .await
            .unwrap()
            .images()[0]
            .clone();
        assert_eq!(img.state().unwrap().as_str(), "available");
        assert_eq!(img.root_device_name(), Some("/dev/xvda"));
        assert_eq!(img.architecture(), Some(&ArchitectureValues::Arm64));
        assert_eq!(img.boot_mode(), Some(&BootModeValues::Uefi));
        assert_eq!(img.ena_support(), Some(true));
        let maps = img.block_device_mappings();
        let root = maps
            .iter()
            .find(|m| m.device_name() == Some("/dev/xvda"))
            .unwrap()
            .ebs()
            .unwrap();
        assert_eq!(
            root.snapshot_id(),
            Some(ours.as_str()),
            "the root is our snapshot"
        );
        assert_eq!(root.volume_size(), Some(12));
        assert_eq!(root.volume_type().map(|t| t.as_str()), Some("gp3"));
        assert_eq!(root.delete_on_termination(), Some(true));
        let data = maps
            .iter()
            .find(|m| m.device_name() == Some("/dev/sdb"))
            .unwrap()
            .ebs()
            .unwrap();
        assert_eq!(
            data.snapshot_id(),
            base.block_device_mappings[1].snapshot_id.as_deref(),
            "other mappings are the base's"
        );
        assert!(
            maps.iter()
                .any(|m| m.device_name() == Some("/dev/sdc")
                    && m.virtual_name() == Some("ephemeral0"))
        );

        for tags in [
            image_tags(&ec2, &r.image_id).await,
            snapshot_tags(&ec2, &ours).await,
        ] {
            assert_eq!(tags.get(BAKE_ID_TAG), Some(&ledger.bake_id), "{tags:?}");
            assert_eq!(
                tags.get("appversion").map(String::as_str),
                Some("app-1.0-1"),
                "{tags:?}"
            );
        }

        // A rerun (another ledger) finds the image by name and reuses it.
        let rerun = Ledger::new(&unique("bake-reg-rerun"));
        let again = ami::register_with(&ctx, REGION, &spec, &rerun, &fast_wait())
            .await
            .unwrap();
        assert!(again.reused);
        assert_eq!(again.image_id, r.image_id);
        assert_eq!(again.snapshot_id, ours);
        assert!(
            rerun.entries().is_empty(),
            "a reused image is not this run's to delete"
        );
        let found = ami::find_image_by_name(&ec2, &spec.name)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                found.0.as_str(),
                found.1.first().map(String::as_str),
                found.2.as_str()
            ),
            (r.image_id.as_str(), Some(ours.as_str()), "available")
        );

        assert!(ledger.rollback(&ctx).await.is_empty());
        assert_eq!(
            tagged_leftovers(&ctx, &[REGION], &ledger.bake_id).await,
            Vec::<String>::new()
        );
        assert!(ami::find_image_by_name(&ec2, &spec.name)
            .await
            .unwrap()
            .is_none());
    });
}

// --- copy, share, rollback ----------------------------------------------------------------

#[test]
fn copy_to_three_regions_tags_shares_and_rolls_back() {
    run(|ctx| async move {
        let ec2 = ctx.ec2(REGION);
        let (base_id, _) = make_base(&ec2, &unique("bakery-base-copy"), "3").await;
        let base = ami::resolve_base(&ctx, REGION, &BaseRef::Id(base_id))
            .await
            .unwrap();
        let ledger = Ledger::new(&unique("bake-copy"));
        let ours = make_snapshot(
            &ec2,
            8,
            &BTreeMap::from([(BAKE_ID_TAG.to_string(), ledger.bake_id.clone())]),
        )
        .await;
        ledger.record(Resource::Snapshot {
            region: REGION.into(),
            id: ours.clone(),
        });
        let name = unique("app-2.0-1-arm64");
        let tags = BTreeMap::from([
            ("appversion".to_string(), "app-2.0-1".to_string()),
            ("creator".to_string(), "test".to_string()),
        ]);
        let spec = RegisterSpec {
            name: name.clone(),
            description: "copy test".into(),
            root_snapshot_id: ours.clone(),
            volume_size_gib: 8,
            base,
            tags: tags.clone(),
        };
        let r = ami::register_with(&ctx, REGION, &spec, &ledger, &fast_wait())
            .await
            .unwrap();
        let share_with = vec!["111122223333".to_string(), "444455556666".to_string()];
        let targets = ami::ShareTarget::parse_all(&share_with).unwrap();
        ami::share(
            &ec2,
            &r.image_id,
            std::slice::from_ref(&r.snapshot_id),
            &targets,
        )
        .await
        .unwrap();
        let copy_opts = ami::CopyOptions::sharing(&share_with);

        let regions: Vec<String> = COPY_REGIONS.iter().map(|s| s.to_string()).collect();
        let t = Instant::now();
        let copies = ami::copy_to_regions_with(
            &ctx,
            REGION,
            &r,
            &name,
            "copy test",
            &regions,
            &tags,
            &copy_opts,
            &ledger,
            4,
            &fast_wait(),
        )
        .await
        .unwrap();
        eprintln!(
            "copied to {} regions in {:.2}s",
            copies.len(),
            t.elapsed().as_secs_f64()
        );
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(2 * COPY_DELAY_MS),
            "3 copies of {COPY_DELAY_MS} ms each took {took:?}: they did not run concurrently"
        );
        assert_eq!(
            copies.iter().map(|c| c.region.as_str()).collect::<Vec<_>>(),
            COPY_REGIONS
        );

        let mut all_regions = vec![REGION];
        all_regions.extend(COPY_REGIONS);
        for (region, image_id) in std::iter::once((REGION, r.image_id.clone())).chain(
            copies
                .iter()
                .map(|c| (c.region.as_str(), c.image_id.clone())),
        ) {
            let ec2 = ctx.ec2(region);
            let img = ec2
                .describe_images()
                .image_ids(&image_id)
                .send()
                .await
                .unwrap()
                .images()[0]
                .clone();
            assert_eq!(img.name(), Some(name.as_str()), "{region}");
            let t = ami::tag_map(img.tags());
            assert_eq!(
                t.get(BAKE_ID_TAG),
                Some(&ledger.bake_id),
                "{region} image tags {t:?}"
            );
            assert_eq!(
                t.get("appversion").map(String::as_str),
                Some("app-2.0-1"),
                "{region} image tags {t:?}"
            );
            let perms = ec2
                .describe_image_attribute()
                .image_id(&image_id)
                .attribute(ImageAttributeName::LaunchPermission)
                .send()
                .await
                .unwrap();
            let mut users: Vec<&str> = perms
                .launch_permissions()
                .iter()
                .filter_map(|p| p.user_id())
                .collect();
            users.sort();
            assert_eq!(
                users,
                ["111122223333", "444455556666"],
                "{region} launch permissions"
            );
        }
        for c in &copies {
            assert!(!c.reused);
            assert!(c.snapshot_id.starts_with("snap-"), "{c:?}");
            assert_ne!(c.snapshot_id, ours, "a copy has its own snapshot");
            let ec2 = ctx.ec2(&c.region);
            let t = snapshot_tags(&ec2, &c.snapshot_id).await;
            assert_eq!(
                t.get(BAKE_ID_TAG),
                Some(&ledger.bake_id),
                "{} snapshot tags {t:?}",
                c.region
            );
            assert_eq!(
                t.get("creator").map(String::as_str),
                Some("test"),
                "{} snapshot tags {t:?}",
                c.region
            );
            assert!(ledger.entries().contains(&Resource::Snapshot {
                region: c.region.clone(),
                id: c.snapshot_id.clone()
            }));
        }

        // A rerun reuses every regional copy and records nothing.
        let rerun = Ledger::new(&unique("bake-copy-rerun"));
        let again = ami::copy_to_regions_with(
            &ctx,
            REGION,
            &r,
            &name,
            "copy test",
            &regions,
            &tags,
            &copy_opts,
            &rerun,
            4,
            &fast_wait(),
        )
        .await
        .unwrap();
        assert!(again.iter().all(|c| c.reused), "{again:?}");
        assert_eq!(
            again.iter().map(|c| &c.image_id).collect::<Vec<_>>(),
            copies.iter().map(|c| &c.image_id).collect::<Vec<_>>()
        );
        assert!(rerun.entries().is_empty());
        assert_eq!(
            image_tags(&ctx.ec2(COPY_REGIONS[0]), &copies[0].image_id)
                .await
                .get(BAKE_ID_TAG),
            Some(&ledger.bake_id),
            "a reused copy keeps its bake id"
        );

        // Rollback removes every image and snapshot of the bake in every region.
        let failures = ledger.rollback(&ctx).await;
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(
            tagged_leftovers(&ctx, &all_regions, &ledger.bake_id).await,
            Vec::<String>::new()
        );
    });
}

#[test]
fn a_failed_region_copy_names_the_region_and_the_rest_is_recorded() {
    run(|ctx| async move {
        let ec2 = ctx.ec2(REGION);
        let (base_id, _) = make_base(&ec2, &unique("bakery-base-fail"), "1").await;
        let base = ami::resolve_base(&ctx, REGION, &BaseRef::Id(base_id))
            .await
            .unwrap();
        let ledger = Ledger::new(&unique("bake-fail"));
        let ours = make_snapshot(
            &ec2,
            8,
            &BTreeMap::from([(BAKE_ID_TAG.to_string(), ledger.bake_id.clone())]),
        )
        .await;
        ledger.record(Resource::Snapshot {
            region: REGION.into(),
            id: ours.clone(),
        });
        let name = unique("app-3.0-1-arm64");
        let spec = RegisterSpec {
            name: name.clone(),
            description: "d".into(),
            root_snapshot_id: ours,
            volume_size_gib: 8,
            base,
            tags: BTreeMap::new(),
        };
        let r = ami::register_with(&ctx, REGION, &spec, &ledger, &fast_wait())
            .await
            .unwrap();
        // The copy to eu-west-1 fails: the source image id does not exist there as a source.
        let bogus = ami::Registered {
            image_id: "ami-0000000000badbad0".into(),
            ..r.clone()
        };
        let e = ami::copy_to_regions_with(
            &ctx,
            REGION,
            &bogus,
            &name,
            "d",
            &["eu-west-1".to_string()],
            &BTreeMap::new(),
            &ami::CopyOptions::default(),
            &ledger,
            4,
            &fast_wait(),
        )
        .await
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("to eu-west-1"), "{msg}");
        assert!(msg.contains("ami-0000000000badbad0"), "{msg}");
        // The good copy in another call still lands in the ledger; rollback clears it all.
        ami::copy_to_regions_with(
            &ctx,
            REGION,
            &r,
            &name,
            "d",
            &["us-west-2".to_string()],
            &BTreeMap::new(),
            &ami::CopyOptions::default(),
            &ledger,
            4,
            &fast_wait(),
        )
        .await
        .unwrap();
        assert!(ledger.rollback(&ctx).await.is_empty());
        assert_eq!(
            tagged_leftovers(&ctx, &[REGION, "us-west-2", "eu-west-1"], &ledger.bake_id).await,
            Vec::<String>::new()
        );
    });
}

// --- volume mode --------------------------------------------------------------------------

/// A running instance in the emulator to attach to, standing in for the bake host.
async fn bake_host(ctx: &AwsContext) -> (Ec2Host, String) {
    let ec2 = ctx.ec2(REGION);
    let (base_id, _) = make_base(&ec2, &unique("bakery-base-host"), "1").await;
    let out = ec2
        .run_instances()
        .image_id(&base_id)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .placement(
            aws_sdk_ec2::types::Placement::builder()
                .availability_zone(AZ)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let i = &out.instances()[0];
    let host = Ec2Host {
        instance_id: i.instance_id().unwrap().into(),
        availability_zone: i.placement().unwrap().availability_zone().unwrap().into(),
        region: REGION.into(),
    };
    (host, base_id)
}

#[test]
fn create_and_attach_runs_the_api_sequence_and_fails_cleanly_without_a_device() {
    run(|ctx| async move {
        let ec2 = ctx.ec2(REGION);
        let (host, base_id) = bake_host(&ctx).await;
        let base = ami::resolve_base(&ctx, REGION, &BaseRef::Id(base_id))
            .await
            .unwrap();
        let ledger = Ledger::new(&unique("bake-vol"));
        let fake = tempfile::tempdir().unwrap(); // an empty /sys and /dev: the device never shows
        std::fs::create_dir_all(fake.path().join("sys")).unwrap();
        std::fs::create_dir_all(fake.path().join("dev")).unwrap();
        let locks = tempfile::tempdir().unwrap();
        // Another bake on this host holds /dev/sdf.
        let held = bakery::sys::lock::HostLock::try_acquire(locks.path(), "device-sdf")
            .unwrap()
            .unwrap();
        let opts = AttachOptions {
            device_wait: Duration::from_millis(800),
            poll: Duration::from_millis(100),
            sys_root: fake.path().join("sys"),
            dev_root: fake.path().join("dev"),
            ..Default::default()
        };

        let e = volume::create_and_attach_with(
            &ctx,
            &host,
            &base.root_snapshot_id,
            10,
            &ledger,
            locks.path(),
            &opts,
        )
        .await
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("no block device for it appeared"), "{msg}");
        assert!(
            msg.contains("as /dev/sdg"),
            "the held /dev/sdf is skipped: {msg}"
        );

        let entries = ledger.entries();
        assert_eq!(entries.len(), 2, "{entries:?}");
        let Resource::Volume { id: vol, .. } = &entries[0] else {
            panic!("{entries:?}")
        };
        assert_eq!(
            entries[1],
            Resource::Attachment {
                region: REGION.into(),
                volume_id: vol.clone(),
                instance_id: host.instance_id.clone()
            }
        );
        let v = ec2
            .describe_volumes()
            .volume_ids(vol)
            .send()
            .await
            .unwrap()
            .volumes()[0]
            .clone();
        assert_eq!(v.size(), Some(10));
        assert_eq!(v.volume_type().map(|t| t.as_str()), Some("gp3"));
        assert_eq!(v.availability_zone(), Some(host.availability_zone.as_str()));
        assert_eq!(v.snapshot_id(), Some(base.root_snapshot_id.as_str()));
        assert_eq!(
            ami::tag_map(v.tags()).get(BAKE_ID_TAG),
            Some(&ledger.bake_id)
        );
        assert_eq!(v.attachments()[0].device(), Some("/dev/sdg"));
        assert_eq!(
            v.attachments()[0].instance_id(),
            Some(host.instance_id.as_str())
        );
        // The lock for /dev/sdg was released with the failed attempt.
        assert!(
            bakery::sys::lock::HostLock::try_acquire(locks.path(), "device-sdg")
                .unwrap()
                .is_some()
        );
        drop(held);

        let failures = ledger.rollback(&ctx).await;
        assert!(failures.is_empty(), "rollback failed: {failures:?}");
        let left = tagged_leftovers(&ctx, &[REGION], &ledger.bake_id).await;
        let left: Vec<String> = {
            // moto may report a deleted volume for a moment; only live ones count.
            let mut live = Vec::new();
            for l in left {
                let id = l.split(' ').nth(1).unwrap();
                if let Ok(out) = ec2.describe_volumes().volume_ids(id).send().await {
                    if out
                        .volumes()
                        .iter()
                        .any(|v| v.state().map(|s| s.as_str()) != Some("deleted"))
                    {
                        live.push(l);
                    }
                }
            }
            live
        };
        assert_eq!(left, Vec::<String>::new());
        ec2.terminate_instances()
            .instance_ids(&host.instance_id)
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn attached_volume_is_found_on_a_fake_nitro_tree_then_detached_deleted_and_snapshotted() {
    run(|ctx| async move {
        let ec2 = ctx.ec2(REGION);
        let (host, base_id) = bake_host(&ctx).await;
        let base = ami::resolve_base(&ctx, REGION, &BaseRef::Id(base_id))
            .await
            .unwrap();
        let ledger = Ledger::new(&unique("bake-nitro"));
        let fake = tempfile::tempdir().unwrap();
        let sys = fake.path().join("sys");
        let dev = fake.path().join("dev");
        std::fs::create_dir_all(sys.join("class/nvme")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        // Play the kernel: once EC2 reports our volume attached, an NVMe controller with its serial appears.
        let kernel = {
            let (ec2, sys, dev, bake_id) = (
                ec2.clone(),
                sys.clone(),
                dev.clone(),
                ledger.bake_id.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..200 {
                    let out = ec2
                        .describe_volumes()
                        .filters(tag_filter(&bake_id))
                        .send()
                        .await
                        .unwrap();
                    if let Some(v) = out.volumes().iter().find(|v| !v.attachments().is_empty()) {
                        let ctrl = sys.join("class/nvme/nvme1");
                        std::fs::create_dir_all(&ctrl).unwrap();
                        std::fs::write(
                            ctrl.join("serial"),
                            v.volume_id().unwrap().replace('-', ""),
                        )
                        .unwrap();
                        std::fs::write(
                            ctrl.join("model"),
                            "Amazon Elastic Block Store              ",
                        )
                        .unwrap();
                        std::fs::write(dev.join("nvme1n1"), "").unwrap();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let locks = tempfile::tempdir().unwrap();
        let opts = AttachOptions {
            device_wait: Duration::from_secs(20),
            poll: Duration::from_millis(100),
            sys_root: sys.clone(),
            dev_root: dev.clone(),
            ..Default::default()
        };
        let attached: AttachedVolume = volume::create_and_attach_with(
            &ctx,
            &host,
            &base.root_snapshot_id,
            8,
            &ledger,
            locks.path(),
            &opts,
        )
        .await
        .unwrap();
        kernel.await.unwrap();
        assert_eq!(attached.device, dev.join("nvme1n1"));
        assert_eq!(attached.device_name, "/dev/sdf");
        assert!(
            bakery::sys::lock::HostLock::try_acquire(locks.path(), "device-sdf")
                .unwrap()
                .is_none(),
            "the device lock is held while attached"
        );

        // Volume mode's tail: detach, snapshot, delete.
        let volume_id = attached.volume_id.clone();
        volume::detach(&ctx, &host, &attached, &ledger)
            .await
            .unwrap();
        let tags = BTreeMap::from([("appversion".to_string(), "app-1-1".to_string())]);
        let snap = volume::snapshot_volume(&ctx, REGION, &volume_id, "baked", &tags, &ledger)
            .await
            .unwrap();
        volume::delete(&ctx, REGION, &volume_id, &ledger)
            .await
            .unwrap();
        drop(attached);
        assert!(
            bakery::sys::lock::HostLock::try_acquire(locks.path(), "device-sdf")
                .unwrap()
                .is_some()
        );
        assert_eq!(
            ledger.entries(),
            vec![Resource::Snapshot {
                region: REGION.into(),
                id: snap.clone()
            }]
        );
        let s = ec2
            .describe_snapshots()
            .snapshot_ids(&snap)
            .send()
            .await
            .unwrap()
            .snapshots()[0]
            .clone();
        assert_eq!(s.state().map(|s| s.as_str()), Some("completed"));
        let t = ami::tag_map(s.tags());
        assert_eq!(t.get(BAKE_ID_TAG), Some(&ledger.bake_id));
        assert_eq!(t.get("appversion").map(String::as_str), Some("app-1-1"));

        assert!(ledger.rollback(&ctx).await.is_empty());
        ec2.terminate_instances()
            .instance_ids(&host.instance_id)
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn detach_and_delete_forgets_both() {
    run(|ctx| async move {
        let (host, base_id) = bake_host(&ctx).await;
        let base = ami::resolve_base(&ctx, REGION, &BaseRef::Id(base_id))
            .await
            .unwrap();
        let ledger = Ledger::new(&unique("bake-dd"));
        let fake = tempfile::tempdir().unwrap();
        let (sys, dev) = (fake.path().join("sys"), fake.path().join("dev"));
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let locks = tempfile::tempdir().unwrap();
        let opts = AttachOptions {
            device_wait: Duration::from_millis(300),
            poll: Duration::from_millis(100),
            sys_root: sys,
            dev_root: dev.clone(),
            ..Default::default()
        };
        volume::create_and_attach_with(
            &ctx,
            &host,
            &base.root_snapshot_id,
            8,
            &ledger,
            locks.path(),
            &opts,
        )
        .await
        .unwrap_err();
        let Resource::Volume { id: volume_id, .. } = ledger.entries()[0].clone() else {
            panic!()
        };
        let v = AttachedVolume {
            volume_id: volume_id.clone(),
            device: dev.join("xvdf"),
            lock: bakery::sys::lock::HostLock::try_acquire(locks.path(), "device-sdf")
                .unwrap()
                .unwrap(),
            device_name: "/dev/sdf".into(),
            region: REGION.into(),
            instance_id: host.instance_id.clone(),
        };
        volume::detach_and_delete(&ctx, &v, &ledger).await.unwrap();
        assert!(ledger.entries().is_empty(), "{:?}", ledger.entries());
        let ec2 = ctx.ec2(REGION);
        let gone = match ec2.describe_volumes().volume_ids(&volume_id).send().await {
            Err(_) => true,
            Ok(out) => out
                .volumes()
                .iter()
                .all(|v| v.state().map(|s| s.as_str()) == Some("deleted")),
        };
        assert!(gone, "{volume_id} still exists");
        ec2.terminate_instances()
            .instance_ids(&host.instance_id)
            .send()
            .await
            .unwrap();
    });
}
