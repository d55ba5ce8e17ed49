//! Prometheus: `GET /api/v1/query_range` for each metric and group, over HTTP(S).
//!
//! The client is hyper's (`hyper-util`'s pooled client, `hyper-rustls` for HTTPS with the
//! system's roots): the same stack the AWS SDK already links, so it adds no crate, no second
//! TLS implementation, and it runs on the tokio runtime a deploy already has.
//!
//! A query that returns several series contributes the points of all of them (aggregate with
//! `sum`/`avg` in the query to judge one series). Prometheus's own error for a bad query
//! (`errorType: bad_data`) is an input error naming the metric; others are run-time errors.
//!
//! API: <https://prometheus.io/docs/prometheus/latest/querying/api/#range-queries>.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

use crate::canary::data::Point;
use crate::input;

enum Http {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

/// A Prometheus server.
pub struct Prometheus {
    base: String,
    timeout: Duration,
    http: Http,
}

#[derive(Deserialize)]
struct Reply {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    values: Vec<(f64, String)>,
}

impl Prometheus {
    /// A client of the server at `url` (`http://` or `https://`, with or without a path prefix).
    pub fn new(url: &str, timeout: Duration) -> Result<Prometheus> {
        let base = url.trim_end_matches('/').to_string();
        let http = if base.starts_with("https://") {
            let tls = crate::aws::https::connector()
                .context("loading the system's CA certificates for the Prometheus connection")?;
            Http::Tls(Client::builder(TokioExecutor::new()).build(tls))
        } else {
            Http::Plain(Client::builder(TokioExecutor::new()).build(HttpConnector::new()))
        };
        Ok(Prometheus {
            base,
            timeout,
            http,
        })
    }

    /// The URL of a range query.
    pub fn range_url(&self, query: &str, start: f64, end: f64, step: f64) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        format!(
            "{}/api/v1/query_range?query={}&start={}&end={}&step={}",
            self.base,
            enc(query),
            enc(&format!("{start:.3}")),
            enc(&format!("{end:.3}")),
            enc(&format!("{step}"))
        )
    }

    /// Points of `query` from `start` to `end` (Unix seconds) every `step` seconds. `what`
    /// names the metric in errors.
    pub async fn query_range(
        &self,
        what: &str,
        query: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Point>> {
        let url = self.range_url(query, start, end, step);
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| input!("prometheus url {}: {e}", self.base))?;
        let (status, body) = match &self.http {
            Http::Plain(c) => get(c, uri, self.timeout).await,
            Http::Tls(c) => get(c, uri, self.timeout).await,
        }
        .with_context(|| format!("Prometheus {} (metric {what})", self.base))?;
        let reply: Reply = serde_json::from_slice(&body).map_err(|e| {
            anyhow!(
                "Prometheus {} answered HTTP {status} with something that is not its API's JSON ({e}) for metric {what}",
                self.base
            )
        })?;
        if reply.status != "success" {
            let kind = reply.error_type.unwrap_or_default();
            let msg = format!(
                "Prometheus refused the query of metric {what} ({kind}: {}): {query}",
                reply.error.unwrap_or_default()
            );
            return Err(if kind == "bad_data" {
                input!("{msg}")
            } else {
                anyhow!(msg)
            });
        }
        let data = reply
            .data
            .ok_or_else(|| anyhow!("Prometheus gave no data for metric {what}"))?;
        if data.result_type != "matrix" {
            return Err(input!(
                "the query of metric {what} gives a {}, not a range vector (matrix): {query}",
                data.result_type
            ));
        }
        let mut pts = Vec::new();
        for s in data.result {
            for (t, v) in s.values {
                // Prometheus writes values as strings: "1.5", "NaN", "+Inf".
                let v = v.parse::<f64>().unwrap_or(f64::NAN);
                pts.push(Point { t, v });
            }
        }
        pts.sort_by(|a, b| a.t.total_cmp(&b.t));
        Ok(pts)
    }
}

async fn get<C>(
    client: &Client<C, Empty<Bytes>>,
    uri: hyper::Uri,
    timeout: Duration,
) -> Result<(u16, Bytes)>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let call = async {
        let resp = client.get(uri).await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            anyhow!("cannot reach the server ({msg})")
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| anyhow!("no answer within {} s", timeout.as_secs_f64()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_urls_encode_the_query() {
        let p = Prometheus::new("http://127.0.0.1:9090/", Duration::from_secs(1)).unwrap();
        assert_eq!(
            p.range_url(r#"sum(rate(x{asg="a b"}[1m]))"#, 100.0, 160.5, 60.0),
            "http://127.0.0.1:9090/api/v1/query_range?query=sum%28rate%28x%7Basg%3D%22a%20b%22%7D%5B1m%5D%29%29&start=100%2E000&end=160%2E500&step=60"
        );
    }
}
