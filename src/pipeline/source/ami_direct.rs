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
    let (hashes, bytes_read) = fetch(&base.root_snapshot_id, "base", cloud, disk, stages, g)?;
    Ok(SourceDisk {
        path: disk.to_path_buf(),
        origin: BaseOrigin::of_ami(base),
        root_partition: None,
        bootstrap: None,
        from: From::Snapshot {
            base: base.clone(),
            parent_snapshot_id: base.root_snapshot_id.clone(),
            hashes,
            bytes_read,
        },
    })
}

/// Download snapshot `snapshot_id` (or take it from the cache) and copy it into `disk` (stages
/// `download {what} snapshot`, `copy {what}`). Returns its block hashes and the bytes read from
/// the API (0 from the cache).
pub fn fetch(
    snapshot_id: &str,
    what: &str,
    cloud: &Cloud,
    disk: &Path,
    stages: &mut Stages,
    g: &Globals,
) -> Result<(Vec<Option<ebs::BlockHash>>, u64)> {
    let cache = g.work_dir.join("snapshots");
    std::fs::create_dir_all(&cache)?;
    let ebs_client = cloud.aws.ctx.ebs(&cloud.region);
    // Held until the copy is done: `bakery gc` leaves the entry alone meanwhile.
    let held = crate::cache::Use::hold(&g.work_dir, "snapshot", snapshot_id)?;
    let (cached, hashes, stats) = stages.run_aws(
        &format!("download {what} snapshot"),
        &format!("download {snapshot_id}"),
        cloud.aws.rt,
        ebs::cached_download(&ebs_client, snapshot_id, &cache, CONCURRENCY),
    )?;
    stages.run(&format!("copy {what}"), |_| {
        image::copy_sparse(&cached, disk).map(|_| ())
    })?;
    held.touch(&cached);
    drop(held);
    Ok((hashes, stats.bytes_read))
}
