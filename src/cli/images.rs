//! `bakery images ...`: clap definitions only.

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Deregister an app's old AMIs and delete their snapshots, per region; never the newest N, never one an ASG or instance uses.
    Prune(PruneArgs),
}

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// The app: the package name in the images' `appversion` tag (`{app}-{version}-{release}`).
    #[arg(long)]
    pub app: String,
    /// How many of the newest images to keep in each region (in-use images are kept on top of these).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// Regions to prune (comma-separated or repeated; default: AWS_REGION).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub region: Vec<String>,
    /// Show the plan, with the reason each image is kept, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout (default: one tab-separated line per image).
    #[arg(long)]
    pub json: bool,
}
