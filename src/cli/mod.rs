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

    /// When to colour log lines on stderr: auto (a terminal, unless NO_COLOR is set), always, never.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "WHEN",
        default_value_t = crate::progress::ColorChoice::Auto
    )]
    pub color: crate::progress::ColorChoice,

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
    /// Print shell completions on stdout (install.sh installs them for bash, zsh and fish).
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout, or write one page per command into --dir.
    Man(ManArgs),
    /// Internal: the chroot session child process (driven over stdin/stdout by bake and base build).
    #[command(name = "__session", hide = true)]
    Session,
}

#[derive(Args, Debug, Clone, Default)]
pub struct BakeArgs {
    /// Recipe file (YAML). Flags given on the command line override its values.
    pub recipe: Option<PathBuf>,

    /// Base image: a raw or qcow2 disk file. Defaults to the built-in Debian 13 base (built once and cached).
    #[arg(long, short = 'b')]
    pub base: Option<PathBuf>,

    /// Package to install: a .deb/.rpm file, a name from the image's own sources in apt's spellings (NAME, NAME=VERSION, NAME/RELEASE, each with an optional :ARCH), or an http(s) URL (optionally URL#sha256=HEX); repeat to install several, in order. Replaces the recipe's list.
    #[arg(long = "package", short = 'p', value_name = "FILE|NAME|URL")]
    pub packages: Vec<PathBuf>,

    /// Layer to apply before the packages (a name from provisioners/ or a directory); repeatable, in order.
    #[arg(long = "layer", short = 'l', value_name = "NAME|DIR")]
    pub layers: Vec<String>,

    /// Output: a file (`.raw`/`.img` for raw, `.qcow2` for qcow2), or `ami` to bake AMIs (with --region, --copy-to, --base-name).
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

    /// After the provisioning steps, before the seal: an interactive shell in the image, with the bake's isolation (Aminator's -i). `exit` continues and seals; a non-zero exit stops the bake. Needs a terminal; refused in CI.
    #[arg(long)]
    pub shell: bool,

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

    /// Apply the layers in this bake, neither using nor writing the layer cache (local bakes start from a cached image of base + layers by default).
    #[arg(long, conflicts_with = "refresh_layers")]
    pub no_layer_cache: bool,

    /// Apply the layers again and replace their layer cache entry, even if it is fresh.
    #[arg(long)]
    pub refresh_layers: bool,

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
            ami: self.aws.publish.ami.spec(),
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
    /// Share with this account (launch permission and createVolumePermission on the snapshots), organization ARN or OU ARN (launch permission) in every region; repeatable.
    #[arg(long = "share-with", value_name = "ACCOUNT|ORG-ARN|OU-ARN")]
    pub share_with: Vec<String>,
    /// On failure, keep the volumes, snapshots and AMIs made so far (for debugging) instead of deleting them.
    #[arg(long)]
    pub keep_on_error: bool,
    #[command(flatten)]
    pub ami: AmiOptionArgs,
}

/// AMI attributes, lifecycle and encryption (README, "AMI options"). Launch attributes not given
/// are inherited from the base AMI.
#[derive(Args, Debug, Clone, Default)]
pub struct AmiOptionArgs {
    /// Boot mode: legacy-bios, uefi or uefi-preferred. Default: the base AMI's; for a base built from scratch, what its disk boots (uefi-preferred for UEFI+BIOS).
    #[arg(long, value_name = "MODE")]
    pub boot_mode: Option<crate::aws::ami::attributes::BootMode>,
    /// v2.0: instances must use IMDSv2; none: register without it. Default: the base AMI's.
    #[arg(long, value_name = "v2.0|none")]
    pub imds_support: Option<crate::aws::ami::attributes::V2Setting>,
    /// v2.0: NitroTPM (needs boot mode uefi or uefi-preferred); none: without. Default: the base AMI's.
    #[arg(long, value_name = "v2.0|none")]
    pub tpm_support: Option<crate::aws::ami::attributes::V2Setting>,
    /// ENA networking on or off. Default: the base AMI's (on for a base built from scratch).
    #[arg(long, value_name = "true|false")]
    pub ena_support: Option<bool>,
    /// simple: SR-IOV (Intel 82599 VF); none: without. Default: the base AMI's.
    #[arg(long, value_name = "simple|none")]
    pub sriov_net_support: Option<crate::aws::ami::attributes::SriovSetting>,
    /// Deprecate the AMI in every region at this UTC time (RFC 3339, e.g. 2027-06-30T00:00:00Z).
    #[arg(long, value_name = "TIME", conflicts_with = "deprecate_in")]
    pub deprecate_at: Option<String>,
    /// Deprecate the AMI this long after the bake starts (90d, 12weeks, 1y).
    #[arg(long, value_name = "DURATION")]
    pub deprecate_in: Option<String>,
    /// Protect every AMI from deregistration (=with-cooldown: AWS keeps it 24 h after protection is lifted; =off).
    #[arg(long, value_name = "on|with-cooldown|off", num_args = 0..=1, require_equals = true, default_missing_value = "on")]
    pub deregistration_protection: Option<crate::aws::ami::attributes::Protection>,
    /// Encrypt every snapshot of every regional AMI (with --kms-key-id, else the account's default EBS key of each region).
    #[arg(long)]
    pub encrypt: bool,
    /// KMS key (id, ARN, alias) for every region, or REGION=KEY for one region; repeatable. Needs --encrypt.
    #[arg(long = "kms-key-id", value_name = "KEY|REGION=KEY")]
    pub kms_key_ids: Vec<String>,
}

impl AmiOptionArgs {
    /// The flags as the AMI sink's option spec (without recipe values).
    pub fn spec(&self) -> crate::pipeline::sink::ami_options::AmiOptionSpec {
        crate::pipeline::sink::ami_options::AmiOptionSpec {
            boot_mode: self.boot_mode,
            imds_support: self.imds_support,
            tpm_support: self.tpm_support,
            ena_support: self.ena_support,
            sriov_net_support: self.sriov_net_support,
            deprecate_at: self.deprecate_at.clone(),
            deprecate_in: self.deprecate_in.clone(),
            deregistration_protection: self.deregistration_protection,
            encrypt: self.encrypt,
            kms_key_id_flags: self.kms_key_ids.clone(),
            ..Default::default()
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct BaseListArgs {
    /// Image name pattern (`*` wildcards).
    #[arg(long, default_value = "bakery-base-*")]
    pub name: String,
    /// Regions to list (comma-separated; default: AWS_REGION).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub region: Vec<String>,
    /// Print JSON on stdout (default: a table).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BaseBuildArgs {
    /// Base definition (YAML), e.g. base-images/debian-bookworm.yaml. Defaults to the built-in Debian 13 base.
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

#[derive(Args, Debug, Clone, Default)]
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
    /// Remove bake logs (<work-dir>/logs) last written longer ago than this: 30d, 12h, 2weeks, 0 (all of finished bakes).
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub keep_logs_for: String,
    /// Then remove the oldest bake logs until the rest take at most this much disk: 1GiB, 500M.
    #[arg(long, default_value = "1GiB", value_name = "SIZE")]
    pub log_budget: String,
    /// Remove the least recently used cached snapshots and bases (<work-dir>/snapshots, bases) until the rest take at most this much disk (never one a running bake holds): 20GiB, 0.
    #[arg(long, default_value = "20GiB", value_name = "SIZE")]
    pub cache_budget: String,
    /// Print JSON on stdout (default: a table).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug, Clone)]
pub struct ManArgs {
    /// Write bakery.1 and bakery-COMMAND.1 for every command into this directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
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

    /// Every subcommand path with its built command (`bakery base build` → ["base", "build"]).
    fn subcommands(
        cmd: &clap::Command,
        path: Vec<String>,
        out: &mut Vec<(Vec<String>, clap::Command)>,
    ) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            out.push((p.clone(), sub.clone()));
            subcommands(sub, p, out);
        }
    }

    fn help_of(path: &[&str]) -> String {
        let mut args = vec!["bakery"];
        args.extend(path);
        args.push("--help");
        match Cli::try_parse_from(args) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("--help parsed as a command"),
        }
    }

    /// `--help` of every subcommand names every value each of its flags accepts: the values of
    /// every enum flag, and the documented special values of path/duration flags.
    #[test]
    fn every_help_names_every_value_its_flags_accept() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut all = Vec::new();
        subcommands(&cmd, vec![], &mut all);
        assert!(all.len() > 10, "{} subcommands", all.len());
        let mut missing = Vec::new();
        for (path, sub) in &all {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            let help = help_of(&p);
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if !arg.get_action().takes_values() {
                    continue;
                }
                for v in arg
                    .get_possible_values()
                    .iter()
                    .filter(|v| !v.is_hide_set())
                {
                    if !help.contains(v.get_name()) {
                        missing.push(format!(
                            "{} --{}: {}",
                            path.join(" "),
                            arg.get_id(),
                            v.get_name()
                        ));
                    }
                }
            }
        }
        let special: &[(&[&str], &[&str])] = &[
            (
                &["bake"],
                &["ami", ".qcow2", ".raw", "volume", "direct", "WHEN", "never"],
            ),
            (&["base", "build"], &["ami", ".qcow2", ".raw"]),
            (&["gc"], &["2h"]),
        ];
        for (path, values) in special {
            let help = help_of(path);
            for v in *values {
                if !help.contains(v) {
                    missing.push(format!("{}: {v}", path.join(" ")));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "values missing from --help: {missing:?}"
        );
    }

    /// Help is true for the command it is on: rollback and status take no manifest.
    #[test]
    fn region_help_of_rollback_and_status_does_not_promise_a_manifest() {
        for cmd in ["rollback", "status"] {
            let help = help_of(&[cmd]);
            let region = help
                .split("--region")
                .nth(1)
                .unwrap_or_default()
                .split("\n  -")
                .next()
                .unwrap_or_default()
                .to_string();
            assert!(region.contains("AWS_REGION"), "{cmd}: {region}");
            assert!(
                !region.contains("manifest") || region.contains("deploy:"),
                "{cmd} --region: {region}"
            );
        }
    }

    /// Completions for every shell install.sh installs name the commands and their flags.
    #[test]
    fn completions_know_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "bakery", &mut buf);
            let s = String::from_utf8(buf).unwrap();
            for w in [
                "bake",
                "deploy",
                "rollback",
                "--output",
                "--copy-to",
                "red-black",
            ] {
                assert!(s.contains(w), "{shell}: no {w}");
            }
        }
    }

    /// `bakery status` with no target names both ways to give one.
    #[test]
    fn a_missing_target_names_asg_and_cluster() {
        for cmd in ["status", "rollback"] {
            let e = Cli::try_parse_from(["bakery", cmd])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--asg") && e.contains("--cluster"), "{e}");
        }
    }
}
