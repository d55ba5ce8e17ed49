//! The baked image stays generalized (issue 13 §2): it keeps its own resolv.conf and no byte of
//! the bake host's DNS reaches it (case resolv-conf-edit); what the bake's scripts make per
//! machine or per host (machine id, SSH host keys, random seed, host name, temporary files,
//! logs, cloud-init instance state, shell history) does not ship, and what bakery cannot judge
//! (the host table) is named in a warning.

mod support;

use std::path::Path;
use std::process::Stdio;

use support::*;

const STUB: &str = "../run/systemd/resolve/stub-resolv.conf";

/// The bake host's resolver lines (what must never reach an image).
fn host_dns_lines() -> Vec<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("nameserver") || l.starts_with("search") || l.starts_with("domain")
        })
        .map(str::to_string)
        .collect()
}

fn dnsconf(dir: &Path) -> std::path::PathBuf {
    build_deb(
        dir,
        &Deb {
            name: "hunt-dnsconf",
            postinst: Some(
                "if [ \"$1\" = configure ]; then\n  grep -q '^search corp.example.invalid' /etc/resolv.conf || echo 'search corp.example.invalid' >> /etc/resolv.conf\nfi",
            ),
            ..Default::default()
        },
    )
}

/// Fails on main: the base build itself kept the host's resolv.conf (moved aside by
/// systemd-resolved's postinst to /etc/.resolv.conf.systemd-resolved.bak).
#[test]
fn the_base_holds_no_byte_of_the_hosts_dns() {
    let base = base_image();
    for l in host_dns_lines() {
        assert_eq!(
            occurrences(&base, &l),
            0,
            "the base image holds the host's `{l}`"
        );
    }
    let img = Mounted::open(&base);
    assert_eq!(
        std::fs::read_link(img.path("/etc/resolv.conf")).unwrap(),
        Path::new(STUB)
    );
}

/// Case resolv-conf-edit. Fails on main: the image got a plain /etc/resolv.conf with the host's
/// nameserver and the `search` line; the link to systemd-resolved's stub was gone.
#[test]
fn a_package_editing_resolv_conf_leaves_the_images_own_file_and_no_host_dns() {
    let t = TestDir::new("resolv");
    let base = base_image();
    let deb = dnsconf(t.dir.path());
    let out = t.path("dns.raw");
    let r = run(t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&deb)
        .arg("--output")
        .arg(&out)
        .stdin(Stdio::null()));
    r.assert_ok();
    assert!(
        r.stderr.contains("search corp.example.invalid") && r.stderr.contains("resolv.conf"),
        "no warning names the change that could not be kept:\n{}",
        r.stderr
    );
    let img = Mounted::open(&out);
    assert_eq!(
        std::fs::read_link(img.path("/etc/resolv.conf")).unwrap(),
        Path::new(STUB),
        "the image lost its own resolv.conf"
    );
    assert!(!img.path("/etc/resolv.conf.bakery-orig").exists());
    drop(img);
    for l in host_dns_lines() {
        assert!(
            occurrences(&out, &l) <= occurrences(&base, &l),
            "the bake wrote the host's `{l}` into the image"
        );
    }

    // A base whose resolv.conf is a plain file of its own: the package's edit is applied to it.
    let own_base = t.path("own-base.raw");
    std::fs::copy(&base, &own_base).unwrap();
    {
        let m = MountedRw::open(&own_base);
        let f = m.path("/etc/resolv.conf");
        std::fs::remove_file(&f).unwrap();
        write(&f, "nameserver 192.0.2.53\n");
    }
    let out2 = t.path("dns2.raw");
    let r = run(t
        .bakery()
        .args(["bake", "--base"])
        .arg(&own_base)
        .arg("--package")
        .arg(&deb)
        .arg("--output")
        .arg(&out2)
        .stdin(Stdio::null()));
    r.assert_ok();
    let img = Mounted::open(&out2);
    assert_eq!(
        img.read("/etc/resolv.conf"),
        "nameserver 192.0.2.53\nsearch corp.example.invalid\n"
    );
    drop(img);
    for l in host_dns_lines() {
        assert!(
            occurrences(&out2, &l) <= occurrences(&own_base, &l),
            "the bake wrote the host's `{l}` into the image"
        );
    }
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(t.dir.path())
    );
}

/// Fails on main: every file the postinst made stayed in the image.
#[test]
fn per_machine_files_made_during_the_bake_do_not_ship() {
    let t = TestDir::new("permachine");
    let base = base_image();
    let deb = build_deb(
        t.dir.path(),
        &Deb {
            name: "hunt-permachine",
            files: &[("/opt/hunt-permachine/VERSION", "1")],
            postinst: Some(
                "if [ \"$1\" = configure ]; then\n\
                 cat /proc/sys/kernel/random/uuid | tr -d - > /etc/machine-id\n\
                 mkdir -p /var/lib/dbus && cp /etc/machine-id /var/lib/dbus/machine-id\n\
                 ssh-keygen -A >/dev/null\n\
                 head -c 512 /dev/urandom > /var/lib/systemd/random-seed\n\
                 echo buildbox > /etc/hostname\n\
                 echo '10.9.8.7 buildbox' >> /etc/hosts\n\
                 mkdir -p /var/tmp/build-cache && echo x > /var/tmp/build-cache/f\n\
                 echo 'make install' > /root/.bash_history\n\
                 mkdir -p /var/log/hunt && echo started > /var/log/hunt/app.log\n\
                 echo configured >> /var/log/dpkg.log\n\
                 mkdir -p /var/lib/cloud/instances/i-0123456789/sem && touch /var/lib/cloud/instances/i-0123456789/sem/x\n\
                 fi",
            ),
            ..Default::default()
        },
    );
    let out = t.path("pm.raw");
    let r = run(t
        .bakery()
        .args(["bake", "--base"])
        .arg(&base)
        .arg("--package")
        .arg(&deb)
        .arg("--output")
        .arg(&out)
        .stdin(Stdio::null()));
    r.assert_ok();
    assert!(
        r.stderr.contains("/etc/hosts") && r.stderr.contains("10.9.8.7 buildbox"),
        "no warning names the host table change:\n{}",
        r.stderr
    );
    let img = Mounted::open(&out);
    let base_img = Mounted::open(&base);
    assert_eq!(
        img.read("/etc/machine-id"),
        base_img.read("/etc/machine-id")
    );
    assert_eq!(img.read("/etc/hostname"), base_img.read("/etc/hostname"));
    for gone in [
        "/var/lib/dbus/machine-id",
        "/var/lib/systemd/random-seed",
        "/var/tmp/build-cache",
        "/root/.bash_history",
        "/var/lib/cloud/instances/i-0123456789",
    ] {
        assert!(
            std::fs::symlink_metadata(img.path(gone)).is_err(),
            "{gone} made during the bake is in the image"
        );
    }
    let keys: Vec<String> = std::fs::read_dir(img.path("/etc/ssh"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    assert!(
        keys.is_empty(),
        "SSH host keys made during the bake: {keys:?}"
    );
    assert_eq!(
        std::fs::metadata(img.path("/var/log/hunt/app.log"))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        std::fs::metadata(img.path("/var/log/dpkg.log"))
            .unwrap()
            .len(),
        std::fs::metadata(base_img.path("/var/log/dpkg.log"))
            .unwrap()
            .len()
    );
    assert!(img.read("/etc/hosts").contains("10.9.8.7 buildbox"));
    assert_eq!(img.read("/opt/hunt-permachine/VERSION"), "1");
    assert!(img.dpkg_version("hunt-permachine").is_some());
    drop(img);
    drop(base_img);
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(t.dir.path())
    );
}
