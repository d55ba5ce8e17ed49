//! The manifest: the JSON a bake or base build prints on stdout (and writes to `--manifest`),
//! and the one type every reader uses (`bakery deploy --manifest`). Field by field in
//! docs/manifest.md; field names are a contract with CI scripts and never change within a
//! `schema_version`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::disk::image::Format;
use crate::input;
use crate::package::{PackageInfo, PackageKind, PackageSource};
use crate::recipe::Mode;

/// The schema this bakery writes. Readers accept manifests up to this version; a manifest
/// without `schema_version` is version 1 (the field came with the first schema).
pub const SCHEMA_VERSION: u32 = 1;

fn schema_v1() -> u32 {
    1
}

/// What was made: an application image (`bakery bake`) or a base (`base build`, `base refresh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Bake,
    Base,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default = "schema_v1")]
    pub schema_version: u32,
    pub bakery_version: String,
    pub kind: Kind,
    pub bake_id: String,
    /// Aminator-style image name: `{package}-{version}-{release}-{arch}-{YYYYMMDDHHMM}`; for a
    /// base `{name}-{version}`.
    pub name: String,
    /// The first package (the application), when packages were installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageSummary>,
    pub base: BaseSummary,
    #[serde(default)]
    pub layers: Vec<String>,
    /// The layers came from the layer cache (a cached image of base + layers) rather than
    /// being applied in this bake.
    #[serde(default)]
    pub layers_from_cache: bool,
    /// The layer cache entry the bake started from or wrote (bakes with layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_cache_key: Option<String>,
    /// The image file (local bakes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputSummary>,
    /// One AMI per region (AMI bakes), the registering region first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<AmiOutput>,
    /// What direct mode read and uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSummary>,
    /// What the layer cache uploaded for the layered base AMI this bake made (AMI bakes whose
    /// layers were not cached yet); the image's own upload is `upload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_upload: Option<UploadSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Every removal, upgrade and downgrade the bake made to a package the base had
    /// (`{name, kind, from, to, action}`, `to` null for a removal); `[]` when none.
    #[serde(default)]
    pub package_changes: Vec<crate::provision::pkgdb::PackageChange>,
    /// The tags an AMI of this bake gets (without bakery's own `bakery:*` bookkeeping tags).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub timings: Vec<Timing>,
    #[serde(default)]
    pub total_seconds: f64,
    /// The bake's full log on the bake host.
    pub log: PathBuf,
}

impl Manifest {
    /// Read a manifest file written by `bakery bake` or `bakery base build`. Input errors (exit
    /// 2) name the file: missing, not JSON, not a manifest, or a newer schema than this bakery.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| input!("reading the manifest {}: {e}", path.display()))?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// [`Manifest::load`] of text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        let raw: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| input!("{origin}: not a bake manifest (JSON): {e}"))?;
        let v = raw
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(1);
        if v > u64::from(SCHEMA_VERSION) {
            return Err(input!(
                "{origin}: manifest schema_version {v} is newer than this bakery reads ({SCHEMA_VERSION}); upgrade bakery"
            ));
        }
        serde_json::from_value(raw).map_err(|e| input!("{origin}: not a bake manifest: {e}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSummary {
    pub kind: PackageKind,
    pub file: PathBuf,
    pub name: String,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// The version the image's package database reports after the install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<String>,
    /// How the package was given: `file`, `url` (downloaded) or `name` (from the image's
    /// sources; then `file` is empty and kind, version and arch are the database's).
    #[serde(default)]
    pub origin: crate::package::spec::Origin,
    /// The URL (without its `#sha256=` pin) or the name as given (`name`, `name=version`,
    /// `name/release`, `name:arch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// SHA-256 of the package file installed (a file or a download); for a name, of the
    /// archive the image's package index lists for the version installed (none when the index
    /// lists none, e.g. a version only the base's package database still knows, or an rpm image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
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
            origin: p.source.origin(),
            source: match &p.source {
                PackageSource::File => None,
                PackageSource::Url { url, .. } => Some(url.clone()),
                PackageSource::Name { spec, .. } => Some(spec.clone()),
            },
            sha256: match &p.source {
                PackageSource::File => crate::pipeline::sha256_file(&p.path).ok(),
                PackageSource::Url { sha256, .. } => Some(sha256.clone()),
                PackageSource::Name { sha256, .. } => sha256.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseSummary {
    /// The base image file (local bakes), AMI id, or `debootstrap SUITE MIRROR` (base build).
    pub image: String,
    pub name: String,
    pub version: String,
    /// raw or qcow2, for a base file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSummary {
    pub path: PathBuf,
    pub format: Format,
    /// What the guest sees, in bytes.
    pub size_bytes: u64,
    /// What the file takes on disk, in bytes.
    pub file_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub step: String,
    /// Wall-clock seconds, rounded to milliseconds.
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmiOutput {
    pub region: String,
    pub image_id: String,
    pub snapshot_id: String,
    /// An AMI of this name already existed there and was reused.
    #[serde(default)]
    pub reused: bool,
    /// Launch attributes and lifecycle settings, as DescribeImages reports them after the bake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<crate::aws::ami::ImageAttributes>,
    /// Every EBS snapshot of the AMI (the root first) with its size and the KMS key that
    /// encrypts it, as DescribeSnapshots reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<crate::aws::ami::SnapshotInfo>,
    /// Accounts, organizations and OUs granted launch permission (accounts also
    /// createVolumePermission on the snapshots).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSummary {
    /// `direct` (EBS direct APIs) or `volume` (a snapshot of the bake volume).
    pub mode: Mode,
    /// The parent snapshot (empty for a from-scratch upload).
    pub base_snapshot_id: String,
    pub snapshot_id: String,
    /// Bytes read from the base snapshot (0 when it came from the cache or from nothing).
    pub bytes_read: u64,
    /// 512 KiB blocks of the disk, and how many of them were sent.
    pub blocks_total: u64,
    pub blocks_changed: u64,
    pub bytes_uploaded: u64,
    /// The KMS key that encrypts the uploaded snapshot (absent: unencrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// The encrypted copy of the base snapshot the upload was a child of (made because AWS
    /// takes no key with a parent snapshot; deleted once the child completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_parent_snapshot_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            schema_version: SCHEMA_VERSION,
            bakery_version: "0.1.0".into(),
            kind: Kind::Bake,
            bake_id: "bk-0123456789ab".into(),
            name: "app-1.0-1-all-202611251830".into(),
            package: None,
            packages: vec![],
            base: BaseSummary {
                image: "ami-0abc".into(),
                name: "bakery-base-bookworm".into(),
                version: "1".into(),
                format: None,
            },
            layers: vec![],
            layers_from_cache: false,
            layer_cache_key: None,
            output: None,
            amis: vec![AmiOutput {
                region: "us-east-1".into(),
                image_id: "ami-1".into(),
                snapshot_id: "snap-1".into(),
                reused: false,
                ..Default::default()
            }],
            upload: Some(UploadSummary {
                mode: Mode::Direct,
                base_snapshot_id: "snap-0".into(),
                snapshot_id: "snap-1".into(),
                bytes_read: 1,
                blocks_total: 2,
                blocks_changed: 1,
                bytes_uploaded: 524288,
                kms_key_id: None,
                encrypted_parent_snapshot_id: None,
            }),
            layer_upload: None,
            os: None,
            package_changes: vec![],
            arch: None,
            tags: BTreeMap::new(),
            timings: vec![Timing::new("copy base", 0.12345)],
            total_seconds: 1.5,
            log: "/var/lib/bakery/logs/bk-0123456789ab.log".into(),
        }
    }

    #[test]
    fn a_manifest_reads_back_as_written() {
        let m = sample();
        let text = serde_json::to_string_pretty(&m).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["kind"], "bake");
        assert_eq!(v["upload"]["mode"], "direct");
        assert_eq!(v["timings"][0]["seconds"], 0.123);
        assert_eq!(Manifest::parse(&text, "m.json").unwrap(), m);
    }

    #[test]
    fn old_manifests_read_and_newer_ones_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("schema_version");
        let m = Manifest::parse(&v.to_string(), "old.json").unwrap();
        assert_eq!(m.schema_version, 1);
        v["schema_version"] = 99.into();
        let e = Manifest::parse(&v.to_string(), "new.json").unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        assert!(e.to_string().contains("new.json"), "{e}");
        let e = Manifest::parse("{\"amis\": []}", "x.json").unwrap_err();
        assert!(
            e.to_string().starts_with("x.json: not a bake manifest"),
            "{e}"
        );
    }
}
