//! The layer cache's decisions, as pure functions (issue 18): which steps are the layers',
//! the keys an entry is found and named by, whether an entry is still fresh, and which entries
//! `bakery gc` removes. The effects (files, locks, fetching Release files) are in
//! [`super::layer_cache`].
//!
//! Two keys:
//! - the **lookup key**, known before anything is made: SHA-256 of the base's identity (the
//!   digest of the base file's data extents), every layer step by content (apt package names,
//!   script and file contents by SHA-256, commands, units, destinations and modes) and
//!   `--disk-size`;
//! - the **entry key** (`layer_cache_key` in the manifest), known once the layers ran: SHA-256
//!   of the lookup key and the SHA-256 of every apt source's `InRelease`/`Release` file that the
//!   layers' `apt-get update` read. A Release file lists the digest of every package index of
//!   its suite, so it pins the versions apt resolved the layers' packages to: a newer version in
//!   the image's sources changes the Release file, hence the key.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::provision::pkgdb::PackageChange;
use crate::provision::plan::{AptRelease, Step};

/// Format version of the keys and entries: bump when what goes into a key changes.
pub const KEY_VERSION: &str = "bakery layer cache v1";

/// An entry older than this is rebuilt even when its sources look unchanged (the fallback for
/// sources whose Release file cannot be read: no Release file, an unreachable mirror, dnf
/// repositories): 7 days.
pub const MAX_AGE_SECS: i64 = 7 * 24 * 3600;

/// `bakery gc` removes entries not used for this long: 14 days.
pub const GC_UNUSED_SECS: i64 = 14 * 24 * 3600;

/// `bakery gc` removes the least recently used entries beyond this many bytes on disk: 20 GiB.
pub const GC_BUDGET_BYTES: u64 = 20 << 30;

/// What a cache entry records beside its image (`<key>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    pub key: String,
    pub lookup: String,
    /// Unix seconds.
    pub created: i64,
    pub last_used: i64,
    /// The base file the layers were applied to (for people; its digest is in the key).
    pub base: String,
    pub layers: Vec<String>,
    /// The Release files the layers' apt steps resolved packages from.
    pub releases: Vec<AptRelease>,
    /// Changes the layers made to the base's packages (the manifest's `package_changes`).
    #[serde(default)]
    pub package_changes: Vec<PackageChange>,
}

/// Whether `s` is a layer's step (layers come first in a bake's steps).
pub fn is_layer_step(s: &Step) -> bool {
    matches!(
        s,
        Step::Apt { .. }
            | Step::Script { .. }
            | Step::Run { .. }
            | Step::Enable { .. }
            | Step::CopyFile { .. }
    )
}

/// The leading layer steps and the rest (packages, plugins' steps).
pub fn split_steps(steps: &[Step]) -> (Vec<Step>, Vec<Step>) {
    let n = steps.iter().take_while(|s| is_layer_step(s)).count();
    (steps[..n].to_vec(), steps[n..].to_vec())
}

/// A layer step by content; `file_digest` reads a host file (script, file source) as SHA-256.
pub fn step_identity(
    s: &Step,
    file_digest: &dyn Fn(&std::path::Path) -> Result<String>,
) -> Result<String> {
    Ok(match s {
        Step::Apt { layer, packages } => format!("{layer}: apt {}", packages.join(" ")),
        Step::Script { layer, path } => format!("{layer}: script sha256:{}", file_digest(path)?),
        Step::Run { layer, command } => format!("{layer}: run {command}"),
        Step::Enable { layer, units } => format!("{layer}: enable {}", units.join(" ")),
        Step::CopyFile {
            layer,
            src,
            dest,
            mode,
        } => format!(
            "{layer}: file {} {mode:o} sha256:{}",
            dest.display(),
            file_digest(src)?
        ),
        other => format!("{other:?}"),
    })
}

fn sha256_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The lookup key: `base` (the base's identity), the layer steps by content
/// ([`step_identity`]), and the disk size the layers ran on (bytes; `None`: the base's).
pub fn lookup_key(base: &str, steps: &[String], disk_size: Option<u64>) -> String {
    let size = format!("disk-size {disk_size:?}");
    let head = [KEY_VERSION, base, size.as_str()];
    sha256_lines(head.into_iter().chain(steps.iter().map(String::as_str)))
}

/// The entry key: the lookup key and the Release files the layers' packages came from (order
/// does not matter; a source without a Release file counts by its URI alone).
pub fn entry_key(lookup: &str, releases: &[AptRelease]) -> String {
    let mut lines: Vec<String> = releases
        .iter()
        .map(|r| format!("{} {}", r.uri, r.sha256.as_deref().unwrap_or("-")))
        .collect();
    lines.sort();
    lines.dedup();
    sha256_lines(
        [KEY_VERSION, lookup]
            .into_iter()
            .chain(lines.iter().map(String::as_str)),
    )
}

/// Whether a cache entry may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Fresh,
    /// Older than [`MAX_AGE_SECS`].
    Expired {
        days: i64,
    },
    /// A source's Release file is not what the layers resolved against (a newer package, or
    /// any other change of the suite), or is gone.
    SourceChanged {
        uri: String,
    },
}

impl Verdict {
    /// Why the entry is rebuilt, for the log.
    pub fn reason(&self) -> String {
        match self {
            Verdict::Fresh => "fresh".into(),
            Verdict::Expired { days } => format!(
                "older than the maximum age ({days} days > {} days)",
                MAX_AGE_SECS / 86400
            ),
            Verdict::SourceChanged { uri } => format!("apt source changed: {uri}"),
        }
    }
}

/// What fetching a recorded Release file again gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// Its SHA-256 now.
    Digest(String),
    /// The file is gone (HTTP 404, no such file).
    Missing,
    /// It could not be read (unreachable, unsupported URI scheme): only the age decides.
    Unknown,
}

/// Is `e` still fresh at `now` (unix seconds)? `current`: what each recorded Release URI gives
/// now. A source recorded without a digest, or unreadable now, is judged by the age alone.
pub fn freshness(e: &EntryMeta, now: i64, current: &BTreeMap<String, Current>) -> Verdict {
    for r in &e.releases {
        let Some(was) = &r.sha256 else { continue };
        match current.get(&r.uri) {
            Some(Current::Digest(d)) if d == was => {}
            Some(Current::Digest(_)) | Some(Current::Missing) => {
                return Verdict::SourceChanged { uri: r.uri.clone() }
            }
            Some(Current::Unknown) | None => {}
        }
    }
    let age = now - e.created;
    if age > MAX_AGE_SECS {
        return Verdict::Expired { days: age / 86400 };
    }
    Verdict::Fresh
}

/// The newest entry made for `lookup`.
pub fn newest<'a>(entries: &'a [EntryMeta], lookup: &str) -> Option<&'a EntryMeta> {
    entries
        .iter()
        .filter(|e| e.lookup == lookup)
        .max_by_key(|e| (e.created, e.key.clone()))
}

/// Which entries `bakery gc` removes, with why: those superseded by a newer entry of the same
/// lookup key, those unused for [`GC_UNUSED_SECS`], then the least recently used beyond
/// [`GC_BUDGET_BYTES`]. `entries`: each with its size on disk; `in_use(lookup)`: a bake holds
/// that lookup key's lock now (never removed).
pub fn gc_plan(
    entries: &[(EntryMeta, u64)],
    now: i64,
    in_use: &dyn Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let metas: Vec<EntryMeta> = entries.iter().map(|(e, _)| e.clone()).collect();
    let mut kept: Vec<&(EntryMeta, u64)> = Vec::new();
    for item @ (e, _) in entries {
        if in_use(&e.lookup) {
            kept.push(item);
            continue;
        }
        let newest = newest(&metas, &e.lookup).map(|n| n.key.as_str());
        if newest != Some(e.key.as_str()) {
            let by = newest.unwrap_or("-");
            out.push((
                e.key.clone(),
                format!("superseded by {}", &by[..by.len().min(12)]),
            ));
        } else if now - e.last_used > GC_UNUSED_SECS {
            out.push((
                e.key.clone(),
                format!("unused for {} days", (now - e.last_used) / 86400),
            ));
        } else {
            kept.push(item);
        }
    }
    let mut total: u64 = kept.iter().map(|(_, s)| s).sum();
    let mut lru: Vec<&(EntryMeta, u64)> = kept
        .into_iter()
        .filter(|(e, _)| !in_use(&e.lookup))
        .collect();
    lru.sort_by_key(|(e, _)| e.last_used);
    for (e, size) in lru {
        if total <= GC_BUDGET_BYTES {
            break;
        }
        total -= size;
        out.push((
            e.key.clone(),
            format!(
                "over the {} GiB budget, least recently used",
                GC_BUDGET_BYTES >> 30
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn digest(p: &Path) -> Result<String> {
        Ok(format!("of-{}", p.display()))
    }

    fn steps() -> Vec<Step> {
        vec![
            Step::Apt {
                layer: "t".into(),
                packages: vec!["tool".into()],
            },
            Step::CopyFile {
                layer: "t".into(),
                src: PathBuf::from("/l/motd"),
                dest: PathBuf::from("/etc/motd"),
                mode: 0o644,
            },
            Step::InstallDebs {
                files: vec![PathBuf::from("/p/app.deb")],
            },
        ]
    }

    fn ids(steps: &[Step], d: &dyn Fn(&Path) -> Result<String>) -> Vec<String> {
        steps.iter().map(|s| step_identity(s, d).unwrap()).collect()
    }

    #[test]
    fn the_layers_are_the_leading_steps() {
        let (layers, rest) = split_steps(&steps());
        assert_eq!(layers.len(), 2);
        assert!(matches!(rest[..], [Step::InstallDebs { .. }]));
    }

    #[test]
    fn the_lookup_key_follows_base_layer_content_and_disk_size() {
        let (layers, _) = split_steps(&steps());
        let k = lookup_key("base-a", &ids(&layers, &digest), None);
        assert_eq!(k, lookup_key("base-a", &ids(&layers, &digest), None));
        assert_ne!(k, lookup_key("base-b", &ids(&layers, &digest), None));
        assert_ne!(
            k,
            lookup_key("base-a", &ids(&layers, &digest), Some(8 << 30))
        );
        // A file's content changed: its digest, hence the key.
        let other = |p: &Path| Ok(format!("changed-{}", p.display()));
        assert_ne!(k, lookup_key("base-a", &ids(&layers, &other), None));
        // Another package, another mode.
        let mut more = layers.clone();
        if let Step::Apt { packages, .. } = &mut more[0] {
            packages.push("extra".into());
        }
        assert_ne!(k, lookup_key("base-a", &ids(&more, &digest), None));
        let mut mode = layers.clone();
        if let Step::CopyFile { mode, .. } = &mut mode[1] {
            *mode = 0o600;
        }
        assert_ne!(k, lookup_key("base-a", &ids(&mode, &digest), None));
    }

    fn rel(uri: &str, sha: Option<&str>) -> AptRelease {
        AptRelease {
            uri: uri.into(),
            sha256: sha.map(str::to_string),
        }
    }

    #[test]
    fn the_entry_key_follows_the_release_files_in_any_order() {
        let a = [
            rel("http://m/dists/x/InRelease", Some("1")),
            rel("file:/r/./Release", Some("2")),
        ];
        let b = [a[1].clone(), a[0].clone()];
        assert_eq!(entry_key("L", &a), entry_key("L", &b));
        let newer = [
            rel("http://m/dists/x/InRelease", Some("1")),
            rel("file:/r/./Release", Some("3")),
        ];
        assert_ne!(entry_key("L", &a), entry_key("L", &newer));
        assert_ne!(entry_key("L", &a), entry_key("M", &a));
        assert_ne!(entry_key("L", &[]), entry_key("L", &a));
    }

    fn meta(key: &str, lookup: &str, created: i64, last_used: i64) -> EntryMeta {
        EntryMeta {
            key: key.into(),
            lookup: lookup.into(),
            created,
            last_used,
            base: "b".into(),
            layers: vec!["t".into()],
            releases: vec![rel("file:/r/./Release", Some("aa")), rel("cdrom:x", None)],
            package_changes: vec![],
        }
    }

    #[test]
    fn an_entry_is_fresh_while_its_release_files_are_unchanged_and_it_is_young() {
        let e = meta("k", "l", 1000, 1000);
        let same = BTreeMap::from([(
            "file:/r/./Release".to_string(),
            Current::Digest("aa".into()),
        )]);
        assert_eq!(freshness(&e, 2000, &same), Verdict::Fresh);
        let newer = BTreeMap::from([(
            "file:/r/./Release".to_string(),
            Current::Digest("bb".into()),
        )]);
        assert_eq!(
            freshness(&e, 2000, &newer),
            Verdict::SourceChanged {
                uri: "file:/r/./Release".into()
            }
        );
        let gone = BTreeMap::from([("file:/r/./Release".to_string(), Current::Missing)]);
        assert!(matches!(
            freshness(&e, 2000, &gone),
            Verdict::SourceChanged { .. }
        ));
        // Unreadable now: the age decides.
        let unknown = BTreeMap::from([("file:/r/./Release".to_string(), Current::Unknown)]);
        assert_eq!(freshness(&e, 2000, &unknown), Verdict::Fresh);
        assert_eq!(
            freshness(&e, 1000 + MAX_AGE_SECS + 86400, &same),
            Verdict::Expired { days: 8 }
        );
    }

    #[test]
    fn gc_removes_superseded_unused_and_over_budget_entries_but_never_one_in_use() {
        let day = 86400;
        let now = 100 * day;
        let entries = vec![
            (meta("old", "l1", now - 3 * day, now - 3 * day), 1 << 30),
            (meta("new", "l1", now - day, now - day), 1 << 30),
            (meta("idle", "l2", now - 30 * day, now - 20 * day), 1 << 30),
            (meta("busy", "l3", now - 30 * day, now - 20 * day), 1 << 30),
        ];
        let plan = gc_plan(&entries, now, &|l| l == "l3");
        let keys: Vec<&str> = plan.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["old", "idle"]);
        assert!(plan[0].1.starts_with("superseded by new"), "{}", plan[0].1);
        assert_eq!(plan[1].1, "unused for 20 days");
        // Over budget: the least recently used go first, until the rest fits.
        let big = vec![
            (meta("a", "la", now, now - 2 * day), 15 << 30),
            (meta("b", "lb", now, now - day), 15 << 30),
        ];
        let plan = gc_plan(&big, now, &|_| false);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].0, "a");
        assert!(gc_plan(&big, now, &|_| true).is_empty());
    }
}
