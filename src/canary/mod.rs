//! Automated canary analysis: a Kayenta-class statistical judge, its metric sources, and the
//! report people read.
//!
//! - [`config`]: the canary config (`canary.yaml`), strict and documented (docs/canary.md)
//! - [`stats`]: Mann–Whitney interval, Hodges–Lehmann estimate, percentiles, outlier fences
//! - [`judge`]: per-metric classification and Kayenta's scoring (rules and their sources there)
//! - [`data`]: metric files (CSV / JSON) and the in-memory `metric → points` sets
//! - [`source`]: CloudWatch (`GetMetricData`) and Prometheus (`query_range`)
//! - [`report`]: the self-contained HTML report
//! - [`stage`]: when a deploy's canary stage judges, and what each judgement leads to
//!
//! `bakery canary judge` ([`run_judge`]) judges files or live groups.

pub mod config;
pub mod data;
pub mod judge;
pub mod report;
pub mod source;
pub mod stage;
pub mod stats;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Result};
use tracing::{info, warn};

use crate::cli::canary::JudgeArgs;
use crate::input;
pub use config::Config;
pub use judge::{Judgement, Verdict};

/// Unix seconds now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// RFC 3339 of Unix seconds (UTC, whole seconds).
pub fn rfc3339(t: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A time flag: RFC 3339, Unix seconds, or `N[smhd]` before `end`.
pub fn parse_when(flag: &str, s: &str, end: f64) -> Result<f64> {
    let t = s.trim();
    if let Some(t) = data::parse_time(t) {
        return Ok(t);
    }
    let unit = t.chars().last().unwrap_or(' ');
    let n: Option<f64> = t[..t.len().saturating_sub(1)].parse().ok();
    let secs = match (n, unit) {
        (Some(n), 's') => Some(n),
        (Some(n), 'm') => Some(n * 60.0),
        (Some(n), 'h') => Some(n * 3600.0),
        (Some(n), 'd') => Some(n * 86400.0),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s > 0.0);
    secs.map(|s| end - s).ok_or_else(|| {
        input!("{flag} {s}: give RFC 3339 (2026-11-30T10:00:00Z), Unix seconds, or a duration before --end such as 30m")
    })
}

/// A duration flag: `90` or `90s` seconds, `5m`, `1.5h`, `1d`. `None` when it is not one.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let t = s.trim();
    let (num, mult) = match t.chars().last()? {
        's' => (&t[..t.len() - 1], 1.0),
        'm' => (&t[..t.len() - 1], 60.0),
        'h' => (&t[..t.len() - 1], 3600.0),
        'd' => (&t[..t.len() - 1], 86400.0),
        _ => (t, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    let secs = v * mult;
    (secs.is_finite() && secs >= 0.0 && !num.starts_with('+'))
        .then(|| std::time::Duration::from_secs_f64(secs))
}

/// Fail early (input error) when `path`'s directory does not exist, so nothing is judged for a
/// report that cannot be written.
pub fn check_output(flag: &str, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(input!(
            "{flag} {}: the directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(input!(
            "{flag} {}: is a directory; give a file name",
            path.display()
        ));
    }
    Ok(())
}

/// Write the report atomically.
pub fn write_report(path: &Path, j: &Judgement, meta: &report::Meta) -> Result<()> {
    let html = report::render(j, meta);
    crate::disk::image::write_atomic(path, html.as_bytes())
        .map_err(|e| anyhow!("writing the report {}: {e:#}", path.display()))
}

/// The result table `canary judge` prints without `--json`.
pub fn table(j: &Judgement) -> String {
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let rows: Vec<[String; 8]> = j
        .metrics
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.group.clone(),
                format!(
                    "{}{}",
                    m.classification.as_str(),
                    if m.critical_failure { "!" } else { "" }
                ),
                num(m.ratio),
                num(m.baseline.mean),
                num(m.canary.mean),
                num(m.estimate),
                match m.interval {
                    Some([lo, hi]) => format!(
                        "[{}, {}]",
                        lo.map_or("-inf".into(), |v| format!("{v:.4}")),
                        hi.map_or("+inf".into(), |v| format!("{v:.4}"))
                    ),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let head = [
        "METRIC", "GROUP", "CLASS", "RATIO", "BASELINE", "CANARY", "SHIFT", "INTERVAL",
    ];
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &head);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    let _ = writeln!(
        out,
        "score {} {}{}",
        j.score,
        j.classification,
        j.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    out
}

/// What `bakery canary judge` found: the judgement (main prints it: `--json`, or [`table`]) and
/// whether it lets the canary through.
#[derive(Debug)]
pub struct Judged {
    pub judgement: Judgement,
    /// Pass, or Marginal with `marginal: pass`.
    pub passed: bool,
}

impl Judged {
    /// The exit: 0 when the canary passed (its summary on stderr), else the summary as the error
    /// (exit 1).
    pub fn outcome(&self) -> Result<i32> {
        if self.passed {
            info!("{}", self.judgement.summary_line());
            Ok(0)
        } else {
            Err(anyhow!("{}", self.judgement.summary_line()))
        }
    }
}

/// `bakery canary judge`: judge files or live groups, write the report if asked. Bad input is an
/// input error (exit 2) before anything is written.
pub fn run_judge(args: &JudgeArgs) -> Result<Judged> {
    let config = Config::load(&args.config)?;
    if let Some(r) = &args.report {
        check_output("--report", r)?;
    }
    let generated = now();
    let (baseline, canary, meta) = match (&args.baseline, &args.canary) {
        (Some(b), Some(c)) => {
            let (bs, cs) = (data::load(b, "--baseline")?, data::load(c, "--canary")?);
            for (flag, set) in [("--baseline", &bs), ("--canary", &cs)] {
                for name in set.keys() {
                    if !config.metrics.iter().any(|m| &m.name == name) {
                        warn!(
                            "{flag}: metric {name} is not in {}; ignored",
                            args.config.display()
                        );
                    }
                }
            }
            let meta = report::Meta {
                baseline: b.display().to_string(),
                canary: c.display().to_string(),
                generated: rfc3339(generated),
                title: None,
            };
            (bs, cs, meta)
        }
        _ => live(args, &config, generated)?,
    };
    let j = judge::judge(&config, &baseline, &canary);
    if let Some(r) = &args.report {
        write_report(r, &j, &meta)?;
        info!("report: {}", r.display());
    }
    let passed = match j.classification {
        Verdict::Pass => true,
        Verdict::Marginal => config.marginal == config::OnMarginal::Pass,
        Verdict::Fail => false,
    };
    Ok(Judged {
        judgement: j,
        passed,
    })
}

/// Read both groups from the config's sources.
fn live(
    args: &JudgeArgs,
    config: &Config,
    generated: f64,
) -> Result<(data::MetricSet, data::MetricSet, report::Meta)> {
    let (Some(bg), Some(cg)) = (&args.baseline_group, &args.canary_group) else {
        return Err(input!(
            "give --baseline FILE --canary FILE, or --baseline-group G1 --canary-group G2 --start TIME"
        ));
    };
    config.check_sources(&args.config.display().to_string())?;
    let end = match &args.end {
        Some(e) => data::parse_time(e).ok_or_else(|| {
            input!("--end {e}: give RFC 3339 (2026-11-30T10:00:00Z) or Unix seconds")
        })?,
        None => generated,
    };
    let start = match &args.start {
        Some(s) => parse_when("--start", s, end)?,
        None => return Err(input!("--start: give the start of the window to judge (RFC 3339, Unix seconds, or e.g. 30m before --end)")),
    };
    if start >= end {
        return Err(input!("--start is not before --end: the window is empty"));
    }
    let rt = crate::context::runtime()?;
    let (b, c) = rt.block_on(async {
        let needs_aws = config.metrics.iter().any(|m| m.cloudwatch.is_some());
        let ctx = if needs_aws {
            Some(crate::aws::client::AwsContext::load().await)
        } else {
            None
        };
        let region = match &ctx {
            Some(ctx) => Some(ctx.region(args.region.as_deref())?),
            None => None,
        };
        let aws = match (&ctx, &region) {
            (Some(ctx), Some(region)) => Some(source::Aws { ctx, region }),
            _ => None,
        };
        source::fetch(
            config,
            aws.as_ref(),
            &source::Groups {
                baseline: bg.clone(),
                canary: cg.clone(),
            },
            source::Window { start, end },
        )
        .await
    })?;
    let meta = report::Meta {
        baseline: bg.clone(),
        canary: cg.clone(),
        generated: rfc3339(generated),
        title: Some(format!(
            "Canary {cg} against baseline {bg}, {} to {}",
            rfc3339(start),
            rfc3339(end)
        )),
    };
    Ok((b, c, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).map(|d| d.as_secs_f64());
        assert_eq!(d("90"), Some(90.0));
        assert_eq!(d("90s"), Some(90.0));
        assert_eq!(d("5m"), Some(300.0));
        assert_eq!(d("1.5h"), Some(5400.0));
        assert_eq!(d("1d"), Some(86400.0));
        assert_eq!(d("0.5s"), Some(0.5));
        for bad in ["", "m", "-5m", "5 min", "+5", "soon"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_in_three_forms() {
        assert_eq!(parse_when("--start", "1700000000", 0.0).unwrap(), 1.7e9);
        assert_eq!(
            parse_when("--start", "2023-11-14T22:13:20Z", 0.0).unwrap(),
            1.7e9
        );
        assert_eq!(parse_when("--start", "30m", 1.7e9).unwrap(), 1.7e9 - 1800.0);
        assert_eq!(parse_when("--start", "2h", 1.7e9).unwrap(), 1.7e9 - 7200.0);
        assert!(parse_when("--start", "soon", 0.0).is_err());
        assert!(parse_when("--start", "-5m", 0.0).is_err());
    }
}
