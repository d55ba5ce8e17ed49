//! A red/black deploy's new generation is a faithful clone of the serving one, AWS limits are
//! checked before anything changes, a Classic Load Balancer follows the serving generation, and
//! every call of a deploy survives transient faults. The cases are public bug reports
//! (spinnaker/spinnaker#5001 lifecycle hooks, spinnaker/clouddriver#1201 scheduled actions,
//! spinnaker/spinnaker#6973 Classic ELB, spinnaker/clouddriver#340 50 tags), reduced to AWS
//! setups in the emulator and run through the `bakery` binary.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;

use aws_sdk_autoscaling::types::{
    AutoScalingGroup, InstanceMaintenancePolicy, LaunchTemplateSpecification, StepAdjustment, Tag,
    TargetTrackingConfiguration,
};
use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use bakery::aws::client::AwsContext;
use serde_json::Value;

mod support;

use support::deploy::{self, unique};
use support::emulator::Emulator;
use support::proxy::{self, Action, Proxy};
use support::rt;
use support::Run;

const REGION: &str = "us-east-1";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:shop-ops";

fn emulator() -> Arc<Emulator> {
    support::emulator::shared(&[])
}

/// `bakery` against the emulator (or `endpoint`), polling fast.
fn bakery_via(endpoint: Option<&str>, args: &[&str]) -> Run {
    let mut c = Command::new(support::bakery_exe());
    c.args(args)
        .env("BAKERY_DEPLOY_POLL_MS", "50")
        .env("RUST_LOG", "bakery=info")
        .current_dir(support::repo());
    if let Some(e) = endpoint {
        c.env("AWS_ENDPOINT_URL", e);
    }
    support::run(&mut c)
}

fn bakery(args: &[&str]) -> Run {
    bakery_via(None, args)
}

/// A VPC with two subnets, a target group, an old and a new AMI, a launch template on the old.
struct Fixture {
    ctx: AwsContext,
    subnets: String,
    tg: String,
    old_ami: String,
    new_ami: String,
    lt_name: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let ctx = AwsContext::load().await;
        let ec2 = ctx.ec2(REGION);
        let net = deploy::network(&ctx, REGION, "10.3", &["a", "b"]).await;
        let old_ami = deploy::app_ami(&ctx, REGION, "shop-1.0-1").await;
        let new_ami = deploy::app_ami(&ctx, REGION, "shop-1.1-1").await;
        let lt_name = unique("lt");
        ec2.create_launch_template()
            .launch_template_name(&lt_name)
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(&old_ami)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        Fixture {
            ctx,
            subnets: net.subnets(),
            tg: net.tg,
            old_ami,
            new_ami,
            lt_name,
        }
    }

    fn asg(&self) -> aws_sdk_autoscaling::Client {
        self.ctx.autoscaling(REGION)
    }

    fn cw(&self) -> aws_sdk_cloudwatch::Client {
        self.ctx.cloudwatch(REGION)
    }

    /// CreateAutoScalingGroup on the template's version 1 with `size`, the target group (unless
    /// `lb` names a Classic Load Balancer instead), and `tags` (key, propagate).
    fn create(
        &self,
        name: &str,
        size: i32,
        tags: &[(&str, bool)],
        lb: Option<&str>,
    ) -> aws_sdk_autoscaling::operation::create_auto_scaling_group::builders::CreateAutoScalingGroupFluentBuilder
    {
        let mut q = self
            .asg()
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name(&self.lt_name)
                    .version("1")
                    .build(),
            )
            .min_size(size)
            .max_size(size + 2)
            .desired_capacity(size)
            .vpc_zone_identifier(&self.subnets);
        q = match lb {
            Some(lb) => q.load_balancer_names(lb),
            None => q.target_group_arns(&self.tg),
        };
        for (k, p) in tags {
            q = q.tags(
                Tag::builder()
                    .resource_id(name)
                    .resource_type("auto-scaling-group")
                    .key(*k)
                    .value(format!("value-of-{k}"))
                    .propagate_at_launch(*p)
                    .build(),
            );
        }
        q
    }

    async fn describe(&self, name: &str) -> Option<AutoScalingGroup> {
        self.asg()
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap()
            .auto_scaling_groups()
            .first()
            .cloned()
    }

    async fn groups(&self, cluster: &str) -> BTreeSet<String> {
        let out = self
            .asg()
            .describe_auto_scaling_groups()
            .send()
            .await
            .unwrap();
        out.auto_scaling_groups()
            .iter()
            .filter_map(|g| g.auto_scaling_group_name())
            .filter(|n| n.starts_with(&format!("{cluster}-v")))
            .map(String::from)
            .collect()
    }

    async fn versions(&self) -> usize {
        self.ctx
            .ec2(REGION)
            .describe_launch_template_versions()
            .launch_template_name(&self.lt_name)
            .send()
            .await
            .unwrap()
            .launch_template_versions()
            .len()
    }

    /// Alarm name -> (dimensions, alarm actions, tags).
    async fn alarms(
        &self,
        prefix: &str,
    ) -> BTreeMap<String, (Vec<String>, Vec<String>, Vec<String>)> {
        let out = self
            .cw()
            .describe_alarms()
            .alarm_name_prefix(prefix)
            .send()
            .await
            .unwrap();
        let mut m = BTreeMap::new();
        for a in out.metric_alarms() {
            let tags = self
                .cw()
                .list_tags_for_resource()
                .resource_arn(a.alarm_arn().unwrap())
                .send()
                .await
                .unwrap();
            m.insert(
                a.alarm_name().unwrap().to_string(),
                (
                    a.dimensions()
                        .iter()
                        .map(|d| format!("{}={}", d.name().unwrap(), d.value().unwrap()))
                        .collect(),
                    a.alarm_actions().to_vec(),
                    tags.tags()
                        .iter()
                        .map(|t| format!("{}={}", t.key().unwrap(), t.value().unwrap()))
                        .collect(),
                ),
            );
        }
        m
    }

    async fn policy_arns(&self, group: &str) -> BTreeMap<String, String> {
        let out = self
            .asg()
            .describe_policies()
            .auto_scaling_group_name(group)
            .send()
            .await
            .unwrap();
        out.scaling_policies()
            .iter()
            .map(|p| {
                (
                    p.policy_name().unwrap().to_string(),
                    p.policy_arn().unwrap().to_string(),
                )
            })
            .collect()
    }
}

/// What a group is configured as, for comparing a clone with its source (names and bakery's own
/// tags left out).
fn settings(g: &AutoScalingGroup) -> String {
    let tags: BTreeSet<String> = g
        .tags()
        .iter()
        .filter(|t| !t.key().unwrap().starts_with("bakery:"))
        .map(|t| {
            format!(
                "{}={}/{:?}",
                t.key().unwrap(),
                t.value().unwrap(),
                t.propagate_at_launch()
            )
        })
        .collect();
    let metrics: BTreeSet<String> = g
        .enabled_metrics()
        .iter()
        .map(|m| format!("{}/{}", m.metric().unwrap(), m.granularity().unwrap_or("?")))
        .collect();
    format!(
        "size {}/{}/{} subnets {:?} tgs {:?} lbs {:?} health {:?}/{:?} cooldown {:?} termination {:?} rebalance {:?} lifetime {:?} warmup {:?} maintenance {:?} context {:?} protect {:?} warm pool {:?} tags {tags:?} metrics {metrics:?}",
        g.min_size().unwrap(),
        g.max_size().unwrap(),
        g.desired_capacity().unwrap(),
        g.vpc_zone_identifier(),
        g.target_group_arns(),
        g.load_balancer_names(),
        g.health_check_type(),
        g.health_check_grace_period(),
        g.default_cooldown(),
        g.termination_policies(),
        g.capacity_rebalance(),
        g.max_instance_lifetime(),
        g.default_instance_warmup(),
        g.instance_maintenance_policy(),
        g.context(),
        g.new_instances_protected_from_scale_in(),
        g.warm_pool_configuration().map(|w| (w.min_size(), w.pool_state().cloned())),
    )
}

fn suspended(g: &AutoScalingGroup) -> BTreeSet<String> {
    g.suspended_processes()
        .iter()
        .map(|p| p.process_name().unwrap().to_string())
        .collect()
}

/// Everything a cluster's serving generation can be configured with, set on `v001`.
async fn rich_serving_generation(f: &Fixture, v001: &str) {
    let a = f.asg();
    f.create(v001, 2, &[("team", true), ("cost-center", false)], None)
        .health_check_type("ELB")
        .health_check_grace_period(60)
        .default_cooldown(120)
        .termination_policies("OldestInstance")
        .termination_policies("Default")
        .capacity_rebalance(true)
        .max_instance_lifetime(604_800)
        .default_instance_warmup(90)
        .instance_maintenance_policy(
            InstanceMaintenancePolicy::builder()
                .min_healthy_percentage(90)
                .max_healthy_percentage(120)
                .build(),
        )
        .context("shop")
        .send()
        .await
        .unwrap();
    // rb-lifecycle-hooks: a launch hook gates instances until bootstrap says so.
    a.put_lifecycle_hook()
        .auto_scaling_group_name(v001)
        .lifecycle_hook_name("bootstrap-gate")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(300)
        .default_result("ABANDON")
        .notification_metadata("wait-for-bootstrap")
        .send()
        .await
        .unwrap();
    // rb-scheduled-actions: scale out every weekday morning.
    a.put_scheduled_update_group_action()
        .auto_scaling_group_name(v001)
        .scheduled_action_name("weekday-morning")
        .recurrence("0 7 * * 1-5")
        .min_size(4)
        .max_size(8)
        .desired_capacity(6)
        .send()
        .await
        .unwrap();
    let out = a
        .put_scaling_policy()
        .auto_scaling_group_name(v001)
        .policy_name("scale-out")
        .adjustment_type("ChangeInCapacity")
        .scaling_adjustment(1)
        .cooldown(300)
        .send()
        .await
        .unwrap();
    let scale_out = out
        .policy_arn()
        .expect("PutScalingPolicy returns the ARN")
        .to_string();
    let out = a
        .put_scaling_policy()
        .auto_scaling_group_name(v001)
        .policy_name("scale-in")
        .policy_type("StepScaling")
        .adjustment_type("ChangeInCapacity")
        .step_adjustments(
            StepAdjustment::builder()
                .metric_interval_upper_bound(0.0)
                .scaling_adjustment(-1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let scale_in = out.policy_arn().unwrap().to_string();
    a.put_scaling_policy()
        .auto_scaling_group_name(v001)
        .policy_name("cpu-50")
        .policy_type("TargetTrackingScaling")
        .target_tracking_configuration(
            TargetTrackingConfiguration::builder()
                .predefined_metric_specification(
                    aws_sdk_autoscaling::types::PredefinedMetricSpecification::builder()
                        .predefined_metric_type(
                            aws_sdk_autoscaling::types::MetricType::AsgAverageCpuUtilization,
                        )
                        .build(),
                )
                .target_value(50.0)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // The alarms that trigger the simple and step policies: one named after the group and
    // watching it, one named otherwise (an SQS queue's depth), with an SNS action too.
    let cw = f.cw();
    cw.put_metric_alarm()
        .alarm_name(format!("{v001}-cpu-high"))
        .metric_name("CPUUtilization")
        .namespace("AWS/EC2")
        .statistic(Statistic::Average)
        .period(60)
        .evaluation_periods(2)
        .threshold(70.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .dimensions(
            Dimension::builder()
                .name("AutoScalingGroupName")
                .value(v001)
                .build(),
        )
        .alarm_actions(&scale_out)
        .alarm_actions(TOPIC)
        .tags(
            aws_sdk_cloudwatch::types::Tag::builder()
                .key("team")
                .value("payments")
                .build(),
        )
        .send()
        .await
        .unwrap();
    cw.put_metric_alarm()
        .alarm_name(format!("queue-shallow-{}", &v001[..8]))
        .metric_name("ApproximateNumberOfMessagesVisible")
        .namespace("AWS/SQS")
        .statistic(Statistic::Maximum)
        .period(300)
        .evaluation_periods(3)
        .threshold(10.0)
        .comparison_operator(ComparisonOperator::LessThanThreshold)
        .alarm_actions(&scale_in)
        .send()
        .await
        .unwrap();
    a.put_notification_configuration()
        .auto_scaling_group_name(v001)
        .topic_arn(TOPIC)
        .notification_types("autoscaling:EC2_INSTANCE_LAUNCH")
        .notification_types("autoscaling:EC2_INSTANCE_TERMINATE")
        .send()
        .await
        .unwrap();
    a.enable_metrics_collection()
        .auto_scaling_group_name(v001)
        .granularity("1Minute")
        .send()
        .await
        .unwrap();
    a.put_warm_pool()
        .auto_scaling_group_name(v001)
        .min_size(1)
        .pool_state(aws_sdk_autoscaling::types::WarmPoolState::Stopped)
        .send()
        .await
        .unwrap();
    a.suspend_processes()
        .auto_scaling_group_name(v001)
        .scaling_processes("AZRebalance")
        .send()
        .await
        .unwrap();
}

#[test]
fn red_black_clones_everything_that_defines_the_serving_generation() {
    let emu = emulator();
    let rt = rt();
    let f = rt.block_on(Fixture::new());
    let cluster = unique("shop");
    let (v001, v002) = (format!("{cluster}-v001"), format!("{cluster}-v002"));
    rt.block_on(rich_serving_generation(&f, &v001));

    // Through a proxy that records what bakery sends.
    let rec = Proxy::start(&emu.endpoint(), |_| Action::Forward, |_, _, _| {});
    let out = bakery_via(
        Some(&rec.endpoint()),
        &[
            "deploy",
            "--image",
            &f.new_ami,
            "--cluster",
            &cluster,
            "--region",
            REGION,
        ],
    );
    out.assert_ok();
    assert_eq!(out.json()["regions"][0]["detail"]["serving"], v002.as_str());

    // The hook was in place before the first launch: given at CreateAutoScalingGroup, never
    // added afterwards (spinnaker/spinnaker#5001).
    let create: Vec<String> = rec
        .requests("CreateAutoScalingGroup")
        .iter()
        .map(|r| r.body_text())
        .collect();
    assert_eq!(create.len(), 1, "{create:?}");
    assert!(
        create[0]
            .contains("LifecycleHookSpecificationList.member.1.LifecycleHookName=bootstrap-gate"),
        "{}",
        create[0]
    );
    assert!(rec.requests("PutLifecycleHook").is_empty());

    rt.block_on(async {
        let a = f.asg();
        let (old, new) = (
            f.describe(&v001).await.unwrap(),
            f.describe(&v002).await.unwrap(),
        );
        assert_eq!(settings(&new), settings(&old));
        assert!(
            settings(&new).contains("lifetime Some(604800)"),
            "{}",
            settings(&new)
        );
        assert!(settings(&new).contains("GroupInServiceInstances/1Minute"));
        assert!(settings(&new).contains("warm pool Some((Some(1)"));
        assert_eq!(suspended(&new), BTreeSet::from(["AZRebalance".to_string()]));
        assert!(suspended(&old).contains("AZRebalance") && suspended(&old).contains("Launch"));

        let hooks = |g: String| {
            let a = a.clone();
            async move {
                a.describe_lifecycle_hooks()
                    .auto_scaling_group_name(g)
                    .send()
                    .await
                    .unwrap()
                    .lifecycle_hooks()
                    .iter()
                    .map(|h| {
                        format!(
                            "{:?} {:?} {:?} {:?} {:?}",
                            h.lifecycle_hook_name(),
                            h.lifecycle_transition(),
                            h.heartbeat_timeout(),
                            h.default_result(),
                            h.notification_metadata()
                        )
                    })
                    .collect::<Vec<_>>()
            }
        };
        let want_hooks = hooks(v001.clone()).await;
        assert_eq!(want_hooks.len(), 1);
        assert_eq!(hooks(v002.clone()).await, want_hooks);

        let schedule = |g: String| {
            let a = a.clone();
            async move {
                a.describe_scheduled_actions()
                    .auto_scaling_group_name(g)
                    .send()
                    .await
                    .unwrap()
                    .scheduled_update_group_actions()
                    .iter()
                    .map(|s| {
                        format!(
                            "{:?} {:?} {:?} {:?} {:?}",
                            s.scheduled_action_name(),
                            s.recurrence(),
                            s.min_size(),
                            s.max_size(),
                            s.desired_capacity()
                        )
                    })
                    .collect::<Vec<_>>()
            }
        };
        let want = schedule(v001.clone()).await;
        assert_eq!(want.len(), 1);
        assert_eq!(schedule(v002.clone()).await, want, "rb-scheduled-actions");

        let notes = |g: String| {
            let a = a.clone();
            async move {
                a.describe_notification_configurations()
                    .auto_scaling_group_names(g)
                    .send()
                    .await
                    .unwrap()
                    .notification_configurations()
                    .iter()
                    .map(|n| format!("{:?} {:?}", n.topic_arn(), n.notification_type()))
                    .collect::<BTreeSet<_>>()
            }
        };
        assert_eq!(notes(v002.clone()).await, notes(v001.clone()).await);
        assert_eq!(notes(v002.clone()).await.len(), 2);

        // Policies: the same three on each generation (v001 keeps its own).
        let (p1, p2) = (f.policy_arns(&v001).await, f.policy_arns(&v002).await);
        let names = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&p2), ["cpu-50", "scale-in", "scale-out"]);
        assert_eq!(names(&p1), names(&p2));

        // Alarms: each copy watches v002 and triggers v002's policy; the SNS action stays;
        // the originals still act on v001. Target tracking alarms are AWS's, not copied.
        let alarms = f.alarms(&cluster).await;
        let (dims, actions, tags) = &alarms[&format!("{v002}-cpu-high")];
        assert_eq!(dims, &[format!("AutoScalingGroupName={v002}")]);
        assert_eq!(actions, &[p2["scale-out"].clone(), TOPIC.to_string()]);
        assert!(tags.contains(&"team=payments".to_string()), "{tags:?}");
        assert!(
            tags.contains(&format!("bakery:generation={v002}")),
            "{tags:?}"
        );
        let (dims, actions, _) = &alarms[&format!("{v001}-cpu-high")];
        assert_eq!(dims, &[format!("AutoScalingGroupName={v001}")]);
        assert_eq!(actions, &[p1["scale-out"].clone(), TOPIC.to_string()]);
        let queue = f.alarms(&format!("queue-shallow-{}", &v001[..8])).await;
        assert_eq!(
            queue.keys().cloned().collect::<Vec<_>>(),
            [
                format!("queue-shallow-{}", &v001[..8]),
                format!("queue-shallow-{}-{v002}", &v001[..8])
            ]
        );
        assert_eq!(
            queue[&format!("queue-shallow-{}-{v002}", &v001[..8])].1,
            [p2["scale-in"].clone()]
        );
    });

    // Two more generations with --keep 2: v001 and v002 go, with the alarms bakery made for
    // v002; v001's own alarms are the user's and stay.
    for img in [&f.old_ami, &f.new_ami] {
        bakery(&[
            "deploy",
            "--image",
            img,
            "--cluster",
            &cluster,
            "--region",
            REGION,
        ])
        .assert_ok();
    }
    rt.block_on(async {
        let v004 = format!("{cluster}-v004");
        for _ in 0..100 {
            if f.groups(&cluster).await.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            f.groups(&cluster).await,
            BTreeSet::from([format!("{cluster}-v003"), v004.clone()])
        );
        let alarms = f.alarms(&cluster).await;
        assert!(
            alarms.contains_key(&format!("{v001}-cpu-high")),
            "{alarms:?}"
        );
        assert!(
            !alarms.contains_key(&format!("{v002}-cpu-high")),
            "{alarms:?}"
        );
        assert!(
            alarms.contains_key(&format!("{v004}-cpu-high")),
            "{alarms:?}"
        );
        let p4 = f.policy_arns(&v004).await;
        assert_eq!(alarms[&format!("{v004}-cpu-high")].1[0], p4["scale-out"]);
    });
}

#[test]
fn limits_and_what_cannot_be_cloned_are_refused_before_anything_changes() {
    let _emu = emulator();
    let rt = rt();
    let f = rt.block_on(Fixture::new());
    let fifty: Vec<String> = (0..50).map(|i| format!("cost-tag-{i:02}")).collect();
    let tags50: Vec<(&str, bool)> = fifty.iter().map(|k| (k.as_str(), false)).collect();
    let refused = |out: &Run, what: &str| {
        assert_eq!(out.code, 2, "{}", out.stderr);
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("bakery: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", out.stderr);
        assert!(errors[0].contains(what), "{}", errors[0]);
    };

    // rb-asg-50-tags, red/black: the serving generation's 50 tags + bakery's record = 51.
    let cluster = unique("shop");
    let v001 = format!("{cluster}-v001");
    rt.block_on(async { f.create(&v001, 1, &tags50, None).send().await.unwrap() });
    let versions = rt.block_on(f.versions());
    let out = bakery(&[
        "deploy",
        "--image",
        &f.new_ami,
        "--cluster",
        &cluster,
        "--region",
        REGION,
    ]);
    refused(&out, "has 50 tags");
    refused(&out, &v001);
    rt.block_on(async {
        assert_eq!(f.groups(&cluster).await, BTreeSet::from([v001.clone()]));
        assert_eq!(
            f.versions().await,
            versions,
            "a launch template version was made"
        );
        assert!(suspended(&f.describe(&v001).await.unwrap()).is_empty());
    });

    // rb-asg-50-tags, swap: a group with 50 tags gets no 51st (bakery:swap).
    let api = unique("shop-api");
    rt.block_on(async { f.create(&api, 1, &tags50, None).send().await.unwrap() });
    for strategy in ["swap", "rolling"] {
        let out = bakery(&[
            "deploy",
            "--image",
            &f.new_ami,
            "--asg",
            &api,
            "--strategy",
            strategy,
            "--region",
            REGION,
        ]);
        refused(&out, &format!("{api} ({REGION}) has 50 tags"));
    }
    rt.block_on(async {
        let g = f.describe(&api).await.unwrap();
        assert_eq!(g.tags().len(), 50);
        assert_eq!(g.launch_template().unwrap().version(), Some("1"));
        assert_eq!(f.versions().await, versions);
    });
    // With 49, bakery's record is the 50th: the swap goes through.
    let api49 = unique("shop-api");
    rt.block_on(async {
        f.create(&api49, 1, &tags50[..49], None)
            .send()
            .await
            .unwrap()
    });
    bakery(&[
        "deploy",
        "--image",
        &f.new_ami,
        "--asg",
        &api49,
        "--strategy",
        "swap",
        "--region",
        REGION,
    ])
    .assert_ok();
    rt.block_on(async { assert_eq!(f.describe(&api49).await.unwrap().tags().len(), 50) });

    // (A composite alarm triggering a policy is refused too: `clone::check`'s unit test. moto
    // 5.2.5 has no PutCompositeAlarm to set one up here.)

    // A serving generation with Launch suspended: its clone would never launch.
    let c3 = unique("shop");
    rt.block_on(async {
        f.create(&format!("{c3}-v001"), 1, &[], None)
            .send()
            .await
            .unwrap();
        f.asg()
            .suspend_processes()
            .auto_scaling_group_name(format!("{c3}-v001"))
            .scaling_processes("Launch")
            .send()
            .await
            .unwrap();
    });
    let out = bakery(&[
        "deploy",
        "--image",
        &f.new_ami,
        "--cluster",
        &c3,
        "--region",
        REGION,
    ]);
    refused(&out, "Launch process suspended");

    // status of a cluster that does not exist: one line, exit 2, nothing on stdout.
    let ghost = unique("ghost");
    let out = bakery(&["status", "--cluster", &ghost, "--region", REGION]);
    refused(
        &out,
        &format!("cluster {ghost} has no generation in {REGION}"),
    );
    assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
}

#[test]
fn red_black_behind_a_classic_load_balancer_moves_traffic_and_rollback_moves_it_back() {
    let _emu = emulator();
    let rt = rt();
    let f = rt.block_on(Fixture::new());
    let cluster = unique("shop");
    let (v001, v002) = (format!("{cluster}-v001"), format!("{cluster}-v002"));
    let lb = unique("frontend");
    let elb = f.ctx.elb(REGION);
    rt.block_on(async {
        elb.create_load_balancer()
            .load_balancer_name(&lb)
            .listeners(
                aws_sdk_elasticloadbalancing::types::Listener::builder()
                    .protocol("HTTP")
                    .load_balancer_port(80)
                    .instance_protocol("HTTP")
                    .instance_port(8080)
                    .build()
                    .unwrap(),
            )
            .set_subnets(Some(f.subnets.split(',').map(String::from).collect()))
            .send()
            .await
            .unwrap();
        f.create(&v001, 2, &[], Some(&lb))
            .health_check_type("ELB")
            .health_check_grace_period(60)
            .send()
            .await
            .unwrap();
    });
    let registered = || {
        rt.block_on(async {
            let d = elb
                .describe_load_balancers()
                .load_balancer_names(&lb)
                .send()
                .await
                .unwrap();
            d.load_balancer_descriptions()[0]
                .instances()
                .iter()
                .map(|i| i.instance_id().unwrap().to_string())
                .collect::<BTreeSet<_>>()
        })
    };
    let ids = |g: &str| {
        rt.block_on(async {
            f.describe(g)
                .await
                .unwrap()
                .instances()
                .iter()
                .map(|i| i.instance_id().unwrap().to_string())
                .collect::<BTreeSet<_>>()
        })
    };
    assert_eq!(registered(), ids(&v001));

    bakery(&[
        "deploy",
        "--image",
        &f.new_ami,
        "--cluster",
        &cluster,
        "--region",
        REGION,
    ])
    .assert_ok();
    // Only the serving generation takes traffic; the disabled one stays attached (for rollback).
    assert_eq!(ids(&v002).len(), 2);
    assert_eq!(
        registered(),
        ids(&v002),
        "the disabled generation {v001} still receives traffic from {lb}"
    );
    rt.block_on(async {
        let old = f.describe(&v001).await.unwrap();
        assert_eq!(old.load_balancer_names(), std::slice::from_ref(&lb));
        assert!(suspended(&old).contains("AddToLoadBalancer"));
        assert_eq!(
            f.describe(&v002).await.unwrap().load_balancer_names(),
            std::slice::from_ref(&lb)
        );
    });
    // status shows each instance's state in the balancer.
    let st = bakery(&[
        "status",
        "--cluster",
        &cluster,
        "--region",
        REGION,
        "--json",
    ]);
    st.assert_ok();
    let gens: Vec<Value> = st.json()["regions"][0]["generations"]
        .as_array()
        .unwrap()
        .clone();
    let serving = gens.iter().find(|g| g["name"] == v002.as_str()).unwrap();
    for i in serving["instances"].as_array().unwrap() {
        assert_eq!(i["targets"][&lb], "InService", "{i}");
    }

    bakery(&["rollback", "--cluster", &cluster, "--region", REGION]).assert_ok();
    assert_eq!(
        registered(),
        ids(&v001),
        "rollback puts the old generation back"
    );
}

#[test]
fn every_call_of_a_red_black_deploy_survives_being_throttled_once() {
    let emu = emulator();
    let rt = rt();
    let f = rt.block_on(Fixture::new());
    let cluster = unique("shop");
    let v001 = format!("{cluster}-v001");
    rt.block_on(rich_serving_generation(&f, &v001));
    // The first call of every action is throttled (answered, never forwarded).
    let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let s = seen.clone();
    let p = Proxy::start(
        &emu.endpoint(),
        move |r| {
            if s.lock().unwrap().insert(r.action.clone()) {
                proxy::throttled(r)
            } else {
                Action::Forward
            }
        },
        |_, _, _| {},
    );
    let out = bakery_via(
        Some(&p.endpoint()),
        &[
            "deploy",
            "--image",
            &f.new_ami,
            "--cluster",
            &cluster,
            "--region",
            REGION,
        ],
    );
    out.assert_ok();
    let throttled = seen.lock().unwrap().clone();
    for a in [
        "DescribeAutoScalingGroups",
        "DescribeImages",
        "CreateLaunchTemplateVersion",
        "CreateAutoScalingGroup",
        "PutScalingPolicy",
        "PutMetricAlarm",
        "BatchPutScheduledUpdateGroupAction",
        "DeregisterTargets",
    ] {
        assert!(throttled.contains(a), "{a} was not called: {throttled:?}");
        assert!(
            out.stderr.contains(&format!("{a} ({REGION}): ")),
            "no retry of {a} said on stderr:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("retrying with backoff, attempt 2 of 6"),
        "{}",
        out.stderr
    );
    rt.block_on(async {
        let g = f.describe(&format!("{cluster}-v002")).await.unwrap();
        assert_eq!(g.instances().len(), 2);
    });
}
