//! Metric data of one side (baseline or canary): `metric → [(time, value)]`, read from the files
//! `bakery canary judge` takes or filled by a metric source.
//!
//! - CSV with the header `metric,timestamp,value` (RFC 4180 quoting; an empty value or `NaN` is
//!   a missing point),
//! - JSON `{"metric": [[timestamp, value], ...], ...}` (`null` value: a missing point).
//!
//! Timestamps are Unix seconds (integer or fractional) or RFC 3339 strings. The judge compares
//! the values as two samples; times only order the points and draw the report's time plot.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::input;

/// One observation: Unix time in seconds and the value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t: f64,
    pub v: f64,
}

/// Metric name → its points, in time order.
pub type MetricSet = BTreeMap<String, Vec<Point>>;

/// Unix seconds from a number or an RFC 3339 string.
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

fn parse_value(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return Some(f64::NAN);
    }
    s.parse::<f64>().ok()
}

/// Read a side from `path`: JSON when it ends in `.json` or starts with `{`, CSV otherwise.
pub fn load(path: &Path, flag: &str) -> Result<MetricSet> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            input!("{flag} {}: no such file; check the path", path.display())
        }
        _ => input!("{flag} {}: cannot read: {e}", path.display()),
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| input!("{flag} {}: not UTF-8 text (CSV or JSON)", path.display()))?;
    let origin = format!("{flag} {}", path.display());
    let json = path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let mut set = if json {
        parse_json(&text, &origin)?
    } else {
        parse_csv(&text, &origin)?
    };
    for pts in set.values_mut() {
        pts.sort_by(|a, b| a.t.total_cmp(&b.t));
    }
    Ok(set)
}

/// Parse CSV `metric,timestamp,value` (the header is required).
pub fn parse_csv(text: &str, origin: &str) -> Result<MetricSet> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = r
        .headers()
        .map_err(|e| input!("{origin}: {e}"))?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if header != ["metric", "timestamp", "value"] {
        return Err(input!(
            "{origin}: the first line is `{}`; it must be the header `metric,timestamp,value`",
            header.join(",")
        ));
    }
    let mut set = MetricSet::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| input!("{origin}: {e}"))?;
        let line = rec.position().map_or(0, |p| p.line());
        let (name, t, v) = (&rec[0], &rec[1], &rec[2]);
        if name.is_empty() {
            return Err(input!("{origin} line {line}: the metric name is empty"));
        }
        let t = parse_time(t).ok_or_else(|| {
            input!("{origin} line {line}: timestamp `{t}` is neither Unix seconds nor RFC 3339")
        })?;
        let v = parse_value(v)
            .ok_or_else(|| input!("{origin} line {line}: value `{v}` is not a number"))?;
        set.entry(name.to_string())
            .or_default()
            .push(Point { t, v });
    }
    if set.is_empty() {
        return Err(input!(
            "{origin}: no data lines after the header `metric,timestamp,value`"
        ));
    }
    Ok(set)
}

/// Parse JSON `{"metric": [[timestamp, value], ...]}`.
pub fn parse_json(text: &str, origin: &str) -> Result<MetricSet> {
    let v: Value = serde_json::from_str(text).map_err(|e| input!("{origin}: not JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err(input!(
            "{origin}: give an object {{\"metric\": [[timestamp, value], ...]}}"
        ));
    };
    let mut set = MetricSet::new();
    for (name, series) in map {
        let Value::Array(items) = series else {
            return Err(input!(
                "{origin}: {name}: give a list of [timestamp, value] pairs"
            ));
        };
        let mut pts = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let pair = item.as_array().filter(|a| a.len() == 2).ok_or_else(|| {
                input!("{origin}: {name}[{i}]: give a pair [timestamp, value], not {item}")
            })?;
            let t = match &pair[0] {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => parse_time(s),
                _ => None,
            }
            .ok_or_else(|| {
                input!(
                    "{origin}: {name}[{i}]: timestamp {} is neither Unix seconds nor RFC 3339",
                    pair[0]
                )
            })?;
            let v = match &pair[1] {
                Value::Number(n) => n.as_f64(),
                Value::Null => Some(f64::NAN),
                Value::String(s) => parse_value(s),
                _ => None,
            }
            .ok_or_else(|| input!("{origin}: {name}[{i}]: value {} is not a number", pair[1]))?;
            pts.push(Point { t, v });
        }
        set.insert(name, pts);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code, EXIT_INPUT};

    #[test]
    fn csv_and_json_read_the_same() {
        let csv = "metric,timestamp,value\nerrors,1700000000,1.5\n\"lat, p99\",2023-11-14T22:13:20Z,200\nerrors,1700000060,\n";
        let a = parse_csv(csv, "b.csv").unwrap();
        assert_eq!(a["errors"].len(), 2);
        assert!(a["errors"][1].v.is_nan());
        assert_eq!(
            a["lat, p99"][0],
            Point {
                t: 1_700_000_000.0,
                v: 200.0
            }
        );
        let json = r#"{"errors": [[1700000000, 1.5], [1700000060, null]], "lat, p99": [["2023-11-14T22:13:20Z", 200]]}"#;
        let b = parse_json(json, "b.json").unwrap();
        assert_eq!(b["lat, p99"], a["lat, p99"]);
        assert_eq!(b["errors"][0], a["errors"][0]);
    }

    #[test]
    fn bad_files_name_the_line() {
        let e = |r: Result<MetricSet>| {
            let e = r.unwrap_err();
            assert_eq!(exit_code(&e), EXIT_INPUT);
            format!("{e:#}")
        };
        assert!(e(parse_csv("name,time,value\na,1,2\n", "x.csv"))
            .contains("header `metric,timestamp,value`"));
        assert!(e(parse_csv("metric,timestamp,value\na,1,zz\n", "x.csv"))
            .contains("x.csv line 2: value `zz`"));
        assert!(e(parse_csv(
            "metric,timestamp,value\na,yesterday,1\n",
            "x.csv"
        ))
        .contains("timestamp `yesterday`"));
        assert!(e(parse_csv("metric,timestamp,value\na,1\n", "x.csv")).contains("x.csv"));
        assert!(e(parse_csv("metric,timestamp,value\n", "x.csv")).contains("no data lines"));
        assert!(e(parse_json("[1]", "x.json")).contains("give an object"));
        assert!(e(parse_json(r#"{"a": [[1]]}"#, "x.json")).contains("a[0]: give a pair"));
        assert!(e(parse_json(r#"{"a": [[1, true]]}"#, "x.json")).contains("value true"));
    }
}
