//! What the parent hands to the chroot session child (JSON on its stdin), and the events the
//! child reports back (JSON lines on its stdout).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::disk::layout::FsInfo;
use crate::package::PackageKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionPlan {
    /// Empty directory the root filesystem is mounted on (inside the child's mount namespace).
    pub root: PathBuf,
    /// The whole disk device (e.g. /dev/loop3) and its partitions, as the host names them.
    pub disk: PathBuf,
    pub partitions: Vec<PartitionDev>,
    /// Which partition holds `/`.
    pub root_partition: u32,
    /// Build the root from nothing first (base build).
    #[serde(default)]
    pub bootstrap: Option<Bootstrap>,
    pub steps: Vec<Step>,
    /// Where command output goes (also to stderr with -vv).
    pub log: PathBuf,
    pub echo_output: bool,
    /// The architecture packages must match, checked against the image before anything runs.
    #[serde(default)]
    pub packages: Vec<PackageCheck>,
    /// Plugins for the pre-provision and post-provision hooks (run inside the session, where
    /// the image is mounted).
    #[serde(default)]
    pub plugins: Vec<(crate::plugin::PluginSpec, PathBuf)>,
    #[serde(default)]
    pub bake_id: String,
    /// A bake (not a base build or refresh): what it may change in the base's packages, checked
    /// after every step; and the image is checked to stay generalized at seal. None: no checks
    /// (a base build makes the packages; a refresh upgrades and removes on purpose).
    #[serde(default)]
    pub policy: Option<super::pkgdb::Policy>,
    /// `--disk-size`: the root partition was grown; grow its filesystem (this kind) online
    /// once mounted.
    #[serde(default)]
    pub grow_root_fs: Option<String>,
    /// `--shell`: an interactive shell in the image after the steps, before the seal.
    #[serde(default)]
    pub shell: Option<ShellPlan>,
}

/// Where `--shell` talks to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellPlan {
    /// The user's terminal (bakery's stdin), as a host path (`/dev/pts/3`).
    pub tty: PathBuf,
    /// The user's `TERM`.
    pub term: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionDev {
    pub number: u32,
    pub device: PathBuf,
    pub part_uuid: Option<String>,
    pub fs: Option<FsInfo>,
}

impl PartitionDev {
    /// The partition among `parts` that an fstab source names (`UUID=`, `LABEL=`,
    /// `PARTUUID=`), matched exactly as [`crate::disk::layout::Layout::find_by_spec`] matches
    /// a partition table. None: not on this disk, or another kind of source.
    pub fn find_by_spec<'a>(parts: &'a [PartitionDev], spec: &str) -> Option<&'a PartitionDev> {
        let layout = crate::disk::layout::Layout {
            table: crate::disk::layout::TableKind::Gpt,
            disk_size: 0,
            partitions: parts
                .iter()
                .map(|p| crate::disk::layout::Partition {
                    number: p.number,
                    start: 0,
                    size: 0,
                    type_id: String::new(),
                    part_uuid: p.part_uuid.clone(),
                    fs: p.fs.clone(),
                })
                .collect(),
        };
        let n = layout.find_by_spec(spec)?.number;
        parts.iter().find(|p| p.number == n)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageCheck {
    pub file: String,
    pub kind: PackageKind,
    /// Normalized (x86_64, arm64, noarch, ...).
    pub arch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bootstrap {
    pub suite: String,
    pub mirror: String,
    pub include: Vec<String>,
    pub components: Vec<String>,
    pub arch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Step {
    /// Packages from the image's own repositories.
    Apt {
        layer: String,
        packages: Vec<String>,
    },
    /// Local package files, installed with the image's package manager (dependencies resolved
    /// from the image's sources).
    InstallDebs {
        files: Vec<PathBuf>,
    },
    InstallRpms {
        files: Vec<PathBuf>,
    },
    /// Packages by name from the image's own sources (any spelling of
    /// [`crate::package::spec::parse`]: `name`, `name=version`, `name/release`, `name:arch`),
    /// with the image's package manager; `field` is where the user gave them (`--package`, the
    /// recipe key), for errors.
    InstallNamed {
        packages: Vec<String>,
        field: String,
    },
    /// A script file from the host, run inside the chroot.
    Script {
        layer: String,
        path: PathBuf,
    },
    /// An inline shell command run inside the chroot.
    Run {
        layer: String,
        command: String,
    },
    Enable {
        layer: String,
        units: Vec<String>,
    },
    /// Copy a host file into the image.
    CopyFile {
        layer: String,
        src: PathBuf,
        dest: PathBuf,
        mode: u32,
    },
    /// Write a file in the image.
    WriteFile {
        dest: PathBuf,
        content: String,
        mode: u32,
    },
    /// Install GRUB for BIOS boot on the disk and generate its config (base build).
    Grub,
    /// Leave the image ready to be cloned: no machine-id, host keys or apt lists.
    Generalize,
}

impl Step {
    pub fn label(&self) -> String {
        let files = |f: &[PathBuf]| {
            f.iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Step::Apt { layer, packages } => format!("{layer}: apt install {}", packages.join(" ")),
            Step::InstallDebs { files: f } => format!("install {}", files(f)),
            Step::InstallRpms { files: f } => format!("install {}", files(f)),
            Step::InstallNamed { packages, .. } => {
                format!("install {} (image's sources)", packages.join(", "))
            }
            Step::Script { layer, path } => format!(
                "{layer}: script {}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
            Step::Run { layer, command } => format!(
                "{layer}: run {}",
                command.chars().take(40).collect::<String>()
            ),
            Step::Enable { layer, units } => format!("{layer}: enable {}", units.join(" ")),
            Step::CopyFile { layer, dest, .. } => format!("{layer}: file {}", dest.display()),
            Step::WriteFile { dest, .. } => format!("write {}", dest.display()),
            Step::Grub => "install GRUB (BIOS and UEFI)".into(),
            Step::Generalize => "generalize".into(),
        }
    }
}

/// Facts about the baked image, read inside the chroot at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageFacts {
    pub os: Option<String>,
    pub arch: Option<String>,
    /// /etc/bakery/base.json of a bakery-built base.
    pub base: Option<serde_json::Value>,
    /// Versions of the packages installed by this bake, by name.
    pub installed: BTreeMap<String, String>,
    /// The packages installed by name from the image's sources: kind, version and
    /// architecture as the package database reports them.
    #[serde(default)]
    pub named: BTreeMap<String, NamedInstall>,
    /// Processes that started inside the chroot despite policy-rc.d and were stopped.
    pub stray_processes: Vec<String>,
    /// Tags returned by pre/post-provision plugins.
    #[serde(default)]
    pub plugin_tags: BTreeMap<String, String>,
    /// Removals, upgrades and downgrades of the base's packages (bakes only).
    #[serde(default)]
    pub package_changes: Vec<super::pkgdb::PackageChange>,
    /// What the seal check put back or removed to keep the image generalized.
    #[serde(default)]
    pub sealed: Vec<String>,
    /// Warnings about the image (changes bakery could not keep or judge).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The apt sources' Release files this session's `apt-get update` read (empty when it did
    /// not run): what the layer cache keys an entry by.
    #[serde(default)]
    pub apt_releases: Vec<AptRelease>,
}

/// One apt source's `InRelease` (or `Release`) file as `apt-get update` fetched it: its URI
/// and the SHA-256 of its content (`None`: the source has no Release file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AptRelease {
    pub uri: String,
    pub sha256: Option<String>,
}

/// A package installed by name, as the image's package database reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedInstall {
    pub kind: PackageKind,
    /// `[epoch:]version[-release]`.
    pub version: String,
    pub arch: String,
    /// SHA-256 (hex) of the archive installed, as the image's package index lists it for this
    /// name, version and architecture (apt: the `SHA256:` field that apt verified the download
    /// against); `None` when the index lists none.
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum Event {
    Start {
        step: String,
    },
    Done {
        step: String,
        seconds: f64,
    },
    Finished {
        facts: Box<ImageFacts>,
    },
    /// `--shell` is on the user's terminal (`true`) or has ended: the live display stops
    /// drawing meanwhile.
    Shell {
        running: bool,
    },
    Failed {
        error: String,
        input_error: bool,
    },
}
