//! Fault injection at every step: a reference bake lists the fault points it passes
//! (`BAKERY_FAULT_LOG`), then one bake per point fails right after it (`BAKERY_FAIL_AT`). Each must
//! exit 1 with one error line naming the point, and leave nothing: no loop device, partition
//! mapping, mount, process, held lock, work file, temporary or half-written output, and (AWS) no
//! volume, snapshot or AMI tagged with its bake id in any region.

mod support;

use std::path::{Path, PathBuf};

use support::emulator::Emulator;
use support::*;

/// One failed bake's verdict: the problems found (empty: it failed cleanly).
fn check_failed_bake(point: &str, r: &Run, dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    if r.code != 1 {
        problems.push(format!("exit code {} (want 1)", r.code));
    }
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("bakery: error:"))
        .collect();
    if errors.len() != 1 {
        problems.push(format!("{} error lines: {errors:?}", errors.len()));
    }
    let want = format!("injected failure after `{point}`");
    if !r.error_line().contains(&want) {
        problems.push(format!(
            "error line does not name the point: {}",
            r.error_line()
        ));
    }
    problems.extend(leaks_of(dir));
    problems
}

fn local_bake(
    t: &TestDir,
    base: &Path,
    layer: &Path,
    app: &Path,
    out: &Path,
    log: &Path,
    fail_at: Option<&str>,
) -> Run {
    let mut c = t.bakery();
    c.env("BAKERY_FAULT_LOG", log)
        .env("TMPDIR", t.path("tmp"))
        .env_remove("BAKERY_FAIL_AT")
        .env_remove("BAKERY_FAULT_ACTION");
    if let Some(p) = fail_at {
        c.env("BAKERY_FAIL_AT", p);
    }
    c.args(["bake", "--base"])
        .arg(base)
        .arg("--layer")
        .arg(layer)
        .arg("--package")
        .arg(app)
        .arg("--output")
        .arg(out)
        .arg("--manifest")
        .arg(out.with_extension("json"));
    run(&mut c)
}

#[test]
fn every_local_fault_point_fails_cleanly() {
    let t = TestDir::new("faults-local");
    std::fs::create_dir_all(t.path("tmp")).unwrap();
    std::fs::create_dir_all(t.path("out")).unwrap();
    let base = base_image();
    let layer = tiny_layer(t.dir.path());
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "faulty",
            files: &[("/opt/faulty/VERSION", "1.0-1")],
            postinst: Some("echo ok > /opt/faulty/postinst-ran"),
            ..Default::default()
        },
    );
    let out = t.path("out/app.qcow2");
    let manifest = out.with_extension("json");

    // The reference bake: succeeds, and lists the points.
    let log = t.path("points-reference");
    let r = local_bake(&t, &base, &layer, &app, &out, &log, None);
    r.assert_ok();
    let points = fault_points(&log);
    eprintln!("local fault points ({}): {points:?}", points.len());
    for must in [
        "copy base",
        "attach loop device",
        "map partitions",
        "mount /",
        "mount /proc",
        "mount /sys",
        "mount /dev",
        "mount /dev/pts",
        "mount /tmp",
        "populate /dev",
        "prepare chroot",
        "seal",
        "unmount",
        "unmap partitions",
        "detach loop device",
        "write qcow2",
        "sync app.qcow2",
        "sync app.json",
    ] {
        assert!(
            points.iter().any(|p| p == must),
            "no fault point `{must}` in {points:?}"
        );
    }
    assert!(
        points.iter().any(|p| p.starts_with("tiny: run")),
        "no point for the layer's run step: {points:?}"
    );
    assert!(
        points.iter().any(|p| p.starts_with("install faulty")),
        "no point for the package install: {points:?}"
    );
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "the reference bake leaked: {:?}",
        leaks_of(t.dir.path())
    );
    let output_done = points.iter().position(|p| p == "sync app.qcow2").unwrap();
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&manifest).unwrap();

    // Two workers, each with its own work and output dirs (bakes are mostly waiting on I/O).
    let workers = 2;
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (points, base, layer, app) = (&points, &base, &layer, &app);
                s.spawn(move || {
                    let wt = TestDir::new(&format!("faults-local-w{w}"));
                    std::fs::create_dir_all(wt.path("tmp")).unwrap();
                    std::fs::create_dir_all(wt.path("out")).unwrap();
                    let out = wt.path("out/app.qcow2");
                    let manifest = out.with_extension("json");
                    let mut failures = Vec::new();
                    for (i, point) in points.iter().enumerate().filter(|(i, _)| i % workers == w) {
                        let log = wt.path(&format!("points-{i}"));
                        // Cold, like the reference bake: every point it listed is passed.
                        clear_layer_cache(&wt.work());
                        let r = local_bake(&wt, base, layer, app, &out, &log, Some(point));
                        let mut problems = check_failed_bake(point, &r, wt.dir.path());
                        if manifest.exists() {
                            problems.push("a manifest was written".into());
                        }
                        if out.exists() {
                            // Only a fault after the output was committed (while writing the
                            // manifest) may leave it, and then it is the whole image.
                            if i <= output_done {
                                problems.push("the output exists".into());
                            }
                            std::fs::remove_file(&out).unwrap();
                        }
                        problems.extend(went_on_past(point, &fault_points(&log)));
                        eprintln!(
                            "fault after `{point}`: {}",
                            if problems.is_empty() {
                                "clean".to_string()
                            } else {
                                format!("{problems:?}")
                            }
                        );
                        if !problems.is_empty() {
                            failures.push(format!("{point}: {problems:?}\n{}", r.stderr));
                        }
                    }
                    assert_no_leaks(wt.dir.path());
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    eprintln!(
        "faults: {} local steps x 1 mode (fail after), {} with problems",
        points.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_no_leaks(t.dir.path());
}

// --- AWS (direct mode, on the emulator) -------------------------------------------------------

fn aws_bake(t: &TestDir, emu: &Emulator, app: &Path, log: &Path, fail_at: Option<&str>) -> Run {
    let mut c = t.bakery();
    emu.apply(&mut c);
    c.env("BAKERY_FAULT_LOG", log)
        .env("TMPDIR", t.path("tmp"))
        .env("BAKERY_AMI_WAIT_TIMEOUT", "60")
        .env_remove("BAKERY_FAIL_AT")
        .env_remove("BAKERY_FAULT_ACTION");
    if let Some(p) = fail_at {
        c.env("BAKERY_FAIL_AT", p);
    }
    c.args(["bake", "--base-name", "faults-base-*", "--package"])
        .arg(app)
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
        ]);
    run(&mut c)
}

#[test]
fn every_aws_fault_point_fails_cleanly() {
    let emu = Emulator::start();
    for (k, v) in emu.env() {
        std::env::set_var(k, v);
    }
    let t = TestDir::new("faults-aws");
    std::fs::create_dir_all(t.path("tmp")).unwrap();
    let rt = rt();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    let regions = ["us-east-1", "us-west-2"];
    let started = std::time::Instant::now();
    publish_test_base(&rt, &ctx, "us-east-1", "faults-base-1");
    eprintln!("test base published in {:?}", started.elapsed());

    // The reference bake of a local file lists the local points (tested above); the AWS bake's
    // own points are the rest. Each version is new, so no bake reuses an earlier AMI.
    let app = |v: u32| -> PathBuf {
        build_deb(
            t.dir.path(),
            &Deb {
                name: "cloudy",
                version: &format!("1.{v}-1"),
                ..Default::default()
            },
        )
    };
    let local = {
        let layer_free = t.path("local-points");
        let app = app(0);
        let out = t.path("ref.raw");
        let mut c = t.bakery();
        c.env("BAKERY_FAULT_LOG", &layer_free)
            .env("TMPDIR", t.path("tmp"))
            .args(["bake", "--base"])
            .arg(base_image())
            .arg("--package")
            .arg(&app)
            .arg("--output")
            .arg(&out);
        run(&mut c).assert_ok();
        std::fs::remove_file(&out).unwrap();
        fault_points(&layer_free)
    };
    let log = t.path("aws-points-reference");
    let r = aws_bake(&t, &emu, &app(0), &log, None);
    r.assert_ok();
    let all = fault_points(&log);
    // API calls that change something (reads cannot leave anything behind).
    let points: Vec<String> = all
        .iter()
        .filter(|p| !local.contains(p))
        .filter(|p| {
            !["api:Describe", "api:List", "api:Get"]
                .iter()
                .any(|r| p.starts_with(r))
        })
        .cloned()
        .collect();
    eprintln!(
        "AWS fault points ({} of {} passed): {points:?}",
        points.len(),
        all.len()
    );
    for must in [
        "download base snapshot",
        "start snapshot in us-east-1",
        "upload snapshot",
        "snapshot completed",
        "register image in us-east-1",
        "tag image in us-east-1",
        "share image in us-east-1",
        "copy image to us-west-2",
        "image available in us-west-2",
        "tag image in us-west-2",
        "share image in us-west-2",
        "copy to regions",
        "mark complete",
        "api:StartSnapshot",
        "api:PutSnapshotBlock",
        "api:CompleteSnapshot",
        "api:RegisterImage",
        "api:CopyImage",
        "api:CreateTags",
    ] {
        assert!(
            points.iter().any(|p| p == must),
            "no fault point `{must}` in {points:?}"
        );
    }
    // The product of the reference bake is complete: gc must never take it.
    let reference_id = bake_id_in(&r.stderr).unwrap();
    assert!(
        !rt.block_on(tagged_pending(&ctx, &regions, &reference_id))
            .iter()
            .any(|_| true),
        "the reference bake's products are still pending"
    );

    let mut failures = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let log = t.path(&format!("aws-points-{i}"));
        let r = aws_bake(&t, &emu, &app(i as u32 + 1), &log, Some(point));
        let mut problems = if point.starts_with("api:") {
            // The call itself fails, as if AWS refused it: one line naming the operation.
            let mut p = Vec::new();
            if r.code != 1 {
                p.push(format!("exit code {} (want 1)", r.code));
            }
            if !r.error_line().contains(&format!("`{point}`")) {
                p.push(format!(
                    "error line does not name the call: {}",
                    r.error_line()
                ));
            }
            p.extend(leaks_of(t.dir.path()));
            p
        } else {
            let mut p = check_failed_bake(point, &r, t.dir.path());
            p.extend(went_on_past(point, &fault_points(&log)));
            p
        };
        match bake_id_in(&r.stderr) {
            Some(id) => {
                let left = rt.block_on(tagged(&ctx, &regions, &id));
                if !left.is_empty() {
                    problems.push(format!("AWS resources left: {left:?}"));
                }
            }
            None => problems.push("no bake id in the log".into()),
        }
        eprintln!(
            "fault at `{point}`: {}",
            if problems.is_empty() {
                "clean".to_string()
            } else {
                format!("{problems:?}")
            }
        );
        if !problems.is_empty() {
            failures.push(format!("{point}: {problems:?}\n{}", r.stderr));
        }
    }
    eprintln!(
        "faults: {} AWS steps x 1 mode (fail after / call fails), {} with problems",
        points.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_no_leaks(t.dir.path());
}

/// Points passed after `point` other than the release of the disk and AWS calls of the cleanup.
fn went_on_past(point: &str, passed: &[String]) -> Option<String> {
    let Some(i) = passed.iter().position(|p| p == point) else {
        return Some(format!("`{point}` was never reached: {passed:?}"));
    };
    let after: Vec<&String> = passed[i + 1..]
        .iter()
        .filter(|p| {
            !["unmap partitions", "detach loop device"].contains(&p.as_str())
                && !p.starts_with("api:")
        })
        .collect();
    (!after.is_empty()).then(|| format!("the bake went on past `{point}`: {after:?}"))
}
