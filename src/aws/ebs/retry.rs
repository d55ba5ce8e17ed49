//! Retries for EBS direct block calls: throttling, 5xx, dropped connections and torn bodies are
//! retried with exponential backoff and full jitter; anything else fails at once. The SDK retries
//! too (standard mode), but not a body that breaks while it is read, nor a checksum mismatch.

use std::future::Future;
use std::time::Duration;

use aws_sdk_ebs::config::http::HttpResponse;
use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};
use tracing::debug;

/// Attempts per call (first try included) on top of the SDK's own retries.
pub const ATTEMPTS: u32 = 5;

/// The outcome of one failed attempt.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try (throttled, 5xx, network, corrupt transfer).
    Transient(anyhow::Error),
    /// Retrying would not help (validation, not found, access denied).
    Fatal(anyhow::Error),
}

/// Classify an SDK error: transient or not, with a one-line description.
pub fn classify<E>(e: SdkError<E, HttpResponse>, what: &str) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let msg = crate::aws::client::describe_sdk_error(&e);
    let transient = match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or_default();
            let status = se.raw().status().as_u16();
            matches!(
                code,
                "RequestThrottledException"
                    | "InternalServerException"
                    | "ThrottlingException"
                    | "ServiceUnavailable"
            ) || status >= 500
                || status == 429
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    };
    let err = anyhow::anyhow!("{what}: {msg}");
    if transient {
        Failure::Transient(err)
    } else {
        Failure::Fatal(err)
    }
}

/// First backoff step.
const BASE_MS: u64 = 200;

/// Backoff before retry `n` (1-based): full jitter over `base_ms` * 2^n, capped at 10 s.
pub fn backoff(n: u32, seed: u64, base_ms: u64) -> Duration {
    let cap = (base_ms << n.min(6)).min(10_000);
    Duration::from_millis(jitter(seed ^ u64::from(n)) % (cap + 1))
}

/// A cheap pseudo-random number (splitmix64 of the seed and the clock): enough to spread retries.
fn jitter(seed: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut z = seed.wrapping_add(nanos).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Run `op` until it succeeds, fails fatally, or `ATTEMPTS` transient failures happened.
pub async fn with_retries<T, F, Fut>(what: &str, seed: u64, op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    retry_loop(what, seed, BASE_MS, op).await
}

async fn retry_loop<T, F, Fut>(what: &str, seed: u64, base_ms: u64, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut n = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(e)) => {
                n += 1;
                if n >= ATTEMPTS {
                    return Err(e.context(format!("{what}: giving up after {ATTEMPTS} attempts")));
                }
                let wait = backoff(n, seed, base_ms);
                debug!("{what}: {e:#}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_grows_and_is_capped() {
        for n in 1..20 {
            let cap = (200u64 << n.min(6)).min(10_000);
            assert!(backoff(n, 42, 200).as_millis() as u64 <= cap);
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_fatal_ones_are_not() {
        let calls = AtomicU32::new(0);
        let v = retry_loop("op", 1, 1, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(Failure::Transient(anyhow::anyhow!("throttled")))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!((v, calls.load(Ordering::SeqCst)), (7, 3));

        let calls = AtomicU32::new(0);
        let e = retry_loop("op", 1, 1, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Failure::Fatal(anyhow::anyhow!("validation")))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(e.to_string(), "validation");

        let calls = AtomicU32::new(0);
        let e = retry_loop("put block 3", 1, 1, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Failure::Transient(anyhow::anyhow!("500")))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
        assert!(format!("{e:#}").contains("giving up"));
    }
}
