//! Source: the built-in Debian 13 base (base-images/debian-trixie.yaml, compiled in). Built
//! once per content of its YAML with the debootstrap source and a file sink — the same
//! pipeline — and kept under `<work-dir>/bases`; concurrent bakes wait for one build.

use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest, Sha256};
use tracing::info;

use super::{debootstrap, SourceDisk};
use crate::context::Globals;
use crate::disk::image::Format;
use crate::pipeline::{sink, Stages};
use crate::recipe::base::{BaseSpec, DEFAULT_BASE_YAML};
use crate::sys::lock::HostLock;

/// The cache key of the built-in base: `debian-trixie-` and a hash of its YAML and of the disk
/// layout that builds it (a bakery whose layout changed, e.g. the hybrid ESP, must not keep
/// baking on a base cached by an older one). The file is `<work-dir>/bases/<key>.raw`.
pub fn cache_key() -> String {
    let mut h = Sha256::new();
    h.update(DEFAULT_BASE_YAML.as_bytes());
    h.update(debootstrap::LAYOUT_REVISION.as_bytes());
    format!("debian-trixie-{}", hex::encode(&h.finalize()[..8]))
}

/// Where the built-in base is cached under `work_dir`, and its key.
pub fn cache_path(work_dir: &Path) -> (PathBuf, String) {
    let key = cache_key();
    (work_dir.join("bases").join(format!("{key}.raw")), key)
}

/// The cached built-in base, built first if needed. The caller holds it
/// ([`crate::cache::Use`], key [`cache_key`]) while it reads it.
pub fn cached(g: &Globals, stages: &Stages) -> Result<PathBuf> {
    let (path, key) = cache_path(&g.work_dir);
    let hash = key.trim_start_matches("debian-trixie-");
    let dir = g.work_dir.join("bases");
    std::fs::create_dir_all(&dir)?;
    let _lock = HostLock::acquire(&g.work_dir.join("locks"), &format!("base-{hash}"))?;
    if path.exists() {
        return Ok(path);
    }
    stages.progress().println(&format!(
        "building the built-in Debian 13 base once (cached as {})",
        path.display()
    ));
    let spec = BaseSpec::builtin();
    let (job, source) = debootstrap::job(&spec, &[], &[])?;
    let m = crate::pipeline::run(
        &job,
        source,
        sink::Sink::File(sink::file::FileTarget {
            path: path.clone(),
            format: Format::Raw,
            keep_on_error: false,
        }),
        g,
    )?;
    info!("built-in base ready in {:.0}s", m.total_seconds);
    Ok(path)
}

/// Copy the cached built-in base into `disk`.
pub fn open(g: &Globals, disk: &Path, stages: &mut Stages) -> Result<SourceDisk> {
    // Held until the copy is done: `bakery gc` leaves the entry alone meanwhile.
    let held = crate::cache::Use::hold(&g.work_dir, "base", &cache_key())?;
    let base = cached(g, stages)?;
    crate::fault::point("hold cached base")?;
    let disk = super::file::open(&base, disk, stages)?;
    held.touch(&base);
    Ok(disk)
}
