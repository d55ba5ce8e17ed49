//! Running host commands with errors that say what was being done and what the tool printed.

use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Run to completion; on failure the error carries `what`, the exit status and stderr's last lines.
pub fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().with_context(|| {
        format!("{what}: cannot run `{prog}` (is it installed? see `bakery doctor`)")
    })?;
    if !out.status.success() {
        bail!(
            "{what}: `{prog}` failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 3)
        );
    }
    Ok(out)
}

/// The last `n` non-empty lines, joined on one line.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_stderr() {
        let e = run(
            Command::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"]),
            "testing",
        )
        .unwrap_err();
        let m = format!("{e:#}");
        assert!(m.starts_with("testing: `sh` failed"), "{m}");
        assert!(m.contains("one | two"), "{m}");
        let e = run(&mut Command::new("/no/such/tool"), "probing").unwrap_err();
        assert!(format!("{e:#}").contains("cannot run"));
    }
}
