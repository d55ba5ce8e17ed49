//! Downloading a package given as an http(s) URL, on the bake host, before anything is made.
//!
//! The client is hyper's (`hyper-util` + `hyper-rustls` with the system's roots), the stack the
//! AWS SDK and the Prometheus source already link. The body is streamed to a file and hashed
//! as it arrives, never held in memory; it may not grow past the free space of the directory it
//! is written to (less a 64 MiB margin). Redirects are followed (at most 5). A connection
//! failure, a timeout or an HTTP 5xx is retried twice with a short backoff; any other answer
//! than 200 is final. The SHA-256 is checked by the caller before the file is used.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

/// How long to wait for the server to answer, and for each chunk of the body.
const IDLE: Duration = Duration::from_secs(60);
const ATTEMPTS: u32 = 3;
const MAX_REDIRECTS: usize = 5;
/// Kept free in the download's filesystem.
const MARGIN: u64 = 64 << 20;

/// Why a download failed. `Refused` (the server answered with an error status, or the URL is
/// malformed) is the user's to fix; `Failed` (network, disk) is a run-time failure.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// What was downloaded: its size in bytes and SHA-256 (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: u64,
    pub sha256: String,
}

/// Download `url` to `dest` (created; removed again on any error). Blocks; a signal ends it at
/// once with [`crate::error::Interrupted`].
pub fn download(url: &str, dest: &Path) -> Result<Fetched> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the download runtime")?;
    let r = crate::sys::signals::block_on(&rt, fetch(url, dest));
    if r.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    r
}

async fn fetch(url: &str, dest: &Path) -> Result<Fetched> {
    let limit = free_bytes(dest.parent().unwrap_or(Path::new("."))).saturating_sub(MARGIN);
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        match fetch_once(url, dest, limit).await {
            Ok(f) => return Ok(f),
            Err(e @ FetchError::Refused(_)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!("downloading {url} (attempt {}): {e}", attempt + 1);
                last = Some(e);
            }
        }
    }
    Err(last.map_or_else(|| anyhow!("downloading {url}"), anyhow::Error::from))
}

async fn fetch_once(url: &str, dest: &Path, limit: u64) -> Result<Fetched, FetchError> {
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let uri: hyper::Uri = current
            .parse()
            .map_err(|e| FetchError::Refused(format!("not a valid URL ({e})")))?;
        let resp = if current.starts_with("https://") {
            let tls = crate::aws::https::connector().map_err(|e| {
                FetchError::Failed(format!("loading the system's CA certificates: {e}"))
            })?;
            get(&Client::builder(TokioExecutor::new()).build(tls), uri).await?
        } else {
            get(
                &Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
                uri,
            )
            .await?
        };
        let status = resp.status();
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| FetchError::Refused(format!("HTTP {status} without a Location")))?;
            current = redirect_target(&current, to);
            continue;
        }
        if status.is_server_error() {
            return Err(FetchError::Failed(format!(
                "the server answered HTTP {status}"
            )));
        }
        if status != hyper::StatusCode::OK {
            return Err(FetchError::Refused(format!(
                "the server answered HTTP {status}; check the URL"
            )));
        }
        if let Some(len) = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > limit {
                return Err(too_big(dest, limit));
            }
        }
        return save(resp.into_body(), dest, limit).await;
    }
    Err(FetchError::Refused(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

async fn get<C>(
    client: &Client<C, Empty<Bytes>>,
    uri: hyper::Uri,
) -> Result<hyper::Response<hyper::body::Incoming>, FetchError>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    match tokio::time::timeout(IDLE, client.get(uri)).await {
        Err(_) => Err(FetchError::Failed(format!(
            "no answer within {} s",
            IDLE.as_secs()
        ))),
        Ok(Err(e)) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            Err(FetchError::Failed(format!(
                "cannot reach the server ({msg})"
            )))
        }
        Ok(Ok(r)) => Ok(r),
    }
}

async fn save(
    mut body: hyper::body::Incoming,
    dest: &Path,
    limit: u64,
) -> Result<Fetched, FetchError> {
    let io = |e: std::io::Error| FetchError::Failed(format!("writing {}: {e}", dest.display()));
    let mut f = std::fs::File::create(dest).map_err(io)?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        let frame = match tokio::time::timeout(IDLE, body.frame()).await {
            Err(_) => {
                return Err(FetchError::Failed(format!(
                    "the download stalled for {} s",
                    IDLE.as_secs()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(FetchError::Failed(format!("the download broke off: {e}")))
            }
            Ok(Some(Ok(fr))) => fr,
        };
        if let Ok(data) = frame.into_data() {
            n += data.len() as u64;
            if n > limit {
                return Err(too_big(dest, limit));
            }
            h.update(&data);
            f.write_all(&data).map_err(io)?;
        }
    }
    f.sync_all().map_err(io)?;
    Ok(Fetched {
        bytes: n,
        sha256: hex::encode(h.finalize()),
    })
}

fn too_big(dest: &Path, limit: u64) -> FetchError {
    FetchError::Failed(format!(
        "the package is larger than the {} MiB free for downloads in {}",
        limit >> 20,
        dest.parent().unwrap_or(Path::new(".")).display()
    ))
}

fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(u64::MAX)
}

/// Where a `Location` header points, from the URL that answered with it (absolute URLs as
/// they are; `/path` on the same scheme and host; anything else relative to the directory).
pub fn redirect_target(from: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = from.split_once("://").unwrap_or(("http", from));
    let host = rest.split('/').next().unwrap_or(rest);
    if let Some(abs) = location.strip_prefix('/') {
        return format!("{scheme}://{host}/{abs}");
    }
    let path = rest.split(['?', '#']).next().unwrap_or(rest);
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "",
    };
    if dir.is_empty() {
        format!("{scheme}://{host}/{location}")
    } else {
        format!("{scheme}://{dir}{location}")
    }
}

#[cfg(test)]
mod tests {
    use super::redirect_target as rt;

    #[test]
    fn redirects_resolve_against_the_answering_url() {
        assert_eq!(rt("http://a/x/y.deb", "https://b/z.deb"), "https://b/z.deb");
        assert_eq!(rt("http://a:8/x/y.deb", "/z.deb"), "http://a:8/z.deb");
        assert_eq!(rt("http://a/x/y.deb?q", "z.deb"), "http://a/x/z.deb");
        assert_eq!(rt("http://a", "z.deb"), "http://a/z.deb");
    }
}
