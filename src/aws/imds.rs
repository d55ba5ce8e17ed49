//! Are we on EC2? The instance id, AZ and region from the instance metadata service, read with
//! the SDK's IMDSv2 client (`aws_config::imds`: session token, retries, the standard endpoint
//! settings) with short timeouts and one attempt, so off EC2 the answer is "no" within a
//! fraction of a second instead of a hang.
//!
//! The endpoint is the SDK's: `AWS_EC2_METADATA_SERVICE_ENDPOINT` (tests point it at a local
//! server), `ec2_metadata_service_endpoint` in the AWS config file, else `http://169.254.169.254`.
//! `AWS_EC2_METADATA_DISABLED=true` means "not on EC2", as it does for the SDK's own providers.

use std::time::Duration;

use aws_config::imds::client::Client;
use serde::{Deserialize, Serialize};
use tracing::debug;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ec2Host {
    pub instance_id: String,
    pub availability_zone: String,
    pub region: String,
}

fn client() -> aws_config::imds::client::Builder {
    let with_client = aws_config::provider_config::ProviderConfig::without_region()
        .with_http_client(super::https::client());
    Client::builder()
        .configure(&with_client)
        .max_attempts(1)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(REQUEST_TIMEOUT)
        .operation_attempt_timeout(REQUEST_TIMEOUT)
        .operation_timeout(REQUEST_TIMEOUT)
}

/// This host's instance, AZ and region, or `None` when IMDSv2 does not answer (not on EC2,
/// IMDS disabled, hop limit too low in a container...).
pub async fn detect() -> Option<Ec2Host> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    detect_with(&client().build()).await
}

/// [`detect`] against an explicit endpoint (`http://host[:port]`).
pub async fn detect_at(endpoint: &str) -> Option<Ec2Host> {
    match client().endpoint(endpoint) {
        Ok(b) => detect_with(&b.build()).await,
        Err(e) => {
            debug!("imds: endpoint {endpoint}: {e}");
            None
        }
    }
}

async fn detect_with(client: &Client) -> Option<Ec2Host> {
    let get = |path: &'static str| async move {
        match client.get(path).await {
            Ok(v) => Some(v.as_ref().trim().to_string()).filter(|s| !s.is_empty()),
            Err(e) => {
                debug!("imds: GET {path}: {e}");
                None
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
                    // IMDS says how long a token lasts; the SDK's client requires it.
                    let ttl = if first.starts_with("PUT ") {
                        "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n"
                    } else {
                        ""
                    };
                    let resp = if chunked && status == 200 {
                        format!("HTTP/1.1 {status} X\r\n{ttl}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
                    } else {
                        format!(
                            "HTTP/1.1 {status} X\r\n{ttl}Content-Length: {}\r\n\r\n{body}",
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

    /// The standard variables the SDK documents: the endpoint override, and "disabled" winning
    /// over it. (Each nextest test is its own process, so setting the environment is safe here.)
    #[tokio::test]
    async fn detect_follows_the_sdk_environment() {
        let (ep, _) = fake_imds(true, false).await;
        std::env::remove_var("AWS_EC2_METADATA_DISABLED");
        std::env::set_var("AWS_EC2_METADATA_SERVICE_ENDPOINT", &ep);
        let host = detect()
            .await
            .expect("detected at AWS_EC2_METADATA_SERVICE_ENDPOINT");
        assert_eq!(host.instance_id, "i-0123456789abcdef0");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        assert!(detect().await.is_none());
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
}
