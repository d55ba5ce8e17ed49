//! What a bake must never leak: package scriptlets run only inside the chroot, in the bake's own
//! mount namespace, seeing only its own disk; secrets in the environment (AWS credentials, tokens,
//! webhook URLs) never reach the scriptlets, the logs, the manifest or the image; the host's
//! resolv.conf and bakery's own temporary files do not stay in the image.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use support::*;

const SECRET: &str = "FAKEsecretKEY0123456789abcdefGHIJ";
const KEY_ID: &str = "AKIAFAKEKEYID0000042";
const HOOK: &str = "hooks.example.invalid/services/T000/B000/FAKEhookTOKEN42";

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Byte-search a (sparse) image file for `needles` with grep (fast; sees deleted blocks too).
fn image_contains(image: &std::path::Path, needle: &str) -> bool {
    Command::new("grep")
        .args(["-a", "-q", "-F", needle])
        .arg(image)
        .status()
        .unwrap()
        .success()
}

#[test]
fn secrets_never_reach_scriptlets_logs_manifest_or_image_and_the_chroot_sees_only_its_own_disk() {
    let t = TestDir::new("security");
    std::fs::create_dir_all(t.path("tmp")).unwrap();
    let base = base_image();
    let probe = "env > /root/deb-env; ls /dev > /root/dev-list; ls -A / > /root/root-list; \
                 cat /proc/self/mountinfo > /root/mountinfo; ls /sys/block > /root/sys-block";
    let deb = build_deb(
        t.dir.path(),
        &Deb {
            name: "probe",
            files: &[("/opt/probe/VERSION", "1")],
            postinst: Some(probe),
            ..Default::default()
        },
    );
    // rpm runs on the host (`rpm --root`) and chroots for its scriptlets: the environment it
    // passes on is the session's.
    let rpm = build_rpm(
        t.dir.path(),
        &Rpm {
            name: "rprobe",
            version: "1.0",
            release: "1",
            requires: &[],
            files: &[("/opt/rprobe/VERSION", "1")],
            post: Some("env > /root/rpm-env"),
        },
    );
    let out = t.path("sec.raw");
    let manifest = t.path("sec.json");
    let mut c = t.bakery();
    c.env("TMPDIR", t.path("tmp"))
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SESSION_TOKEN", SECRET)
        .env("SLACK_WEBHOOK_URL", format!("https://{HOOK}"))
        .env("GITHUB_TOKEN", SECRET)
        .args(["-vv", "bake", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&deb)
        .arg("--package")
        .arg(&rpm)
        .arg("--output")
        .arg(&out)
        .arg("--manifest")
        .arg(&manifest);
    let r = run(&mut c);
    r.assert_ok();
    let m = r.json();

    // Logs (stderr with -vv echoes every command's output), the bake log, the manifest.
    let log = std::fs::read(m["log"].as_str().unwrap()).unwrap();
    for (what, text) in [
        ("stderr", r.stderr.as_bytes()),
        ("stdout", r.stdout.as_bytes()),
        ("bake log", &log[..]),
        ("manifest", &std::fs::read(&manifest).unwrap()[..]),
    ] {
        for s in [SECRET, KEY_ID, HOOK] {
            assert!(!contains(text, s), "{what} contains a secret ({s})");
        }
    }
    // The image, every byte of it (deleted blocks too).
    for s in [SECRET, KEY_ID, HOOK] {
        assert!(
            !image_contains(&out, s),
            "the image contains a secret ({s})"
        );
    }

    let img = Mounted::open(&out);
    for f in ["/root/deb-env", "/root/rpm-env"] {
        let env = img.read(f);
        assert!(
            env.contains("BAKERY=1") || f.contains("rpm"),
            "{f}: the scriptlet did not run in bakery's clean environment:\n{env}"
        );
        for k in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SESSION_TOKEN",
            "SLACK_WEBHOOK_URL",
            "GITHUB_TOKEN",
        ] {
            assert!(!env.contains(k), "{f}: a scriptlet saw {k}");
        }
    }
    // Only this bake's disk among the block devices, in /dev and in /sys/block.
    let dev: Vec<String> = img
        .read("/root/dev-list")
        .lines()
        .map(str::to_string)
        .collect();
    let disks: Vec<&String> = dev
        .iter()
        .filter(|d| {
            ["loop", "sd", "vd", "xvd", "nvme", "dm-", "md", "sr"]
                .iter()
                .any(|p| d.starts_with(p))
        })
        .collect();
    let ours = disks
        .iter()
        .min_by_key(|d| d.len())
        .map(|d| d.to_string())
        .expect("the bake's own disk is not in /dev");
    for d in &disks {
        assert!(
            **d == ours || d.starts_with(&format!("{ours}p")),
            "/dev in the chroot shows another device: {d} (ours: {ours}); /dev: {dev:?}"
        );
    }
    assert!(
        !dev.iter()
            .any(|d| d == "loop-control" || d == "kvm" || d == "mem" || d == "kmsg"),
        "/dev exposes host control devices: {dev:?}"
    );
    // No host path: the chroot's / is the image's own, and no mount names the host's paths.
    let seen: BTreeSet<String> = img
        .read("/root/root-list")
        .lines()
        .map(str::to_string)
        .collect();
    let image_root: BTreeSet<String> = std::fs::read_dir(&img.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(seen, image_root, "the chroot's / differs from the image's");
    let mountinfo = img.read("/root/mountinfo");
    for host in [
        t.dir.path().display().to_string(),
        "/work".into(),
        "/var/cache".into(),
        "/home".into(),
    ] {
        assert!(
            !mountinfo.contains(&host),
            "a mount inside the chroot names the host path {host}:\n{mountinfo}"
        );
    }
    let mut kinds: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(" - ").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    kinds.sort();
    kinds.dedup();
    for k in &kinds {
        assert!(
            ["ext4", "proc", "sysfs", "tmpfs", "devpts", "xfs", "btrfs", "vfat"].contains(k),
            "unexpected mount of type {k} in the chroot:\n{mountinfo}"
        );
    }
    // The host's resolv.conf and bakery's helpers did not stay.
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let image_resolv = std::fs::read_to_string(img.path("/etc/resolv.conf")).unwrap_or_default();
    assert!(
        host_resolv.trim().is_empty() || image_resolv != host_resolv,
        "the image kept the host's resolv.conf"
    );
    assert!(
        !img.path("/usr/sbin/policy-rc.d").exists(),
        "policy-rc.d left in the image"
    );
    let leftovers = Command::new("find")
        .arg(&img.root)
        .args([
            "-xdev",
            "(",
            "-name",
            "*.bakery-orig",
            "-o",
            "-name",
            "*.bakery-*.partial",
            "-o",
            "-name",
            "probe_*.deb",
            "-o",
            "-name",
            "rprobe-*.rpm",
            ")",
        ])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "bakery's temporary files in the image: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
    let tmp: Vec<_> = std::fs::read_dir(img.path("/tmp"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "files left in the image's /tmp: {tmp:?}");
    drop(img);
    assert_no_leaks(t.dir.path());
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(t.dir.path())
    );
}
