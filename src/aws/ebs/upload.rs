//! Write a disk file as a new snapshot with the EBS direct APIs, uploading only the 512 KiB
//! blocks that differ from the parent snapshot (or, without a parent, the non-zero ones):
//! StartSnapshot (tagged with the bake id, recorded in the ledger at once), PutSnapshotBlock with
//! SHA-256 checksums and bounded concurrency, CompleteSnapshot with the changed-block count and
//! the LINEAR aggregated checksum.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Tag};
use aws_smithy_types::body::SdkBody;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tracing::info;

use super::blocks::{self, BlockHash, BLOCK_SIZE};
use super::retry::{classify, classify_new_snapshot, with_retries};
use crate::aws::ledger::{Ledger, Resource};
use crate::aws::BAKE_ID_TAG;

/// Minutes AWS waits for the next block (or CompleteSnapshot) before it moves the snapshot to
/// the error state.
const START_TIMEOUT_MINUTES: i32 = 60;

/// How the new snapshot is made beyond its blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadOptions {
    /// Encrypt it with this KMS key (StartSnapshot `Encrypted` + `KmsKeyArn`). Only without a
    /// parent: a child takes its parent's encryption, and AWS refuses both together.
    pub kms_key_arn: Option<String>,
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadStats {
    pub snapshot_id: String,
    /// Blocks of the file (its length in 512 KiB blocks).
    pub blocks_total: u64,
    /// Blocks uploaded (differing from the parent, or non-zero without one).
    pub blocks_changed: u64,
    pub bytes_uploaded: u64,
    /// The snapshot's volume size (the file's length rounded up to whole GiB).
    pub volume_size_gib: i64,
    pub seconds: f64,
    /// The file's block hashes as uploaded: the new snapshot's blocks, so a later upload can be
    /// incremental against it (the layer cache's layered base).
    pub hashes: Vec<Option<BlockHash>>,
}

/// The volume size StartSnapshot takes for a file of `len` bytes: whole GiB, at least 1.
pub fn volume_size_gib(len: u64) -> i64 {
    (len.div_ceil(1 << 30)).max(1) as i64
}

/// An idempotency token for StartSnapshot: the same for a retry of the same upload in the same
/// bake, different for anything else (at most 64 characters).
pub fn client_token(
    bake_id: &str,
    region: &str,
    parent: Option<&str>,
    kms_key: Option<&str>,
    volume_gib: i64,
    changed: &[u64],
    hashes: &[Option<BlockHash>],
) -> String {
    let mut h = Sha256::new();
    for part in [
        bake_id,
        region,
        parent.unwrap_or("-"),
        kms_key.unwrap_or("-"),
        &volume_gib.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for &i in changed {
        h.update(i.to_le_bytes());
        h.update(blocks::block_sha256(hashes[i as usize]));
    }
    hex::encode(h.finalize())[..64].to_string()
}

/// Upload `file` as a new snapshot in `region`. With `parent` (its id and block hashes), only the
/// blocks that differ from it are sent and the rest is inherited. The snapshot is recorded in
/// `ledger` before the first block is written. Returns once CompleteSnapshot is accepted; wait
/// with `wait_snapshot_completed` before registering an image.
#[allow(clippy::too_many_arguments)]
pub async fn upload_snapshot(
    ebs: &aws_sdk_ebs::Client,
    file: &Path,
    parent: Option<(&str, &[Option<BlockHash>])>,
    description: &str,
    tags: &BTreeMap<String, String>,
    ledger: &Ledger,
    region: &str,
    concurrency: usize,
) -> Result<UploadStats> {
    upload_snapshot_with(
        ebs,
        file,
        parent,
        description,
        tags,
        ledger,
        region,
        concurrency,
        &UploadOptions::default(),
    )
    .await
}

/// [`upload_snapshot`], encrypted with `opts.kms_key_arn` when given (then every block is
/// written, zero blocks included: [`blocks::blocks_to_upload`]).
#[allow(clippy::too_many_arguments)]
pub async fn upload_snapshot_with(
    ebs: &aws_sdk_ebs::Client,
    file: &Path,
    parent: Option<(&str, &[Option<BlockHash>])>,
    description: &str,
    tags: &BTreeMap<String, String>,
    ledger: &Ledger,
    region: &str,
    concurrency: usize,
    opts: &UploadOptions,
) -> Result<UploadStats> {
    ensure!(
        parent.is_none() || opts.kms_key_arn.is_none(),
        "a snapshot with a parent takes the parent's encryption: AWS refuses KmsKeyArn with ParentSnapshotId"
    );
    let started = Instant::now();
    let path = file.to_path_buf();
    let hashes = tokio::task::spawn_blocking(move || blocks::hash_file_blocks(&path))
        .await
        .context("hashing thread")??;
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading the size of {}", file.display()))?
        .len();
    if let Some((pid, base)) = parent {
        ensure!(
            base.len() <= hashes.len(),
            "{} ({} blocks) is smaller than its parent snapshot {pid} ({} blocks)",
            file.display(),
            hashes.len(),
            base.len()
        );
    }
    let kms_key = opts.kms_key_arn.as_deref();
    let changed = blocks::blocks_to_upload(
        parent.map(|p| p.1),
        &hashes,
        parent.is_some(),
        kms_key.is_some(),
    );
    let gib = volume_size_gib(len);
    let parent_id = parent.map(|p| p.0);
    info!(
        "uploading {}: {} of {} blocks changed{}",
        file.display(),
        changed.len(),
        hashes.len(),
        parent_id
            .map(|p| format!(" against {p}"))
            .unwrap_or_default()
    );

    // StartSnapshot
    let mut all_tags: Vec<Tag> = tags
        .iter()
        .filter(|(k, _)| k.as_str() != BAKE_ID_TAG && k.as_str() != crate::aws::BAKE_STATE_TAG)
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    all_tags.push(
        Tag::builder()
            .key(BAKE_ID_TAG)
            .value(&ledger.bake_id)
            .build(),
    );
    all_tags.push(
        Tag::builder()
            .key(crate::aws::BAKE_STATE_TAG)
            .value("pending")
            .build(),
    );
    let token = client_token(
        &ledger.bake_id,
        region,
        parent_id,
        kms_key,
        gib,
        &changed,
        &hashes,
    );
    let what = format!(
        "StartSnapshot (a snapshot of {} in {region})",
        file.display()
    );
    ledger.expect_region(region);
    let start = with_retries(&what, 0, || {
        let req = ebs
            .start_snapshot()
            .volume_size(gib)
            .set_parent_snapshot_id(parent_id.map(str::to_string))
            .set_encrypted(kms_key.map(|_| true))
            .set_kms_key_arn(kms_key.map(str::to_string))
            .set_tags(Some(all_tags.clone()))
            .description(description)
            .client_token(&token)
            .timeout(START_TIMEOUT_MINUTES);
        let what = &what;
        async move { req.send().await.map_err(|e| classify(e, what)) }
    })
    .await?;
    let snapshot_id = start
        .snapshot_id()
        .with_context(|| format!("{what}: StartSnapshot returned no snapshot id"))?
        .to_string();
    ledger.record(Resource::Snapshot {
        region: region.to_string(),
        id: snapshot_id.clone(),
    });
    crate::fault::point(&format!("start snapshot in {region}"))?;
    if let Some(bs) = start.block_size() {
        ensure!(
            bs as u64 == BLOCK_SIZE,
            "{snapshot_id} has BlockSize {bs}; bakery writes {BLOCK_SIZE}-byte blocks"
        );
    }
    info!("started {snapshot_id} ({gib} GiB) in {region}");

    // PutSnapshotBlock, at most `concurrency` blocks in memory
    let f = Arc::new(File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let hashes = Arc::new(hashes);
    let meter = crate::progress::meter();
    meter.bytes(Some(changed.len() as u64 * BLOCK_SIZE));
    let bytes_uploaded: u64 = futures::stream::iter(changed.iter().copied())
        .map(|index| put_block(ebs, &snapshot_id, f.clone(), len, index, hashes.clone()))
        .buffer_unordered(concurrency.max(1))
        .try_fold(0u64, |acc, n| {
            meter.inc(n);
            async move { Ok(acc + n) }
        })
        .await
        .with_context(|| format!("uploading {} to {snapshot_id}", file.display()))?;

    // CompleteSnapshot
    let what = format!("CompleteSnapshot of {snapshot_id}");
    let count = i32::try_from(changed.len()).context("too many changed blocks")?;
    let checksum = blocks::linear_checksum(&changed, &hashes);
    with_retries(&what, 0, || {
        let req = ebs
            .complete_snapshot()
            .snapshot_id(&snapshot_id)
            .changed_blocks_count(count)
            .checksum(&checksum)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear);
        let what = &what;
        async move { req.send().await.map_err(|e| classify_new_snapshot(e, what)) }
    })
    .await?;

    let seconds = started.elapsed().as_secs_f64();
    info!(
        "uploaded {snapshot_id}: {} blocks, {:.1} MiB in {seconds:.1} s ({:.1} MiB/s)",
        changed.len(),
        bytes_uploaded as f64 / 1048576.0,
        bytes_uploaded as f64 / 1048576.0 / seconds.max(1e-9)
    );
    Ok(UploadStats {
        snapshot_id,
        blocks_total: hashes.len() as u64,
        blocks_changed: changed.len() as u64,
        bytes_uploaded,
        volume_size_gib: gib,
        seconds,
        hashes: Arc::try_unwrap(hashes).unwrap_or_else(|h| (*h).clone()),
    })
}

/// Read block `index` (pread), check it still hashes as when the file was hashed, and put it.
async fn put_block(
    ebs: &aws_sdk_ebs::Client,
    snapshot_id: &str,
    file: Arc<File>,
    len: u64,
    index: u64,
    hashes: Arc<Vec<Option<BlockHash>>>,
) -> Result<u64> {
    let data = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        blocks::read_block(&file, len, index, &mut buf)?;
        Ok(buf)
    })
    .await
    .context("read thread")??;
    if blocks::hash_block(&data) != hashes[index as usize] {
        bail!("block {index} changed while uploading: the file must not be modified during the upload");
    }
    let digest = blocks::block_sha256(hashes[index as usize]);
    let checksum = blocks::checksum_b64(&digest);
    // In memory once: a retry resends the same buffer (a cheap clone of a shared body).
    let body = SdkBody::from(data);
    let block_index = i32::try_from(index).context("block index out of range")?;
    let what = format!("PutSnapshotBlock to {snapshot_id} block {index}");
    with_retries(&what, index, || {
        let req = ebs
            .put_snapshot_block()
            .snapshot_id(snapshot_id)
            .block_index(block_index)
            .block_data(ByteStream::new(
                body.try_clone().expect("an in-memory body clones"),
            ))
            .data_length(BLOCK_SIZE as i32)
            .checksum(&checksum)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256);
        let what = &what;
        async move { req.send().await.map_err(|e| classify_new_snapshot(e, what)) }
    })
    .await?;
    Ok(BLOCK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_sizes_round_up_to_whole_gib() {
        assert_eq!(volume_size_gib(0), 1);
        assert_eq!(volume_size_gib(64 << 20), 1);
        assert_eq!(volume_size_gib(1 << 30), 1);
        assert_eq!(volume_size_gib((1 << 30) + 1), 2);
        assert_eq!(volume_size_gib(8 << 30), 8);
    }

    #[test]
    fn client_tokens_are_stable_and_distinct() {
        let hashes = [Some([1u8; 32]), None];
        let a = client_token("bake-1", "us-east-1", None, None, 1, &[0], &hashes);
        assert_eq!(a.len(), 64);
        assert_eq!(
            a,
            client_token("bake-1", "us-east-1", None, None, 1, &[0], &hashes)
        );
        assert_ne!(
            a,
            client_token("bake-2", "us-east-1", None, None, 1, &[0], &hashes)
        );
        assert_ne!(
            a,
            client_token("bake-1", "us-west-2", None, None, 1, &[0], &hashes)
        );
        assert_ne!(
            a,
            client_token(
                "bake-1",
                "us-east-1",
                Some("snap-1"),
                None,
                1,
                &[0],
                &hashes
            )
        );
        assert_ne!(
            a,
            client_token("bake-1", "us-east-1", None, None, 1, &[0, 1], &hashes)
        );
        assert_ne!(
            a,
            client_token("bake-1", "us-east-1", None, Some("arn:k"), 1, &[0], &hashes)
        );
    }
}
