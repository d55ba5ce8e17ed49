//! Are we on EC2? IMDSv2 (token, then instance id, AZ and region) over plain HTTP/1.1 with short
//! timeouts, so off EC2 the answer is "no" within a fraction of a second instead of a hang.
//!
//! `BAKERY_IMDS_ENDPOINT=http://127.0.0.1:PORT` points it elsewhere (tests). Without it,
//! `AWS_EC2_METADATA_DISABLED=true` means "not on EC2", as it does for the AWS SDKs.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::debug;

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const TOKEN_TTL_SECS: u32 = 21600;
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ec2Host {
    pub instance_id: String,
    pub availability_zone: String,
    pub region: String,
}

/// This host's instance, AZ and region, or `None` when IMDSv2 does not answer (not on EC2,
/// IMDS disabled, hop limit too low in a container...).
pub async fn detect() -> Option<Ec2Host> {
    match std::env::var("BAKERY_IMDS_ENDPOINT") {
        Ok(ep) if !ep.trim().is_empty() => detect_at(ep.trim()).await,
        _ => {
            if std::env::var("AWS_EC2_METADATA_DISABLED")
                .map(|v| v.eq_ignore_ascii_case("true"))
                .unwrap_or(false)
            {
                return None;
            }
            detect_at(DEFAULT_ENDPOINT).await
        }
    }
}

/// [`detect`] against an explicit endpoint (`http://host[:port]`).
pub async fn detect_at(endpoint: &str) -> Option<Ec2Host> {
    let authority = match parse_endpoint(endpoint) {
        Some(a) => a,
        None => {
            debug!("imds: endpoint {endpoint} is not http://host[:port]");
            return None;
        }
    };
    let token = request(
        &authority,
        "PUT",
        "/latest/api/token",
        &[(
            "X-aws-ec2-metadata-token-ttl-seconds",
            TOKEN_TTL_SECS.to_string(),
        )],
    )
    .await?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return None;
    }
    let get = |path: &'static str| {
        let authority = authority.clone();
        let token = token.clone();
        async move {
            request(
                &authority,
                "GET",
                path,
                &[("X-aws-ec2-metadata-token", token)],
            )
            .await
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
        }
    };
    let instance_id = get("/latest/meta-data/instance-id").await?;
    let availability_zone = get("/latest/meta-data/placement/availability-zone").await?;
    let region = match get("/latest/meta-data/placement/region").await {
        Some(r) => r,
        // Older IMDS without placement/region: the AZ minus its letter.
        None => availability_zone
            .trim_end_matches(|c: char| c.is_ascii_lowercase())
            .to_string(),
    };
    Some(Ec2Host {
        instance_id,
        availability_zone,
        region,
    })
}

/// `http://host[:port][/]` -> `host:port`.
fn parse_endpoint(ep: &str) -> Option<String> {
    let rest = ep.strip_prefix("http://")?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return None;
    }
    // IPv6 literals come bracketed: [fd00:ec2::254]:80
    let has_port = if host.starts_with('[') {
        host.contains("]:")
    } else {
        host.contains(':')
    };
    Some(if has_port {
        host.to_string()
    } else {
        format!("{host}:80")
    })
}

/// One HTTP/1.1 request with `Connection: close`; the body on 200, `None` on anything else.
async fn request(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
) -> Option<String> {
    let stream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!("imds: connect {authority}: {e}");
            return None;
        }
        Err(_) => {
            debug!("imds: connect {authority}: timed out");
            return None;
        }
    };
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bakery\r\nAccept: */*\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    let exchange = async move {
        let mut stream = stream;
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_RESPONSE {
                break;
            }
            // Stop once a complete Content-Length body is in, even if the peer keeps the socket open.
            if let Some((_, _, Some(len), body_at)) = parse_head(&buf) {
                if buf.len() >= body_at + len {
                    break;
                }
            }
        }
        Ok::<_, std::io::Error>(buf)
    };
    let buf = match timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            debug!("imds: {method} {path}: {e}");
            return None;
        }
        Err(_) => {
            debug!("imds: {method} {path}: timed out");
            return None;
        }
    };
    let (status, chunked, len, body_at) = parse_head(&buf)?;
    if status != 200 {
        debug!("imds: {method} {path}: HTTP {status}");
        return None;
    }
    let body = &buf[body_at..];
    let body = if chunked {
        dechunk(body)?
    } else {
        match len {
            Some(l) => body.get(..l)?.to_vec(),
            None => body.to_vec(),
        }
    };
    String::from_utf8(body).ok()
}

/// Status, chunked?, Content-Length, offset of the body, once the head is complete.
fn parse_head(buf: &[u8]) -> Option<(u16, bool, Option<usize>, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let (mut chunked, mut len) = (false, None);
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    Some((status, chunked, if chunked { None } else { len }, end + 4))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    /// A tiny IMDSv2: PUT /latest/api/token issues "TOKEN"; GETs need it (401 otherwise).
    async fn fake_imds(with_region: bool, chunked: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let unauthorized = Arc::new(AtomicUsize::new(0));
        let counter = unauthorized.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = s.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let req = String::from_utf8_lossy(&buf).to_string();
                    let first = req.lines().next().unwrap_or_default().to_string();
                    let has_token = req.lines().any(|l| {
                        l.to_ascii_lowercase()
                            .starts_with("x-aws-ec2-metadata-token: token")
                    });
                    let (status, body) = if first.starts_with("PUT /latest/api/token ") {
                        if req
                            .to_ascii_lowercase()
                            .contains("x-aws-ec2-metadata-token-ttl-seconds: 21600")
                        {
                            (200, "TOKEN")
                        } else {
                            (400, "")
                        }
                    } else if !first.starts_with("GET ") {
                        (405, "")
                    } else if !has_token {
                        counter.fetch_add(1, Ordering::SeqCst);
                        (401, "")
                    } else if first.contains("/latest/meta-data/instance-id ") {
                        (200, "i-0123456789abcdef0")
                    } else if first.contains("/latest/meta-data/placement/availability-zone ") {
                        (200, "eu-west-1b")
                    } else if first.contains("/latest/meta-data/placement/region ") && with_region {
                        (200, "eu-west-1")
                    } else {
                        (404, "")
                    };
                    let resp = if chunked && status == 200 {
                        format!("HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
                    } else {
                        format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}"), unauthorized)
    }

    #[tokio::test]
    async fn imdsv2_answers_with_a_token() {
        let (ep, unauthorized) = fake_imds(true, false).await;
        let host = detect_at(&ep).await.expect("detected");
        assert_eq!(
            host,
            Ec2Host {
                instance_id: "i-0123456789abcdef0".into(),
                availability_zone: "eu-west-1b".into(),
                region: "eu-west-1".into()
            }
        );
        assert_eq!(
            unauthorized.load(Ordering::SeqCst),
            0,
            "every GET carried the token"
        );
    }

    #[tokio::test]
    async fn region_falls_back_to_the_az_and_chunked_bodies_are_read() {
        let (ep, _) = fake_imds(false, true).await;
        let host = detect_at(&ep).await.expect("detected");
        assert_eq!(host.region, "eu-west-1");
        assert_eq!(host.availability_zone, "eu-west-1b");
    }

    #[tokio::test]
    async fn nothing_listening_is_not_ec2_and_is_quick() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let t = std::time::Instant::now();
        assert!(detect_at(&format!("http://{addr}")).await.is_none());
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        // Accepts and never answers: the request timeout ends it.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let t = std::time::Instant::now();
        assert!(detect_at(&format!("http://{addr}")).await.is_none());
        assert!(t.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(1));
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("http://169.254.169.254").as_deref(),
            Some("169.254.169.254:80")
        );
        assert_eq!(
            parse_endpoint("http://127.0.0.1:8080/").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            parse_endpoint("http://[fd00:ec2::254]").as_deref(),
            Some("[fd00:ec2::254]:80")
        );
        assert_eq!(parse_endpoint("https://x"), None);
    }
}
