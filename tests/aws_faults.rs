//! Transient AWS faults a bake or deploy must survive, shown by a fault proxy in front of the
//! emulator (moto has no "not visible yet" window and never stalls): PutSnapshotBlock answering
//! ResourceNotFoundException for a while after StartSnapshot (awslabs/coldsnap#43), one
//! PutSnapshotBlock that is never answered (coldsnap#437), one that never is; and every call of a
//! red/black deploy throttled once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bakery::aws::client::{AwsContext, Timeouts};
use bakery::aws::ebs::{self, BLOCK_SIZE};
use bakery::aws::ledger::Ledger;

mod support;

use support::proxy::{Action, Proxy};

const REGION: &str = "us-east-1";

/// A sparse disk of 64 MiB with `blocks` written (distinct content each).
fn disk(dir: &std::path::Path, blocks: &[u64]) -> std::path::PathBuf {
    let p = dir.join("disk.raw");
    let f = File::create(&p).unwrap();
    f.set_len(64 << 20).unwrap();
    for &b in blocks {
        let data: Vec<u8> = (0..BLOCK_SIZE)
            .map(|i| (i as u8) ^ (b as u8).wrapping_mul(31) ^ 0x5a)
            .collect();
        f.write_all_at(&data, b * BLOCK_SIZE).unwrap();
    }
    p
}

fn tags() -> BTreeMap<String, String> {
    BTreeMap::from([("Name".to_string(), "bakery-fault-test".to_string())])
}

/// Short timeouts, so a stalled call fails in about a second.
fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(1),
        attempt: Duration::from_secs(1),
        operation: Duration::from_secs(30),
    }
}

/// Blocks the snapshot holds (read from the emulator directly, not through the proxy).
async fn blocks_of(ctx: &AwsContext, snap: &str) -> BTreeSet<i32> {
    ebs::wait_snapshot_completed(&ctx.ec2(REGION), snap, Duration::from_secs(30))
        .await
        .unwrap();
    let out = ctx
        .ebs(REGION)
        .list_snapshot_blocks()
        .snapshot_id(snap)
        .send()
        .await
        .unwrap();
    out.blocks()
        .iter()
        .filter_map(|b| b.block_index())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_snapshot_block_rides_out_a_snapshot_not_visible_yet() {
    let emu = support::emulator::shared(&[]);
    let ctx = AwsContext::load().await;
    // Like EBS right after StartSnapshot: PutSnapshotBlock on the new snapshot is a 404
    // ResourceNotFoundException for 3 s after its StartSnapshot was answered.
    let started: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let (s1, s2, r1) = (started.clone(), started.clone(), refused.clone());
    let p = Proxy::start(
        &emu.endpoint(),
        move |r| {
            if r.action != "PutSnapshotBlock" {
                return Action::Forward;
            }
            let snap = r.path.split('/').nth(2).unwrap_or_default().to_string();
            let young = s1
                .lock()
                .unwrap()
                .get(&snap)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(3));
            if !young {
                return Action::Forward;
            }
            r1.fetch_add(1, Ordering::SeqCst);
            Action::Respond(
                404,
                vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("x-amzn-ErrorType".into(), "ResourceNotFoundException".into()),
                ],
                format!(r#"{{"Message":"The snapshot '{snap}' does not exist.","Reason":"SNAPSHOT_NOT_FOUND"}}"#)
                    .into_bytes(),
            )
        },
        move |r, status, body| {
            if r.action == "StartSnapshot" && status == 201 {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                let id = v["SnapshotId"].as_str().unwrap().to_string();
                s2.lock().unwrap().insert(id, Instant::now());
            }
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let written = [0u64, 3, 9, 100];
    let file = disk(dir.path(), &written);
    let via = ctx.with_endpoint(&p.endpoint());
    let ledger = Ledger::new("bake-fault-notfound");
    let t = Instant::now();
    let up = ebs::upload_snapshot(
        &via.ebs(REGION),
        &file,
        None,
        "bakery test: not visible yet",
        &tags(),
        &ledger,
        REGION,
        4,
    )
    .await
    .expect("the upload must ride out ResourceNotFoundException right after StartSnapshot");
    assert!(
        refused.load(Ordering::SeqCst) >= 4,
        "the proxy never refused"
    );
    assert!(t.elapsed() >= Duration::from_secs(3));
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(
        blocks_of(&ctx, &up.snapshot_id).await,
        written.iter().map(|&b| b as i32).collect()
    );
    ledger.rollback(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_snapshot_block_that_is_never_answered_is_retried() {
    let emu = support::emulator::shared(&[]);
    let ctx = AwsContext::load().await;
    // The first PutSnapshotBlock is read and never answered (coldsnap#437).
    let first = Arc::new(AtomicUsize::new(0));
    let f = first.clone();
    let p = Proxy::start(
        &emu.endpoint(),
        move |r| {
            if r.action == "PutSnapshotBlock" && f.fetch_add(1, Ordering::SeqCst) == 0 {
                Action::Stall
            } else {
                Action::Forward
            }
        },
        |_, _, _| {},
    );
    let dir = tempfile::tempdir().unwrap();
    let written = [1u64, 2, 50];
    let file = disk(dir.path(), &written);
    let via = ctx.with_endpoint(&p.endpoint()).with_timeouts(quick());
    let ledger = Ledger::new("bake-fault-stall");
    let t = Instant::now();
    let up = tokio::time::timeout(
        Duration::from_secs(60),
        ebs::upload_snapshot(
            &via.ebs(REGION),
            &file,
            None,
            "bakery test: one stalled block",
            &tags(),
            &ledger,
            REGION,
            2,
        ),
    )
    .await
    .expect("the upload hung on a PutSnapshotBlock that was never answered")
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(
        p.requests("PutSnapshotBlock").len(),
        written.len() + 1,
        "the stalled block is sent again"
    );
    assert_eq!(
        blocks_of(&ctx, &up.snapshot_id).await,
        written.iter().map(|&b| b as i32).collect()
    );
    ledger.rollback(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_snapshot_block_that_is_never_answered_at_all_fails_naming_it() {
    let emu = support::emulator::shared(&[]);
    let ctx = AwsContext::load().await;
    let p = Proxy::start(
        &emu.endpoint(),
        |r| {
            if r.action == "PutSnapshotBlock" {
                Action::Stall
            } else {
                Action::Forward
            }
        },
        |_, _, _| {},
    );
    let dir = tempfile::tempdir().unwrap();
    let file = disk(dir.path(), &[7]);
    let via = ctx.with_endpoint(&p.endpoint()).with_timeouts(Timeouts {
        operation: Duration::from_secs(4),
        ..quick()
    });
    let ledger = Ledger::new("bake-fault-stall-forever");
    let t = Instant::now();
    let e = tokio::time::timeout(
        Duration::from_secs(60),
        ebs::upload_snapshot(
            &via.ebs(REGION),
            &file,
            None,
            "bakery test: stalled for good",
            &tags(),
            &ledger,
            REGION,
            1,
        ),
    )
    .await
    .expect("the upload hung")
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(msg.contains("PutSnapshotBlock"), "{msg}");
    assert!(msg.contains("timeout"), "{msg}");
    assert!(
        p.requests("PutSnapshotBlock").len() >= 2,
        "a timed-out attempt is retried"
    );
    let failures = ledger.rollback(&ctx).await;
    assert!(failures.is_empty(), "{failures:?}");
}
