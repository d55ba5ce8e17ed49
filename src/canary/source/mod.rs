//! Metric sources: where the judge's data comes from when it judges live groups (a deploy, or
//! `bakery canary judge --baseline-group G1 --canary-group G2`). Each metric of the config names
//! its source, and `{group}` in its template becomes the group's name:
//!
//! - [`cloudwatch`]: `GetMetricData` through the AWS SDK (`AWS/EC2 CPUUtilization
//!   AutoScalingGroupName={group}`, or any custom namespace your app publishes to);
//! - [`prometheus`]: `query_range` with PromQL (`sum(rate(http_errors_total{asg="{group}"}[1m]))`).

pub mod cloudwatch;
pub mod prometheus;

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;

use super::config::Config;
use super::data::MetricSet;
use crate::aws::client::AwsContext;
use crate::input;

/// Prometheus queries in flight at once.
const PROMETHEUS_CONCURRENCY: usize = 8;

/// The time range to read, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: f64,
    pub end: f64,
}

/// The groups the two sides run in.
#[derive(Debug, Clone)]
pub struct Groups {
    pub baseline: String,
    pub canary: String,
}

/// Where CloudWatch metrics are read: the AWS context and the region.
pub struct Aws<'a> {
    pub ctx: &'a AwsContext,
    pub region: &'a str,
}

/// Read every metric of `config` for both groups over `w`: (baseline, canary).
pub async fn fetch(
    config: &Config,
    aws: Option<&Aws<'_>>,
    groups: &Groups,
    w: Window,
) -> Result<(MetricSet, MetricSet)> {
    let mut baseline = MetricSet::new();
    let mut canary = MetricSet::new();
    // CloudWatch: one batch for every metric of both groups.
    let mut requests = Vec::new();
    let mut slots = Vec::new();
    for m in &config.metrics {
        let Some(q) = &m.cloudwatch else { continue };
        for (side, group) in [(0usize, &groups.baseline), (1, &groups.canary)] {
            let metric = q
                .resolve(group)
                .map_err(|e| input!("metric {}: cloudwatch: {e}", m.name))?;
            requests.push(cloudwatch::Request {
                metric,
                statistic: q.statistic.clone(),
                period: q.period,
                unit: q.unit.clone(),
            });
            slots.push((side, m.name.clone()));
        }
    }
    if !requests.is_empty() {
        let aws = aws.ok_or_else(|| {
            input!("CloudWatch metrics need an AWS region (--region or AWS_REGION)")
        })?;
        let client = aws.ctx.cloudwatch(aws.region);
        let series = cloudwatch::fetch(&client, &requests, w.start, w.end)
            .await
            .with_context(|| format!("reading CloudWatch metrics in {}", aws.region))?;
        for ((side, name), pts) in slots.into_iter().zip(series) {
            if side == 0 {
                &mut baseline
            } else {
                &mut canary
            }
            .insert(name, pts);
        }
    }
    // Prometheus: every query, a few at a time.
    let prom_metrics: Vec<_> = config
        .metrics
        .iter()
        .filter_map(|m| m.prometheus.as_ref().map(|q| (m, q)))
        .collect();
    if !prom_metrics.is_empty() {
        let server = config.prometheus.as_ref().ok_or_else(|| {
            input!("prometheus queries need the server: `prometheus: {{url: ...}}` in the config")
        })?;
        let prom =
            prometheus::Prometheus::new(&server.url, Duration::from_secs_f64(server.timeout))?;
        let prom = &prom;
        let jobs = prom_metrics.into_iter().flat_map(|(m, q)| {
            [(0usize, &groups.baseline), (1, &groups.canary)]
                .into_iter()
                .map(move |(side, group)| async move {
                    let pts = prom
                        .query_range(&m.name, &q.resolve(group), w.start, w.end, q.step)
                        .await?;
                    Ok::<_, anyhow::Error>((side, m.name.clone(), pts))
                })
        });
        let results: Vec<Result<_>> = futures::stream::iter(jobs)
            .buffer_unordered(PROMETHEUS_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            let (side, name, pts) = r?;
            if side == 0 {
                &mut baseline
            } else {
                &mut canary
            }
            .insert(name, pts);
        }
    }
    Ok((baseline, canary))
}
