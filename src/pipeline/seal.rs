//! Seal: after the session has restored, trimmed and unmounted the image (inside the child),
//! the disk is released — partitions unmapped, then the loop device detached, or the volume
//! detached from this host — so the sink gets a final, consistent disk. On an error path the
//! guards release the same in their `Drop`. An fsck before release would go here.

use anyhow::{anyhow, Result};

use super::device::Attached;
use super::sink::ami::Cloud;
use super::source::{From, SourceDisk};
use super::Stages;

/// Release the attached disk (stages `unmap partitions`, `detach loop device` or `detach
/// volume`). Every release is attempted; failures are reported together.
pub fn seal(
    attached: Attached,
    disk: &SourceDisk,
    cloud: Option<&Cloud>,
    stages: &mut Stages,
) -> Result<()> {
    let Attached { parts, lo, .. } = attached;
    let mut errors: Vec<anyhow::Error> = Vec::new();
    let unmapped = stages.run("unmap partitions", |_| match parts {
        Some(p) => p.close(),
        None => Ok(()),
    });
    errors.extend(unmapped.err());
    if let Some(lo) = lo {
        errors.extend(stages.run("detach loop device", |_| lo.close()).err());
    }
    if errors.iter().any(is_interrupted) {
        // The guards released what the stages did not get to.
        return Err(anyhow::Error::new(crate::error::Interrupted));
    }
    if !errors.is_empty() {
        let all: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
        return Err(anyhow!("releasing the disk: {}", all.join("; ")));
    }
    if let (From::Volume { host, attached, .. }, Some(cloud)) = (&disk.from, cloud) {
        stages.run_aws(
            "detach volume",
            "detach volume",
            cloud.aws.rt,
            crate::aws::volume::detach(&cloud.aws.ctx, host, attached, &cloud.ledger),
        )?;
    }
    Ok(())
}

fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<crate::error::Interrupted>())
}
