//! End to end against the local AWS emulator: publish a base AMI built from scratch, bake an app
//! on it in direct mode into three regions, and check every AMI through the API — including
//! reading the new snapshot back with the EBS direct APIs and mounting it.

mod support;

use std::path::Path;
use std::process::Command;

use support::emulator::Emulator;
use support::*;

fn with_env(e: &Emulator, c: &mut Command) {
    e.apply(c);
}

fn differing_blocks(a: &Path, b: &Path) -> u64 {
    let ha = bakery::aws::ebs::hash_file_blocks(a).unwrap();
    let hb = bakery::aws::ebs::hash_file_blocks(b).unwrap();
    (0..ha.len().max(hb.len()))
        .filter(|&i| ha.get(i).copied().flatten() != hb.get(i).copied().flatten())
        .count() as u64
}

#[test]
fn base_ami_then_direct_bake_into_three_regions() {
    let emu = Emulator::start();
    for (k, v) in emu.env() {
        // SAFETY (edition 2021: not unsafe): set before any thread of this test reads them.
        std::env::set_var(k, v);
    }
    let t = TestDir::new("aws");
    let rt = rt();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());

    // 1. Ops publish a base from scratch.
    let mut c = t.bakery();
    with_env(
        &emu,
        c.args([
            "base",
            "build",
            "base-images/debian-bookworm.yaml",
            "--output",
            "ami",
            "--region",
            "us-east-1",
        ]),
    );
    let base = run(&mut c);
    base.assert_ok();
    let bm = base.json();
    let base_ami = bm["amis"][0]["image_id"].as_str().unwrap().to_string();
    let base_snap = bm["amis"][0]["snapshot_id"].as_str().unwrap().to_string();
    assert!(bm["name"]
        .as_str()
        .unwrap()
        .starts_with("bakery-base-bookworm-"));
    assert!(
        bm["upload"]["blocks_changed"].as_u64().unwrap()
            < bm["upload"]["blocks_total"].as_u64().unwrap(),
        "zero blocks were uploaded"
    );

    // 2. CI bakes the app on the newest base, direct mode, three regions.
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "cloud-app",
            version: "2.5-4",
            files: &[("/opt/cloud-app/VERSION", "2.5-4")],
            postinst: Some("echo configured > /opt/cloud-app/postinst-ran"),
            ..Default::default()
        },
    );
    let mut c = t.bakery();
    with_env(
        &emu,
        c.args(["bake", "--base-name", "bakery-base-bookworm-*", "--package"])
            .arg(&app)
            .args([
                "--output",
                "ami",
                "--region",
                "us-east-1",
                "--copy-to",
                "us-west-2,eu-west-1",
                "--mode",
                "direct",
                "--tag",
                "team=cloud",
                "--share-with",
                "123456789012",
            ]),
    );
    let r = run(&mut c);
    r.assert_ok();
    let m = r.json();
    let name = m["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("cloud-app-2.5-4-all-"), "{name}");
    let amis = m["amis"].as_array().unwrap();
    let regions: Vec<&str> = amis.iter().map(|a| a["region"].as_str().unwrap()).collect();
    assert_eq!(regions, ["us-east-1", "us-west-2", "eu-west-1"]);
    let ids: std::collections::BTreeSet<&str> = amis
        .iter()
        .map(|a| a["image_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(m["base"]["image"], base_ami.as_str());
    assert_eq!(m["tags"]["base_ami_id"], base_ami.as_str());
    assert_eq!(m["tags"]["appversion"], "cloud-app-2.5-4");
    let up = &m["upload"];
    assert_eq!(up["base_snapshot_id"], base_snap.as_str());
    let new_snap = up["snapshot_id"].as_str().unwrap().to_string();

    // 3. Each region's AMI, as the API sees it: name, tags, snapshot tags, launch permission.
    for a in amis {
        let region = a["region"].as_str().unwrap();
        let ec2 = ctx.ec2(region);
        let img = rt
            .block_on(
                ec2.describe_images()
                    .image_ids(a["image_id"].as_str().unwrap())
                    .send(),
            )
            .unwrap();
        let img = &img.images()[0];
        assert_eq!(img.name(), Some(name.as_str()), "{region}");
        let tags = tags_of(img.tags());
        assert_eq!(
            tags.get("appversion").map(String::as_str),
            Some("cloud-app-2.5-4"),
            "{region}: {tags:?}"
        );
        assert_eq!(
            tags.get("team").map(String::as_str),
            Some("cloud"),
            "{region}"
        );
        assert_eq!(
            tags.get("base_ami_id").map(String::as_str),
            Some(base_ami.as_str()),
            "{region}"
        );
        let root_snap = img
            .block_device_mappings()
            .iter()
            .find_map(|b| b.ebs().and_then(|e| e.snapshot_id()))
            .unwrap();
        assert_eq!(root_snap, a["snapshot_id"].as_str().unwrap(), "{region}");
        let snap = rt
            .block_on(ec2.describe_snapshots().snapshot_ids(root_snap).send())
            .unwrap();
        let stags = tags_of(snap.snapshots()[0].tags());
        assert_eq!(
            stags.get("appversion").map(String::as_str),
            Some("cloud-app-2.5-4"),
            "{region}: snapshot tags {stags:?}"
        );
        let perms = rt
            .block_on(
                ec2.describe_image_attribute()
                    .image_id(a["image_id"].as_str().unwrap())
                    .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
                    .send(),
            )
            .unwrap();
        assert!(
            perms
                .launch_permissions()
                .iter()
                .any(|p| p.user_id() == Some("123456789012")),
            "{region}: not shared"
        );
    }
    assert_eq!(amis[0]["snapshot_id"], new_snap.as_str());

    // 4. Read the new snapshot back (EBS direct; the parent's blocks are inherited) and mount it.
    let back = t.path("readback.raw");
    rt.block_on(bakery::aws::ebs::download_snapshot(
        &ctx.ebs("us-east-1"),
        &new_snap,
        &back,
        16,
    ))
    .unwrap();
    {
        let img = Mounted::open(&back);
        assert_eq!(img.read("/opt/cloud-app/VERSION"), "2.5-4");
        assert_eq!(img.read("/opt/cloud-app/postinst-ran").trim(), "configured");
        assert_eq!(img.dpkg_version("cloud-app").as_deref(), Some("2.5-4"));
        assert!(!img.path("/usr/sbin/policy-rc.d").exists());
    }
    // The copy in another region carries the same blocks (listed through EBS direct there).
    let blocks_of = |region: &str, snap: &str| -> Vec<i32> {
        rt.block_on(async {
            let ebs = ctx.ebs(region);
            let mut out = Vec::new();
            let mut token = None;
            loop {
                let page = ebs
                    .list_snapshot_blocks()
                    .snapshot_id(snap)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .unwrap();
                out.extend(page.blocks().iter().filter_map(|b| b.block_index()));
                token = page.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            out.sort();
            out
        })
    };
    let source_blocks = blocks_of("us-east-1", &new_snap);
    assert!(!source_blocks.is_empty());
    assert_eq!(
        blocks_of("eu-west-1", amis[2]["snapshot_id"].as_str().unwrap()),
        source_blocks,
        "the eu-west-1 copy differs from the source"
    );

    // 5. Only what changed went up: uploaded bytes within 1.2x of the blocks that really differ.
    // The bake's own cache of the base snapshot, as downloaded (and checksum-verified) by the bake.
    let base_file = t.work().join("snapshots").join(format!("{base_snap}.raw"));
    assert!(
        base_file.exists(),
        "direct mode did not cache the base snapshot"
    );
    let really = differing_blocks(&base_file, &back) * bakery::aws::ebs::BLOCK_SIZE;
    let uploaded = up["bytes_uploaded"].as_u64().unwrap();
    eprintln!(
        "uploaded {uploaded} bytes for {really} changed bytes ({} blocks of {})",
        up["blocks_changed"], up["blocks_total"]
    );
    assert!(really > 0);
    assert!(
        uploaded as f64 <= 1.2 * really as f64,
        "uploaded {uploaded} bytes for {really} changed"
    );
    // A tiny app changes ~30 blocks of 4096 (journal, dpkg database, its files); free space the
    // bake used and released must be trimmed, not uploaded.
    assert!(
        up["blocks_changed"].as_u64().unwrap() * 20 < up["blocks_total"].as_u64().unwrap(),
        "a small app changed {} of {} blocks",
        up["blocks_changed"],
        up["blocks_total"]
    );
    std::fs::remove_file(&back).unwrap();

    // 6. Ops refresh the base: OS updates on the newest base, published incrementally.
    let mut c = t.bakery();
    with_env(
        &emu,
        c.args([
            "base",
            "refresh",
            "--base-name",
            "bakery-base-bookworm-*",
            "--region",
            "us-east-1",
            "--mode",
            "direct",
        ]),
    );
    let rf = run(&mut c);
    rf.assert_ok();
    let rm = rf.json();
    assert_eq!(rm["kind"], "base");
    assert!(rm["name"]
        .as_str()
        .unwrap()
        .starts_with("bakery-base-bookworm-"));
    assert_ne!(rm["amis"][0]["image_id"], base_ami.as_str());
    assert_eq!(
        rm["upload"]["base_snapshot_id"],
        base_snap.as_str(),
        "the refresh is not incremental on the old base"
    );
    assert_eq!(rm["tags"]["refreshed_from"], base_ami.as_str());
    let mut c = t.bakery();
    with_env(
        &emu,
        c.args([
            "base",
            "list",
            "--name",
            "bakery-base-bookworm-*",
            "--region",
            "us-east-1",
            "--json",
        ]),
    );
    let list = run(&mut c);
    list.assert_ok();
    let versions = list.json()["us-east-1"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(
        versions[0]["image_id"], rm["amis"][0]["image_id"],
        "the refreshed base is not listed first"
    );

    // 7. A failure after registration (CopyImage refused) removes everything the bake made. (A
    // new version: the same name would be reused, and nothing would be copied.)
    let app2 = build_deb(
        t.dir.path(),
        &Deb {
            name: "cloud-app",
            version: "2.5-5",
            files: &[("/opt/cloud-app/VERSION", "2.5-5")],
            ..Default::default()
        },
    );
    let mut c = t.bakery();
    with_env(
        &emu,
        c.env("BAKERY_FAIL_API", "CopyImage")
            .args(["bake", "--base-name", "bakery-base-bookworm-*", "--package"])
            .arg(&app2)
            .args([
                "--output",
                "ami",
                "--region",
                "us-east-1",
                "--copy-to",
                "us-west-2",
                "--mode",
                "direct",
                "--tag",
                "attempt=failing",
            ]),
    );
    let r = run(&mut c);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.error_line().contains("CopyImage"), "{}", r.error_line());
    let id = bake_id_in(&r.stderr).expect("no bake id in the log");
    let left = rt.block_on(tagged(&ctx, &["us-east-1", "us-west-2"], &id));
    assert!(left.is_empty(), "the failed bake left {left:?}");
    assert_no_leaks(t.dir.path());
}

/// Case aws/ami-name-reuse (hashicorp/packer#2993, #1873): images of another bake (base A) hold
/// this minute's Aminator name; a bake of the same package on base B must not return them, but
/// register its own AMI under the next attempt name and say so. Failed before the bake key: the
/// bake reused the base-A image with exit 0 and a manifest claiming base B.
#[test]
fn an_ami_name_taken_by_another_bake_is_not_reused() {
    let emu = Emulator::start();
    for (k, v) in emu.env() {
        // SAFETY (edition 2021: not unsafe): set before any thread of this test reads them.
        std::env::set_var(k, v);
    }
    let t = TestDir::new("namereuse");
    let rt = rt();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    let ec2 = ctx.ec2("us-east-1");
    let (base_b, _) = publish_test_base(&rt, &ctx, "us-east-1", "bakery-base-bookworm-b");
    // Base A's images: an empty snapshot, registered under the next 20 minutes' names.
    let squatters: Vec<String> = rt.block_on(async {
        let vol = ec2
            .create_volume()
            .size(2)
            .availability_zone("us-east-1a")
            .send()
            .await
            .unwrap();
        let snap = ec2
            .create_snapshot()
            .volume_id(vol.volume_id().unwrap())
            .send()
            .await
            .unwrap();
        ec2.delete_volume()
            .volume_id(vol.volume_id().unwrap())
            .send()
            .await
            .unwrap();
        let now = time::OffsetDateTime::now_utc();
        let mut ids = Vec::new();
        for m in 0..20 {
            let stamp = bakery::naming::stamp(now + time::Duration::minutes(m));
            let r = ec2
                .register_image()
                .name(format!("tiny-1.0-1-all-{stamp}"))
                .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
                .virtualization_type("hvm")
                .root_device_name("/dev/xvda")
                .block_device_mappings(
                    aws_sdk_ec2::types::BlockDeviceMapping::builder()
                        .device_name("/dev/xvda")
                        .ebs(
                            aws_sdk_ec2::types::EbsBlockDevice::builder()
                                .snapshot_id(snap.snapshot_id().unwrap())
                                .volume_size(2)
                                .build(),
                        )
                        .build(),
                )
                .tag_specifications(
                    aws_sdk_ec2::types::TagSpecification::builder()
                        .resource_type(aws_sdk_ec2::types::ResourceType::Image)
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key("base_ami_id")
                                .value("ami-0aaaaaaaaaaaaaaaa")
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .unwrap();
            ids.push(r.image_id().unwrap().to_string());
        }
        ids
    });
    let tiny = build_deb(
        t.dir.path(),
        &Deb {
            name: "tiny",
            version: "1.0-1",
            ..Default::default()
        },
    );
    let bake = || {
        let mut c = t.bakery();
        with_env(
            &emu,
            c.args(["bake", "--base", &base_b, "--package"])
                .arg(&tiny)
                .args([
                    "--output",
                    "ami",
                    "--region",
                    "us-east-1",
                    "--mode",
                    "direct",
                    "--tag",
                    "team=payments",
                ]),
        );
        run(&mut c)
    };
    let r = bake();
    r.assert_ok();
    let m = r.json();
    let ami = m["amis"][0]["image_id"].as_str().unwrap().to_string();
    let name = m["name"].as_str().unwrap().to_string();
    assert!(
        !squatters.contains(&ami),
        "returned another bake's AMI {ami}"
    );
    assert_eq!(m["amis"][0]["reused"], false);
    assert!(
        name.starts_with("tiny-1.0-1-all-") && name.ends_with("-2"),
        "{name}"
    );
    assert!(
        r.stderr.contains("is taken by another bake's image") && r.stderr.contains(&name),
        "the new name is not said: {}",
        r.stderr
    );
    let img = rt
        .block_on(ec2.describe_images().image_ids(&ami).send())
        .unwrap();
    let tags = tags_of(img.images()[0].tags());
    assert_eq!(tags.get("base_ami_id"), Some(&base_b), "{tags:?}");
    assert_eq!(img.images()[0].name(), Some(name.as_str()));
    let key = tags
        .get(bakery::naming::BAKE_KEY_TAG)
        .expect("no bake key tag")
        .clone();
    assert_eq!(key.len(), 64);

    // The same bake again: reused when it falls in the same minute (the same name), else baked
    // under that minute's next free name; never another bake's image.
    let again = bake();
    again.assert_ok();
    let m2 = again.json();
    let ami2 = m2["amis"][0]["image_id"].as_str().unwrap();
    assert!(!squatters.iter().any(|s| s == ami2));
    if m2["name"] == name.as_str() {
        assert_eq!(ami2, ami);
        assert_eq!(m2["amis"][0]["reused"], true);
    } else {
        eprintln!("the rerun fell in another minute: reuse not exercised");
        assert_eq!(m2["amis"][0]["reused"], false);
    }
}

/// `--disk-size 6GiB` on a direct-mode AMI bake: the snapshot is a 6 GiB volume (larger than
/// its parent), the AMI's root volume is 6 GiB, and the disk read back from the snapshot has
/// its GPT, root partition and ext4 filling it.
#[test]
fn disk_size_makes_a_six_gib_ami_whose_filesystem_fills_it() {
    let emu = Emulator::start();
    for (k, v) in emu.env() {
        // SAFETY (edition 2021: not unsafe): set before any thread of this test reads them.
        std::env::set_var(k, v);
    }
    let t = TestDir::new("aws-grow");
    let rt = rt();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    let (base_ami, _) = publish_test_base(&rt, &ctx, "us-east-1", "bakery-base-grow");
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "grow-app",
            version: "1.0-1",
            files: &[("/opt/grow-app/VERSION", "1.0-1")],
            ..Default::default()
        },
    );
    let mut c = t.bakery();
    with_env(
        &emu,
        c.args(["bake", "--base", &base_ami, "--package"])
            .arg(&app)
            .args([
                "--output",
                "ami",
                "--region",
                "us-east-1",
                "--mode",
                "direct",
                "--disk-size",
                "6GiB",
            ]),
    );
    let r = run(&mut c);
    r.assert_ok();
    let m = r.json();
    let image_id = m["amis"][0]["image_id"].as_str().unwrap().to_string();
    let snap_id = m["amis"][0]["snapshot_id"].as_str().unwrap().to_string();
    let ec2 = ctx.ec2("us-east-1");
    let img = rt
        .block_on(ec2.describe_images().image_ids(&image_id).send())
        .unwrap();
    let root = img.images()[0]
        .block_device_mappings()
        .iter()
        .find_map(|b| b.ebs())
        .unwrap();
    assert_eq!(root.volume_size(), Some(6), "AMI root volume");
    let snap = rt
        .block_on(ec2.describe_snapshots().snapshot_ids(&snap_id).send())
        .unwrap();
    assert_eq!(
        snap.snapshots()[0].volume_size(),
        Some(6),
        "snapshot volume"
    );

    let back = t.path("readback.raw");
    rt.block_on(bakery::aws::ebs::download_snapshot(
        &ctx.ebs("us-east-1"),
        &snap_id,
        &back,
        16,
    ))
    .unwrap();
    assert_eq!(std::fs::metadata(&back).unwrap().len(), 6 << 30);
    let layout = bakery::disk::layout::read_layout(&back).unwrap();
    let part = layout.root().unwrap();
    assert!(part.start + part.size > (6 << 30) - (2 << 20));
    let d = run(Command::new("dumpe2fs").arg("-h").arg(format!(
        "{}?offset={}",
        back.display(),
        part.start
    )));
    assert_eq!(d.code, 0, "{}", d.stderr);
    let field = |k: &str| -> u64 {
        d.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in dumpe2fs"))
            .trim()
            .parse()
            .unwrap()
    };
    let fs = field("Block count:") * field("Block size:");
    assert!(
        fs >= 11 << 29,
        "ext4 read back is {fs} bytes, want >= 5.5 GiB"
    );
    assert!(
        fs + (4 << 20) >= part.size,
        "ext4 does not fill its partition"
    );
    let img = Mounted::open(&back);
    assert_eq!(img.read("/opt/grow-app/VERSION"), "1.0-1");
}
