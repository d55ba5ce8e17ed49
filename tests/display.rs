//! What people see on stderr: a bake on a real pseudo-terminal (tmux, which keeps the screen as a
//! terminal shows it, and the raw bytes written to it), and a bake under CI (stderr a pipe).

mod support;

use std::time::{Duration, Instant};

use support::emulator::Emulator;
use support::tmux::Tmux;
use support::*;

/// What a command left on a terminal.
struct Terminal {
    /// The screen and its scrollback, as text (wrapped lines joined).
    screen: String,
    /// Every byte written to the terminal (escape sequences included).
    raw: String,
    code: i32,
    stdout: String,
}

/// Run `args` of bakery on a 160x50 pseudo-terminal in a private tmux server (stdout to a
/// file), with `env` set; wait for it to end (up to 15 minutes).
fn on_terminal(t: &TestDir, env: &[(&str, String)], args: &[&str]) -> Terminal {
    let dir = t.path("tty");
    std::fs::create_dir_all(&dir).unwrap();
    let mut script = String::from("cd \"$1\"; while [ ! -e go ]; do sleep 0.05; done\n");
    for (k, v) in env {
        script.push_str(&format!("export {k}='{v}'\n"));
    }
    script.push_str(&format!(
        "export BAKERY_WORK_DIR='{}'\nunset BAKERY_LAYER_PATH\ncd '{}'\n'{}'",
        t.work().display(),
        repo().display(),
        bakery_exe().display()
    ));
    for a in args {
        script.push_str(&format!(" '{a}'"));
    }
    script.push_str(&format!(
        " >'{0}/stdout'; echo $? >'{0}/rc.tmp'; mv '{0}/rc.tmp' '{0}/rc'; sleep 600\n",
        dir.display()
    ));
    write(&dir.join("run.sh"), &script);
    let run = format!("bash {}/run.sh {}", dir.display(), dir.display());
    let tmux = Tmux::start(&dir, 160, 50, &run);
    let raw_file = dir.join("raw");
    tmux.pipe_to(&raw_file);
    write(&dir.join("go"), "");
    let deadline = Instant::now() + Duration::from_secs(900);
    let rc = loop {
        if let Ok(rc) = std::fs::read_to_string(dir.join("rc")) {
            break rc.trim().parse::<i32>().unwrap();
        }
        if Instant::now() > deadline {
            panic!("the bake did not end in 15 minutes:\n{}", tmux.visible());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_millis(300));
    let screen = tmux.screen();
    drop(tmux);
    Terminal {
        screen,
        raw: String::from_utf8_lossy(&std::fs::read(&raw_file).unwrap_or_default()).into_owned(),
        code: rc,
        stdout: std::fs::read_to_string(dir.join("stdout")).unwrap_or_default(),
    }
}

/// A progress line left on the screen: `⠋ [00:00:07] upload changed blocks`.
fn dead_spinner_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with(|c: char| ('\u{2800}'..='\u{28ff}').contains(&c)) || l.starts_with("[00:")
        })
        .collect()
}

/// SGR (colour) escape sequences in `raw`: `ESC [ digits;... m`.
fn colour_codes(raw: &str) -> usize {
    raw.split('\x1b')
        .skip(1)
        .filter(|s| {
            s.strip_prefix('[').is_some_and(|r| {
                let end = r.find(|c: char| !(c.is_ascii_digit() || c == ';'));
                end.is_some_and(|i| r[i..].starts_with('m'))
            })
        })
        .count()
}

/// `raw` without its SGR sequences.
fn strip_colour(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find("\x1b[") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(|c: char| !(c.is_ascii_digit() || c == ';')) {
            Some(j) if after[j..].starts_with('m') => rest = &after[j + 1..],
            _ => {
                out.push_str("\x1b[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn app_deb(t: &TestDir) -> std::path::PathBuf {
    build_deb(
        t.dir.path(),
        &Deb {
            name: "display-app",
            version: "1.0-1",
            files: &[("/opt/display-app/VERSION", "1.0-1")],
            postinst: Some("echo configured"),
            ..Default::default()
        },
    )
}

fn assert_clean(term: &Terminal) {
    assert_eq!(term.code, 0, "bake failed:\n{}", term.screen);
    let dead = dead_spinner_lines(&term.screen);
    assert!(
        dead.is_empty(),
        "progress lines left on the terminal: {dead:?}\n{}",
        term.screen
    );
    assert!(
        term.screen.contains("  ✓ provision ("),
        "no finished-step line:\n{}",
        term.screen
    );
}

#[test]
fn a_local_bake_on_a_terminal_ends_clean_with_one_final_line() {
    let _leaks = LeakCheck::new();
    let t = TestDir::new("display-local");
    let deb = app_deb(&t);
    let out = t.path("app.raw");
    let base = base_image();
    // -v: debug lines arrive while the spinner runs; NO_COLOR=1: no colour on a terminal.
    let term = on_terminal(
        &t,
        &[("NO_COLOR", "1".into())],
        &[
            "-v",
            "bake",
            "--base",
            base.to_str().unwrap(),
            "--package",
            deb.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_clean(&term);
    let m: serde_json::Value = serde_json::from_str(&term.stdout).expect("the manifest on stdout");
    let last = term
        .screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let name = m["name"].as_str().unwrap();
    assert!(
        last.starts_with(&format!("✓ baked {name} → {} (", out.display())) && last.contains(" in "),
        "the last line says what was made and how long it took: {last:?}\n{}",
        term.screen
    );
    assert!(
        term.screen.contains("DEBUG"),
        "the debug lines are shown:\n{}",
        term.screen
    );
    assert_eq!(
        colour_codes(&term.raw),
        0,
        "NO_COLOR=1, yet colour codes were written:\n{:?}",
        term.raw
    );
    assert_no_leaks(t.dir.path());
}

#[test]
fn under_ci_each_finished_step_is_one_timestamped_line_and_the_log_has_step_headers() {
    let t = TestDir::new("display-ci");
    let deb = app_deb(&t);
    let out = t.path("app.raw");
    let r = run(t
        .bakery()
        .args(["bake", "--color", "always", "--base"])
        .arg(base_image())
        .arg("--package")
        .arg(&deb)
        .arg("--output")
        .arg(&out));
    r.assert_ok();
    let m = r.json();
    let stderr = strip_colour(&r.stderr);
    let steps: Vec<&str> = stderr.lines().filter(|l| l.contains("done in")).collect();
    assert_eq!(
        steps.len(),
        m["timings"].as_array().unwrap().len(),
        "one line per finished step:\n{}",
        r.stderr
    );
    for l in &steps {
        let b = l.as_bytes();
        assert!(
            b.len() > 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z',
            "no timestamp on {l:?}"
        );
        assert!(l.trim_end().ends_with('s'), "no duration on {l:?}");
    }
    assert!(
        !stderr.lines().any(|l| l.trim_end().ends_with(" ...")),
        "a step announced twice (start and end):\n{}",
        r.stderr
    );
    assert!(colour_codes(&r.stderr) > 0, "--color always");
    // The bake's lock file went with it: the locks dir does not grow by one file per bake.
    let left: Vec<String> = std::fs::read_dir(t.work().join("locks"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("bake-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "lock files left by a finished bake: {left:?}"
    );
    // The log: a header per step, with a timestamp, before the step's own output.
    let log = std::fs::read_to_string(m["log"].as_str().unwrap()).unwrap();
    let first = log.lines().next().unwrap_or_default();
    let id = m["bake_id"].as_str().unwrap();
    assert!(
        first.starts_with("==> 20") && first.contains(id),
        "the log opens with the bake's header: {first:?}"
    );
    for step in [
        "copy base",
        "attach loop device",
        "mount image",
        "prepare chroot",
        "seal",
    ] {
        assert!(
            log.lines()
                .any(|l| l.starts_with("==> 20") && l.ends_with(&format!("Z {step}"))),
            "no header for {step} in the log:\n{log}"
        );
    }
    let install = log
        .lines()
        .position(|l| l.starts_with("==> ") && l.contains("install"))
        .expect("a header for the package install");
    let configured = log
        .lines()
        .position(|l| l == "configured")
        .expect("the postinst's output in the log");
    assert!(
        install < configured,
        "the step's header comes before its output"
    );
    assert_no_leaks(t.dir.path());
}

#[test]
fn an_ami_bake_on_a_terminal_shows_byte_progress_and_the_amis_it_made() {
    let emu = Emulator::start();
    for (k, v) in emu.env() {
        // SAFETY (edition 2021: not unsafe): set before any thread of this test reads them.
        std::env::set_var(k, v);
    }
    let t = TestDir::new("display-ami");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    publish_test_base(&rt, &ctx, "us-east-1", "bakery-base-display-1");
    let deb = app_deb(&t);
    let env: Vec<(&str, String)> = emu.env().into_iter().collect();
    let term = on_terminal(
        &t,
        &env,
        &[
            "bake",
            "--base-name",
            "bakery-base-display-*",
            "--package",
            deb.to_str().unwrap(),
            "--output",
            "ami",
            "--region",
            "us-east-1",
            "--copy-to",
            "us-west-2",
            "--mode",
            "direct",
        ],
    );
    assert_clean(&term);
    let m: serde_json::Value = serde_json::from_str(&term.stdout).expect("the manifest on stdout");
    let amis: Vec<String> = m["amis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} ({})",
                a["image_id"].as_str().unwrap(),
                a["region"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        term.screen.contains(&format!(
            "✓ baked {} → {} in ",
            m["name"].as_str().unwrap(),
            amis.join(", ")
        )),
        "the final line names every AMI and its region:\n{}",
        term.screen
    );
    assert!(
        term.raw.contains("iB/s") && term.raw.contains("ETA"),
        "the upload showed bytes, rate and ETA:\n{}",
        term.raw
    );
    assert!(
        term.raw.contains("/1 regions"),
        "the copy showed regions done"
    );
    assert!(
        term.screen.contains("  ✓ upload "),
        "the upload's step line:\n{}",
        term.screen
    );
    assert_no_leaks(t.dir.path());
}

#[test]
fn a_deploy_and_its_rollback_on_a_terminal_end_with_what_changed() {
    use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
    use aws_sdk_ec2::types::RequestLaunchTemplateData;
    let emu = Emulator::start();
    for (k, v) in emu.env() {
        // SAFETY (edition 2021: not unsafe): set before any thread of this test reads them.
        std::env::set_var(k, v);
    }
    let t = TestDir::new("display-deploy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = rt.block_on(bakery::aws::client::AwsContext::load());
    let region = "us-east-1";
    let (new_ami, lt_id) = rt.block_on(async {
        let ec2 = ctx.ec2(region);
        let ami = |name: &'static str| {
            let ec2 = ec2.clone();
            async move {
                ec2.register_image()
                    .name(name)
                    .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
                    .virtualization_type("hvm")
                    .send()
                    .await
                    .unwrap()
                    .image_id
                    .unwrap()
            }
        };
        let old = ami("display-app-1.0").await;
        let new = ami("display-app-1.1").await;
        let lt = ec2
            .create_launch_template()
            .launch_template_name("display-lt")
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(&old)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .launch_template
            .unwrap()
            .launch_template_id
            .unwrap();
        ctx.autoscaling(region)
            .create_auto_scaling_group()
            .auto_scaling_group_name("display-api")
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(&lt)
                    .version("1")
                    .build(),
            )
            .min_size(0)
            .max_size(1)
            .desired_capacity(0)
            .availability_zones(format!("{region}a"))
            .send()
            .await
            .unwrap();
        (new, lt)
    });
    let env: Vec<(&str, String)> = emu.env().into_iter().collect();
    let last_line = |term: &Terminal| {
        term.screen
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .to_string()
    };
    let term = on_terminal(
        &t,
        &env,
        &[
            "deploy",
            "--image",
            &new_ami,
            "--asg",
            "display-api",
            "--region",
            region,
            "--strategy",
            "swap",
        ],
    );
    assert_eq!(term.code, 0, "{}", term.screen);
    let last = last_line(&term);
    assert!(
        last.starts_with("✓ deployed display-api (swap) in ")
            && last.contains(&format!(
                "{region}: display-api launches {new_ami} (launch template {lt_id} version 2, was 1)"
            )),
        "the last line says what changed and how long it took: {last:?}\n{}",
        term.screen
    );
    std::fs::remove_dir_all(t.path("tty")).unwrap();
    let term = on_terminal(
        &t,
        &env,
        &["rollback", "--asg", "display-api", "--region", region],
    );
    assert_eq!(term.code, 0, "{}", term.screen);
    let last = last_line(&term);
    assert!(
        last.starts_with("✓ rolled back display-api in ")
            && last.contains(&format!(
                "{region}: display-api back on launch template version 1"
            )),
        "{last:?}\n{}",
        term.screen
    );
}
