//! The canary judge against an independent reference: tests/support/stats/reference.py (numpy's
//! pairwise differences, scipy's normal quantile and scipy.stats.mannwhitneyu inverted into the
//! interval), on generated data that covers every rule: small samples (1..6 a side), ties,
//! identical and single-valued data, empty sides, NaN/inf points, zero means, directions,
//! effect sizes, critical metrics, must-have-data, outlier removal, 50 % no data, group weights
//! and thresholds, and large samples. Every metric's classification, critical flag, estimate,
//! interval and ratio, every group score, the summary score and the verdict must agree.
//!
//! Seed: fixed (reproducible CI), or `BAKERY_TEST_SEED=N`.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use bakery::canary::config::Config;
use bakery::canary::data::{MetricSet, Point};
use bakery::canary::judge::{self, Judgement, MetricClass, Verdict};
use serde_json::{json, Value};

struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.int(0, v.len() - 1)]
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Normal,
    Exponential,
    /// Small integers: many ties.
    Counts,
}

/// `n` values of `shape` at location `loc`, scale `scale`, on a 0.001 grid (integers for counts).
fn sample(g: &mut Gen, shape: Shape, n: usize, loc: f64, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| match shape {
            Shape::Normal => ((loc + scale * g.normal()) * 1000.0).round() / 1000.0,
            Shape::Exponential => {
                ((loc + scale * -(g.unit().max(1e-12)).ln()) * 1000.0).round() / 1000.0
            }
            Shape::Counts => (loc + scale * g.normal()).round().max(0.0),
        })
        .collect()
}

fn encode(v: &[f64]) -> Value {
    Value::Array(
        v.iter()
            .map(|x| {
                if x.is_nan() {
                    Value::Null
                } else if x.is_infinite() {
                    json!(if *x > 0.0 { "inf" } else { "-inf" })
                } else {
                    json!(x)
                }
            })
            .collect(),
    )
}

/// One generated case: the config (as JSON, which is YAML) and both sides' values.
fn case(g: &mut Gen, id: usize) -> Value {
    let groups = ["errors", "latency", "system"];
    let n_metrics = g.int(1, 7);
    let mut metrics = Vec::new();
    let mut base = serde_json::Map::new();
    let mut can = serde_json::Map::new();
    for k in 0..n_metrics {
        let name = format!("m{k}");
        let mut m = serde_json::Map::new();
        m.insert("name".into(), json!(name));
        m.insert("group".into(), json!(g.pick(&groups)));
        if g.chance(0.7) {
            m.insert(
                "direction".into(),
                json!(g.pick(&["increase", "decrease", "either"])),
            );
        }
        if g.chance(0.2) {
            m.insert("critical".into(), json!(true));
        }
        if g.chance(0.25) {
            m.insert("must-have-data".into(), json!(true));
        }
        let outliers = g.chance(0.25);
        if outliers {
            m.insert(
                "outliers".into(),
                json!({"strategy": g.pick(&["remove", "remove", "keep"]), "factor": g.pick(&[1.5, 3.0])}),
            );
        }
        if g.chance(0.35) {
            let mut e = serde_json::Map::new();
            if g.chance(0.6) {
                e.insert(
                    "allowed-increase".into(),
                    json!(g.pick(&[1.05, 1.2, 1.5, 2.0])),
                );
            }
            if g.chance(0.6) {
                e.insert("allowed-decrease".into(), json!(g.pick(&[0.5, 0.8, 0.95])));
            }
            if g.chance(0.5) {
                e.insert("critical-increase".into(), json!(g.pick(&[1.1, 1.5, 3.0])));
            }
            if g.chance(0.5) {
                e.insert("critical-decrease".into(), json!(g.pick(&[0.3, 0.7, 0.9])));
            }
            m.insert("effect-size".into(), Value::Object(e));
        }
        // Sizes: mostly medium, some tiny, a few large.
        let size = g.unit();
        let (nb, nc) = if size < 0.3 {
            (g.int(1, 6), g.int(1, 6))
        } else if size < 0.95 {
            (g.int(8, 60), g.int(8, 60))
        } else {
            (g.int(200, 700), g.int(200, 700))
        };
        let shape = g.pick(&[
            Shape::Normal,
            Shape::Normal,
            Shape::Exponential,
            Shape::Counts,
        ]);
        let (loc, scale) = match shape {
            Shape::Counts => (g.pick(&[0.0, 2.0, 5.0, 20.0]), g.pick(&[0.7, 1.5, 3.0])),
            _ => (g.pick(&[0.0, 1.0, 50.0, 200.0]), g.pick(&[0.5, 5.0, 20.0])),
        };
        let scenario = g.int(0, 9);
        let shift = g.pick(&[0.15, 0.5, 1.0, 3.0]) * scale;
        let b = sample(g, shape, nb, loc, scale);
        let mut c = match scenario {
            0..=2 => sample(g, shape, nc, loc, scale),
            3..=4 => sample(g, shape, nc, loc + shift, scale),
            5..=6 => sample(
                g,
                shape,
                nc,
                (loc - shift).max(if shape == Shape::Counts {
                    0.0
                } else {
                    f64::MIN
                }),
                scale,
            ),
            // identical data, reordered
            7 => b.iter().rev().copied().collect(),
            // one value on both sides, or a different single value on each
            8 => {
                let v = b[0];
                let same = g.chance(0.5);
                let b2 = vec![v; nb];
                base.insert(name.clone(), encode(&b2));
                let c2 = vec![if same { v } else { v + shift.max(1.0) }; nc];
                can.insert(name.clone(), encode(&c2));
                metrics.push(Value::Object(m));
                continue;
            }
            // baseline all zero (ratio undefined), canary above
            _ => {
                let b2 = vec![0.0; nb];
                base.insert(name.clone(), encode(&b2));
                can.insert(
                    name.clone(),
                    encode(&sample(g, Shape::Counts, nc, 3.0, 1.0)),
                );
                metrics.push(Value::Object(m));
                continue;
            }
        };
        let mut b = b;
        if outliers && g.chance(0.7) && c.len() > 10 {
            for v in c.iter_mut().take(2) {
                *v = loc + 1000.0 * scale;
            }
        }
        if g.chance(0.06) {
            b.push(f64::NAN);
            c.push(f64::INFINITY);
        }
        // Empty sides.
        let empty = g.unit();
        if empty < 0.05 {
            b.clear();
        } else if empty < 0.10 {
            c.clear();
        } else if empty < 0.12 {
            b = vec![f64::NAN; 3];
        }
        if !(empty < 0.14 && g.chance(0.3)) {
            base.insert(name.clone(), encode(&b));
        }
        can.insert(name.clone(), encode(&c));
        metrics.push(Value::Object(m));
    }
    let mut config = serde_json::Map::new();
    config.insert("metrics".into(), Value::Array(metrics.clone()));
    if g.chance(0.25) {
        config.insert("confidence".into(), json!(g.pick(&[0.9, 0.95, 0.99])));
    }
    if g.chance(0.4) {
        let pass: f64 = g.pick(&[60.0, 80.0, 90.0, 100.0]);
        let marginal = g.pick(&[0.0f64, 40.0, 50.0, 60.0]).min(pass);
        config.insert(
            "thresholds".into(),
            json!({"pass": pass, "marginal": marginal}),
        );
    }
    // Weights: none, some, or all groups.
    let used: Vec<String> = {
        let mut u: Vec<String> = metrics
            .iter()
            .map(|m| m["group"].as_str().unwrap().to_string())
            .collect();
        u.sort();
        u.dedup();
        u
    };
    let w = g.unit();
    if w < 0.3 && used.len() > 1 {
        // every group weighted, adding up to 100
        let mut left = 100.0;
        let mut ws = serde_json::Map::new();
        for (i, gname) in used.iter().enumerate() {
            let v = if i + 1 == used.len() {
                left
            } else {
                g.pick(&[10.0, 20.0, 30.0])
            };
            left -= v;
            ws.insert(gname.clone(), json!(v));
        }
        config.insert("groups".into(), Value::Object(ws));
    } else if w < 0.6 && used.len() > 1 {
        config.insert(
            "groups".into(),
            json!({ used[0].clone(): g.pick(&[20.0, 50.0, 70.0]) }),
        );
    }
    json!({"id": id, "config": config, "baseline": base, "canary": can})
}

fn decode(v: &Value) -> Vec<Point> {
    v.as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, x)| Point {
            t: i as f64 * 60.0,
            v: match x {
                Value::Null => f64::NAN,
                Value::String(s) => s.parse().unwrap(),
                n => n.as_f64().unwrap(),
            },
        })
        .collect()
}

fn set(v: &Value) -> MetricSet {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), decode(v)))
        .collect()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300),
        _ => false,
    }
}

fn opt(v: &Value) -> Option<f64> {
    v.as_f64()
}

#[derive(Default)]
struct Tally(BTreeMap<&'static str, usize>);

impl Tally {
    fn add(&mut self, k: &'static str) {
        *self.0.entry(k).or_default() += 1;
    }
}

fn tally(t: &mut Tally, j: &Judgement, c: &Value) {
    for m in &j.metrics {
        t.add(match m.classification {
            MetricClass::Pass => "Pass",
            MetricClass::High => "High",
            MetricClass::Low => "Low",
            MetricClass::Nodata => "Nodata",
            MetricClass::NodataFailMetric => "NodataFailMetric",
        });
        let reason = m.reason.as_deref().unwrap_or("");
        if m.critical_failure {
            t.add(match m.classification {
                MetricClass::High => "critical High",
                MetricClass::Low => "critical Low",
                _ => "critical no data",
            });
        }
        if m.critical
            && !m.critical_failure
            && matches!(m.classification, MetricClass::High | MetricClass::Low)
        {
            t.add("critical within its critical effect size");
        }
        if reason.contains("identical") {
            t.add("identical data");
        }
        if reason.contains("same") {
            t.add("one value on both sides");
        }
        if reason.contains("too few points") {
            t.add("unbounded interval (small sample)");
        }
        if reason.contains("only a decrease counts") || reason.contains("only an increase counts") {
            t.add("direction rules a change out");
        }
        if reason.contains("allowed-increase") || reason.contains("allowed-decrease") {
            t.add("effect size rules a change out");
        }
        if m.ratio.is_none() && matches!(m.classification, MetricClass::High | MetricClass::Low) {
            t.add("High/Low with an undefined ratio");
        }
        if m.removed.values().any(|r| r.outliers > 0) {
            t.add("outliers removed");
        }
        if m.removed.values().any(|r| r.non_finite > 0) {
            t.add("NaN/inf dropped");
        }
        let n = m.baseline.count.min(m.canary.count);
        if (1..=5).contains(&n) {
            t.add("a side of 1..5 points");
        }
        if m.baseline.count >= 200 && m.canary.count >= 200 {
            t.add("large samples");
        }
    }
    t.add(match j.classification {
        Verdict::Pass => "verdict Pass",
        Verdict::Marginal => "verdict Marginal",
        Verdict::Fail => "verdict Fail",
    });
    match j.reason.as_deref() {
        Some(r) if r.starts_with("critical") => t.add("score 0: critical"),
        Some(_) => t.add("score 0: half or more without data"),
        None => {}
    }
    if j.groups.len() > 1 {
        t.add("several groups");
    }
    if let Some(ws) = c["config"]["groups"].as_object() {
        if ws.len() == j.groups.len() {
            t.add("every group weighted");
        } else {
            t.add("unweighted groups share the rest");
        }
    }
    if j.groups
        .values()
        .any(|g| g.pass + g.high + g.low + g.nodata_fail == 0)
    {
        t.add("a group without data scores 100");
    }
}

#[test]
fn the_judge_matches_numpy_and_scipy_on_every_rule() {
    let seed: u64 = std::env::var("BAKERY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_130);
    eprintln!("canary reference: seed {seed} (rerun with BAKERY_TEST_SEED={seed})");
    let mut g = Gen(seed);
    let cases: Vec<Value> = (0..260).map(|i| case(&mut g, i)).collect();

    // Ours.
    let mut ours = Vec::new();
    for c in &cases {
        let text = serde_json::to_string(&c["config"]).unwrap();
        let config = Config::parse(&text, &format!("case {}", c["id"]))
            .unwrap_or_else(|e| panic!("case {}: {e:#}\n{text}", c["id"]));
        ours.push(judge::judge(
            &config,
            &set(&c["baseline"]),
            &set(&c["canary"]),
        ));
    }

    // Theirs.
    let py = support::repo().join("tests/support/stats/python");
    let script = support::repo().join("tests/support/stats/reference.py");
    let mut child = Command::new(&py)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running tests/support/stats/python");
    let input = serde_json::to_vec(&json!({"cases": cases})).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "reference.py failed");
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut failures = Vec::new();
    let mut tallies = Tally::default();
    let mut n_metrics = 0;
    for ((c, j), r) in cases
        .iter()
        .zip(&ours)
        .zip(theirs["results"].as_array().unwrap())
    {
        let id = &c["id"];
        tally(&mut tallies, j, c);
        for f in r["duality_failures"].as_array().unwrap() {
            failures.push(format!("case {id}: scipy: {f}"));
        }
        if j.score != r["score"].as_f64().unwrap()
            || j.classification.as_str() != r["classification"]
        {
            failures.push(format!(
                "case {id}: score {} {} vs reference {} {}",
                j.score, j.classification, r["score"], r["classification"]
            ));
        }
        for (gname, gs) in r["groups"].as_object().unwrap() {
            if j.groups.get(gname).map(|x| x.score) != gs.as_f64() {
                failures.push(format!(
                    "case {id}: group {gname} scores {:?} vs {gs}",
                    j.groups.get(gname).map(|x| x.score)
                ));
            }
        }
        for (m, rm) in j.metrics.iter().zip(r["metrics"].as_array().unwrap()) {
            n_metrics += 1;
            let what = format!("case {id} metric {}", m.name);
            if m.classification.as_str() != rm["classification"]
                || m.critical_failure != rm["critical_failure"]
            {
                failures.push(format!(
                    "{what}: {} critical={} vs reference {} critical={} ({:?})",
                    m.classification.as_str(),
                    m.critical_failure,
                    rm["classification"],
                    rm["critical_failure"],
                    m.reason
                ));
            }
            if !close(m.estimate, opt(&rm["estimate"])) {
                failures.push(format!(
                    "{what}: estimate {:?} vs {}",
                    m.estimate, rm["estimate"]
                ));
            }
            let iv = m.interval.unwrap_or([None, None]);
            let riv = rm["interval"]
                .as_array()
                .map(|a| [opt(&a[0]), opt(&a[1])])
                .unwrap_or([None, None]);
            if !close(iv[0], riv[0]) || !close(iv[1], riv[1]) {
                failures.push(format!("{what}: interval {iv:?} vs {riv:?}"));
            }
            if !close(m.ratio, opt(&rm["ratio"])) {
                failures.push(format!("{what}: ratio {:?} vs {}", m.ratio, rm["ratio"]));
            }
        }
    }
    eprintln!(
        "canary reference: {} cases, {n_metrics} metrics checked against numpy {} / scipy {}; rules covered: {}",
        cases.len(),
        theirs["numpy"].as_str().unwrap_or("?"),
        theirs["scipy"].as_str().unwrap_or("?"),
        tallies.0.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The generator must have reached every rule.
    for rule in [
        "Pass",
        "High",
        "Low",
        "Nodata",
        "NodataFailMetric",
        "critical High",
        "critical Low",
        "critical no data",
        "critical within its critical effect size",
        "identical data",
        "one value on both sides",
        "unbounded interval (small sample)",
        "direction rules a change out",
        "effect size rules a change out",
        "High/Low with an undefined ratio",
        "outliers removed",
        "NaN/inf dropped",
        "a side of 1..5 points",
        "large samples",
        "verdict Pass",
        "verdict Marginal",
        "verdict Fail",
        "score 0: critical",
        "score 0: half or more without data",
        "several groups",
        "every group weighted",
        "unweighted groups share the rest",
        "a group without data scores 100",
    ] {
        assert!(
            tallies.0.get(rule).copied().unwrap_or(0) > 0,
            "no generated case covers: {rule}"
        );
    }
}
