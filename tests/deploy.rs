//! `bakery deploy`, `rollback`, `status` end to end: the CLI binary against the local AWS
//! emulator (moto with the patches of docs/aws-emulator.md), every result read back through the
//! SDK. Each test builds its own VPC, subnets, target group, AMIs, launch template and groups,
//! with unique names, in the one emulator of this test process.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};
use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType};
use bakery::aws::client::AwsContext;
use serde_json::{json, Value};

mod support;

use support::deploy::{self, unique};
use support::emulator::Emulator;
use support::rt;
use support::Run;

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "us-west-2"];
const UNHEALTHY: &str = "bakery-emulator:target-health";

fn emulator() -> Arc<Emulator> {
    support::emulator::shared(&[])
}

/// `bakery` against the emulator, polling fast, in the repo (so `plugins/NAME` is found).
fn bakery(args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bakery"));
    c.args(args)
        .env("BAKERY_DEPLOY_POLL_MS", "50")
        .env("RUST_LOG", "bakery=info")
        .current_dir(support::repo());
    support::run(&mut c)
}

/// The last line of `stderr`: timestamped (`2026-11-30T10:00:00Z  INFO ...`) and containing
/// `what` (the one line a finished deploy or rollback ends with under CI).
fn final_line(stderr: &str, what: &str) -> String {
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let b = last.as_bytes();
    assert!(
        b.len() > 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z' && last.contains(what),
        "the last line is not a timestamped `{what}...`: {last:?}\n{stderr}"
    );
    last.to_string()
}

/// One region's fixture: a VPC with two subnets, a target group, two AMIs, a launch template.
struct Region {
    region: String,
    ctx: AwsContext,
    subnets: String,
    tg: String,
    old_ami: String,
    new_ami: String,
    lt_id: String,
    lt_name: String,
}

impl Region {
    async fn new(ctx: &AwsContext, region: &str) -> Region {
        let ec2 = ctx.ec2(region);
        let net = deploy::network(ctx, region, "10.1", &["a", "b"]).await;
        let old_ami = deploy::app_ami(ctx, region, "app-1.0-1").await;
        let new_ami = deploy::app_ami(ctx, region, "app-1.1-1").await;
        let lt_name = unique("lt");
        let lt_id = ec2
            .create_launch_template()
            .launch_template_name(&lt_name)
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(&old_ami)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .key_name("ops")
                    .user_data("IyEvYmluL3NoCmVjaG8gaGkK")
                    .tag_specifications(
                        aws_sdk_ec2::types::LaunchTemplateTagSpecificationRequest::builder()
                            .resource_type(ResourceType::Instance)
                            .tags(
                                aws_sdk_ec2::types::Tag::builder()
                                    .key("team")
                                    .value("payments")
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .launch_template
            .unwrap()
            .launch_template_id
            .unwrap();
        Region {
            region: region.into(),
            ctx: ctx.clone(),
            subnets: net.subnets(),
            tg: net.tg,
            old_ami,
            new_ami,
            lt_id,
            lt_name,
        }
    }

    fn asg(&self) -> aws_sdk_autoscaling::Client {
        self.ctx.autoscaling(&self.region)
    }

    /// A group of `size` on the launch template (by name, at `version`).
    async fn group(&self, name: &str, version: &str, size: i32) {
        self.asg()
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name(&self.lt_name)
                    .version(version)
                    .build(),
            )
            .min_size(size)
            .max_size(size + 2)
            .desired_capacity(size)
            .vpc_zone_identifier(&self.subnets)
            .target_group_arns(&self.tg)
            .health_check_type("ELB")
            .tags(
                Tag::builder()
                    .resource_id(name)
                    .resource_type("auto-scaling-group")
                    .key("team")
                    .value("payments")
                    .propagate_at_launch(true)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    async fn describe(&self, name: &str) -> Option<aws_sdk_autoscaling::types::AutoScalingGroup> {
        let out = self
            .asg()
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap();
        out.auto_scaling_groups().first().cloned()
    }

    /// Template versions: number -> Debug of its data.
    async fn versions(&self) -> BTreeMap<i64, String> {
        let out = self
            .ctx
            .ec2(&self.region)
            .describe_launch_template_versions()
            .launch_template_id(&self.lt_id)
            .send()
            .await
            .unwrap();
        out.launch_template_versions()
            .iter()
            .map(|v| {
                (
                    v.version_number().unwrap(),
                    format!("{:?}", v.launch_template_data().unwrap()),
                )
            })
            .collect()
    }

    async fn template(&self) -> (i64, i64) {
        let out = self
            .ctx
            .ec2(&self.region)
            .describe_launch_templates()
            .launch_template_ids(&self.lt_id)
            .send()
            .await
            .unwrap();
        let t = &out.launch_templates()[0];
        (
            t.default_version_number().unwrap(),
            t.latest_version_number().unwrap(),
        )
    }

    /// target id -> state, for every target registered.
    async fn targets(&self) -> BTreeMap<String, String> {
        let out = self
            .ctx
            .elbv2(&self.region)
            .describe_target_health()
            .target_group_arn(&self.tg)
            .send()
            .await
            .unwrap();
        out.target_health_descriptions()
            .iter()
            .map(|d| {
                (
                    d.target().unwrap().id().unwrap().to_string(),
                    d.target_health()
                        .unwrap()
                        .state()
                        .unwrap()
                        .as_str()
                        .to_string(),
                )
            })
            .collect()
    }

    async fn instance_ids(&self, name: &str) -> BTreeSet<String> {
        self.describe(name)
            .await
            .map(|g| {
                g.instances()
                    .iter()
                    .map(|i| i.instance_id().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// instance -> image it runs (EC2's view).
    async fn images_of(&self, name: &str) -> BTreeMap<String, String> {
        let ids: Vec<String> = self.instance_ids(name).await.into_iter().collect();
        let out = self
            .ctx
            .ec2(&self.region)
            .describe_instances()
            .set_instance_ids(Some(ids))
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap().to_string(),
                    i.image_id().unwrap().to_string(),
                )
            })
            .collect()
    }

    async fn suspended(&self, name: &str) -> BTreeSet<String> {
        self.describe(name)
            .await
            .unwrap()
            .suspended_processes()
            .iter()
            .map(|p| p.process_name().unwrap().to_string())
            .collect()
    }

    async fn mark_unhealthy(&self, ami: &str) {
        self.ctx
            .ec2(&self.region)
            .create_tags()
            .resources(ami)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(UNHEALTHY)
                    .value("unhealthy")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
}

/// A manifest as `bakery bake --output ami` writes it, with the new AMI of each region.
fn manifest(dir: &std::path::Path, regions: &[&Region]) -> std::path::PathBuf {
    let m = json!({
        "bakery_version": "0.1.0", "kind": "bake", "bake_id": "bk-0123456789ab", "name": "app-1.1-1-all-202611260000",
        "package": {"kind": "deb", "file": "app_1.1-1_all.deb", "name": "app", "version": "1.1", "release": "1", "arch": "all"},
        "base": {"image": "ami-base", "name": "bakery-base-bookworm", "version": "202611250000"},
        "layers": [],
        "amis": regions.iter().map(|r| json!({"region": r.region, "image_id": r.new_ami, "snapshot_id": "snap-0", "reused": false})).collect::<Vec<_>>(),
        "tags": {"appversion": "app-1.1-1"}, "timings": [], "total_seconds": 1.0, "log": "/dev/null",
    });
    let p = dir.join("bake.json");
    std::fs::write(&p, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    p
}

fn by_region(out: &Value) -> BTreeMap<String, Value> {
    out["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["region"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// Only ImageId differs between two versions' data.
fn only_image_differs(old: &str, new: &str, old_ami: &str, new_ami: &str) {
    assert!(new.contains(new_ami), "{new}");
    assert_eq!(
        new.replace(new_ami, old_ami),
        old,
        "the new version must differ only in ImageId"
    );
}

// --- the pipeline: manifest -> swap -> red/black -> rollback, 3 regions --------------------

#[test]
fn manifest_swap_then_red_black_then_rollback_in_three_regions() {
    let _emu = emulator();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let ctx = rt.block_on(AwsContext::load());
    let regions: Vec<Region> = rt.block_on(futures::future::join_all(
        REGIONS.iter().map(|r| Region::new(&ctx, r)),
    ));
    let refs: Vec<&Region> = regions.iter().collect();
    let m = manifest(dir.path(), &refs);
    let m = m.to_str().unwrap();

    // --- swap: pinned in one region, $Default in another, $Latest in the third.
    let api = unique("api");
    let follows = ["1", "$Default", "$Latest"];
    rt.block_on(async {
        for (r, v) in regions.iter().zip(follows) {
            r.group(&api, v, 2).await;
        }
    });
    let before: Vec<BTreeMap<i64, String>> = rt.block_on(futures::future::join_all(
        regions.iter().map(|r| r.versions()),
    ));
    let out = bakery(&[
        "deploy",
        "--manifest",
        m,
        "--asg",
        &api,
        "--strategy",
        "swap",
    ]);
    out.assert_ok();
    let res = by_region(&out.json());
    assert_eq!(out.json()["status"], "succeeded");
    // Under CI (stderr a pipe) the deploy ends with one timestamped line saying what changed.
    let last = final_line(&out.stderr, &format!("deployed {api} (swap) in "));
    for r in &regions {
        assert!(
            last.contains(&format!(
                "{}: {api} launches {} (launch template {} version 2, was ",
                r.region, r.new_ami, r.lt_id
            )),
            "{}: {last}",
            r.region
        );
    }
    rt.block_on(async {
        for (i, r) in regions.iter().enumerate() {
            let d = &res[&r.region]["detail"];
            assert_eq!(d["new_version"], 2, "{d}");
            let v = r.versions().await;
            only_image_differs(&before[i][&1], &v[&2], &r.old_ami, &r.new_ami);
            let g = r.describe(&api).await.unwrap();
            let spec = g.launch_template().unwrap();
            let (default, latest) = r.template().await;
            match follows[i] {
                "1" => {
                    assert_eq!(
                        (spec.version(), d["applied"].as_str()),
                        (Some("2"), Some("asg"))
                    );
                    assert_eq!(default, 1);
                }
                "$Default" => {
                    assert_eq!(
                        (spec.version(), d["applied"].as_str()),
                        (Some("$Default"), Some("default"))
                    );
                    assert_eq!(default, 2);
                }
                _ => {
                    assert_eq!(
                        (spec.version(), d["applied"].as_str()),
                        (Some("$Latest"), Some("latest"))
                    );
                    assert_eq!((default, latest), (1, 2));
                }
            }
            // Named as before (by name), and the record for rollback is on the group.
            assert_eq!(spec.launch_template_name(), Some(r.lt_name.as_str()));
            assert!(g.tags().iter().any(|t| t.key() == Some("bakery:swap")));
        }
    });

    // Swap rollback: exactly what was there before.
    let regions_arg = REGIONS.join(",");
    let rb = bakery(&["rollback", "--asg", &api, "--region", &regions_arg]);
    rb.assert_ok();
    let last = final_line(&rb.stderr, &format!("rolled back {api} in "));
    for r in &regions {
        assert!(
            last.contains(&format!(
                "{}: {api} back on launch template version ",
                r.region
            )),
            "{}: {last}",
            r.region
        );
    }
    rt.block_on(async {
        for (i, r) in regions.iter().enumerate() {
            let g = r.describe(&api).await.unwrap();
            assert_eq!(g.launch_template().unwrap().version(), Some(follows[i]));
            assert_eq!(
                g.launch_template().unwrap().launch_template_name(),
                Some(r.lt_name.as_str())
            );
            let (default, latest) = r.template().await;
            assert_eq!(default, 1, "{}", r.region);
            if follows[i] == "$Latest" {
                assert_eq!(latest, 1, "the version made for $Latest is deleted");
                assert!(!r.versions().await.contains_key(&2));
            }
        }
    });
    // A second rollback has nothing to undo: input error.
    let again = bakery(&["rollback", "--asg", &api, "--region", "us-east-1"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.error_line().contains("already rolled back"),
        "{}",
        again.error_line()
    );
    // The swap group shares the target group: take it away before the cluster uses it.
    rt.block_on(async {
        for r in &regions {
            r.asg()
                .delete_auto_scaling_group()
                .auto_scaling_group_name(&api)
                .force_delete(true)
                .send()
                .await
                .unwrap();
            assert!(r.targets().await.is_empty());
        }
    });

    // --- red/black: cluster generation v000 on the old image.
    let cluster = unique("app").replace('-', "") + "-prod-main";
    let v000 = format!("{cluster}-v000");
    let v001 = format!("{cluster}-v001");
    rt.block_on(async {
        for r in &regions {
            r.group(&v000, "1", 2).await;
            r.asg()
                .put_scaling_policy()
                .auto_scaling_group_name(&v000)
                .policy_name("cpu")
                .policy_type("TargetTrackingScaling")
                .target_tracking_configuration(
                    aws_sdk_autoscaling::types::TargetTrackingConfiguration::builder()
                        .predefined_metric_specification(aws_sdk_autoscaling::types::PredefinedMetricSpecification::builder().predefined_metric_type(aws_sdk_autoscaling::types::MetricType::AsgAverageCpuUtilization).build())
                        .target_value(50.0)
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
    });
    let old_instances: Vec<BTreeSet<String>> = rt.block_on(futures::future::join_all(
        regions.iter().map(|r| r.instance_ids(&v000)),
    ));
    let out = bakery(&[
        "deploy",
        "--manifest",
        m,
        "--cluster",
        &cluster,
        "--strategy",
        "red-black",
        "--waves",
        "us-east-1:eu-west-1,us-west-2",
    ]);
    out.assert_ok();
    let res = by_region(&out.json());
    rt.block_on(async {
        for (i, r) in regions.iter().enumerate() {
            assert_eq!(res[&r.region]["detail"]["serving"], v001.as_str());
            let new = r.describe(&v001).await.expect("v001 exists");
            let old = r.describe(&v000).await.unwrap();
            assert_eq!(
                (new.min_size(), new.max_size(), new.desired_capacity()),
                (old.min_size(), old.max_size(), old.desired_capacity())
            );
            assert_eq!(new.vpc_zone_identifier(), old.vpc_zone_identifier());
            assert_eq!(new.target_group_arns(), std::slice::from_ref(&r.tg));
            assert_eq!(new.health_check_type(), Some("ELB"));
            assert!(new.tags().iter().any(|t| t.key() == Some("team")
                && t.value() == Some("payments")
                && t.propagate_at_launch() == Some(true)));
            let pols = r
                .asg()
                .describe_policies()
                .auto_scaling_group_name(&v001)
                .send()
                .await
                .unwrap();
            assert_eq!(
                pols.scaling_policies()
                    .iter()
                    .map(|p| p.policy_name().unwrap())
                    .collect::<Vec<_>>(),
                ["cpu"]
            );
            // v001 launches a version that is v000's with only the image changed.
            let spec = new.launch_template().unwrap();
            let vnum: i64 = spec.version().unwrap().parse().unwrap();
            let v = r.versions().await;
            only_image_differs(&v[&1], &v[&vnum], &r.old_ami, &r.new_ami);
            assert!(r.images_of(&v001).await.values().all(|i| i == &r.new_ami));
            // Traffic: exactly v001's instances, healthy; v000 disabled but still running.
            let new_ids = r.instance_ids(&v001).await;
            assert_eq!(new_ids.len(), 2);
            let t = r.targets().await;
            assert_eq!(t.keys().cloned().collect::<BTreeSet<_>>(), new_ids);
            assert!(t.values().all(|s| s == "healthy"));
            assert_eq!(
                r.suspended(&v000).await,
                ["AddToLoadBalancer", "Launch", "Terminate"]
                    .map(String::from)
                    .into()
            );
            assert_eq!(r.instance_ids(&v000).await, old_instances[i]);
            assert!(r.suspended(&v001).await.is_empty());
        }
    });

    // status: both generations, v001 serving with its appversion, no deploy in progress.
    let st = bakery(&[
        "status",
        "--cluster",
        &cluster,
        "--region",
        &regions_arg,
        "--json",
    ]);
    st.assert_ok();
    for r in st.json()["regions"].as_array().unwrap() {
        assert_eq!(r["serving"], v001.as_str());
        assert!(r["in_progress"].is_null());
        let gens = r["generations"].as_array().unwrap();
        assert_eq!(gens.len(), 2);
        assert_eq!(
            (
                gens[0]["name"].as_str(),
                gens[0]["appversion"].as_str(),
                gens[0]["serving"].as_bool()
            ),
            (Some(v001.as_str()), Some("app-1.1-1"), Some(true))
        );
        assert_eq!(
            (gens[1]["appversion"].as_str(), gens[1]["enabled"].as_bool()),
            (Some("app-1.0-1"), Some(false))
        );
        assert!(gens[0]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["targets"]
                .as_object()
                .unwrap()
                .values()
                .all(|s| s == "healthy")));
    }

    let table = bakery(&["status", "--cluster", &cluster, "--region", "eu-west-1"]);
    table.assert_ok();
    let line = table
        .stdout
        .lines()
        .find(|l| l.contains(&v001))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("serving") && line.contains("app-1.1-1") && line.contains("2/2 healthy"),
        "{}",
        table.stdout
    );

    // rollback, no manifest: v000 serves again, v001 disabled but kept.
    let rb = bakery(&["rollback", "--cluster", &cluster, "--region", &regions_arg]);
    rb.assert_ok();
    rt.block_on(async {
        for (i, r) in regions.iter().enumerate() {
            assert!(r.suspended(&v000).await.is_empty());
            assert_eq!(
                r.targets().await.keys().cloned().collect::<BTreeSet<_>>(),
                old_instances[i]
            );
            assert_eq!(r.suspended(&v001).await.len(), 3);
            assert_eq!(r.instance_ids(&v001).await.len(), 2);
        }
    });

    // Deploy again with --keep 2: v002 from v000; v001 (neither serving nor the rollback target) goes.
    let v001_version: i64 = rt
        .block_on(regions[0].describe(&v001))
        .unwrap()
        .launch_template()
        .unwrap()
        .version()
        .unwrap()
        .parse()
        .unwrap();
    let out = bakery(&[
        "deploy",
        "--manifest",
        m,
        "--cluster",
        &cluster,
        "--keep",
        "2",
        "--region",
        "us-east-1",
    ]);
    out.assert_ok();
    let r = &regions[0];
    rt.block_on(async {
        assert!(r.describe(&format!("{cluster}-v002")).await.is_some());
        assert!(
            r.describe(&v001).await.is_none(),
            "v001 deleted by retention"
        );
        let v = r.versions().await;
        assert!(
            !v.contains_key(&v001_version) && v.contains_key(&1) && v.len() == 3,
            "v001's version {v001_version} goes with it: {:?}",
            v.keys()
        );
        assert!(
            r.describe(&v000).await.is_some(),
            "the generation rollback needs is kept"
        );
        assert_eq!(
            r.targets().await.keys().cloned().collect::<BTreeSet<_>>(),
            r.instance_ids(&format!("{cluster}-v002")).await
        );
    });
    // The other regions were not touched by a deploy narrowed to us-east-1.
    rt.block_on(async {
        assert!(regions[1]
            .describe(&format!("{cluster}-v002"))
            .await
            .is_none());
    });
}

// --- rolling ------------------------------------------------------------------------------

#[test]
fn rolling_replaces_every_instance_and_a_failed_one_rolls_back() {
    let _emu = emulator();
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let r = rt.block_on(Region::new(&ctx, "us-east-1"));
    let good = unique("web");
    rt.block_on(r.group(&good, "1", 3));
    let before = rt.block_on(r.instance_ids(&good));
    let out = bakery(&[
        "deploy",
        "--image",
        &r.new_ami,
        "--region",
        "us-east-1",
        "--asg",
        &good,
        "--strategy",
        "rolling",
        "--min-healthy-percentage",
        "66",
    ]);
    out.assert_ok();
    assert_eq!(
        out.json()["regions"][0]["detail"]["replaced_with"],
        "batches",
        "{}",
        out.stdout
    );
    rt.block_on(async {
        let imgs = r.images_of(&good).await;
        assert_eq!(imgs.len(), 3);
        assert!(imgs.values().all(|i| i == &r.new_ami), "{imgs:?}");
        assert!(imgs.keys().all(|i| !before.contains(i)));
        assert_eq!(
            r.targets().await.keys().cloned().collect::<BTreeSet<_>>(),
            r.instance_ids(&good).await
        );
        assert_eq!(
            r.describe(&good)
                .await
                .unwrap()
                .launch_template()
                .unwrap()
                .version(),
            Some("2")
        );
    });

    // A new image that never becomes healthy: stop, point back, replace what was launched.
    let bad_ami = rt.block_on(deploy::app_ami(&ctx, "us-east-1", "app-1.2-1"));
    rt.block_on(r.mark_unhealthy(&bad_ami));
    let before = rt.block_on(r.instance_ids(&good));
    let out = bakery(&[
        "deploy",
        "--image",
        &bad_ami,
        "--region",
        "us-east-1",
        "--asg",
        &good,
        "--strategy",
        "rolling",
        "--wait-timeout",
        "2",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line()
            .contains("rolled back to launch template version 2"),
        "{}",
        out.error_line()
    );
    rt.block_on(async {
        let g = r.describe(&good).await.unwrap();
        assert_eq!(g.launch_template().unwrap().version(), Some("2"));
        assert!(
            !r.versions().await.contains_key(&3),
            "the failed version is deleted"
        );
        let imgs = r.images_of(&good).await;
        assert_eq!(imgs.len(), 3);
        assert!(imgs.values().all(|i| i == &r.new_ami), "{imgs:?}");
        let t = r.targets().await;
        assert_eq!(
            t.keys().cloned().collect::<BTreeSet<_>>(),
            r.instance_ids(&good).await
        );
        assert!(t.values().all(|s| s == "healthy"), "{t:?}");
        assert!(before.len() == 3);
    });
}

// --- red/black failure and the canary gate -------------------------------------------------

#[test]
fn red_black_that_never_gets_healthy_leaves_nothing_and_the_old_generation_serving() {
    let _emu = emulator();
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let r = rt.block_on(Region::new(&ctx, "eu-west-1"));
    let cluster = unique("shop").replace('-', "") + "-prod";
    let v000 = format!("{cluster}-v000");
    rt.block_on(r.group(&v000, "$Default", 2));
    rt.block_on(r.mark_unhealthy(&r.new_ami));
    let ids = rt.block_on(r.instance_ids(&v000));
    let versions = rt.block_on(r.versions());
    let out = bakery(&[
        "deploy",
        "--image",
        &r.new_ami,
        "--region",
        "eu-west-1",
        "--cluster",
        &cluster,
        "--wait-timeout",
        "2",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("healthy in every target group"),
        "{}",
        out.error_line()
    );
    rt.block_on(async {
        assert!(
            r.describe(&format!("{cluster}-v001")).await.is_none(),
            "the new generation is deleted"
        );
        assert_eq!(
            r.versions().await,
            versions,
            "the version made for it is deleted"
        );
        assert!(r.suspended(&v000).await.is_empty());
        assert_eq!(
            r.targets().await.keys().cloned().collect::<BTreeSet<_>>(),
            ids
        );
    });
}

#[test]
fn canary_passes_then_fails_by_the_judges_score() {
    let _emu = emulator();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let ctx = rt.block_on(AwsContext::load());
    let r = rt.block_on(Region::new(&ctx, "us-west-2"));
    let cluster = unique("cart").replace('-', "") + "-prod";
    let v000 = format!("{cluster}-v000");
    rt.block_on(r.group(&v000, "$Latest", 3));
    let metrics = dir.path().join("metrics.json");
    let judge_config = json!({"metrics": metrics}).to_string();
    let canary = |image: &str| {
        bakery(&[
            "deploy",
            "--image",
            image,
            "--region",
            "us-west-2",
            "--cluster",
            &cluster,
            "--canary-size",
            "1",
            "--canary-minutes",
            "0.001",
            "--judge",
            "judge-metrics-file",
            "--judge-config",
            &judge_config,
            "--min-score",
            "95",
        ])
    };
    std::fs::write(&metrics, r#"{"baseline": {"error_rate": 0.01, "latency_ms": 100}, "canary": {"error_rate": 0.01, "latency_ms": 101}}"#).unwrap();
    let out = canary(&r.new_ami);
    out.assert_ok();
    assert_eq!(out.json()["regions"][0]["detail"]["canary_score"], 100.0);
    let v001 = format!("{cluster}-v001");
    rt.block_on(async {
        let g = r.describe(&v001).await.unwrap();
        assert_eq!(
            (g.min_size(), g.desired_capacity()),
            (Some(3), Some(3)),
            "the canary grew to full size"
        );
        // v000 followed $Latest: pinned to the version it ran, so a rollback brings back the old image.
        assert_eq!(
            r.describe(&v000)
                .await
                .unwrap()
                .launch_template()
                .unwrap()
                .version(),
            Some("1")
        );
        assert_eq!(
            r.targets().await.keys().cloned().collect::<BTreeSet<_>>(),
            r.instance_ids(&v001).await
        );
    });

    // A bad canary: torn down, v001 keeps serving.
    let next = rt.block_on(deploy::app_ami(&ctx, "us-west-2", "app-1.2-1"));
    std::fs::write(&metrics, r#"{"baseline": {"error_rate": 0.01, "latency_ms": 100}, "canary": {"error_rate": 0.05, "latency_ms": 100}}"#).unwrap();
    let out = canary(&next);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("below --min-score 95"),
        "{}",
        out.error_line()
    );
    rt.block_on(async {
        assert!(
            r.describe(&format!("{cluster}-v002")).await.is_none(),
            "the canary is torn down"
        );
        assert!(r.suspended(&v001).await.is_empty());
        assert_eq!(
            r.targets().await.keys().cloned().collect::<BTreeSet<_>>(),
            r.instance_ids(&v001).await
        );
    });
}

// --- mixed instances policy, launch template by id, hooks ----------------------------------

/// A webhook receiver: collects the JSON bodies POSTed to it.
fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice(&body) {
                g.lock().unwrap().push(v);
            }
            let _ = (&s).write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    (url, got)
}

#[test]
fn swap_of_a_mixed_instances_group_by_template_id_notifies_the_webhook() {
    let _emu = emulator();
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let r = rt.block_on(Region::new(&ctx, "us-east-1"));
    let name = unique("mixed");
    rt.block_on(async {
        use aws_sdk_autoscaling::types::{
            InstancesDistribution, LaunchTemplate, LaunchTemplateOverrides, MixedInstancesPolicy,
        };
        r.asg()
            .create_auto_scaling_group()
            .auto_scaling_group_name(&name)
            .mixed_instances_policy(
                MixedInstancesPolicy::builder()
                    .launch_template(
                        LaunchTemplate::builder()
                            .launch_template_specification(
                                LaunchTemplateSpecification::builder()
                                    .launch_template_id(&r.lt_id)
                                    .version("1")
                                    .build(),
                            )
                            .overrides(
                                LaunchTemplateOverrides::builder()
                                    .instance_type("t3.micro")
                                    .build(),
                            )
                            .overrides(
                                LaunchTemplateOverrides::builder()
                                    .instance_type("t3.small")
                                    .build(),
                            )
                            .build(),
                    )
                    .instances_distribution(
                        InstancesDistribution::builder()
                            .on_demand_base_capacity(1)
                            .build(),
                    )
                    .build(),
            )
            .min_size(1)
            .max_size(2)
            .desired_capacity(1)
            .vpc_zone_identifier(&r.subnets)
            .send()
            .await
            .unwrap();
    });
    let (url, got) = webhook();
    let cfg = format!("notify-webhook={}", json!({"url": url}));
    let out = bakery(&[
        "deploy",
        "--image",
        &r.new_ami,
        "--region",
        "us-east-1",
        "--asg",
        &name,
        "--plugin",
        "notify-webhook",
        "--plugin-config",
        &cfg,
    ]);
    out.assert_ok();
    rt.block_on(async {
        let g = r.describe(&name).await.unwrap();
        let p = g.mixed_instances_policy().unwrap();
        let lt = p.launch_template().unwrap();
        let spec = lt.launch_template_specification().unwrap();
        assert_eq!(
            (spec.launch_template_id(), spec.version()),
            (Some(r.lt_id.as_str()), Some("2"))
        );
        assert_eq!(lt.overrides().len(), 2, "overrides kept");
        assert_eq!(
            p.instances_distribution()
                .unwrap()
                .on_demand_base_capacity(),
            Some(1)
        );
    });
    let texts: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].contains("swap deploy to asg") && texts[0].contains("started"),
        "{texts:?}"
    );
    assert!(texts[1].contains("succeeded"), "{texts:?}");
    bakery(&[
        "rollback",
        "--asg",
        &name,
        "--region",
        "us-east-1",
        "--plugin",
        "notify-webhook",
        "--plugin-config",
        &cfg,
    ])
    .assert_ok();
    rt.block_on(async {
        let g = r.describe(&name).await.unwrap();
        assert_eq!(
            g.mixed_instances_policy()
                .unwrap()
                .launch_template()
                .unwrap()
                .launch_template_specification()
                .unwrap()
                .version(),
            Some("1")
        );
    });
    let texts: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        texts.len() == 3 && texts[2].contains("rollback of"),
        "{texts:?}"
    );
}

// --- bad input: one line, exit 2, nothing changed -----------------------------------------

#[test]
fn bad_input_is_one_line_exit_2_and_changes_nothing() {
    let _emu = emulator();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let ctx = rt.block_on(AwsContext::load());
    let r = rt.block_on(Region::new(&ctx, "us-east-1"));
    let other = rt.block_on(Region::new(&ctx, "eu-west-1"));
    let name = unique("api");
    rt.block_on(r.group(&name, "1", 1));
    let lc_group = unique("legacy");
    rt.block_on(async {
        let lc = unique("lc");
        r.asg()
            .create_launch_configuration()
            .launch_configuration_name(&lc)
            .image_id(&r.old_ami)
            .instance_type("t3.micro")
            .send()
            .await
            .unwrap();
        r.asg()
            .create_auto_scaling_group()
            .auto_scaling_group_name(&lc_group)
            .launch_configuration_name(&lc)
            .min_size(0)
            .max_size(1)
            .desired_capacity(0)
            .vpc_zone_identifier(&r.subnets)
            .send()
            .await
            .unwrap();
    });
    let m = manifest(dir.path(), &[&r]);
    let m = m.to_str().unwrap();
    let versions = rt.block_on(r.versions());
    let groups = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            r.asg()
                .describe_auto_scaling_groups()
                .send()
                .await
                .unwrap()
                .auto_scaling_groups()
                .len()
        })
    };
    let n_groups = groups(&rt);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["deploy", "--manifest", m, "--asg", "no-such-group"],
            "no Auto Scaling group named no-such-group in us-east-1",
        ),
        (
            vec!["deploy", "--manifest", m, "--asg", &lc_group],
            "uses launch configuration",
        ),
        (
            vec![
                "deploy",
                "--manifest",
                m,
                "--asg",
                &name,
                "--region",
                "ap-south-1",
            ],
            "has no AMI for region ap-south-1",
        ),
        (
            vec![
                "deploy",
                "--image",
                &other.new_ami,
                "--region",
                "us-east-1",
                "--asg",
                &name,
            ],
            "is not in region us-east-1",
        ),
        (
            vec![
                "deploy",
                "--manifest",
                m,
                "--cluster",
                "nothing-here-prod",
                "--canary-size",
                "1",
                "--judge",
                "no-such-judge",
            ],
            "judge plugin",
        ),
        (
            vec!["deploy", "--manifest", m, "--cluster", "nothing-here-prod"],
            "cluster nothing-here-prod has no generation in us-east-1",
        ),
        (
            vec![
                "deploy",
                "--manifest",
                m,
                "--asg",
                &name,
                "--strategy",
                "red-black",
            ],
            "use --cluster",
        ),
        (
            vec![
                "rollback",
                "--cluster",
                "nothing-here-prod",
                "--region",
                "us-east-1",
            ],
            "no generation",
        ),
    ];
    for (args, want) in cases {
        let out = bakery(&args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        let line = out.error_line();
        assert!(line.contains(want), "{args:?}: {line}");
        assert_eq!(
            out.stderr
                .lines()
                .filter(|l| l.starts_with("bakery: error:"))
                .count(),
            1
        );
    }
    assert_eq!(
        rt.block_on(r.versions()),
        versions,
        "no launch template version made"
    );
    assert_eq!(groups(&rt), n_groups, "no group made");
    assert_eq!(
        rt.block_on(r.describe(&name))
            .unwrap()
            .launch_template()
            .unwrap()
            .version(),
        Some("1")
    );
}

// --- an interrupted deploy: status shows it, a rerun resumes it, or rollback removes it ------

#[test]
fn an_interrupted_red_black_is_shown_then_resumed_or_rolled_back() {
    let _emu = emulator();
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let r = rt.block_on(Region::new(&ctx, "eu-west-1"));
    let cluster = unique("pay").replace('-', "") + "-prod";
    let (v000, v001) = (format!("{cluster}-v000"), format!("{cluster}-v001"));
    rt.block_on(r.group(&v000, "1", 2));
    // The new generation stays unhealthy, so the deploy waits: kill -9 it mid-wait.
    let kill_mid_wait = |image: &str, generation: &str| {
        rt.block_on(r.mark_unhealthy(image));
        let mut child = spawn_deploy(
            &[
                "--image",
                image,
                "--region",
                "eu-west-1",
                "--cluster",
                &cluster,
            ],
            &[],
        );
        wait_for(&format!("{generation} with 2 instances"), || {
            rt.block_on(r.instance_ids(generation)).len() >= 2
        });
        child.kill().unwrap();
        child.wait().unwrap();
    };

    kill_mid_wait(&r.new_ami, &v001);
    rt.block_on(async {
        ctx.ec2("eu-west-1")
            .delete_tags()
            .resources(&r.new_ami)
            .tags(aws_sdk_ec2::types::Tag::builder().key(UNHEALTHY).build())
            .send()
            .await
            .unwrap();
    });
    let st = bakery(&[
        "status",
        "--cluster",
        &cluster,
        "--region",
        "eu-west-1",
        "--json",
    ]);
    st.assert_ok();
    let reg = &st.json()["regions"][0];
    assert_eq!(
        (
            reg["serving"].as_str(),
            reg["in_progress"]["generation"].as_str(),
            reg["in_progress"]["phase"].as_str()
        ),
        (Some(v000.as_str()), Some(v001.as_str()), Some("deploying")),
        "{reg}"
    );
    // Another image while it is in progress: refused, nothing changes.
    let other = rt.block_on(deploy::app_ami(&ctx, "eu-west-1", "app-9-1"));
    let out = bakery(&[
        "deploy",
        "--image",
        &other,
        "--region",
        "eu-west-1",
        "--cluster",
        &cluster,
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.error_line().contains("is in progress"),
        "{}",
        out.error_line()
    );
    // The same deploy again resumes it: same generation, finished.
    let out = bakery(&[
        "deploy",
        "--image",
        &r.new_ami,
        "--region",
        "eu-west-1",
        "--cluster",
        &cluster,
    ]);
    out.assert_ok();
    assert_eq!(out.json()["regions"][0]["detail"]["resumed"], true);
    rt.block_on(async {
        assert!(r.describe(&format!("{cluster}-v002")).await.is_none());
        assert_eq!(
            r.targets().await.keys().cloned().collect::<BTreeSet<_>>(),
            r.instance_ids(&v001).await
        );
        assert_eq!(r.suspended(&v000).await.len(), 3);
    });

    // Interrupt the next one and roll it back instead: the half-made generation goes.
    let next = rt.block_on(deploy::app_ami(&ctx, "eu-west-1", "app-1.3-1"));
    let v002 = format!("{cluster}-v002");
    let versions = rt.block_on(r.versions());
    kill_mid_wait(&next, &v002);
    bakery(&["rollback", "--cluster", &cluster, "--region", "eu-west-1"]).assert_ok();
    rt.block_on(async {
        assert!(
            r.describe(&v002).await.is_none(),
            "the interrupted generation is deleted"
        );
        assert_eq!(
            r.versions().await,
            versions,
            "and its launch template version"
        );
        assert_eq!(
            r.targets().await.keys().cloned().collect::<BTreeSet<_>>(),
            r.instance_ids(&v001).await
        );
        assert!(r.suspended(&v001).await.is_empty());
    });
}

// --- waves: a failed wave stops the later ones ---------------------------------------------

#[test]
fn a_failed_wave_stops_the_later_waves() {
    let _emu = emulator();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let ctx = rt.block_on(AwsContext::load());
    let first = rt.block_on(Region::new(&ctx, "us-east-1"));
    let second = rt.block_on(Region::new(&ctx, "us-west-2"));
    let cluster = unique("feed").replace('-', "") + "-prod";
    let v000 = format!("{cluster}-v000");
    // v000 follows $Latest: the deploy pins it while it runs, and lets it follow $Latest again after failing.
    rt.block_on(async {
        first.group(&v000, "$Latest", 1).await;
        second.group(&v000, "$Latest", 1).await;
        first.mark_unhealthy(&first.new_ami).await;
    });
    let m = manifest(dir.path(), &[&first, &second]);
    let out = bakery(&[
        "deploy",
        "--manifest",
        m.to_str().unwrap(),
        "--cluster",
        &cluster,
        "--waves",
        "us-east-1:us-west-2",
        "--wait-timeout",
        "1",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let res = by_region(&out.json());
    assert_eq!(
        (
            res["us-east-1"]["status"].as_str(),
            res["us-west-2"]["status"].as_str()
        ),
        (Some("failed"), Some("skipped"))
    );
    rt.block_on(async {
        for r in [&first, &second] {
            assert!(
                r.describe(&format!("{cluster}-v001")).await.is_none(),
                "{}",
                r.region
            );
            assert!(r.suspended(&v000).await.is_empty());
            assert_eq!(
                r.versions().await.len(),
                1,
                "{}: no version left behind",
                r.region
            );
            assert_eq!(
                r.describe(&v000)
                    .await
                    .unwrap()
                    .launch_template()
                    .unwrap()
                    .version(),
                Some("$Latest")
            );
        }
    });
}

// --- a pre-deploy plugin that refuses stops the deploy before anything changes -----------------

#[test]
fn a_failing_pre_deploy_plugin_stops_the_deploy_before_anything_changes() {
    let _emu = emulator();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let ctx = rt.block_on(AwsContext::load());
    let r = rt.block_on(Region::new(&ctx, "us-west-2"));
    let name = unique("api");
    rt.block_on(r.group(&name, "1", 1));
    let plugin = dir.path().join("bakery-plugin-freeze");
    std::fs::write(&plugin, "#!/bin/sh\ncat >/dev/null\n[ \"$1\" = pre-deploy ] || exit 0\necho 'change freeze until Monday' >&2\nexit 3\n").unwrap();
    support::chmod(&plugin, 0o755);
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_bakery"));
    c.args([
        "deploy",
        "--image",
        &r.new_ami,
        "--region",
        "us-west-2",
        "--asg",
        &name,
        "--plugin",
        "freeze",
    ])
    .env("PATH", path)
    .current_dir(support::repo());
    let out = support::run(&mut c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("change freeze until Monday"),
        "{}",
        out.error_line()
    );
    assert_eq!(rt.block_on(r.versions()).len(), 1);
    assert_eq!(
        rt.block_on(r.describe(&name))
            .unwrap()
            .launch_template()
            .unwrap()
            .version(),
        Some("1")
    );
}

// --- Ctrl-C: the deploy stops waiting, rolls back, exits 130; a killed rolling deploy resumes ----

/// `bakery deploy ARGS` started in the background against the emulator.
fn spawn_deploy(args: &[&str], extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_bakery"))
        .arg("deploy")
        .args(args)
        .args(extra)
        .env("BAKERY_DEPLOY_POLL_MS", "50")
        .env("RUST_LOG", "bakery=info")
        .current_dir(support::repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_during_a_red_black_deploy_rolls_it_back_and_exits_130() {
    let _emu = emulator();
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let r = rt.block_on(Region::new(&ctx, "us-west-2"));
    let cluster = unique("sig").replace('-', "") + "-prod";
    let (v000, v001) = (format!("{cluster}-v000"), format!("{cluster}-v001"));
    // v000 follows $Latest, so the deploy also pins it while it runs: that is undone too.
    rt.block_on(r.group(&v000, "$Latest", 2));
    rt.block_on(r.mark_unhealthy(&r.new_ami));
    let ids = rt.block_on(r.instance_ids(&v000));
    let versions = rt.block_on(r.versions());
    let template = rt.block_on(r.template());
    let (url, got) = webhook();
    let cfg = format!("notify-webhook={}", json!({"url": url}));
    let child = spawn_deploy(
        &[
            "--image",
            &r.new_ami,
            "--region",
            "us-west-2",
            "--cluster",
            &cluster,
            "--wait-timeout",
            "600",
        ],
        &["--plugin", "notify-webhook", "--plugin-config", &cfg],
    );
    // Once the new generation exists (and the deploy waits for it to get healthy): Ctrl-C.
    wait_for(&format!("{v001} with 2 instances"), || {
        rt.block_on(r.instance_ids(&v001)).len() == 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("bakery: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("interrupted") && errors[0].contains("rolled back in us-west-2"),
        "{}",
        errors[0]
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["regions"][0]["status"].as_str()),
        (Some("interrupted"), Some("interrupted")),
        "{v}"
    );
    rt.block_on(async {
        assert!(
            r.describe(&v001).await.is_none(),
            "the new generation is deleted"
        );
        assert_eq!(
            r.versions().await,
            versions,
            "no launch template version left"
        );
        assert_eq!(r.template().await, template);
        let g = r.describe(&v000).await.unwrap();
        assert_eq!(
            g.launch_template().unwrap().version(),
            Some("$Latest"),
            "v000 follows $Latest again"
        );
        assert!(r.suspended(&v000).await.is_empty(), "v000 still enabled");
        assert_eq!(r.instance_ids(&v000).await, ids);
        let t = r.targets().await;
        assert_eq!(t.keys().cloned().collect::<BTreeSet<_>>(), ids);
        assert!(t.values().all(|s| s == "healthy"), "{t:?}");
    });
    // The deploy-failed hook ran.
    let texts: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1].contains("failed"), "{texts:?}");
}

#[test]
fn a_killed_rolling_deploy_is_finished_by_running_it_again() {
    let _emu = emulator();
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let r = rt.block_on(Region::new(&ctx, "eu-west-1"));
    let name = unique("roll");
    rt.block_on(r.group(&name, "1", 3));
    let before = rt.block_on(r.instance_ids(&name));
    let args = [
        "--image",
        r.new_ami.as_str(),
        "--region",
        "eu-west-1",
        "--asg",
        name.as_str(),
        "--strategy",
        "rolling",
        "--replace-with",
        "batches",
        "--min-healthy-percentage",
        "66",
    ];
    // One instance per batch, and a long warm-up after each: kill -9 once the first replacement is healthy.
    let mut child = spawn_deploy(&args, &["--instance-warmup", "600"]);
    wait_for("a healthy instance on the new image", || {
        rt.block_on(async {
            let t = r.targets().await;
            r.images_of(&name).await.iter().any(|(id, img)| {
                img == &r.new_ami && t.get(id).map(String::as_str) == Some("healthy")
            })
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let old_left = rt.block_on(async {
        r.images_of(&name)
            .await
            .values()
            .filter(|i| **i == r.old_ami)
            .count()
    });
    assert_eq!(old_left, 2, "killed after the first batch");

    // The same deploy again: the template already has the image; the two old instances go.
    let out = bakery(&[&["deploy"][..], &args[..]].concat());
    out.assert_ok();
    let d = &out.json()["regions"][0]["detail"];
    assert_eq!(
        (d["resumed"].as_bool(), d["replaced"].as_u64()),
        (Some(true), Some(2)),
        "{d}"
    );
    rt.block_on(async {
        let imgs = r.images_of(&name).await;
        assert_eq!(imgs.len(), 3);
        assert!(imgs.values().all(|i| i == &r.new_ami), "{imgs:?}");
        assert!(imgs.keys().all(|i| !before.contains(i)));
        let g = r.describe(&name).await.unwrap();
        assert_eq!(g.launch_template().unwrap().version(), Some("2"));
        assert_eq!(
            r.versions().await.len(),
            2,
            "no new version made by the rerun"
        );
        let rec: Value = serde_json::from_str(
            g.tags()
                .iter()
                .find(|t| t.key() == Some("bakery:swap"))
                .unwrap()
                .value()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(rec["ph"], "done", "{rec}");
        let t = r.targets().await;
        assert_eq!(
            t.keys().cloned().collect::<BTreeSet<_>>(),
            r.instance_ids(&name).await
        );
        assert!(t.values().all(|s| s == "healthy"), "{t:?}");
    });
    // Once more: nothing to do.
    let out = bakery(&[&["deploy"][..], &args[..]].concat());
    out.assert_ok();
    assert_eq!(out.json()["regions"][0]["detail"]["replaced"], 0);
}

#[test]
fn ctrl_c_during_a_rolling_deploy_rolls_it_back_and_a_second_one_says_how_to_finish() {
    let _emu = emulator();
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let r = rt.block_on(Region::new(&ctx, "us-west-2"));
    let sigint = |child: &std::process::Child| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    };
    let healthy_new = |name: &str| {
        rt.block_on(async {
            let t = r.targets().await;
            r.images_of(name).await.iter().any(|(id, img)| {
                img == &r.new_ami && t.get(id).map(String::as_str) == Some("healthy")
            })
        })
    };
    let all_on = |name: &str, image: &str| {
        rt.block_on(async {
            let imgs = r.images_of(name).await;
            assert_eq!(imgs.len(), 3);
            assert!(imgs.values().all(|i| i == image), "{imgs:?}");
            let t = r.targets().await;
            let ids = r.instance_ids(name).await;
            assert!(
                ids.iter()
                    .all(|i| t.get(i).map(String::as_str) == Some("healthy")),
                "{t:?}"
            );
        })
    };
    let stderr_of = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // One Ctrl-C while it pauses at a checkpoint after the first batch: everything goes back.
    let a = unique("roll");
    rt.block_on(r.group(&a, "1", 3));
    let common = [
        "--image",
        r.new_ami.as_str(),
        "--region",
        "us-west-2",
        "--strategy",
        "rolling",
        "--replace-with",
        "batches",
        "--min-healthy-percentage",
        "66",
    ];
    let child = spawn_deploy(
        &common,
        &[
            "--asg",
            &a,
            "--checkpoints",
            "30",
            "--checkpoint-delay",
            "600",
        ],
    );
    wait_for("a healthy instance on the new image", || healthy_new(&a));
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let line = err
        .lines()
        .filter(|l| l.starts_with("bakery: error:"))
        .collect::<Vec<_>>();
    assert!(
        line.len() == 1 && line[0].contains("interrupted: rolled back in us-west-2"),
        "{err}"
    );
    all_on(&a, &r.old_ami);
    rt.block_on(async {
        let g = r.describe(&a).await.unwrap();
        assert_eq!(g.launch_template().unwrap().version(), Some("1"));
        assert!(
            !r.versions().await.contains_key(&2),
            "the version made is deleted"
        );
        let rec: Value = serde_json::from_str(
            g.tags()
                .iter()
                .find(|t| t.key() == Some("bakery:swap"))
                .unwrap()
                .value()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(rec["ph"], "failed", "{rec}");
    });

    // A second Ctrl-C during that rollback stops it; the line says what finishes it, and that does.
    let b = unique("roll");
    rt.block_on(r.group(&b, "1", 3));
    let before = rt.block_on(r.versions()).len();
    let child = spawn_deploy(&common, &["--asg", &b, "--instance-warmup", "600"]);
    wait_for("a healthy instance on the new image", || healthy_new(&b));
    sigint(&child);
    wait_for("the rollback to point the group back at version 1", || {
        rt.block_on(r.describe(&b))
            .unwrap()
            .launch_template()
            .unwrap()
            .version()
            == Some("1")
    });
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let line = err
        .lines()
        .filter(|l| l.starts_with("bakery: error:"))
        .collect::<Vec<_>>();
    assert_eq!(line.len(), 1, "{err}");
    let finish = format!("`bakery rollback --asg {b} --region us-west-2` puts version 1 back, then `bakery deploy --strategy rolling --image {} --asg {b} --region us-west-2`", r.old_ami);
    assert!(
        line[0].contains("a signal stopped its rollback") && line[0].contains(&finish),
        "{}",
        line[0]
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["regions"][0]["status"], "interrupted-rollback-stopped",
        "{v}"
    );
    rt.block_on(async {
        // The rollback really stopped midway: not recorded as done, the version it deletes last is there.
        let g = r.describe(&b).await.unwrap();
        let rec: Value = serde_json::from_str(
            g.tags()
                .iter()
                .find(|t| t.key() == Some("bakery:swap"))
                .unwrap()
                .value()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(rec["ph"], "rolling", "{rec}");
        assert!(
            r.versions()
                .await
                .contains_key(&rec["new"].as_i64().unwrap()),
            "{rec}"
        );
    });
    bakery(&["rollback", "--asg", &b, "--region", "us-west-2"]).assert_ok();
    bakery(&[
        "deploy",
        "--strategy",
        "rolling",
        "--image",
        &r.old_ami,
        "--asg",
        &b,
        "--region",
        "us-west-2",
        "--replace-with",
        "batches",
        "--min-healthy-percentage",
        "66",
    ])
    .assert_ok();
    all_on(&b, &r.old_ami);
    rt.block_on(async {
        assert_eq!(
            r.describe(&b)
                .await
                .unwrap()
                .launch_template()
                .unwrap()
                .version(),
            Some("1")
        );
        assert_eq!(
            r.versions().await.len(),
            before + 1,
            "only the interrupted deploy's version is left (unused)"
        );
    });
}
