//! The layer cache for AMI bakes (issue 18), end to end against the local AWS emulator: a test
//! base AMI, a tiny layer (a `run` and a `file` step), and app bakes in direct mode that make,
//! reuse, renew and refresh a layered base AMI; a failing layer leaves none behind, a failure
//! after it is complete keeps it.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use support::emulator::Emulator;
use support::*;

const LOOKUP_TAG: &str = "bakery:layer-cache-lookup";

/// A layered base AMI as the API shows it.
#[derive(Debug, Clone)]
struct Layered {
    id: String,
    name: String,
    snapshot: String,
    tags: BTreeMap<String, String>,
}

struct Env {
    emu: Emulator,
    t: TestDir,
    rt: tokio::runtime::Runtime,
    ctx: bakery::aws::client::AwsContext,
    base_ami: String,
    base_snap: String,
    layer: PathBuf,
}

impl Env {
    fn app(&self, version: &str) -> PathBuf {
        build_deb(
            self.t.dir.path(),
            &Deb {
                name: "layered-app",
                version,
                files: &[("/opt/layered-app/VERSION", version)],
                ..Default::default()
            },
        )
    }

    fn bake(&self, layer: &Path, app: &Path, extra: &[&str]) -> Run {
        run(&mut self.command(layer, app, extra))
    }

    /// A bake that fails after fault point `point` (`BAKERY_FAIL_AT`): exit 1, and its bake id.
    fn bake_failing_at(&self, point: &str, layer: &Path, app: &Path) -> (Run, String) {
        let r = run(self.command(layer, app, &[]).env("BAKERY_FAIL_AT", point));
        assert_eq!(r.code, 1, "{}", r.stderr);
        let id = bake_id_in(&r.stderr).unwrap();
        (r, id)
    }

    fn command(&self, layer: &Path, app: &Path, extra: &[&str]) -> std::process::Command {
        let mut c = self.t.bakery();
        self.emu.apply(&mut c);
        c.args(["bake", "--base", &self.base_ami, "--layer"])
            .arg(layer)
            .arg("--package")
            .arg(app)
            .args([
                "--output",
                "ami",
                "--region",
                "us-east-1",
                "--mode",
                "direct",
            ])
            .args(extra);
        c
    }

    /// Every layered base AMI in us-east-1 (available; a deregistered one is gone).
    fn layered(&self) -> Vec<Layered> {
        let ec2 = self.ctx.ec2("us-east-1");
        let f = aws_sdk_ec2::types::Filter::builder()
            .name("tag-key")
            .values(LOOKUP_TAG)
            .build();
        let out = self
            .rt
            .block_on(ec2.describe_images().owners("self").filters(f).send())
            .unwrap();
        let mut v: Vec<Layered> = out
            .images()
            .iter()
            .filter(|i| i.state().map(|s| s.as_str()) == Some("available"))
            .map(|i| Layered {
                id: i.image_id().unwrap().to_string(),
                name: i.name().unwrap_or_default().to_string(),
                snapshot: i
                    .block_device_mappings()
                    .iter()
                    .find_map(|b| b.ebs().and_then(|e| e.snapshot_id()))
                    .unwrap()
                    .to_string(),
                tags: tags_of(i.tags()),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn image_tags(&self, id: &str) -> BTreeMap<String, String> {
        let ec2 = self.ctx.ec2("us-east-1");
        let out = self
            .rt
            .block_on(ec2.describe_images().image_ids(id).send())
            .unwrap();
        tags_of(out.images()[0].tags())
    }

    fn snapshot_tags(&self, id: &str) -> Option<BTreeMap<String, String>> {
        let ec2 = self.ctx.ec2("us-east-1");
        let out = self
            .rt
            .block_on(ec2.describe_snapshots().snapshot_ids(id).send())
            .ok()?;
        out.snapshots().first().map(|s| tags_of(s.tags()))
    }
}

fn steps_of(m: &serde_json::Value) -> Vec<String> {
    m["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["step"].as_str().unwrap().to_string())
        .collect()
}

fn uploaded(m: &serde_json::Value, field: &str) -> u64 {
    m[field]["bytes_uploaded"].as_u64().unwrap_or(0)
}

#[test]
fn ami_bakes_make_reuse_and_renew_a_layered_base_ami() {
    let _leaks = LeakCheck::new();
    let emu = Emulator::start();
    for (k, v) in emu.env() {
        // SAFETY (edition 2021: not unsafe): set before any thread of this test reads them.
        std::env::set_var(k, v);
    }
    let t = TestDir::new("layers-aws");
    let rt = rt();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    let (base_ami, base_snap) = publish_test_base(&rt, &ctx, "us-east-1", "bakery-test-base-1");
    let layer = tiny_layer(t.dir.path());
    let env = Env {
        emu,
        t,
        rt,
        ctx,
        base_ami,
        base_snap,
        layer,
    };

    // 1. Cold: the layers are applied on the base, registered as a layered base AMI, and the
    // app is uploaded against it.
    let r1 = env.bake(&env.layer, &env.app("1.0-1"), &[]);
    r1.assert_ok();
    let m1 = r1.json();
    assert_eq!(m1["layers_from_cache"], false);
    let k1 = m1["layer_cache_key"].as_str().unwrap().to_string();
    assert!(steps_of(&m1).iter().any(|s| s.starts_with("tiny: run")));
    let l = env.layered();
    assert_eq!(l.len(), 1, "{l:?}");
    let l1 = l[0].clone();
    assert!(l1.name.starts_with("bakery-layers-tiny-"), "{}", l1.name);
    assert_eq!(l1.tags["bakery:layer-cache-key"], k1);
    assert_eq!(l1.tags[LOOKUP_TAG].len(), 64);
    assert_eq!(l1.tags["bakery:bake-state"], "complete");
    assert_eq!(l1.tags["base_ami_id"], env.base_ami);
    assert!(!l1.tags.contains_key("appversion"), "{:?}", l1.tags);
    let st = env.snapshot_tags(&l1.snapshot).unwrap();
    assert_eq!(st["bakery:bake-state"], "complete");
    assert_eq!(st["bakery:layer-cache-key"], k1);
    // The manifest names the original base; the app's snapshot is a child of the layered one,
    // which is a child of the base's.
    assert_eq!(m1["base"]["image"], env.base_ami.as_str());
    assert_eq!(m1["upload"]["base_snapshot_id"], l1.snapshot.as_str());
    assert_eq!(
        m1["layer_upload"]["base_snapshot_id"],
        env.base_snap.as_str()
    );
    let app1 = m1["amis"][0]["image_id"].as_str().unwrap().to_string();
    assert_eq!(env.image_tags(&app1)["bakery:layer-base-ami"], l1.id);

    // 2. Warm: another app version with the same layer starts from the layered AMI.
    let r2 = env.bake(&env.layer, &env.app("2.0-1"), &[]);
    r2.assert_ok();
    let m2 = r2.json();
    assert_eq!(m2["layers_from_cache"], true, "{m2}");
    assert_eq!(m2["layer_cache_key"], k1.as_str());
    let steps = steps_of(&m2);
    assert!(!steps.iter().any(|s| s.starts_with("tiny:")), "{steps:?}");
    assert!(
        steps.iter().any(|s| s == "download layered base snapshot"),
        "{steps:?}"
    );
    assert!(m2.get("layer_upload").is_none(), "{m2}");
    assert_eq!(m2["upload"]["base_snapshot_id"], l1.snapshot.as_str());
    let cold = uploaded(&m1, "upload") + uploaded(&m1, "layer_upload");
    let warm = uploaded(&m2, "upload");
    eprintln!("uploaded: cold {cold} bytes (layers and app), warm {warm} bytes");
    assert!(warm < cold, "warm {warm} >= cold {cold}");
    let app2 = m2["amis"][0]["image_id"].as_str().unwrap().to_string();
    assert_eq!(env.image_tags(&app2)["bakery:layer-base-ami"], l1.id);
    assert_eq!(env.layered().len(), 1, "a hit made another layered AMI");
    // The app AMI holds the layer and the app: its snapshot read back and mounted.
    let back = env.t.path("readback.raw");
    env.rt
        .block_on(bakery::aws::ebs::download_snapshot(
            &env.ctx.ebs("us-east-1"),
            m2["amis"][0]["snapshot_id"].as_str().unwrap(),
            &back,
            16,
        ))
        .unwrap();
    {
        let img = Mounted::open(&back);
        assert_eq!(img.read("/etc/tiny/motd"), "baked by bakery\n");
        assert_eq!(img.read("/etc/tiny/ran").trim(), "ran");
        assert_eq!(img.read("/opt/layered-app/VERSION"), "2.0-1");
        assert_eq!(img.dpkg_version("layered-app").as_deref(), Some("2.0-1"));
    }
    std::fs::remove_file(&back).unwrap();

    // 3. The layer's file changed: a new key and layered AMI; the old one is deregistered with
    // its snapshot.
    write(&env.layer.join("motd"), "second\n");
    let r3 = env.bake(&env.layer, &env.app("3.0-1"), &[]);
    r3.assert_ok();
    let m3 = r3.json();
    assert_eq!(m3["layers_from_cache"], false);
    let k3 = m3["layer_cache_key"].as_str().unwrap().to_string();
    assert_ne!(k3, k1);
    let l = env.layered();
    assert_eq!(l.len(), 1, "{l:?}");
    let l3 = l[0].clone();
    assert_ne!(l3.id, l1.id);
    assert_eq!(l3.tags["bakery:layer-cache-key"], k3);
    assert!(
        env.snapshot_tags(&l1.snapshot).is_none(),
        "the superseded layered snapshot {} is still there",
        l1.snapshot
    );

    // 4. --refresh-layers: applied again, a new layered AMI with the same key replaces it.
    let r4 = env.bake(&env.layer, &env.app("4.0-1"), &["--refresh-layers"]);
    r4.assert_ok();
    let m4 = r4.json();
    assert_eq!(m4["layers_from_cache"], false);
    assert_eq!(m4["layer_cache_key"], k3.as_str());
    let l = env.layered();
    assert_eq!(l.len(), 1, "{l:?}");
    let l4 = l[0].clone();
    assert_ne!(l4.id, l3.id);
    assert!(env.snapshot_tags(&l3.snapshot).is_none());

    // 5. --no-layer-cache: the layers applied in the bake, no layered AMI used or made.
    let r5 = env.bake(&env.layer, &env.app("5.0-1"), &["--no-layer-cache"]);
    r5.assert_ok();
    let m5 = r5.json();
    assert_eq!(m5["layers_from_cache"], false);
    assert!(m5.get("layer_cache_key").is_none(), "{m5}");
    assert_eq!(m5["upload"]["base_snapshot_id"], env.base_snap.as_str());
    let app5 = m5["amis"][0]["image_id"].as_str().unwrap().to_string();
    assert!(!env.image_tags(&app5).contains_key("bakery:layer-base-ami"));
    assert_eq!(
        env.layered().iter().map(|l| &l.id).collect::<Vec<_>>(),
        [&l4.id]
    );

    // 6. A failing layer step: exit 1, no layered AMI or snapshot of that bake left.
    let broken = env.t.path("broken-layer");
    std::fs::create_dir_all(&broken).unwrap();
    write(
        &broken.join("layer.yaml"),
        "name: broken\nsteps:\n  - run: \"echo failing; exit 3\"\n",
    );
    let r6 = env.bake(&broken, &env.app("6.0-1"), &[]);
    assert_eq!(r6.code, 1, "{}", r6.stderr);
    let id6 = bake_id_in(&r6.stderr).unwrap();
    let left = env.rt.block_on(tagged(&env.ctx, &["us-east-1"], &id6));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(env.layered().len(), 1);

    // 7. A failure after the layered AMI is registered, before it is complete: it goes with the
    // rest of the bake (and the entry it would have superseded stays).
    write(&env.layer.join("motd"), "unkept\n");
    let (_, id) = env.bake_failing_at("layer cache: register image", &env.layer, &env.app("6.1-1"));
    let left = env.rt.block_on(tagged(&env.ctx, &["us-east-1"], &id));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(
        env.layered().iter().map(|l| &l.id).collect::<Vec<_>>(),
        [&l4.id]
    );

    // 8. A failure after the layered AMI is complete (the app's upload) rolls back the app's
    // resources and keeps the entry; the next bake of that layer is a hit.
    write(&env.layer.join("motd"), "third\n");
    let (_, id7) = env.bake_failing_at("upload snapshot", &env.layer, &env.app("7.0-1"));
    let pending = env
        .rt
        .block_on(tagged_pending(&env.ctx, &["us-east-1"], &id7));
    assert!(pending.is_empty(), "left pending: {pending:?}");
    let l = env.layered();
    assert_eq!(l.len(), 1, "{l:?}");
    let l7 = l[0].clone();
    assert_ne!(l7.id, l4.id);
    assert_eq!(l7.tags["bakery:bake-id"], id7);
    assert_eq!(l7.tags["bakery:bake-state"], "complete");
    let r8 = env.bake(&env.layer, &env.app("8.0-1"), &[]);
    r8.assert_ok();
    let m8 = r8.json();
    assert_eq!(m8["layers_from_cache"], true, "{m8}");
    assert_eq!(m8["upload"]["base_snapshot_id"], l7.snapshot.as_str());

    // 9. `images prune` lists the layered base AMIs as their own kind and keeps the newest entry.
    let mut c = env.t.bakery();
    env.emu.apply(&mut c);
    let p = run(c.args([
        "images",
        "prune",
        "--app",
        "layered-app",
        "--keep",
        "1",
        "--region",
        "us-east-1",
        "--dry-run",
        "--json",
    ]));
    p.assert_ok();
    let report = p.json();
    let lc = report["regions"][0]["layer_cache"].as_array().unwrap();
    assert_eq!(lc.len(), 1, "{report}");
    assert_eq!(lc[0]["image_id"], l7.id.as_str());
    assert_eq!(lc[0]["action"], "keep");
    assert!(lc[0]["reasons"][0]
        .as_str()
        .unwrap()
        .starts_with("newest layer cache entry"));
    let apps = report["regions"][0]["images"].as_array().unwrap();
    assert!(apps.iter().all(|d| d["image_id"] != l7.id.as_str()));

    assert_no_leaks(env.t.dir.path());
}
