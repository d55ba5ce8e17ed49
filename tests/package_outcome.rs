//! The package manager's outcome, reported truthfully (issue 13 §3): a downgrade is one policy
//! whatever the package's dependencies (refused unless `--allow-downgrade`), a base package is
//! removed only when the recipe allows it by name, every removal/upgrade/downgrade of a base
//! package is in the manifest, a failing postinst is a run-time failure showing the script's own
//! words, and rpm requirements (shared libraries, symbol versions, `rtld(GNU_HASH)`, boolean
//! expressions) are checked against what the image really has.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

fn bake(t: &TestDir, base: &Path, pkgs: &[&Path], out: &str, extra: &[&str]) -> Run {
    let mut c = t.bakery();
    c.args(["bake", "--base"]).arg(base);
    for p in pkgs {
        c.arg("--package").arg(p);
    }
    c.arg("--output")
        .arg(t.path(out))
        .args(extra)
        .stdin(Stdio::null());
    run(&mut c)
}

fn app(t: &TestDir, version: &str, depends: &str) -> PathBuf {
    build_deb(
        t.dir.path(),
        &Deb {
            name: "hunt-app",
            version,
            depends,
            files: &[("/opt/hunt-app/VERSION", version)],
            ..Default::default()
        },
    )
}

/// Cases downgrade (and its failing-postinst probe). Fails on main: the dependency-free older
/// package was silently installed (exit 0) while the one with a dependency failed with exit 2
/// "Depends: jq but it is not installable", read from the trial run before `apt-get update`.
#[test]
fn a_downgrade_is_refused_whatever_the_dependencies_unless_allowed() {
    let t = TestDir::new("downgrade");
    let base = base_image();
    let v2 = app(&t, "2.0-1", "");
    let r = bake(&t, &base, &[&v2], "v2.raw", &[]);
    r.assert_ok();
    let v2_manifest = r.json();
    let v2_image = t.path("v2.raw");

    for (older, what) in [
        (app(&t, "1.0-1", ""), "without dependencies"),
        (app(&t, "1.0-2", "jq"), "with a dependency to download"),
    ] {
        let r = bake(&t, &v2_image, &[&older], "down.raw", &[]);
        assert_eq!(r.code, 2, "{what}: {}", r.stderr);
        let line = r.error_line();
        assert!(
            line.contains("hunt-app")
                && line.contains("2.0-1")
                && line.contains("--allow-downgrade"),
            "{what}: the error does not name the downgrade and the flag: {line}"
        );
        assert!(!line.contains("not installable"), "{what}: {line}");
        assert_no_output(t.dir.path(), &["v2.raw"]);
    }

    let older = app(&t, "1.0-2", "jq");
    let r = bake(&t, &v2_image, &[&older], "down.raw", &["--allow-downgrade"]);
    r.assert_ok();
    let changes = r.json()["package_changes"].clone();
    assert_eq!(
        changes,
        serde_json::json!([{"name": "hunt-app", "kind": "deb", "from": "2.0-1", "to": "1.0-2", "action": "downgrade"}]),
        "{}",
        r.stdout
    );
    assert_eq!(v2_manifest["package_changes"], serde_json::json!([]));
    let img = Mounted::open(&t.path("down.raw"));
    assert_eq!(img.dpkg_version("hunt-app").as_deref(), Some("1.0-2"));
    assert!(img.dpkg_version("jq").is_some());
    drop(img);
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(t.dir.path())
    );
}

/// A postinst failing behind a dependency apt downloads is a run-time failure (exit 1) that
/// shows what the script printed. Fails on main: exit 2 "Depends: jq but it is not installable".
#[test]
fn a_failing_postinst_behind_a_dependency_is_a_runtime_failure_in_its_own_words() {
    let t = TestDir::new("failpost");
    let base = base_image();
    let deb = build_deb(
        t.dir.path(),
        &Deb {
            name: "hunt-failpost",
            depends: "jq",
            postinst: Some("echo 'hunt-failpost: configuration failed' >&2\nexit 3"),
            ..Default::default()
        },
    );
    let r = bake(&t, &base, &[&deb], "fp.raw", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let line = r.error_line();
    assert!(
        line.contains("hunt-failpost: configuration failed")
            && line.contains("postinst")
            && line.contains("exit status 3"),
        "{line}"
    );
    assert!(!line.contains("not installable"), "{line}");
    assert_no_output(t.dir.path(), &[]);
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(t.dir.path())
    );
}

/// Case conflicts-remove. Fails on main: openssh-server was removed with exit 0, nothing said.
#[test]
fn removing_a_base_package_is_refused_unless_the_recipe_names_it_and_is_in_the_manifest() {
    let t = TestDir::new("conflicts");
    let base = base_image();
    let deb = build_deb(
        t.dir.path(),
        &Deb {
            name: "hunt-remote",
            files: &[("/opt/hunt-remote/README", "agent")],
            control: "Conflicts: openssh-server\nReplaces: openssh-server",
            ..Default::default()
        },
    );
    let r = bake(&t, &base, &[&deb], "cf.raw", &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = r.error_line();
    assert!(
        line.contains("openssh-server") && line.contains("allow-remove: [openssh-server]"),
        "{line}"
    );
    assert_no_output(t.dir.path(), &[]);

    let recipe = t.path("recipe.yaml");
    write(
        &recipe,
        &format!(
            "base: {}\npackages: [{}]\noutput: {}\nallow-remove: [openssh-server]\n",
            base.display(),
            deb.display(),
            t.path("cf.raw").display()
        ),
    );
    let r = run(t.bakery().arg("bake").arg(&recipe).stdin(Stdio::null()));
    r.assert_ok();
    let changes = r.json()["package_changes"].clone();
    let removed: Vec<&serde_json::Value> = changes
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "remove")
        .collect();
    assert_eq!(removed.len(), 1, "{changes}");
    assert_eq!(removed[0]["name"], "openssh-server");
    assert!(removed[0]["from"].as_str().unwrap().contains("9.2p1"));
    assert!(removed[0]["to"].is_null());
    assert!(
        r.stderr.contains("openssh-server"),
        "the removal is not on stderr:\n{}",
        r.stderr
    );
    let img = Mounted::open(&t.path("cf.raw"));
    assert!(img.dpkg_version("openssh-server").is_none());
    assert!(img.dpkg_version("hunt-remote").is_some());
    drop(img);
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(t.dir.path())
    );
}

/// A compiled x86_64 rpm (gcc + rpmbuild) whose generated requirements are
/// `libc.so.6()(64bit)`, `libc.so.6(GLIBC_2.x)(64bit)`, `rtld(GNU_HASH)`, plus `requires`.
fn compiled_rpm(dir: &Path, name: &str, requires: &[&str]) -> PathBuf {
    let top = dir.join(format!("rpmbuild-{name}"));
    for d in ["SPECS", "SOURCES", "BUILD", "RPMS"] {
        std::fs::create_dir_all(top.join(d)).unwrap();
    }
    write(
        &top.join("SOURCES/hello.c"),
        "#include <stdio.h>\n#include <string.h>\nint main(int c, char **v) { puts(c > 1 ? strdup(v[1]) : \"hello from an rpm\"); return 0; }\n",
    );
    let reqs: String = requires
        .iter()
        .map(|r| format!("Requires: {r}\n"))
        .collect();
    write(
        &top.join(format!("SPECS/{name}.spec")),
        &format!(
            "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: one compiled program\nLicense: MIT\nSource0: hello.c\n{reqs}%description\ncompiled\n%global debug_package %{{nil}}\n%build\ncc -O2 -o {name} %{{SOURCE0}}\n%install\ninstall -D -m 0755 {name} %{{buildroot}}/usr/bin/{name}\n%files\n/usr/bin/{name}\n"
        ),
    );
    let r = run(Command::new("rpmbuild")
        .arg("--quiet")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("-bb")
        .arg(top.join(format!("SPECS/{name}.spec"))));
    assert_eq!(r.code, 0, "rpmbuild: {}", r.stderr);
    let rpm = top.join(format!("RPMS/x86_64/{name}-1.0-1.x86_64.rpm"));
    let q = run(Command::new("rpm").args(["-qpR"]).arg(&rpm));
    assert!(
        q.stdout.contains("libc.so.6()(64bit)") && q.stdout.contains("rtld(GNU_HASH)"),
        "rpmbuild generated no soname requirements: {}",
        q.stdout
    );
    rpm
}

/// Case rpm-soname-deps. Fails on main: "dependencies not met in the image: libc.so.6()(64bit),
/// ... rtld(GNU_HASH)". A requirement the image's libc does not define is still refused, named.
#[test]
fn a_compiled_rpm_installs_on_the_debian_base_and_missing_libraries_are_named() {
    let t = TestDir::new("rpm-elf");
    let base = base_image();
    let good = compiled_rpm(t.dir.path(), "hunt-elf", &[]);
    let r = bake(&t, &base, &[&good], "elf.raw", &[]);
    r.assert_ok();
    let img = Mounted::open(&t.path("elf.raw"));
    assert!(img.path("/usr/bin/hunt-elf").exists());
    assert_eq!(img.rpm_q("hunt-elf").as_deref(), Some("1.0-1"));
    drop(img);

    let bad = compiled_rpm(
        t.dir.path(),
        "hunt-elf-bad",
        &[
            "libc.so.6(GLIBC_9.99)(64bit)",
            "libdoesnotexist.so.1()(64bit)",
        ],
    );
    let r = bake(&t, &base, &[&bad], "bad.raw", &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = r.error_line();
    assert!(
        line.contains("libc.so.6(GLIBC_9.99)(64bit)")
            && line.contains("libdoesnotexist.so.1()(64bit)")
            && !line.contains("rtld(GNU_HASH)")
            && !line.contains("libc.so.6()(64bit)"),
        "{line}"
    );
    assert_no_output(t.dir.path(), &["elf.raw"]);
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(t.dir.path())
    );
}

/// Case rpm-rich-deps. Fails on main: `(bash or zsh)` came out as `(bash` and failed.
#[test]
fn rpm_boolean_dependencies_are_evaluated_against_the_image() {
    let t = TestDir::new("rpm-rich");
    let base = base_image();
    let good = build_rpm(
        t.dir.path(),
        &Rpm {
            name: "hunt-rich",
            version: "1.0",
            release: "1",
            requires: &[
                "(bash or zsh)",
                "(coreutils and sed)",
                "(zsh if nosuchpkg-x)",
                "((dash or ksh) and grep)",
                "(grep if coreutils else zsh)",
            ],
            files: &[("/opt/hunt-rich/README", "rich")],
            post: None,
        },
    );
    let r = bake(&t, &base, &[&good], "rich.raw", &[]);
    r.assert_ok();
    let img = Mounted::open(&t.path("rich.raw"));
    assert_eq!(img.read("/opt/hunt-rich/README"), "rich\n");
    drop(img);

    let bad = build_rpm(
        t.dir.path(),
        &Rpm {
            name: "hunt-rich-bad",
            version: "1.0",
            release: "1",
            requires: &["(bash or zsh)", "(zsh or ksh)"],
            files: &[("/opt/hunt-rich-bad/README", "rich")],
            post: None,
        },
    );
    let r = bake(&t, &base, &[&bad], "bad.raw", &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = r.error_line();
    assert!(
        line.contains("(zsh or ksh)") && !line.contains("(bash or zsh)"),
        "{line}"
    );
    assert_no_output(t.dir.path(), &["rich.raw"]);
    assert!(
        leaks_of(t.dir.path()).is_empty(),
        "{:?}",
        leaks_of(t.dir.path())
    );
}
