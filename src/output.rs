//! The one output convention (README, "Output"): results on stdout, people's text on stderr.
//!
//! - A command whose result is a record another program consumes — `bake`, `base build`,
//!   `base refresh` (the manifest), `boot` (the boot report), `deploy`, `rollback`, `canary
//!   approve|reject` — prints that record as JSON on stdout (a bake, deploy or rollback also
//!   ends with one `✓` line on stderr on a terminal, for people: [`crate::progress::done`]).
//! - Every other command — `base list`, `status`, `images prune`, `gc`, `doctor`, `canary judge` — prints a
//!   table for people by default and the same data as JSON with `--json`.
//!
//! JSON field names are snake_case, stable and documented; a new command implements [`Report`]
//! and calls [`print`].

use std::io::Write;

use anyhow::Result;

/// A result with a table for people and JSON (its `Serialize`) for machines.
pub trait Report: serde::Serialize {
    /// The table (or summary) printed without `--json`; ends with a newline.
    fn table(&self) -> String;
}

/// Print `r` on stdout: its table, or its JSON with `json`.
#[allow(clippy::print_stdout)]
pub fn print(r: &impl Report, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(r)?)?;
    } else {
        write!(out, "{}", r.table())?;
    }
    Ok(())
}

/// Rows under a header, columns padded to their widest cell (two spaces apart), the last
/// column unpadded. `empty`: the line printed when there are no rows.
pub fn table(header: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("{empty}\n");
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 < n {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                s.push_str(c);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_a_header_and_aligned_columns() {
        let t = table(
            &["REGION", "IMAGE", "NAME"],
            &[
                vec!["us-east-1".into(), "ami-1".into(), "a".into()],
                vec!["eu-west-1".into(), "ami-22222".into(), "b".into()],
            ],
            "nothing",
        );
        assert_eq!(
            t,
            "REGION     IMAGE      NAME\nus-east-1  ami-1      a\neu-west-1  ami-22222  b\n"
        );
        assert_eq!(table(&["A"], &[], "no images"), "no images\n");
    }
}
