//! The one bake pipeline end to end (issue 12): a base published with `bakery base build
//! --output ami` goes through the same AMI sink as an AMI bake (same fault points, same
//! Ctrl-C handling), both manifests are read by `bakery deploy --manifest` through the one
//! `Manifest` type, and bases whose root filesystem is btrfs or xfs bake a package.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bakery::manifest::{Kind, Manifest};
use support::emulator::Emulator;
use support::*;

/// `bakery base build` of the default base spec into AMIs, against `emu`.
fn base_build_ami(t: &TestDir, emu: &Emulator) -> Command {
    let mut c = t.bakery();
    emu.apply(&mut c);
    c.env("TMPDIR", t.path("tmp"))
        .env_remove("BAKERY_FAIL_AT")
        .env_remove("BAKERY_FAULT_ACTION")
        .env_remove("BAKERY_FAULT_LOG")
        .args([
            "base",
            "build",
            "base-images/debian-bookworm.yaml",
            "--output",
            "ami",
            "--region",
            "us-east-1",
            "--copy-to",
            "us-west-2",
            "--share-with",
            "123456789012",
        ]);
    c
}

/// The AWS points a run passed once its disk was released: the sink's (reads left out, they
/// change nothing; so is the manifest's own `sync FILE`, named after each run's file).
fn sink_points(log: &Path) -> Vec<String> {
    let all = fault_points(log);
    let released = all
        .iter()
        .rposition(|p| p == "detach loop device")
        .unwrap_or_else(|| panic!("no `detach loop device` point in {all:?}"));
    all[released + 1..]
        .iter()
        .filter(|p| {
            !["api:Describe", "api:List", "api:Get", "sync "]
                .iter()
                .any(|r| p.starts_with(r))
        })
        .cloned()
        .collect()
}

#[test]
fn a_base_publish_and_an_ami_bake_pass_the_same_aws_fault_points_and_deploy_reads_both_manifests() {
    let emu = Emulator::start();
    for (k, v) in emu.env() {
        std::env::set_var(k, v);
    }
    let t = TestDir::new("pipeline-publish");
    std::fs::create_dir_all(t.path("tmp")).unwrap();
    let regions = ["us-east-1", "us-west-2"];

    // 1. A base from scratch, published as AMIs.
    let base_log = t.path("base-points");
    let base_manifest = t.path("base.json");
    let r = run(base_build_ami(&t, &emu)
        .env("BAKERY_FAULT_LOG", &base_log)
        .arg("--manifest")
        .arg(&base_manifest));
    r.assert_ok();

    // 2. An application baked on it, into AMIs in the same regions.
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "pipeapp",
            version: "1.0-1",
            files: &[("/opt/pipeapp/VERSION", "1.0-1")],
            ..Default::default()
        },
    );
    let bake_log = t.path("bake-points");
    let bake_manifest = t.path("bake.json");
    let mut c = t.bakery();
    emu.apply(&mut c);
    c.env("TMPDIR", t.path("tmp"))
        .env("BAKERY_FAULT_LOG", &bake_log)
        .args(["bake", "--base-name", "bakery-base-bookworm-*", "--package"])
        .arg(&app)
        .args([
            "--output",
            "ami",
            "--region",
            "us-east-1",
            "--copy-to",
            "us-west-2",
            "--mode",
            "direct",
            "--share-with",
            "123456789012",
            "--manifest",
        ])
        .arg(&bake_manifest);
    let r = run(&mut c);
    r.assert_ok();

    // The same AMI sink: the same fault points after the disk is released.
    let (base_points, bake_points) = (sink_points(&base_log), sink_points(&bake_log));
    eprintln!("base publish: {base_points:?}\nAMI bake: {bake_points:?}");
    for must in [
        "start snapshot in us-east-1",
        "upload snapshot",
        "snapshot completed",
        "register image in us-east-1",
        "register image",
        "share image in us-east-1",
        "copy image to us-west-2",
        "copy to regions",
        "mark complete",
        "api:PutSnapshotBlock",
        "api:RegisterImage",
        "api:CopyImage",
    ] {
        assert!(
            base_points.iter().any(|p| p == must),
            "the base publish has no fault point `{must}`: {base_points:?}"
        );
    }
    let as_set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<String>>();
    assert_eq!(
        as_set(&base_points),
        as_set(&bake_points),
        "a base publish and an AMI bake pass different AWS fault points"
    );

    // 3. Both manifests read back through the one type...
    let base_m = Manifest::load(&base_manifest).unwrap();
    let bake_m = Manifest::load(&bake_manifest).unwrap();
    assert_eq!(base_m.kind, Kind::Base);
    assert_eq!(bake_m.kind, Kind::Bake);
    assert_eq!(bake_m.base.image, base_m.amis[0].image_id);
    for m in [&base_m, &bake_m] {
        let got: Vec<&str> = m.amis.iter().map(|a| a.region.as_str()).collect();
        assert_eq!(got, regions, "{}", m.name);
        assert!(
            !m.tags.keys().any(|k| k.starts_with("bakery:")),
            "{:?}",
            m.tags
        );
    }
    // ... and by `bakery deploy --manifest`: a swap points the group at each manifest's AMI.
    let rt = rt();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    let ec2 = ctx.ec2("us-east-1");
    let asg = ctx.autoscaling("us-east-1");
    let lt_id = rt.block_on(async {
        let lt = ec2
            .create_launch_template()
            .launch_template_name("pipeline-app")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(&base_m.amis[0].image_id)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let id = lt
            .launch_template()
            .and_then(|l| l.launch_template_id())
            .unwrap()
            .to_string();
        asg.create_auto_scaling_group()
            .auto_scaling_group_name("pipeline-app")
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(&id)
                    .version("$Default")
                    .build(),
            )
            .min_size(0)
            .max_size(0)
            .desired_capacity(0)
            .availability_zones("us-east-1a")
            .send()
            .await
            .unwrap();
        id
    });
    let default_image = || {
        rt.block_on(async {
            let v = ec2
                .describe_launch_template_versions()
                .launch_template_id(&lt_id)
                .versions("$Default")
                .send()
                .await
                .unwrap();
            v.launch_template_versions()[0]
                .launch_template_data()
                .and_then(|d| d.image_id())
                .unwrap()
                .to_string()
        })
    };
    for m in [&bake_manifest, &base_manifest] {
        let mut c = t.bakery();
        emu.apply(&mut c);
        c.env("BAKERY_DEPLOY_POLL_MS", "50")
            .args(["deploy", "--manifest"])
            .arg(m)
            .args([
                "--asg",
                "pipeline-app",
                "--strategy",
                "swap",
                "--region",
                "us-east-1",
            ]);
        let r = run(&mut c);
        r.assert_ok();
        let want = Manifest::load(m).unwrap().amis[0].image_id.clone();
        assert_eq!(default_image(), want, "deploy of {}", m.display());
    }
    assert_no_leaks(t.dir.path());
}

#[test]
fn ctrl_c_during_the_upload_of_a_base_build_to_ami_exits_130_and_leaves_nothing() {
    // Slow uploads down so the Ctrl-C lands in the middle of one.
    let emu = Emulator::start_on(
        support::emulator::free_port(),
        &["--delay-ms-for", "PutSnapshotBlock=1000"],
    );
    for (k, v) in emu.env() {
        std::env::set_var(k, v);
    }
    let t = TestDir::new("pipeline-ctrl-c");
    std::fs::create_dir_all(t.path("tmp")).unwrap();
    let mut child = base_build_ami(&t, &emu)
        .env("RUST_LOG", "bakery=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut uploading = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                // Logged once the changed blocks are counted, right before the first PutSnapshotBlock
                // (under CI the progress display prints finished steps only).
                let hit = l.contains("blocks changed");
                lines.push(l);
                if hit {
                    uploading = true;
                    break;
                }
            }
            Err(_) => break,
        }
    }
    assert!(
        uploading,
        "the base build never started its upload:\n{}",
        lines.join("\n")
    );
    // Some blocks are in flight (each PutSnapshotBlock takes a second).
    std::thread::sleep(Duration::from_secs(3));
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let took = signalled.elapsed();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let stderr = lines.join("\n");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        took < Duration::from_secs(60),
        "the Ctrl-C waited for the upload: {took:?}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("bakery: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("interrupted"), "{}", errors[0]);

    // Nothing left: no snapshot or AMI of this bake in any region, no loop device, mount,
    // work file or scratch directory.
    let id = bake_id_in(&stderr).expect("no bake id logged");
    let rt = rt();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    let left = rt.block_on(tagged(&ctx, &["us-east-1", "us-west-2"], &id));
    assert!(left.is_empty(), "AWS resources left: {left:?}");
    let all_snapshots = rt.block_on(async {
        ctx.ec2("us-east-1")
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap()
            .snapshots()
            .len()
    });
    assert_eq!(all_snapshots, 0, "a snapshot was left in us-east-1");
    let leaks = leaks_of(t.dir.path());
    assert!(leaks.is_empty(), "{leaks:?}");
    let work: Vec<PathBuf> = std::fs::read_dir(t.work().join("work"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(work.is_empty(), "work files left: {work:?}");
    let scratch: Vec<PathBuf> = std::fs::read_dir(t.path("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(scratch.is_empty(), "scratch left: {scratch:?}");
    assert_no_leaks(t.dir.path());
}

// --- btrfs and xfs roots ---------------------------------------------------------------------

/// Commands run in reverse order when dropped: the test's own mounts and loop devices go even
/// when an assertion fails.
#[derive(Default)]
struct Undo(Vec<Vec<String>>);

impl Undo {
    fn push(&mut self, cmd: &[&str]) {
        self.0.push(cmd.iter().map(|s| s.to_string()).collect());
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        for c in self.0.drain(..).rev() {
            let _ = Command::new(&c[0]).args(&c[1..]).status();
        }
    }
}

fn sh(cmd: &mut Command) -> String {
    let r = run(cmd);
    assert_eq!(r.code, 0, "{cmd:?}: {}", r.stderr);
    r.stdout.trim().to_string()
}

/// A loop device over `len` bytes of `file` from `offset`.
fn loop_at(file: &Path, offset: u64, len: u64, ro: bool, undo: &mut Undo) -> String {
    let mut c = Command::new("losetup");
    c.args(["--find", "--show"]);
    if ro {
        c.arg("--read-only");
    }
    c.args([
        "--offset",
        &offset.to_string(),
        "--sizelimit",
        &len.to_string(),
    ])
    .arg(file);
    let dev = sh(&mut c);
    undo.push(&["losetup", "-d", &dev]);
    dev
}

/// The test base with its root tree copied onto a `fs` (btrfs, xfs) root partition: same GPT
/// layout (BIOS boot + Linux root), fstab naming the new filesystem's UUID.
fn base_with_root(fs: &str, dir: &Path) -> PathBuf {
    let src = base_image();
    let out = dir.join(format!("base-{fs}.raw"));
    let len = std::fs::metadata(&src).unwrap().len();
    std::fs::File::create(&out).unwrap().set_len(len).unwrap();
    sh(Command::new("sgdisk")
        .args([
            "--zap-all",
            "-n",
            "1:2048:+1M",
            "-t",
            "1:EF02",
            "-n",
            "2:0:0",
            "-t",
            "2:8304",
            "-c",
            "2:root",
        ])
        .arg(&out));
    let new_root = bakery::disk::layout::read_layout(&out).unwrap().partitions[1].clone();
    let old = bakery::disk::layout::read_layout(&src).unwrap();
    let old_root = old.root().unwrap().clone();
    let mut undo = Undo::default();
    let dev = loop_at(&out, new_root.start, new_root.size, false, &mut undo);
    match fs {
        "btrfs" => sh(Command::new("mkfs.btrfs").args(["-q", "-f", "-L", "root", &dev])),
        "xfs" => sh(Command::new("mkfs.xfs").args(["-q", "-f", "-L", "root", &dev])),
        other => panic!("no mkfs for {other}"),
    };
    let uuid = sh(Command::new("blkid").args(["-s", "UUID", "-o", "value", &dev]));
    let old_dev = loop_at(&src, old_root.start, old_root.size, true, &mut undo);
    let (new_mnt, old_mnt) = (
        dir.join(format!("mnt-{fs}")),
        dir.join(format!("mnt-{fs}-src")),
    );
    for (d, m, o) in [(&dev, &new_mnt, "rw"), (&old_dev, &old_mnt, "ro,noload")] {
        std::fs::create_dir_all(m).unwrap();
        sh(Command::new("mount").args(["-o", o, d]).arg(m));
        undo.push(&["umount", &m.display().to_string()]);
    }
    sh(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", old_mnt.display()))
        .arg(&new_mnt));
    std::fs::write(
        new_mnt.join("etc/fstab"),
        format!("UUID={uuid} / {fs} defaults 0 0\n"),
    )
    .unwrap();
    drop(undo);
    out
}

#[test]
fn btrfs_and_xfs_root_bases_bake_a_deb_into_the_image() {
    let t = TestDir::new("pipeline-fs");
    std::fs::create_dir_all(t.path("tmp")).unwrap();
    for fs in ["btrfs", "xfs"] {
        let base = base_with_root(fs, t.dir.path());
        let layout = bakery::disk::layout::read_layout(&base).unwrap();
        assert_eq!(
            layout
                .root()
                .and_then(|p| p.fs.as_ref())
                .map(|f| f.kind.as_str()),
            Some(fs),
            "{layout:?}"
        );
        let app = build_deb(
            t.dir.path(),
            &Deb {
                name: &format!("on-{fs}"),
                version: "1.0-1",
                files: &[("/opt/app/ROOTFS", fs)],
                postinst: Some("echo ran > /opt/app/postinst-ran"),
                ..Default::default()
            },
        );
        let out = t.path(&format!("app-{fs}.raw"));
        let mut c = t.bakery();
        c.env("TMPDIR", t.path("tmp"))
            .args(["bake", "--base"])
            .arg(&base)
            .arg("--package")
            .arg(&app)
            .arg("--output")
            .arg(&out);
        let r = run(&mut c);
        r.assert_ok();
        assert_eq!(r.json()["package"]["installed_version"], "1.0-1");
        let m = Mounted::open(&out);
        assert_eq!(
            m.dpkg_version(&format!("on-{fs}")).as_deref(),
            Some("1.0-1")
        );
        assert_eq!(m.read("/opt/app/ROOTFS"), fs);
        assert_eq!(m.read("/opt/app/postinst-ran"), "ran\n");
        drop(m);
        std::fs::remove_file(&out).unwrap();
        std::fs::remove_file(&base).unwrap();
    }
    assert_no_leaks(t.dir.path());
}
