//! `bakery canary ...`: clap types only.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum CanaryCommand {
    /// Judge a canary against its baseline (Mann–Whitney per metric, Kayenta's scoring) from
    /// metric files or live groups; prints the result, optionally writes an HTML report.
    Judge(JudgeArgs),
    /// Let a Marginal canary that waits for a person (`marginal: manual`) be promoted.
    Approve(ApprovalArgs),
    /// Stop a Marginal canary that waits for a person: its deploy removes it and fails.
    Reject(ApprovalArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ApprovalArgs {
    /// The cluster whose deploy waits (`bakery deploy --cluster C --canary ...`).
    #[arg(long)]
    pub cluster: String,
    /// Regions (comma-separated or repeated; default: AWS_REGION).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub region: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct JudgeArgs {
    /// The canary config (YAML): metrics, directions, effect sizes, groups, thresholds.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The baseline's metrics: CSV `metric,timestamp,value` or JSON `{"metric": [[t, v], ...]}`.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "baseline_group",
        conflicts_with = "baseline_group"
    )]
    pub baseline: Option<PathBuf>,
    /// The canary's metrics, in the same formats.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "canary_group",
        conflicts_with = "canary_group"
    )]
    pub canary: Option<PathBuf>,
    /// Read the baseline live from the config's sources, `{group}` being this group (e.g. an ASG).
    #[arg(long, value_name = "GROUP", requires = "canary_group")]
    pub baseline_group: Option<String>,
    /// Read the canary live, `{group}` being this group.
    #[arg(long, value_name = "GROUP", requires = "baseline_group")]
    pub canary_group: Option<String>,
    /// Live: start of the window (RFC 3339, Unix seconds, or a duration before --end: 30m, 2h).
    #[arg(long, value_name = "TIME", requires = "baseline_group")]
    pub start: Option<String>,
    /// Live: end of the window (RFC 3339 or Unix seconds; default: now).
    #[arg(long, value_name = "TIME", requires = "baseline_group")]
    pub end: Option<String>,
    /// Live: the region of CloudWatch metrics (default: AWS_REGION).
    #[arg(long, requires = "baseline_group")]
    pub region: Option<String>,
    /// Print the judgement as JSON on stdout (default: a table).
    #[arg(long)]
    pub json: bool,
    /// Write the HTML report (self-contained) to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}
