//! Retries for EBS direct block calls: throttling, 5xx, dropped connections and torn bodies are
//! retried with exponential backoff and full jitter; anything else fails at once. The SDK retries
//! too (standard mode, timed-out attempts included), but not a body that breaks while it is read,
//! nor a checksum mismatch. A call that ran out of its timeouts is not retried again here: the
//! SDK already did, within `BAKERY_AWS_OPERATION_TIMEOUT`.
//!
//! One more case: right after StartSnapshot, EBS may answer PutSnapshotBlock (and
//! CompleteSnapshot) with ResourceNotFoundException for a while, until the new snapshot is
//! visible everywhere (eventual consistency; awslabs/coldsnap#43, where the EBS team advised
//! waiting and retrying for up to about two minutes). Calls on a snapshot this process just
//! started classify that as [`Failure::NotYetVisible`], retried for [`NOT_VISIBLE_WINDOW`].

use std::future::Future;
use std::time::Duration;

use aws_sdk_ebs::config::http::HttpResponse;
use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};
use tracing::debug;

/// Attempts per call (first try included) on top of the SDK's own retries.
pub const ATTEMPTS: u32 = 5;

/// How long a snapshot this process started may answer "not found" before it counts as gone.
pub const NOT_VISIBLE_WINDOW: Duration = Duration::from_secs(120);

/// The outcome of one failed attempt.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try (throttled, 5xx, network, corrupt transfer).
    Transient(anyhow::Error),
    /// A snapshot started moments ago is not visible yet: retried until [`NOT_VISIBLE_WINDOW`].
    NotYetVisible(anyhow::Error),
    /// Retrying would not help (validation, not found, access denied, out of time).
    Fatal(anyhow::Error),
}

/// [`classify`] for a call on a snapshot this process has just started (PutSnapshotBlock,
/// CompleteSnapshot): ResourceNotFoundException means "not visible yet", not "gone".
pub fn classify_new_snapshot<E>(e: SdkError<E, HttpResponse>, what: &str) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let not_found = matches!(&e, SdkError::ServiceError(se) if se.err().code() == Some("ResourceNotFoundException"));
    match classify(e, what) {
        Failure::Fatal(err) if not_found => Failure::NotYetVisible(err),
        other => other,
    }
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
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        // The SDK retried timed-out attempts until its operation timeout: out of time.
        SdkError::TimeoutError(_) => false,
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
/// A [`Failure::NotYetVisible`] is retried with backoff (at least 500 ms) until
/// [`NOT_VISIBLE_WINDOW`] after the first one; `key` groups the stderr notice of those retries
/// (one line per snapshot, not one per block).
pub async fn with_retries<T, F, Fut>(what: &str, seed: u64, op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    retry_loop(what, seed, BASE_MS, NOT_VISIBLE_WINDOW, op).await
}

async fn retry_loop<T, F, Fut>(
    what: &str,
    seed: u64,
    base_ms: u64,
    window: Duration,
    mut op: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut n = 0;
    let mut unseen_since: Option<std::time::Instant> = None;
    let mut unseen = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::NotYetVisible(e)) => {
                let since = *unseen_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= window {
                    return Err(e.context(format!(
                        "{what}: the snapshot was still not found {}s after it was started",
                        window.as_secs()
                    )));
                }
                unseen += 1;
                crate::aws::client::retry_log::say(
                    &format!("not-visible/{}", what.split(" block ").next().unwrap_or(what)),
                    &format!("{what}: {e:#}; a snapshot just started can take a while to be visible: retrying for up to {}s", window.as_secs()),
                );
                // 0.5 s .. 8 s (base 200 ms): full jitter, at least one base step.
                let step = base_ms * 5 / 2;
                let wait = backoff(unseen.min(4), seed, step).max(Duration::from_millis(step));
                tokio::time::sleep(wait).await;
            }
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
        let v = retry_loop("op", 1, 1, NOT_VISIBLE_WINDOW, || async {
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
        let e = retry_loop("op", 1, 1, NOT_VISIBLE_WINDOW, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Failure::Fatal(anyhow::anyhow!("validation")))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(e.to_string(), "validation");

        let calls = AtomicU32::new(0);
        let e = retry_loop("put block 3", 1, 1, NOT_VISIBLE_WINDOW, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Failure::Transient(anyhow::anyhow!("500")))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
        assert!(format!("{e:#}").contains("giving up"));
    }

    #[tokio::test]
    async fn a_snapshot_not_visible_yet_is_retried_until_the_window_ends() {
        // Not found three times, then found: retried (these do not count as transient attempts).
        let calls = AtomicU32::new(0);
        let v = retry_loop("PutSnapshotBlock", 1, 1, Duration::from_secs(5), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < ATTEMPTS + 2 {
                Err(Failure::NotYetVisible(anyhow::anyhow!(
                    "ResourceNotFoundException"
                )))
            } else {
                Ok(1)
            }
        })
        .await
        .unwrap();
        assert_eq!((v, calls.load(Ordering::SeqCst)), (1, ATTEMPTS + 3));

        // Never found: given up once the window is over, saying so.
        let started = std::time::Instant::now();
        let e = retry_loop(
            "PutSnapshotBlock",
            1,
            1,
            Duration::from_millis(300),
            || async {
                Err::<(), _>(Failure::NotYetVisible(anyhow::anyhow!(
                    "ResourceNotFoundException"
                )))
            },
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(format!("{e:#}").contains("was still not found"), "{e:#}");
    }
}
