//! End-to-end local bakes: the built binary against real loop devices, mounts, chroots, apt and
//! rpm. Run as root.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Wait (up to 2 minutes) until the bake's log shows `needle`: the bake is at that point.
fn wait_for_log(t: &TestDir, needle: &str) {
    let log_dir = t.work().join("logs");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let seen = std::fs::read_dir(&log_dir)
            .ok()
            .and_then(|mut rd| rd.next())
            .and_then(|e| e.ok())
            .is_some_and(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .contains(needle)
            });
        if seen {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the bake never logged `{needle}`");
}

/// `mdir` of a directory on the FAT filesystem at byte `offset` of `image` (mtools: no mount).
fn esp_ls(image: &Path, offset: u64, dir: &str) -> String {
    let r = run(Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-b")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg(dir));
    assert_eq!(r.code, 0, "mdir {dir}: {}", r.stderr);
    r.stdout
}

fn esp_read_bytes(image: &Path, offset: u64, file: &str) -> Vec<u8> {
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "mtype {file}");
    out.stdout
}

fn esp_read(image: &Path, offset: u64, file: &str) -> String {
    String::from_utf8_lossy(&esp_read_bytes(image, offset, file)).into_owned()
}

fn base_mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn base_image_is_a_bootable_cloud_disk() {
    let base = base_image();
    let layout = bakery::disk::layout::read_layout(&base).unwrap();
    assert_eq!(layout.table, bakery::disk::layout::TableKind::Gpt);
    assert_eq!(
        layout.partitions[0].type_id,
        bakery::disk::layout::GPT_BIOS_BOOT
    );
    let root = layout.root().unwrap();
    let fs = root.fs.as_ref().unwrap();
    assert_eq!(fs.kind, "ext4");
    assert_eq!(fs.label.as_deref(), Some("root"));
    let uuid = fs.uuid.clone().unwrap();

    // GRUB's core image sits in the BIOS boot partition, its boot code in the MBR.
    let bytes = std::fs::read(&base).map(|_| ()).ok();
    let _ = bytes;
    let mut f = std::fs::File::open(&base).unwrap();
    use std::io::{Read, Seek, SeekFrom};
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr).unwrap();
    assert!(
        mbr[..440].iter().any(|&b| b != 0),
        "no boot code in the MBR"
    );
    let mut core = [0u8; 512];
    f.seek(SeekFrom::Start(layout.partitions[0].start)).unwrap();
    f.read_exact(&mut core).unwrap();
    assert!(
        core.iter().any(|&b| b != 0),
        "BIOS boot partition is empty: grub-install did not embed core.img"
    );

    // The EFI System Partition: FAT32, made without mounting, holding Debian's signed shim at
    // the removable-media path and under EFI/debian, with a grub.cfg that finds the root.
    let esp = &layout.partitions[1];
    assert_eq!(esp.type_id, bakery::disk::layout::GPT_ESP);
    assert_eq!(esp.fs.as_ref().unwrap().kind, "vfat");
    let esp_id = esp.fs.as_ref().unwrap().uuid.clone().unwrap();
    let boot = esp_ls(&base, esp.start, "::/EFI/BOOT");
    for f in ["BOOTX64.EFI", "grubx64.efi", "grub.cfg"] {
        assert!(boot.contains(f), "EFI/BOOT lacks {f}:\n{boot}");
    }
    let debian = esp_ls(&base, esp.start, "::/EFI/debian");
    for f in ["shimx64.efi", "grubx64.efi", "grub.cfg"] {
        assert!(debian.contains(f), "EFI/debian lacks {f}:\n{debian}");
    }
    let stub = esp_read(&base, esp.start, "::/EFI/debian/grub.cfg");
    assert!(
        stub.contains(&format!("search.fs_uuid {uuid} root")),
        "{stub}"
    );

    let m = Mounted::open(&base);
    assert!(m
        .read("/etc/fstab")
        .contains(&format!("UUID={uuid} / ext4")));
    assert!(m
        .read("/etc/fstab")
        .contains(&format!("UUID={esp_id} /boot/efi vfat")));
    assert_eq!(
        std::fs::read(m.path("/usr/lib/shim/shimx64.efi.signed")).unwrap(),
        esp_read_bytes(&base, esp.start, "::/EFI/BOOT/BOOTX64.EFI"),
        "the ESP's shim is the image's shim-signed"
    );
    let grub = m.read("/boot/grub/grub.cfg");
    assert!(
        grub.contains(&format!("root=UUID={uuid}")),
        "grub.cfg does not boot by UUID"
    );
    assert!(grub.contains("console=ttyS0,115200n8"));
    assert!(grub.contains("serial --speed=115200"));
    assert!(m.path("/boot/grub/i386-pc/normal.mod").exists());
    assert!(std::fs::read_dir(m.path("/boot"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-")));
    assert!(std::fs::read_dir(m.path("/boot"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("initrd.img-")));
    assert!(m.dpkg_version("linux-image-cloud-amd64").is_some());
    assert!(m.dpkg_version("cloud-init").is_some());
    assert!(m.dpkg_version("systemd-sysv").is_some());
    assert!(std::fs::symlink_metadata(
        m.path("/etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
    )
    .is_ok());
    assert!(m
        .read("/etc/systemd/network/90-bakery-dhcp.network")
        .contains("DHCP=yes"));
    assert_eq!(
        m.read("/etc/machine-id"),
        "",
        "machine-id must be empty so each instance gets its own"
    );
    assert!(!std::fs::read_dir(m.path("/etc/ssh"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("ssh_host_")));
    let info: serde_json::Value = serde_json::from_str(&m.read("/etc/bakery/base.json")).unwrap();
    assert_eq!(info["name"], "bakery-base-bookworm");
    assert!(!m.path("/usr/sbin/policy-rc.d").exists());
    assert!(!m.path("/etc/resolv.conf.bakery-orig").exists());
}

#[test]
fn deb_app_with_jvm_tomcat_layer() {
    let t = TestDir::new("deb");
    let base = base_image();
    let before = base_mtime(&base);
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "hello-web",
            version: "1.2-3",
            arch: "all",
            depends: "hello-lib (>= 2.0), tomcat10, jq",
            files: &[(
                "/var/lib/tomcat10/webapps/hello/index.html",
                "<h1>hello from bakery</h1>",
            )],
            postinst: Some(
                "mkdir -p /var/lib/hello-web\nid tomcat > /var/lib/hello-web/postinst-ran",
            ),
            control: "",
        },
    );
    let lib = build_deb(
        t.dir.path(),
        &Deb {
            name: "hello-lib",
            version: "2.0-1",
            files: &[("/usr/share/hello-lib/VERSION", "2.0")],
            ..Default::default()
        },
    );
    let out = t.path("app.qcow2");
    let manifest_file = t.path("manifest.json");
    let started = Instant::now();
    let r = run(t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&app)
        .arg("--package")
        .arg(&lib)
        .args(["--layer", "jvm-tomcat", "--tag", "team=web", "--output"])
        .arg(&out)
        .arg("--manifest")
        .arg(&manifest_file));
    r.assert_ok();
    eprintln!(
        "bake with jvm-tomcat took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_no_leaks(t.dir.path());
    assert_no_output(t.dir.path(), &["app.qcow2"]);
    assert_eq!(base_mtime(&base), before, "the base image was modified");

    // The manifest: read from the packages themselves, not their file names.
    let m = r.json();
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_file).unwrap()).unwrap();
    assert_eq!(m, on_disk);
    assert_eq!(m["package"]["name"], "hello-web");
    assert_eq!(m["package"]["version"], "1.2");
    assert_eq!(m["package"]["release"], "3");
    assert_eq!(m["package"]["arch"], "all");
    assert_eq!(m["package"]["installed_version"], "1.2-3");
    assert_eq!(m["packages"].as_array().unwrap().len(), 2);
    let name = m["name"].as_str().unwrap();
    assert!(
        name.starts_with("hello-web-1.2-3-all-") && name.len() == "hello-web-1.2-3-all-".len() + 12,
        "{name}"
    );
    assert_eq!(m["layers"], serde_json::json!(["jvm-tomcat"]));
    assert_eq!(m["output"]["format"], "qcow2");
    assert_eq!(m["output"]["size_bytes"], 2u64 << 30);
    assert_eq!(m["base"]["name"], "bakery-base-bookworm");
    let tags = &m["tags"];
    assert_eq!(tags["appversion"], "hello-web-1.2-3");
    assert_eq!(tags["base_ami_name"], "bakery-base-bookworm");
    assert!(tags["base_ami_version"].as_str().unwrap().len() >= 12);
    assert!(tags["creator"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(tags["creation_time"].as_str().unwrap().starts_with("20"));
    assert_eq!(tags["team"], "web");
    let steps: Vec<&str> = m["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["step"].as_str().unwrap())
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("jvm-tomcat: apt install")),
        "{steps:?}"
    );
    assert!(
        steps.iter().any(|s| s.starts_with("install hello-web")),
        "{steps:?}"
    );

    // The image: packages, their dependency from the image's sources, scriptlet effects.
    let img = Mounted::open(&out);
    assert_eq!(img.dpkg_version("hello-web").as_deref(), Some("1.2-3"));
    assert_eq!(img.dpkg_version("hello-lib").as_deref(), Some("2.0-1"));
    assert!(
        img.dpkg_version("jq").is_some(),
        "dependency from the image's own sources not installed"
    );
    assert!(img
        .read("/var/lib/tomcat10/webapps/hello/index.html")
        .contains("hello from bakery"));
    assert!(img
        .read("/var/lib/hello-web/postinst-ran")
        .contains("tomcat"));
    // The JVM/Tomcat layer: installed, enabled at boot, logs rotated.
    assert!(img.dpkg_version("tomcat10").is_some());
    // The Debian release's default JRE (OpenJDK 17 on bookworm, 21 on trixie).
    assert!(img.dpkg_version("default-jre-headless").is_some());
    assert!(img.dpkg_version("openjdk-17-jre-headless").is_some());
    assert!(
        std::fs::symlink_metadata(
            img.path("/etc/systemd/system/multi-user.target.wants/tomcat10.service")
        )
        .is_ok(),
        "tomcat10 not enabled"
    );
    assert!(img
        .read("/etc/logrotate.d/bakery-tomcat10")
        .contains("rotate 14"));
    assert!(img
        .read("/etc/default/tomcat10")
        .contains("MaxRAMPercentage"));
    // Nothing of the bake stays in the image.
    assert!(
        !img.path("/usr/sbin/policy-rc.d").exists(),
        "policy-rc.d left in the image"
    );
    assert!(!img.path("/etc/resolv.conf.bakery-orig").exists());
    assert!(!img.path("/tmp/bakery-packages").exists());
    let base_img = Mounted::open(&base);
    assert_eq!(
        std::fs::read_link(img.path("/etc/resolv.conf")).ok(),
        std::fs::read_link(base_img.path("/etc/resolv.conf")).ok(),
        "resolv.conf differs from the base's"
    );
    assert!(std::fs::read_dir(img.path("/var/cache/apt/archives"))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".deb")));
}

#[test]
fn rpm_packages_on_a_debian_base_run_their_scriptlets() {
    let t = TestDir::new("rpm");
    let base = base_image();
    let lib = build_rpm(
        t.dir.path(),
        &Rpm {
            name: "hello-rpmlib",
            version: "3.1",
            release: "2",
            requires: &[],
            files: &[("/opt/hello/lib.txt", "lib")],
            post: None,
        },
    );
    let app = build_rpm(
        t.dir.path(),
        &Rpm {
            name: "hello-rpm",
            version: "1.0",
            release: "7",
            requires: &["hello-rpmlib >= 3.0", "bash", "/bin/sh"],
            files: &[("/opt/hello/app.txt", "app")],
            post: Some("mkdir -p /var/lib/hello-rpm && cat /opt/hello/lib.txt > /var/lib/hello-rpm/post-ran"),
        },
    );
    let out = t.path("rpm.raw");
    let r = run(t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&app)
        .arg("--package")
        .arg(&lib)
        .arg("--output")
        .arg(&out));
    r.assert_ok();
    assert_no_leaks(t.dir.path());
    let m = r.json();
    assert_eq!(m["package"]["kind"], "rpm");
    assert_eq!(m["package"]["name"], "hello-rpm");
    assert_eq!(m["package"]["release"], "7");
    assert_eq!(m["package"]["arch"], "noarch");
    assert_eq!(m["output"]["format"], "raw");
    let img = Mounted::open(&out);
    assert_eq!(img.rpm_q("hello-rpm").as_deref(), Some("1.0-7"));
    assert_eq!(img.rpm_q("hello-rpmlib").as_deref(), Some("3.1-2"));
    assert_eq!(img.read("/opt/hello/app.txt").trim(), "app");
    assert_eq!(
        img.read("/var/lib/hello-rpm/post-ran").trim(),
        "lib",
        "%post did not run inside the image"
    );
    drop(img);

    // An rpm whose dependency nothing in the image provides is refused, with the name.
    let orphan = build_rpm(
        t.dir.path(),
        &Rpm {
            name: "needs-missing",
            version: "1",
            release: "1",
            requires: &["libnothere"],
            files: &[("/opt/x", "x")],
            post: None,
        },
    );
    let out2 = t.path("orphan.raw");
    let r = run(t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&orphan)
        .arg("--output")
        .arg(&out2));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.error_line().contains("libnothere"), "{}", r.stderr);
    assert!(!out2.exists());
    assert_no_leaks(t.dir.path());
}

#[test]
fn recipe_file_flags_dry_run_and_print_config() {
    let t = TestDir::new("recipe");
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "recipe-app",
            version: "0.9-1",
            ..Default::default()
        },
    );
    let recipe = t.path("recipe.yaml");
    write(&recipe, &format!("base: base.raw\npackages: [{}]\nlayers: [jvm-tomcat]\noutput: from-recipe.raw\ntags: {{team: a, env: dev}}\n", app.file_name().unwrap().to_string_lossy()));
    let r = run(t.bakery().arg("bake").arg(&recipe).args([
        "--output",
        "/elsewhere/over.qcow2",
        "--tag",
        "env=prod",
        "--print-config",
    ]));
    r.assert_ok();
    let cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(&r.stdout).unwrap();
    assert_eq!(cfg["output"].as_str(), Some("/elsewhere/over.qcow2"));
    assert_eq!(
        cfg["base"].as_str().unwrap(),
        t.path("base.raw").display().to_string(),
        "recipe paths are relative to the recipe file"
    );
    assert_eq!(cfg["tags"]["env"].as_str(), Some("prod"));
    assert_eq!(cfg["tags"]["team"].as_str(), Some("a"));
    assert_eq!(cfg["layers"][0].as_str(), Some("jvm-tomcat"));

    let base = base_image();
    let out = t.path("dry.qcow2");
    let r = run(t
        .bakery()
        .arg("bake")
        .arg(&recipe)
        .arg("--base")
        .arg(&base)
        .arg("--output")
        .arg(&out)
        .arg("--dry-run"));
    r.assert_ok();
    let plan = r.json();
    assert!(plan["name"]
        .as_str()
        .unwrap()
        .starts_with("recipe-app-0.9-1-all-"));
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(steps[0].starts_with("jvm-tomcat: apt install"), "{steps:?}");
    assert_eq!(steps.last().unwrap(), &"install recipe-app_0.9-1_all.deb");
    assert!(!out.exists());
    assert!(
        !t.work().join("work").exists()
            || std::fs::read_dir(t.work().join("work"))
                .unwrap()
                .next()
                .is_none()
    );
    assert_no_leaks(t.dir.path());
}

#[test]
fn ctrl_c_mid_bake_releases_everything() {
    let t = TestDir::new("sigint");
    let base = base_image();
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "slow",
            postinst: Some("sleep 30"),
            ..Default::default()
        },
    );
    let out = t.path("slow.qcow2");
    let child = t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&app)
        .arg("--output")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the package install (the sleeping postinst) is under way, then interrupt.
    wait_for_log(&t, "Setting up slow");
    let pid = child.id().to_string();
    let started = Instant::now();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "cleanup after Ctrl-C took {:?}",
        started.elapsed()
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!out.exists());
    assert_no_output(t.dir.path(), &[]);
    assert_no_leaks(t.dir.path());
    // The whole command line, exactly: a substring match also caught unrelated host processes
    // (a CI script's `sleep 300`).
    let strays = Command::new("pgrep")
        .args(["-x", "-f", "sleep 30"])
        .output()
        .unwrap();
    assert!(
        strays.stdout.is_empty(),
        "the postinst's sleep survived the interrupt"
    );
}

#[test]
fn doctor_reports_a_ready_host() {
    let t = TestDir::new("doctor");
    let r = run(t.bakery().args(["doctor", "--json"]));
    let v = r.json();
    let missing: Vec<&serde_json::Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "missing")
        .collect();
    assert!(missing.is_empty(), "doctor: {missing:?}");
    assert_eq!(v["ready"], true);
    assert_eq!(r.code, 0);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "root",
        "loop-control",
        "free loop devices",
        "partx",
        "debootstrap",
        "qemu-img",
        "mkfs.ext4",
    ] {
        assert!(names.contains(&n), "doctor does not check {n}");
    }
}

#[test]
fn kill_9_mid_bake_then_gc_removes_everything() {
    let t = TestDir::new("kill9");
    let base = base_image();
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "sleepy",
            postinst: Some("sleep 300"),
            ..Default::default()
        },
    );
    let out = t.path("killed.raw");
    let mut child = t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&app)
        .arg("--output")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_log(&t, "Setting up sleepy");
    child.kill().unwrap(); // SIGKILL: no cleanup code of bakery runs
    child.wait().unwrap();

    let dry = run(t.bakery().args(["gc", "--dry-run", "--json"]));
    dry.assert_ok();
    let found = dry.json()["found"].as_array().unwrap().clone();
    assert!(
        found.iter().any(|l| l["kind"] == "work-dir"),
        "gc --dry-run lists nothing: {found:?}"
    );
    assert!(
        found.iter().any(|l| l["kind"] == "partial-output"),
        "the half-written output is not listed: {found:?}"
    );
    assert!(
        t.work().join("work").read_dir().unwrap().next().is_some(),
        "--dry-run removed something"
    );

    let r = run(t.bakery().args(["gc", "--json"]));
    r.assert_ok();
    assert_no_leaks(t.dir.path());
    assert_no_output(t.dir.path(), &[]);
    let strays = Command::new("pgrep")
        .args(["-f", "sleep 300"])
        .output()
        .unwrap();
    assert!(strays.stdout.is_empty(), "the postinst's sleep survived gc");
    let again = run(t.bakery().args(["gc", "--dry-run", "--json"]));
    assert_eq!(
        again.json()["found"].as_array().unwrap().len(),
        0,
        "{}",
        again.stdout
    );
}

#[test]
fn plugins_run_at_hook_points_and_add_tags() {
    let t = TestDir::new("plugins");
    let base = base_image();
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "plugged",
            files: &[("/opt/plugged/ok", "ok")],
            ..Default::default()
        },
    );
    let bin = t.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let seen = t.path("seen");
    std::fs::create_dir_all(&seen).unwrap();
    let plugin = bin.join("bakery-plugin-scan");
    write(
        &plugin,
        &format!(
            "#!/bin/sh\ncat > {seen}/$1.json\ncase \"$1\" in\n  post-provision)\n    root=$(sed -n 's/.*\"root\": *\"\\([^\"]*\\)\".*/\\1/p' {seen}/$1.json)\n    test -f \"$root/opt/plugged/ok\" || {{ echo \"package not in $root\" >&2; exit 3; }}\n    echo '{{\"tags\": {{\"scanned\": \"clean\"}}}}' ;;\nesac\n",
            seen = seen.display()
        ),
    );
    chmod(&plugin, 0o755);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = t.path("plugged.raw");
    let r = run(t
        .bakery()
        .env("PATH", &path)
        .args(["bake", "--plugin", "scan", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&app)
        .arg("--output")
        .arg(&out));
    r.assert_ok();
    assert_eq!(
        r.json()["tags"]["scanned"],
        "clean",
        "post-provision tags missing from the manifest"
    );
    for hook in ["pre-provision", "post-provision", "post-bake"] {
        assert!(
            seen.join(format!("{hook}.json")).exists(),
            "{hook} was not called"
        );
    }
    let post: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seen.join("post-bake.json")).unwrap())
            .unwrap();
    assert_eq!(post["status"], "succeeded");
    assert_eq!(post["manifest"]["package"]["name"], "plugged");
    // Its package needs nothing from the image's sources: no `apt-get update` round trip.
    let log = std::fs::read_dir(t.work().join("logs"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    assert!(
        !std::fs::read_to_string(log).unwrap().contains("InRelease"),
        "apt-get update ran for a self-contained .deb"
    );
    // A plugin that is not there is an input error before anything is made.
    let r = run(t
        .bakery()
        .args(["bake", "--plugin", "no-such-plugin", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&app)
        .arg("--output")
        .arg(t.path("x.raw")));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.error_line().contains("no-such-plugin"));
    assert_no_leaks(t.dir.path());
}

/// Bytes of the filesystem mounted at `p` (`df`).
fn fs_bytes(p: &Path) -> u64 {
    let r = run(Command::new("df").args(["-B1", "--output=size"]).arg(p));
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout.lines().nth(1).unwrap().trim().parse().unwrap()
}

#[test]
fn disk_size_grows_the_disk_gpt_root_partition_and_filesystem() {
    let _leaks = LeakCheck::new();
    let t = TestDir::new("grow");
    let base = base_image();
    let base_len = std::fs::metadata(&base).unwrap().len();
    assert!(base_len < 6 << 30, "the test base is already 6 GiB");
    let out = t.path("grown.raw");
    let r = run(t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--layer")
        .arg(tiny_layer(t.dir.path()))
        .args(["--disk-size", "6GiB", "--output"])
        .arg(&out));
    r.assert_ok();
    let m = r.json();
    assert_eq!(m["output"]["size_bytes"], 6u64 << 30);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 6 << 30);
    // The GPT's backup header moved to the new end: sgdisk finds nothing wrong.
    let v = run(Command::new("sgdisk").arg("-v").arg(&out));
    assert!(
        v.stdout.contains("No problems found"),
        "sgdisk -v: {}",
        v.stdout
    );
    let layout = bakery::disk::layout::read_layout(&out).unwrap();
    let root = layout.root().unwrap();
    assert!(
        root.start + root.size > (6 << 30) - (2 << 20),
        "root partition ends at {}",
        root.start + root.size
    );
    let img = Mounted::open(&out);
    let size = fs_bytes(&img.root);
    assert!(
        size >= 11 << 29,
        "root filesystem is {size} bytes, want >= 5.5 GiB"
    );
    assert_eq!(img.read("/etc/tiny/ran").trim(), "ran");
    drop(img);
    assert_no_leaks(&t.work());
}

/// A bake whose package upgrades the signed GRUB (its hook cannot reach the unmounted ESP) ends
/// with the ESP holding the new GRUB: the session brings the ESP in line with the packages.
#[test]
fn a_bake_that_upgrades_grub_leaves_the_esp_right() {
    let _leaks = LeakCheck::new();
    let t = TestDir::new("esp");
    let base = base_image();
    let new_grub = "not really grub, but the upgraded one\n";
    let app = build_deb(
        t.dir.path(),
        &Deb {
            name: "grub-upgrader",
            version: "1.0-1",
            files: &[("/opt/grub-upgrader/grubx64.efi", new_grub)],
            postinst: Some(
                "cp /opt/grub-upgrader/grubx64.efi /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
            ),
            ..Default::default()
        },
    );
    let out = t.path("esp.raw");
    let r = run(t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&app)
        .arg("--output")
        .arg(&out));
    r.assert_ok();
    let layout = bakery::disk::layout::read_layout(&out).unwrap();
    let esp = layout
        .partitions
        .iter()
        .find(|p| p.type_id == bakery::disk::layout::GPT_ESP)
        .expect("an ESP");
    for f in ["::/EFI/BOOT/grubx64.efi", "::/EFI/debian/grubx64.efi"] {
        assert_eq!(esp_read(&out, esp.start, f), new_grub, "{f}");
    }
    let base_esp = bakery::disk::layout::read_layout(&base).unwrap().partitions[1].start;
    assert_eq!(
        esp_read_bytes(&out, esp.start, "::/EFI/BOOT/BOOTX64.EFI"),
        esp_read_bytes(&base, base_esp, "::/EFI/BOOT/BOOTX64.EFI"),
        "shim unchanged"
    );
    assert_no_leaks(&t.work());
}

/// The README's first bake, as written: the example recipe names no base, so the built-in
/// default base (Debian 13, hybrid UEFI+BIOS) is used, and the jvm-tomcat layer installs the
/// release's default JRE (OpenJDK 21 on trixie) and Tomcat 10. The built-in base's cache is
/// seeded with the suite's trixie base (`base build base-images/debian-trixie.yaml`, the same
/// spec the binary embeds) so CI builds Debian 13 once.
#[test]
fn the_readme_bake_runs_on_the_built_in_debian_13_base() {
    let t = TestDir::new("trixie");
    let (cached, _) = bakery::pipeline::source::builtin::cache_path(&t.work());
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    let cp = Command::new("cp")
        .arg("--reflink=auto")
        .arg(trixie_base())
        .arg(&cached)
        .status()
        .unwrap();
    assert!(cp.success());
    let example = t.path("hello-tomcat");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(repo().join("examples/hello-tomcat"))
        .arg(&example)
        .status()
        .unwrap();
    assert!(cp.success());
    let built = Command::new("sh")
        .arg(example.join("build.sh"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let out = t.path("hello.qcow2");
    let r = run(t
        .bakery()
        .args(["bake"])
        .arg(example.join("recipe.yaml"))
        .arg("--output")
        .arg(&out));
    r.assert_ok();
    assert!(
        !r.stderr.contains("building the built-in"),
        "the seeded built-in base was not used: {}",
        r.stderr
    );
    let manifest: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(manifest["base"]["name"], "bakery-base-trixie", "{manifest}");
    let raw = t.path("hello.raw");
    let conv = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&out)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(conv.success());
    let layout = bakery::disk::layout::read_layout(&raw).unwrap();
    assert!(
        layout
            .partitions
            .iter()
            .any(|p| p.type_id == bakery::disk::layout::GPT_ESP),
        "the default base is hybrid: {layout:?}"
    );
    let img = Mounted::open(&raw);
    assert!(
        img.read("/etc/os-release").contains("VERSION_ID=\"13\""),
        "{}",
        img.read("/etc/os-release")
    );
    assert!(img.dpkg_version("openjdk-21-jre-headless").is_some());
    assert!(img.dpkg_version("tomcat10").is_some());
    assert!(img.dpkg_version("hello-tomcat").is_some());
    drop(img);
    assert_no_leaks(&t.work());
}
