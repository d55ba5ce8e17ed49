//! The canary config (`canary.yaml`): how each metric is judged and scored, and where its data
//! comes from in a deploy. Read strictly: an unknown key, a wrong type or an impossible value
//! is one input error naming the file and the key. Every key is documented in docs/canary.md.
//!
//! ```yaml
//! confidence: 0.98                  # of the Mann–Whitney interval
//! thresholds: {pass: 95, marginal: 75}
//! marginal: manual                  # what a deploy does on Marginal: fail | pass | manual
//! groups: {errors: 60, latency: 40} # weights in percent; unlisted groups share the rest
//! prometheus: {url: "http://prometheus:9090"}
//! metrics:
//!   - name: 5xx
//!     group: errors
//!     direction: increase
//!     critical: true
//!     must-have-data: true
//!     effect-size: {allowed-increase: 1.1, critical-increase: 1.5}
//!     cloudwatch: {metric: "MyApp HTTP5xx AutoScalingGroupName={group}", statistic: Sum}
//!   - name: p99
//!     group: latency
//!     outliers: {strategy: remove, factor: 3}
//!     prometheus: {query: 'histogram_quantile(0.99, sum by (le) (rate(http_seconds_bucket{asg="{group}"}[1m])))'}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::input;

/// Default confidence of the interval (Kayenta's NetflixACAJudge uses 0.98).
pub const DEFAULT_CONFIDENCE: f64 = 0.98;
/// Default fraction of |estimate| the interval must clear (Kayenta's `tolerance`).
pub const TOLERANCE: f64 = 0.25;
/// Kayenta's default outlier factor.
pub const DEFAULT_OUTLIER_FACTOR: f64 = 3.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Confidence of the Mann–Whitney interval, strictly between 0.5 and 1.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    #[serde(default)]
    pub thresholds: Thresholds,
    /// What a deploy does with a Marginal result (and whether `canary judge` exits 0 on one).
    #[serde(default)]
    pub marginal: OnMarginal,
    /// Group weights in percent. Groups used by metrics but not listed share what is left of 100.
    #[serde(default)]
    pub groups: BTreeMap<String, f64>,
    /// The Prometheus server the `prometheus:` queries go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusServer>,
    pub metrics: Vec<MetricConfig>,
}

fn default_confidence() -> f64 {
    DEFAULT_CONFIDENCE
}

/// Score thresholds (0..=100): Pass at or above `pass`, Marginal at or above `marginal`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Thresholds {
    #[serde(default = "default_pass")]
    pub pass: f64,
    #[serde(default = "default_marginal")]
    pub marginal: f64,
}

fn default_pass() -> f64 {
    95.0
}

fn default_marginal() -> f64 {
    75.0
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            pass: default_pass(),
            marginal: default_marginal(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMarginal {
    /// A Marginal canary fails (the default: only Pass promotes).
    #[default]
    Fail,
    /// A Marginal canary is promoted.
    Pass,
    /// A deploy waits for `bakery canary approve` or `reject`.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PrometheusServer {
    /// Base URL, e.g. `http://prometheus:9090` (the API is under `/api/v1`).
    pub url: String,
    /// Seconds one query may take.
    #[serde(default = "default_prom_timeout")]
    pub timeout: f64,
}

fn default_prom_timeout() -> f64 {
    30.0
}

/// Which way of change counts against the canary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Only a higher canary is a problem (errors, latency).
    Increase,
    /// Only a lower canary is a problem (throughput, cache hits).
    Decrease,
    /// Both.
    #[default]
    Either,
}

impl Direction {
    pub fn flags_high(self) -> bool {
        matches!(self, Direction::Increase | Direction::Either)
    }
    pub fn flags_low(self) -> bool {
        matches!(self, Direction::Decrease | Direction::Either)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricConfig {
    /// The metric's name: a key of the input files, a label in the report.
    pub name: String,
    /// Scoring group (default `default`).
    #[serde(default = "default_group")]
    pub group: String,
    #[serde(default)]
    pub direction: Direction,
    /// A critical metric past its critical effect size (or without data) fails the canary.
    #[serde(default)]
    pub critical: bool,
    /// No data counts as a failure in the group score (instead of being left out).
    #[serde(default)]
    pub must_have_data: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outliers: Option<Outliers>,
    #[serde(default)]
    pub effect_size: EffectSize,
    /// Where a deploy reads the metric: CloudWatch ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudwatch: Option<CloudWatchQuery>,
    /// ... or Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusQuery>,
}

fn default_group() -> String {
    "default".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Outliers {
    pub strategy: OutlierStrategy,
    /// Multiple of the interquartile range beyond the quartiles (default 3, as Kayenta).
    #[serde(default = "default_outlier_factor")]
    pub factor: f64,
}

fn default_outlier_factor() -> f64 {
    DEFAULT_OUTLIER_FACTOR
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutlierStrategy {
    Keep,
    Remove,
}

/// Mean-ratio effect sizes (canary mean ÷ baseline mean), as Kayenta's `effectSize`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EffectSize {
    /// High only when the ratio is at least this (≥ 1; 1.1 tolerates a 10 % increase).
    #[serde(default = "one")]
    pub allowed_increase: f64,
    /// Low only when the ratio is at most this (0 < x ≤ 1).
    #[serde(default = "one")]
    pub allowed_decrease: f64,
    /// A critical metric fails the canary when High with a ratio at least this (≥ 1).
    #[serde(default = "one")]
    pub critical_increase: f64,
    /// ... or Low with a ratio at most this (0 < x ≤ 1).
    #[serde(default = "one")]
    pub critical_decrease: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for EffectSize {
    fn default() -> Self {
        EffectSize {
            allowed_increase: 1.0,
            allowed_decrease: 1.0,
            critical_increase: 1.0,
            critical_decrease: 1.0,
        }
    }
}

/// A CloudWatch metric for GetMetricData. `metric` is `NAMESPACE METRIC [DIM=VALUE ...]`
/// (whitespace-separated; `{group}` anywhere is replaced by the group's name), or give
/// `namespace`, `metric-name` and `dimensions` separately when a part contains spaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CloudWatchQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, String>,
    /// Average, Sum, Minimum, Maximum, SampleCount, or an extended statistic such as p99.
    #[serde(default = "default_statistic")]
    pub statistic: String,
    /// Seconds per data point: 1, 5, 10, 30 or a multiple of 60.
    #[serde(default = "default_period")]
    pub period: i32,
    /// Optional CloudWatch unit to ask for (e.g. Count, Milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

fn default_statistic() -> String {
    "Average".into()
}

fn default_period() -> i32 {
    60
}

/// The parts of a CloudWatch metric for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWatchMetric {
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<(String, String)>,
}

impl CloudWatchQuery {
    /// Namespace, name and dimensions with `{group}` replaced by `group`.
    pub fn resolve(&self, group: &str) -> Result<CloudWatchMetric, String> {
        let sub = |s: &str| s.replace("{group}", group);
        match (&self.metric, &self.namespace, &self.metric_name) {
            (Some(t), None, None) if self.dimensions.is_empty() => {
                let mut parts = t.split_whitespace();
                let (Some(ns), Some(name)) = (parts.next(), parts.next()) else {
                    return Err(format!(
                        "`{t}` is not `NAMESPACE METRIC [DIMENSION=VALUE ...]`"
                    ));
                };
                let mut dimensions = Vec::new();
                for d in parts {
                    let (k, v) = d
                        .split_once('=')
                        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                        .ok_or_else(|| {
                            format!("`{d}` in `{t}` is not a dimension NAME=VALUE")
                        })?;
                    dimensions.push((sub(k), sub(v)));
                }
                Ok(CloudWatchMetric {
                    namespace: sub(ns),
                    metric_name: sub(name),
                    dimensions,
                })
            }
            (None, Some(ns), Some(name)) => Ok(CloudWatchMetric {
                namespace: sub(ns),
                metric_name: sub(name),
                dimensions: self
                    .dimensions
                    .iter()
                    .map(|(k, v)| (sub(k), sub(v)))
                    .collect(),
            }),
            _ => Err(
                "give either `metric: \"NAMESPACE METRIC [DIM=VALUE ...]\"` or `namespace`, `metric-name` (and `dimensions`)"
                    .into(),
            ),
        }
    }
}

/// A PromQL expression for `query_range`; `{group}` is replaced by the group's name (escaped
/// for a double-quoted PromQL string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PrometheusQuery {
    pub query: String,
    /// Seconds between points (query_range's `step`).
    #[serde(default = "default_step")]
    pub step: f64,
}

fn default_step() -> f64 {
    60.0
}

impl PrometheusQuery {
    pub fn resolve(&self, group: &str) -> String {
        let escaped = group.replace('\\', "\\\\").replace('"', "\\\"");
        self.query.replace("{group}", &escaped)
    }
}

/// Is `s` a statistic GetMetricData takes (the five basic ones or an extended statistic)?
pub fn valid_statistic(s: &str) -> bool {
    const BASIC: [&str; 6] = ["Average", "Sum", "Minimum", "Maximum", "SampleCount", "IQM"];
    if BASIC.contains(&s) {
        return true;
    }
    // p99, p99.9, tm90, wm99, tc10, ts90; or TM(10%:90%), PR(:300), ...
    let short = ["p", "tm", "wm", "tc", "ts"].iter().any(|p| {
        s.strip_prefix(p).is_some_and(|n| {
            n.parse::<f64>()
                .is_ok_and(|v| (0.0..=100.0).contains(&v) && !n.starts_with('+'))
        })
    });
    let ranged = ["TM(", "WM(", "TC(", "TS(", "PR("]
        .iter()
        .any(|p| s.starts_with(p) && s.ends_with(')') && s.contains(':'));
    short || ranged
}

impl Config {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let c: Config = crate::recipe::load_yaml(path)?;
        c.check(&path.display().to_string())?;
        Ok(c)
    }

    /// Parse and check YAML text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let c: Config = crate::recipe::parse_yaml(text, origin)?;
        c.check(origin)?;
        Ok(c)
    }

    /// Every value in range, every name unique, group weights that add up.
    pub fn check(&self, origin: &str) -> Result<()> {
        let f = origin;
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return Err(input!(
                "{f}: confidence {}: give a level between 0.5 and 1 (exclusive), e.g. 0.98",
                self.confidence
            ));
        }
        let t = self.thresholds;
        if !(0.0..=100.0).contains(&t.pass)
            || !(0.0..=100.0).contains(&t.marginal)
            || t.marginal > t.pass
        {
            return Err(input!(
                "{f}: thresholds {{pass: {}, marginal: {}}}: both are scores 0..100 and marginal is at most pass",
                t.pass,
                t.marginal
            ));
        }
        if self.metrics.is_empty() {
            return Err(input!(
                "{f}: metrics: the list is empty; name at least one metric to judge"
            ));
        }
        let mut names = BTreeSet::new();
        for (i, m) in self.metrics.iter().enumerate() {
            let at = format!("{f}: metrics[{i}] ({})", m.name);
            if m.name.trim().is_empty() {
                return Err(input!("{f}: metrics[{i}].name is empty"));
            }
            if !names.insert(m.name.as_str()) {
                return Err(input!(
                    "{at}: the name is used twice; metric names are unique"
                ));
            }
            if m.group.trim().is_empty() {
                return Err(input!("{at}: group is empty"));
            }
            if let Some(o) = m.outliers {
                if !(o.factor.is_finite() && o.factor > 0.0) {
                    return Err(input!(
                        "{at}: outliers.factor {}: give a positive number (Kayenta uses 3)",
                        o.factor
                    ));
                }
            }
            let e = m.effect_size;
            for (key, v) in [
                ("allowed-increase", e.allowed_increase),
                ("critical-increase", e.critical_increase),
            ] {
                if !(v.is_finite() && v >= 1.0) {
                    return Err(input!("{at}: effect-size.{key} {v}: a ratio of canary to baseline mean of at least 1 (1.2 = 20 % higher)"));
                }
            }
            for (key, v) in [
                ("allowed-decrease", e.allowed_decrease),
                ("critical-decrease", e.critical_decrease),
            ] {
                if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                    return Err(input!("{at}: effect-size.{key} {v}: a ratio of canary to baseline mean above 0 and at most 1 (0.8 = 20 % lower)"));
                }
            }
            if m.cloudwatch.is_some() && m.prometheus.is_some() {
                return Err(input!(
                    "{at}: give one source, `cloudwatch` or `prometheus`, not both"
                ));
            }
            if let Some(cw) = &m.cloudwatch {
                cw.resolve("g")
                    .map_err(|e| input!("{at}: cloudwatch: {e}"))?;
                if !valid_statistic(&cw.statistic) {
                    return Err(input!("{at}: cloudwatch.statistic `{}`: give Average, Sum, Minimum, Maximum, SampleCount or an extended statistic such as p99", cw.statistic));
                }
                let p = cw.period;
                if !(matches!(p, 1 | 5 | 10 | 30) || (p >= 60 && p % 60 == 0)) {
                    return Err(input!(
                        "{at}: cloudwatch.period {p}: CloudWatch takes 1, 5, 10, 30 or a multiple of 60 seconds"
                    ));
                }
            }
            if let Some(p) = &m.prometheus {
                if p.query.trim().is_empty() {
                    return Err(input!("{at}: prometheus.query is empty"));
                }
                if !(p.step.is_finite() && p.step > 0.0) {
                    return Err(input!(
                        "{at}: prometheus.step {}: give the seconds between points",
                        p.step
                    ));
                }
                if self.prometheus.is_none() {
                    return Err(input!(
                        "{at}: a prometheus query needs the server: add `prometheus: {{url: http://HOST:9090}}` at the top"
                    ));
                }
            }
        }
        if let Some(p) = &self.prometheus {
            if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                return Err(input!(
                    "{f}: prometheus.url `{}`: give an http:// or https:// URL",
                    p.url
                ));
            }
            if !(p.timeout.is_finite() && p.timeout > 0.0) {
                return Err(input!(
                    "{f}: prometheus.timeout {}: give seconds",
                    p.timeout
                ));
            }
        }
        // Weights: each 0..=100; every listed group is used; they add up.
        let used: BTreeSet<&str> = self.metrics.iter().map(|m| m.group.as_str()).collect();
        let mut sum = 0.0;
        for (g, w) in &self.groups {
            if !(w.is_finite() && *w >= 0.0 && *w <= 100.0) {
                return Err(input!(
                    "{f}: groups.{g}: weight {w}: give a percentage 0..100"
                ));
            }
            if !used.contains(g.as_str()) {
                return Err(input!(
                    "{f}: groups.{g}: no metric is in this group (metrics' groups: {})",
                    used.iter().copied().collect::<Vec<_>>().join(", ")
                ));
            }
            sum += w;
        }
        let unweighted: Vec<&str> = used
            .iter()
            .copied()
            .filter(|g| !self.groups.contains_key(*g))
            .collect();
        if sum > 100.0 + 1e-9 {
            return Err(input!(
                "{f}: groups: the weights add up to {sum}; they are percentages of the score and may add up to 100 at most"
            ));
        }
        if unweighted.is_empty() && (sum - 100.0).abs() > 1e-9 {
            return Err(input!(
                "{f}: groups: the weights add up to {sum}, not 100, and no group is left to take the rest"
            ));
        }
        if !unweighted.is_empty() && !self.groups.is_empty() && 100.0 - sum < 1e-9 {
            return Err(input!(
                "{f}: groups: the weights add up to 100, which leaves nothing for {}; give them weights or lower the others",
                unweighted.join(", ")
            ));
        }
        Ok(())
    }

    /// The weight (percent) of each group the metrics use: its own, or an equal share of what
    /// the weighted groups leave (Kayenta's `WeightedSumScorer`).
    pub fn weights(&self) -> BTreeMap<String, f64> {
        let used: BTreeSet<&str> = self.metrics.iter().map(|m| m.group.as_str()).collect();
        let given: f64 = self.groups.values().sum();
        let unweighted = used
            .iter()
            .filter(|g| !self.groups.contains_key(**g))
            .count();
        let share = if unweighted > 0 {
            (100.0 - given) / unweighted as f64
        } else {
            0.0
        };
        used.iter()
            .map(|g| (g.to_string(), self.groups.get(*g).copied().unwrap_or(share)))
            .collect()
    }

    /// Is every metric readable from a live source (a deploy needs that)?
    pub fn check_sources(&self, origin: &str) -> Result<()> {
        let missing: Vec<&str> = self
            .metrics
            .iter()
            .filter(|m| m.cloudwatch.is_none() && m.prometheus.is_none())
            .map(|m| m.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(input!(
                "{origin}: metrics {} have no source: give each `cloudwatch: {{metric: ...}}` or `prometheus: {{query: ...}}` to judge live groups",
                missing.join(", ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code, EXIT_INPUT};

    fn err(yaml: &str) -> String {
        let e = Config::parse(yaml, "canary.yaml").unwrap_err();
        assert_eq!(exit_code(&e), EXIT_INPUT, "{e:#}");
        format!("{e:#}")
    }

    #[test]
    fn defaults_are_kayentas() {
        let c = Config::parse("metrics: [{name: cpu}]\n", "c.yaml").unwrap();
        assert_eq!(c.confidence, 0.98);
        assert_eq!(
            c.thresholds,
            Thresholds {
                pass: 95.0,
                marginal: 75.0
            }
        );
        assert_eq!(c.marginal, OnMarginal::Fail);
        let m = &c.metrics[0];
        assert_eq!(
            (m.group.as_str(), m.direction),
            ("default", Direction::Either)
        );
        assert!(!m.critical && !m.must_have_data && m.outliers.is_none());
        assert_eq!(m.effect_size, EffectSize::default());
    }

    #[test]
    fn bad_configs_name_the_key() {
        assert!(err("metrics: [{name: cpu, direction: up}]").contains("direction"));
        assert!(err("metrics: [{name: cpu, critcal: true}]").contains("critcal"));
        assert!(err("confidence: 1.2\nmetrics: [{name: a}]").contains("confidence 1.2"));
        assert!(
            err("thresholds: {pass: 70, marginal: 80}\nmetrics: [{name: a}]")
                .contains("thresholds")
        );
        assert!(err("metrics: []").contains("metrics: the list is empty"));
        assert!(err("metrics: [{name: a}, {name: a}]").contains("used twice"));
        assert!(
            err("groups: {errors: 50}\nmetrics: [{name: a, group: eror}]")
                .contains("groups.errors: no metric")
        );
        assert!(
            err("groups: {a: 60, b: 60}\nmetrics: [{name: x, group: a}, {name: y, group: b}]")
                .contains("add up to 120")
        );
        assert!(err("groups: {a: 60}\nmetrics: [{name: x, group: a}]").contains("not 100"));
        assert!(
            err("groups: {a: 100}\nmetrics: [{name: x, group: a}, {name: y, group: b}]")
                .contains("leaves nothing for b")
        );
        assert!(
            err("metrics: [{name: a, effect-size: {allowed-increase: 0.9}}]")
                .contains("effect-size.allowed-increase 0.9")
        );
        assert!(
            err("metrics: [{name: a, effect-size: {critical-decrease: 1.5}}]")
                .contains("critical-decrease")
        );
        assert!(
            err("metrics: [{name: a, outliers: {strategy: remove, factor: 0}}]")
                .contains("outliers.factor")
        );
        assert!(err("metrics: [{name: a, outliers: {strategy: drop}}]").contains("strategy"));
        assert!(
            err("metrics: [{name: a, cloudwatch: {metric: CPUUtilization}}]")
                .contains("NAMESPACE METRIC")
        );
        assert!(err("metrics: [{name: a, cloudwatch: {metric: 'AWS/EC2 CPU X'}}]").contains("`X`"));
        assert!(
            err("metrics: [{name: a, cloudwatch: {metric: 'AWS/EC2 CPU', statistic: Mean}}]")
                .contains("statistic `Mean`")
        );
        assert!(
            err("metrics: [{name: a, cloudwatch: {metric: 'AWS/EC2 CPU', period: 90}}]")
                .contains("period 90")
        );
        assert!(err("metrics: [{name: a, prometheus: {query: up}}]").contains("needs the server"));
        assert!(
            err("prometheus: {url: prom:9090}\nmetrics: [{name: a, prometheus: {query: up}}]")
                .contains("prometheus.url")
        );
        assert!(
            err("metrics: [{name: a, prometheus: {query: up}, cloudwatch: {metric: 'A B'}}]")
                .contains("not both")
        );
    }

    #[test]
    fn unweighted_groups_share_the_rest() {
        let c = Config::parse(
            "groups: {errors: 50}\nmetrics: [{name: a, group: errors}, {name: b, group: lat}, {name: c, group: sys}]",
            "c.yaml",
        )
        .unwrap();
        let w = c.weights();
        assert_eq!(w["errors"], 50.0);
        assert_eq!(w["lat"], 25.0);
        assert_eq!(w["sys"], 25.0);
    }

    #[test]
    fn templates_take_the_group() {
        let q = CloudWatchQuery {
            metric: Some("AWS/EC2 CPUUtilization AutoScalingGroupName={group}".into()),
            namespace: None,
            metric_name: None,
            dimensions: BTreeMap::new(),
            statistic: "Average".into(),
            period: 60,
            unit: None,
        };
        let m = q.resolve("shop-v002").unwrap();
        assert_eq!(m.namespace, "AWS/EC2");
        assert_eq!(m.metric_name, "CPUUtilization");
        assert_eq!(
            m.dimensions,
            vec![("AutoScalingGroupName".into(), "shop-v002".into())]
        );
        let p = PrometheusQuery {
            query: r#"sum(rate(errors_total{asg="{group}"}[1m]))"#.into(),
            step: 60.0,
        };
        assert_eq!(
            p.resolve("a\"b"),
            r#"sum(rate(errors_total{asg="a\"b"}[1m]))"#
        );
        for ok in ["Average", "p99", "p99.9", "tm90", "TM(10%:90%)", "PR(:300)"] {
            assert!(valid_statistic(ok), "{ok}");
        }
        for bad in ["avg", "p", "p101", "pxx", "TM(10%)"] {
            assert!(!valid_statistic(bad), "{bad}");
        }
    }
}
