//! `bakery gc`: remove what crashed or killed bakes left on this host — loop devices backed by a
//! bake's files, their partition mappings, work directories and half-written outputs — but never
//! anything of a bake that is still running (it holds its `bake-<id>` lock). Then retention
//! ([`crate::retention`]) on what bakes keep on purpose: bake logs by age and total size, and
//! the caches of [`crate::cache::kinds`] by a size budget, least recently used first, never an
//! entry a running bake holds.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use tracing::warn;

use crate::context::{Aws, Globals};
use crate::retention::{Item, Policy, Reason};
use crate::sys::lock::HostLock;
use crate::workdir::{alive_lock_name, PARTIAL_OUTPUT_NOTE};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Leftover {
    /// A process still running inside a dead bake's chroot (a daemon or a scriptlet's child):
    /// it keeps the bake's private mounts, and so its loop device, alive.
    Process {
        pid: i32,
        comm: String,
        bake_id: String,
    },
    LoopDevice {
        device: String,
        backing_file: String,
        bake_id: String,
    },
    PartialOutput {
        path: String,
        bake_id: String,
    },
    /// A bake's scratch directory in $TMPDIR (layers written out).
    Scratch {
        path: String,
        bake_id: String,
    },
    WorkDir {
        path: String,
        bake_id: String,
    },
    /// A layer cache entry (or a dead bake's temporary copy of one) and why it goes
    /// (`pipeline::source::layer_cache::gc_candidates`).
    LayerCache {
        path: String,
        why: String,
    },
}

pub use crate::workdir::SCRATCH_PREFIX;

impl Leftover {
    pub fn describe(&self) -> String {
        match self {
            Leftover::Process { pid, comm, bake_id } => {
                format!("process {comm} (pid {pid}) inside bake {bake_id}'s image")
            }
            Leftover::LoopDevice {
                device,
                backing_file,
                bake_id,
            } => format!("loop device {device} on {backing_file} (bake {bake_id})"),
            Leftover::PartialOutput { path, bake_id } => {
                format!("partial output {path} (bake {bake_id})")
            }
            Leftover::Scratch { path, bake_id } => {
                format!("scratch directory {path} (bake {bake_id})")
            }
            Leftover::WorkDir { path, bake_id } => {
                format!("work directory {path} (bake {bake_id})")
            }
            Leftover::LayerCache { path, why } => format!("layer cache {path} ({why})"),
        }
    }
}

/// The bake id a file belongs to: `<work>/work/<id>/...` or an output temp `.NAME.bakery-<id>.partial`.
pub fn bake_id_of(path: &str, work_top: &Path) -> Option<String> {
    let work = work_top.join("work");
    if let Ok(rest) = Path::new(path).strip_prefix(&work) {
        return rest
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
    }
    let name = Path::new(path).file_name()?.to_string_lossy().into_owned();
    let after = name.split(".bakery-").nth(1)?;
    let id = after.strip_suffix(".partial")?;
    id.starts_with("bk-").then(|| id.to_string())
}

fn running(work_top: &Path, id: &str) -> bool {
    // A free lock means no live process holds it; taking it for a moment is harmless. The bake
    // is dead (ids are never reused): its lock file goes, as a finished bake's does.
    match HostLock::try_acquire(&work_top.join("locks"), &alive_lock_name(id)) {
        Ok(Some(l)) => {
            let _ = std::fs::remove_file(&l.path);
            false
        }
        _ => true,
    }
}

fn loop_devices() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(back) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
                out.push((
                    format!("/dev/{name}"),
                    back.trim().trim_end_matches(" (deleted)").to_string(),
                ));
            }
        }
    }
    out
}

pub fn find(work_top: &Path) -> Vec<Leftover> {
    let mut found = Vec::new();
    for p in crate::sys::procs::rooted_in(&work_top.join("work")) {
        let root = std::fs::read_link(format!("/proc/{}/root", p.pid)).unwrap_or_default();
        if let Some(id) = bake_id_of(&root.display().to_string(), work_top) {
            if !running(work_top, &id) {
                found.push(Leftover::Process {
                    pid: p.pid,
                    comm: p.comm,
                    bake_id: id,
                });
            }
        }
    }
    for (device, backing_file) in loop_devices() {
        if let Some(id) = bake_id_of(&backing_file, work_top) {
            // Only bakes of this work dir: a killed bake leaves its work dir behind, and a bake
            // with another --work-dir keeps its liveness lock elsewhere, so it is not ours to judge.
            let ours = work_top.join("work").join(&id).is_dir();
            if ours && !running(work_top, &id) {
                found.push(Leftover::LoopDevice {
                    device,
                    backing_file,
                    bake_id: id,
                });
            }
        }
    }
    for e in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|r| r.get(..15))
            .filter(|id| id.starts_with("bk-"))
        else {
            continue;
        };
        // Only bakes of this work dir (their work dir is here): another's liveness lock is elsewhere.
        if work_top.join("work").join(id).is_dir() && !running(work_top, id) {
            found.push(Leftover::Scratch {
                path: e.path().display().to_string(),
                bake_id: id.to_string(),
            });
        }
    }
    if let Ok(rd) = std::fs::read_dir(work_top.join("work")) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if running(work_top, &id) {
                continue;
            }
            if let Ok(p) = std::fs::read_to_string(e.path().join(PARTIAL_OUTPUT_NOTE)) {
                if Path::new(&p).exists() {
                    found.push(Leftover::PartialOutput {
                        path: p,
                        bake_id: id.clone(),
                    });
                }
            }
            found.push(Leftover::WorkDir {
                path: e.path().display().to_string(),
                bake_id: id,
            });
        }
    }
    // The layer cache: entries superseded, unused or over budget (never one in use), and
    // temporary copies of dead bakes.
    let running = |id: &str| running(work_top, id);
    found.extend(
        crate::pipeline::source::layer_cache::gc_candidates(work_top, &running)
            .into_iter()
            .map(|(p, why)| Leftover::LayerCache {
                path: p.display().to_string(),
                why,
            }),
    );
    found
}

fn remove(l: &Leftover) -> Result<()> {
    match l {
        Leftover::LayerCache { path, .. } => {
            crate::pipeline::source::layer_cache::gc_remove(Path::new(path))?;
        }
        Leftover::Process { pid, comm, .. } => {
            crate::sys::procs::stop(
                &[crate::sys::procs::Proc {
                    pid: *pid,
                    comm: comm.clone(),
                }],
                std::time::Duration::from_secs(3),
            );
            // Its mount namespace goes with it; give the kernel a moment to release the mounts.
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        Leftover::LoopDevice {
            device,
            backing_file,
            ..
        } => {
            // The dead bake's session child may still be dying (it follows its parent by
            // PDEATHSIG) and hold the partitions mounted: until then partx -d fails and the
            // kernel only defers the detach. Retry until the device is really free.
            let name = Path::new(device)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Ours while it is still backed by the dead bake's file: once freed, another bake may
            // take the same device, and it is not ours to touch any more.
            let backing = || {
                std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
                    .ok()
                    .map(|b| b.trim().trim_end_matches(" (deleted)").to_string())
            };
            let has_parts = || {
                std::fs::read_dir(format!("/sys/block/{name}"))
                    .map(|rd| {
                        rd.flatten().any(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .starts_with(&format!("{name}p"))
                        })
                    })
                    .unwrap_or(false)
            };
            for _ in 0..100 {
                match backing() {
                    // Released (stale partition nodes on a free device are dropped by the next
                    // bake that attaches it), or already someone else's: not ours to touch.
                    None => return Ok(()),
                    Some(b) if &b != backing_file => return Ok(()),
                    Some(_) => {}
                }
                let _ = std::process::Command::new("partx")
                    .args(["-d", device])
                    .output();
                match loopdev::LoopDevice::open(device)?.detach() {
                    // ENXIO: autoclear released it once its mounts were gone.
                    Err(e)
                        if e.raw_os_error() != Some(libc::ENXIO)
                            && e.raw_os_error() != Some(libc::EBUSY) =>
                    {
                        return Err(e.into())
                    }
                    _ => {}
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            anyhow::bail!(
                "{device} is still busy after 10 s (partitions mapped: {})",
                has_parts()
            );
        }
        Leftover::PartialOutput { path, .. } => std::fs::remove_file(path)?,
        Leftover::Scratch { path, .. } => std::fs::remove_dir_all(path)?,
        Leftover::WorkDir { path, .. } => std::fs::remove_dir_all(path)?,
    }
    Ok(())
}

/// The retention limits `bakery gc` applies to logs and to caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub logs: Policy,
    pub caches: Policy,
}

impl Retention {
    /// From `--keep-logs-for`, `--log-budget` and `--cache-budget` (input errors name the flag).
    pub fn from_args(args: &crate::cli::GcArgs) -> Result<Retention> {
        let age = parse_duration(&args.keep_logs_for)
            .map_err(|e| crate::input!("--keep-logs-for {e}"))?;
        let size = |flag: &str, v: &str| {
            crate::recipe::size::Size::parse(v)
                .map(|s| s.bytes())
                .map_err(|e| crate::input!("{flag} {e}"))
        };
        Ok(Retention {
            logs: Policy {
                max_age: Some(age),
                max_count: None,
                max_bytes: Some(size("--log-budget", &args.log_budget)?),
            },
            caches: Policy {
                max_age: None,
                max_count: None,
                max_bytes: Some(size("--cache-budget", &args.cache_budget)?),
            },
        })
    }
}

/// A duration as people write it: `30d`, `12h`, `90s`, `2weeks`, `1h 30m`, `0` (humantime).
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let t = s.trim();
    if t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty() {
        // Bare seconds, as --grace takes them.
        return t
            .parse()
            .map(std::time::Duration::from_secs)
            .map_err(|_| format!("`{s}` is not a duration"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write it like 30d, 12h or 90m"))
}

/// One log file or cache entry retention removed (or would remove, with `--dry-run`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Retired {
    /// `log`, or the cache kind (`snapshot`, `base`, ...).
    pub kind: String,
    /// The log's bake id or the cache entry's key.
    pub key: String,
    pub paths: Vec<String>,
    /// Bytes on disk.
    pub bytes: u64,
    /// RFC 3339, UTC.
    pub last_used: String,
    pub reason: Reason,
}

impl Retired {
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({}, last used {}: {})",
            self.kind,
            self.paths.first().map(String::as_str).unwrap_or(&self.key),
            crate::recipe::size::Size(self.bytes),
            self.last_used,
            self.reason.describe()
        )
    }
}

#[derive(Debug, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub found: Vec<Leftover>,
    /// Logs and cache entries beyond the retention limits.
    pub retention: Vec<Retired>,
    /// AWS leftovers (with `--region`/`--aws`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<Vec<crate::aws::gc::AwsLeftover>>,
    pub removed: usize,
    pub failed: Vec<String>,
}

impl crate::output::Report for GcReport {
    fn table(&self) -> String {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut rows: Vec<Vec<String>> = self
            .found
            .iter()
            .map(|l| vec![verb.to_string(), l.describe()])
            .collect();
        rows.extend(
            self.retention
                .iter()
                .map(|r| vec![verb.to_string(), r.describe()]),
        );
        rows.extend(
            self.aws
                .iter()
                .flatten()
                .map(|l| vec![verb.to_string(), l.describe()]),
        );
        rows.extend(
            self.failed
                .iter()
                .map(|f| vec!["FAILED".to_string(), f.clone()]),
        );
        crate::output::table(&["ACTION", "WHAT"], &rows, "nothing to remove")
    }
}

pub fn run(args: &crate::cli::GcArgs, g: &Globals) -> Result<GcReport> {
    let retention = Retention::from_args(args)?;
    let mut report = run_local(args.dry_run, g)?;
    let (retired, removed, failed) = apply_retention(&g.work_dir, &retention, args.dry_run);
    report.retention = retired;
    report.removed += removed;
    report.failed.extend(failed);
    if args.aws || !args.region.is_empty() {
        let grace =
            crate::aws::gc::parse_grace(&args.grace).map_err(|e| crate::input!("--grace {e}"))?;
        let Aws { rt, ctx } = Aws::load(false)?;
        let regions = if args.region.is_empty() {
            vec![ctx.region(None)?]
        } else {
            args.region.clone()
        };
        crate::context::check_regions(&regions, "--region")?;
        let running = |id: &str| crate::aws::gc::running_here(&g.work_dir, id);
        let mut found = Vec::new();
        for r in &regions {
            found.extend(rt.block_on(crate::aws::gc::find(&ctx, r, grace, &running))?);
        }
        for l in &found {
            if !args.dry_run {
                tracing::info!("removing {}", l.describe());
            }
        }
        if !args.dry_run {
            let failures = rt.block_on(crate::aws::gc::remove(&ctx, &found));
            report.removed += found.len() - failures.len().min(found.len());
            report.failed.extend(failures);
        }
        report.aws = Some(found);
    }
    Ok(report)
}

fn run_local(dry_run: bool, g: &Globals) -> Result<GcReport> {
    let found = find(&g.work_dir);
    let mut removed = 0;
    let mut failed = Vec::new();
    if !dry_run {
        // Loop devices first: the files behind them go next.
        for l in &found {
            match remove(l) {
                Ok(()) => removed += 1,
                Err(e) => {
                    warn!("gc: {}: {e:#}", l.describe());
                    failed.push(format!("{}: {e:#}", l.describe()));
                }
            }
        }
    }
    Ok(GcReport {
        dry_run,
        found,
        retention: Vec::new(),
        aws: None,
        removed,
        failed,
    })
}

/// What retention looks at: one candidate with its paths and kind.
struct Candidate {
    kind: String,
    key: String,
    paths: Vec<PathBuf>,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Measure logs and cache entries, plan with `r`, and remove what the plan says (unless
/// `dry_run`). Returns what went (or would go), how many went, and the failures.
pub fn apply_retention(
    work_top: &Path,
    r: &Retention,
    dry_run: bool,
) -> (Vec<Retired>, usize, Vec<String>) {
    let now = std::time::SystemTime::now();
    let mut retired = Vec::new();
    let (mut removed, mut failed) = (0, Vec::new());

    // Logs: `<work-dir>/logs/<bake-id>.log`, last used when last written.
    let mut logs = Vec::new();
    for e in std::fs::read_dir(work_top.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let key = name.strip_suffix(".log").unwrap_or(&name).to_string();
        logs.push(Candidate {
            kind: "log".into(),
            key,
            paths: vec![e.path()],
        });
    }
    // A running bake's log (its work dir is there and its liveness lock held) stays.
    let log_in_use =
        |c: &Candidate| work_top.join("work").join(&c.key).is_dir() && running(work_top, &c.key);
    retired.extend(plan_and_remove(
        logs,
        &r.logs,
        now,
        false,
        log_in_use,
        |c| {
            std::fs::remove_file(&c.paths[0])?;
            Ok(true)
        },
        dry_run,
        &mut removed,
        &mut failed,
    ));

    // Caches: one budget over all kinds, last used when last read or written.
    let mut entries = Vec::new();
    for k in crate::cache::kinds(work_top) {
        for (key, paths) in crate::cache::entries(&k.dir) {
            entries.push(Candidate {
                kind: k.name.to_string(),
                key,
                paths,
            });
        }
    }
    retired.extend(plan_and_remove(
        entries,
        &r.caches,
        now,
        true,
        |c| crate::cache::in_use(work_top, &c.kind, &c.key),
        |c| crate::cache::remove(work_top, &c.kind, &c.key, &c.paths),
        dry_run,
        &mut removed,
        &mut failed,
    ));
    (retired, removed, failed)
}

#[allow(clippy::too_many_arguments)]
fn plan_and_remove(
    candidates: Vec<Candidate>,
    policy: &Policy,
    now: std::time::SystemTime,
    with_access: bool,
    in_use: impl Fn(&Candidate) -> bool,
    remove: impl Fn(&Candidate) -> Result<bool>,
    dry_run: bool,
    removed: &mut usize,
    failed: &mut Vec<String>,
) -> Vec<Retired> {
    let measured: Vec<(u64, std::time::SystemTime)> = candidates
        .iter()
        .map(|c| crate::cache::measure(&c.paths, with_access))
        .collect();
    let items: Vec<Item> = candidates
        .iter()
        .zip(&measured)
        .map(|(c, &(bytes, last_used))| Item {
            id: format!("{}/{}", c.kind, c.key),
            bytes,
            last_used,
            in_use: in_use(c),
        })
        .collect();
    let mut out = Vec::new();
    for (i, reason) in crate::retention::plan(&items, policy, now) {
        let c = &candidates[i];
        let r = Retired {
            kind: c.kind.clone(),
            key: c.key.clone(),
            paths: c.paths.iter().map(|p| p.display().to_string()).collect(),
            bytes: items[i].bytes,
            last_used: rfc3339(items[i].last_used),
            reason,
        };
        if !dry_run {
            match remove(c) {
                Ok(true) => {
                    tracing::info!("removed {}", r.describe());
                    *removed += 1;
                }
                // A bake took it since it was measured: it stays.
                Ok(false) => continue,
                Err(e) => {
                    warn!("gc: {}: {e:#}", r.describe());
                    failed.push(format!("{}: {e:#}", r.describe()));
                    continue;
                }
            }
        }
        out.push(r);
    }
    out
}

pub fn leftover_paths(r: &GcReport) -> Vec<PathBuf> {
    r.found
        .iter()
        .filter_map(|l| match l {
            Leftover::PartialOutput { path, .. }
            | Leftover::Scratch { path, .. }
            | Leftover::WorkDir { path, .. } => Some(PathBuf::from(path)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bake_ids_from_paths() {
        let top = Path::new("/var/lib/bakery");
        assert_eq!(
            bake_id_of("/var/lib/bakery/work/bk-0123456789ab/disk.raw", top).as_deref(),
            Some("bk-0123456789ab")
        );
        assert_eq!(
            bake_id_of("/srv/out/.app.raw.bakery-bk-0123456789ab.partial", top).as_deref(),
            Some("bk-0123456789ab")
        );
        assert_eq!(bake_id_of("/srv/out/app.raw", top), None);
        assert_eq!(
            bake_id_of("/srv/out/.app.raw.bakery-1234.partial", top),
            None,
            "manifest temp files are not bakes"
        );
    }

    #[test]
    fn loop_devices_of_another_work_dir_are_not_ours() {
        let top = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let partial = out.path().join(".app.raw.bakery-bk-dddddddddddd.partial");
        std::fs::File::create(&partial)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let lo =
            crate::sys::loopdev::LoopGuard::attach(&partial, &top.path().join("locks")).unwrap();
        let listed = |top: &Path| {
            find(top).iter().any(|l| matches!(l, Leftover::LoopDevice { device, .. } if Path::new(device) == lo.path))
        };
        assert!(
            !listed(top.path()),
            "a loop device of a bake with another work dir was collected"
        );
        std::fs::create_dir_all(top.path().join("work/bk-dddddddddddd")).unwrap();
        assert!(
            listed(top.path()),
            "a dead bake's loop device of this work dir was not found"
        );
        lo.close().unwrap();
    }

    #[test]
    fn durations_and_sizes_of_the_retention_flags() {
        let d = |s: &str| parse_duration(s).unwrap().as_secs();
        assert_eq!(d("30d"), 30 * 86400);
        assert_eq!(d("12h"), 12 * 3600);
        assert_eq!(d("2weeks"), 14 * 86400);
        assert_eq!(d("0"), 0);
        assert_eq!(d("90"), 90);
        assert!(parse_duration("soon").unwrap_err().contains("`soon`"));
        let mut args = crate::cli::GcArgs {
            keep_logs_for: "30d".into(),
            log_budget: "1GiB".into(),
            cache_budget: "20GiB".into(),
            ..Default::default()
        };
        let r = Retention::from_args(&args).unwrap();
        assert_eq!(r.caches.max_bytes, Some(20 << 30));
        assert_eq!(r.logs.max_bytes, Some(1 << 30));
        args.cache_budget = "lots".into();
        let e = Retention::from_args(&args).unwrap_err();
        assert!(e.to_string().starts_with("--cache-budget "), "{e}");
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
    }

    #[test]
    fn a_running_bake_is_never_collected() {
        let top = tempfile::tempdir().unwrap();
        let alive = crate::workdir::WorkDir::create(top.path(), "bk-aaaaaaaaaaaa").unwrap();
        std::fs::create_dir_all(top.path().join("work/bk-bbbbbbbbbbbb")).unwrap();
        let found = find(top.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            matches!(&found[0], Leftover::WorkDir { bake_id, .. } if bake_id == "bk-bbbbbbbbbbbb")
        );
        drop(alive);
    }
}
