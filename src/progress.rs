//! Progress for people: a spinner with the current step on a terminal; one log line per step
//! otherwise (CI logs stay short).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").unwrap());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar: Some(bar) }
    }

    pub fn start_step(&self, step: &str) {
        match &self.bar {
            Some(b) => b.set_message(step.to_string()),
            None => info!("{step} ..."),
        }
    }

    pub fn finish_step(&self, step: &str, seconds: f64) {
        match &self.bar {
            Some(b) => b.println(format!("  ✓ {step} ({seconds:.1}s)")),
            None => info!("{step}: done in {seconds:.1}s"),
        }
    }

    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
