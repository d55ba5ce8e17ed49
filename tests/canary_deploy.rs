//! The canary analysis stage of a red/black deploy end to end (`bakery deploy --cluster C
//! --canary canary.yaml`), against the AWS emulator, with CloudWatch metrics the test puts for the
//! canary generation and its baseline group (1-second points, so short canaries have data):
//!
//! - a canary whose metrics match the baseline's is promoted (the baseline ran the serving
//!   image and is gone, the canary serves at full size, the old generation is disabled);
//! - a canary whose error metric is high fails: both groups and the canary's launch template
//!   version are removed, the serving generation is untouched, `deploy-failed` runs, exit 1;
//! - a Marginal canary with `marginal: manual` waits for `bakery canary approve` (promoted) or
//!   `reject` (removed);
//! - Ctrl-C during the canary removes both groups (exit 130); after `kill -9`, running the same
//!   deploy again resumes it (the baseline reused), and `bakery rollback` removes both.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use bakery::aws::client::AwsContext;
use serde_json::{json, Value};
use support::deploy;
use support::rt;
use support::Run;

const REGION: &str = "us-east-1";

/// `prefix` and 8 hex digits, no dash: `unique("shop") + "-prod"` is a cluster name whose
/// app is the whole unique part and whose stack is `prod` (Frigga's naming).
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(support::bakery_exe());
    c.args(args)
        .env("BAKERY_DEPLOY_POLL_MS", "50")
        .env("RUST_LOG", "bakery=info")
        .current_dir(support::repo());
    c
}

fn bakery(args: &[&str]) -> Run {
    support::run(&mut command(args))
}

fn spawn(args: &[&str]) -> Child {
    command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A cluster `NAME-prod` in its own VPC: a target group, two AMIs (old serving, new), a launch
/// template on the old one, and generation v000 of 3 instances following `$Latest`.
struct Cluster {
    ctx: AwsContext,
    name: String,
    tg: String,
    old_ami: String,
    new_ami: String,
    lt_id: String,
}

impl Cluster {
    async fn new(ctx: &AwsContext) -> Cluster {
        let ec2 = ctx.ec2(REGION);
        let net = deploy::network(ctx, REGION, "10.7", &["a"]).await;
        let old_ami = deploy::app_ami(ctx, REGION, "shop-1.0-1").await;
        let new_ami = deploy::app_ami(ctx, REGION, "shop-1.1-1").await;
        let lt_name = unique("lt");
        let lt_id = ec2
            .create_launch_template()
            .launch_template_name(&lt_name)
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(&old_ami)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .launch_template
            .unwrap()
            .launch_template_id
            .unwrap();
        let name = unique("shop") + "-prod";
        ctx.autoscaling(REGION)
            .create_auto_scaling_group()
            .auto_scaling_group_name(format!("{name}-v000"))
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(&lt_id)
                    .version("$Latest")
                    .build(),
            )
            .min_size(3)
            .max_size(5)
            .desired_capacity(3)
            .vpc_zone_identifier(net.subnets())
            .target_group_arns(&net.tg)
            .health_check_type("ELB")
            .send()
            .await
            .unwrap();
        Cluster {
            ctx: ctx.clone(),
            name,
            tg: net.tg,
            old_ami,
            new_ami,
            lt_id,
        }
    }

    fn gen(&self, n: u16) -> String {
        format!("{}-v{n:03}", self.name)
    }

    async fn describe(&self, name: &str) -> Option<aws_sdk_autoscaling::types::AutoScalingGroup> {
        self.ctx
            .autoscaling(REGION)
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap()
            .auto_scaling_groups()
            .first()
            .cloned()
    }

    async fn tag(&self, name: &str, key: &str) -> Option<Value> {
        let g = self.describe(name).await?;
        let v = g
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))?
            .value()?
            .to_string();
        serde_json::from_str(&v).ok()
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

    async fn registered(&self) -> BTreeSet<String> {
        self.ctx
            .elbv2(REGION)
            .describe_target_health()
            .target_group_arn(&self.tg)
            .send()
            .await
            .unwrap()
            .target_health_descriptions()
            .iter()
            .map(|d| d.target().unwrap().id().unwrap().to_string())
            .collect()
    }

    async fn versions(&self) -> BTreeSet<i64> {
        self.ctx
            .ec2(REGION)
            .describe_launch_template_versions()
            .launch_template_id(&self.lt_id)
            .send()
            .await
            .unwrap()
            .launch_template_versions()
            .iter()
            .map(|v| v.version_number().unwrap())
            .collect()
    }

    /// What must not change when a canary fails: the serving generation's settings, instances,
    /// registration, and the launch template's versions.
    async fn snapshot(&self, serving: &str) -> Value {
        let g = self.describe(serving).await.unwrap();
        json!({
            "version": g.launch_template().unwrap().version(),
            "size": [g.min_size(), g.max_size(), g.desired_capacity()],
            "suspended": g.suspended_processes().iter().map(|p| p.process_name().unwrap().to_string()).collect::<Vec<_>>(),
            "instances": self.instance_ids(serving).await,
            "registered": self.registered().await,
            "versions": self.versions().await,
        })
    }

    /// 1-second points of `errors` and `latency` for `group`, from 5 s ago for `secs` seconds.
    async fn put_metrics(
        &self,
        group: &str,
        errors: impl Fn(usize) -> f64,
        latency: impl Fn(usize) -> f64,
        secs: usize,
    ) {
        let cw = self.ctx.cloudwatch(REGION);
        let t0 = bakery::canary::now() as i64 - 5;
        for (metric, f) in [
            ("errors", &errors as &dyn Fn(usize) -> f64),
            ("latency", &latency),
        ] {
            for chunk in (0..secs).collect::<Vec<_>>().chunks(500) {
                let data: Vec<_> = chunk
                    .iter()
                    .map(|i| {
                        aws_sdk_cloudwatch::types::MetricDatum::builder()
                            .metric_name(metric)
                            .dimensions(
                                aws_sdk_cloudwatch::types::Dimension::builder()
                                    .name("AutoScalingGroupName")
                                    .value(group)
                                    .build(),
                            )
                            .timestamp(aws_smithy_types::DateTime::from_secs(t0 + *i as i64))
                            .storage_resolution(1)
                            .value(f(*i))
                            .build()
                    })
                    .collect();
                cw.put_metric_data()
                    .namespace("Shop/App")
                    .set_metric_data(Some(data))
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// The metrics of canary generation `n` and its baseline: the baseline's errors 1-3 and
    /// latency 10-13 in a 4-second cycle; the canary's latency the same cycle two seconds on,
    /// and its errors the baseline's plus `extra_errors`.
    async fn metrics_for(&self, n: u16, extra_errors: f64) {
        let canary = self.gen(n);
        let baseline = format!("{canary}-baseline");
        let errors = |i: usize| (1 + i % 3) as f64;
        let latency = |i: usize| (10 + i % 4) as f64;
        self.put_metrics(&baseline, errors, latency, 400).await;
        self.put_metrics(
            &canary,
            move |i| errors(i) + extra_errors,
            move |i| latency(i + 2),
            400,
        )
        .await;
    }
}

const CONFIG: &str = "\
metrics:
  - {name: errors, direction: increase, critical: true, cloudwatch: {metric: 'Shop/App errors AutoScalingGroupName={group}', statistic: Sum, period: 1}}
  - {name: latency, cloudwatch: {metric: 'Shop/App latency AutoScalingGroupName={group}', statistic: Average, period: 1}}
";

/// A webhook receiver: the JSON bodies POSTed to it (the notify-webhook plugin's events).
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

struct Fixture {
    _emu: Arc<support::emulator::Emulator>,
    rt: tokio::runtime::Runtime,
    c: Cluster,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let emu = support::emulator::shared(&[]);
    let rt = rt();
    let ctx = rt.block_on(AwsContext::load());
    let c = rt.block_on(Cluster::new(&ctx));
    Fixture {
        _emu: emu,
        rt,
        c,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Fixture {
    /// Write a canary config (each its own file) and give its path.
    fn config(&self, text: &str) -> String {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let p = self.dir.path().join(format!("canary-{n}.yaml"));
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn deploy_args(&self, image: &str, config: &str, minutes: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "deploy",
            "--image",
            image,
            "--region",
            REGION,
            "--cluster",
            &self.c.name,
            "--canary",
            config,
            "--canary-size",
            "1",
            "--canary-minutes",
            minutes,
            "--interval",
            "4s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_canary_that_matches_its_baseline_is_promoted() {
    let f = fixture();
    let c = &f.c;
    f.rt.block_on(c.metrics_for(1, 0.0));
    let reports = f.dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    let config = f.config(CONFIG);
    let old_ids = f.rt.block_on(c.instance_ids(&c.gen(0)));
    let args = f.deploy_args(
        &c.new_ami,
        &config,
        "0.2",
        &["--canary-report", reports.to_str().unwrap()],
    );
    let out = bakery(&strs(&args));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = &out.json()["regions"][0]["detail"];
    let canary = &d["canary"];
    assert_eq!(canary["decision"], "promoted", "{d}");
    assert_eq!(canary["classification"], "Pass");
    assert_eq!(canary["baseline"], format!("{}-baseline", c.gen(1)));
    assert_eq!(
        canary["baseline_image"],
        c.old_ami.as_str(),
        "the baseline ran the serving image"
    );
    assert_eq!(
        canary["judgements"].as_array().unwrap().len(),
        3,
        "every 4 s for 12 s"
    );
    assert_eq!(d["serving"], c.gen(1));
    assert!(out.stderr.contains("judgement 3/3"), "{}", out.stderr);
    f.rt.block_on(async {
        assert!(
            c.describe(&format!("{}-baseline", c.gen(1)))
                .await
                .is_none(),
            "the baseline is gone"
        );
        let g = c.describe(&c.gen(1)).await.unwrap();
        assert_eq!(
            (g.min_size(), g.desired_capacity()),
            (Some(3), Some(3)),
            "grown to full size"
        );
        assert_eq!(
            c.registered().await,
            c.instance_ids(&c.gen(1)).await,
            "only the new generation serves"
        );
        assert_eq!(
            c.instance_ids(&c.gen(0)).await,
            old_ids,
            "v000 kept running, disabled"
        );
    });
    let html = std::fs::read_to_string(reports.join(format!("{}-{REGION}.html", c.name))).unwrap();
    assert_eq!(html.matches("class=\"cell ").count(), 2);
    assert!(html.contains("judgement 3 of 3"));
    let j: Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join(format!("{}-{REGION}.json", c.name))).unwrap(),
    )
    .unwrap();
    assert_eq!(j["classification"], "Pass");
    assert!(
        j["metrics"][0]["baseline"]["count"].as_u64().unwrap() >= 8,
        "{}",
        j["metrics"][0]
    );
}

#[test]
fn a_canary_with_high_errors_fails_and_the_serving_generation_is_untouched() {
    let f = fixture();
    let c = &f.c;
    f.rt.block_on(c.metrics_for(1, 20.0));
    let config = f.config(CONFIG);
    let before = f.rt.block_on(c.snapshot(&c.gen(0)));
    let (url, got) = webhook();
    let hook = format!("notify-webhook={}", json!({"url": url}));
    let args = f.deploy_args(
        &c.new_ami,
        &config,
        "0.5",
        &["--plugin", "notify-webhook", "--plugin-config", &hook],
    );
    let out = bakery(&strs(&args));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains(&format!(
            "canary {} ({REGION}) failed: canary Fail with score 0",
            c.gen(1)
        )) && line.contains("errors High (critical)"),
        "{line}"
    );
    // Judged every 4 s for 30 s (8 times): a Fail stops it at once, long before the end.
    assert!(
        !out.stderr.contains("judgement 8/8") && out.stderr.contains("judgement 2/8"),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["regions"][0]["status"], "failed");
    f.rt.block_on(async {
        assert!(
            c.describe(&c.gen(1)).await.is_none(),
            "the canary is removed"
        );
        assert!(
            c.describe(&format!("{}-baseline", c.gen(1)))
                .await
                .is_none(),
            "the baseline is removed"
        );
        assert_eq!(
            c.snapshot(&c.gen(0)).await,
            before,
            "the serving generation is untouched"
        );
    });
    let texts: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(texts.len(), 2, "pre-deploy and deploy-failed: {texts:?}");
    assert!(texts[1].contains("failed"), "{texts:?}");
}

#[test]
fn a_marginal_canary_waits_for_approve_or_reject() {
    let f = fixture();
    let c = &f.c;
    // Errors up by 20, not critical: one of two metrics High, score 50: Marginal (pass 100, marginal 40).
    let config = f.config(&format!(
        "marginal: manual\nthresholds: {{pass: 100, marginal: 40}}\n{}",
        CONFIG.replace("critical: true, ", "")
    ));
    let none = bakery(&[
        "canary",
        "approve",
        "--cluster",
        &c.name,
        "--region",
        REGION,
    ]);
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(
        none.error_line().contains("no canary of cluster"),
        "{}",
        none.error_line()
    );

    f.rt.block_on(c.metrics_for(1, 20.0));
    let args = f.deploy_args(&c.new_ami, &config, "0.1", &["--approval-timeout", "120"]);
    let child = spawn(&strs(&args));
    wait_for("the canary to wait for approval", || {
        f.rt.block_on(c.tag(&c.gen(1), "bakery:canary"))
            .is_some_and(|t| t["st"] == "awaiting-approval")
    });
    let ok = bakery(&[
        "canary",
        "approve",
        "--cluster",
        &c.name,
        "--region",
        REGION,
    ]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(ok.json()["regions"][0]["canary"], c.gen(1));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("is Marginal with score 50") && stderr.contains("approved by"),
        "{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["regions"][0]["detail"]["canary"]["decision"], "approved");
    assert_eq!(v["regions"][0]["detail"]["serving"], c.gen(1));

    // The next image: rejected, removed; v001 keeps serving.
    let next = f.rt.block_on(deploy::app_ami(&c.ctx, REGION, "shop-1.2-1"));
    f.rt.block_on(c.metrics_for(2, 20.0));
    let before = f.rt.block_on(c.snapshot(&c.gen(1)));
    let args = f.deploy_args(&next, &config, "0.1", &[]);
    let child = spawn(&strs(&args));
    wait_for("the second canary to wait for approval", || {
        f.rt.block_on(c.tag(&c.gen(2), "bakery:canary"))
            .is_some_and(|t| t["st"] == "awaiting-approval")
    });
    let no = bakery(&["canary", "reject", "--cluster", &c.name, "--region", REGION]);
    assert_eq!(no.code, 0, "{}", no.stderr);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rejected it"), "{stderr}");
    f.rt.block_on(async {
        assert!(c.describe(&c.gen(2)).await.is_none());
        assert!(c
            .describe(&format!("{}-baseline", c.gen(2)))
            .await
            .is_none());
        assert_eq!(c.snapshot(&c.gen(1)).await, before);
    });
}

#[test]
fn ctrl_c_removes_both_groups_and_a_killed_canary_is_resumed_or_rolled_back() {
    let f = fixture();
    let c = &f.c;
    f.rt.block_on(c.metrics_for(1, 0.0));
    let config = f.config(CONFIG);
    let before = f.rt.block_on(c.snapshot(&c.gen(0)));
    let baseline = format!("{}-baseline", c.gen(1));
    let running = || {
        f.rt.block_on(c.tag(&c.gen(1), "bakery:canary"))
            .is_some_and(|t| t["st"] == "running")
    };

    // Ctrl-C while it is judged: exit 130, both groups gone, v000 as it was.
    let args = f.deploy_args(&c.new_ami, &config, "5", &[]);
    let child = spawn(&strs(&args));
    wait_for("the canary to run", running);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.rt.block_on(async {
        assert!(c.describe(&c.gen(1)).await.is_none());
        assert!(c.describe(&baseline).await.is_none());
        assert_eq!(
            c.snapshot(&c.gen(0)).await,
            before,
            "v000 as it was (following $Latest again)"
        );
    });

    // kill -9 while it is judged: both groups stay, tagged; the same deploy again resumes it.
    let mut child = spawn(&strs(&args));
    wait_for("the canary to run again", running);
    let baseline_ids = f.rt.block_on(c.instance_ids(&baseline));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(f.rt.block_on(c.describe(&baseline)).is_some());
    let resumed = f.deploy_args(&c.new_ami, &config, "0.1", &[]);
    let out = bakery(&strs(&resumed));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = &out.json()["regions"][0]["detail"];
    assert_eq!(
        (d["resumed"].as_bool(), d["serving"].as_str()),
        (Some(true), Some(c.gen(1).as_str())),
        "{d}"
    );
    assert!(
        out.stderr.contains(&format!("reusing baseline {baseline}")),
        "{}",
        out.stderr
    );
    assert!(!baseline_ids.is_empty());
    f.rt.block_on(async { assert!(c.describe(&baseline).await.is_none()) });

    // kill -9 of the next deploy's canary, then `bakery rollback`: both go, v001 serves again.
    let next = f.rt.block_on(deploy::app_ami(&c.ctx, REGION, "shop-1.2-1"));
    f.rt.block_on(c.metrics_for(2, 0.0));
    let args = f.deploy_args(&next, &config, "5", &[]);
    let mut child = spawn(&strs(&args));
    wait_for("the second canary to run", || {
        f.rt.block_on(c.tag(&c.gen(2), "bakery:canary"))
            .is_some_and(|t| t["st"] == "running")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let rb = bakery(&["rollback", "--cluster", &c.name, "--region", REGION]);
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    f.rt.block_on(async {
        assert!(c.describe(&c.gen(2)).await.is_none());
        assert!(
            c.describe(&format!("{}-baseline", c.gen(2)))
                .await
                .is_none(),
            "rollback removes the baseline"
        );
        assert_eq!(c.registered().await, c.instance_ids(&c.gen(1)).await);
    });
}

#[test]
fn bad_canary_input_changes_nothing() {
    let f = fixture();
    let c = &f.c;
    let before = f.rt.block_on(c.snapshot(&c.gen(0)));
    let no_source = f.config("metrics: [{name: errors}]");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            f.deploy_args(&c.new_ami, &no_source, "1", &[]),
            "have no source",
        ),
        (
            f.deploy_args(
                &c.new_ami,
                &f.config(CONFIG),
                "1",
                &["--canary-report", "/nonexistent/dir"],
            ),
            "--canary-report /nonexistent/dir",
        ),
        (
            f.deploy_args(&c.new_ami, "/nonexistent/canary.yaml", "1", &[]),
            "no such file",
        ),
        (
            {
                let mut a = f.deploy_args(&c.new_ami, &f.config(CONFIG), "1", &[]);
                let i = a.iter().position(|x| x == "4s").unwrap();
                a[i] = "often".into();
                a
            },
            "--interval often",
        ),
        (
            vec![
                "deploy".into(),
                "--image".into(),
                c.new_ami.clone(),
                "--region".into(),
                REGION.into(),
                "--cluster".into(),
                c.name.clone(),
                "--canary-size".into(),
                "1".into(),
            ],
            "a canary needs a judge",
        ),
    ];
    for (args, want) in &cases {
        let out = bakery(&strs(args));
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.error_line().contains(want),
            "{args:?}: {}",
            out.error_line()
        );
    }
    // A source that cannot be read is found before anything is made: a run-time failure.
    let unreachable = f.config("prometheus: {url: 'http://127.0.0.1:9'}\nmetrics: [{name: errors, prometheus: {query: 'errors{asg=\"{group}\"}'}}]");
    let out = bakery(&strs(&f.deploy_args(&c.new_ami, &unreachable, "1", &[])));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("before the canary") && out.error_line().contains("cannot reach"),
        "{}",
        out.error_line()
    );
    f.rt.block_on(async {
        assert!(c.describe(&c.gen(1)).await.is_none());
        assert_eq!(c.snapshot(&c.gen(0)).await, before);
    });
    // --canary with --judge: clap refuses (exit 2).
    let mut a = f.deploy_args(
        &c.new_ami,
        &f.config(CONFIG),
        "1",
        &["--judge", "judge-metrics-file"],
    );
    a.retain(|x| x != "--interval" && x != "4s");
    let out = bakery(&strs(&a));
    assert_eq!(out.code, 2, "{}", out.stderr);
}
