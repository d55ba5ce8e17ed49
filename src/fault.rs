//! Fault injection at named points of a bake, for the reliability tests (tests/faults.rs,
//! tests/signals.rs, tests/crash.rs). Every step that acquires or changes something calls
//! `fault::point("name")?` right after it.
//!
//! - `BAKERY_FAULT_LOG=FILE`: each point passed appends its name to FILE (one a line). A test bakes
//!   once with it set and so enumerates the points instead of hard-coding them.
//! - `BAKERY_FAIL_AT=NAME`: the point NAME returns an error, so the bake fails right after that
//!   step. `api:Operation` fails that AWS call instead (see `aws::client::fault`).
//! - `BAKERY_FAULT_ACTION=hang`: at NAME, wait instead of failing (until a signal arrives, which
//!   then acts exactly there) so a test can deliver SIGINT or SIGKILL at a precise step.
//!
//! Compiled into every build, like `BAKERY_FAIL_API`: the binary the tests prove is the one that
//! ships, and the switch can only make a bake fail or wait, never skip a check or corrupt an
//! image. Without the variables a point costs two environment lookups. Points in the chroot
//! session child see the variables because the child inherits the bake's environment.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, Result};

pub const FAIL_AT: &str = "BAKERY_FAIL_AT";
pub const LOG: &str = "BAKERY_FAULT_LOG";
pub const ACTION: &str = "BAKERY_FAULT_ACTION";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Pass,
    Fail,
    Hang,
}

/// What point `name` does, given the values of `BAKERY_FAIL_AT` and `BAKERY_FAULT_ACTION`.
pub fn decide(name: &str, fail_at: Option<&str>, action: Option<&str>) -> Decision {
    match fail_at {
        Some(f) if f == name => {
            if action == Some("hang") {
                Decision::Hang
            } else {
                Decision::Fail
            }
        }
        _ => Decision::Pass,
    }
}

/// Passed step `name`: log it, and fail or hang here if asked.
pub fn point(name: &str) -> Result<()> {
    point_with(name, |k| std::env::var(k).ok())
}

fn point_with(name: &str, env: impl Fn(&str) -> Option<String>) -> Result<()> {
    let log = env(LOG);
    if let Some(log) = &log {
        record(log, name);
    }
    match decide(name, env(FAIL_AT).as_deref(), env(ACTION).as_deref()) {
        Decision::Pass => Ok(()),
        Decision::Fail => Err(anyhow!("injected failure after `{name}` ({FAIL_AT})")),
        Decision::Hang => {
            if let Some(log) = &log {
                record(log, &format!("holding at {name}"));
            }
            loop {
                crate::sys::signals::check()?;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn record(log: &str, line: &str) {
    // O_APPEND with one write per line: the bake and its session child can share the file.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// The points a log names, first occurrence order, without duplicates or `holding at` lines.
pub fn points_in_log(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("holding at "))
    {
        if !out.iter().any(|o| o == l) {
            out.push(l.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_point_fails_or_hangs() {
        assert_eq!(decide("mount /proc", None, None), Decision::Pass);
        assert_eq!(
            decide("mount /proc", Some("mount /sys"), None),
            Decision::Pass
        );
        assert_eq!(
            decide("mount /proc", Some("mount /proc"), None),
            Decision::Fail
        );
        assert_eq!(
            decide("mount /proc", Some("mount /proc"), Some("fail")),
            Decision::Fail
        );
        assert_eq!(
            decide("mount /proc", Some("mount /proc"), Some("hang")),
            Decision::Hang
        );
        assert_eq!(
            decide("mount /sys", Some("mount /proc"), Some("hang")),
            Decision::Pass
        );
    }

    #[test]
    fn a_log_lists_each_point_once_in_order() {
        let log = "copy base\nattach loop device\nholding at x\ncopy base\n\nmount /proc\n";
        assert_eq!(
            points_in_log(log),
            ["copy base", "attach loop device", "mount /proc"]
        );
    }

    #[test]
    fn a_failing_point_names_itself_in_one_line() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("points");
        let log_s = log.display().to_string();
        let env = |k: &str| match k {
            LOG => Some(log_s.clone()),
            FAIL_AT => Some("point b".to_string()),
            _ => None,
        };
        assert!(point_with("point a", env).is_ok());
        let e = point_with("point b", env).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1);
        assert!(e.contains("`point b`"), "{e}");
        assert_eq!(
            points_in_log(&std::fs::read_to_string(&log).unwrap()),
            ["point a", "point b"]
        );
    }
}
