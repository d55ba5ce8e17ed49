//! `bakery canary judge` end to end: CSV and JSON metric files give the same judgement, the JSON
//! on stdout has the documented shape, the table and the summary line read right, the report is
//! written, exit codes follow the verdict (and the config's `marginal`), and bad input is one line
//! naming the flag, file or key, exit 2, no report.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::*;

/// Deterministic noise in [-1, 1).
fn noise(i: usize, seed: u64) -> f64 {
    let mut z = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ seed.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 29)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 32;
    (z % 2000) as f64 / 1000.0 - 1.0
}

/// 60 points a minute apart around `centre`.
fn series(centre: f64, spread: f64, seed: u64) -> Vec<(f64, f64)> {
    (0..60)
        .map(|i| {
            (
                1_764_000_000.0 + 60.0 * i as f64,
                centre + spread * noise(i, seed),
            )
        })
        .collect()
}

struct Side(Vec<(&'static str, Vec<(f64, f64)>)>);

impl Side {
    fn csv(&self, path: &Path) {
        let mut s = String::from("metric,timestamp,value\n");
        for (m, pts) in &self.0 {
            for (t, v) in pts {
                s.push_str(&format!("{m},{t},{v}\n"));
            }
        }
        write(path, &s);
    }
    fn json(&self, path: &Path) {
        let mut o = serde_json::Map::new();
        for (m, pts) in &self.0 {
            o.insert(
                m.to_string(),
                json!(pts.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>()),
            );
        }
        write(path, &Value::Object(o).to_string());
    }
}

const CONFIG: &str = "\
# errors decide; latency and system weigh in
thresholds: {pass: 95, marginal: 50}
groups: {errors: 50}
metrics:
  - name: errors
    group: errors
    direction: increase
    critical: true
    must-have-data: true
    effect-size: {critical-increase: 1.5}
  - name: latency_p99
    group: latency
    direction: increase
    outliers: {strategy: remove}
  - name: cpu
    group: system
  - name: throughput
    group: system
    direction: decrease
";

fn baseline() -> Side {
    Side(vec![
        ("errors", series(1.0, 0.2, 1)),
        ("latency_p99", series(200.0, 20.0, 2)),
        ("cpu", series(40.0, 5.0, 3)),
        ("throughput", series(1000.0, 50.0, 4)),
    ])
}

/// The canary: like the baseline, or with `errors` / `latency_p99` multiplied.
fn canary(errors: f64, latency: f64) -> Side {
    Side(vec![
        ("errors", series(1.0 * errors, 0.2 * errors, 11)),
        ("latency_p99", series(200.0 * latency, 20.0, 12)),
        ("cpu", series(40.0, 5.0, 13)),
        ("throughput", series(1000.0, 50.0, 14)),
    ])
}

fn judge(t: &TestDir, config: &str, b: &Path, c: &Path, extra: &[&str]) -> Run {
    let cfg = t.path("canary.yaml");
    write(&cfg, config);
    run(t
        .bakery()
        .args(["canary", "judge", "--config"])
        .arg(&cfg)
        .arg("--baseline")
        .arg(b)
        .arg("--canary")
        .arg(c)
        .args(extra))
}

#[test]
fn a_healthy_canary_passes_from_csv_and_json_alike() {
    let t = TestDir::new("canary-pass");
    baseline().csv(&t.path("b.csv"));
    canary(1.0, 1.0).csv(&t.path("c.csv"));
    baseline().json(&t.path("b.json"));
    canary(1.0, 1.0).json(&t.path("c.json"));
    let report = t.path("report.html");
    let r = judge(
        &t,
        CONFIG,
        &t.path("b.csv"),
        &t.path("c.csv"),
        &["--json", "--report", report.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["classification"], "Pass");
    assert_eq!(j["score"], 100.0);
    // The documented shape.
    for k in ["score", "classification", "groups", "metrics"] {
        assert!(j.get(k).is_some(), "no {k} in {j}");
    }
    let m = &j["metrics"][0];
    for k in [
        "name",
        "group",
        "classification",
        "critical",
        "ratio",
        "baseline",
        "canary",
        "interval",
        "estimate",
    ] {
        assert!(m.get(k).is_some(), "no metrics[0].{k} in {m}");
    }
    for k in ["count", "mean", "median"] {
        assert!(
            m["baseline"].get(k).is_some() && m["canary"].get(k).is_some(),
            "no {k}"
        );
    }
    assert_eq!(m["baseline"]["count"], 60);
    assert_eq!(m["interval"].as_array().unwrap().len(), 2);
    assert_eq!(j["groups"]["errors"]["weight"], 50.0);
    assert_eq!(j["groups"]["latency"]["weight"], 25.0);
    // One summary line for people on stderr.
    assert!(
        r.stderr.contains("canary Pass with score 100"),
        "{}",
        r.stderr
    );
    // JSON input, same judgement.
    let r2 = judge(
        &t,
        CONFIG,
        &t.path("b.json"),
        &t.path("c.json"),
        &["--json"],
    );
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    assert_eq!(r2.json(), j);
    // The report is there and has every metric as a cell.
    let html = std::fs::read_to_string(&report).unwrap();
    assert_eq!(html.matches("class=\"cell ").count(), 4);
    assert!(html.contains("id=\"verdict\">Pass<"));
    // Without --json: a table.
    let r3 = judge(&t, CONFIG, &t.path("b.csv"), &t.path("c.csv"), &[]);
    assert_eq!(r3.code, 0);
    let lines: Vec<&str> = r3.stdout.lines().collect();
    assert!(
        lines[0].starts_with("METRIC") && lines[0].contains("INTERVAL"),
        "{}",
        r3.stdout
    );
    assert_eq!(lines.len(), 6, "{}", r3.stdout);
    assert!(
        lines[1].starts_with("errors ") && lines[1].contains(" Pass "),
        "{}",
        r3.stdout
    );
    assert_eq!(lines[5], "score 100 Pass");
}

#[test]
fn a_canary_with_triple_errors_fails_and_exits_1() {
    let t = TestDir::new("canary-fail");
    baseline().csv(&t.path("b.csv"));
    canary(3.0, 1.0).csv(&t.path("c.csv"));
    let r = judge(&t, CONFIG, &t.path("b.csv"), &t.path("c.csv"), &["--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["classification"], "Fail");
    assert_eq!(j["score"], 0.0);
    assert_eq!(j["metrics"][0]["classification"], "High");
    assert_eq!(j["metrics"][0]["critical_failure"], true);
    let line = r.error_line();
    assert!(
        line.starts_with("bakery: error: canary Fail with score 0 (pass 95, marginal 50)")
            && line.contains("errors High (critical)")
            && line.contains("critical metric errors is High"),
        "{line}"
    );
}

#[test]
fn marginal_follows_the_config() {
    let t = TestDir::new("canary-marginal");
    baseline().csv(&t.path("b.csv"));
    // Latency 40 % up: latency group 0, the others 100 -> 50 + 0 + 25 = 75: Marginal.
    canary(1.0, 1.4).csv(&t.path("c.csv"));
    let r = judge(&t, CONFIG, &t.path("b.csv"), &t.path("c.csv"), &["--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.json()["classification"], "Marginal");
    assert_eq!(r.json()["score"], 75.0);
    assert!(
        r.error_line().contains("canary Marginal with score 75"),
        "{}",
        r.error_line()
    );
    let r = judge(
        &t,
        &format!("marginal: pass\n{CONFIG}"),
        &t.path("b.csv"),
        &t.path("c.csv"),
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.ends_with("score 75 Marginal\n"), "{}", r.stdout);
}

#[test]
fn bad_input_is_one_line_exit_2_and_no_report() {
    let t = TestDir::new("canary-bad");
    baseline().csv(&t.path("b.csv"));
    canary(1.0, 1.0).csv(&t.path("c.csv"));
    write(&t.path("header.csv"), "name,time,value\nerrors,1,2\n");
    write(
        &t.path("value.csv"),
        "metric,timestamp,value\nerrors,1764000000,1\nerrors,1764000060,lots\n",
    );
    write(&t.path("bad.json"), "{\"errors\": [[1764000000]]}");
    let b = t.path("b.csv");
    let c = t.path("c.csv");
    let report = t.path("r.html");
    let s = |p: &Path| p.display().to_string();
    let cases: Vec<(&str, String, Vec<String>, &str)> = vec![
        (
            "unknown key",
            format!("{CONFIG}  - name: x\n    critcal: true\n"),
            vec![],
            "unknown field `critcal`",
        ),
        (
            "bad direction",
            "metrics: [{name: errors, direction: up}]".into(),
            vec![],
            "direction",
        ),
        (
            "weights over 100",
            "groups: {a: 80, b: 40}\nmetrics: [{name: x, group: a}, {name: y, group: b}]".into(),
            vec![],
            "add up to 120",
        ),
        (
            "no metrics",
            "metrics: []".into(),
            vec![],
            "metrics: the list is empty",
        ),
        (
            "bad header",
            CONFIG.into(),
            vec!["--baseline".into(), s(&t.path("header.csv"))],
            "header `metric,timestamp,value`",
        ),
        (
            "bad value",
            CONFIG.into(),
            vec!["--canary".into(), s(&t.path("value.csv"))],
            "value.csv line 3: value `lots` is not a number",
        ),
        (
            "bad json pair",
            CONFIG.into(),
            vec!["--canary".into(), s(&t.path("bad.json"))],
            "errors[0]: give a pair",
        ),
        (
            "missing file",
            CONFIG.into(),
            vec!["--baseline".into(), s(&t.path("nope.csv"))],
            "--baseline",
        ),
        (
            "report dir missing",
            CONFIG.into(),
            vec!["--report".into(), s(&t.path("no/dir/r.html"))],
            "--report",
        ),
    ];
    let mut failed = Vec::new();
    for (what, config, args, want) in &cases {
        let cfg = t.path("canary.yaml");
        write(&cfg, config);
        let mut cmd = t.bakery();
        cmd.args(["canary", "judge", "--config"]).arg(&cfg);
        // later flags win: the case's file replaces the good one
        let mut base = vec![
            "--baseline".to_string(),
            s(&b),
            "--canary".to_string(),
            s(&c),
            "--report".into(),
            s(&report),
        ];
        for pair in args.chunks(2) {
            if let Some(i) = base.iter().position(|x| x == &pair[0]) {
                base[i + 1] = pair[1].clone();
            }
        }
        cmd.args(&base);
        let r = run(&mut cmd);
        let line = r.error_line();
        let errors = r
            .stderr
            .lines()
            .filter(|l| l.starts_with("bakery: error:"))
            .count();
        if r.code != 2
            || errors != 1
            || !line.contains(want)
            || !r.stdout.is_empty()
            || report.exists()
        {
            failed.push(format!(
                "{what}: exit {} ({errors} error lines) `{line}` stdout {:?} report {}",
                r.code,
                r.stdout,
                report.exists()
            ));
        }
    }
    // A missing config, and a flag that needs its partner (clap's usage error is exit 2 too).
    let r = run(t
        .bakery()
        .args(["canary", "judge", "--config"])
        .arg(t.path("none.yaml"))
        .arg("--baseline")
        .arg(&b)
        .arg("--canary")
        .arg(&c));
    if r.code != 2 || !r.error_line().contains("none.yaml: no such file") {
        failed.push(format!("missing config: {} {}", r.code, r.stderr));
    }
    let r = run(t
        .bakery()
        .args(["canary", "judge", "--config"])
        .arg(t.path("canary.yaml"))
        .arg("--baseline")
        .arg(&b));
    if r.code != 2 || !r.stderr.contains("--canary") {
        failed.push(format!("no --canary: {} {}", r.code, r.stderr));
    }
    write(&t.path("canary.yaml"), "metrics: [{name: errors, cloudwatch: {metric: 'App Errors AutoScalingGroupName={group}'}}]");
    let r = run(t
        .bakery()
        .args(["canary", "judge", "--config"])
        .arg(t.path("canary.yaml"))
        .args(["--baseline-group", "a-v001", "--canary-group", "a-v002"]));
    if r.code != 2 || !r.error_line().contains("--start") {
        failed.push(format!("live without --start: {} {}", r.code, r.stderr));
    }
    eprintln!(
        "canary bad input: {} cases, {} refused cleanly",
        cases.len() + 3,
        cases.len() + 3 - failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
