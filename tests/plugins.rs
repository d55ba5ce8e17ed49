//! The shipped plugins (`plugins/notify-webhook`, `plugins/judge-metrics-file`) run as bakery runs
//! them: found with `bakery::plugin::find`, driven by `call`/`run_hook`, and as plain processes.
//! Webhooks go to a one-request HTTP listener on 127.0.0.1; nothing leaves the host. Needs python3.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bakery::plugin::{self, Event, Hook, PluginSpec};
use serde_json::{json, Value};

fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins")
}

fn shipped(name: &str) -> PathBuf {
    plugin::find(name, &[plugins_dir()]).unwrap()
}

/// What the listener received.
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Accept one HTTP request on 127.0.0.1, answer with `status`, hand back what came in.
fn listen_once(status: &'static str) -> (String, JoinHandle<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (stream, _) = loop {
            match listener.accept() {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("no request reached the listener: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .unwrap()
            .1
            .parse()
            .unwrap();
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let reply = if status.starts_with('2') {
            "ok"
        } else {
            "internal_error"
        };
        let mut stream = stream;
        write!(stream, "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len()).unwrap();
        Request {
            line: line.trim_end().to_string(),
            headers,
            body: serde_json::from_slice(&body).unwrap(),
        }
    });
    (
        format!("http://127.0.0.1:{port}/services/T000/B000/SECRETTOKEN"),
        handle,
    )
}

/// Run a plugin as a plain process: `PLUGIN HOOK` with `event` on stdin.
fn run_plugin(name: &str, hook: &str, event: &Value) -> Output {
    let mut child = Command::new(shipped(name))
        .arg(hook)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(event.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ami_manifest() -> Value {
    json!({
        "bakery_version": "0.1.0", "kind": "ami", "bake_id": "bk-3f9c2a41d07e",
        "name": "helloapp-1.2.3-1-amd64-202601021504",
        "package": {"kind": "deb", "file": "/tmp/helloapp.deb", "name": "helloapp", "version": "1.2.3", "release": "1", "arch": "amd64"},
        "amis": [
            {"region": "us-east-1", "image_id": "ami-0123456789abcdef0", "snapshot_id": "snap-1", "reused": false},
            {"region": "eu-west-1", "image_id": "ami-0fedcba9876543210", "snapshot_id": "snap-2", "reused": false}
        ],
        "tags": {}, "timings": [], "total_seconds": 192.4, "log": "/var/tmp/bakery/bk-3f9c2a41d07e/bake.log"
    })
}

fn post_bake_event(config: Value, status: &str, error: Option<&str>, manifest: Value) -> Event {
    Event {
        config,
        status: Some(status.into()),
        error: error.map(str::to_string),
        manifest: Some(manifest),
        ..Event::new(Hook::PostBake, "bk-3f9c2a41d07e")
    }
}

#[test]
fn the_shipped_plugins_are_found_in_the_repo_and_are_executable() {
    for name in ["notify-webhook", "judge-metrics-file"] {
        assert_eq!(shipped(name), plugins_dir().join(name));
    }
    let e = plugin::find("no-such-plugin", &[plugins_dir()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&plugins_dir().display().to_string())
            && e.contains("bakery-plugin-no-such-plugin"),
        "{e}"
    );
}

#[test]
fn notify_webhook_posts_a_slack_summary_of_an_ami_bake() {
    let (url, got) = listen_once("200 OK");
    let event = post_bake_event(
        json!({"url": url, "channel": "#deploys", "username": "bakery"}),
        "succeeded",
        None,
        ami_manifest(),
    );
    let out = run_plugin(
        "notify-webhook",
        "post-bake",
        &serde_json::to_value(&event).unwrap(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply, json!({"message": "posted to 127.0.0.1"}));

    let req = got.join().unwrap();
    assert_eq!(req.line, "POST /services/T000/B000/SECRETTOKEN HTTP/1.1");
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body = &req.body;
    let summary = body["text"].as_str().unwrap();
    assert!(
        summary.contains("helloapp-1.2.3-1-amd64-202601021504") && summary.contains("succeeded"),
        "{summary}"
    );
    assert_eq!(
        (&body["channel"], &body["username"]),
        (&json!("#deploys"), &json!("bakery"))
    );
    let blocks = body["blocks"].to_string();
    for want in [
        "us-east-1: ami-0123456789abcdef0",
        "eu-west-1: ami-0fedcba9876543210",
        "helloapp 1.2.3-1",
        "3m12s",
        "bk-3f9c2a41d07e",
    ] {
        assert!(blocks.contains(want), "blocks lack {want:?}: {blocks}");
    }
    assert!(
        !text(&out.stdout).contains("SECRETTOKEN"),
        "the webhook path is a secret"
    );
}

#[test]
fn notify_webhook_reports_a_failed_local_bake_with_its_error_line() {
    let (url, got) = listen_once("200 OK");
    let manifest = json!({"name": "helloapp-1.2.3-1-amd64-202601021504", "output": {"path": "/srv/images/helloapp.qcow2"}, "total_seconds": 12});
    let event = post_bake_event(
        json!({"url": url}),
        "failed",
        Some("package helloapp: postinst exited 1\nsee the log"),
        manifest,
    );
    let out = run_plugin(
        "notify-webhook",
        "post-bake",
        &serde_json::to_value(&event).unwrap(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let body = got.join().unwrap().body;
    let summary = body["text"].as_str().unwrap();
    assert!(
        summary.contains("helloapp-1.2.3-1-amd64-202601021504") && summary.contains("failed"),
        "{summary}"
    );
    assert!(
        summary.contains("postinst exited 1") && !summary.contains("see the log"),
        "{summary}"
    );
    assert!(body["blocks"]
        .to_string()
        .contains("/srv/images/helloapp.qcow2"));
    assert!(body.get("channel").is_none());
}

#[test]
fn notify_webhook_exits_1_with_the_http_status_when_the_post_fails() {
    let (url, got) = listen_once("500 Internal Server Error");
    let event = post_bake_event(json!({"url": url}), "succeeded", None, ami_manifest());
    let out = run_plugin(
        "notify-webhook",
        "post-bake",
        &serde_json::to_value(&event).unwrap(),
    );
    got.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("HTTP 500") && err.contains("127.0.0.1") && !err.contains("SECRETTOKEN"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn notify_webhook_without_a_url_exits_2() {
    let event = post_bake_event(
        json!({"channel": "#deploys"}),
        "succeeded",
        None,
        ami_manifest(),
    );
    let out = run_plugin(
        "notify-webhook",
        "post-bake",
        &serde_json::to_value(&event).unwrap(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("config.url is required"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn notify_webhook_ignores_other_hooks() {
    let event = Event::new(Hook::PostProvision, "bk-1");
    let out = run_plugin(
        "notify-webhook",
        "post-provision",
        &serde_json::to_value(&event).unwrap(),
    );
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty());
}

fn metrics_file(dir: &Path, canary: Value) -> PathBuf {
    let path = dir.join("metrics.json");
    let m = json!({"baseline": {"error_rate": 0.01, "latency_p99_ms": 200, "cpu_pct": 40}, "canary": canary});
    std::fs::write(&path, m.to_string()).unwrap();
    path
}

fn judge(config: Value) -> anyhow::Result<plugin::Reply> {
    let event = Event {
        config,
        ..Event::new(Hook::Judge, "dp-1")
    };
    plugin::call(
        &shipped("judge-metrics-file"),
        Hook::Judge,
        &event,
        Duration::from_secs(30),
    )
}

#[test]
fn judge_metrics_file_scores_a_healthy_canary_100() {
    let t = tempfile::tempdir().unwrap();
    let m = metrics_file(
        t.path(),
        json!({"error_rate": 0.0105, "latency_p99_ms": 190, "cpu_pct": 44}),
    );
    let r = judge(json!({"metrics": m})).unwrap();
    assert_eq!(r.score, Some(100.0));
    assert_eq!(r.reason.as_deref(), Some("3/3 metrics within threshold"));
}

#[test]
fn judge_metrics_file_scores_regressions_by_the_share_within_threshold() {
    let t = tempfile::tempdir().unwrap();
    let m = metrics_file(
        t.path(),
        json!({"error_rate": 0.02, "latency_p99_ms": 260, "cpu_pct": 41}),
    );
    let r = judge(json!({"metrics": m})).unwrap();
    assert!((r.score.unwrap() - 33.33).abs() < 0.01, "{r:?}");
    let reason = r.reason.unwrap();
    assert!(reason.starts_with("1/3 metrics within threshold: error_rate 2.00x baseline (max 1.1x); latency_p99_ms 1.30x"), "{reason}");
    // Per-metric thresholds loosen the check.
    let r = judge(json!({"metrics": m, "thresholds": {"error_rate": 2.5, "latency_p99_ms": 1.5}}))
        .unwrap();
    assert_eq!(r.score, Some(100.0));
}

#[test]
fn judge_metrics_file_without_metrics_fails_and_ignores_other_hooks() {
    let e = judge(json!({})).unwrap_err().to_string();
    assert!(e.starts_with("plugin judge-metrics-file (judge) failed (exit 2): judge-metrics-file: config.metrics is required"), "{e}");
    let r = plugin::call(
        &shipped("judge-metrics-file"),
        Hook::PostBake,
        &Event::new(Hook::PostBake, "bk-1"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(r, plugin::Reply::default());
}

#[test]
fn run_hook_drives_the_shipped_plugins_for_post_bake() {
    let (url, got) = listen_once("200 OK");
    let specs = vec![
        PluginSpec {
            name: "notify-webhook".into(),
            config: json!({"url": url}),
            timeout: Some(30),
        },
        PluginSpec::named("judge-metrics-file"), // not a post-bake plugin: answers nothing
    ];
    let plugins = plugin::resolve(&specs, &[plugins_dir()]).unwrap();
    assert_eq!(plugins[0].1, plugins_dir().join("notify-webhook"));
    let base = post_bake_event(json!(null), "succeeded", None, ami_manifest());
    let tags = plugin::run_hook(&plugins, Hook::PostBake, &base).unwrap();
    assert!(tags.is_empty());
    let body = got.join().unwrap().body;
    assert!(body["text"]
        .as_str()
        .unwrap()
        .contains("helloapp-1.2.3-1-amd64-202601021504"));
}

#[test]
fn run_hook_reports_a_failing_webhook_naming_the_plugin() {
    let (url, got) = listen_once("500 Internal Server Error");
    let specs = vec![PluginSpec {
        name: "notify-webhook".into(),
        config: json!({"url": url}),
        timeout: None,
    }];
    let plugins = plugin::resolve(&specs, &[plugins_dir()]).unwrap();
    let e = plugin::run_hook(
        &plugins,
        Hook::PostBake,
        &post_bake_event(json!(null), "succeeded", None, ami_manifest()),
    )
    .unwrap_err();
    got.join().unwrap();
    let e = e.to_string();
    assert!(e.starts_with("plugin notify-webhook (post-bake) failed (exit 1): notify-webhook: POST to 127.0.0.1 returned HTTP 500"), "{e}");
}

#[test]
fn run_judge_scores_a_canary_with_the_shipped_judge() {
    let t = tempfile::tempdir().unwrap();
    let m = metrics_file(t.path(), json!({"error_rate": 0.01, "latency_p99_ms": 500}));
    let specs = vec![PluginSpec {
        name: "judge-metrics-file".into(),
        config: json!({"metrics": m}),
        timeout: Some(30),
    }];
    let plugins = plugin::resolve(&specs, &[plugins_dir()]).unwrap();
    let v = plugin::run_judge(&plugins, &Event::new(Hook::Judge, "dp-1")).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0].plugin.as_str(), v[0].score),
        ("judge-metrics-file", 50.0)
    );
    assert!(
        v[0].reason
            .as_deref()
            .unwrap()
            .contains("not compared: cpu_pct"),
        "{:?}",
        v[0].reason
    );
}
