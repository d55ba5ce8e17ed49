//! Source: the layer cache (issue 18). A bake with layers on a local base starts from a cached
//! image of that base with the layers applied, and only installs the rest (the application).
//!
//! An entry is `<work-dir>/layer-cache/<key>.raw` (the layered disk, sealed and generalized like
//! a base) and `<key>.json` ([`EntryMeta`], written last: an entry without it is incomplete and
//! never used). Keys and freshness are [`super::layer_key`]'s pure functions.
//!
//! - **Hit** (the newest entry for the lookup key is fresh): the entry is copied into the bake's
//!   disk (a reflink where the filesystem can, else a sparse copy), stage `copy cached layers`.
//! - **Miss**: the base is copied, the layer steps run in their own chroot session (sealed like
//!   any bake), the disk is copied into the cache under a temporary name (stage `write layer
//!   cache`), fsynced and renamed into place; entries it supersedes go. The bake then goes on
//!   on the same disk with the rest of its steps.
//!
//! A host-wide lock per lookup key is held from the lookup to the end of the copy: concurrent
//! bakes with the same layers wait for one build, and `bakery gc` never removes an entry in use.
//! Freshness: every Release file the layers' `apt-get update` read is read again (a `file:`
//! source from disk, `http(s)` with one GET each); any change, or an age over
//! [`layer_key::MAX_AGE_SECS`], rebuilds the entry.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use tracing::info;

use super::layer_key::{self, Current, EntryMeta, Verdict};
use super::{Source, SourceDisk};
use crate::context::Globals;
use crate::disk::image::{self, PendingOutput};
use crate::pipeline::{Job, Stage, Stages};
use crate::provision::pkgdb::PackageChange;
use crate::provision::plan::AptRelease;
use crate::sys::lock::HostLock;
use crate::workdir::WorkDir;

/// A local base with the layer cache in front of it (`Source::LayerCache`).
#[derive(Debug, Clone)]
pub struct LayerCache {
    /// The base: a file or the built-in base.
    pub base: Source,
    /// `--refresh-layers`: rebuild the entry even when a fresh one exists.
    pub refresh: bool,
}

/// How the bake's layers were applied, for the manifest.
#[derive(Debug, Clone)]
pub struct Used {
    /// The entry key (`layer_cache_key`).
    pub key: String,
    /// The layers came from an existing entry (`layers_from_cache`).
    pub from_cache: bool,
    /// What the layers changed in the base's packages.
    pub package_changes: Vec<PackageChange>,
    /// The layered base AMI the bake started from or made (AMI bakes).
    pub image: Option<String>,
    /// The layered base's snapshot upload, when this bake made it (AMI bakes).
    pub upload: Option<crate::manifest::UploadSummary>,
}

/// The cache directory under the work dir.
pub fn dir(work_top: &Path) -> PathBuf {
    work_top.join("layer-cache")
}

/// The lock held while an entry of `lookup` is looked up, built or copied.
pub fn lock_name(lookup: &str) -> String {
    format!("layer-cache-{}", &lookup[..lookup.len().min(16)])
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Open the disk for `job` from `lc`: a cached layered image, or the base with the layers
/// applied now (and cached). Returns the disk, the job that is left to run on it (the steps
/// after the layers, no `--disk-size`: the layered disk has it), and how the layers were applied.
pub fn open(
    job: &Job,
    lc: &LayerCache,
    disk: &Path,
    work: &WorkDir,
    stages: &mut Stages,
    g: &Globals,
) -> Result<(SourceDisk, Job, Used)> {
    let base = match &lc.base {
        Source::File(p) => p.clone(),
        Source::Builtin => super::builtin::cached(g, stages)?,
        other => bail!("the layer cache takes a base file, not {other:?}"),
    };
    let cache = dir(&g.work_dir);
    let (layer_job, rest_job) = split_job(job);
    let (lookup, _lock, hit) = stages.run("layer cache lookup", |st| {
        std::fs::create_dir_all(&cache)
            .with_context(|| format!("creating the layer cache {}", cache.display()))?;
        let base_id = format!("file sha256:{}", base_digest(&base, &cache, &job.bake_id)?);
        let (lookup, lock) = lookup_and_lock(&base_id, &layer_job, g)?;
        let entries = scan(&cache);
        let newest = layer_key::newest(&entries, &lookup);
        let named = newest.map(|e| (e, format!("entry {}", short(&e.key))));
        let fresh = use_entry(st, lc.refresh, named, "no entry");
        let hit = newest.filter(|_| fresh).cloned();
        Ok((lookup, lock, hit))
    })?;
    if let Some(mut e) = hit {
        let raw = cache.join(format!("{}.raw", e.key));
        stages.run("copy cached layers", |_| {
            image::copy_sparse(&raw, disk).map(|_| ())
        })?;
        e.last_used = now();
        // Only gc's age rule reads it: a failure to record it is not the bake's.
        if let Err(err) = write_meta(&cache, &e) {
            tracing::warn!("layer cache: recording the use of {}: {err:#}", e.key);
        }
        let disk = SourceDisk {
            path: disk.to_path_buf(),
            origin: super::file::origin(&base)?,
            root_partition: None,
            bootstrap: None,
            from: super::From::Local,
        };
        return Ok((
            disk,
            rest_job,
            Used {
                key: e.key,
                from_cache: true,
                package_changes: e.package_changes,
                image: None,
                upload: None,
            },
        ));
    }
    let opened = super::file::open(&base, disk, stages)?;
    let facts = crate::pipeline::provision(&layer_job, &opened, None, work, stages, g)?;
    let key = layer_key::entry_key(&lookup, &facts.apt_releases);
    let raw = cache.join(format!("{key}.raw"));
    // Copied and synced inside the stage, renamed after its fault point: an interrupted or
    // failed write leaves only the temporary file, which its guard removes.
    let pending = stages.run("write layer cache", |st| {
        st.say(format!("layer cache: wrote {}", short(&key)));
        let pending = PendingOutput::new(&raw, &job.bake_id);
        image::copy_sparse(disk, &pending.tmp)?;
        pending.sync()?;
        Ok(pending)
    })?;
    pending.rename()?;
    let t = now();
    let meta = EntryMeta {
        key: key.clone(),
        lookup: lookup.clone(),
        created: t,
        last_used: t,
        base: base.display().to_string(),
        layers: job.layers.clone(),
        releases: facts.apt_releases.clone(),
        package_changes: facts.package_changes.clone(),
    };
    write_meta(&cache, &meta)?;
    // Entries of the same layers this one replaces: unused (we hold their lock), never again.
    for old in scan(&cache)
        .into_iter()
        .filter(|e| e.lookup == lookup && e.key != key)
    {
        info!(
            "layer cache: removing {} (superseded by {})",
            old.key,
            short(&key)
        );
        if let Err(err) = remove_entry(&cache, &old.key) {
            tracing::warn!("layer cache: removing {}: {err:#}", old.key);
        }
    }
    Ok((
        opened,
        rest_job,
        Used {
            key,
            from_cache: false,
            package_changes: facts.package_changes,
            image: None,
            upload: None,
        },
    ))
}

/// `job` cut where the cache cuts it: the job that applies only the layers (no packages, no
/// plugins: those are the application's) and the job that runs the rest on the layered disk
/// (no `--disk-size`: the layered disk already has it).
pub(crate) fn split_job(job: &Job) -> (Job, Job) {
    let (layer_steps, rest) = layer_key::split_steps(&job.steps);
    let layers = Job {
        steps: layer_steps,
        packages: vec![],
        plugins: vec![],
        ..job.clone()
    };
    let rest = Job {
        steps: rest,
        disk_size: None,
        ..job.clone()
    };
    (layers, rest)
}

/// The lookup key of `layers`' steps on the base `base_id` (with the job's disk size), and the
/// host lock on it: two bakes of the same layers on one host take turns, so the second uses
/// the entry the first wrote instead of applying the layers again.
pub(crate) fn lookup_and_lock(
    base_id: &str,
    layers: &Job,
    g: &Globals,
) -> Result<(String, HostLock)> {
    let ids = layers
        .steps
        .iter()
        .map(|s| layer_key::step_identity(s, &|p| crate::pipeline::sha256_file(p)))
        .collect::<Result<Vec<_>>>()?;
    let lookup = layer_key::lookup_key(base_id, &ids, layers.disk_size.map(|s| s.bytes()));
    let lock = HostLock::acquire(&g.work_dir.join("locks"), &lock_name(&lookup))?;
    Ok((lookup, lock))
}

/// Whether the newest entry under a lookup key is used, said on the lookup's progress line.
/// Not when `--refresh-layers` asks to rebuild, when there is none (`missing` says what was
/// not found), or when it is stale: a Release file its layers read has changed, or it is past
/// the maximum age ([`layer_key::freshness`]). `newest` is the entry and how to name it.
pub(crate) fn use_entry(
    st: &mut Stage,
    refresh: bool,
    newest: Option<(&EntryMeta, String)>,
    missing: &str,
) -> bool {
    if refresh {
        st.say("layer cache: --refresh-layers, rebuilding");
        return false;
    }
    let Some((e, name)) = newest else {
        st.say(format!("layer cache: {missing}, applying the layers"));
        return false;
    };
    match layer_key::freshness(e, now(), &current(&e.releases)) {
        Verdict::Fresh => {
            st.say(format!("layer cache: hit {name}"));
            true
        }
        v => {
            st.say(format!(
                "layer cache: {name} is stale ({}), applying the layers",
                v.reason()
            ));
            false
        }
    }
}

pub(crate) fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

fn write_meta(cache: &Path, e: &EntryMeta) -> Result<()> {
    image::write_atomic(
        &cache.join(format!("{}.json", e.key)),
        &serde_json::to_vec_pretty(e)?,
    )
}

/// Every complete entry (its `.json` and `.raw` both there).
pub fn scan(cache: &Path) -> Vec<EntryMeta> {
    let Ok(rd) = std::fs::read_dir(cache) else {
        return vec![];
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<EntryMeta>(&b).ok())
        .filter(|m| cache.join(format!("{}.raw", m.key)).is_file())
        .collect()
}

/// Remove entry `key`: its record first (so it is never used half-removed), then its image.
pub fn remove_entry(cache: &Path, key: &str) -> Result<()> {
    for ext in ["json", "raw"] {
        let p = cache.join(format!("{key}.{ext}"));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    Ok(())
}

/// What `bakery gc` removes from the cache: `(path, why)`. Entries per
/// [`layer_key::gc_plan`]; images without a record and temporary files of bakes no longer
/// running (`running(bake_id)`). Entries whose lock a bake holds are kept.
pub fn gc_candidates(work_top: &Path, running: &dyn Fn(&str) -> bool) -> Vec<(PathBuf, String)> {
    let cache = dir(work_top);
    let locks = work_top.join("locks");
    let in_use =
        |lookup: &str| matches!(HostLock::try_acquire(&locks, &lock_name(lookup)), Ok(None));
    let entries: Vec<(EntryMeta, u64)> = scan(&cache)
        .into_iter()
        .map(|e| {
            let size = image::allocated_bytes(&cache.join(format!("{}.raw", e.key)));
            (e, size)
        })
        .collect();
    let mut out: Vec<(PathBuf, String)> = layer_key::gc_plan(&entries, now(), &in_use)
        .into_iter()
        .map(|(key, why)| (cache.join(format!("{key}.raw")), why))
        .collect();
    let complete: Vec<String> = entries.iter().map(|(e, _)| e.key.clone()).collect();
    let files = std::fs::read_dir(&cache).into_iter().flatten().flatten();
    let memos = std::fs::read_dir(cache.join("digests"))
        .into_iter()
        .flatten()
        .flatten();
    for f in files.chain(memos) {
        let name = f.file_name().to_string_lossy().into_owned();
        if let Some(key) = name.strip_suffix(".raw") {
            // A crash between the image's rename and its record: unusable. The lookup key
            // whose lock its maker held is in the record it lacks, so only an image older
            // than ten minutes counts (a bake writes the record right after the rename).
            let settled = f
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(600));
            if !complete.iter().any(|k| k == key) && !name.starts_with('.') && settled {
                out.push((f.path(), "incomplete entry (no record)".into()));
            }
        } else if name.ends_with(".partial") {
            let id = name
                .split(".bakery-")
                .nth(1)
                .and_then(|r| r.strip_suffix(".partial"))
                .unwrap_or_default();
            if !running(id) {
                out.push((f.path(), format!("temporary file of bake {id}")));
            }
        }
    }
    out
}

/// Remove what [`gc_candidates`] named: an entry's image goes with its record.
pub fn gc_remove(path: &Path) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    match (name.strip_suffix(".raw"), path.parent()) {
        (Some(key), Some(cache)) if !name.starts_with('.') => remove_entry(cache, key),
        _ => std::fs::remove_file(path).with_context(|| format!("removing {}", path.display())),
    }
}

/// The base file's identity: SHA-256 over its length and every data extent (offset, length,
/// bytes), holes skipped. Remembered per file (device, inode, size, mtime) under
/// `<cache>/digests`, so an unchanged base is read once.
fn base_digest(base: &Path, cache: &Path, bake_id: &str) -> Result<String> {
    let m = std::fs::metadata(base).with_context(|| format!("reading {}", base.display()))?;
    let stat = format!(
        "{} {} {} {}.{}",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    );
    let abs = std::path::absolute(base)?;
    let memo_dir = cache.join("digests");
    let memo = memo_dir.join(format!(
        "{}.json",
        &hex::encode(Sha256::digest(abs.as_os_str().as_encoded_bytes()))[..16]
    ));
    if let Ok(b) = std::fs::read(&memo) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
            if v["stat"] == stat.as_str() {
                if let Some(d) = v["sha256"].as_str() {
                    return Ok(d.to_string());
                }
            }
        }
    }
    let digest = extents_digest(base)?;
    std::fs::create_dir_all(&memo_dir)?;
    // Temporary file named for the bake (gc removes it if the bake dies), renamed into place.
    let pending = PendingOutput::new(&memo, bake_id);
    std::fs::write(
        &pending.tmp,
        serde_json::json!({"path": abs, "stat": stat, "sha256": digest}).to_string(),
    )
    .with_context(|| format!("writing {}", pending.tmp.display()))?;
    pending.rename()?;
    Ok(digest)
}

fn extents_digest(p: &Path) -> Result<String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let len = f.metadata()?.len() as i64;
    let fd = f.as_raw_fd();
    let mut h = Sha256::new();
    h.update(format!("len {len}\n").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let mut pos: i64 = 0;
    while pos < len {
        crate::sys::signals::check()?;
        // SAFETY: lseek on a descriptor owned by `f`, alive for the loop.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: only a hole is left
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len } else { hole.min(len) };
        h.update(format!("extent {data} {}\n", end - data).as_bytes());
        let mut off = data;
        while off < end {
            let want = ((end - off) as usize).min(buf.len());
            let n = f
                .read_at(&mut buf[..want], off as u64)
                .with_context(|| format!("reading {}", p.display()))?;
            if n == 0 {
                bail!("{} shrank while being read", p.display());
            }
            h.update(&buf[..n]);
            off += n as i64;
        }
        pos = end;
    }
    Ok(hex::encode(h.finalize()))
}

/// What each recorded Release file (with a digest) gives now.
pub(crate) fn current(releases: &[AptRelease]) -> BTreeMap<String, Current> {
    let mut out = BTreeMap::new();
    let mut http = Vec::new();
    for r in releases.iter().filter(|r| r.sha256.is_some()) {
        if let Some(path) = file_uri_path(&r.uri) {
            let c = match std::fs::read(&path) {
                Ok(b) => Current::Digest(hex::encode(Sha256::digest(&b))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Current::Missing,
                Err(_) => Current::Unknown,
            };
            out.insert(r.uri.clone(), c);
        } else if r.uri.starts_with("http://") || r.uri.starts_with("https://") {
            http.push(r.uri.clone());
        } else {
            out.insert(r.uri.clone(), Current::Unknown);
        }
    }
    if !http.is_empty() {
        let got = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| {
                rt.block_on(futures::future::join_all(
                    http.iter()
                        .map(|u| fetch_digest(u, Duration::from_secs(15))),
                ))
            });
        match got {
            Ok(results) => {
                for (u, r) in http.iter().zip(results) {
                    let c = r.unwrap_or_else(|e| {
                        tracing::warn!(
                            "layer cache: cannot check {u} ({e:#}); the entry's age decides"
                        );
                        Current::Unknown
                    });
                    out.insert(u.clone(), c);
                }
            }
            Err(e) => tracing::warn!("layer cache: cannot check the apt sources: {e:#}"),
        }
    }
    out
}

/// The path of a `file:` URI (`file:/srv/repo/x`, `file:///srv/repo/x`).
pub fn file_uri_path(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    rest.starts_with('/').then(|| PathBuf::from(rest))
}

async fn fetch_digest(uri: &str, timeout: Duration) -> Result<Current> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let parsed: hyper::Uri = uri.parse().with_context(|| format!("parsing {uri}"))?;
    let call = async {
        let resp = if uri.starts_with("https://") {
            let tls =
                crate::aws::https::connector().context("loading the system's CA certificates")?;
            Client::builder(TokioExecutor::new())
                .build::<_, Empty<bytes::Bytes>>(tls)
                .get(parsed)
                .await?
        } else {
            Client::builder(TokioExecutor::new())
                .build::<_, Empty<bytes::Bytes>>(
                    hyper_util::client::legacy::connect::HttpConnector::new(),
                )
                .get(parsed)
                .await?
        };
        let status = resp.status().as_u16();
        if status == 404 || status == 410 {
            return Ok(Current::Missing);
        }
        if status != 200 {
            return Err(anyhow!("HTTP {status}"));
        }
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Current::Digest(hex::encode(Sha256::digest(&body))))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| anyhow!("no answer within {} s", timeout.as_secs()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_name_paths() {
        assert_eq!(
            file_uri_path("file:/srv/repo/./Release"),
            Some(PathBuf::from("/srv/repo/./Release"))
        );
        assert_eq!(
            file_uri_path("file:///srv/r/InRelease"),
            Some(PathBuf::from("/srv/r/InRelease"))
        );
        assert_eq!(file_uri_path("http://x/InRelease"), None);
    }

    #[test]
    fn a_base_digest_follows_content_not_holes_and_is_remembered() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("base.raw");
        let file = std::fs::File::create(&f).unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_at(b"root filesystem", 8 << 20).unwrap();
        let a = base_digest(&f, d.path(), "bk-1").unwrap();
        assert_eq!(a, extents_digest(&f).unwrap());
        assert!(d.path().join("digests").read_dir().unwrap().count() == 1);
        assert_eq!(a, base_digest(&f, d.path(), "bk-1").unwrap());
        file.write_at(b"ROOT", 8 << 20).unwrap();
        // A write changes mtime: the memo is not trusted, the digest is computed again.
        std::thread::sleep(Duration::from_millis(20));
        file.set_modified(std::time::SystemTime::now()).unwrap();
        assert_ne!(a, base_digest(&f, d.path(), "bk-1").unwrap());
    }

    #[test]
    fn gc_names_incomplete_entries_and_dead_bakes_temporary_files() {
        let d = tempfile::tempdir().unwrap();
        let cache = dir(d.path());
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("aaaa.raw"), b"x").unwrap();
        std::fs::write(cache.join("dddd.raw"), b"x").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(cache.join("aaaa.raw"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::fs::write(cache.join(".bbbb.raw.bakery-bk-1.partial"), b"x").unwrap();
        std::fs::write(cache.join(".cccc.raw.bakery-bk-2.partial"), b"x").unwrap();
        std::fs::create_dir_all(cache.join("digests")).unwrap();
        std::fs::write(cache.join("digests/.ee.json.bakery-bk-3.partial"), b"x").unwrap();
        let found = gc_candidates(d.path(), &|id| id == "bk-2");
        let mut names: Vec<String> = found
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".bbbb.raw.bakery-bk-1.partial",
                ".ee.json.bakery-bk-3.partial",
                "aaaa.raw"
            ]
        );
        for (p, _) in &found {
            gc_remove(p).unwrap();
        }
        assert!(!cache.join("aaaa.raw").exists());
        assert!(cache.join(".cccc.raw.bakery-bk-2.partial").exists());
    }
}
