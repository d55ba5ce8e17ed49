//! Progress for people, on stderr. Two displays, chosen once per process by [`init`]:
//!
//! - **terminal** (stderr is a TTY, no `--quiet`): one live line per stage — a spinner, or a bar
//!   with bytes done, rate and ETA while a stage moves bytes ([`meter`]) — a `✓ step (1.2s)` line
//!   when each step ends, and one final line saying what was made and how long it took
//!   ([`Progress::success`]). Log lines go through the same display ([`LogWriter`]), so they are
//!   printed above the live line and never leave a dead spinner line behind.
//! - **plain** (CI, a pipe, a file): no live line; exactly one line per finished step, with a
//!   timestamp and its duration (`2026-11-30T08:45:50Z  INFO upload snapshot: done in 12.3s`);
//!   log lines carry the same timestamps.
//!
//! Colour follows `--color auto|always|never`; `auto` means a terminal, `NO_COLOR` unset or
//! empty (<https://no-color.org>) and `TERM` not `dumb`.
//!
//! The per-bake log file (`<work-dir>/logs/<bake-id>.log`, the chroot's command output) gets a
//! timestamped header per step ([`Progress::log_to`], [`log_header`]), so a failed bake can be read
//! from its log alone.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::info;

/// `--color`: when log lines on stderr are coloured.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorChoice {
    /// Colour on a terminal, unless NO_COLOR is set (non-empty) or TERM is `dumb`.
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether to colour, from the flag, whether stderr is a terminal, and the environment
/// (`NO_COLOR`, `TERM`). Pure: the rule of <https://no-color.org> and of most CLI tools.
pub fn use_color(
    choice: ColorChoice,
    terminal: bool,
    no_color: Option<&str>,
    term: Option<&str>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            terminal && no_color.is_none_or(str::is_empty) && term.is_none_or(|t| t != "dumb")
        }
    }
}

struct Display {
    /// The live display, on a terminal only.
    multi: Option<MultiProgress>,
    color: bool,
}

static DISPLAY: OnceLock<Display> = OnceLock::new();
/// The bar of the stage running now: what [`meter`] hands to the code moving bytes.
static CURRENT: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Choose the display for this process (first call wins). `quiet`: no live display.
pub fn init(quiet: bool, color: ColorChoice) {
    let terminal = std::io::stderr().is_terminal();
    let no_color = std::env::var("NO_COLOR").ok();
    let term = std::env::var("TERM").ok();
    let _ = DISPLAY.set(Display {
        multi: (terminal && !quiet)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        color: use_color(color, terminal, no_color.as_deref(), term.as_deref()),
    });
}

fn display() -> Option<&'static Display> {
    DISPLAY.get()
}

/// A live display is on (stderr is a terminal and not `--quiet`).
pub fn interactive() -> bool {
    display().is_some_and(|d| d.multi.is_some())
}

/// Log lines are coloured.
pub fn color() -> bool {
    display().is_some_and(|d| d.color)
}

/// Print a line on stderr above the live display (or plainly without one).
pub fn eprintln(msg: &str) {
    write_stderr(format!("{msg}\n").as_bytes());
}

fn write_stderr(bytes: &[u8]) {
    let write = || {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(bytes);
        let _ = e.flush();
    };
    match display().and_then(|d| d.multi.as_ref()) {
        Some(m) => m.suspend(write),
        None => write(),
    }
}

/// The tracing writer: each event is printed whole, above the live display.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

/// One log event being formatted; printed when dropped.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write_stderr(&self.0);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// Timestamps of plain log lines: UTC to the second (`2026-11-30T08:45:50Z`).
pub struct UtcSeconds;

impl tracing_subscriber::fmt::time::FormatTime for UtcSeconds {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", utc_now())
    }
}

fn utc_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .unwrap_or_default()
}

/// `83.4` s as `1m 23s`; under a minute with a tenth (`4.2s`).
pub fn human_duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let s = seconds.round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

/// Append a timestamped step header to a bake's log file (best effort: the log is for people).
pub fn log_header(log: &Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        // A blank line before each header but the file's first.
        let gap = if f.metadata().map(|m| m.len()).unwrap_or(0) > 0 {
            "\n"
        } else {
            ""
        };
        let _ = writeln!(f, "{gap}==> {} {line}", utc_now());
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").expect("a valid template")
}

/// A bare spinner in the live display (log lines print above it), for commands that are not a
/// pipeline run (`bakery boot`).
pub fn spinner() -> ProgressBar {
    match display().and_then(|d| d.multi.as_ref()) {
        Some(m) => m.add(ProgressBar::new_spinner()),
        None => ProgressBar::new_spinner(),
    }
}

/// What code that moves bytes (EBS uploads and downloads, copies) reports to: the running
/// stage's bar on a terminal, nothing otherwise. Cheap to clone; safe from any thread or task.
#[derive(Clone, Default)]
pub struct Meter(Option<ProgressBar>);

/// The meter of the stage running now.
pub fn meter() -> Meter {
    Meter(CURRENT.lock().ok().and_then(|c| c.clone()))
}

impl Meter {
    /// Show `total` bytes to move (with rate and ETA); `None` when the total is not known
    /// (bytes and rate only).
    pub fn bytes(&self, total: Option<u64>) {
        if let Some(b) = &self.0 {
            let t = match total {
                Some(_) => "{spinner} [{elapsed_precise}] {msg} {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
                None => "{spinner} [{elapsed_precise}] {msg} {binary_bytes} {binary_bytes_per_sec}",
            };
            b.set_style(ProgressStyle::with_template(t).expect("a valid template"));
            b.set_position(0);
            b.set_length(total.unwrap_or(u64::MAX));
            b.reset_eta();
        }
    }

    /// Show `total` things of a kind (`regions`) to finish.
    pub fn count(&self, total: u64, unit: &str) {
        if let Some(b) = &self.0 {
            let t = format!("{{spinner}} [{{elapsed_precise}}] {{msg}} {{pos}}/{{len}} {unit}");
            b.set_style(ProgressStyle::with_template(&t).expect("a valid template"));
            b.set_position(0);
            b.set_length(total);
        }
    }

    /// Done up to `pos` bytes (or things).
    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.0 {
            b.set_position(pos);
        }
    }

    /// `n` more bytes (or things) done.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
}

/// The display of one run (a bake, a base build): see the module docs.
pub struct Progress {
    bar: Option<ProgressBar>,
    log: Mutex<Option<PathBuf>>,
}

impl Progress {
    /// `quiet`: no live line even on a terminal (the tests' unit runner, `--quiet`).
    pub fn new(quiet: bool) -> Progress {
        let bar = if quiet {
            None
        } else {
            display().and_then(|d| d.multi.as_ref()).map(|m| {
                let bar = m.add(ProgressBar::new_spinner());
                bar.set_style(spinner_style());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
        };
        Progress {
            bar,
            log: Mutex::new(None),
        }
    }

    /// From now on, write a timestamped header per step into the bake's log `file`, starting
    /// with `first` (what is baked from what).
    pub fn log_to(&self, file: &Path, first: &str) {
        log_header(file, first);
        if let Ok(mut l) = self.log.lock() {
            *l = Some(file.to_path_buf());
        }
    }

    fn log_line(&self, line: &str) {
        if let Some(f) = self.log.lock().ok().and_then(|l| l.clone()) {
            log_header(&f, line);
        }
    }

    /// A step begins: the live line shows it, the log gets its header.
    pub fn start_step(&self, step: &str) {
        self.show_step(step);
        self.log_line(step);
    }

    /// A step begins whose log header its own process writes (the chroot session's steps).
    pub fn show_step(&self, step: &str) {
        if let Some(b) = &self.bar {
            b.set_style(spinner_style());
            b.set_length(0);
            b.set_position(0);
            b.set_message(step.to_string());
        }
        if let Ok(mut c) = CURRENT.lock() {
            *c = self.bar.clone();
        }
    }

    /// A step ended after `seconds`: `✓ step (1.2s)` on a terminal, one timestamped line
    /// otherwise.
    pub fn finish_step(&self, step: &str, seconds: f64) {
        if let Ok(mut c) = CURRENT.lock() {
            *c = None;
        }
        match &self.bar {
            Some(b) => {
                b.set_style(spinner_style());
                b.set_message(String::new());
                b.println(format!("  ✓ {step} ({})", human_duration(seconds)));
            }
            None => info!("{step}: done in {seconds:.1}s"),
        }
    }

    /// A step failed: its log gets a closing line (the error itself is printed by main).
    pub fn fail_step(&self, step: &str, error: &anyhow::Error) {
        if let Ok(mut c) = CURRENT.lock() {
            *c = None;
        }
        self.log_line(&format!(
            "{step} FAILED: {}",
            format!("{error:#}").replace('\n', " ")
        ));
    }

    /// Stop (`true`) or restart drawing the live display while something else owns the
    /// terminal (`bake --shell`); nothing to do without one.
    pub fn suspend(&self, on: bool) {
        let Some(m) = display().and_then(|d| d.multi.as_ref()) else {
            return;
        };
        if on {
            if let Some(b) = &self.bar {
                b.disable_steady_tick();
            }
            let _ = m.clear();
            m.set_draw_target(ProgressDrawTarget::hidden());
        } else {
            m.set_draw_target(ProgressDrawTarget::stderr());
            if let Some(b) = &self.bar {
                b.enable_steady_tick(Duration::from_millis(120));
            }
        }
    }

    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln(msg),
        }
    }

    /// The run's last line on a terminal: what was made and how long it took
    /// (`✓ baked app-1.2 → app.qcow2 (1.4 GiB) in 1m 23s`). Nothing in plain mode, whose last
    /// step line already says it, and whose stdout carries the manifest.
    pub fn success(&self, what: &str, seconds: f64) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            eprintln(&format!("✓ {what} in {}", human_duration(seconds)));
        }
    }
}

/// The last line of a command that changed something (deploy, rollback), for people: `✓ what`
/// on a terminal; one timestamped log line under CI (so a CI log shows it as it shows a bake's
/// steps). `what` says what changed and how long it took.
pub fn done(what: &str) {
    if interactive() {
        eprintln(&format!("✓ {what}"));
    } else {
        info!("{what}");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Ok(mut c) = CURRENT.lock() {
            *c = None;
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_follows_the_flag_the_terminal_and_no_color() {
        use ColorChoice::*;
        assert!(use_color(Auto, true, None, Some("xterm")));
        assert!(
            !use_color(Auto, false, None, Some("xterm")),
            "not a terminal"
        );
        assert!(!use_color(Auto, true, Some("1"), None), "NO_COLOR=1");
        assert!(
            use_color(Auto, true, Some(""), None),
            "an empty NO_COLOR is unset"
        );
        assert!(!use_color(Auto, true, None, Some("dumb")));
        assert!(use_color(Always, false, Some("1"), None));
        assert!(!use_color(Never, true, None, None));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human_duration(4.21), "4.2s");
        assert_eq!(human_duration(83.4), "1m 23s");
        assert_eq!(human_duration(3725.0), "1h 02m");
    }
}
