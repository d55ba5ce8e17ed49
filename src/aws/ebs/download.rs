//! Read a snapshot with the EBS direct APIs into a local sparse file: ListSnapshotBlocks page by
//! page, GetSnapshotBlock with bounded concurrency, each block's SHA-256 verified, written at
//! its offset. Blocks the snapshot has no data for stay holes. The file is written as
//! `<dest>.partial` and renamed when complete, so an interrupted download never looks whole.
//! `cached_download` keeps one copy per snapshot id (with its block hashes) under a host lock.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::blocks::{self, BlockHash, BLOCK_SIZE};
use super::retry::{classify, with_retries, Failure};
use crate::sys::lock::HostLock;

/// What a download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadStats {
    /// The snapshot's volume size (VolumeSize GiB), the length of the file written.
    pub volume_size_bytes: u64,
    /// Blocks the snapshot holds data for (listed by ListSnapshotBlocks); from the cache, the
    /// non-zero blocks of the cached file.
    pub blocks: u64,
    /// Block data received from the API (0 when the cache was used).
    pub bytes_read: u64,
    /// The file came from the cache, nothing was downloaded.
    pub from_cache: bool,
}

/// Download `snapshot_id` into `dest` (a sparse file of the volume's size).
pub async fn download_snapshot(
    ebs: &aws_sdk_ebs::Client,
    snapshot_id: &str,
    dest: &Path,
    concurrency: usize,
) -> Result<DownloadStats> {
    Ok(download(ebs, snapshot_id, dest, concurrency).await?.0)
}

/// Download `snapshot_id` into `<cache_dir>/<snapshot_id>.raw` unless it is there already, with
/// its block hashes in `<snapshot_id>.raw.hashes`. Concurrent bakes on one host wait for one
/// download (a lock per snapshot id). The cached file is shared: copy it before changing it.
pub async fn cached_download(
    ebs: &aws_sdk_ebs::Client,
    snapshot_id: &str,
    cache_dir: &Path,
    concurrency: usize,
) -> Result<(PathBuf, Vec<Option<BlockHash>>, DownloadStats)> {
    ensure!(
        !snapshot_id.is_empty()
            && snapshot_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "{snapshot_id:?} is not a snapshot id"
    );
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating the snapshot cache {}", cache_dir.display()))?;
    let (dir, id) = (cache_dir.to_path_buf(), snapshot_id.to_string());
    let _lock = tokio::task::spawn_blocking(move || HostLock::acquire(&dir, &id))
        .await
        .context("waiting for the snapshot cache lock")?
        .with_context(|| format!("locking the cached copy of {snapshot_id}"))?;
    let raw = cache_dir.join(format!("{snapshot_id}.raw"));

    if raw.exists() {
        let len = std::fs::metadata(&raw)
            .with_context(|| format!("reading the size of {}", raw.display()))?
            .len();
        let hashes = match blocks::load_hashes(&raw, snapshot_id) {
            Ok(h) => h,
            Err(e) => {
                warn!("{e:#}; rehashing {}", raw.display());
                let h = hash_blocking(&raw).await?;
                blocks::save_hashes(&raw, snapshot_id, &h)?;
                h
            }
        };
        info!("using the cached copy of {snapshot_id} ({})", raw.display());
        let stats = DownloadStats {
            volume_size_bytes: len,
            blocks: hashes.iter().filter(|h| h.is_some()).count() as u64,
            bytes_read: 0,
            from_cache: true,
        };
        return Ok((raw, hashes, stats));
    }

    let (stats, hashes) = download(ebs, snapshot_id, &raw, concurrency).await?;
    let hashes = match hashes {
        Some(h) => h,
        None => hash_blocking(&raw).await?,
    };
    blocks::save_hashes(&raw, snapshot_id, &hashes)?;
    Ok((raw, hashes, stats))
}

async fn hash_blocking(path: &Path) -> Result<Vec<Option<BlockHash>>> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || blocks::hash_file_blocks(&p))
        .await
        .context("hashing thread")?
}

/// Why a block read with GetSnapshotBlock is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockCheckError {
    #[error("unsupported checksum algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("the response carries no checksum")]
    NoChecksum,
    #[error("checksum mismatch: the service says {want}, the data received hashes to {got}")]
    Mismatch { want: String, got: String },
}

/// Check a block against the `Checksum` GetSnapshotBlock returned (base64 SHA-256); the raw
/// digest on success.
pub fn verify_block(
    data: &[u8],
    checksum: Option<&str>,
    algorithm: Option<&str>,
) -> Result<BlockHash, BlockCheckError> {
    if let Some(a) = algorithm {
        if a != "SHA256" {
            return Err(BlockCheckError::UnsupportedAlgorithm(a.to_string()));
        }
    }
    let Some(want) = checksum else {
        return Err(BlockCheckError::NoChecksum);
    };
    let got: BlockHash = Sha256::digest(data).into();
    let got_b64 = blocks::checksum_b64(&got);
    if got_b64 != want {
        return Err(BlockCheckError::Mismatch {
            want: want.to_string(),
            got: got_b64,
        });
    }
    Ok(got)
}

/// Removes `<dest>.partial` unless the download completed.
struct Partial {
    path: PathBuf,
    done: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct Listing {
    ebs: aws_sdk_ebs::Client,
    snapshot_id: String,
    pending: VecDeque<(i32, String)>,
    next: Option<String>,
}

async fn list_page(
    ebs: &aws_sdk_ebs::Client,
    snapshot_id: &str,
    token: Option<String>,
) -> Result<aws_sdk_ebs::operation::list_snapshot_blocks::ListSnapshotBlocksOutput> {
    let what = format!("listing the blocks of {snapshot_id}");
    with_retries(&what, 0, || {
        let req = ebs
            .list_snapshot_blocks()
            .snapshot_id(snapshot_id)
            .set_next_token(token.clone());
        let what = &what;
        async move { req.send().await.map_err(|e| classify(e, what)) }
    })
    .await
}

fn page_blocks(
    page: &aws_sdk_ebs::operation::list_snapshot_blocks::ListSnapshotBlocksOutput,
) -> Result<VecDeque<(i32, String)>> {
    page.blocks()
        .iter()
        .map(|b| match (b.block_index(), b.block_token()) {
            (Some(i), Some(t)) if i >= 0 => Ok((i, t.to_string())),
            _ => bail!("ListSnapshotBlocks returned a block without index or token: {b:?}"),
        })
        .collect()
}

/// The download itself; the block hashes too when the snapshot's block size is 512 KiB.
async fn download(
    ebs: &aws_sdk_ebs::Client,
    snapshot_id: &str,
    dest: &Path,
    concurrency: usize,
) -> Result<(DownloadStats, Option<Vec<Option<BlockHash>>>)> {
    let started = std::time::Instant::now();
    let first = list_page(ebs, snapshot_id, None).await?;
    let volume_gib = first
        .volume_size()
        .with_context(|| format!("ListSnapshotBlocks of {snapshot_id} gave no VolumeSize"))?;
    let block_size = first
        .block_size()
        .with_context(|| format!("ListSnapshotBlocks of {snapshot_id} gave no BlockSize"))?;
    ensure!(
        volume_gib > 0 && block_size > 0,
        "{snapshot_id}: bad VolumeSize {volume_gib} GiB or BlockSize {block_size}"
    );
    let volume_bytes = (volume_gib as u64) << 30;
    let block_size = block_size as u64;
    if block_size != BLOCK_SIZE {
        warn!(
            "{snapshot_id} reports BlockSize {block_size}, not {BLOCK_SIZE}: downloading with it"
        );
    }

    let partial = Partial {
        path: with_suffix(dest, ".partial"),
        done: false,
    };
    let file = File::create(&partial.path)
        .with_context(|| format!("creating {}", partial.path.display()))?;
    file.set_len(volume_bytes)
        .with_context(|| format!("sizing {} to {volume_gib} GiB", partial.path.display()))?;
    let file = Arc::new(file);

    let listing = Listing {
        ebs: ebs.clone(),
        snapshot_id: snapshot_id.to_string(),
        pending: page_blocks(&first)?,
        next: first.next_token().map(str::to_string),
    };
    // Pages are listed as the downloads need them: memory stays bounded and the block tokens
    // (which expire) are fresh when used.
    let blocks = futures::stream::try_unfold(listing, |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Ok(Some((b, st)));
            }
            let Some(token) = st.next.take() else {
                return Ok(None);
            };
            let page = list_page(&st.ebs, &st.snapshot_id, Some(token)).await?;
            st.pending = page_blocks(&page)?;
            st.next = page.next_token().map(str::to_string);
            if st.pending.is_empty() && st.next.is_some() {
                debug!("empty page of blocks with a next token");
            }
        }
    });

    let mut hashes: Vec<Option<BlockHash>> = vec![None; (volume_bytes / BLOCK_SIZE) as usize];
    let mut stats = DownloadStats {
        volume_size_bytes: volume_bytes,
        blocks: 0,
        bytes_read: 0,
        from_cache: false,
    };
    let mut results = std::pin::pin!(blocks
        .map_ok(|(index, token)| fetch_block(
            ebs,
            snapshot_id,
            index,
            token,
            block_size,
            volume_bytes,
            file.clone()
        ))
        .try_buffer_unordered(concurrency.max(1)));
    // The number of blocks with data is known only once every page is listed: bytes and rate.
    let meter = crate::progress::meter();
    meter.bytes(None);
    while let Some((index, len, hash)) = results.try_next().await? {
        meter.inc(len);
        stats.blocks += 1;
        stats.bytes_read += len;
        if block_size == BLOCK_SIZE {
            hashes[index as usize] = hash;
        }
    }

    let f = file.clone();
    tokio::task::spawn_blocking(move || f.sync_all())
        .await
        .context("sync thread")?
        .with_context(|| format!("flushing {}", partial.path.display()))?;
    std::fs::rename(&partial.path, dest)
        .with_context(|| format!("renaming {} to {}", partial.path.display(), dest.display()))?;
    let mut partial = partial;
    partial.done = true;
    let secs = started.elapsed().as_secs_f64();
    info!(
        "downloaded {snapshot_id}: {} blocks, {:.1} MiB in {secs:.1} s ({:.1} MiB/s)",
        stats.blocks,
        stats.bytes_read as f64 / 1048576.0,
        stats.bytes_read as f64 / 1048576.0 / secs.max(1e-9)
    );
    Ok((stats, (block_size == BLOCK_SIZE).then_some(hashes)))
}

/// GetSnapshotBlock, verify, write at its offset (zero blocks are left as holes). Returns the
/// index, the bytes received and the block's hash (`None` for zeros).
async fn fetch_block(
    ebs: &aws_sdk_ebs::Client,
    snapshot_id: &str,
    index: i32,
    token: String,
    block_size: u64,
    volume_bytes: u64,
    file: Arc<File>,
) -> Result<(u64, u64, Option<BlockHash>)> {
    let offset = index as u64 * block_size;
    ensure!(
        offset + block_size <= volume_bytes,
        "{snapshot_id}: block {index} lies past the end of the {volume_bytes}-byte volume"
    );
    let what = format!("reading block {index} of {snapshot_id}");
    let (data, digest) = with_retries(&what, index as u64, || {
        let req = ebs
            .get_snapshot_block()
            .snapshot_id(snapshot_id)
            .block_index(index)
            .block_token(&token);
        let what = &what;
        async move {
            let resp = req.send().await.map_err(|e| classify(e, what))?;
            let checksum = resp.checksum().map(str::to_string);
            let algorithm = resp.checksum_algorithm().map(|a| a.as_str().to_string());
            let data_length = resp.data_length();
            let data = resp
                .block_data
                .collect()
                .await
                .map_err(|e| {
                    Failure::Transient(anyhow::anyhow!("{what}: the transfer broke: {e}"))
                })?
                .into_bytes();
            if data.len() as u64 != block_size
                || data_length.is_some_and(|l| l as usize != data.len())
            {
                return Err(Failure::Transient(anyhow::anyhow!(
                    "{what}: got {} bytes (DataLength {data_length:?}), expected {block_size}",
                    data.len()
                )));
            }
            // A mismatch may be a corrupt transfer: retried, and the error if it persists.
            let digest = verify_block(&data, checksum.as_deref(), algorithm.as_deref())
                .map_err(|e| Failure::Transient(anyhow::anyhow!("{what}: {e}")))?;
            Ok((data, digest))
        }
    })
    .await?;
    let len = data.len() as u64;
    if blocks::is_zero(&data) {
        return Ok((index as u64, len, None));
    }
    tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
        .await
        .context("write thread")?
        .with_context(|| format!("writing block {index} at offset {offset}"))?;
    Ok((index as u64, len, Some(digest)))
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_checksums_are_verified() {
        let data = vec![5u8; 1000];
        let good = blocks::checksum_b64(&Sha256::digest(&data).into());
        assert_eq!(
            verify_block(&data, Some(&good), Some("SHA256")).unwrap(),
            <[u8; 32]>::from(Sha256::digest(&data))
        );
        assert!(verify_block(&data, Some(&good), None).is_ok());
        let mut bad = data.clone();
        bad[10] = 6;
        let e = verify_block(&bad, Some(&good), Some("SHA256"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("checksum mismatch") && e.contains(&good), "{e}");
        assert!(verify_block(&data, None, Some("SHA256"))
            .unwrap_err()
            .to_string()
            .contains("no checksum"));
        assert!(verify_block(&data, Some(&good), Some("MD5"))
            .unwrap_err()
            .to_string()
            .contains("unsupported"));
    }

    #[test]
    fn a_partial_file_is_removed_unless_done() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.partial");
        std::fs::write(&p, b"x").unwrap();
        drop(Partial {
            path: p.clone(),
            done: false,
        });
        assert!(!p.exists());
        std::fs::write(&p, b"x").unwrap();
        drop(Partial {
            path: p.clone(),
            done: true,
        });
        assert!(p.exists());
        assert_eq!(
            with_suffix(Path::new("/a/snap-1.raw"), ".partial"),
            Path::new("/a/snap-1.raw.partial")
        );
    }
}
