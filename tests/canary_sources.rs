//! The metric sources for real: a Prometheus server (Debian's `prometheus`, fed with `promtool
//! tsdb create-blocks-from openmetrics`) and CloudWatch through the AWS emulator. In both, the
//! judgement of live groups (`bakery canary judge --baseline-group G1 --canary-group G2`) must be
//! exactly the judgement of the same points given as files: the sources lose, add or change
//! no point, and `{group}` selects the right series.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// Deterministic noise in [-1, 1).
fn noise(i: usize, seed: u64) -> f64 {
    let mut z = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ seed.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 29)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 32;
    (z % 2000) as f64 / 1000.0 - 1.0
}

/// 60 values around `centre`, on a 0.001 grid.
fn values(centre: f64, spread: f64, seed: u64) -> Vec<f64> {
    (0..60)
        .map(|i| ((centre + spread * noise(i, seed)) * 1000.0).round() / 1000.0)
        .collect()
}

/// The data both tests serve: per metric, the baseline group's and the canary group's values.
/// The canary's errors are three times the baseline's; its latency is the same.
fn data() -> Vec<(&'static str, Vec<f64>, Vec<f64>)> {
    vec![
        ("errors", values(2.0, 0.5, 1), values(6.0, 1.5, 2)),
        ("latency", values(0.2, 0.02, 3), values(0.2, 0.02, 4)),
    ]
}

/// Both sides as CSV files (the reference judgement).
fn write_csv(dir: &Path, times: &[i64]) {
    for (side, pick) in [("baseline", 0usize), ("canary", 1)] {
        let mut s = String::from("metric,timestamp,value\n");
        for (m, b, c) in data() {
            let v = if pick == 0 { &b } else { &c };
            for (t, x) in times.iter().zip(v) {
                s.push_str(&format!("{m},{t},{x}\n"));
            }
        }
        write(&dir.join(format!("{side}.csv")), &s);
    }
}

/// `bakery canary judge --json --config canary.yaml ARGS` with `env` set (a value of `None`
/// removes the variable).
fn judge(t: &TestDir, config: &str, args: &[&str], env: &[(&str, Option<String>)]) -> Run {
    write(&t.path("canary.yaml"), config);
    let mut c = t.bakery();
    c.args(["canary", "judge", "--json", "--config"])
        .arg(t.path("canary.yaml"))
        .args(args);
    c.env_remove("AWS_PROFILE");
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    run(&mut c)
}

/// The parts of a judgement that must match: verdict, score, and per metric its class, counts,
/// estimate and interval.
fn essence(j: &Value) -> Value {
    let metrics: Vec<Value> = j["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m["name"], "classification": m["classification"], "estimate": m["estimate"],
                "interval": m["interval"], "baseline": m["baseline"], "canary": m["canary"],
            })
        })
        .collect();
    serde_json::json!({"score": j["score"], "classification": j["classification"], "metrics": metrics})
}

/// A Prometheus server on 127.0.0.1 serving `data_dir`; stopped (its process group) at drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(t: &TestDir, data_dir: &Path) -> Prometheus {
        let port = emulator::free_port();
        let cfg = t.path("prometheus.yml");
        write(&cfg, "global:\n  scrape_interval: 1m\n");
        let log = std::fs::File::create(t.path("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", data_dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=30d")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("prometheus (Debian package `prometheus`, in .ci/packages.txt)");
        let p = Prometheus { child, port };
        let start = Instant::now();
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n");
                let mut r = String::new();
                let _ = s.read_to_string(&mut r);
                if r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200") {
                    return p;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "prometheus not ready in 60 s:\n{}",
                std::fs::read_to_string(t.path("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let pg = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_ranges_judge_exactly_like_the_same_points_in_files() {
    let t = TestDir::new("canary-prometheus");
    // Four hours ago, on a whole hour: old enough for backfilled blocks, inside the retention.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start = (now / 3600 - 4) * 3600;
    let times: Vec<i64> = (0..60).map(|i| start + 60 * i).collect();
    // OpenMetrics: one family per metric, each group's series in time order; a third series
    // (another group) that must not leak into either side.
    let mut om = String::new();
    for (m, b, c) in data() {
        om.push_str(&format!("# TYPE app_{m} gauge\n"));
        for (group, v) in [
            ("shop-v001", &b),
            ("shop-v002", &c),
            ("other-v009", &values(99.0, 1.0, 9)),
        ] {
            for (ts, x) in times.iter().zip(v.iter()) {
                om.push_str(&format!("app_{m}{{asg=\"{group}\"}} {x} {ts}\n"));
            }
        }
    }
    om.push_str("# EOF\n");
    write(&t.path("metrics.om"), &om);
    let data_dir = t.path("tsdb");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(t.path("metrics.om"))
        .arg(&data_dir)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prom = Prometheus::start(&t, &data_dir);

    let config = format!(
        "prometheus: {{url: 'http://127.0.0.1:{}'}}\nmetrics:\n  \
         - {{name: errors, direction: increase, critical: true, prometheus: {{query: 'app_errors{{asg=\"{{group}}\"}}', step: 60}}}}\n  \
         - {{name: latency, prometheus: {{query: 'max by (asg) (app_latency{{asg=\"{{group}}\"}})'}}}}\n",
        prom.port
    );
    let (s, e) = (times[0].to_string(), times[59].to_string());
    let report = t.path("live.html");
    let live = judge(
        &t,
        &config,
        &[
            "--baseline-group",
            "shop-v001",
            "--canary-group",
            "shop-v002",
            "--start",
            &s,
            "--end",
            &e,
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        live.code, 1,
        "the canary's errors are 3x: it fails\n{}",
        live.stderr
    );
    let lj = live.json();
    assert_eq!(lj["metrics"][0]["classification"], "High");
    assert_eq!(lj["metrics"][0]["critical_failure"], true);
    assert_eq!(lj["metrics"][1]["classification"], "Pass");
    assert_eq!(
        lj["metrics"][0]["baseline"]["count"], 60,
        "one point per step, none lost"
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("Canary shop-v002 against baseline shop-v001"));

    write_csv(t.dir.path(), &times);
    let files = judge(
        &t,
        &config,
        &[
            "--baseline",
            t.path("baseline.csv").to_str().unwrap(),
            "--canary",
            t.path("canary.csv").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        essence(&lj),
        essence(&files.json()),
        "Prometheus's points are the files' points"
    );

    // A query Prometheus refuses is the user's to fix (exit 2, naming the metric); an
    // unreachable server is a run-time failure (exit 1).
    let bad = config.replace("max by (asg)", "max by asg");
    let r = judge(
        &t,
        &bad,
        &[
            "--baseline-group",
            "shop-v001",
            "--canary-group",
            "shop-v002",
            "--start",
            &s,
            "--end",
            &e,
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.error_line()
            .contains("Prometheus refused the query of metric latency (bad_data"),
        "{}",
        r.error_line()
    );
    drop(prom);
    let r = judge(
        &t,
        &config,
        &[
            "--baseline-group",
            "shop-v001",
            "--canary-group",
            "shop-v002",
            "--start",
            &s,
            "--end",
            &e,
        ],
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.error_line().contains("cannot reach the server"),
        "{}",
        r.error_line()
    );
}

#[test]
fn cloudwatch_get_metric_data_judges_exactly_like_the_same_points_in_files() {
    let t = TestDir::new("canary-cloudwatch");
    let emu = emulator::Emulator::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start = (now / 60 - 90) * 60;
    let times: Vec<i64> = (0..60).map(|i| start + 60 * i).collect();
    // Put the points: the app's custom namespace for errors (per group), AWS/EC2 for latency's
    // stand-in; the same metric name and dimensions in a second namespace must not leak in.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(bakery::aws::https::client())
            .endpoint_url(emu.endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        let cw = aws_sdk_cloudwatch::Client::new(&conf);
        for (m, b, c) in data() {
            for (group, v, ns) in [
                ("shop-v001", &b, "Shop/App"),
                ("shop-v002", &c, "Shop/App"),
                ("shop-v001", &values(500.0, 1.0, 7), "Other/App"),
            ] {
                let datums: Vec<_> = times
                    .iter()
                    .zip(v.iter())
                    .map(|(ts, x)| {
                        aws_sdk_cloudwatch::types::MetricDatum::builder()
                            .metric_name(m)
                            .dimensions(
                                aws_sdk_cloudwatch::types::Dimension::builder()
                                    .name("AutoScalingGroupName")
                                    .value(group)
                                    .build(),
                            )
                            .timestamp(aws_smithy_types::DateTime::from_secs(*ts))
                            .value(*x)
                            .build()
                    })
                    .collect();
                cw.put_metric_data()
                    .namespace(ns)
                    .set_metric_data(Some(datums))
                    .send()
                    .await
                    .unwrap();
            }
        }
    });
    let config = "\
metrics:
  - {name: errors, direction: increase, critical: true, cloudwatch: {metric: 'Shop/App errors AutoScalingGroupName={group}', statistic: Average, period: 60}}
  - name: latency
    cloudwatch: {namespace: Shop/App, metric-name: latency, dimensions: {AutoScalingGroupName: '{group}'}, statistic: Maximum}
";
    let (s, e) = (times[0].to_string(), (times[59] + 60).to_string());
    let env: Vec<(&str, Option<String>)> =
        emu.env().into_iter().map(|(k, v)| (k, Some(v))).collect();
    let live = judge(
        &t,
        config,
        &[
            "--baseline-group",
            "shop-v001",
            "--canary-group",
            "shop-v002",
            "--start",
            &s,
            "--end",
            &e,
        ],
        &env,
    );
    assert_eq!(
        live.code, 1,
        "the canary's errors are 3x: it fails\n{}",
        live.stderr
    );
    let lj = live.json();
    assert_eq!(lj["metrics"][0]["classification"], "High");
    assert_eq!(lj["metrics"][1]["classification"], "Pass");
    assert_eq!(
        lj["metrics"][0]["baseline"]["count"], 60,
        "one point per period, none lost"
    );

    write_csv(t.dir.path(), &times);
    let files = judge(
        &t,
        config,
        &[
            "--baseline",
            t.path("baseline.csv").to_str().unwrap(),
            "--canary",
            t.path("canary.csv").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        essence(&lj),
        essence(&files.json()),
        "CloudWatch's points are the files' points"
    );

    // Without a region CloudWatch cannot be asked: an input error before any call.
    let mut no_region = env.clone();
    no_region.retain(|(k, _)| *k != "AWS_REGION");
    no_region.push(("AWS_REGION", None));
    no_region.push(("AWS_DEFAULT_REGION", None));
    let r = judge(
        &t,
        config,
        &[
            "--baseline-group",
            "a",
            "--canary-group",
            "b",
            "--start",
            "30m",
        ],
        &no_region,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.error_line().contains("no AWS region"),
        "{}",
        r.error_line()
    );
}
