//! CloudWatch: every metric of both groups in as few `GetMetricData` calls as possible (500
//! queries per call, the API's limit), each paginated (`NextToken`, a query's points can span
//! pages), one `MetricStat` per metric and group with its own period and statistic.
//!
//! AWS: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html>.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use aws_sdk_cloudwatch::types::{
    Dimension, Metric, MetricDataQuery, MetricStat, ScanBy, StandardUnit, StatusCode,
};
use aws_smithy_types::DateTime;

use crate::canary::config::CloudWatchMetric;
use crate::canary::data::Point;

/// GetMetricData takes at most 500 queries per call.
pub const MAX_QUERIES: usize = 500;

/// One series to read: a metric with its statistic, period and unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub metric: CloudWatchMetric,
    pub statistic: String,
    pub period: i32,
    pub unit: Option<String>,
}

/// The query of request `i`: ids start with a lowercase letter (the API's rule).
fn query(i: usize, r: &Request) -> MetricDataQuery {
    let mut m = Metric::builder()
        .namespace(&r.metric.namespace)
        .metric_name(&r.metric.metric_name);
    for (k, v) in &r.metric.dimensions {
        m = m.dimensions(Dimension::builder().name(k).value(v).build());
    }
    let mut stat = MetricStat::builder()
        .metric(m.build())
        .period(r.period)
        .stat(&r.statistic);
    if let Some(u) = &r.unit {
        stat = stat.unit(StandardUnit::from(u.as_str()));
    }
    MetricDataQuery::builder()
        .id(format!("q{i}"))
        .metric_stat(stat.build())
        .return_data(true)
        .build()
}

/// The points of every request between `start` and `end` (Unix seconds), in request order.
pub async fn fetch(
    client: &aws_sdk_cloudwatch::Client,
    requests: &[Request],
    start: f64,
    end: f64,
) -> Result<Vec<Vec<Point>>> {
    let mut out: BTreeMap<usize, Vec<Point>> =
        (0..requests.len()).map(|i| (i, Vec::new())).collect();
    for (c, chunk) in requests.chunks(MAX_QUERIES).enumerate() {
        let base = c * MAX_QUERIES;
        let queries: Vec<MetricDataQuery> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| query(base + i, r))
            .collect();
        let mut pages = client
            .get_metric_data()
            .set_metric_data_queries(Some(queries))
            .start_time(DateTime::from_secs_f64(start))
            .end_time(DateTime::from_secs_f64(end))
            .scan_by(ScanBy::TimestampAscending)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(crate::aws::error::sdk)
                .context("CloudWatch GetMetricData")?;
            for r in page.metric_data_results() {
                let Some(i) = r
                    .id()
                    .and_then(|id| id.strip_prefix('q'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|i| *i < requests.len())
                else {
                    continue;
                };
                if let Some(s @ (StatusCode::InternalError | StatusCode::Forbidden)) =
                    r.status_code()
                {
                    let why: Vec<&str> = r.messages().iter().filter_map(|m| m.value()).collect();
                    let q = &requests[i].metric;
                    return Err(anyhow!(
                        "CloudWatch could not read {} {} ({}): {}",
                        q.namespace,
                        q.metric_name,
                        s.as_str(),
                        why.join("; ")
                    ));
                }
                let pts = out.get_mut(&i).expect("every request has a slot");
                for (t, v) in r.timestamps().iter().zip(r.values()) {
                    pts.push(Point {
                        t: t.as_secs_f64(),
                        v: *v,
                    });
                }
            }
        }
    }
    Ok(out
        .into_values()
        .map(|mut v| {
            v.sort_by(|a, b| a.t.total_cmp(&b.t));
            v
        })
        .collect())
}
