//! `bakery images prune` against the local AWS emulator: an app's AMIs, some used by an ASG
//! (launch template `$Latest`, a mixed-instances policy on `$Default`, a launch configuration) and
//! one by a running instance; prune keeps exactly the newest N plus the used ones, with their
//! snapshots, and `--dry-run` changes nothing.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_autoscaling::types::{
    LaunchTemplate, LaunchTemplateSpecification, MixedInstancesPolicy,
};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, RequestLaunchTemplateData, ResourceType,
};
use bakery::aws::ami;
use bakery::aws::client::AwsContext;

use support::*;

const REGION: &str = "us-east-1";

/// An AMI as a bake registers it: a root snapshot of its own, bakery's tags.
async fn register(ec2: &aws_sdk_ec2::Client, name: &str, appversion: &str) -> (String, String) {
    let v = ec2
        .create_volume()
        .availability_zone("us-east-1a")
        .size(1)
        .send()
        .await
        .unwrap();
    let vid = v.volume_id().unwrap().to_string();
    let snap = ec2
        .create_snapshot()
        .volume_id(&vid)
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    ec2.delete_volume().volume_id(&vid).send().await.unwrap();
    let tags = BTreeMap::from([
        ("appversion".to_string(), appversion.to_string()),
        ("creator".to_string(), "prune-test".to_string()),
    ]);
    let out = ec2
        .register_image()
        .name(name)
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .virtualization_type("hvm")
        .root_device_name("/dev/xvda")
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(&snap)
                        .volume_size(1)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(ami::tag_spec_for(ResourceType::Image, &tags))
        .send()
        .await
        .unwrap();
    (out.image_id().unwrap().to_string(), snap)
}

async fn own_images(ec2: &aws_sdk_ec2::Client) -> BTreeSet<String> {
    let f = Filter::builder()
        .name("tag-key")
        .values("appversion")
        .build();
    let out = ec2
        .describe_images()
        .owners("self")
        .filters(f)
        .send()
        .await
        .unwrap();
    out.images()
        .iter()
        .filter(|i| i.state().map(|s| s.as_str()) != Some("deregistered"))
        .map(|i| i.image_id().unwrap().to_string())
        .collect()
}

async fn snapshots(ec2: &aws_sdk_ec2::Client) -> BTreeSet<String> {
    let out = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    out.snapshots()
        .iter()
        .map(|s| s.snapshot_id().unwrap().to_string())
        .collect()
}

fn lt_spec(id: &str, version: Option<&str>) -> LaunchTemplateSpecification {
    LaunchTemplateSpecification::builder()
        .launch_template_id(id)
        .set_version(version.map(String::from))
        .build()
}

#[test]
fn prune_keeps_the_newest_and_everything_in_use() {
    let emu = emulator::shared(&[]);
    let t = TestDir::new("prune");
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let ec2 = ctx.ec2(REGION);
    let asc = ctx.autoscaling(REGION);
    let app = format!("pruneapp{}", std::process::id());

    // Oldest first, one second apart (EC2 creation dates have one-second resolution).
    let roles = [
        "lt-latest",
        "lt-v1-only",
        "launch-config",
        "unused-a",
        "instance",
        "mixed-default",
        "unused-b",
        "new-1",
        "new-2",
    ];
    let mut ids: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for (i, role) in roles.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1050));
        }
        let id = rt.block_on(register(
            &ec2,
            &format!("{app}-1.{i}-1-all-2026112600{i:02}"),
            &format!("{app}-1.{i}-1"),
        ));
        ids.insert(role, id);
    }
    // Another app whose name starts the same: never this prune's business.
    let other = rt.block_on(register(
        &ec2,
        &format!("{app}-admin-1.0-1-all-202611250000"),
        &format!("{app}-admin-1.0-1"),
    ));
    let img = |role: &str| ids[role].0.clone();

    rt.block_on(async {
        // Launch template: version 1 -> lt-v1-only, version 2 (latest) -> lt-latest; an ASG on $Latest.
        let lt = ec2
            .create_launch_template()
            .launch_template_name(format!("{app}-lt"))
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(img("lt-v1-only"))
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let lt_id = lt
            .launch_template()
            .unwrap()
            .launch_template_id()
            .unwrap()
            .to_string();
        ec2.create_launch_template_version()
            .launch_template_id(&lt_id)
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(img("lt-latest"))
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        // Version 2 is the default too: version 1 is then named by no `$Default`, no `$Latest`
        // and no group, the one version of the template prune may free (a template's
        // `$Default` and `$Latest` images are always kept).
        ec2.modify_launch_template()
            .launch_template_id(&lt_id)
            .default_version("2")
            .send()
            .await
            .unwrap();
        asc.create_auto_scaling_group()
            .auto_scaling_group_name(format!("{app}-v001"))
            .launch_template(lt_spec(&lt_id, Some("$Latest")))
            .min_size(0)
            .max_size(0)
            .desired_capacity(0)
            .availability_zones("us-east-1a")
            .send()
            .await
            .unwrap();
        // A second template whose default version is used through a mixed-instances policy.
        let lt2 = ec2
            .create_launch_template()
            .launch_template_name(format!("{app}-mixed"))
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(img("mixed-default"))
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let lt2_id = lt2
            .launch_template()
            .unwrap()
            .launch_template_id()
            .unwrap()
            .to_string();
        asc.create_auto_scaling_group()
            .auto_scaling_group_name(format!("{app}-mixed-v001"))
            .mixed_instances_policy(
                MixedInstancesPolicy::builder()
                    .launch_template(
                        LaunchTemplate::builder()
                            .launch_template_specification(lt_spec(&lt2_id, None))
                            .build(),
                    )
                    .build(),
            )
            .min_size(0)
            .max_size(0)
            .desired_capacity(0)
            .availability_zones("us-east-1a")
            .send()
            .await
            .unwrap();
        // A launch configuration and its ASG.
        asc.create_launch_configuration()
            .launch_configuration_name(format!("{app}-lc"))
            .image_id(img("launch-config"))
            .instance_type("t3.micro")
            .send()
            .await
            .unwrap();
        asc.create_auto_scaling_group()
            .auto_scaling_group_name(format!("{app}-lc-v001"))
            .launch_configuration_name(format!("{app}-lc"))
            .min_size(0)
            .max_size(0)
            .desired_capacity(0)
            .availability_zones("us-east-1a")
            .send()
            .await
            .unwrap();
        // A running instance.
        ec2.run_instances()
            .image_id(img("instance"))
            .min_count(1)
            .max_count(1)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .send()
            .await
            .unwrap();
    });

    let before_images = rt.block_on(own_images(&ec2));
    let before_snaps = rt.block_on(snapshots(&ec2));
    let prune = |extra: &[&str]| {
        let mut c = t.bakery();
        emu.apply(
            c.args([
                "images", "prune", "--app", &app, "--keep", "2", "--region", REGION,
            ])
            .args(extra),
        );
        run(&mut c)
    };

    // --dry-run: the plan with a reason for each image, nothing changed.
    let r = prune(&["--dry-run", "--json"]);
    r.assert_ok();
    let plan = r.json();
    assert_eq!(plan["dry_run"], true);
    let decisions: BTreeMap<String, (String, String)> = plan["regions"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["image_id"].as_str().unwrap().to_string(),
                (
                    d["action"].as_str().unwrap().to_string(),
                    d["reasons"].to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(decisions.len(), roles.len(), "{plan:#}");
    assert!(
        !decisions.contains_key(&other.0),
        "another app's image is in the plan"
    );
    let expect_deleted = ["lt-v1-only", "unused-a", "unused-b"];
    for role in roles {
        let (action, reasons) = &decisions[&img(role)];
        let want = if expect_deleted.contains(&role) {
            "delete"
        } else {
            "keep"
        };
        assert_eq!(action, want, "{role}: {reasons}");
    }
    assert!(
        decisions[&img("lt-latest")]
            .1
            .contains(&format!("ASG {app}-v001 (launch template")),
        "{}",
        decisions[&img("lt-latest")].1
    );
    assert!(
        decisions[&img("lt-latest")]
            .1
            .contains("version 2 ($Latest)"),
        "{}",
        decisions[&img("lt-latest")].1
    );
    assert!(
        decisions[&img("mixed-default")]
            .1
            .contains("version 1 ($Default)"),
        "{}",
        decisions[&img("mixed-default")].1
    );
    assert!(decisions[&img("launch-config")]
        .1
        .contains(&format!("launch configuration {app}-lc")));
    assert!(decisions[&img("instance")].1.contains("(running)"));
    assert!(decisions[&img("new-2")].1.contains("newest 1 of 9"));
    assert!(decisions[&img("new-1")].1.contains("newest 2 of 9"));
    assert_eq!(
        rt.block_on(own_images(&ec2)),
        before_images,
        "--dry-run deregistered something"
    );
    assert_eq!(
        rt.block_on(snapshots(&ec2)),
        before_snaps,
        "--dry-run deleted a snapshot"
    );
    // The text form says the same, one line per image.
    let r = prune(&["--dry-run"]);
    r.assert_ok();
    assert_eq!(
        r.stdout
            .lines()
            .filter(|l| l.contains("\twould delete\t"))
            .count(),
        3,
        "{}",
        r.stdout
    );

    // The real thing.
    let r = prune(&["--json"]);
    r.assert_ok();
    let left = rt.block_on(own_images(&ec2));
    let want: BTreeSet<String> = roles
        .iter()
        .filter(|r| !expect_deleted.contains(r))
        .map(|r| img(r))
        .chain([other.0.clone()])
        .collect();
    assert_eq!(
        left, want,
        "exactly the used, the newest two and the other app's images remain"
    );
    let snaps = rt.block_on(snapshots(&ec2));
    for role in roles {
        let s = &ids[role].1;
        assert_eq!(
            snaps.contains(s),
            !expect_deleted.contains(&role),
            "{role}'s snapshot {s}"
        );
    }
    assert!(snaps.contains(&other.1));
    let report = r.json();
    assert_eq!(
        report["regions"][0]["deleted_images"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        report["regions"][0]["deleted_snapshots"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Again: nothing more to do.
    let r = prune(&["--json"]);
    r.assert_ok();
    assert!(r.json()["regions"][0]["deleted_images"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(rt.block_on(own_images(&ec2)), want);

    // Bad input is refused before any call.
    let mut c = t.bakery();
    emu.apply(c.args(["images", "prune", "--app", "web*", "--keep", "1"]));
    let r = run(&mut c);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.error_line().contains("--app"), "{}", r.stderr);
    let mut c = t.bakery();
    emu.apply(c.args(["images", "prune", "--app", "web", "--keep", "0"]));
    assert_eq!(run(&mut c).code, 2);
}

/// A launch template `name` whose version 1 names `v1`, and (with `v2`) a version 2 that is its
/// `$Latest` while version 1 stays `$Default`. Returns its id.
async fn template(ec2: &aws_sdk_ec2::Client, name: &str, v1: &str, v2: Option<&str>) -> String {
    let lt = ec2
        .create_launch_template()
        .launch_template_name(name)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(v1)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let id = lt
        .launch_template()
        .unwrap()
        .launch_template_id()
        .unwrap()
        .to_string();
    if let Some(v2) = v2 {
        ec2.create_launch_template_version()
            .launch_template_id(&id)
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(v2)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    id
}

/// prune-lt-unattached (widdix/aws-amicleaner#5): a launch template no Auto Scaling group uses
/// still launches instances (RunInstances, a batch job): its `$Default` and `$Latest` images stay.
/// And an app with no AMI at all is an input error, not an empty success.
#[test]
fn prune_keeps_the_images_of_a_launch_template_no_group_uses() {
    let emu = emulator::shared(&[]);
    let t = TestDir::new("prune-lt");
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let ec2 = ctx.ec2(REGION);
    let app = format!("ltapp{}", std::process::id());
    let roles = ["default", "latest", "unused", "newest"];
    let mut ids: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for (i, role) in roles.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1050));
        }
        let id = rt.block_on(register(
            &ec2,
            &format!("{app}-1.{i}-1-all-2026113000{i:02}"),
            &format!("{app}-1.{i}-1"),
        ));
        ids.insert(role, id);
    }
    let img = |role: &str| ids[role].0.clone();
    let lt_name = format!("{app}-batch-runner");
    rt.block_on(template(
        &ec2,
        &lt_name,
        &img("default"),
        Some(&img("latest")),
    ));

    let prune = |extra: &[&str]| {
        let mut c = t.bakery();
        emu.apply(
            c.args([
                "images", "prune", "--app", &app, "--keep", "1", "--region", REGION,
            ])
            .args(extra),
        );
        run(&mut c)
    };
    let r = prune(&["--json"]);
    r.assert_ok();
    let report = r.json();
    let reasons: BTreeMap<String, (String, String)> = report["regions"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["image_id"].as_str().unwrap().to_string(),
                (
                    d["action"].as_str().unwrap().to_string(),
                    d["reasons"].to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(reasons[&img("unused")].0, "delete", "{report:#}");
    for role in ["default", "latest", "newest"] {
        assert_eq!(reasons[&img(role)].0, "keep", "{role}: {report:#}");
    }
    assert!(
        reasons[&img("default")]
            .1
            .contains(&format!("launch template {lt_name} version 1 ($Default)")),
        "{}",
        reasons[&img("default")].1
    );
    assert!(
        reasons[&img("latest")]
            .1
            .contains(&format!("launch template {lt_name} version 2 ($Latest)")),
        "{}",
        reasons[&img("latest")].1
    );
    let left = rt.block_on(own_images(&ec2));
    for role in ["default", "latest", "newest"] {
        assert!(left.contains(&img(role)), "{role} was deregistered");
    }
    assert!(!left.contains(&img("unused")));

    // An app with no image: one line, exit 2 (with and without --dry-run).
    for extra in [&["--dry-run"][..], &[]] {
        let mut c = t.bakery();
        emu.apply(
            c.args([
                "images",
                "prune",
                "--app",
                &format!("{app}-nosuch"),
                "--keep",
                "1",
                "--region",
                REGION,
            ])
            .args(extra),
        );
        let r = run(&mut c);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.error_line().contains("no AMI of app"), "{}", r.stderr);
        assert!(r.stdout.trim().is_empty(), "{}", r.stdout);
    }
}

/// prune-rollback-target: deploy (rolling), prune, rollback: the image the rollback returns to
/// is never pruned (the template's `$Default`, and the group's bakery:swap record), and a
/// rollback whose image is gone anyway (deregistered by hand) is refused, changing nothing.
#[test]
fn prune_never_breaks_a_rollback_and_rollback_refuses_a_gone_image() {
    let emu = emulator::shared(&[]);
    let t = TestDir::new("prune-rb");
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let ec2 = ctx.ec2(REGION);
    let asc = ctx.autoscaling(REGION);
    let app = format!("rbapp{}", std::process::id());
    let (old, _) = rt.block_on(register(
        &ec2,
        &format!("{app}-1.0-1-all-202611300001"),
        &format!("{app}-1.0-1"),
    ));
    std::thread::sleep(Duration::from_millis(1050));
    let (new, _) = rt.block_on(register(
        &ec2,
        &format!("{app}-1.1-1-all-202611300002"),
        &format!("{app}-1.1-1"),
    ));
    let group = format!("{app}-api");
    let lt_id = rt.block_on(async {
        let lt_id = template(&ec2, &format!("{app}-lt"), &old, None).await;
        asc.create_auto_scaling_group()
            .auto_scaling_group_name(&group)
            .launch_template(lt_spec(&lt_id, Some("1")))
            .min_size(1)
            .max_size(2)
            .desired_capacity(1)
            .availability_zones("us-east-1a")
            .send()
            .await
            .unwrap();
        lt_id
    });
    let bakery = |args: &[&str]| {
        let mut c = t.bakery();
        emu.apply(c.args(args).env("BAKERY_DEPLOY_POLL_MS", "50"));
        run(&mut c)
    };
    let version = || {
        rt.block_on(async {
            let g = asc
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(&group)
                .send()
                .await
                .unwrap();
            let v = g.auto_scaling_groups()[0]
                .launch_template()
                .unwrap()
                .version()
                .unwrap()
                .to_string();
            let out = ec2
                .describe_launch_template_versions()
                .launch_template_id(&lt_id)
                .versions(&v)
                .send()
                .await
                .unwrap();
            let img = out.launch_template_versions()[0]
                .launch_template_data()
                .unwrap()
                .image_id()
                .unwrap()
                .to_string();
            (v, img)
        })
    };

    bakery(&[
        "deploy",
        "--image",
        &new,
        "--asg",
        &group,
        "--strategy",
        "rolling",
        "--region",
        REGION,
    ])
    .assert_ok();
    assert_eq!(version(), ("2".to_string(), new.clone()));
    let r = bakery(&[
        "images", "prune", "--app", &app, "--keep", "1", "--region", REGION, "--json",
    ]);
    r.assert_ok();
    let decisions = r.json()["regions"][0]["images"].clone();
    let old_d = decisions
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["image_id"] == old.as_str())
        .unwrap()
        .clone();
    assert_eq!(old_d["action"], "keep", "{old_d}");
    assert!(
        old_d["reasons"]
            .to_string()
            .contains(&format!("`bakery rollback --asg {group}` returns to it")),
        "{old_d}"
    );
    assert!(rt.block_on(own_images(&ec2)).contains(&old));
    bakery(&["rollback", "--asg", &group, "--region", REGION]).assert_ok();
    assert_eq!(version(), ("1".to_string(), old.clone()));

    // Deploy again, then the old image goes by hand: rollback must refuse, and change nothing.
    bakery(&[
        "deploy",
        "--image",
        &new,
        "--asg",
        &group,
        "--strategy",
        "swap",
        "--region",
        REGION,
    ])
    .assert_ok();
    let before = version();
    rt.block_on(async {
        ec2.deregister_image().image_id(&old).send().await.unwrap();
    });
    let r = bakery(&["rollback", "--asg", &group, "--region", REGION]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = r.error_line();
    assert!(
        line.contains(&old) && line.contains("no longer registered"),
        "{}",
        r.stderr
    );
    assert_eq!(version(), before, "a refused rollback changed the group");
}
