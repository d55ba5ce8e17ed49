//! Packages by name and by URL (issue 13 §4, case bake/package-by-name): `--package NAME`,
//! `NAME=VERSION` and a recipe's `packages: [NAME]` install from the image's own apt sources;
//! `--package http://...` is downloaded on the host (with an optional `#sha256=` pin) and
//! installed as a file. Nothing leaves the host: the apt repository and the package URL are
//! served from this test on 127.0.0.1, and a layer points the image's apt sources at it.
//! Before this change every one of these failed with `<cwd>/jq: no such file`.
//! apt's other spellings (`name/release` from a second suite, `name:arch`) and the checksum of a
//! package installed by name came later: before them, `name:arch` was refused as no package,
//! `name/release` read as a missing file, and a name's manifest entry had no `sha256`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use support::*;

/// A static file server on 127.0.0.1 for `dir` (404 for what is not there); lives as long as
/// the test process. Returns its base URL.
fn serve(dir: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let path = path.trim_start_matches('/').replace("%2B", "+");
                let mut s = stream;
                let file = dir.join(&path);
                match std::fs::read(&file) {
                    Ok(body) if !path.contains("..") => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(&body);
                    }
                    _ => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn sha256_hex(p: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A flat apt repository (`deb [trusted=yes] URL ./`) holding `debs`, and a layer that makes it
/// the image's only apt source.
fn apt_repo(t: &TestDir, debs: &[PathBuf]) -> (String, PathBuf) {
    let repo = t.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    for d in debs {
        std::fs::copy(d, repo.join(d.file_name().unwrap())).unwrap();
    }
    let scan = std::process::Command::new("dpkg-scanpackages")
        .args(["--multiversion", "."])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(scan.status.success(), "dpkg-scanpackages failed");
    std::fs::write(repo.join("Packages"), &scan.stdout).unwrap();
    let sha = sha256_hex(&repo.join("Packages"));
    write(
        &repo.join("Release"),
        &format!(
            "Origin: bakery-tests\nLabel: bakery-tests\nSuite: tests\nCodename: tests\nDate: Mon, 30 Nov 2026 00:00:00 UTC\nArchitectures: amd64 all\nSHA256:\n {sha} {} Packages\n",
            scan.stdout.len()
        ),
    );
    let url = serve(&repo);
    let layer = t.path("local-apt");
    std::fs::create_dir_all(&layer).unwrap();
    write(
        &layer.join("layer.yaml"),
        &format!(
            "name: local-apt\nsteps:\n  - run: \"rm -f /etc/apt/sources.list.d/*; echo 'deb [trusted=yes] {url} ./' > /etc/apt/sources.list\"\n"
        ),
    );
    (url, layer)
}

fn manifest_package(m: &serde_json::Value, i: usize) -> serde_json::Value {
    m["packages"][i].clone()
}

#[test]
fn packages_by_name_and_pinned_version_install_from_the_image_sources() {
    let t = TestDir::new("pkg-by-name");
    let base = base_image();
    let v1 = build_deb(
        &t.path(""),
        &Deb {
            name: "named-app",
            version: "1.0-1",
            files: &[("/opt/named-app/VERSION", "1.0\n")],
            ..Default::default()
        },
    );
    let v2 = build_deb(
        &t.path(""),
        &Deb {
            name: "named-app",
            version: "2.0-1",
            files: &[("/opt/named-app/VERSION", "2.0\n")],
            ..Default::default()
        },
    );
    let v2_sha = sha256_hex(&v2);
    let (_url, layer) = apt_repo(&t, &[v1, v2]);

    // A bare name: the newest version the sources have; the manifest says what was installed.
    let out = t.path("by-name.raw");
    let r = run(t
        .bakery()
        .arg("bake")
        .arg("--base")
        .arg(&base)
        .arg("--layer")
        .arg(&layer)
        .args(["--package", "named-app", "--output"])
        .arg(&out));
    r.assert_ok();
    let m = r.json();
    let p = manifest_package(&m, 0);
    assert_eq!(p["origin"], "name", "{p}");
    assert_eq!(p["source"], "named-app");
    assert_eq!(p["installed_version"], "2.0-1");
    assert_eq!(
        (p["version"].as_str(), p["release"].as_str()),
        (Some("2.0"), Some("1"))
    );
    assert_eq!(p["kind"], "deb");
    // The checksum of the archive apt installed: the .deb the repository serves.
    assert_eq!(p["sha256"], v2_sha.as_str(), "{p}");
    assert_eq!(m["tags"]["appversion"], "named-app-2.0-1");
    let name = m["name"].as_str().unwrap();
    // Aminator's name from what was installed (a named package's has no architecture part).
    assert!(name.starts_with("named-app-2.0-1-2"), "{name}");
    {
        let img = Mounted::open(&out);
        assert_eq!(img.dpkg_version("named-app").as_deref(), Some("2.0-1"));
    }
    assert_no_leaks(t.dir.path());

    // `name=version` pins it, also from a recipe (a name there is not a file of the recipe's
    // directory).
    let recipe = t.path("pinned.yaml");
    write(
        &recipe,
        &format!(
            "base: {}\nlayers: [{}]\npackages: [named-app=1.0-1]\noutput: pinned.raw\n",
            base.display(),
            layer.display()
        ),
    );
    let r = run(t.bakery().arg("bake").arg(&recipe));
    r.assert_ok();
    let p = manifest_package(&r.json(), 0);
    assert_eq!(p["source"], "named-app=1.0-1");
    assert_eq!(p["installed_version"], "1.0-1");
    {
        let img = Mounted::open(&t.path("pinned.raw"));
        assert_eq!(img.read("/opt/named-app/VERSION"), "1.0\n");
    }
    assert_no_leaks(t.dir.path());

    // A name or version the sources do not have: exit 2, one line naming the flag and the
    // package, nothing left.
    for (spec, says) in [
        ("no-such-app", "no-such-app"),
        ("named-app=9.9-9", "named-app=9.9-9"),
    ] {
        let out = t.path("unknown.raw");
        let r = run(t
            .bakery()
            .arg("bake")
            .arg("--base")
            .arg(&base)
            .arg("--layer")
            .arg(&layer)
            .args(["--package", spec, "--output"])
            .arg(&out));
        assert_eq!(r.code, 2, "{spec}: {}", r.stderr);
        let e = r.error_line();
        assert!(e.contains("--package") && e.contains(says), "{e}");
        assert!(e.contains("not in the image's package sources"), "{e}");
        assert!(!out.exists());
        assert_no_output(t.dir.path(), &["by-name.raw", "pinned.raw"]);
        assert_no_leaks(t.dir.path());
    }
}

#[test]
fn a_package_url_is_downloaded_pinned_and_checked_before_anything_is_made() {
    let t = TestDir::new("pkg-by-url");
    let tmp = t.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let base = base_image();
    let www = t.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let deb = build_deb(
        &www,
        &Deb {
            name: "url-app",
            version: "3.1-2",
            files: &[("/opt/url-app/README", "from a URL\n")],
            ..Default::default()
        },
    );
    let sha = sha256_hex(&deb);
    let url = format!("{}/url-app_3.1-2_all.deb", serve(&www));

    // Right pin: installed, and the manifest records the URL and its digest.
    let out = t.path("url.raw");
    let r = run(t
        .bakery()
        .env("TMPDIR", &tmp)
        .arg("bake")
        .arg("--base")
        .arg(&base)
        .args(["--package", &format!("{url}#sha256={sha}"), "--output"])
        .arg(&out));
    r.assert_ok();
    let m = r.json();
    let p = manifest_package(&m, 0);
    assert_eq!(p["origin"], "url", "{p}");
    assert_eq!(p["source"], url.as_str());
    assert_eq!(p["sha256"], sha.as_str());
    assert_eq!(p["installed_version"], "3.1-2");
    assert!(m["name"]
        .as_str()
        .unwrap()
        .starts_with("url-app-3.1-2-all-"));
    {
        let img = Mounted::open(&out);
        assert_eq!(img.read("/opt/url-app/README"), "from a URL\n");
    }
    assert_no_leaks(t.dir.path());
    assert_eq!(leaks_of(t.dir.path()), Vec::<String>::new());

    // Wrong pin: exit 2 naming the flag and both digests; nothing made, the download removed.
    let wrong = "0".repeat(64);
    let bad_out = t.path("bad.raw");
    let r = run(t
        .bakery()
        .env("TMPDIR", &tmp)
        .arg("bake")
        .arg("--base")
        .arg(&base)
        .args(["--package", &format!("{url}#sha256={wrong}"), "--output"])
        .arg(&bad_out));
    assert_eq!(r.code, 2, "{}", r.stderr);
    let e = r.error_line();
    assert!(
        e.contains("--package") && e.contains(&sha) && e.contains(&wrong),
        "{e}"
    );
    assert!(!bad_out.exists());
    assert_no_output(t.dir.path(), &["url.raw"]);
    assert_no_leaks(t.dir.path());
    assert_eq!(leaks_of(t.dir.path()), Vec::<String>::new());

    // Not on the server: a clear error naming the URL and the answer.
    let missing = url.replace("url-app_", "gone_");
    let r = run(t
        .bakery()
        .env("TMPDIR", &tmp)
        .arg("bake")
        .arg("--base")
        .arg(&base)
        .args(["--package", &missing, "--output"])
        .arg(&bad_out));
    assert_eq!(r.code, 2, "{}", r.stderr);
    let e = r.error_line();
    assert!(e.contains(&missing) && e.contains("404"), "{e}");
    assert!(!bad_out.exists());
    assert_eq!(leaks_of(t.dir.path()), Vec::<String>::new());

    // Dry run: the kinds, without downloading (the server would 404 this one).
    let r = run(t
        .bakery()
        .arg("bake")
        .args([
            "--package",
            "jq=1.6-2.1",
            "--package",
            &missing,
            "--dry-run",
            "--output",
        ])
        .arg(&bad_out));
    r.assert_ok();
    let plan = r.json();
    assert_eq!(plan["package_sources"][0]["origin"], "name");
    assert_eq!(plan["package_sources"][1]["origin"], "url");
    assert_eq!(plan["package_sources"][1]["source"], missing.as_str());
}

#[test]
fn an_unpinned_name_names_and_keys_the_ami_by_the_version_installed() {
    let emu = support::emulator::Emulator::start();
    for (k, v) in emu.env() {
        // Set before any thread of this test reads them.
        std::env::set_var(k, v);
    }
    let t = TestDir::new("pkg-name-ami");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    let (base_ami, _) = publish_test_base(&rt, &ctx, "us-east-1", "bakery-base-named");
    let v2 = build_deb(
        &t.path(""),
        &Deb {
            name: "named-app",
            version: "2.0-1",
            ..Default::default()
        },
    );
    let (_url, layer) = apt_repo(&t, &[v2]);
    let mut c = t.bakery();
    emu.apply(&mut c);
    let r = run(c
        .args(["bake", "--base", &base_ami, "--layer"])
        .arg(&layer)
        .args([
            "--package",
            "named-app",
            "--output",
            "ami",
            "--region",
            "us-east-1",
            "--mode",
            "direct",
        ]));
    r.assert_ok();
    let m = r.json();
    let name = m["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("named-app-2.0-1-2"), "{name}");
    let ami = m["amis"][0]["image_id"].as_str().unwrap().to_string();
    let img = rt
        .block_on(
            ctx.ec2("us-east-1")
                .describe_images()
                .image_ids(&ami)
                .send(),
        )
        .unwrap();
    let image = &img.images()[0];
    assert_eq!(image.name(), Some(name.as_str()));
    let tags: std::collections::BTreeMap<String, String> = image
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tags.get("appversion").map(String::as_str),
        Some("named-app-2.0-1")
    );
    assert_eq!(
        tags.get(bakery::naming::BAKE_KEY_TAG).map(String::len),
        Some(64),
        "{tags:?}"
    );
    assert_eq!(m["packages"][0]["installed_version"], "2.0-1");
    assert_no_leaks(t.dir.path());
}

/// Flat apt repositories (`deb [trusted=yes] URL/SUITE/ ./`), one per `(suite, debs,
/// not_automatic)`, each with a Release file naming its suite (and, for a backports-like
/// suite, `NotAutomatic: yes` + `ButAutomaticUpgrades: yes`, as Debian's backports have), and a
/// layer that makes them the image's only apt sources.
fn apt_suites(t: &TestDir, suites: &[(&str, Vec<PathBuf>, bool)]) -> PathBuf {
    let root = t.path("suites");
    let mut lines = String::new();
    let url = serve(&root);
    for (suite, debs, not_automatic) in suites {
        let dir = root.join(suite);
        std::fs::create_dir_all(&dir).unwrap();
        for d in debs {
            std::fs::copy(d, dir.join(d.file_name().unwrap())).unwrap();
        }
        let scan = std::process::Command::new("dpkg-scanpackages")
            .args(["--multiversion", "."])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(scan.status.success(), "dpkg-scanpackages failed");
        std::fs::write(dir.join("Packages"), &scan.stdout).unwrap();
        let sha = sha256_hex(&dir.join("Packages"));
        let pin = if *not_automatic {
            "NotAutomatic: yes\nButAutomaticUpgrades: yes\n"
        } else {
            ""
        };
        write(
            &dir.join("Release"),
            &format!(
                "Origin: bakery-tests\nLabel: bakery-tests\nSuite: {suite}\nCodename: {suite}\n{pin}Date: Mon, 30 Nov 2026 00:00:00 UTC\nArchitectures: amd64 all\nSHA256:\n {sha} {} Packages\n",
                scan.stdout.len()
            ),
        );
        lines.push_str(&format!("deb [trusted=yes] {url}/{suite}/ ./\\n"));
    }
    let layer = t.path("local-apt-suites");
    std::fs::create_dir_all(&layer).unwrap();
    write(
        &layer.join("layer.yaml"),
        &format!(
            "name: local-apt-suites\nsteps:\n  - run: \"rm -f /etc/apt/sources.list.d/*; printf '{lines}' > /etc/apt/sources.list\"\n"
        ),
    );
    layer
}

#[test]
fn apt_spellings_install_the_release_and_architecture_asked_for_with_their_checksums() {
    let t = TestDir::new("pkg-apt-spellings");
    let base = base_image();
    let v1 = build_deb(
        &t.path(""),
        &Deb {
            name: "named-app",
            version: "1.0-1",
            files: &[("/opt/named-app/VERSION", "1.0\n")],
            ..Default::default()
        },
    );
    let v2 = build_deb(
        &t.path(""),
        &Deb {
            name: "named-app",
            version: "2.0-1",
            files: &[("/opt/named-app/VERSION", "2.0\n")],
            ..Default::default()
        },
    );
    let native = build_deb(
        &t.path(""),
        &Deb {
            name: "arch-app",
            version: "1.0-1",
            arch: "amd64",
            files: &[("/opt/arch-app/README", "amd64\n")],
            ..Default::default()
        },
    );
    // The newer version only in a backports-like suite: without `/tests-backports` apt would
    // install 1.0-1 (a NotAutomatic suite's versions are never the candidate).
    let layer = apt_suites(
        &t,
        &[
            ("tests", vec![v1.clone(), native.clone()], false),
            ("tests-backports", vec![v2.clone()], true),
        ],
    );
    let out = t.path("spellings.raw");
    let r = run(t
        .bakery()
        .arg("bake")
        .arg("--base")
        .arg(&base)
        .arg("--layer")
        .arg(&layer)
        .args([
            "--package",
            "named-app/tests-backports",
            "--package",
            "arch-app:amd64",
            "--output",
        ])
        .arg(&out));
    r.assert_ok();
    let m = r.json();
    let p = manifest_package(&m, 0);
    assert_eq!(p["origin"], "name", "{p}");
    assert_eq!(p["source"], "named-app/tests-backports");
    assert_eq!(p["installed_version"], "2.0-1", "{p}");
    assert_eq!(p["sha256"], sha256_hex(&v2).as_str(), "{p}");
    let a = manifest_package(&m, 1);
    assert_eq!(a["source"], "arch-app:amd64");
    assert_eq!(a["installed_version"], "1.0-1");
    assert_eq!(a["arch"], "amd64", "{a}");
    assert_eq!(a["sha256"], sha256_hex(&native).as_str(), "{a}");
    // The image name and appversion from the version installed, as for a bare name.
    assert_eq!(m["tags"]["appversion"], "named-app-2.0-1");
    let name = m["name"].as_str().unwrap();
    assert!(name.starts_with("named-app-2.0-1-2"), "{name}");
    {
        let img = Mounted::open(&out);
        assert_eq!(img.read("/opt/named-app/VERSION"), "2.0\n");
        assert_eq!(img.read("/opt/arch-app/README"), "amd64\n");
        // Generalized: apt's downloads are not kept in the image.
        let cached: Vec<String> = std::fs::read_dir(img.path("/var/cache/apt/archives"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".deb"))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(cached, Vec::<String>::new());
    }
    assert_no_leaks(t.dir.path());

    // An architecture the image does not have, and a release its sources do not have: exit 2,
    // one line naming where it was given and what to do, nothing left. The release through a
    // recipe, whose field is named as such.
    let recipe = t.path("no-release.yaml");
    write(
        &recipe,
        &format!(
            "base: {}\nlayers: [{}]\npackages: [named-app/no-such-suite]\noutput: no-release.raw\n",
            base.display(),
            layer.display()
        ),
    );
    let bad_out = t.path("wrong-arch.raw");
    let mut flag = t.bakery();
    flag.arg("bake")
        .arg("--base")
        .arg(&base)
        .arg("--layer")
        .arg(&layer)
        .args(["--package", "named-app:arm64", "--output"])
        .arg(&bad_out);
    let mut from_recipe = t.bakery();
    from_recipe.arg("bake").arg(&recipe);
    for (mut c, field, spec, says) in [
        (
            flag,
            "--package",
            "named-app:arm64",
            "dpkg --add-architecture arm64",
        ),
        (
            from_recipe,
            "recipe `packages`",
            "named-app/no-such-suite",
            "apt-cache policy",
        ),
    ] {
        let r = run(&mut c);
        assert_eq!(r.code, 2, "{spec}: {}", r.stderr);
        let e = r.error_line();
        assert!(
            e.contains(field) && e.contains(spec) && e.contains(says),
            "{e}"
        );
        assert!(!bad_out.exists() && !t.path("no-release.raw").exists());
        assert_no_output(t.dir.path(), &["spellings.raw"]);
        assert_no_leaks(t.dir.path());
    }
}
