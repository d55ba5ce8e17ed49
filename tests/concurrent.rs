//! Bakes at the same time on one host: each gets its own loop device, sees only its own disk in
//! its private /dev and mounts nothing of another bake; two bakes registering the same AMI name
//! at once end with one AMI, and the loser keeps no snapshot.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bakery::aws::ami::{self, BaseAmi, BlockDevice, RegisterSpec, WaitConfig};
use bakery::aws::client::AwsContext;
use bakery::aws::ledger::{Ledger, Resource};

use support::*;

/// What each bake's postinst records from inside its chroot.
const POSTINST: &str = "mkdir -p /opt/para
for d in $(find /dev -type b); do echo \"${d#/dev/}\"; done | sort > /opt/para/devices
awk '{ for (i = 1; i <= NF; i++) if ($i == \"-\") print $(i+2) }' /proc/self/mountinfo | sort -u > /opt/para/sources";

/// Loop devices backed by files under `dir`, as `losetup` shows them now: (device, backing file).
fn loops_under(dir: &str) -> Vec<(String, String)> {
    let out = Command::new("losetup")
        .args(["-a", "-n", "-O", "NAME,BACK-FILE"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(dir))
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(n, f)| (n.trim().to_string(), f.trim().to_string()))
        })
        .collect()
}

#[test]
fn four_concurrent_bakes_get_their_own_devices_and_see_only_them() {
    let t = TestDir::new("concurrent");
    let base = base_image();
    let dir = t.dir.path().display().to_string();

    // Sample losetup while the bakes run: which device each bake's file was attached to.
    let stop = Arc::new(AtomicBool::new(false));
    // (device, backing file) pairs seen, and how many samples were taken.
    type Seen = (BTreeSet<(String, String)>, usize);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sampler = {
        let (stop, seen, dir) = (stop.clone(), seen.clone(), dir.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now = loops_under(&dir);
                let mut s = seen.lock().unwrap();
                s.1 = s.1.max(now.len());
                s.0.extend(now);
                drop(s);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let children: Vec<_> = (0..4)
        .map(|i| {
            let name = format!("para{i}");
            let files = [("/opt/para/id", name.as_str())];
            let deb = build_deb(
                t.dir.path(),
                &Deb {
                    name: &name,
                    files: &files,
                    postinst: Some(POSTINST),
                    ..Default::default()
                },
            );
            t.bakery()
                .args(["bake", "--base"])
                .arg(&base)
                .arg("--package")
                .arg(&deb)
                .arg("--output")
                .arg(t.path(&format!("{name}.raw")))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut device_of = BTreeMap::new();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "bake {i} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(m["package"]["name"], format!("para{i}"));
        let attach = m["timings"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|s| {
                s["step"]
                    .as_str()
                    .and_then(|s| s.strip_prefix("attach /dev/"))
                    .map(str::to_string)
            })
            .expect("no attach step in the manifest");
        device_of.insert(i, attach);
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let devices: BTreeSet<&String> = device_of.values().collect();
    assert_eq!(
        devices.len(),
        4,
        "bakes shared a loop device: {device_of:?}"
    );

    // What losetup showed agrees: each bake's file on its own device, never another's.
    let (pairs, most_at_once) = seen.lock().unwrap().clone();
    for (dev, file) in &pairs {
        let i = (0..4)
            .find(|i| file.contains(&format!(".para{i}.raw.")))
            .unwrap_or_else(|| panic!("unexpected loop {dev} -> {file}"));
        assert_eq!(
            dev.trim_start_matches("/dev/"),
            device_of[&i],
            "bake {i}'s file was on {dev}"
        );
    }
    eprintln!("devices: {device_of:?}; losetup samples saw {} attachments, at most {most_at_once} at once", pairs.len());

    // Inside each image: only its own disk was in /dev, and only it was mounted.
    for i in 0..4 {
        let own = &device_of[&i];
        let img = Mounted::open(&t.path(&format!("para{i}.raw")));
        assert_eq!(
            img.read("/opt/para/id"),
            format!("para{i}"),
            "bake {i} got another bake's files"
        );
        let nodes: Vec<String> = img
            .read("/opt/para/devices")
            .lines()
            .map(str::to_string)
            .collect();
        assert!(
            nodes.contains(own),
            "bake {i}: its own disk {own} is not in its /dev: {nodes:?}"
        );
        for n in &nodes {
            assert!(
                n == own
                    || n.strip_prefix(own.as_str())
                        .is_some_and(|p| p.starts_with('p')),
                "bake {i} ({own}) could see block device {n}"
            );
        }
        let sources = img.read("/opt/para/sources");
        let loops: Vec<&str> = sources.lines().filter(|s| s.contains("loop")).collect();
        assert!(
            !loops.is_empty(),
            "bake {i}: no loop device mounted? {sources}"
        );
        for s in loops {
            let name = s.trim_start_matches("/dev/");
            assert!(
                name == own
                    || name
                        .strip_prefix(own.as_str())
                        .is_some_and(|p| p.starts_with('p')),
                "bake {i} ({own}) mounted {s}"
            );
        }
    }
    assert_no_leaks(t.dir.path());
    assert_no_output(
        t.dir.path(),
        &["para0.raw", "para1.raw", "para2.raw", "para3.raw"],
    );
}

const REGION: &str = "us-east-1";

async fn snapshot(ec2: &aws_sdk_ec2::Client) -> String {
    let v = ec2
        .create_volume()
        .availability_zone("us-east-1a")
        .size(1)
        .send()
        .await
        .unwrap();
    let vid = v.volume_id().unwrap().to_string();
    let s = ec2
        .create_snapshot()
        .volume_id(&vid)
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    ec2.delete_volume().volume_id(&vid).send().await.unwrap();
    s
}

fn base(root_snapshot: &str) -> BaseAmi {
    BaseAmi {
        id: "ami-00000000000000000".into(),
        name: "base".into(),
        region: REGION.into(),
        root_device_name: "/dev/xvda".into(),
        root_snapshot_id: root_snapshot.into(),
        root_volume_size_gib: 1,
        block_device_mappings: vec![BlockDevice {
            device_name: "/dev/xvda".into(),
            snapshot_id: Some(root_snapshot.into()),
            volume_size_gib: Some(1),
            volume_type: Some("gp3".into()),
            delete_on_termination: Some(true),
            encrypted: Some(false),
            iops: None,
            throughput: None,
            virtual_name: None,
            no_device: false,
        }],
        architecture: "x86_64".into(),
        boot_mode: None,
        ena_support: true,
        virtualization_type: "hvm".into(),
        tags: BTreeMap::new(),
        version: None,
        imds_support: None,
        tpm_support: None,
        sriov_net_support: None,
    }
}

/// Two bakes (each with its own uploaded snapshot and ledger) register one name at once, a few
/// rounds: one AMI of that name afterwards, both bakes report it, the loser's snapshot is gone
/// and nothing of it is left in its ledger for a commit to keep.
#[test]
fn two_bakes_registering_one_ami_name_make_one_ami() {
    let _emu = emulator::shared(&[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = AwsContext::load().await;
        let ec2 = ctx.ec2(REGION);
        let wait = WaitConfig {
            timeout: Duration::from_secs(60),
            poll: Duration::from_millis(100),
            max_poll: Duration::from_millis(500),
            log_every: Duration::from_secs(5),
        };
        for round in 0..3 {
            let name = format!("race-app-1.0-1-all-{}-{round}", std::process::id());
            let base_snap = snapshot(&ec2).await;
            let (snap_a, snap_b) = (snapshot(&ec2).await, snapshot(&ec2).await);
            let (la, lb) = (Ledger::new("bk-race-a"), Ledger::new("bk-race-b"));
            for (l, s) in [(&la, &snap_a), (&lb, &snap_b)] {
                l.record(Resource::Snapshot {
                    region: REGION.into(),
                    id: s.clone(),
                });
            }
            let spec = |s: &str| RegisterSpec {
                name: name.clone(),
                description: "race".into(),
                root_snapshot_id: s.to_string(),
                volume_size_gib: 1,
                base: base(&base_snap),
                tags: BTreeMap::from([("appversion".to_string(), "race-app-1.0-1".to_string())]),
            };
            let (sa, sb) = (spec(&snap_a), spec(&snap_b));
            let (ra, rb) = tokio::join!(
                ami::register_with(&ctx, REGION, &sa, &la, &wait),
                ami::register_with(&ctx, REGION, &sb, &lb, &wait)
            );
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            assert_eq!(
                ra.image_id, rb.image_id,
                "round {round}: the bakes report different images"
            );
            assert_eq!(
                ra.reused as u8 + rb.reused as u8,
                1,
                "round {round}: exactly one bake registers: {ra:?} {rb:?}"
            );

            let f = aws_sdk_ec2::types::Filter::builder()
                .name("name")
                .values(&name)
                .build();
            let same = ec2
                .describe_images()
                .owners("self")
                .filters(f)
                .send()
                .await
                .unwrap();
            assert_eq!(
                same.images().len(),
                1,
                "round {round}: {} AMIs named {name}",
                same.images().len()
            );

            let (winner, loser, loser_ledger) = if ra.reused {
                (&snap_b, &snap_a, &la)
            } else {
                (&snap_a, &snap_b, &lb)
            };
            let snaps = ec2
                .describe_snapshots()
                .owner_ids("self")
                .send()
                .await
                .unwrap();
            let ids: BTreeSet<&str> = snaps
                .snapshots()
                .iter()
                .filter_map(|s| s.snapshot_id())
                .collect();
            assert!(
                ids.contains(winner.as_str()),
                "round {round}: the registered image's snapshot is gone"
            );
            assert!(
                !ids.contains(loser.as_str()),
                "round {round}: the losing bake's snapshot {loser} was left behind"
            );
            assert!(
                !loser_ledger
                    .entries()
                    .iter()
                    .any(|r| matches!(r, Resource::Snapshot { id, .. } if id == loser)),
                "round {round}: the deleted snapshot is still in the loser's ledger"
            );
        }
    });
}
