//! Wait until a snapshot is `completed` (DescribeSnapshots): an `error` state or the timeout is
//! an error. Polls with a growing interval and logs progress.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use aws_sdk_ec2::types::SnapshotState;
use tracing::{debug, info};

use crate::aws::client::describe_sdk_error;

/// Poll `snapshot_id` until it is completed, for at most `timeout`.
pub async fn wait_snapshot_completed(
    ec2: &aws_sdk_ec2::Client,
    snapshot_id: &str,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut interval = Duration::from_millis(500);
    let mut last_progress = String::new();
    loop {
        match ec2
            .describe_snapshots()
            .snapshot_ids(snapshot_id)
            .send()
            .await
        {
            Ok(out) => {
                let Some(s) = out.snapshots().first() else {
                    bail!("waiting for {snapshot_id}: DescribeSnapshots does not know it");
                };
                let progress = s.progress().unwrap_or_default().to_string();
                match s.state() {
                    Some(SnapshotState::Completed) => {
                        info!(
                            "{snapshot_id} is completed ({:.0} s)",
                            started.elapsed().as_secs_f64()
                        );
                        return Ok(());
                    }
                    Some(SnapshotState::Error) | Some(SnapshotState::Recoverable) => {
                        bail!(
                            "{snapshot_id} is in state {}: {}",
                            s.state().map(|x| x.as_str()).unwrap_or("?"),
                            s.state_message().unwrap_or("no message from AWS")
                        );
                    }
                    other => {
                        if progress != last_progress {
                            info!(
                                "{snapshot_id}: {} {progress}",
                                other.map(|x| x.as_str()).unwrap_or("pending")
                            );
                            last_progress = progress;
                        }
                    }
                }
            }
            Err(e) => {
                let msg = describe_sdk_error(&e);
                // Just after StartSnapshot, EC2 may not know the snapshot yet (eventual consistency).
                let not_yet =
                    crate::aws::error::code(&e).is_some_and(crate::aws::error::is_not_found);
                if !not_yet || started.elapsed() > Duration::from_secs(60) {
                    bail!("waiting for {snapshot_id}: {msg}");
                }
                debug!("waiting for {snapshot_id}: {msg}");
            }
        }
        if started.elapsed() + interval > timeout {
            bail!(
                "{snapshot_id} did not complete within {} s (last progress {}); raise the timeout or check the snapshot in the console",
                timeout.as_secs(),
                if last_progress.is_empty() { "unknown" } else { &last_progress }
            );
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_secs(15));
    }
}
