//! Command-line definitions only (clap derive); no logic lives here.

pub mod boot;
pub mod canary;
pub mod deploy;
pub mod images;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Bake machine images: a base disk plus your packages and layers, out as raw/qcow2 files (or AMIs).
#[derive(Parser, Debug)]
#[command(
    name = "bakery",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// More log output on stderr (-v: debug, -vv: trace, and command output from the chroot).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Where bakes keep their work files, logs and cached bases.
    #[arg(
        long,
        global = true,
        env = "BAKERY_WORK_DIR",
        default_value = "/var/lib/bakery"
    )]
    pub work_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Bake packages and layers into a copy of a base image.
    Bake(BakeArgs),
    /// Build and inspect base images.
    #[command(subcommand)]
    Base(BaseCommand),
    /// Boot an image under QEMU through its own bootloader and check that it answers.
    Boot(boot::BootArgs),
    /// Manage baked AMIs (retention).
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// Check that this host can bake, with a fix for each missing piece.
    Doctor(DoctorArgs),
    /// Roll an Auto Scaling group or cluster onto an image (swap, rolling, red-black with a canary).
    Deploy(deploy::DeployArgs),
    /// Undo the last deploy of an ASG or cluster (no manifest needed).
    Rollback(deploy::RollbackArgs),
    /// Generations, images, health and any deploy in progress of an ASG or cluster.
    Status(deploy::StatusArgs),
    /// Automated canary analysis: judge a canary against its baseline (see docs/canary.md).
    #[command(subcommand)]
    Canary(canary::CanaryCommand),
    /// Remove what crashed or killed bakes left on this host (loop devices, work files, partial outputs).
    Gc(GcArgs),
    /// Internal: the chroot session child process (driven over stdin/stdout by bake and base build).
    #[command(name = "__session", hide = true)]
    Session,
}

#[derive(Args, Debug, Clone, Default)]
pub struct BakeArgs {
    /// Recipe file (YAML). Flags given on the command line override its values.
    pub recipe: Option<PathBuf>,

    /// Base image: a raw or qcow2 disk file. Defaults to the built-in Debian 12 base (built once and cached).
    #[arg(long, short = 'b')]
    pub base: Option<PathBuf>,

    /// Package to install (.deb or .rpm); repeat to install several, in order. Replaces the recipe's list.
    #[arg(long = "package", short = 'p', value_name = "FILE")]
    pub packages: Vec<PathBuf>,

    /// Layer to apply before the packages (a name from provisioners/ or a directory); repeatable, in order.
    #[arg(long = "layer", short = 'l', value_name = "NAME|DIR")]
    pub layers: Vec<String>,

    /// Output file: `.raw`/`.img` for raw, `.qcow2` for qcow2.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,

    /// Extra tag for the image, as KEY=VALUE; repeatable.
    #[arg(long = "tag", short = 't', value_name = "KEY=VALUE")]
    pub tags: Vec<String>,

    /// Run this plugin at the bake's hook points (plugins/NAME or bakery-plugin-NAME on PATH); repeatable.
    #[arg(long = "plugin", value_name = "NAME")]
    pub plugins: Vec<String>,

    /// Also write the manifest JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,

    /// Allow installing a package older than the one the base has (a downgrade, refused by default, whatever the package's dependencies).
    #[arg(long)]
    pub allow_downgrade: bool,

    /// Print the plan and exit without touching anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the merged recipe (file + flags + defaults) as YAML and exit.
    #[arg(long)]
    pub print_config: bool,

    /// After baking, boot the output under QEMU and check this health URL (see `bakery boot`).
    #[arg(long, value_name = "URL")]
    pub boot_check: Option<String>,

    /// Seconds the boot check may take.
    #[arg(long, default_value_t = 400, requires = "boot_check")]
    pub boot_timeout: u64,

    /// Extra directories to look up layers in (before the built-in ones).
    #[arg(
        long = "layer-path",
        value_name = "DIR",
        env = "BAKERY_LAYER_PATH",
        value_delimiter = ':'
    )]
    pub layer_path: Vec<PathBuf>,

    /// Grow the disk, its root partition and filesystem (ext4, xfs) to this size, e.g. 6GiB; for AMIs the root volume's size (whole GiB).
    #[arg(long, value_name = "SIZE")]
    pub disk_size: Option<String>,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Where AMIs go (with `--output ami`).
#[derive(Args, Debug, Clone, Default)]
pub struct AwsArgs {
    /// Base AMI by name pattern: the newest available image of this name owned by the account (Aminator's -B), e.g. 'bakery-base-bookworm-*'.
    #[arg(long, value_name = "PATTERN", conflicts_with = "base")]
    pub base_name: Option<String>,

    /// Regions, sharing and cleanup, as for a base publish.
    #[command(flatten)]
    pub publish: PublishArgs,

    /// How to get a block device: `volume` (EBS volume attached to this EC2 bake host) or `direct` (EBS direct APIs and a local loop device). Default: volume on EC2, direct elsewhere.
    #[arg(long, value_enum)]
    pub mode: Option<AwsMode>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsMode {
    Volume,
    Direct,
}

impl From<AwsMode> for crate::recipe::Mode {
    fn from(m: AwsMode) -> Self {
        match m {
            AwsMode::Volume => crate::recipe::Mode::Volume,
            AwsMode::Direct => crate::recipe::Mode::Direct,
        }
    }
}

impl BakeArgs {
    /// The flags a recipe merges (see [`crate::recipe::Recipe::merge_flags`]).
    pub fn overrides(&self) -> crate::recipe::Overrides {
        crate::recipe::Overrides {
            base: self.base.clone(),
            packages: self.packages.clone(),
            layers: self.layers.clone(),
            output: self.output.clone(),
            tags: self.tags.clone(),
            plugins: self.plugins.clone(),
            base_name: self.aws.base_name.clone(),
            region: self.aws.publish.region.clone(),
            copy_to: self.aws.publish.copy_to.clone(),
            share_with: self.aws.publish.share_with.clone(),
            mode: self.aws.mode.map(Into::into),
            allow_downgrade: self.allow_downgrade,
            disk_size: self.disk_size.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum BaseCommand {
    /// Build a bootable base disk from scratch (debootstrap, kernel, GRUB) from a base YAML; `--output ami` publishes it as an AMI.
    Build(BaseBuildArgs),
    /// List the published versions of a base (AMIs) per region, newest first.
    List(BaseListArgs),
    /// Take the newest base AMI, apply OS updates in a chroot and publish the next version incrementally.
    Refresh(BaseRefreshArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BaseRefreshArgs {
    /// The base to refresh: the newest available AMI of this name pattern owned by the account.
    #[arg(long, value_name = "PATTERN")]
    pub base_name: String,
    /// Name of the base family (default: the refreshed image's base_ami_name tag).
    #[arg(long)]
    pub family: Option<String>,
    /// `volume` on an EC2 bake host, `direct` elsewhere (default: detected).
    #[arg(long, value_enum)]
    pub mode: Option<AwsMode>,
    /// Also write the manifest JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub publish: PublishArgs,
}

/// Where AMIs go: the region they are registered in, copies, sharing, and cleanup on failure.
#[derive(Args, Debug, Clone, Default)]
pub struct PublishArgs {
    /// Region to register in (default: AWS_REGION / the profile's region).
    #[arg(long)]
    pub region: Option<String>,
    /// Copy the AMI to these regions too (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub copy_to: Vec<String>,
    /// Grant launch permission to this AWS account in every region; repeatable.
    #[arg(long = "share-with", value_name = "ACCOUNT")]
    pub share_with: Vec<String>,
    /// On failure, keep the volumes, snapshots and AMIs made so far (for debugging) instead of deleting them.
    #[arg(long)]
    pub keep_on_error: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BaseListArgs {
    /// Image name pattern (`*` wildcards).
    #[arg(long, default_value = "bakery-base-*")]
    pub name: String,
    /// Regions to list (comma-separated; default: AWS_REGION).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub region: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct BaseBuildArgs {
    /// Base definition (YAML), e.g. base-images/debian-bookworm.yaml. Defaults to the built-in Debian 12 base.
    pub spec: Option<PathBuf>,

    /// Output file: `.raw`/`.img` for raw, `.qcow2` for qcow2, or `ami` to publish an AMI.
    #[arg(long, short = 'o')]
    pub output: PathBuf,

    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,

    /// Also write the manifest JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Print the plan and exit without touching anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Disk size of the base (replaces the spec's `size`), e.g. 6GiB; whole GiB for `--output ami`.
    #[arg(long, value_name = "SIZE")]
    pub disk_size: Option<String>,

    #[command(flatten)]
    pub publish: PublishArgs,

    /// Extra directories to look up layers in (before the built-in ones).
    #[arg(
        long = "layer-path",
        value_name = "DIR",
        env = "BAKERY_LAYER_PATH",
        value_delimiter = ':'
    )]
    pub layer_path: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct GcArgs {
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove AWS volumes, snapshots and AMIs of killed bakes (tagged bakery:bake-id, still pending) in these regions (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub region: Vec<String>,
    /// Look for AWS leftovers in the default region (AWS_REGION) when no --region is given.
    #[arg(long)]
    pub aws: bool,
    /// AWS resources younger than this are left alone (a bake on another host may still be running them): 2h, 30m, 90s, 0.
    #[arg(long, default_value = "2h", value_name = "DURATION")]
    pub grace: String,
}

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// Print the checks as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_valid() {
        Cli::command().debug_assert();
    }
}
