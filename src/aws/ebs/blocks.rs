//! Block hashing for EBS direct uploads: one SHA-256 per 512 KiB block of a disk file, `None`
//! for blocks that are all zeros; which blocks to upload against a parent snapshot; and the
//! `<file>.hashes` sidecar that lets a cached base skip rehashing. Pure (no AWS), unit-tested.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use sha2::{Digest, Sha256};

/// EBS direct APIs always work in 512 KiB blocks (real AWS reports BlockSize 524288).
pub const BLOCK_SIZE: u64 = 524288;

/// Raw SHA-256 digest of one block.
pub type BlockHash = [u8; 32];

/// Blocks hashed per unit of work handed to a hashing thread (32 MiB).
const CHUNK_BLOCKS: u64 = 64;

/// At most this many hashing threads (the disk, not the CPU, is usually the limit beyond it).
const MAX_THREADS: usize = 4;

/// Number of blocks covering `len` bytes (the last one zero-padded).
pub fn block_count(len: u64) -> u64 {
    len.div_ceil(BLOCK_SIZE)
}

/// SHA-256 of one all-zero block: what AWS computes for a zero block that is uploaded.
pub fn zero_block_hash() -> BlockHash {
    static ZERO: OnceLock<BlockHash> = OnceLock::new();
    *ZERO.get_or_init(|| Sha256::digest(vec![0u8; BLOCK_SIZE as usize]).into())
}

/// The SHA-256 of a block as uploaded: a `None` (zero) block hashes as zeros.
pub fn block_sha256(h: Option<BlockHash>) -> BlockHash {
    h.unwrap_or_else(zero_block_hash)
}

/// Base64 of a digest, as the EBS direct `Checksum` fields carry it.
pub fn checksum_b64(h: &BlockHash) -> String {
    base64::engine::general_purpose::STANDARD.encode(h)
}

/// The aggregated checksum CompleteSnapshot takes with ChecksumAggregationMethod LINEAR: the
/// SHA-256 over the concatenated raw SHA-256 digests of the written blocks, in index order.
pub fn linear_checksum(written: &[u64], hashes: &[Option<BlockHash>]) -> String {
    let mut sorted = written.to_vec();
    sorted.sort_unstable();
    let mut h = Sha256::new();
    for i in sorted {
        h.update(block_sha256(hashes.get(i as usize).copied().flatten()));
    }
    checksum_b64(&h.finalize().into())
}

/// Whether a buffer is all zeros (word at a time; the compiler vectorizes it).
pub fn is_zero(buf: &[u8]) -> bool {
    let (head, words, tail) = unsafe {
        // SAFETY: any bit pattern is a valid u64; align_to only reinterprets the aligned middle.
        buf.align_to::<u64>()
    };
    head.iter().all(|&b| b == 0)
        && tail.iter().all(|&b| b == 0)
        && words
            .chunks(8)
            .all(|c| c.iter().fold(0, |a, &w| a | w) == 0)
}

/// The hash of one block's bytes (`None` when all zeros). `data` shorter than a block is the
/// end of the file: it is hashed zero-padded, as it is uploaded.
pub fn hash_block(data: &[u8]) -> Option<BlockHash> {
    if is_zero(data) {
        return None;
    }
    let mut h = Sha256::new();
    h.update(data);
    if (data.len() as u64) < BLOCK_SIZE {
        h.update(vec![0u8; BLOCK_SIZE as usize - data.len()]);
    }
    Some(h.finalize().into())
}

/// Read block `index` of `file` (of length `len`) into `buf`, zero-padding past the end.
pub fn read_block(file: &File, len: u64, index: u64, buf: &mut [u8]) -> Result<()> {
    debug_assert_eq!(buf.len() as u64, BLOCK_SIZE);
    let off = index * BLOCK_SIZE;
    let n = BLOCK_SIZE.min(len.saturating_sub(off)) as usize;
    file.read_exact_at(&mut buf[..n], off)
        .with_context(|| format!("reading block {index} at offset {off}"))?;
    buf[n..].fill(0);
    Ok(())
}

/// Block ranges `[start, end)` that may hold data, from SEEK_DATA/SEEK_HOLE (holes are zero
/// blocks that need no reading). Falls back to the whole file where seeking is not supported.
fn data_block_ranges(file: &File, len: u64) -> Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let whole = vec![(0, block_count(len))];
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on a file descriptor we own; no memory is touched.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENXIO) => break, // no data past pos
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => return Ok(whole),
                _ => return Err(e).context("seeking to the next data extent (SEEK_DATA)"),
            }
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error())
                .context("seeking to the next hole (SEEK_HOLE)");
        }
        let (start, end) = (
            data as u64 / BLOCK_SIZE,
            (hole as u64).min(len).div_ceil(BLOCK_SIZE),
        );
        match ranges.last_mut() {
            Some(last) if last.1 >= start => last.1 = last.1.max(end),
            _ => ranges.push((start, end)),
        }
        pos = hole;
    }
    Ok(ranges)
}

/// SHA-256 of every 512 KiB block of `path`, `None` for all-zero blocks. Streams the file (a few
/// blocks in memory per thread), skips holes without reading them, hashes on a few threads.
pub fn hash_file_blocks(path: &Path) -> Result<Vec<Option<BlockHash>>> {
    let file = File::open(path)
        .with_context(|| format!("opening {} to hash its blocks", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    let mut hashes: Vec<Option<BlockHash>> = vec![None; block_count(len) as usize];
    let ranges = data_block_ranges(&file, len)
        .with_context(|| format!("finding the data extents of {}", path.display()))?;
    let chunks: Vec<(u64, u64)> = ranges
        .iter()
        .flat_map(|&(s, e)| {
            (s..e)
                .step_by(CHUNK_BLOCKS as usize)
                .map(move |c| (c, (c + CHUNK_BLOCKS).min(e)))
        })
        .collect();
    if chunks.is_empty() {
        return Ok(hashes);
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, MAX_THREADS)
        .min(chunks.len());
    let next = AtomicUsize::new(0);
    let results: Vec<Result<Vec<(u64, BlockHash)>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<(u64, BlockHash)>> {
                    let mut buf = vec![0u8; BLOCK_SIZE as usize];
                    let mut found = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(start, end)) = chunks.get(k) else {
                            return Ok(found);
                        };
                        for i in start..end {
                            read_block(&file, len, i, &mut buf)
                                .with_context(|| format!("hashing {}", path.display()))?;
                            if !is_zero(&buf) {
                                found.push((i, Sha256::digest(&buf).into()));
                            }
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| bail!("a hashing thread panicked"))
            })
            .collect()
    });
    for r in results {
        for (i, h) in r? {
            hashes[i as usize] = Some(h);
        }
    }
    Ok(hashes)
}

/// The blocks to upload for a new snapshot, in index order.
///
/// With a parent, a block is uploaded when its hash differs from the parent's (`base`): a block
/// that became zero is uploaded as zeros, a block zero in both is skipped; blocks past the end
/// of `base` count as zero in the parent. With a parent whose hashes are unknown (`base` None)
/// every block is uploaded, zeros included, since nothing is known about what it holds. Without
/// a parent only the non-zero blocks are uploaded (unwritten blocks of a new, unencrypted
/// snapshot read as zeros).
pub fn changed_blocks(
    base: Option<&[Option<BlockHash>]>,
    new: &[Option<BlockHash>],
    parent_exists: bool,
) -> Vec<u64> {
    match (parent_exists, base) {
        (true, Some(base)) => (0..new.len())
            .filter(|&i| base.get(i).copied().flatten() != new[i])
            .map(|i| i as u64)
            .collect(),
        (true, None) => (0..new.len() as u64).collect(),
        (false, _) => (0..new.len())
            .filter(|&i| new[i].is_some())
            .map(|i| i as u64)
            .collect(),
    }
}

/// [`changed_blocks`] for a snapshot that is `encrypted`: without a parent, **every** block is
/// written, zero blocks included. EBS direct leaves unwritten blocks of a new snapshot
/// unwritten, and on an encrypted snapshot those read back as noise, not zeros, once a volume
/// is made from it (awslabs/coldsnap#395). With a parent, a block zero in both is the parent's
/// own (inherited), and may be skipped as usual.
pub fn blocks_to_upload(
    base: Option<&[Option<BlockHash>]>,
    new: &[Option<BlockHash>],
    parent_exists: bool,
    encrypted: bool,
) -> Vec<u64> {
    if encrypted && !parent_exists {
        return (0..new.len() as u64).collect();
    }
    changed_blocks(base, new, parent_exists)
}

// --- the `.hashes` sidecar -----------------------------------------------------------------
//
// Layout (little endian): magic "BKRYHSH1", block size u64, block count u64, snapshot id length
// u16 + UTF-8 bytes, then one byte per block (0 = zero block, 1 = hash follows) each followed by
// its 32-byte hash when 1, and a trailing SHA-256 of everything before it. Written to a
// temporary file and renamed, so a reader sees a whole file or none.

const MAGIC: &[u8; 8] = b"BKRYHSH1";

/// The sidecar of a cached disk file: `<file>.hashes`.
pub fn hashes_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".hashes");
    PathBuf::from(s)
}

/// Block hashes saved next to a disk file, with the snapshot they describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedHashes {
    pub snapshot_id: String,
    pub hashes: Vec<Option<BlockHash>>,
}

pub fn encode_hashes(snapshot_id: &str, hashes: &[Option<BlockHash>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + snapshot_id.len() + hashes.len() * 33);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&BLOCK_SIZE.to_le_bytes());
    out.extend_from_slice(&(hashes.len() as u64).to_le_bytes());
    out.extend_from_slice(&(snapshot_id.len() as u16).to_le_bytes());
    out.extend_from_slice(snapshot_id.as_bytes());
    for h in hashes {
        match h {
            None => out.push(0),
            Some(h) => {
                out.push(1);
                out.extend_from_slice(h);
            }
        }
    }
    let sum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}

pub fn decode_hashes(bytes: &[u8]) -> Result<SavedHashes> {
    ensure!(
        bytes.len() >= MAGIC.len() + 18 + 32,
        "too short ({} bytes)",
        bytes.len()
    );
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    ensure!(
        Sha256::digest(body).as_slice() == sum,
        "checksum mismatch (truncated or corrupt)"
    );
    ensure!(&body[..8] == MAGIC, "not a bakery hashes file (bad magic)");
    let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().unwrap());
    let block_size = u64_at(8);
    ensure!(
        block_size == BLOCK_SIZE,
        "block size {block_size}, expected {BLOCK_SIZE}"
    );
    let count = u64_at(16) as usize;
    let id_len = u16::from_le_bytes(body[24..26].try_into().unwrap()) as usize;
    let mut p = 26 + id_len;
    ensure!(body.len() >= p, "truncated header");
    let snapshot_id =
        String::from_utf8(body[26..p].to_vec()).context("snapshot id is not UTF-8")?;
    let mut hashes = Vec::with_capacity(count);
    for i in 0..count {
        match body.get(p) {
            Some(0) => {
                hashes.push(None);
                p += 1;
            }
            Some(1) if body.len() >= p + 33 => {
                hashes.push(Some(body[p + 1..p + 33].try_into().unwrap()));
                p += 33;
            }
            _ => bail!("bad or missing entry for block {i}"),
        }
    }
    ensure!(p == body.len(), "{} trailing bytes", body.len() - p);
    Ok(SavedHashes {
        snapshot_id,
        hashes,
    })
}

/// Save `hashes` of `file` (from snapshot `snapshot_id`) to `<file>.hashes`, atomically.
pub fn save_hashes(file: &Path, snapshot_id: &str, hashes: &[Option<BlockHash>]) -> Result<()> {
    let path = hashes_path(file);
    let tmp = {
        let mut s = path.as_os_str().to_owned();
        s.push(".tmp");
        PathBuf::from(s)
    };
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&encode_hashes(snapshot_id, hashes))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("writing block hashes to {}", path.display()))
}

/// Load `<file>.hashes`; an error when it is missing, corrupt, or does not match the file's
/// size or `snapshot_id`.
pub fn load_hashes(file: &Path, snapshot_id: &str) -> Result<Vec<Option<BlockHash>>> {
    let path = hashes_path(file);
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading block hashes {}", path.display()))?;
    let saved =
        decode_hashes(&bytes).with_context(|| format!("block hashes {}", path.display()))?;
    ensure!(
        saved.snapshot_id == snapshot_id,
        "block hashes {} are of {}, not {snapshot_id}",
        path.display(),
        saved.snapshot_id
    );
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading the size of {}", file.display()))?
        .len();
    ensure!(
        saved.hashes.len() as u64 == block_count(len),
        "block hashes {} cover {} blocks but {} has {}",
        path.display(),
        saved.hashes.len(),
        file.display(),
        block_count(len)
    );
    Ok(saved.hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: usize = BLOCK_SIZE as usize;

    fn h(byte: u8) -> Option<BlockHash> {
        Some([byte; 32])
    }

    /// A sparse file of `blocks` blocks where each `(index, byte)` block is filled with `byte`.
    fn sparse_file(dir: &Path, name: &str, blocks: u64, data: &[(u64, u8)]) -> PathBuf {
        let p = dir.join(name);
        let f = File::create(&p).unwrap();
        f.set_len(blocks * BLOCK_SIZE).unwrap();
        for &(i, b) in data {
            f.write_all_at(&vec![b; B], i * BLOCK_SIZE).unwrap();
        }
        p
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&vec![0u8; B]));
        for pos in [0, 1, 7, 8, 63, 64, B / 2, B - 1] {
            let mut v = vec![0u8; B];
            v[pos] = 1;
            assert!(!is_zero(&v), "byte {pos} set");
            assert!(
                !is_zero(&v[1..]) || pos == 0,
                "unaligned view, byte {pos} set"
            );
        }
        assert_eq!(hash_block(&vec![0u8; B]), None);
        assert_eq!(
            hash_block(&[1u8; 3]),
            Some(Sha256::digest([&[1u8; 3][..], &vec![0u8; B - 3]].concat()).into())
        );
        assert_eq!(
            zero_block_hash(),
            <[u8; 32]>::from(Sha256::digest(vec![0u8; B]))
        );
    }

    #[test]
    fn holes_and_written_zeros_are_zero_blocks() {
        let d = tempfile::tempdir().unwrap();
        // block 1 written with zeros (allocated, not a hole), block 3 data, 4 data, rest holes
        let p = sparse_file(d.path(), "disk", 8, &[(1, 0), (3, 0xab), (4, 0x01)]);
        let hashes = hash_file_blocks(&p).unwrap();
        assert_eq!(hashes.len(), 8);
        let want3: BlockHash = Sha256::digest(vec![0xabu8; B]).into();
        let want4: BlockHash = Sha256::digest(vec![0x01u8; B]).into();
        assert_eq!(
            hashes,
            vec![None, None, None, Some(want3), Some(want4), None, None, None]
        );
    }

    #[test]
    fn a_partial_last_block_is_hashed_zero_padded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("odd");
        std::fs::write(&p, vec![7u8; B + 100]).unwrap();
        let hashes = hash_file_blocks(&p).unwrap();
        assert_eq!(hashes.len(), 2);
        assert_eq!(hashes[1], hash_block(&[7u8; 100]));
        assert!(hash_file_blocks(&d.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("opening"));
        std::fs::write(d.path().join("empty"), b"").unwrap();
        assert!(hash_file_blocks(&d.path().join("empty"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn hashing_a_sparse_2gib_file_skips_its_holes() {
        let d = tempfile::tempdir().unwrap();
        let blocks = (2u64 << 30) / BLOCK_SIZE;
        let p = sparse_file(
            d.path(),
            "big",
            blocks,
            &[(0, 1), (blocks / 2, 2), (blocks - 1, 3)],
        );
        let hashes = hash_file_blocks(&p).unwrap();
        assert_eq!(hashes.len() as u64, blocks);
        let set: Vec<u64> = (0..blocks)
            .filter(|&i| hashes[i as usize].is_some())
            .collect();
        assert_eq!(set, vec![0, blocks / 2, blocks - 1]);
    }

    #[test]
    fn without_parent_only_non_zero_blocks_are_uploaded() {
        let new = [None, h(1), None, h(2)];
        assert_eq!(changed_blocks(None, &new, false), vec![1, 3]);
        // a base given without a parent is ignored
        assert_eq!(changed_blocks(Some(&[h(1), h(1)]), &new, false), vec![1, 3]);
    }

    #[test]
    fn with_parent_only_differing_blocks_are_uploaded() {
        let base = [h(1), h(2), None, h(4), None];
        // 0 same, 1 modified, 2 zero in both (skipped), 3 zeroed (uploaded as zeros),
        // 4 new data, 5 past the parent's end: zero (skipped), 6 past the end with data
        let new = [h(1), h(9), None, None, h(5), None, h(6)];
        assert_eq!(changed_blocks(Some(&base), &new, true), vec![1, 3, 4, 6]);
        assert_eq!(changed_blocks(Some(&base), &base, true), Vec::<u64>::new());
    }

    #[test]
    fn an_encrypted_snapshot_without_parent_gets_every_block_even_zero_ones() {
        let new = [None, h(1), None, h(2)];
        assert_eq!(blocks_to_upload(None, &new, false, true), vec![0, 1, 2, 3]);
        assert_eq!(blocks_to_upload(None, &new, false, false), vec![1, 3]);
        // With a parent, what is zero in both stays the parent's.
        let base = [None, h(1), None, h(3)];
        assert_eq!(blocks_to_upload(Some(&base), &new, true, true), vec![3]);
    }

    #[test]
    fn with_parent_of_unknown_content_every_block_is_uploaded() {
        assert_eq!(
            changed_blocks(None, &[None, h(1), None], true),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn linear_checksum_is_over_the_raw_digests_in_index_order() {
        let hashes = [h(1), None, h(3)];
        let mut want = Sha256::new();
        want.update([1u8; 32]);
        want.update(zero_block_hash());
        want.update([3u8; 32]);
        let want = checksum_b64(&want.finalize().into());
        assert_eq!(linear_checksum(&[2, 0, 1], &hashes), want);
        assert_eq!(linear_checksum(&[0, 1, 2], &hashes), want);
    }

    #[test]
    fn hashes_file_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = sparse_file(d.path(), "base.raw", 5, &[(2, 9)]);
        let hashes = hash_file_blocks(&p).unwrap();
        save_hashes(&p, "snap-0123", &hashes).unwrap();
        assert_eq!(hashes_path(&p), d.path().join("base.raw.hashes"));
        assert_eq!(load_hashes(&p, "snap-0123").unwrap(), hashes);
        // another snapshot's hashes are refused
        assert!(load_hashes(&p, "snap-9999")
            .unwrap_err()
            .to_string()
            .contains("not snap-9999"));
        // a file whose size changed is refused
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(6 * BLOCK_SIZE)
            .unwrap();
        assert!(load_hashes(&p, "snap-0123")
            .unwrap_err()
            .to_string()
            .contains("cover 5 blocks"));
        // corruption is detected
        let mut bytes = encode_hashes("snap-0123", &hashes);
        bytes[40] ^= 1;
        assert!(decode_hashes(&bytes).is_err());
        assert!(decode_hashes(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_hashes(b"short").is_err());
        let empty = encode_hashes("", &[]);
        assert_eq!(
            decode_hashes(&empty).unwrap(),
            SavedHashes {
                snapshot_id: String::new(),
                hashes: vec![]
            }
        );
    }
}
