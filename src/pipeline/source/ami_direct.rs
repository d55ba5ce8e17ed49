//! Source: a base AMI's root snapshot read with the EBS direct APIs (ListSnapshotBlocks +
//! GetSnapshotBlock, 32 in flight, every block's SHA-256 checked) into a sparse file cached per
//! snapshot id under `<work-dir>/snapshots` with its block hashes, then copied into the disk.
//! The hashes go to the AMI sink, which uploads only the blocks that differ.

use std::path::Path;

use anyhow::Result;

use super::{BaseOrigin, From, SourceDisk};
use crate::aws::ami::BaseAmi;
use crate::aws::ebs;
use crate::context::Globals;
use crate::disk::image;
use crate::pipeline::sink::ami::Cloud;
use crate::pipeline::Stages;

/// GetSnapshotBlock calls in flight.
const CONCURRENCY: usize = 32;

/// Download (or take from the cache) `base`'s root snapshot and copy it into `disk`.
pub fn open(
    base: &BaseAmi,
    cloud: &Cloud,
    disk: &Path,
    stages: &mut Stages,
    g: &Globals,
) -> Result<SourceDisk> {
    let cache = g.work_dir.join("snapshots");
    std::fs::create_dir_all(&cache)?;
    let ebs_client = cloud.aws.ctx.ebs(&cloud.region);
    // Held until the copy is done: `bakery gc` leaves the entry alone meanwhile.
    let held = crate::cache::Use::hold(&g.work_dir, "snapshot", &base.root_snapshot_id)?;
    let (cached, hashes, stats) = stages.run_aws(
        "download base snapshot",
        &format!("download {}", base.root_snapshot_id),
        cloud.aws.rt,
        ebs::cached_download(&ebs_client, &base.root_snapshot_id, &cache, CONCURRENCY),
    )?;
    stages.run("copy base", |_| {
        image::copy_sparse(&cached, disk).map(|_| ())
    })?;
    held.touch(&cached);
    drop(held);
    Ok(SourceDisk {
        path: disk.to_path_buf(),
        origin: BaseOrigin::of_ami(base),
        root_partition: None,
        bootstrap: None,
        from: From::Snapshot {
            base: base.clone(),
            hashes,
            bytes_read: stats.bytes_read,
        },
    })
}
