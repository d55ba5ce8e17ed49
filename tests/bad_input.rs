//! Bad input, one table: every case must end with one line `bakery: error: ...` that names the
//! file or field and says what to do, the agreed exit code, nothing on stdout, and nothing left
//! behind (no output or temporary file, loop device, mount, work file; on AWS no image, snapshot
//! or volume). Adding a case is one line in `LOCAL` or `AWS`.
//!
//! Exit codes: 2 for everything the user fixes in their input, including what can only be seen
//! inside the image (an unmet dependency, a base too small for the package) — the bake is rolled
//! back, so nothing was created. 1 for failures at run time that are not the input's fault as
//! such: a package's own maintainer script failing, no free loop device on the host, AWS
//! throttling past the retries, an unreachable endpoint.

mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// The fixtures every case may use, built once per test.
struct Fx {
    t: TestDir,
    base: String,
    out: String,
    emulator: Option<std::sync::Arc<emulator::Emulator>>,
    closed_port: u16,
}

impl Fx {
    fn p(&self, name: &str) -> String {
        self.t.path("fx").join(name).display().to_string()
    }
    fn out_dir(&self) -> PathBuf {
        self.t.path("out")
    }
    /// `bakery bake ARGS`
    fn bake(&self, c: &mut Command, args: &[&str]) {
        c.arg("bake").args(args);
    }
    /// A local bake of `pkg` (a fixture name) with the cached base to `out/out.raw`, plus `extra`.
    fn local(&self, c: &mut Command, pkg: &str, extra: &[&str]) {
        c.args([
            "bake",
            "--base",
            &self.base,
            "--package",
            &self.p(pkg),
            "--output",
            &self.out,
        ])
        .args(extra);
    }
    /// The good package baked to another output path.
    fn local_to(&self, c: &mut Command, out: &str) {
        c.args([
            "bake",
            "--base",
            &self.base,
            "--package",
            &self.p("app_1.0-1_all.deb"),
            "--output",
            out,
        ]);
    }
    /// An AMI bake of the good package against the emulator, plus `extra`.
    fn ami(&self, c: &mut Command, extra: &[&str]) {
        if let Some(e) = &self.emulator {
            e.apply(c);
        }
        c.args([
            "bake",
            "--package",
            &self.p("app_1.0-1_all.deb"),
            "--output",
            "ami",
        ])
        .args(extra);
    }
}

struct Case {
    name: &'static str,
    code: i32,
    /// Every one of these must be in the error line.
    needles: &'static [&'static str],
    setup: fn(&Fx, &mut Command),
}

const fn case(
    name: &'static str,
    code: i32,
    needles: &'static [&'static str],
    setup: fn(&Fx, &mut Command),
) -> Case {
    Case {
        name,
        code,
        needles,
        setup,
    }
}

const AMI0: &str = "ami-0123456789abcdef0";

#[rustfmt::skip]
const LOCAL: &[Case] = &[
    // Recipes
    case("invalid YAML", 2, &["invalid.yaml", "did not find expected"], |f, c| f.bake(c, &[&f.p("invalid.yaml")])),
    case("unknown key", 2, &["typo.yaml", "unknown field `packagez`"], |f, c| f.bake(c, &[&f.p("typo.yaml")])),
    case("wrong type", 2, &["wrongtype.yaml", "packages: invalid type: integer `5`, expected a sequence"], |f, c| f.bake(c, &[&f.p("wrongtype.yaml")])),
    case("empty recipe", 2, &["empty.yaml", "empty"], |f, c| f.bake(c, &[&f.p("empty.yaml")])),
    case("reserved tag in a recipe", 2, &["awstag.yaml: `tags`: ", "aws:x"], |f, c| { let r = f.p("awstag.yaml"); f.local(c, "app_1.0-1_all.deb", &[]); c.arg(r); }),
    case("recipe missing", 2, &["/nonexistent/recipe.yaml", "no such file"], |f, c| f.bake(c, &["/nonexistent/recipe.yaml"])),
    case("base name AWS cannot carry", 2, &["badname.yaml", "name `web base!` contains `!`"], |f, c| { c.args(["base", "build", &f.p("badname.yaml"), "--output", "ami", "--dry-run"]); }),
    // Packages
    case("missing package file", 2, &["/nonexistent/app.deb"], |f, c| f.bake(c, &["--base", &f.base, "--package", "/nonexistent/app.deb", "--output", &f.out])),
    case("not a package", 2, &["fake.deb", "not a .deb or .rpm"], |f, c| f.local(c, "fake.deb", &[])),
    case("truncated .deb", 2, &["trunc.deb", "truncated package"], |f, c| f.local(c, "trunc.deb", &[])),
    case("truncated .rpm", 2, &["trunc.rpm", "truncated package"], |f, c| f.local(c, "trunc.rpm", &[])),
    case("package for another architecture", 2, &["armapp_1.0-1_arm64.deb", "built for arm64", "but the base image is"], |f, c| f.local(c, "armapp_1.0-1_arm64.deb", &[])),
    case("dependencies cannot be met", 2, &["install needy_1.0-1_all.deb", "libdoesnotexist1 (>= 2)", "--package"], |f, c| f.local(c, "needy_1.0-1_all.deb", &[])),
    case("failing postinst (runtime: exit 1)", 1, &["install broken_1.0-1_all.deb", "post-installation script", "exit status 3"], |f, c| f.local(c, "broken_1.0-1_all.deb", &[])),
    case("disk too small for the package (ENOSPC)", 2, &["install bigapp_1.0-1_all.deb", "ran out of space", "bigger disk"], |f, c| f.local(c, "bigapp_1.0-1_all.deb", &[])),
    case("unknown layer", 2, &["no-such-layer"], |f, c| f.bake(c, &["--base", &f.base, "--layer", "no-such-layer", "--output", &f.out])),
    case("disk size with an unknown unit", 2, &["--disk-size `6XB`", "unknown size unit `XB`"], |f, c| f.local(c, "app_1.0-1_all.deb", &["--disk-size", "6XB"])),
    case("disk smaller than the base", 2, &["--disk-size 1GiB is smaller than base", "never shrunk"], |f, c| f.local(c, "app_1.0-1_all.deb", &["--disk-size", "1GiB"])),
    case("base disk size too small", 2, &["--disk-size: size 512MiB is too small"], |_, c| { c.args(["base", "build", "--disk-size", "512MiB", "--output", "ami", "--dry-run"]); }),
    case("nothing to bake", 2, &["nothing to bake", "--package"], |f, c| f.bake(c, &["--base", &f.base, "--output", &f.out])),
    // Base images
    case("base is not a disk image", 2, &["notes.txt"], |f, c| f.bake(c, &["--base", &f.p("notes.txt"), "--package", &f.p("app_1.0-1_all.deb"), "--output", &f.out])),
    case("base missing", 2, &["/nonexistent/base.raw"], |f, c| f.bake(c, &["--base", "/nonexistent/base.raw", "--package", &f.p("app_1.0-1_all.deb"), "--output", &f.out])),
    case("base of zeros", 2, &["zeros.img", "no partition table or Linux root filesystem"], |f, c| f.bake(c, &["--base", &f.p("zeros.img"), "--package", &f.p("app_1.0-1_all.deb"), "--output", &f.out])),
    case("base with a partition but no filesystem", 2, &["nofs.img", "(1 partition(s)) has no Linux root filesystem"], |f, c| f.bake(c, &["--base", &f.p("nofs.img"), "--package", &f.p("app_1.0-1_all.deb"), "--output", &f.out])),
    case("base AMI for a file output", 2, &["needs `--output ami`"], |f, c| f.bake(c, &["--base", AMI0, "--package", &f.p("app_1.0-1_all.deb"), "--output", &f.out])),
    // Output
    case("no output", 2, &["no output given", "--output"], |f, c| f.bake(c, &["--base", &f.base, "--package", &f.p("app_1.0-1_all.deb")])),
    case("unknown output format", 2, &["out.vmdk", ".qcow2"], |f, c| f.local_to(c, &format!("{}/out.vmdk", f.out_dir().display()))),
    case("output in a missing directory", 2, &["/nonexistent/dir", "does not exist"], |f, c| f.local_to(c, "/nonexistent/dir/out.raw")),
    case("output in a read-only directory", 2, &["ro/out.raw", "not writable"], |f, c| f.local_to(c, &f.p("ro/out.raw"))),
    case("output exists", 2, &["exists.raw", "already exists", "--force"], |f, c| f.local_to(c, &format!("{}/exists.raw", f.out_dir().display()))),
    // Tags
    case("tag without a value", 2, &["--tag", "KEY=VALUE"], |f, c| f.local(c, "app_1.0-1_all.deb", &["--tag", "novalue"])),
    case("reserved tag prefix", 2, &["aws:x", "reserves"], |f, c| f.local(c, "app_1.0-1_all.deb", &["--tag", "aws:x=1"])),
    case("tag value too long", 2, &["tag `k` value is 300 characters", "256"], |f, c| f.local(c, "app_1.0-1_all.deb", &["--tag", &format!("k={}", "v".repeat(300))])),
    case("too many tags", 2, &["51 tags", "at most 50"], |f, c| { f.local(c, "app_1.0-1_all.deb", &[]); for i in 0..51 { c.args(["--tag", &format!("k{i}=v")]); } }),
    case("too many tags with bakery's own", 2, &["bakery's own", "at most 50"], |f, c| { f.local(c, "app_1.0-1_all.deb", &[]); for i in 0..46 { c.args(["--tag", &format!("k{i}=v")]); } }),
    // AMI-only options on a local bake (once silently ignored): one table in recipe::AMI_ONLY.
    case("--region on a local bake", 2, &["--region", "only to `--output ami`"], |f, c| f.local(c, "app_1.0-1_all.deb", &["--region", "us-east-1"])),
    case("--copy-to on a local bake", 2, &["--copy-to", "only to `--output ami`"], |f, c| f.local(c, "app_1.0-1_all.deb", &["--copy-to", "eu-west-1"])),
    case("--share-with on a local bake", 2, &["--share-with", "only to `--output ami`"], |f, c| f.local(c, "app_1.0-1_all.deb", &["--share-with", "123456789012"])),
    case("--mode direct on a local bake", 2, &["--mode", "only to `--output ami`"], |f, c| f.local(c, "app_1.0-1_all.deb", &["--mode", "direct"])),
    case("--region on a local base build", 2, &["--region", "only to `--output ami`"], |f, c| { c.args(["base", "build", "--output", &f.out, "--region", "us-east-1", "--dry-run"]); }),
    // AMI options on a local bake, and in a recipe
    case("AMI option on a local bake", 2, &["--encrypt", "only to `--output ami`"], |f, c| f.local(c, "app_1.0-1_all.deb", &["--encrypt"])),
    case("unknown boot mode in a recipe", 2, &["bootmode.yaml", "boot-mode: unknown variant `bios`", "legacy-bios"], |f, c| f.bake(c, &[&f.p("bootmode.yaml")])),
    // The host
    case("not root", 2, &["needs root", "sudo"], |f, c| { f.local(c, "app_1.0-1_all.deb", &[]); c.uid(65534).gid(65534); }),
    case("no free loop device (runtime: exit 1)", 1, &["no free loop device", "losetup -a"], |f, c| { f.local(c, "app_1.0-1_all.deb", &[]); c.env("BAKERY_LOOP_CONTROL", "/dev/null"); }),
];

#[rustfmt::skip]
const AWS: &[Case] = &[
    case("unknown region", 2, &["mars-1", "--region"], |f, c| f.ami(c, &["--base", AMI0, "--region", "mars-1"])),
    case("unknown copy region", 2, &["nowhere", "--copy-to"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--copy-to", "nowhere"])),
    case("base AMI not found", 2, &[AMI0, "not found in us-east-1"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1"])),
    case("base-name matching nothing", 2, &["no-such-base-*", "bakery base list"], |f, c| f.ami(c, &["--base-name", "no-such-base-*", "--region", "us-east-1"])),
    case("no base AMI", 2, &["--base ami-"], |f, c| f.ami(c, &["--region", "us-east-1"])),
    case("AMI disk size in part GiB", 2, &["--disk-size 5000MiB", "whole number of GiB", "use 5GiB"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--disk-size", "5000MiB"])),
    case("bad account to share with", 2, &["--share-with `12`", "12 digits"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--share-with", "12"])),
    case("too many tags for an AMI", 2, &["51 tags", "at most 50"], |f, c| { f.ami(c, &["--base", AMI0, "--region", "us-east-1"]); for i in 0..51 { c.args(["--tag", &format!("k{i}=v")]); } }),
    // tag-limit-own-tags: 44 + Aminator's 6 = 50 passed, then bakery:bake-id/-state/-key made 53.
    case("44 tags: too many with bakery's own on a snapshot", 2, &["bakery's own", "at most 50"], |f, c| { f.ami(c, &["--base", AMI0, "--region", "us-east-1"]); for i in 0..44 { c.args(["--tag", &format!("cost-{i}=x")]); } }),
    case("copy to a region the account lacks", 2, &["us-west-9", "DescribeRegions", "--copy-to"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--copy-to", "us-west-9"])),
    case("missing credentials", 2, &["no AWS credentials", "AWS_ACCESS_KEY_ID"], |f, c| { f.ami(c, &["--base", AMI0, "--region", "us-east-1"]); c.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY"); }),
    case("a profile that does not exist", 2, &["AWS profile `nosuch` (AWS_PROFILE) does not exist", "/nonexistent/aws-config"], |f, c| { f.ami(c, &["--base", AMI0, "--region", "us-east-1"]); c.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY").env("AWS_PROFILE", "nosuch").env("AWS_CONFIG_FILE", "/nonexistent/aws-config").env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials"); }),
    case("API throttling, retried (runtime: exit 1)", 1, &["RequestLimitExceeded", "6 attempts with backoff"], |f, c| { f.ami(c, &["--base", AMI0, "--region", "us-east-1"]); c.env("BAKERY_THROTTLE_API", "DescribeImages"); }),
    case("API unreachable (runtime: exit 1)", 1, &["cannot reach the AWS endpoint http://127.0.0.1:"], |f, c| { f.ami(c, &["--base", AMI0, "--region", "us-east-1"]); c.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", f.closed_port)); }),
    // AMI options (issue 15): refused before any AWS resource is made.
    case("KMS key without --encrypt", 2, &["--kms-key-id needs --encrypt"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--kms-key-id", "alias/app"])),
    case("KMS key for a region not in the bake", 2, &["eu-west-1 is not a region of this bake", "--copy-to"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--encrypt", "--kms-key-id", "eu-west-1=alias/app"])),
    case("KMS key ARN of another region", 2, &["that key is in us-west-2", "us-east-1=KEY"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--encrypt", "--kms-key-id", "arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"])),
    case("KMS key that does not exist", 2, &["--kms-key-id alias/no-such-key", "no such KMS key in us-east-1"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--encrypt", "--kms-key-id", "alias/no-such-key"])),
    case("AWS managed key with sharing", 2, &["aws/ebs", "cannot be shared", "--kms-key-id us-east-1=KEY"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--encrypt", "--share-with", "123456789012"])),
    case("TPM without UEFI", 2, &["--tpm-support v2.0 needs an AMI that boots UEFI", "--boot-mode legacy-bios"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--tpm-support", "v2.0", "--boot-mode", "legacy-bios"])),
    case("deprecation in the past", 2, &["--deprecate-at 2020-01-01T00:00:00Z is in the past"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--deprecate-at", "2020-01-01T00:00:00Z"])),
    case("deprecation that is not a duration", 2, &["--deprecate-in `soon`", "90d"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--deprecate-in", "soon"])),
    case("share with a malformed organization ARN", 2, &["--share-with `arn:aws:organizations::123456789012:organization/x-1`", "organization/o-"], |f, c| f.ami(c, &["--base", AMI0, "--region", "us-east-1", "--share-with", "arn:aws:organizations::123456789012:organization/x-1"])),
    case("prune with a wildcard app", 2, &["--app `web*`"], |f, c| { if let Some(e) = &f.emulator { e.apply(c); } c.args(["images", "prune", "--app", "web*", "--keep", "2"]); }),
];

/// `chattr +i` on a directory: even root cannot create files in it. Undone at drop.
struct Immutable(PathBuf);

impl Immutable {
    fn new(p: &Path) -> Immutable {
        std::fs::create_dir_all(p).unwrap();
        let r = run(Command::new("chattr").arg("+i").arg(p));
        assert_eq!(r.code, 0, "chattr +i: {}", r.stderr);
        Immutable(p.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

fn fixtures(name: &str, with_base: bool) -> Fx {
    let t = TestDir::new(name);
    let fx = t.path("fx");
    std::fs::create_dir_all(&fx).unwrap();
    std::fs::create_dir_all(t.path("out")).unwrap();
    build_deb(&fx, &Deb::default());
    let base = if with_base {
        base_image().display().to_string()
    } else {
        "/nonexistent/base.raw".into()
    };
    let out = t.path("out").join("out.raw").display().to_string();
    Fx {
        t,
        base,
        out,
        emulator: None,
        closed_port: 0,
    }
}

/// Run every case; collect every failure, then fail once with all of them.
fn run_table(f: &Fx, cases: &[Case], keep: &[&str], after_each: &dyn Fn(&str) -> Option<String>) {
    let mut failures = Vec::new();
    for c in cases {
        let mut cmd = f.t.bakery();
        (c.setup)(f, &mut cmd);
        let r = run(&mut cmd);
        let line = r.error_line();
        let mut bad = Vec::new();
        if r.code != c.code {
            bad.push(format!("exit code {} (want {})", r.code, c.code));
        }
        if line.is_empty() {
            bad.push("no `bakery: error:` line".into());
        }
        for n in c.needles {
            if !line.contains(n) {
                bad.push(format!("error line lacks `{n}`"));
            }
        }
        if !r.stdout.trim().is_empty() {
            bad.push(format!("stdout not empty: {}", r.stdout.trim()));
        }
        let left = std::panic::catch_unwind(|| {
            assert_no_output(&f.out_dir(), keep);
            assert_no_output(&f.t.path("fx"), &[]);
            assert_no_leaks(f.t.dir.path());
        });
        if let Err(e) = left {
            bad.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "leak check failed".into()),
            );
        }
        if let Some(e) = after_each(c.name) {
            bad.push(e);
        }
        if bad.is_empty() {
            eprintln!("ok   {:<45} exit {}  {}", c.name, r.code, line);
        } else {
            eprintln!(
                "FAIL {:<45} {}\n     {line}\n{}",
                c.name,
                bad.join("; "),
                r.stderr
            );
            failures.push(format!("{}: {}", c.name, bad.join("; ")));
        }
    }
    eprintln!(
        "bad input: {} cases, {} refused cleanly, {} failed",
        cases.len(),
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "bad input cases failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn local_bad_input_is_refused_with_one_line_and_nothing_left() {
    let f = fixtures("badinput", true);
    let fx = f.t.path("fx");
    let w = |name: &str, text: &str| write(&fx.join(name), text);
    w("invalid.yaml", "packages: [a.deb\nlayers: x\n");
    w("typo.yaml", "base: x.raw\npackagez: [a.deb]\n");
    w("wrongtype.yaml", "packages: 5\n");
    w("empty.yaml", "\n");
    w("awstag.yaml", "tags: {\"aws:x\": y}\n");
    w("bootmode.yaml", "boot-mode: bios\n");
    w("notes.txt", "just some text, not a disk\n");
    w("fake.deb", "PK\u{3}\u{4} this is a zip, not a deb");
    write(&f.out_dir().join("exists.raw"), "");
    let base_yaml = BASE_YAML
        .lines()
        .map(|l| {
            if l.starts_with("name:") {
                "name: \"web base!\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    w("badname.yaml", &base_yaml);

    build_deb(
        &fx,
        &Deb {
            name: "armapp",
            arch: "arm64",
            ..Default::default()
        },
    );
    build_deb(
        &fx,
        &Deb {
            name: "needy",
            depends: "libdoesnotexist1 (>= 2)",
            ..Default::default()
        },
    );
    build_deb(
        &fx,
        &Deb {
            name: "broken",
            postinst: Some("echo 'broken: cannot configure' >&2; exit 3"),
            ..Default::default()
        },
    );
    let good = std::fs::read(fx.join("app_1.0-1_all.deb")).unwrap();
    std::fs::write(fx.join("trunc.deb"), &good[..good.len() / 2]).unwrap();
    let rpm = build_rpm(
        &fx,
        &Rpm {
            name: "tr",
            version: "1",
            release: "1",
            requires: &[],
            files: &[("/opt/tr", "x")],
            post: None,
        },
    );
    let bytes = std::fs::read(&rpm).unwrap();
    std::fs::write(fx.join("trunc.rpm"), &bytes[..bytes.len() - 10]).unwrap();

    // A base whose disk is all zeros, and one with a GPT partition but no filesystem in it.
    std::fs::write(fx.join("zeros.img"), vec![0u8; 1 << 20]).unwrap();
    let nofs = fx.join("nofs.img");
    std::fs::File::create(&nofs)
        .unwrap()
        .set_len(20 << 20)
        .unwrap();
    let r = run(Command::new("sgdisk")
        .args(["-n", "1:2048:+8M", "-t", "1:8304"])
        .arg(&nofs));
    assert_eq!(r.code, 0, "sgdisk: {}", r.stderr);

    // A package bigger than the whole base disk: its payload cannot fit (zeros: a small .deb).
    let big = fx.join("debroot-bigapp");
    std::fs::create_dir_all(big.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(big.join("opt/bigapp")).unwrap();
    write(&big.join("DEBIAN/control"), "Package: bigapp\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@t.invalid>\nDescription: too big\n");
    let base_len = std::fs::metadata(&f.base).unwrap().len();
    std::fs::File::create(big.join("opt/bigapp/blob"))
        .unwrap()
        .set_len(base_len)
        .unwrap();
    let r = run(Command::new("dpkg-deb")
        .args(["-Zgzip", "-z1", "--build", "--root-owner-group"])
        .arg(&big)
        .arg(fx.join("bigapp_1.0-1_all.deb")));
    assert_eq!(r.code, 0, "dpkg-deb: {}", r.stderr);
    std::fs::remove_dir_all(&big).unwrap();

    let _ro = Immutable::new(&fx.join("ro"));
    run_table(&f, LOCAL, &["exists.raw"], &|_| None);
}

/// Images, snapshots and volumes of this account in the regions the cases touch.
fn aws_resources(
    rt: &tokio::runtime::Runtime,
    ctx: &bakery::aws::client::AwsContext,
) -> Vec<String> {
    rt.block_on(async {
        let mut all = Vec::new();
        for r in ["us-east-1", "us-west-2"] {
            let ec2 = ctx.ec2(r);
            let i = ec2.describe_images().owners("self").send().await.unwrap();
            all.extend(
                i.images()
                    .iter()
                    .map(|x| format!("{r} {}", x.image_id().unwrap_or_default())),
            );
            let s = ec2
                .describe_snapshots()
                .owner_ids("self")
                .send()
                .await
                .unwrap();
            all.extend(
                s.snapshots()
                    .iter()
                    .map(|x| format!("{r} {}", x.snapshot_id().unwrap_or_default())),
            );
            let v = ec2.describe_volumes().send().await.unwrap();
            all.extend(
                v.volumes()
                    .iter()
                    .map(|x| format!("{r} {}", x.volume_id().unwrap_or_default())),
            );
        }
        all.sort();
        all
    })
}

#[test]
fn aws_bad_input_is_refused_with_one_line_and_nothing_made() {
    let emu = emulator::shared(&[]);
    let mut f = fixtures("awsbadinput", false);
    f.emulator = Some(emu.clone());
    f.closed_port = emulator::free_port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    let before = aws_resources(&rt, &ctx);
    run_table(&f, AWS, &[], &|name| {
        let now = aws_resources(&rt, &ctx);
        (now != before).then(|| format!("{name}: AWS resources changed: {before:?} -> {now:?}"))
    });
    // Throttling was retried, not given up at once: every attempt was answered with the error.
    let mut c = f.t.bakery();
    f.ami(&mut c, &["--base", AMI0, "--region", "us-east-1"]);
    let r = run(c.env("BAKERY_THROTTLE_API", "DescribeImages"));
    assert_eq!(
        r.stderr
            .matches("injected throttling of DescribeImages")
            .count(),
        bakery::aws::client::MAX_ATTEMPTS as usize,
        "{}",
        r.stderr
    );
}

/// `--keep-on-error` on a local bake keeps the half-baked disk beside the output and says where
/// (Aminator's --preserve-on-error); nothing else is left. Failed before: nothing was kept.
#[test]
fn keep_on_error_keeps_the_half_baked_local_image_and_says_where() {
    let f = fixtures("keeponerror", true);
    let fx = f.t.path("fx");
    build_deb(
        &fx,
        &Deb {
            name: "broken",
            files: &[("/opt/broken/VERSION", "1.0-1")],
            postinst: Some("echo 'broken: cannot configure' >&2; exit 3"),
            ..Default::default()
        },
    );
    let mut c = f.t.bakery();
    f.local(&mut c, "broken_1.0-1_all.deb", &["--keep-on-error"]);
    let r = run(&mut c);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let i = r
        .stderr
        .find("half-baked image is kept at ")
        .unwrap_or_else(|| panic!("not said where: {}", r.stderr))
        + "half-baked image is kept at ".len();
    let kept = std::path::PathBuf::from(r.stderr[i..].split_whitespace().next().unwrap());
    assert!(kept.starts_with(f.out_dir()), "{}", kept.display());
    {
        let img = Mounted::open(&kept);
        assert_eq!(img.read("/opt/broken/VERSION"), "1.0-1");
    }
    assert_no_leaks(f.t.dir.path());
    std::fs::remove_file(&kept).unwrap();
    assert_no_output(&f.out_dir(), &[]);
}

/// `--dry-run` and `--print-config` read the inputs only: no root needed. Failed before: "needs
/// root".
#[test]
fn dry_run_and_print_config_need_no_root() {
    let t = TestDir::new("noroot");
    let dir = t.path("pub");
    std::fs::create_dir_all(&dir).unwrap();
    let deb = build_deb(&dir, &Deb::default());
    // nobody must reach the files: open the test's own directories to others.
    chmod(t.dir.path(), 0o755);
    chmod(&dir, 0o755);
    chmod(&deb, 0o644);
    let out = dir.join("out.qcow2").display().to_string();
    for extra in [&["--dry-run"][..], &["--print-config"][..]] {
        let mut c = t.bakery();
        c.args(["bake", "--package"])
            .arg(&deb)
            .args(["--output", &out])
            .args(extra)
            .uid(65534)
            .gid(65534);
        let r = run(&mut c);
        assert_eq!(r.code, 0, "{extra:?} as nobody: {}", r.stderr);
        assert!(r.stdout.contains("out.qcow2"), "{extra:?}: {}", r.stdout);
    }
    assert!(!dir.join("out.qcow2").exists());
}
