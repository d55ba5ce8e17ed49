//! AMI options (issue 15) end to end against the local AWS emulator, checked through the SDK
//! after each bake: launch attributes inherited from a base registered with IMDSv2, NitroTPM,
//! UEFI and SR-IOV, then overridden by flags; deprecation and deregistration protection in
//! every region (and a rollback that has to lift the protection); snapshots shared with the
//! accounts the AMI is shared with; every regional snapshot encrypted with its region's KMS
//! key, the upload still incremental; EBS encryption by default; an encrypted snapshot without
//! a parent written whole.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, Image,
    ImageAttributeName, ImdsSupportValues, SnapshotAttributeName, TpmSupportValues,
};
use bakery::aws::client::AwsContext;
use support::emulator::Emulator;
use support::*;

const SHARE: &str = "210987654321";
const ORG: &str = "arn:aws:organizations::123456789012:organization/o-abcde12345";

/// A private emulator, the SDK environment of this process pointed at it.
fn emulator() -> Emulator {
    let emu = Emulator::start();
    for (k, v) in emu.env() {
        // Set before any client of this test reads them (one test per process with nextest).
        std::env::set_var(k, v);
    }
    emu
}

fn bake(t: &TestDir, emu: &Emulator, args: &[&str]) -> Run {
    let mut c: Command = t.bakery();
    emu.apply(&mut c);
    c.arg("bake").args(args);
    run(&mut c)
}

fn app(t: &TestDir, version: &str) -> String {
    build_deb(
        t.dir.path(),
        &Deb {
            name: "attr-app",
            version,
            files: &[("/opt/attr-app/VERSION", version)],
            ..Default::default()
        },
    )
    .display()
    .to_string()
}

/// Upload `raw` as a snapshot in `region` (EBS direct, as a base publish does).
fn upload(rt: &tokio::runtime::Runtime, ctx: &AwsContext, region: &str, raw: &Path) -> String {
    let ledger = bakery::aws::ledger::Ledger::new("bk-000000000000");
    rt.block_on(async {
        let up = bakery::aws::ebs::upload_snapshot(
            &ctx.ebs(region),
            raw,
            None,
            "bakery test base",
            &BTreeMap::new(),
            &ledger,
            region,
            64,
        )
        .await
        .unwrap();
        ledger.mark_complete(ctx).await.unwrap();
        ledger.commit();
        up.snapshot_id
    })
}

/// A base AMI as a vendor publishes one today (AL2023-like): IMDSv2 required, NitroTPM, UEFI,
/// SR-IOV and ENA, root = the test base disk, plus (with `data`) a data volume at /dev/sdb.
fn vendor_base(
    rt: &tokio::runtime::Runtime,
    ctx: &AwsContext,
    region: &str,
    root: &str,
    data: Option<&str>,
) -> String {
    let ec2 = ctx.ec2(region);
    let mut req = ec2
        .register_image()
        .name(format!(
            "vendor-base-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
        .architecture(ArchitectureValues::X8664)
        .virtualization_type("hvm")
        .root_device_name("/dev/xvda")
        .ena_support(true)
        .boot_mode(BootModeValues::Uefi)
        .imds_support(ImdsSupportValues::V20)
        .tpm_support(TpmSupportValues::V20)
        .sriov_net_support("simple")
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(EbsBlockDevice::builder().snapshot_id(root).build())
                .build(),
        );
    if let Some(d) = data {
        req = req.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/sdb")
                .ebs(EbsBlockDevice::builder().snapshot_id(d).build())
                .build(),
        );
    }
    rt.block_on(req.send())
        .unwrap()
        .image_id()
        .unwrap()
        .to_string()
}

fn image(rt: &tokio::runtime::Runtime, ctx: &AwsContext, region: &str, id: &str) -> Image {
    rt.block_on(ctx.ec2(region).describe_images().image_ids(id).send())
        .unwrap()
        .images()[0]
        .clone()
}

fn snapshots_of(img: &Image) -> Vec<String> {
    img.block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string))
        .collect()
}

/// (encrypted, KMS key ARN) of a snapshot.
fn encryption_of(
    rt: &tokio::runtime::Runtime,
    ctx: &AwsContext,
    region: &str,
    snap: &str,
) -> (bool, Option<String>) {
    let out = rt
        .block_on(
            ctx.ec2(region)
                .describe_snapshots()
                .snapshot_ids(snap)
                .send(),
        )
        .unwrap();
    let s = &out.snapshots()[0];
    (
        s.encrypted().unwrap_or(false),
        s.kms_key_id().map(str::to_string),
    )
}

fn can_create_volume(
    rt: &tokio::runtime::Runtime,
    ctx: &AwsContext,
    region: &str,
    snap: &str,
) -> Vec<String> {
    let out = rt
        .block_on(
            ctx.ec2(region)
                .describe_snapshot_attribute()
                .snapshot_id(snap)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .send(),
        )
        .unwrap();
    out.create_volume_permissions()
        .iter()
        .filter_map(|p| p.user_id().map(str::to_string))
        .collect()
}

fn launch_permissions(
    rt: &tokio::runtime::Runtime,
    ctx: &AwsContext,
    region: &str,
    id: &str,
) -> Vec<String> {
    let out = rt
        .block_on(
            ctx.ec2(region)
                .describe_image_attribute()
                .image_id(id)
                .attribute(ImageAttributeName::LaunchPermission)
                .send(),
        )
        .unwrap();
    out.launch_permissions()
        .iter()
        .filter_map(|p| {
            p.user_id()
                .or(p.organization_arn())
                .or(p.organizational_unit_arn())
                .map(str::to_string)
        })
        .collect()
}

/// Images and snapshots still tagged with `bake_id` in `regions`.
fn tagged(
    rt: &tokio::runtime::Runtime,
    ctx: &AwsContext,
    regions: &[&str],
    bake_id: &str,
) -> Vec<String> {
    let f = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{}", bakery::aws::BAKE_ID_TAG))
        .values(bake_id)
        .build();
    let mut left = Vec::new();
    for r in regions {
        let ec2 = ctx.ec2(r);
        let imgs = rt
            .block_on(
                ec2.describe_images()
                    .owners("self")
                    .filters(f.clone())
                    .send(),
            )
            .unwrap();
        left.extend(
            imgs.images()
                .iter()
                .map(|i| format!("{r}:{}", i.image_id().unwrap_or_default())),
        );
        let snaps = rt
            .block_on(
                ec2.describe_snapshots()
                    .owner_ids("self")
                    .filters(f.clone())
                    .send(),
            )
            .unwrap();
        left.extend(
            snaps
                .snapshots()
                .iter()
                .map(|s| format!("{r}:{}", s.snapshot_id().unwrap_or_default())),
        );
    }
    left
}

#[test]
fn attributes_are_inherited_from_the_base_overridden_by_flags_and_snapshots_are_shared() {
    let emu = emulator();
    let t = TestDir::new("amiattrs");
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let root = upload(&rt, &ctx, "us-east-1", &base_image());
    let base = vendor_base(&rt, &ctx, "us-east-1", &root, None);
    let regions = ["us-east-1", "us-west-2"];

    // 1. Nothing said: every attribute of the base, in every region; shared with an account,
    //    the snapshots too.
    let pkg = app(&t, "1.0-1");
    let r = bake(
        &t,
        &emu,
        &[
            "--base",
            &base,
            "--package",
            &pkg,
            "--output",
            "ami",
            "--region",
            "us-east-1",
            "--copy-to",
            "us-west-2",
            "--mode",
            "direct",
            "--share-with",
            SHARE,
        ],
    );
    r.assert_ok();
    let m = r.json();
    let amis = m["amis"].as_array().unwrap();
    assert_eq!(amis.len(), 2);
    for a in amis {
        let region = a["region"].as_str().unwrap();
        let id = a["image_id"].as_str().unwrap();
        let img = image(&rt, &ctx, region, id);
        assert_eq!(
            img.imds_support().map(|v| v.as_str()),
            Some("v2.0"),
            "{region}: the base's ImdsSupport was dropped"
        );
        assert_eq!(
            img.tpm_support().map(|v| v.as_str()),
            Some("v2.0"),
            "{region}"
        );
        assert_eq!(
            img.boot_mode().map(|v| v.as_str()),
            Some("uefi"),
            "{region}"
        );
        assert_eq!(img.sriov_net_support(), Some("simple"), "{region}");
        assert_eq!(img.ena_support(), Some(true), "{region}");
        // The manifest records what AWS reports.
        let attrs = &a["attributes"];
        assert_eq!(attrs["imds_support"], "v2.0", "{region}: {attrs}");
        assert_eq!(attrs["tpm_support"], "v2.0");
        assert_eq!(attrs["boot_mode"], "uefi");
        assert_eq!(a["shared_with"][0], SHARE);
        // Shared: the account can launch it and copy it (its snapshots too).
        assert!(launch_permissions(&rt, &ctx, region, id).contains(&SHARE.to_string()));
        for snap in snapshots_of(&img) {
            assert!(
                can_create_volume(&rt, &ctx, region, &snap).contains(&SHARE.to_string()),
                "{region}: AMI {id} is shared with {SHARE} but its snapshot {snap} is not"
            );
        }
    }

    // 2. A boot mode the disk cannot boot is refused, before anything is made. The test base
    //    is hybrid (it boots both ways), so this uses a BIOS-only copy of it: its ESP retyped as
    //    plain Linux data, like a base built before bakery made an ESP.
    let bios_only = t.path("bios-only.raw");
    let cp = Command::new("cp")
        .arg("--sparse=always")
        .arg(base_image())
        .arg(&bios_only)
        .status()
        .unwrap();
    assert!(cp.success());
    let esp = bakery::disk::layout::read_layout(&bios_only)
        .unwrap()
        .partitions
        .iter()
        .find(|p| p.type_id == bakery::disk::layout::GPT_ESP)
        .expect("the test base has an ESP")
        .number;
    let retype = Command::new("sgdisk")
        .arg("-t")
        .arg(format!("{esp}:8300"))
        .arg(&bios_only)
        .output()
        .unwrap();
    assert!(retype.status.success(), "{retype:?}");
    let bios_root = upload(&rt, &ctx, "us-east-1", &bios_only);
    let bios_base = vendor_base(&rt, &ctx, "us-east-1", &bios_root, None);
    let pkg = app(&t, "1.0-2");
    let r = bake(
        &t,
        &emu,
        &[
            "--base",
            &bios_base,
            "--package",
            &pkg,
            "--output",
            "ami",
            "--region",
            "us-east-1",
            "--mode",
            "direct",
            "--boot-mode",
            "uefi",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.error_line()
            .contains("--boot-mode uefi: the disk has no EFI System Partition"),
        "{}",
        r.error_line()
    );
    let left = tagged(&rt, &ctx, &regions, &bake_id_in(&r.stderr).unwrap());
    assert!(left.is_empty(), "{left:?}");

    // 3. Flags override one attribute at a time; deprecation and deregistration protection in
    //    every region; shared with an organization.
    let r = bake(
        &t,
        &emu,
        &[
            "--base",
            &base,
            "--package",
            &pkg,
            "--output",
            "ami",
            "--region",
            "us-east-1",
            "--copy-to",
            "us-west-2",
            "--mode",
            "direct",
            "--boot-mode",
            "legacy-bios",
            "--imds-support",
            "none",
            "--tpm-support",
            "none",
            "--deprecate-in",
            "30d",
            "--deregistration-protection",
            "--share-with",
            ORG,
        ],
    );
    r.assert_ok();
    let m = r.json();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut protected = Vec::new();
    for a in m["amis"].as_array().unwrap() {
        let region = a["region"].as_str().unwrap();
        let id = a["image_id"].as_str().unwrap();
        let img = image(&rt, &ctx, region, id);
        assert_eq!(
            img.boot_mode().map(|v| v.as_str()),
            Some("legacy-bios"),
            "{region}"
        );
        assert_eq!(img.imds_support(), None, "{region}: --imds-support none");
        assert_eq!(img.tpm_support(), None, "{region}: --tpm-support none");
        assert_eq!(
            img.sriov_net_support(),
            Some("simple"),
            "{region}: inherited"
        );
        let dep = img.deprecation_time().expect("deprecated");
        let dep = aws_smithy_types::DateTime::from_str(
            dep,
            aws_smithy_types::date_time::Format::DateTime,
        )
        .unwrap()
        .secs();
        assert!(
            (dep - (now + 30 * 86400)).abs() < 600,
            "{region}: deprecation {dep} is not 30 days from {now}"
        );
        assert_eq!(
            img.deregistration_protection(),
            Some("enabled-without-cooldown"),
            "{region}"
        );
        assert_eq!(
            a["attributes"]["deregistration_protection"],
            "enabled-without-cooldown"
        );
        assert!(launch_permissions(&rt, &ctx, region, id).contains(&ORG.to_string()));
        protected.push((region.to_string(), id.to_string()));
    }
    // Protected indeed: DeregisterImage is refused.
    let (pr, pid) = &protected[0];
    assert!(rt
        .block_on(ctx.ec2(pr).deregister_image().image_id(pid).send())
        .is_err());

    // 4. A bake that fails after protecting its images (at `mark complete`) still removes
    //    everything it made: the rollback lifts the protection first.
    let pkg = app(&t, "1.0-3");
    let mut c = t.bakery();
    emu.apply(&mut c);
    c.env("BAKERY_FAIL_AT", "protect images").args([
        "bake",
        "--base",
        &base,
        "--package",
        &pkg,
        "--output",
        "ami",
        "--region",
        "us-east-1",
        "--copy-to",
        "us-west-2",
        "--mode",
        "direct",
        "--deregistration-protection",
    ]);
    let failed = run(&mut c);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let id = bake_id_in(&failed.stderr).unwrap();
    let left = tagged(&rt, &ctx, &regions, &id);
    assert!(left.is_empty(), "the failed bake left {left:?}");
    assert_no_leaks(t.dir.path());
}

/// A KMS key in `region`, with `alias` when given; its ARN.
fn kms_key(
    rt: &tokio::runtime::Runtime,
    ctx: &AwsContext,
    region: &str,
    alias: Option<&str>,
) -> String {
    let kms = ctx.kms(region);
    let arn = rt
        .block_on(kms.create_key().description("bakery test").send())
        .unwrap()
        .key_metadata()
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    if let Some(a) = alias {
        rt.block_on(kms.create_alias().alias_name(a).target_key_id(&arn).send())
            .unwrap();
    }
    arn
}

#[test]
fn an_encrypted_bake_into_three_regions_encrypts_each_regions_snapshots_with_its_key() {
    let emu = emulator();
    let t = TestDir::new("amienc");
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let regions = ["us-east-1", "us-west-2", "eu-west-1"];
    let root = upload(&rt, &ctx, "us-east-1", &base_image());
    // A data volume beside the root: every snapshot of the AMI must be encrypted, not the root only.
    let data_file = t.path("data.raw");
    std::fs::write(&data_file, vec![7u8; 1 << 20]).unwrap();
    let data = upload(&rt, &ctx, "us-east-1", &data_file);
    let base = vendor_base(&rt, &ctx, "us-east-1", &root, Some(&data));
    let east = kms_key(&rt, &ctx, "us-east-1", None);
    let west = kms_key(&rt, &ctx, "us-west-2", Some("alias/bakery-west"));
    let eu = kms_key(&rt, &ctx, "eu-west-1", None);
    let want: BTreeMap<&str, &str> = [
        ("us-east-1", east.as_str()),
        ("us-west-2", &west),
        ("eu-west-1", &eu),
    ]
    .into_iter()
    .collect();

    let pkg = app(&t, "2.0-1");
    let r = bake(
        &t,
        &emu,
        &[
            "--base",
            &base,
            "--package",
            &pkg,
            "--output",
            "ami",
            "--region",
            "us-east-1",
            "--copy-to",
            "us-west-2,eu-west-1",
            "--mode",
            "direct",
            "--encrypt",
            "--kms-key-id",
            &format!("us-east-1={east}"),
            "--kms-key-id",
            "us-west-2=alias/bakery-west",
            "--kms-key-id",
            &format!("eu-west-1={eu}"),
        ],
    );
    r.assert_ok();
    let m = r.json();
    let amis = m["amis"].as_array().unwrap();
    assert_eq!(amis.len(), 3);
    for a in amis {
        let region = a["region"].as_str().unwrap();
        let img = image(&rt, &ctx, region, a["image_id"].as_str().unwrap());
        let snaps = snapshots_of(&img);
        assert_eq!(snaps.len(), 2, "{region}: root and data");
        for snap in &snaps {
            assert_eq!(
                encryption_of(&rt, &ctx, region, snap),
                (true, Some(want[region].to_string())),
                "{region}: snapshot {snap} is not encrypted with {region}'s key"
            );
        }
        for s in a["snapshots"].as_array().unwrap() {
            assert_eq!(s["kms_key_id"], want[region], "{region}: manifest {s}");
            assert_eq!(s["encrypted"], true);
        }
    }
    // Still incremental: the child of an encrypted copy of the base, a few blocks uploaded.
    let up = &m["upload"];
    assert_eq!(up["kms_key_id"], east.as_str());
    assert_eq!(up["base_snapshot_id"], root.as_str());
    let parent = up["encrypted_parent_snapshot_id"].as_str().unwrap();
    assert!(
        up["blocks_changed"].as_u64().unwrap() * 20 < up["blocks_total"].as_u64().unwrap(),
        "an encrypted bake uploaded {} of {} blocks",
        up["blocks_changed"],
        up["blocks_total"]
    );
    // What the bake leaves is its product: 3 AMIs, 2 snapshots each (the encrypted copy of
    // the base, only a parent, is gone).
    let left = tagged(&rt, &ctx, &regions, m["bake_id"].as_str().unwrap());
    assert_eq!(left.len(), 9, "{left:?}");
    assert!(!left.iter().any(|l| l.ends_with(parent)), "{left:?}");
    assert!(rt
        .block_on(
            ctx.ec2("us-east-1")
                .describe_snapshots()
                .snapshot_ids(parent)
                .send()
        )
        .map(|o| o.snapshots().is_empty())
        .unwrap_or(true));
    // The encrypted root reads back whole: the app is in it.
    let back = t.path("readback.raw");
    rt.block_on(bakery::aws::ebs::download_snapshot(
        &ctx.ebs("us-east-1"),
        amis[0]["snapshot_id"].as_str().unwrap(),
        &back,
        16,
    ))
    .unwrap();
    {
        let img = Mounted::open(&back);
        assert_eq!(img.read("/opt/attr-app/VERSION"), "2.0-1");
    }
    std::fs::remove_file(&back).unwrap();

    // EBS encryption by default on in us-east-1: a bake that asks for nothing still ends
    // encrypted (with the default key), where a child of the unencrypted base is refused.
    let ec2 = ctx.ec2("us-east-1");
    rt.block_on(ec2.enable_ebs_encryption_by_default().send())
        .unwrap();
    let default_key = rt
        .block_on(ec2.get_ebs_default_kms_key_id().send())
        .unwrap()
        .kms_key_id()
        .unwrap()
        .to_string();
    let pkg = app(&t, "2.0-2");
    let r = bake(
        &t,
        &emu,
        &[
            "--base",
            &base,
            "--package",
            &pkg,
            "--output",
            "ami",
            "--region",
            "us-east-1",
            "--mode",
            "direct",
        ],
    );
    r.assert_ok();
    let m = r.json();
    let root_snap = m["amis"][0]["snapshot_id"].as_str().unwrap();
    assert_eq!(
        encryption_of(&rt, &ctx, "us-east-1", root_snap),
        (true, Some(default_key))
    );
    rt.block_on(ec2.disable_ebs_encryption_by_default().send())
        .unwrap();
    assert_no_leaks(t.dir.path());
}

/// A snapshot encrypted without a parent (a base made from nothing, `--encrypt`) gets every
/// block written, zero blocks included (coldsnap#395); an unencrypted one only the non-zero ones.
#[test]
fn an_encrypted_snapshot_without_parent_is_written_whole() {
    let _emu = emulator();
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let t = TestDir::new("amiencfull");
    // 8 MiB: 16 blocks, 3 of them with data.
    let file = t.path("disk.raw");
    let mut data = vec![0u8; 8 << 20];
    for block in [0usize, 5, 15] {
        data[block * 524288..block * 524288 + 4096].fill(0xab);
    }
    std::fs::write(&file, &data).unwrap();
    let key = kms_key(&rt, &ctx, "us-east-1", None);
    let ledger = bakery::aws::ledger::Ledger::new("bk-0000000000ff");
    let count = |snap: &str| -> usize {
        rt.block_on(async {
            let mut n = 0;
            let mut token = None;
            loop {
                let page = ctx
                    .ebs("us-east-1")
                    .list_snapshot_blocks()
                    .snapshot_id(snap)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .unwrap();
                n += page.blocks().len();
                token = page.next_token().map(str::to_string);
                if token.is_none() {
                    return n;
                }
            }
        })
    };
    let up = |kms: Option<String>| {
        rt.block_on(bakery::aws::ebs::upload_snapshot_with(
            &ctx.ebs("us-east-1"),
            &file,
            None,
            "t",
            &BTreeMap::new(),
            &ledger,
            "us-east-1",
            8,
            &bakery::aws::ebs::UploadOptions { kms_key_arn: kms },
        ))
        .unwrap()
    };
    let enc = up(Some(key.clone()));
    assert_eq!(enc.blocks_changed, 16);
    assert_eq!(
        count(&enc.snapshot_id),
        16,
        "every block of an encrypted snapshot is written"
    );
    assert_eq!(
        encryption_of(&rt, &ctx, "us-east-1", &enc.snapshot_id),
        (true, Some(key))
    );
    let plain = up(None);
    assert_eq!(plain.blocks_changed, 3);
    assert_eq!(count(&plain.snapshot_id), 3);
    assert!(rt.block_on(ledger.rollback(&ctx)).is_empty());
}
