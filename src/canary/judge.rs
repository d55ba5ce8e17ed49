//! The judge: classify every metric (canary against baseline), score the groups and the whole,
//! and give the verdict. Pure: data in, [`Judgement`] out.
//!
//! The rules follow Kayenta's NetflixACAJudge (`MannWhitneyClassifier`, `WeightedSumScorer`,
//! `ThresholdScoreClassifier`, `IQRDetector`), so scores mean what Kayenta users expect:
//!
//! 1. Non-finite values are dropped (Kayenta's default NaN strategy, `remove`); with
//!    `outliers: {strategy: remove}` each side loses the values outside its IQR fences
//!    ([`stats::iqr_fences`]).
//! 2. An empty side is **Nodata**; with `must-have-data` it is **NodataFailMetric** (it counts as
//!    a failure in its group); a critical metric without data fails the canary (Kayenta).
//! 3. Identical data, or one single value on both sides, is **Pass**.
//! 4. Otherwise the shift canary − baseline gets its Hodges–Lehmann estimate and Mann–Whitney
//!    interval at `confidence` ([`stats::shift`]). **High** when the interval's lower end is
//!    above 0.25 × |estimate|, the direction is `increase` or `either`, and the mean ratio
//!    (canary ÷ baseline) is at least `allowed-increase`; **Low** symmetrically (upper end below
//!    −0.25 × |estimate|, `decrease` or `either`, ratio at most `allowed-decrease`); else
//!    **Pass**. A ratio that cannot be computed (a zero mean) does not block High or Low.
//! 5. A `critical` metric that is High with a ratio at least `critical-increase` (or Low at most
//!    `critical-decrease`) is a critical failure.
//! 6. Group score = Pass ÷ (Pass + High + Low + NodataFailMetric) × 100; a group with none of
//!    those scores 100. The summary is Σ score × weight ÷ 100, rounded half-up to 2 decimals.
//! 7. The summary is 0 on a critical failure, or when 50 % or more of the metrics have no data.
//! 8. Pass at or above `thresholds.pass`, Marginal at or above `thresholds.marginal`, else Fail.
//!
//! Where this differs from Kayenta, on purpose: the interval is exact on the order statistics
//! and unbounded when the confidence cannot be reached (Kayenta clamps it to the range of the
//! differences and adds random noise to single-valued sides; see [`stats`]); rule 7 counts every
//! metric without data, NodataFailMetric included (the issue's "50 % or more of metrics with no
//! data"; Kayenta counts only plain Nodata); group scores carry their weight and counts.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::{Config, MetricConfig, OutlierStrategy, TOLERANCE};
use super::data::{MetricSet, Point};
use super::stats::{self, Summary};

/// How one metric compares (Kayenta's labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MetricClass {
    Pass,
    High,
    Low,
    Nodata,
    NodataFailMetric,
}

impl MetricClass {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricClass::Pass => "Pass",
            MetricClass::High => "High",
            MetricClass::Low => "Low",
            MetricClass::Nodata => "Nodata",
            MetricClass::NodataFailMetric => "NodataFailMetric",
        }
    }
    pub fn is_nodata(self) -> bool {
        matches!(self, MetricClass::Nodata | MetricClass::NodataFailMetric)
    }
}

/// The canary's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Pass,
    Marginal,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Marginal => "Marginal",
            Verdict::Fail => "Fail",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many values a side lost before the comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// NaN or infinite values (missing points).
    pub non_finite: usize,
    /// Outside the IQR fences (with `outliers: {strategy: remove}`).
    pub outliers: usize,
}

/// One metric's result. `interval` ends are `null` when unbounded; `ratio` is `null` when a
/// mean is zero or a side is empty.
#[derive(Debug, Clone, Serialize)]
pub struct MetricResult {
    pub name: String,
    pub group: String,
    pub classification: MetricClass,
    /// The metric is configured critical.
    pub critical: bool,
    /// It failed the canary by itself (critical and past its critical effect size, or no data).
    pub critical_failure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub direction: super::config::Direction,
    /// Canary mean ÷ baseline mean.
    pub ratio: Option<f64>,
    pub baseline: Summary,
    pub canary: Summary,
    /// Confidence interval of the shift canary − baseline.
    pub interval: Option<[Option<f64>; 2]>,
    /// Hodges–Lehmann estimate of the shift canary − baseline.
    pub estimate: Option<f64>,
    pub removed: BTreeMap<&'static str, Removed>,
    /// The values compared (sorted), for the report's plots.
    #[serde(skip)]
    pub values: [Vec<f64>; 2],
    /// The points as read (time, value), for the report's time plot.
    #[serde(skip)]
    pub points: [Vec<Point>; 2],
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupResult {
    /// Pass ÷ (Pass + High + Low + NodataFailMetric) × 100, rounded to 2 decimals; 100 without data.
    pub score: f64,
    /// Weight in percent of the summary score.
    pub weight: f64,
    pub pass: usize,
    pub high: usize,
    pub low: usize,
    pub nodata: usize,
    pub nodata_fail: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    /// 0..100, rounded half-up to 2 decimals.
    pub score: f64,
    pub classification: Verdict,
    /// Why the score was forced to 0, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub confidence: f64,
    pub thresholds: super::config::Thresholds,
    pub groups: BTreeMap<String, GroupResult>,
    pub metrics: Vec<MetricResult>,
}

impl Judgement {
    /// One line for people: verdict, score, what was off.
    pub fn summary_line(&self) -> String {
        let off: Vec<String> = self
            .metrics
            .iter()
            .filter(|m| m.classification != MetricClass::Pass)
            .map(|m| {
                format!(
                    "{} {}{}",
                    m.name,
                    m.classification.as_str(),
                    if m.critical_failure {
                        " (critical)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let mut s = format!(
            "canary {} with score {} (pass {}, marginal {}): {} of {} metrics Pass",
            self.classification,
            self.score,
            self.thresholds.pass,
            self.thresholds.marginal,
            self.metrics.len() - off.len(),
            self.metrics.len()
        );
        if !off.is_empty() {
            s.push_str(&format!("; {}", off.join(", ")));
        }
        if let Some(r) = &self.reason {
            s.push_str(&format!("; {r}"));
        }
        s
    }
}

fn clean(points: &[Point]) -> (Vec<f64>, usize) {
    let mut v: Vec<f64> = points
        .iter()
        .map(|p| p.v)
        .filter(|v| v.is_finite())
        .collect();
    let dropped = points.len() - v.len();
    v.sort_by(f64::total_cmp);
    (v, dropped)
}

/// Classify one metric (rules 1–5 of the module docs). `baseline`/`canary` as read.
pub fn classify(
    m: &MetricConfig,
    confidence: f64,
    baseline: &[Point],
    canary: &[Point],
) -> MetricResult {
    let (mut b, b_nf) = clean(baseline);
    let (mut c, c_nf) = clean(canary);
    let (mut b_out, mut c_out) = (0, 0);
    if let Some(o) = m.outliers.filter(|o| o.strategy == OutlierStrategy::Remove) {
        (b, b_out) = stats::remove_outliers(&b, o.factor);
        (c, c_out) = stats::remove_outliers(&c, o.factor);
    }
    let mut r = MetricResult {
        name: m.name.clone(),
        group: m.group.clone(),
        classification: MetricClass::Pass,
        critical: m.critical,
        critical_failure: false,
        reason: None,
        direction: m.direction,
        ratio: None,
        baseline: stats::summary(&b),
        canary: stats::summary(&c),
        interval: None,
        estimate: None,
        removed: BTreeMap::from([
            (
                "baseline",
                Removed {
                    non_finite: b_nf,
                    outliers: b_out,
                },
            ),
            (
                "canary",
                Removed {
                    non_finite: c_nf,
                    outliers: c_out,
                },
            ),
        ]),
        values: [Vec::new(), Vec::new()],
        points: [baseline.to_vec(), canary.to_vec()],
    };
    if b.is_empty() || c.is_empty() {
        let side = match (b.is_empty(), c.is_empty()) {
            (true, true) => "either side",
            (true, false) => "the baseline",
            _ => "the canary",
        };
        r.classification = if m.must_have_data && !m.critical {
            MetricClass::NodataFailMetric
        } else {
            MetricClass::Nodata
        };
        r.critical_failure = m.critical;
        r.reason = Some(format!(
            "no data for {side}{}",
            if m.critical {
                " (critical: fails the canary)"
            } else if m.must_have_data {
                " (must-have-data: counts as a failure)"
            } else {
                ""
            }
        ));
        r.values = [b, c];
        return r;
    }
    let (mb, mc) = (stats::mean(&b), stats::mean(&c));
    let ratio = (mb != 0.0 && mc != 0.0).then(|| mc / mb);
    r.ratio = ratio;
    let s = stats::shift(&c, &b, confidence);
    r.estimate = Some(s.estimate);
    r.interval = Some([s.lower, s.upper]);
    if b == c {
        r.reason = Some("the canary's and the baseline's data are identical".into());
        r.values = [b, c];
        return r;
    }
    if b[0] == b[b.len() - 1] && c[0] == c[c.len() - 1] && b[0] == c[0] {
        r.reason = Some("every value on both sides is the same".into());
        r.values = [b, c];
        return r;
    }
    let tol = TOLERANCE * s.estimate.abs();
    let e = m.effect_size;
    let above = s.lower.is_some_and(|l| l > tol);
    let below = s.upper.is_some_and(|u| u < -tol);
    let ratio_text = ratio.map_or("undefined (a zero mean)".to_string(), |x| format!("{x:.4}"));
    let high = above && m.direction.flags_high() && ratio.is_none_or(|x| x >= e.allowed_increase);
    let low = below && m.direction.flags_low() && ratio.is_none_or(|x| x <= e.allowed_decrease);
    if high {
        r.classification = MetricClass::High;
        r.critical_failure = m.critical && ratio.is_none_or(|x| x >= e.critical_increase);
        r.reason = Some(format!(
            "canary higher: the interval's lower end {} is above 0.25 × |estimate| = {}; mean ratio {ratio_text}{}",
            num(s.lower.unwrap_or_default()),
            num(tol),
            if r.critical_failure {
                format!(" (critical: at least critical-increase {})", e.critical_increase)
            } else {
                String::new()
            }
        ));
    } else if low {
        r.classification = MetricClass::Low;
        r.critical_failure = m.critical && ratio.is_none_or(|x| x <= e.critical_decrease);
        r.reason = Some(format!(
            "canary lower: the interval's upper end {} is below −0.25 × |estimate| = {}; mean ratio {ratio_text}{}",
            num(s.upper.unwrap_or_default()),
            num(-tol),
            if r.critical_failure {
                format!(" (critical: at most critical-decrease {})", e.critical_decrease)
            } else {
                String::new()
            }
        ));
    } else if above {
        r.reason = Some(if m.direction.flags_high() {
            format!(
                "canary higher, but the mean ratio {ratio_text} is below allowed-increase {}",
                e.allowed_increase
            )
        } else {
            "canary higher; only a decrease counts for this metric".into()
        });
    } else if below {
        r.reason = Some(if m.direction.flags_low() {
            format!(
                "canary lower, but the mean ratio {ratio_text} is above allowed-decrease {}",
                e.allowed_decrease
            )
        } else {
            "canary lower; only an increase counts for this metric".into()
        });
    } else if s.lower.is_none() {
        r.reason = Some(format!(
            "too few points ({} baseline, {} canary) to reach confidence {confidence}",
            b.len(),
            c.len()
        ));
    }
    r.values = [b, c];
    r
}

/// A number for a reason line: up to 6 significant digits.
fn num(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// Score classified metrics (rules 6–8).
pub fn score(config: &Config, metrics: Vec<MetricResult>) -> Judgement {
    let weights = config.weights();
    let mut groups: BTreeMap<String, GroupResult> = weights
        .iter()
        .map(|(g, w)| {
            (
                g.clone(),
                GroupResult {
                    score: 100.0,
                    weight: *w,
                    pass: 0,
                    high: 0,
                    low: 0,
                    nodata: 0,
                    nodata_fail: 0,
                },
            )
        })
        .collect();
    for m in &metrics {
        let g = groups.get_mut(&m.group).expect("every group has a weight");
        match m.classification {
            MetricClass::Pass => g.pass += 1,
            MetricClass::High => g.high += 1,
            MetricClass::Low => g.low += 1,
            MetricClass::Nodata => g.nodata += 1,
            MetricClass::NodataFailMetric => g.nodata_fail += 1,
        }
    }
    let mut summary = 0.0;
    for g in groups.values_mut() {
        let total = g.pass + g.high + g.low + g.nodata_fail;
        let s = if total == 0 {
            100.0
        } else {
            g.pass as f64 / total as f64 * 100.0
        };
        summary += s * (g.weight / 100.0);
        g.score = stats::round_half_up(s, 2);
    }
    let mut score = stats::round_half_up(summary, 2);
    let mut reason = None;
    let nodata = metrics
        .iter()
        .filter(|m| m.classification.is_nodata())
        .count();
    if let Some(m) = metrics.iter().find(|m| m.critical_failure) {
        score = 0.0;
        reason = Some(format!(
            "critical metric {} is {}: {}",
            m.name,
            m.classification.as_str(),
            m.reason.as_deref().unwrap_or("")
        ));
    } else if nodata * 2 >= metrics.len() {
        score = 0.0;
        reason = Some(format!(
            "{nodata} of {} metrics have no data (50 % or more)",
            metrics.len()
        ));
    }
    let t = config.thresholds;
    let classification = if score >= t.pass {
        Verdict::Pass
    } else if score >= t.marginal {
        Verdict::Marginal
    } else {
        Verdict::Fail
    };
    Judgement {
        score,
        classification,
        reason,
        confidence: config.confidence,
        thresholds: t,
        groups,
        metrics,
    }
}

/// Judge every metric of `config` on the two sides' data (a metric missing from a side has no
/// data there), in the config's order.
pub fn judge(config: &Config, baseline: &MetricSet, canary: &MetricSet) -> Judgement {
    let none: Vec<Point> = Vec::new();
    let results = config
        .metrics
        .iter()
        .map(|m| {
            classify(
                m,
                config.confidence,
                baseline.get(&m.name).unwrap_or(&none),
                canary.get(&m.name).unwrap_or(&none),
            )
        })
        .collect();
    score(config, results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[f64]) -> Vec<Point> {
        v.iter()
            .enumerate()
            .map(|(i, v)| Point {
                t: i as f64 * 60.0,
                v: *v,
            })
            .collect()
    }

    fn metric(yaml: &str) -> MetricConfig {
        let c = Config::parse(&format!("metrics: [{yaml}]"), "t.yaml").unwrap();
        c.metrics[0].clone()
    }

    /// 40 points around `centre` with a deterministic spread.
    fn around(centre: f64, seed: u64) -> Vec<f64> {
        (0..40)
            .map(|i| centre + (((i * 7 + seed) % 11) as f64 - 5.0) * 0.1)
            .collect()
    }

    fn class(yaml: &str, b: &[f64], c: &[f64]) -> MetricResult {
        classify(&metric(yaml), 0.98, &pts(b), &pts(c))
    }

    #[test]
    fn a_clear_increase_is_high_and_a_decrease_low() {
        let r = class("{name: e}", &around(10.0, 1), &around(12.0, 2));
        assert_eq!(r.classification, MetricClass::High, "{r:?}");
        assert!(r.estimate.unwrap() > 1.5);
        let r = class("{name: e}", &around(10.0, 1), &around(8.0, 2));
        assert_eq!(r.classification, MetricClass::Low, "{r:?}");
        let r = class("{name: e}", &around(10.0, 1), &around(10.0, 3));
        assert_eq!(r.classification, MetricClass::Pass, "{r:?}");
    }

    #[test]
    fn direction_decides_which_change_counts() {
        let (b, up, down) = (around(10.0, 1), around(12.0, 2), around(8.0, 2));
        assert_eq!(
            class("{name: e, direction: increase}", &b, &up).classification,
            MetricClass::High
        );
        assert_eq!(
            class("{name: e, direction: increase}", &b, &down).classification,
            MetricClass::Pass
        );
        assert_eq!(
            class("{name: e, direction: decrease}", &b, &up).classification,
            MetricClass::Pass
        );
        assert_eq!(
            class("{name: e, direction: decrease}", &b, &down).classification,
            MetricClass::Low
        );
    }

    #[test]
    fn effect_sizes_gate_high_low_and_critical() {
        let (b, up) = (around(10.0, 1), around(12.0, 2));
        // ratio ≈ 1.2
        assert_eq!(
            class("{name: e, effect-size: {allowed-increase: 1.3}}", &b, &up).classification,
            MetricClass::Pass
        );
        assert_eq!(
            class("{name: e, effect-size: {allowed-increase: 1.1}}", &b, &up).classification,
            MetricClass::High
        );
        let r = class(
            "{name: e, critical: true, effect-size: {critical-increase: 1.5}}",
            &b,
            &up,
        );
        assert_eq!(
            (r.classification, r.critical_failure),
            (MetricClass::High, false)
        );
        let r = class(
            "{name: e, critical: true, effect-size: {critical-increase: 1.1}}",
            &b,
            &up,
        );
        assert_eq!(
            (r.classification, r.critical_failure),
            (MetricClass::High, true)
        );
        let r = class(
            "{name: e, critical: true, effect-size: {critical-decrease: 0.9}}",
            &b,
            &around(8.0, 2),
        );
        assert_eq!(
            (r.classification, r.critical_failure),
            (MetricClass::Low, true)
        );
    }

    #[test]
    fn empty_sides_are_nodata() {
        let r = class("{name: e}", &[], &[1.0]);
        assert_eq!(
            (r.classification, r.critical_failure),
            (MetricClass::Nodata, false)
        );
        let r = class("{name: e, must-have-data: true}", &[1.0], &[f64::NAN]);
        assert_eq!(r.classification, MetricClass::NodataFailMetric);
        assert_eq!(r.removed["canary"].non_finite, 1);
        let r = class(
            "{name: e, must-have-data: true, critical: true}",
            &[1.0],
            &[],
        );
        assert_eq!(
            (r.classification, r.critical_failure),
            (MetricClass::Nodata, true)
        );
    }

    #[test]
    fn identical_and_single_valued_data_pass() {
        let b = around(10.0, 1);
        let mut c = b.clone();
        c.reverse();
        let r = class("{name: e}", &b, &c);
        assert_eq!(r.classification, MetricClass::Pass);
        assert!(r.reason.unwrap().contains("identical"));
        let r = class("{name: e}", &[3.0; 20], &[3.0; 7]);
        assert_eq!(r.classification, MetricClass::Pass);
        // Single-valued but different sides are a real difference.
        let r = class("{name: e}", &[0.0; 20], &[5.0; 20]);
        assert_eq!(r.classification, MetricClass::High);
        assert_eq!(r.ratio, None);
    }

    #[test]
    fn outliers_are_removed_only_when_asked() {
        let b: Vec<f64> = (0..5).flat_map(|s| around(10.0, s)).collect();
        let mut c = b.clone();
        for v in c.iter_mut().take(2) {
            *v = 1e6;
        }
        let kept = class("{name: e}", &b, &c);
        let removed = class("{name: e, outliers: {strategy: remove}}", &b, &c);
        assert_eq!(kept.removed["canary"].outliers, 0);
        assert_eq!(removed.removed["canary"].outliers, 2);
        assert_eq!(removed.canary.count, 198);
        assert!(kept.canary.mean.unwrap() > 1e4);
        // Kayenta's fences never reach inside the 1st..99th percentiles: 3 far values in 40 stay.
        let mut few = around(10.0, 1);
        for v in few.iter_mut().take(3) {
            *v = 1e6;
        }
        let r = class(
            "{name: e, outliers: {strategy: remove}}",
            &around(10.0, 1),
            &few,
        );
        assert_eq!(r.removed["canary"].outliers, 0);
    }

    fn judged(yaml: &str, data: &[(&str, Vec<f64>, Vec<f64>)]) -> Judgement {
        let c = Config::parse(yaml, "t.yaml").unwrap();
        let mut b = MetricSet::new();
        let mut k = MetricSet::new();
        for (name, bv, cv) in data {
            b.insert(name.to_string(), pts(bv));
            k.insert(name.to_string(), pts(cv));
        }
        judge(&c, &b, &k)
    }

    #[test]
    fn scores_are_weighted_group_scores() {
        let same = around(10.0, 1);
        let up = around(12.0, 2);
        let j = judged(
            "groups: {errors: 60}\nmetrics: [{name: a, group: errors}, {name: b, group: errors}, {name: c, group: lat}]",
            &[("a", same.clone(), same.clone()), ("b", same.clone(), up.clone()), ("c", same.clone(), same.clone())],
        );
        assert_eq!(j.groups["errors"].score, 50.0);
        assert_eq!(j.groups["lat"].score, 100.0);
        assert_eq!(j.groups["lat"].weight, 40.0);
        assert_eq!(j.score, 70.0);
        assert_eq!(j.classification, Verdict::Fail);
        // Thresholds decide the verdict.
        let j2 = judged(
            "thresholds: {pass: 80, marginal: 60}\ngroups: {errors: 60}\nmetrics: [{name: a, group: errors}, {name: b, group: errors}, {name: c, group: lat}]",
            &[("a", same.clone(), same.clone()), ("b", same.clone(), up.clone()), ("c", same.clone(), same.clone())],
        );
        assert_eq!(j2.classification, Verdict::Marginal);
    }

    #[test]
    fn two_decimals_half_up() {
        let same = around(10.0, 1);
        let up = around(12.0, 2);
        // One group, 2 of 3 pass: 66.666... -> 66.67
        let j = judged(
            "metrics: [{name: a}, {name: b}, {name: c}]",
            &[
                ("a", same.clone(), same.clone()),
                ("b", same.clone(), same.clone()),
                ("c", same.clone(), up),
            ],
        );
        assert_eq!(j.score, 66.67);
    }

    #[test]
    fn nodata_groups_score_100_and_half_nodata_scores_0() {
        let same = around(10.0, 1);
        let j = judged(
            "metrics: [{name: a, group: x}, {name: b, group: y}, {name: c, group: y}]",
            &[
                ("a", vec![], same.clone()),
                ("b", same.clone(), same.clone()),
                ("c", same.clone(), same.clone()),
            ],
        );
        assert_eq!(j.groups["x"].score, 100.0);
        assert_eq!(j.score, 100.0);
        let j = judged(
            "metrics: [{name: a}, {name: b}]",
            &[
                ("a", vec![], same.clone()),
                ("b", same.clone(), same.clone()),
            ],
        );
        assert_eq!(j.score, 0.0);
        assert!(j.reason.unwrap().contains("1 of 2 metrics have no data"));
        // must-have-data counts as a failure in its group
        let j = judged(
            "metrics: [{name: a, must-have-data: true}, {name: b}, {name: c}]",
            &[
                ("a", vec![], same.clone()),
                ("b", same.clone(), same.clone()),
                ("c", same.clone(), same.clone()),
            ],
        );
        assert_eq!(j.score, 66.67);
    }

    #[test]
    fn a_critical_failure_scores_0() {
        let same = around(10.0, 1);
        let j = judged(
            "metrics: [{name: a, critical: true}, {name: b}, {name: c}, {name: d}]",
            &[
                ("a", same.clone(), around(20.0, 2)),
                ("b", same.clone(), same.clone()),
                ("c", same.clone(), same.clone()),
                ("d", same.clone(), same.clone()),
            ],
        );
        assert_eq!((j.score, j.classification), (0.0, Verdict::Fail));
        assert!(
            j.reason
                .as_deref()
                .unwrap()
                .starts_with("critical metric a is High"),
            "{:?}",
            j.reason
        );
        assert!(j.summary_line().contains("a High (critical)"));
    }
}
