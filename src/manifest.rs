//! The JSON a bake prints on stdout and CI hands to the next stage.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::package::{PackageInfo, PackageKind};

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub bakery_version: &'static str,
    pub kind: &'static str,
    pub bake_id: String,
    /// Aminator-style image name: `{package}-{version}-{release}-{arch}-{YYYYMMDDHHMM}`.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageSummary>,
    pub base: BaseSummary,
    pub layers: Vec<String>,
    /// The image file (local bakes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputSummary>,
    /// One AMI per region (AMI bakes), the registering region first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<AmiOutput>,
    /// What direct mode read and uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Every removal, upgrade and downgrade the bake made to a package the base had
    /// (`{name, kind, from, to, action}`, `to` null for a removal); `[]` when none.
    pub package_changes: Vec<crate::provision::pkgdb::PackageChange>,
    /// The tags an AMI of this bake gets.
    pub tags: BTreeMap<String, String>,
    pub timings: Vec<Timing>,
    pub total_seconds: f64,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageSummary {
    pub kind: PackageKind,
    pub file: PathBuf,
    pub name: String,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// The version the image's package database reports after the install.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<String>,
}

impl PackageSummary {
    pub fn new(p: &PackageInfo, installed: &BTreeMap<String, String>) -> PackageSummary {
        PackageSummary {
            kind: p.kind,
            file: p.path.clone(),
            name: p.name.clone(),
            version: p.version.clone(),
            release: p.release.clone(),
            arch: p.arch.clone(),
            installed_version: installed.get(&p.name).cloned(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseSummary {
    /// The base image file (local bakes) or AMI id.
    pub image: String,
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputSummary {
    pub path: PathBuf,
    pub format: &'static str,
    /// What the guest sees.
    pub size_bytes: u64,
    /// What the file takes on disk.
    pub file_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub step: String,
    pub seconds: f64,
}

impl Timing {
    pub fn new(step: &str, seconds: f64) -> Timing {
        Timing {
            step: step.to_string(),
            seconds: (seconds * 1000.0).round() / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AmiOutput {
    pub region: String,
    pub image_id: String,
    pub snapshot_id: String,
    /// An AMI of this name already existed there and was reused.
    pub reused: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct UploadSummary {
    pub mode: &'static str,
    pub base_snapshot_id: String,
    pub snapshot_id: String,
    pub bytes_read: u64,
    pub blocks_total: u64,
    pub blocks_changed: u64,
    pub bytes_uploaded: u64,
}
