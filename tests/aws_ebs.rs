//! EBS direct engine against the local AWS emulator (tests/support/aws-emulator: moto with the
//! patches that make BlockSize 524288, ParentSnapshotId inherit blocks, ListSnapshotBlocks and
//! GetSnapshotBlock behave like AWS). Nothing here can reach real AWS: the endpoint, the
//! credentials and the config files are all overridden before any client is built.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bakery::aws::client::AwsContext;
use bakery::aws::ebs::{self, blocks, BLOCK_SIZE};
use bakery::aws::ledger::{Ledger, Resource};
use sha2::{Digest, Sha256};

const REGION: &str = "us-east-1";
const B: usize = BLOCK_SIZE as usize;

// --- the emulator -------------------------------------------------------------------------

mod support;

use support::emulator::Emulator;

/// The emulator of this test process (see `support::emulator::shared`).
fn emulator() -> Arc<Emulator> {
    support::emulator::shared(&[])
}

struct Env {
    _emu: Arc<Emulator>,
    ctx: AwsContext,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let emu = emulator();
        let ctx = AwsContext::load().await;
        let dir = tempfile::tempdir().unwrap();
        Env {
            _emu: emu,
            ctx,
            dir,
        }
    }
    fn ebs(&self) -> aws_sdk_ebs::Client {
        self.ctx.ebs(REGION)
    }
    fn ec2(&self) -> aws_sdk_ec2::Client {
        self.ctx.ec2(REGION)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

// --- fixtures ---------------------------------------------------------------------------------

/// A block's worth of bytes that differs for every (index, generation).
fn pattern(index: u64, generation: u8) -> Vec<u8> {
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(generation) << 56) ^ 1;
    let mut v = Vec::with_capacity(B);
    while v.len() < B {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// A sparse file of `size` bytes with `blocks` written (generation 0).
fn sparse_disk(path: &Path, size: u64, blocks: &[u64]) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for &i in blocks {
        f.write_all_at(&pattern(i, 0), i * BLOCK_SIZE).unwrap();
    }
}

/// `got` (a downloaded volume, whole GiB) holds exactly `want` and zeros after it.
fn assert_same_disk(want: &Path, got: &Path) {
    let wlen = std::fs::metadata(want).unwrap().len();
    let glen = std::fs::metadata(got).unwrap().len();
    assert!(
        glen >= wlen && glen.is_multiple_of(1 << 30),
        "downloaded size {glen} for a {wlen}-byte disk"
    );
    let (mut a, mut b) = (File::open(want).unwrap(), File::open(got).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    while off < wlen {
        let n = ((wlen - off) as usize).min(x.len());
        a.read_exact(&mut x[..n]).unwrap();
        b.read_exact(&mut y[..n]).unwrap();
        assert!(
            x[..n] == y[..n],
            "the downloaded disk differs in the MiB at offset {off}"
        );
        off += n as u64;
    }
    let tail = blocks::hash_file_blocks(got).unwrap();
    let first_tail_block = (wlen / BLOCK_SIZE) as usize;
    assert!(
        tail[first_tail_block..].iter().all(|h| h.is_none()),
        "data past the end of the original disk"
    );
}

fn tags() -> BTreeMap<String, String> {
    BTreeMap::from([("Name".to_string(), "bakery-ebs-test".to_string())])
}

// --- tests --------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parentless_upload_sends_only_non_zero_blocks_and_reads_back_identical() {
    let env = Env::new().await;
    let (ebs, ec2) = (env.ebs(), env.ec2());
    let disk = env.path("disk.raw");
    let written = [0u64, 1, 2, 40, 77, 127];
    sparse_disk(&disk, 64 << 20, &written);
    // an allocated all-zero block is a zero block too: not uploaded
    File::options()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all_at(&vec![0u8; B], 10 * BLOCK_SIZE)
        .unwrap();

    let ledger = Ledger::new("bake-ebs-parentless");
    let up = ebs::upload_snapshot(
        &ebs,
        &disk,
        None,
        "bakery test: parentless",
        &tags(),
        &ledger,
        REGION,
        32,
    )
    .await
    .unwrap();
    assert_eq!(
        (up.blocks_total, up.blocks_changed, up.bytes_uploaded),
        (128, written.len() as u64, written.len() as u64 * BLOCK_SIZE)
    );
    assert_eq!(up.volume_size_gib, 1);
    assert_eq!(
        ledger.entries(),
        vec![Resource::Snapshot {
            region: REGION.into(),
            id: up.snapshot_id.clone()
        }]
    );
    ebs::wait_snapshot_completed(&ec2, &up.snapshot_id, Duration::from_secs(60))
        .await
        .unwrap();

    let listed = ebs
        .list_snapshot_blocks()
        .snapshot_id(&up.snapshot_id)
        .send()
        .await
        .unwrap();
    let indices: Vec<i32> = listed
        .blocks()
        .iter()
        .filter_map(|b| b.block_index())
        .collect();
    assert_eq!(
        indices,
        written.iter().map(|&i| i as i32).collect::<Vec<_>>()
    );

    let back = env.path("back.raw");
    let st = ebs::download_snapshot(&ebs, &up.snapshot_id, &back, 16)
        .await
        .unwrap();
    assert_eq!(
        (
            st.volume_size_bytes,
            st.blocks,
            st.bytes_read,
            st.from_cache
        ),
        (
            1 << 30,
            written.len() as u64,
            written.len() as u64 * BLOCK_SIZE,
            false
        )
    );
    assert!(!env.path("back.raw.partial").exists());
    assert_same_disk(&disk, &back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_upload_sends_exactly_the_changed_blocks_and_inherits_the_rest() {
    let env = Env::new().await;
    let (ebs, ec2) = (env.ebs(), env.ec2());
    let base = env.path("base.raw");
    let base_blocks: Vec<u64> = (0..16).chain([50, 51, 52, 100, 127]).collect();
    sparse_disk(&base, 64 << 20, &base_blocks);
    let ledger = Ledger::new("bake-ebs-child");
    let parent = ebs::upload_snapshot(
        &ebs,
        &base,
        None,
        "bakery test: parent",
        &tags(),
        &ledger,
        REGION,
        32,
    )
    .await
    .unwrap();
    ebs::wait_snapshot_completed(&ec2, &parent.snapshot_id, Duration::from_secs(60))
        .await
        .unwrap();
    let base_hashes = blocks::hash_file_blocks(&base).unwrap();

    // the bake: rewrite 3 blocks, zero one that had data, write one that was a hole, and write
    // the same bytes over a block (unchanged: not uploaded)
    let child = env.path("child.raw");
    std::fs::copy(&base, &child).unwrap();
    let f = File::options().write(true).open(&child).unwrap();
    for i in [3u64, 51, 127] {
        f.write_all_at(&pattern(i, 1), i * BLOCK_SIZE).unwrap();
    }
    f.write_all_at(&vec![0u8; B], 100 * BLOCK_SIZE).unwrap();
    f.write_all_at(&pattern(90, 1), 90 * BLOCK_SIZE).unwrap();
    f.write_all_at(&pattern(5, 0), 5 * BLOCK_SIZE).unwrap();
    drop(f);
    let modified = 5;

    let up = ebs::upload_snapshot(
        &ebs,
        &child,
        Some((&parent.snapshot_id, &base_hashes)),
        "bakery test: child",
        &tags(),
        &ledger,
        REGION,
        32,
    )
    .await
    .unwrap();
    assert_eq!(up.blocks_changed, modified);
    assert_eq!(up.bytes_uploaded, modified * BLOCK_SIZE);
    assert_eq!(
        ledger.entries(),
        vec![
            Resource::Snapshot {
                region: REGION.into(),
                id: parent.snapshot_id.clone()
            },
            Resource::Snapshot {
                region: REGION.into(),
                id: up.snapshot_id.clone()
            },
        ]
    );
    ebs::wait_snapshot_completed(&ec2, &up.snapshot_id, Duration::from_secs(60))
        .await
        .unwrap();

    let back = env.path("child-back.raw");
    ebs::download_snapshot(&ebs, &up.snapshot_id, &back, 16)
        .await
        .unwrap();
    assert_same_disk(&child, &back);
    // the parent is untouched
    let pback = env.path("parent-back.raw");
    ebs::download_snapshot(&ebs, &parent.snapshot_id, &pback, 16)
        .await
        .unwrap();
    assert_same_disk(&base, &pback);

    // the snapshot carries the bake id tag (DescribeSnapshots)
    let d = ec2
        .describe_snapshots()
        .snapshot_ids(&up.snapshot_id)
        .send()
        .await
        .unwrap();
    let snap_tags: BTreeMap<String, String> = d.snapshots()[0]
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        snap_tags.get(bakery::aws::BAKE_ID_TAG).map(String::as_str),
        Some("bake-ebs-child"),
        "{snap_tags:?}"
    );
    assert_eq!(
        snap_tags.get("Name").map(String::as_str),
        Some("bakery-ebs-test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_download_reuses_the_cache_and_its_hashes() {
    let env = Env::new().await;
    let ebs = env.ebs();
    let disk = env.path("disk.raw");
    sparse_disk(&disk, 32 << 20, &[0, 7, 8, 63]);
    let ledger = Ledger::new("bake-ebs-cache");
    let up = ebs::upload_snapshot(
        &ebs,
        &disk,
        None,
        "bakery test: cache",
        &tags(),
        &ledger,
        REGION,
        8,
    )
    .await
    .unwrap();

    let cache = env.path("cache");
    let (p1, h1, s1) = ebs::cached_download(&ebs, &up.snapshot_id, &cache, 8)
        .await
        .unwrap();
    assert_eq!(p1, cache.join(format!("{}.raw", up.snapshot_id)));
    assert!(!s1.from_cache && s1.bytes_read == 4 * BLOCK_SIZE);
    assert_eq!(
        h1,
        blocks::hash_file_blocks(&p1).unwrap(),
        "hashes from the download match the file"
    );
    assert_eq!(blocks::load_hashes(&p1, &up.snapshot_id).unwrap(), h1);

    let (p2, h2, s2) = ebs::cached_download(&ebs, &up.snapshot_id, &cache, 8)
        .await
        .unwrap();
    assert_eq!((p2.as_path(), &h2), (p1.as_path(), &h1));
    assert!(s2.from_cache && s2.bytes_read == 0 && s2.blocks == 4);

    // a lost hashes file is rebuilt from the cached disk, still without downloading
    std::fs::remove_file(blocks::hashes_path(&p1)).unwrap();
    let (_, h3, s3) = ebs::cached_download(&ebs, &up.snapshot_id, &cache, 8)
        .await
        .unwrap();
    assert!(s3.from_cache && h3 == h1);
    assert_same_disk(&disk, &p1);

    // an unknown snapshot is a clear error and leaves nothing behind
    let e = ebs::cached_download(&ebs, "snap-00000000000000000", &cache, 8)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("snap-00000000000000000"), "{e:#}");
    assert!(
        !cache.join("snap-00000000000000000.raw").exists()
            && !cache.join("snap-00000000000000000.raw.partial").exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wait_names_the_snapshot() {
    let env = Env::new().await;
    let e =
        ebs::wait_snapshot_completed(&env.ec2(), "snap-0123456789abcdef0", Duration::from_secs(2))
            .await
            .unwrap_err();
    assert!(e.to_string().contains("snap-0123456789abcdef0"), "{e:#}");
}

/// A fake EBS endpoint with one snapshot, `snap-corrupt`, whose block 0 always arrives with a
/// checksum that does not match its data (the emulator returns the checksum that was uploaded,
/// which the upload had to get right, so it cannot serve a corrupt block). Counts block GETs.
fn corrupt_ebs_endpoint() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut out = sock.try_clone().unwrap();
                let mut reader = BufReader::new(sock);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let (head, body): (String, Vec<u8>) = if path
                        .starts_with("/snapshots/snap-corrupt/blocks/0")
                    {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let wrong = blocks::checksum_b64(&Sha256::digest(b"something else").into());
                        (
                            format!("Content-Type: application/octet-stream\r\nx-amz-Data-Length: {B}\r\nx-amz-Checksum: {wrong}\r\nx-amz-Checksum-Algorithm: SHA256\r\n"),
                            vec![0x42; B],
                        )
                    } else if path.starts_with("/snapshots/snap-corrupt/blocks") {
                        let json = format!(
                            r#"{{"Blocks":[{{"BlockIndex":0,"BlockToken":"tok0"}}],"VolumeSize":1,"BlockSize":{B}}}"#
                        );
                        (
                            "Content-Type: application/json\r\n".to_string(),
                            json.into_bytes(),
                        )
                    } else {
                        (
                            "Content-Type: application/json\r\n".to_string(),
                            br#"{"message":"no such thing"}"#.to_vec(),
                        )
                    };
                    let status = if body.starts_with(b"{\"message") {
                        "404 Not Found"
                    } else {
                        "200 OK"
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\n{head}Content-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if out
                        .write_all(resp.as_bytes())
                        .and_then(|_| out.write_all(&body))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, gets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_whose_checksum_does_not_match_fails_the_download() {
    let (url, gets) = corrupt_ebs_endpoint();
    let conf = aws_sdk_ebs::Config::builder()
        .behavior_version(aws_sdk_ebs::config::BehaviorVersion::latest())
        .http_client(bakery::aws::https::client())
        .region(aws_sdk_ebs::config::Region::new(REGION))
        .endpoint_url(&url)
        .credentials_provider(aws_sdk_ebs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    let ebs = aws_sdk_ebs::Client::from_conf(conf);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("corrupt.raw");
    let e = ebs::download_snapshot(&ebs, "snap-corrupt", &dest, 4)
        .await
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("block 0 of snap-corrupt") && msg.contains("checksum mismatch"),
        "{msg}"
    );
    // retried (a corrupt transfer may be transient), then given up
    assert_eq!(gets.load(Ordering::SeqCst), ebs::retry::ATTEMPTS as usize);
    assert!(
        !dest.exists() && !dir.path().join("corrupt.raw.partial").exists(),
        "a failed download left a file"
    );
}

/// Throughput against the emulator: 256 MiB of changed data up and down. Run with
/// `cargo test --release --test aws_ebs -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn throughput_256mib() {
    let env = Env::new().await;
    let ebs = env.ebs();
    let disk = env.path("big.raw");
    let n = 512u64; // 256 MiB
    let all: Vec<u64> = (0..n).collect();
    sparse_disk(&disk, n * BLOCK_SIZE, &all);
    let t = Instant::now();
    blocks::hash_file_blocks(&disk).unwrap();
    let hash_s = t.elapsed().as_secs_f64();
    eprintln!(
        "hash:     256 MiB in {hash_s:.2} s = {:.0} MiB/s",
        256.0 / hash_s
    );
    let ledger = Ledger::new("bake-ebs-bench");
    let t = Instant::now();
    let up = ebs::upload_snapshot(
        &ebs,
        &disk,
        None,
        "bakery bench",
        &tags(),
        &ledger,
        REGION,
        64,
    )
    .await
    .unwrap();
    let up_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let st = ebs::download_snapshot(&ebs, &up.snapshot_id, &env.path("big-back.raw"), 64)
        .await
        .unwrap();
    let down_s = t.elapsed().as_secs_f64();
    assert_eq!(st.bytes_read, n * BLOCK_SIZE);
    eprintln!(
        "upload:   {:.0} MiB in {up_s:.1} s = {:.1} MiB/s",
        256.0,
        256.0 / up_s
    );
    eprintln!(
        "download: {:.0} MiB in {down_s:.1} s = {:.1} MiB/s",
        256.0,
        256.0 / down_s
    );
}
