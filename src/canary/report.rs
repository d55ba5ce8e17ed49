//! The canary report: one self-contained HTML file (inline CSS and SVG, no script needed, no
//! network), read at a glance like the original Netflix ACA reports.
//!
//! - On top: the score, the verdict (Pass green, Marginal amber, Fail red), why, the thresholds.
//! - Below: the metric grid, one cell per metric, grouped, coloured **hot** (canary higher,
//!   High), **cold** (canary lower, Low), **neutral** (Pass) or **no data** (white, dashed;
//!   red-dashed when the metric must have data). A critical metric that failed has a thick
//!   black frame. Each cell shows the mean ratio as a change (`+25.0%`).
//! - Each cell links to the metric's panel (shown with CSS `:target`): the two distributions as
//!   an inline SVG (histograms on one axis, box plots), the shift's estimate and interval against
//!   the ±0.25 × |estimate| band, the two series over time, and the numbers.
//! - The judgement's JSON (the same as `--json` prints) is embedded as
//!   `<script type="application/json" id="canary-data">`.
//!
//! Colours (also in the legend): hot `#d6604d`, cold `#4393c3`, neutral `#d9d9d9`, no data
//! `#ffffff`.

use std::fmt::Write as _;

use super::judge::{Judgement, MetricClass, MetricResult, Verdict};
use super::stats;

pub const HOT: &str = "#d6604d";
pub const COLD: &str = "#4393c3";
pub const NEUTRAL: &str = "#d9d9d9";
pub const NODATA: &str = "#ffffff";
const BASE_COLOUR: &str = "#5b6b7a";
const CANARY_COLOUR: &str = "#e08214";

/// What the report says about where the data came from.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// e.g. `baseline.csv` or `shop-prod-v012 (ami-...)`.
    pub baseline: String,
    pub canary: String,
    /// RFC 3339, when the judgement was made.
    pub generated: String,
    /// Optional heading, e.g. the cluster and region of a deploy.
    pub title: Option<String>,
}

/// The CSS class (and colour) of a metric's cell.
pub fn cell_class(c: MetricClass) -> &'static str {
    match c {
        MetricClass::Pass => "neutral",
        MetricClass::High => "hot",
        MetricClass::Low => "cold",
        MetricClass::Nodata => "nodata",
        MetricClass::NodataFailMetric => "nodata nodata-fail",
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A number for people: up to 4 significant decimals, no trailing zeros.
fn fmt(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    let s = if a != 0.0 && !(1e-3..1e7).contains(&a) {
        format!("{v:.3e}")
    } else {
        let decimals = if a >= 100.0 {
            2
        } else if a >= 1.0 {
            3
        } else {
            4
        };
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("—".into(), fmt)
}

/// `+12.5%` for a mean ratio of 1.125.
fn change(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) => {
            let pct = (r - 1.0) * 100.0;
            if pct.abs() < 0.05 {
                "±0%".into()
            } else {
                format!("{pct:+.1}%")
            }
        }
        None => "—".into(),
    }
}

/// Render the report.
pub fn render(j: &Judgement, meta: &Meta) -> String {
    let mut h = String::with_capacity(64 * 1024 + j.metrics.len() * 8 * 1024);
    let verdict_class = match j.classification {
        Verdict::Pass => "v-pass",
        Verdict::Marginal => "v-marginal",
        Verdict::Fail => "v-fail",
    };
    let title = meta.title.as_deref().unwrap_or("Canary analysis");
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} — {} {}</title><style>{}</style></head><body>\n",
        esc(title),
        j.classification,
        j.score,
        CSS
    );
    let counts = |c: MetricClass| j.metrics.iter().filter(|m| m.classification == c).count();
    let _ = writeln!(
        h,
        "<header class=\"top {verdict_class}\"><div class=\"score\" id=\"score\">{score:.2}</div>\
         <div class=\"what\"><div class=\"verdict\" id=\"verdict\">{verdict}</div>\
         <h1>{title}</h1>\
         <div class=\"facts\">pass ≥ {pass} · marginal ≥ {marginal} · confidence {conf} · \
         {n} metrics: {p} pass, {hi} high, {lo} low, {nd} no data</div>\
         <div class=\"facts\">baseline <b>{b}</b> · canary <b>{c}</b>{gen}</div>{reason}</div></header>",
        score = j.score,
        verdict = j.classification,
        title = esc(title),
        pass = j.thresholds.pass,
        marginal = j.thresholds.marginal,
        conf = j.confidence,
        n = j.metrics.len(),
        p = counts(MetricClass::Pass),
        hi = counts(MetricClass::High),
        lo = counts(MetricClass::Low),
        nd = counts(MetricClass::Nodata) + counts(MetricClass::NodataFailMetric),
        b = esc(&meta.baseline),
        c = esc(&meta.canary),
        gen = if meta.generated.is_empty() {
            String::new()
        } else {
            format!(" · {}", esc(&meta.generated))
        },
        reason = j
            .reason
            .as_deref()
            .map(|r| format!("<p class=\"reason\">{}</p>", esc(r)))
            .unwrap_or_default(),
    );
    let _ = write!(
        h,
        "<div class=\"legend\"><span class=\"sw hot\"></span>hot: canary higher\
         <span class=\"sw cold\"></span>cold: canary lower<span class=\"sw neutral\"></span>neutral: no difference\
         <span class=\"sw nodata\"></span>no data<span class=\"sw crit\"></span>critical failure\
         <span class=\"hint\">Click a cell for its distributions and numbers.</span></div>\n<main>\n"
    );
    // Groups in the order the config first names them.
    let mut order: Vec<&str> = Vec::new();
    for m in &j.metrics {
        if !order.contains(&m.group.as_str()) {
            order.push(&m.group);
        }
    }
    for g in order {
        let gr = &j.groups[g];
        let _ = write!(
            h,
            "<section class=\"group\" data-group=\"{ge}\"><h2>{ge} <span>score {s} · weight {w}%</span></h2><div class=\"grid\">",
            ge = esc(g),
            s = gr.score,
            w = fmt(gr.weight),
        );
        for (i, m) in j.metrics.iter().enumerate().filter(|(_, m)| m.group == g) {
            let label = if m.classification.is_nodata() {
                "no data".to_string()
            } else {
                change(m.ratio)
            };
            let _ = write!(
                h,
                "<a class=\"cell {cls}{crit}\" id=\"cell-{i}\" href=\"#m-{i}\" data-metric=\"{name}\" data-class=\"{c}\" title=\"{name}: {c}\">\
                 <span class=\"name\">{name}</span><span class=\"sub\">{c} · {label}</span></a>",
                cls = cell_class(m.classification),
                crit = if m.critical_failure { " crit" } else { "" },
                name = esc(&m.name),
                c = m.classification.as_str(),
                label = esc(&label),
            );
        }
        h.push_str("</div></section>\n");
    }
    h.push_str("</main>\n<div class=\"panels\">\n");
    for (i, m) in j.metrics.iter().enumerate() {
        panel(&mut h, i, m, j.confidence);
    }
    h.push_str("</div>\n<script type=\"application/json\" id=\"canary-data\">");
    let json = serde_json::to_string(j).unwrap_or_default();
    // Inside <script>, "</" would end the element early.
    h.push_str(&json.replace("</", "<\\/"));
    h.push_str("</script>\n</body></html>\n");
    h
}

fn panel(h: &mut String, i: usize, m: &MetricResult, confidence: f64) {
    let _ = write!(
        h,
        "<article class=\"panel\" id=\"m-{i}\"><a class=\"close\" href=\"#\">close ✕</a>\
         <h3><span class=\"badge {cls}\">{c}</span> {name} <small>group {group}{crit}</small></h3>",
        cls = cell_class(m.classification),
        c = m.classification.as_str(),
        name = esc(&m.name),
        group = esc(&m.group),
        crit = if m.critical {
            if m.critical_failure {
                " · critical — failed the canary"
            } else {
                " · critical"
            }
        } else {
            ""
        },
    );
    if let Some(r) = &m.reason {
        let _ = write!(h, "<p class=\"why\">{}</p>", esc(r));
    }
    h.push_str("<div class=\"plots\">");
    distributions(h, m);
    shift_plot(h, m, confidence);
    time_plot(h, m);
    h.push_str("</div>");
    // Numbers.
    let row = |h: &mut String, k: &str, b: String, c: String| {
        let _ = write!(h, "<tr><th>{k}</th><td>{b}</td><td>{c}</td></tr>");
    };
    h.push_str("<table class=\"nums\"><tr><th></th><th><i class=\"dot base\"></i>baseline</th><th><i class=\"dot can\"></i>canary</th></tr>");
    row(
        h,
        "points",
        m.baseline.count.to_string(),
        m.canary.count.to_string(),
    );
    row(h, "mean", opt(m.baseline.mean), opt(m.canary.mean));
    row(h, "median", opt(m.baseline.median), opt(m.canary.median));
    row(h, "min", opt(m.baseline.min), opt(m.canary.min));
    row(h, "max", opt(m.baseline.max), opt(m.canary.max));
    row(h, "std dev", opt(m.baseline.stddev), opt(m.canary.stddev));
    let rb = m.removed.get("baseline").copied().unwrap_or_default();
    let rc = m.removed.get("canary").copied().unwrap_or_default();
    row(
        h,
        "missing (NaN)",
        rb.non_finite.to_string(),
        rc.non_finite.to_string(),
    );
    row(
        h,
        "outliers removed",
        rb.outliers.to_string(),
        rc.outliers.to_string(),
    );
    h.push_str("</table><table class=\"nums\">");
    let kv = |h: &mut String, k: &str, v: String| {
        let _ = write!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    kv(
        h,
        "mean ratio (canary ÷ baseline)",
        format!("{} ({})", opt(m.ratio), change(m.ratio)),
    );
    kv(h, "shift estimate (Hodges–Lehmann)", opt(m.estimate));
    let iv = match m.interval {
        Some([lo, hi]) => format!(
            "[{}, {}]",
            lo.map_or("−∞".into(), fmt),
            hi.map_or("+∞".into(), fmt)
        ),
        None => "—".into(),
    };
    kv(
        h,
        &format!("{}% interval of the shift", fmt(confidence * 100.0)),
        iv,
    );
    kv(h, "direction", format!("{:?}", m.direction).to_lowercase());
    h.push_str("</table></article>\n");
}

/// Histograms of both sides on one axis, with box plots beneath.
fn distributions(h: &mut String, m: &MetricResult) {
    let [b, c] = &m.values;
    let (w, ht) = (460.0, 210.0);
    let _ = write!(
        h,
        "<figure><figcaption>distributions</figcaption><svg class=\"dist\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"distributions of {}\">",
        esc(&m.name)
    );
    if b.is_empty() && c.is_empty() {
        let _ = write!(h, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"muted\">no data</text></svg></figure>", w / 2.0, ht / 2.0);
        return;
    }
    let lo = b
        .first()
        .into_iter()
        .chain(c.first())
        .fold(f64::INFINITY, |a, v| a.min(*v));
    let hi = b
        .last()
        .into_iter()
        .chain(c.last())
        .fold(f64::NEG_INFINITY, |a, v| a.max(*v));
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let (x0, x1) = (58.0, w - 12.0);
    let xs = |v: f64| x0 + (v - lo) / (hi - lo) * (x1 - x0);
    let bins = 30usize;
    let hist = |v: &[f64]| {
        let mut counts = vec![0usize; bins];
        for x in v {
            let k = (((x - lo) / (hi - lo)) * bins as f64).floor() as isize;
            counts[k.clamp(0, bins as isize - 1) as usize] += 1;
        }
        counts
    };
    let (hb, hc) = (hist(b), hist(c));
    // Heights as shares of each side, so sides of different sizes compare.
    let share = |n: usize, total: usize| {
        if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        }
    };
    let top = hb
        .iter()
        .map(|n| share(*n, b.len()))
        .chain(hc.iter().map(|n| share(*n, c.len())))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let (y0, y1) = (12.0, 130.0);
    let bw = (x1 - x0) / bins as f64;
    for (counts, total, colour) in [(&hb, b.len(), BASE_COLOUR), (&hc, c.len(), CANARY_COLOUR)] {
        for (k, n) in counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let bh = share(*n, total) / top * (y1 - y0);
            let _ = write!(
                h,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\" fill-opacity=\"0.55\"/>",
                x0 + k as f64 * bw,
                y1 - bh,
                bw,
                bh
            );
        }
    }
    let _ = write!(
        h,
        "<line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" class=\"axis\"/>"
    );
    // Box plots: whiskers at min/max, box Q1..Q3, median line.
    for (v, y, colour, label) in [
        (b, 150.0, BASE_COLOUR, "baseline"),
        (c, 172.0, CANARY_COLOUR, "canary"),
    ] {
        let _ = write!(
            h,
            "<text x=\"2\" y=\"{:.1}\" class=\"lbl\">{label}</text>",
            y + 4.0
        );
        if v.is_empty() {
            let _ = write!(
                h,
                "<text x=\"{x0}\" y=\"{:.1}\" class=\"muted\">no data</text>",
                y + 4.0
            );
            continue;
        }
        let q = |p: f64| xs(stats::percentile(v, p));
        let (mn, q1, md, q3, mx) = (xs(v[0]), q(25.0), q(50.0), q(75.0), xs(v[v.len() - 1]));
        let _ = write!(
            h,
            "<line x1=\"{mn:.1}\" y1=\"{y}\" x2=\"{mx:.1}\" y2=\"{y}\" stroke=\"{colour}\"/>\
             <rect x=\"{q1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"{colour}\" fill-opacity=\"0.35\" stroke=\"{colour}\"/>\
             <line x1=\"{md:.1}\" y1=\"{:.1}\" x2=\"{md:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            y - 7.0,
            (q3 - q1).max(1.0),
            y - 7.0,
            y + 7.0
        );
    }
    // Axis ticks (the outer ones inside the plot).
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let anchor = match k {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\" class=\"tick\">{}</text>",
            xs(v),
            ht - 8.0,
            fmt(v)
        );
    }
    h.push_str("</svg></figure>");
}

/// The shift canary − baseline: 0, the ±0.25 × |estimate| band, the interval and the estimate.
fn shift_plot(h: &mut String, m: &MetricResult, confidence: f64) {
    let (Some(est), Some([lo, hi])) = (m.estimate, m.interval) else {
        return;
    };
    let (w, ht) = (460.0, 70.0);
    let tol = 0.25 * est.abs();
    let span_lo = [Some(0.0), Some(-tol), lo, Some(est)]
        .into_iter()
        .flatten()
        .fold(f64::INFINITY, f64::min);
    let span_hi = [Some(0.0), Some(tol), hi, Some(est)]
        .into_iter()
        .flatten()
        .fold(f64::NEG_INFINITY, f64::max);
    let pad = ((span_hi - span_lo) * 0.1).max(1e-9);
    let (a, b) = (span_lo - pad, span_hi + pad);
    let (x0, x1) = (12.0, w - 12.0);
    let xs = |v: f64| x0 + (v - a) / (b - a) * (x1 - x0);
    let _ = write!(
        h,
        "<figure><figcaption>shift canary − baseline: estimate and {}% interval</figcaption>\
         <svg class=\"shift\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\">\
         <rect x=\"{:.1}\" y=\"8\" width=\"{:.1}\" height=\"30\" class=\"band\"/>\
         <line x1=\"{z:.1}\" y1=\"4\" x2=\"{z:.1}\" y2=\"42\" class=\"zero\"/>",
        fmt(confidence * 100.0),
        xs(-tol),
        (xs(tol) - xs(-tol)).max(1.0),
        z = xs(0.0),
    );
    let (l, r) = (lo.map_or(x0, xs), hi.map_or(x1, xs));
    let _ = write!(
        h,
        "<line x1=\"{l:.1}\" y1=\"23\" x2=\"{r:.1}\" y2=\"23\" class=\"ci\"/>\
         <circle cx=\"{:.1}\" cy=\"23\" r=\"5\" class=\"est\"/>\
         <text x=\"{z:.1}\" y=\"54\" class=\"tick\" text-anchor=\"middle\">0</text>\
         <text x=\"{l:.1}\" y=\"66\" class=\"tick\" text-anchor=\"middle\">{}</text>\
         <text x=\"{r:.1}\" y=\"66\" class=\"tick\" text-anchor=\"middle\">{}</text></svg>\
         <div class=\"legend-s\"><i class=\"band-s\"></i>±0.25 × |estimate| · <b>—</b> interval · <i class=\"dot can\"></i>estimate {}</div></figure>",
        xs(est),
        lo.map_or("−∞".into(), fmt),
        hi.map_or("+∞".into(), fmt),
        fmt(est),
        z = xs(0.0),
    );
}

/// Both series over time (minutes since each side's first point).
fn time_plot(h: &mut String, m: &MetricResult) {
    let [b, c] = &m.points;
    let finite = |p: &&super::data::Point| p.v.is_finite();
    if b.iter().filter(finite).count() + c.iter().filter(finite).count() < 2 {
        return;
    }
    let (w, ht) = (460.0, 120.0);
    let start = |v: &[super::data::Point]| v.iter().map(|p| p.t).fold(f64::INFINITY, f64::min);
    let (sb, sc) = (start(b), start(c));
    let span = b
        .iter()
        .map(|p| p.t - sb)
        .chain(c.iter().map(|p| p.t - sc))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let vals = b.iter().chain(c.iter()).filter(finite).map(|p| p.v);
    let (vlo, vhi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, z), v| {
        (a.min(v), z.max(v))
    });
    let (vlo, vhi) = if vhi > vlo {
        (vlo, vhi)
    } else {
        (vlo - 0.5, vhi + 0.5)
    };
    let (x0, x1, y0, y1) = (40.0, w - 12.0, 8.0, ht - 22.0);
    let _ = write!(
        h,
        "<figure><figcaption>over time (minutes since the first point)</figcaption><svg class=\"time\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\">\
         <line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" class=\"axis\"/>\
         <text x=\"2\" y=\"{:.1}\" class=\"tick\">{}</text><text x=\"2\" y=\"{:.1}\" class=\"tick\">{}</text>\
         <text x=\"{x1}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">{} min</text>",
        y0 + 8.0,
        fmt(vhi),
        y1,
        fmt(vlo),
        ht - 6.0,
        fmt(span / 60.0),
    );
    for (pts, s0, colour) in [(b, sb, BASE_COLOUR), (c, sc, CANARY_COLOUR)] {
        let mut d = String::new();
        let mut pen = false;
        for p in pts.iter() {
            if !p.v.is_finite() {
                pen = false;
                continue;
            }
            let x = x0 + (p.t - s0) / span * (x1 - x0);
            let y = y1 - (p.v - vlo) / (vhi - vlo) * (y1 - y0);
            let _ = write!(d, "{}{x:.1},{y:.1} ", if pen { "L" } else { "M" });
            pen = true;
        }
        let _ = write!(
            h,
            "<path d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"/>",
            d.trim_end()
        );
    }
    h.push_str("</svg></figure>");
}

const CSS: &str = "
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;background:#f3f4f6;color:#1f2933}
.top{display:flex;gap:24px;align-items:center;padding:20px 28px;color:#fff}
.top h1{margin:0;font-size:16px;font-weight:600;opacity:.9}
.v-pass{background:#1a9850}.v-marginal{background:#d08c00}.v-fail{background:#c0262d}
.score{font-size:56px;font-weight:700;line-height:1;font-variant-numeric:tabular-nums}
.verdict{font-size:28px;font-weight:700;letter-spacing:.02em}
.facts{font-size:13px;opacity:.92}
.reason{margin:6px 0 0;font-weight:600}
.legend{display:flex;flex-wrap:wrap;align-items:center;gap:6px 8px;padding:10px 28px;font-size:13px;color:#52606d}
.sw{display:inline-block;width:16px;height:16px;border-radius:3px;margin-left:10px;vertical-align:middle}
.sw.hot{background:#d6604d}.sw.cold{background:#4393c3}.sw.neutral{background:#d9d9d9}
.sw.nodata{background:#fff;border:2px dashed #8a96a3}.sw.crit{background:#d9d9d9;border:3px solid #111}
.hint{margin-left:auto}
main{padding:4px 28px 24px}
.group h2{font-size:15px;margin:16px 0 8px}.group h2 span{font-weight:400;color:#52606d;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:6px}
.cell{display:block;padding:8px;min-height:56px;border:2px solid transparent;border-radius:4px;text-decoration:none;color:#1f2933;overflow:hidden}
.cell .name{display:block;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.cell .sub{display:block;font-size:12px;opacity:.9}
.cell.hot{background:#d6604d;color:#fff}.cell.cold{background:#4393c3;color:#fff}
.cell.neutral{background:#d9d9d9}
.cell.nodata{background:#ffffff;border:2px dashed #8a96a3;color:#52606d}
.cell.nodata-fail{border-color:#c0262d}
.cell.crit{border:3px solid #111}
.cell:hover,.cell:focus{outline:3px solid #1f2933;outline-offset:1px}
.panel{display:none;position:fixed;inset:4vh 4vw;overflow:auto;background:#fff;border-radius:8px;padding:18px 22px;box-shadow:0 10px 40px rgba(0,0,0,.35)}
.panel:target{display:block}
.panel h3{margin:0 0 6px;font-size:18px}.panel h3 small{font-weight:400;color:#52606d;font-size:13px}
.close{float:right;text-decoration:none;color:#52606d}
.badge{display:inline-block;padding:1px 8px;border-radius:3px;font-size:13px;vertical-align:middle}
.badge.hot{background:#d6604d;color:#fff}.badge.cold{background:#4393c3;color:#fff}.badge.neutral{background:#d9d9d9}
.badge.nodata{background:#fff;border:1px dashed #8a96a3}
.why{margin:4px 0 10px;color:#323f4b}
.plots{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}figcaption{font-size:12px;color:#52606d}
svg text{font:11px system-ui,sans-serif;fill:#323f4b}
svg .muted{fill:#8a96a3}.axis{stroke:#8a96a3}.zero{stroke:#1f2933;stroke-dasharray:3 2}
.band{fill:#d9d9d9}.ci{stroke:#1f2933;stroke-width:3}.est{fill:#e08214;stroke:#1f2933}
.nums{border-collapse:collapse;margin:12px 16px 0 0;display:inline-table;vertical-align:top;font-variant-numeric:tabular-nums}
.nums th,.nums td{padding:3px 10px;border-bottom:1px solid #e4e7eb;text-align:right}.nums th{text-align:left;font-weight:600}
.legend-s{font-size:12px;color:#52606d}.band-s{display:inline-block;width:14px;height:10px;background:#d9d9d9;margin-right:4px}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:5px}.dot.base{background:#5b6b7a}.dot.can{background:#e08214}
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::config::Config;
    use crate::canary::data::{MetricSet, Point};
    use crate::canary::judge;

    #[test]
    fn every_metric_is_a_cell_and_names_are_escaped() {
        let c = Config::parse(
            "metrics: [{name: '<b>a&b</b>', group: g1}, {name: up, group: g2}, {name: gone, group: g2, must-have-data: true}]",
            "t.yaml",
        )
        .unwrap();
        let pts = |f: &dyn Fn(usize) -> f64| -> Vec<Point> {
            (0..30)
                .map(|i| Point {
                    t: i as f64 * 60.0,
                    v: f(i),
                })
                .collect()
        };
        let mut b = MetricSet::new();
        let mut k = MetricSet::new();
        b.insert("<b>a&b</b>".into(), pts(&|i| (i % 7) as f64));
        k.insert("<b>a&b</b>".into(), pts(&|i| (i % 5) as f64));
        b.insert("up".into(), pts(&|i| 10.0 + (i % 3) as f64));
        k.insert("up".into(), pts(&|i| 20.0 + (i % 3) as f64));
        let j = judge::judge(&c, &b, &k);
        let html = render(
            &j,
            &Meta {
                baseline: "b.csv".into(),
                canary: "c.csv".into(),
                ..Meta::default()
            },
        );
        assert_eq!(html.matches("class=\"cell ").count(), 3);
        assert!(html.contains("&lt;b&gt;a&amp;b&lt;/b&gt;"));
        assert!(!html.contains("<b>a&b</b>"));
        assert!(html.contains("class=\"cell hot\" id=\"cell-1\""));
        assert!(html.contains("class=\"cell nodata nodata-fail\" id=\"cell-2\""));
        assert!(html.contains("<article class=\"panel\" id=\"m-1\">"));
        // Self-contained: nothing fetched.
        for needle in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!html.contains(needle), "{needle}");
        }
        assert!(html.contains("id=\"canary-data\""));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt(12.5), "12.5");
        assert_eq!(fmt(0.000123), "1.230e-4");
        assert_eq!(fmt(1234.5678), "1234.57");
        assert_eq!(change(Some(1.25)), "+25.0%");
        assert_eq!(change(Some(0.8)), "-20.0%");
        assert_eq!(change(None), "—");
    }
}
