//! Waiting for an AMI to become `available`: generous, configurable timeouts with progress logs
//! (region copies of big images take tens of minutes).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use tracing::info;

use crate::aws::client::describe_sdk_error;

#[derive(Debug, Clone, Copy)]
pub struct WaitConfig {
    /// Give up after this long.
    pub timeout: Duration,
    /// First poll interval; doubles up to `max_poll`.
    pub poll: Duration,
    pub max_poll: Duration,
    /// Log progress at most this often.
    pub log_every: Duration,
}

impl Default for WaitConfig {
    fn default() -> Self {
        WaitConfig {
            timeout: Duration::from_secs(30 * 60),
            poll: Duration::from_millis(500),
            max_poll: Duration::from_secs(15),
            log_every: Duration::from_secs(30),
        }
    }
}

impl WaitConfig {
    /// The default, with the timeout from `BAKERY_AMI_WAIT_TIMEOUT` (seconds) when set.
    pub fn from_env() -> WaitConfig {
        let mut c = WaitConfig::default();
        if let Some(secs) = std::env::var("BAKERY_AMI_WAIT_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            c.timeout = Duration::from_secs(secs);
        }
        c
    }
}

/// Poll DescribeImages until the image is `available`. A `failed`/`invalid`/`error`/`deregistered`
/// state is an error with AWS's reason; a brief NotFound right after creation (eventual
/// consistency) counts as pending.
pub async fn wait_image_available(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    image_id: &str,
    cfg: &WaitConfig,
) -> Result<aws_sdk_ec2::types::Image> {
    let start = Instant::now();
    let mut poll = cfg.poll;
    let mut last_log = Instant::now();
    loop {
        let state = match ec2.describe_images().image_ids(image_id).send().await {
            Ok(out) => match out.images().first() {
                Some(img) => {
                    let state = img
                        .state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default();
                    match state.as_str() {
                        "available" => return Ok(img.clone()),
                        "failed" | "invalid" | "error" | "deregistered" | "disabled" => {
                            let reason = img
                                .state_reason()
                                .and_then(|r| r.message())
                                .unwrap_or("no reason given");
                            bail!("image {image_id} in {region} is {state}: {reason}");
                        }
                        _ => state,
                    }
                }
                None => "not visible yet".to_string(),
            },
            Err(e) => {
                let msg = describe_sdk_error(&e);
                // Just after RegisterImage/CopyImage EC2 may not know the id yet (eventual
                // consistency): InvalidAMIID.NotFound for up to a minute is waited out.
                if crate::aws::error::code(&e).is_some_and(crate::aws::error::is_not_found)
                    && start.elapsed() < Duration::from_secs(60)
                {
                    "not visible yet".to_string()
                } else {
                    return Err(anyhow!("waiting for image {image_id} in {region}: {msg}"));
                }
            }
        };
        if start.elapsed() >= cfg.timeout {
            bail!(
                "image {image_id} in {region} is still {state} after {}s; it may still finish: rerun the bake to reuse it, or raise BAKERY_AMI_WAIT_TIMEOUT",
                cfg.timeout.as_secs()
            );
        }
        if last_log.elapsed() >= cfg.log_every {
            info!(
                "waiting for image {image_id} in {region}: {state} ({}s)",
                start.elapsed().as_secs()
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(
            poll.min(
                cfg.timeout
                    .saturating_sub(start.elapsed())
                    .max(Duration::from_millis(10)),
            ),
        )
        .await;
        poll = (poll * 2).min(cfg.max_poll);
    }
}
