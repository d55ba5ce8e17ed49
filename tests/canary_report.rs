//! The canary report in a real browser (Debian's headless chromium): the page renders with the
//! verdict and score of the judgement, every metric is a cell, each cell's colour is its
//! classification's (hot / cold / neutral / no data) both as computed style and as pixels of a
//! screenshot, each cell opens a panel with its plots, and nothing is fetched from anywhere.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use support::*;

const W: u32 = 1280;
const H: u32 = 2400;

/// Run chromium headless with `args` on `url`, in its own process group (all of it is gone when
/// this returns); its stdout.
fn chromium(t: &TestDir, args: &[&str], url: &str) -> String {
    let profile = t.path(&format!("chromium-profile-{}", uuid_ish()));
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-breakpad",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            &format!("--window-size={W},{H}"),
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("chromium (Debian package `chromium`, in .ci/packages.txt)");
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(120) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    assert!(
        status.is_some_and(|s| s.success()),
        "chromium failed or hung ({status:?})"
    );
    reader.join().unwrap()
}

fn uuid_ish() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The expected colour of a cell of each classification (report.rs).
fn colour(class: &str) -> [u8; 3] {
    match class {
        "High" => [0xd6, 0x60, 0x4d],
        "Low" => [0x43, 0x93, 0xc3],
        "Pass" => [0xd9, 0xd9, 0xd9],
        "Nodata" | "NodataFailMetric" => [0xff, 0xff, 0xff],
        other => panic!("classification {other}"),
    }
}

fn csv(path: &Path, rows: &[(&str, Vec<f64>)]) {
    let mut s = String::from("metric,timestamp,value\n");
    for (m, v) in rows {
        for (i, x) in v.iter().enumerate() {
            s.push_str(&format!("{m},{},{x}\n", 1_764_000_000 + 60 * i));
        }
    }
    write(path, &s);
}

fn around(c: f64, s: f64, seed: usize) -> Vec<f64> {
    (0..45)
        .map(|i| c + s * ((((i * 7919 + seed * 104_729) % 1000) as f64) / 500.0 - 1.0))
        .collect()
}

/// Every number as a float (JavaScript writes 50.0 as 50).
fn floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(floats).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), floats(v))).collect()),
        other => other.clone(),
    }
}

const PROBE: &str = r#"<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" src="report.html" style="position:absolute;left:0;top:0;width:1280px;height:2400px;border:0"></iframe>
<script>
const f = document.getElementById('f');
f.addEventListener('load', () => {
  const d = f.contentDocument;
  const cells = [...d.querySelectorAll('a.cell')].map(a => {
    const r = a.getBoundingClientRect();
    const p = d.querySelector(a.getAttribute('href'));
    return {metric: a.dataset.metric, cls: a.dataset.class, bg: getComputedStyle(a).backgroundColor,
            x: r.left, y: r.top, w: r.width, h: r.height, panel: !!p,
            svgs: p ? p.querySelectorAll('svg').length : 0, shown: p ? getComputedStyle(p).display : ''};
  });
  const first = d.querySelector('a.cell');
  first.click();
  setTimeout(() => {
    const p = d.querySelector(first.getAttribute('href'));
    const out = {verdict: d.getElementById('verdict').textContent, score: d.getElementById('score').textContent,
      cells, opened: getComputedStyle(p).display,
      data: JSON.parse(d.getElementById('canary-data').textContent),
      fetches: d.querySelectorAll('[src], link[href], script:not([type])').length};
    const pre = document.createElement('pre');
    pre.id = 'out';
    pre.textContent = btoa(unescape(encodeURIComponent(JSON.stringify(out))));
    document.body.appendChild(pre);
  }, 200);
});
</script></body></html>
"#;

#[test]
fn the_report_renders_in_chromium_with_a_cell_per_metric_in_its_colour() {
    let t = TestDir::new("canary-report");
    let config = "\
thresholds: {pass: 95, marginal: 75}
metrics:
  - {name: requests, group: traffic}
  - {name: errors-5xx, group: errors, direction: increase, critical: true, effect-size: {critical-increase: 3}}
  - {name: errors-4xx, group: errors, direction: increase}
  - {name: latency-p50, group: latency}
  - {name: latency-p99, group: latency, outliers: {strategy: remove}}
  - {name: cache-hits, group: traffic, direction: decrease}
  - {name: cpu, group: system}
  - {name: memory, group: system}
  - {name: gc-pauses, group: system}
  - {name: disk-queue, group: system}
  - {name: threads, group: system, must-have-data: true}
  - {name: open-files, group: system}
";
    write(&t.path("canary.yaml"), config);
    let base = vec![
        ("requests", around(500.0, 40.0, 1)),
        ("errors-5xx", around(2.0, 0.5, 2)),
        ("errors-4xx", around(10.0, 2.0, 3)),
        ("latency-p50", around(40.0, 4.0, 4)),
        ("latency-p99", around(180.0, 20.0, 5)),
        ("cache-hits", around(0.9, 0.03, 6)),
        ("cpu", around(35.0, 5.0, 7)),
        ("memory", around(2048.0, 50.0, 8)),
        ("gc-pauses", around(12.0, 3.0, 9)),
        ("disk-queue", around(1.0, 0.3, 10)),
        ("open-files", around(300.0, 10.0, 12)),
    ];
    let can = vec![
        ("requests", around(500.0, 40.0, 21)),
        ("errors-5xx", around(4.0, 0.8, 22)), // High, critical but under 3x: not a critical failure
        ("errors-4xx", around(10.0, 2.0, 23)),
        ("latency-p50", around(30.0, 3.0, 24)),   // Low
        ("latency-p99", around(240.0, 20.0, 25)), // High
        ("cache-hits", around(0.7, 0.03, 26)),    // Low
        ("cpu", around(35.0, 5.0, 27)),
        ("memory", around(2048.0, 50.0, 28)),
        ("gc-pauses", around(12.0, 3.0, 29)),
        ("threads", around(64.0, 2.0, 31)), // NodataFailMetric (no baseline)
                                            // open-files: Nodata (no canary)
    ];
    csv(&t.path("baseline.csv"), &base);
    csv(&t.path("canary.csv"), &can);
    let report = t.path("report.html");
    let r = run(t
        .bakery()
        .args(["canary", "judge", "--json", "--config"])
        .arg(t.path("canary.yaml"))
        .arg("--baseline")
        .arg(t.path("baseline.csv"))
        .arg("--canary")
        .arg(t.path("canary.csv"))
        .arg("--report")
        .arg(&report));
    let j = r.json();
    let classes: Vec<(String, String)> = j["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["classification"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (name, want) in [
        ("errors-5xx", "High"),
        ("latency-p50", "Low"),
        ("latency-p99", "High"),
        ("cache-hits", "Low"),
        ("cpu", "Pass"),
        ("threads", "NodataFailMetric"),
        ("open-files", "Nodata"),
    ] {
        assert!(
            classes.contains(&(name.to_string(), want.to_string())),
            "{name} is not {want}: {classes:?}"
        );
    }
    write(&t.path("probe.html"), PROBE);

    // The DOM after the page (and the probe's script) ran.
    let dom = chromium(
        &t,
        &[
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ],
        &format!("file://{}", t.path("probe.html").display()),
    );
    let b64 = dom
        .split("<pre id=\"out\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("the probe wrote nothing; the page did not render:\n{dom}"));
    let seen: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(seen["verdict"], j["classification"]);
    assert_eq!(
        seen["score"].as_str().unwrap(),
        format!("{:.2}", j["score"].as_f64().unwrap())
    );
    assert_eq!(
        floats(&seen["data"]),
        floats(&j),
        "the embedded JSON is the judgement"
    );
    assert_eq!(seen["fetches"], 0, "the report loads nothing");
    assert_eq!(seen["opened"], "block", "a click opens the metric's panel");
    let cells = seen["cells"].as_array().unwrap();
    assert_eq!(cells.len(), classes.len(), "one cell per metric");
    let mut checked = 0;
    for (name, class) in &classes {
        let c = cells
            .iter()
            .find(|c| c["metric"] == name.as_str())
            .unwrap_or_else(|| panic!("no cell for {name}"));
        assert_eq!(c["cls"], class.as_str());
        let [r, g, b] = colour(class);
        assert_eq!(c["bg"], format!("rgb({r}, {g}, {b})"), "{name} ({class})");
        assert!(c["panel"].as_bool().unwrap(), "{name} has a panel");
        assert_eq!(c["shown"], "none", "panels start closed");
        if !class.starts_with("Nodata") {
            assert!(
                c["svgs"].as_u64().unwrap() >= 2,
                "{name}: distributions and shift plots"
            );
        }
        checked += 1;
    }

    // Pixels: a screenshot of the report, sampled inside every cell's padding.
    let shot = t.path("shot.png");
    chromium(
        &t,
        &[&format!("--screenshot={}", shot.display())],
        &format!("file://{}", report.display()),
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let px = |x: u32, y: u32| -> [u8; 3] {
        let i = (y as usize * info.width as usize + x as usize) * channels;
        [buf[i], buf[i + 1], buf[i + 2]]
    };
    for (name, class) in &classes {
        let c = cells.iter().find(|c| c["metric"] == name.as_str()).unwrap();
        let (x, y) = (
            c["x"].as_f64().unwrap() + 6.0,
            c["y"].as_f64().unwrap() + 6.0,
        );
        let got = px(x as u32, y as u32);
        let want = colour(class);
        let close = got
            .iter()
            .zip(want)
            .all(|(a, b)| (*a as i32 - b as i32).abs() <= 3);
        assert!(close, "{name} ({class}) is {got:?} on screen, not {want:?}");
    }
    eprintln!(
        "canary report: {checked} cells rendered by chromium, colours match (style and pixels)"
    );
}
