//! Sources: where a bake's disk comes from. Each hands the pipeline a [`SourceDisk`] — a disk
//! image file or a block device — and what it knows of the base ([`BaseOrigin`]).
//!
//! - `file.rs`: a raw or qcow2 base file (sparse copy, or qemu-img conversion)
//! - `builtin.rs`: the built-in Debian 13 base, built once with debootstrap and cached
//! - `debootstrap.rs`: a base spec (YAML) built from nothing: partitioned, formatted disk plus
//!   the debootstrap and system steps of the session
//! - `ami_direct.rs`: a base AMI's root snapshot read with the EBS direct APIs (cached per
//!   snapshot id), then copied
//! - `ami_volume.rs`: a volume made from the base AMI's snapshot, attached to this EC2 host
//!
//! - `layer_cache.rs` (keys and rules in `layer_key.rs`): a local base with the bake's layers
//!   already applied, cached under `<work-dir>/layer-cache` (issue 18)
//! - `layer_cache_ami.rs` (its tags and name in `layer_tags.rs`): the same for a base AMI in
//!   direct mode, the entry a layered base AMI

pub mod ami_direct;
pub mod ami_volume;
pub mod builtin;
pub mod debootstrap;
pub mod file;
pub mod layer_cache;
pub mod layer_cache_ami;
pub mod layer_key;
pub mod layer_tags;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::aws::ami::{BaseAmi, BaseRef};
use crate::aws::ebs::BlockHash;
use crate::aws::imds::Ec2Host;
use crate::aws::volume::AttachedVolume;
use crate::disk::image::Format;
use crate::manifest::BaseSummary;
use crate::provision::plan::{Bootstrap, ImageFacts};
use crate::recipe::Mode;

/// Where the base comes from (what the command asked for).
#[derive(Debug, Clone)]
pub enum Source {
    /// A raw or qcow2 base image file.
    File(PathBuf),
    /// The built-in Debian 13 base (built once, cached under `<work-dir>/bases`).
    Builtin,
    /// Built from nothing from a base spec.
    Debootstrap(Box<debootstrap::Debootstrap>),
    /// A base AMI: its snapshot read directly (`direct`) or attached as a volume (`volume`);
    /// `None`: volume on an EC2 host, direct elsewhere.
    Ami { base: BaseRef, mode: Option<Mode> },
    /// A base (file, built-in, or an AMI in direct mode) with the layer cache in front: the
    /// bake's layers come from a cached image of base + layers (a file, or a layered base AMI)
    /// when one is fresh.
    LayerCache(Box<layer_cache::LayerCache>),
}

impl Source {
    /// The base behind the layer cache.
    pub fn without_layer_cache(self) -> Source {
        match self {
            Source::LayerCache(lc) => lc.base,
            s => s,
        }
    }

    /// The base AMI asked for, behind the layer cache or not.
    pub fn base_ami_ref(&self) -> Option<&BaseRef> {
        match self {
            Source::Ami { base, .. } => Some(base),
            Source::LayerCache(lc) => lc.base.base_ami_ref(),
            _ => None,
        }
    }
}

/// The disk a source produced, ready for the device step.
#[derive(Debug)]
pub struct SourceDisk {
    /// An image file (attached to a loop device next) or a block device (an attached volume).
    pub path: PathBuf,
    pub origin: BaseOrigin,
    /// The partition holding `/` when the source knows it (a disk it partitioned itself).
    pub root_partition: Option<u32>,
    /// Build the root from nothing first (debootstrap).
    pub bootstrap: Option<Bootstrap>,
    pub from: From,
}

/// Where the disk's blocks came from, for the sink.
#[derive(Debug)]
pub enum From {
    /// A file copied or built locally: a full upload (zero blocks left out).
    Local,
    /// A base snapshot read with the EBS direct APIs: upload only what differs from it.
    Snapshot {
        /// The base AMI the image is registered like (and named after in the manifest).
        base: BaseAmi,
        /// The snapshot the disk was read from, which `hashes` describe and the upload is
        /// incremental against: the base's root snapshot, or a layered base's (layer cache).
        parent_snapshot_id: String,
        hashes: Vec<Option<BlockHash>>,
        bytes_read: u64,
    },
    /// A volume attached to this host: detached by the seal, snapshotted by the sink.
    Volume {
        base: BaseAmi,
        host: Ec2Host,
        attached: AttachedVolume,
    },
}

impl From {
    /// The base AMI the image is derived from (AMI sources).
    pub fn base_ami(&self) -> Option<&BaseAmi> {
        match self {
            From::Local => None,
            From::Snapshot { base, .. } | From::Volume { base, .. } => Some(base),
        }
    }
}

/// What a source knows of its base; completed by the image's own record
/// (`/etc/bakery/base.json`, read by the session) in [`BaseOrigin::summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseOrigin {
    /// The base file, AMI id, or `debootstrap SUITE MIRROR`.
    pub image: String,
    /// Known name (AMI name, spec name); None: the image's record, else `fallback_name`.
    pub name: Option<String>,
    pub fallback_name: String,
    /// Known version (base_ami_version tag, spec version); None: the image's record, else
    /// `unknown`.
    pub version: Option<String>,
    pub format: Option<Format>,
}

impl BaseOrigin {
    /// The manifest's `base`: what the source knew, else what the image says of itself.
    pub fn summary(&self, facts: &ImageFacts) -> BaseSummary {
        let recorded = |key: &str| {
            facts
                .base
                .as_ref()
                .and_then(|b| b[key].as_str())
                .map(str::to_string)
        };
        BaseSummary {
            image: self.image.clone(),
            name: self
                .name
                .clone()
                .or_else(|| recorded("name"))
                .unwrap_or_else(|| self.fallback_name.clone()),
            version: self
                .version
                .clone()
                .or_else(|| recorded("version"))
                .unwrap_or_else(|| "unknown".into()),
            format: self.format,
        }
    }

    /// What a base AMI says of itself (its name, its `base_ami_version` tag).
    pub fn of_ami(base: &BaseAmi) -> BaseOrigin {
        BaseOrigin {
            image: base.id.clone(),
            name: Some(base.name.clone()),
            fallback_name: base.name.clone(),
            version: base.version.clone(),
            format: None,
        }
    }
}

/// `path`'s file name without its extension (a base file's name when it has no record).
pub(crate) fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Is `p` a block device (an attached volume) rather than an image file?
pub(crate) fn is_block_device(p: &Path) -> Result<bool> {
    Ok(std::fs::metadata(p)
        .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        .unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_is_what_the_source_knew_else_what_the_image_records() {
        let facts = ImageFacts {
            base: Some(serde_json::json!({"name": "bakery-base-bookworm", "version": "2026"})),
            ..Default::default()
        };
        let file = BaseOrigin {
            image: "/b/base.raw".into(),
            name: None,
            fallback_name: "base".into(),
            version: None,
            format: Some(Format::Raw),
        };
        let s = file.summary(&facts);
        assert_eq!(
            (s.name.as_str(), s.version.as_str()),
            ("bakery-base-bookworm", "2026")
        );
        let s = file.summary(&ImageFacts::default());
        assert_eq!((s.name.as_str(), s.version.as_str()), ("base", "unknown"));
        let ami = BaseOrigin {
            name: Some("bakery-base-bookworm-1".into()),
            version: Some("1".into()),
            ..file
        };
        let s = ami.summary(&facts);
        assert_eq!(
            (s.name.as_str(), s.version.as_str()),
            ("bakery-base-bookworm-1", "1")
        );
    }
}
