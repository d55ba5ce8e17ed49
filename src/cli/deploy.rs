//! `bakery deploy`, `bakery rollback`, `bakery status`: clap types only.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// New launch template version (only the image changes); instances pick it up when replaced.
    Swap,
    /// Swap, then replace every instance in batches (instance refresh, or bakery's own loop).
    Rolling,
    /// New ASG generation `CLUSTER-vNNN` beside the serving one; traffic moves once it is healthy.
    RedBlack,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceWith {
    /// StartInstanceRefresh where the endpoint has it, else bakery's own batches.
    Auto,
    /// Always StartInstanceRefresh.
    InstanceRefresh,
    /// Always bakery's own batches (terminate without decrementing capacity, wait healthy).
    Batches,
}

/// Which ASG or cluster, in which regions.
#[derive(Args, Debug, Clone, Default)]
pub struct TargetArgs {
    /// The Auto Scaling group (swap, rolling).
    #[arg(long, conflicts_with = "cluster", required_unless_present = "cluster")]
    pub asg: Option<String>,
    /// The cluster `app-stack-detail`, whose generations are ASGs `app-stack-detail-vNNN` (red-black).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only these regions (comma-separated or repeated; default: every region of the manifest, or AWS_REGION).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub region: Vec<String>,
}

/// Waits: how long, how often (the poll interval is for tests).
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Seconds to wait for instances to be InService and healthy in every target group.
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    pub wait_timeout: u64,
    /// Poll interval in milliseconds.
    #[arg(
        long,
        env = "BAKERY_DEPLOY_POLL_MS",
        default_value_t = 5000,
        hide = true
    )]
    pub poll_ms: u64,
}

#[derive(Args, Debug, Clone)]
pub struct DeployArgs {
    /// The bake manifest (`bakery bake --manifest FILE`): one AMI per region in `amis`.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "image",
        required_unless_present = "image"
    )]
    pub manifest: Option<PathBuf>,
    /// The AMI to deploy (one region: --region or AWS_REGION).
    #[arg(long, value_name = "AMI")]
    pub image: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// swap (default for --asg), rolling, or red-black (default for --cluster).
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// Regions in waves: `us-east-1:eu-west-1,us-west-2` is us-east-1 first, then the other two
    /// together; a failed wave stops the later ones. Default: every region at once.
    #[arg(long, value_name = "WAVES")]
    pub waves: Option<String>,
    /// red-black: generations to keep (the new one included; the serving one is never deleted).
    #[arg(long, default_value_t = 2)]
    pub keep: usize,
    /// rolling: the share of capacity that must stay healthy while instances are replaced.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub min_healthy_percentage: u8,
    /// rolling: seconds a new instance warms up before it counts as healthy.
    #[arg(long, value_name = "SECS")]
    pub instance_warmup: Option<u64>,
    /// rolling: pause at these percentages of replaced capacity (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "PERCENT")]
    pub checkpoints: Vec<u8>,
    /// rolling: seconds to pause at each checkpoint.
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub checkpoint_delay: u64,
    /// rolling: how instances are replaced.
    #[arg(long, value_enum, default_value = "auto")]
    pub replace_with: ReplaceWith,
    /// red-black canary: start a canary generation of N instances first (with --canary, also a
    /// baseline group of N; default 1 there; with --judge, required).
    #[arg(long, value_name = "N")]
    pub canary_size: Option<i32>,
    /// Minutes the canary runs before it is judged (fractions allowed, e.g. 0.05).
    #[arg(long, default_value_t = 30.0, value_name = "MINUTES")]
    pub canary_minutes: f64,
    /// The judge plugin that scores the canary (e.g. judge-metrics-file).
    #[arg(long, value_name = "PLUGIN", requires = "canary_size")]
    pub judge: Option<String>,
    /// The judge plugin's config as JSON (e.g. '{"metrics": "m.json"}').
    #[arg(long, value_name = "JSON")]
    pub judge_config: Option<String>,
    /// The lowest passing score (0-100).
    #[arg(long, default_value_t = 95.0)]
    pub min_score: f64,
    /// red-black canary analysis: judge a canary generation against a baseline group (the serving
    /// image, same size, both in the serving target groups) with this canary config
    /// (docs/canary.md), reading its metrics' CloudWatch/Prometheus sources.
    #[arg(long = "canary", value_name = "FILE", conflicts_with = "judge")]
    pub canary_config: Option<PathBuf>,
    /// With --canary: judge every this long during --canary-minutes (30s, 5m, 1h; seconds).
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub interval: String,
    /// With --canary: write each judgement's report to DIR/CLUSTER-REGION.html (and .json).
    #[arg(long, value_name = "DIR", requires = "canary_config")]
    pub canary_report: Option<PathBuf>,
    /// With --canary and `marginal: manual`: seconds a Marginal canary waits for
    /// `bakery canary approve` or `reject` before it counts as rejected.
    #[arg(long, value_name = "SECS", default_value_t = 14400)]
    pub approval_timeout: u64,
    #[command(flatten)]
    pub plugins: DeployPluginArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Plugins run at the deploy hook points (pre-deploy, post-deploy, deploy-failed, rollback).
#[derive(Args, Debug, Clone, Default)]
pub struct DeployPluginArgs {
    /// Run this plugin at the deploy hook points; repeatable.
    #[arg(long = "plugin", value_name = "NAME")]
    pub plugins: Vec<String>,
    /// A plugin's config as NAME=JSON, e.g. notify-webhook='{"url": "https://..."}'; repeatable.
    #[arg(long = "plugin-config", value_name = "NAME=JSON")]
    pub plugin_config: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub plugins: DeployPluginArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON on stdout (default: a table).
    #[arg(long)]
    pub json: bool,
}
