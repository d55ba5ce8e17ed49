//! Sink: a raw or qcow2 image file. The disk is the output's own temporary file for raw (no
//! second copy), a scratch raw file converted at the end for qcow2. The output is fsynced and
//! renamed into place last: a crash never leaves a file under the final name that is not
//! complete.

use std::path::PathBuf;

use anyhow::Result;

use crate::context::Globals;
use crate::disk::image::{self, Format, PendingOutput};
use crate::input;
use crate::manifest::{Manifest, OutputSummary};
use crate::pipeline::source::{self, Source};
use crate::pipeline::{announce, Job, Stages};
use crate::workdir::WorkDir;

#[derive(Debug, Clone)]
pub struct FileTarget {
    pub path: PathBuf,
    pub format: Format,
    /// On failure keep the half-baked disk (raw) beside the output ([`kept_path`]) and say
    /// where, as Aminator's `--preserve-on-error` did.
    pub keep_on_error: bool,
}

/// Where `--keep-on-error` keeps a failed bake's disk: beside the output,
/// `<output>.bakery-<bake_id>.failed.raw` (not a `.partial` file, so `bakery gc` leaves it).
pub fn kept_path(output: &std::path::Path, bake_id: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{name}.bakery-{bake_id}.failed.raw"))
}

/// The whole bake into a file: source, device, session, seal, then this sink.
pub fn run(
    job: &Job,
    source: Source,
    target: &FileTarget,
    stages: &mut Stages,
    g: &Globals,
) -> Result<Manifest> {
    let work = WorkDir::create(&g.work_dir, &job.bake_id)?;
    let pending = PendingOutput::new(&target.path, &job.bake_id);
    work.note_partial_output(&pending.tmp)?;
    let disk_path = match target.format {
        Format::Raw => pending.tmp.clone(),
        Format::Qcow2 => work.join("disk.raw"),
    };
    let mut layered = None;
    let mut rest = None;
    let disk = match source {
        Source::LayerCache(lc) => {
            let from = match &lc.base {
                Source::File(p) => p.display().to_string(),
                _ => "the built-in base".to_string(),
            };
            announce(job, &work, &from, stages);
            let (disk, job_left, used) =
                source::layer_cache::open(job, &lc, &disk_path, &work, stages, g)?;
            rest = Some(job_left);
            layered = Some(used);
            disk
        }
        Source::File(p) => {
            announce(job, &work, &p.display().to_string(), stages);
            source::file::open(&p, &disk_path, stages)?
        }
        Source::Builtin => {
            announce(job, &work, "the built-in base", stages);
            source::builtin::open(g, &disk_path, stages)?
        }
        Source::Debootstrap(d) => {
            announce(job, &work, &format!("debootstrap {}", d.spec.suite), stages);
            source::debootstrap::open(&d, &disk_path, stages)?
        }
        Source::Ami { .. } => {
            return Err(input!(
                "a base AMI needs `--output ami`; for a local file output pass --base FILE (raw or qcow2)"
            ))
        }
    };
    // With the layer cache, the layers are in the disk already: the rest of the steps run.
    let job = rest.as_ref().unwrap_or(job);
    let facts = match crate::pipeline::provision(job, &disk, None, &work, stages, g) {
        Ok(f) => f,
        Err(e) if target.keep_on_error && disk_path.exists() => {
            // The session, mounts and loop device are released: the disk is whole to look at.
            let kept = kept_path(&target.path, &job.bake_id);
            // Across filesystems (a qcow2 bake's scratch disk in the work dir): a sparse copy.
            let moved = std::fs::rename(&disk_path, &kept).or_else(|_| {
                crate::sys::cmd::run(
                    std::process::Command::new("cp")
                        .arg("--sparse=always")
                        .arg(&disk_path)
                        .arg(&kept),
                    "keeping the half-baked disk",
                )
                .map(|_| ())
                .map_err(|e| std::io::Error::other(format!("{e:#}")))
            });
            return match moved {
                Ok(()) => {
                    stages.progress().println(&format!(
                        "--keep-on-error: the half-baked image is kept at {} (raw; loop-mount it to look inside, then rm it)",
                        kept.display()
                    ));
                    Err(e)
                }
                Err(re) => Err(e.context(format!(
                    "--keep-on-error: could not keep the disk at {}: {re}",
                    kept.display()
                ))),
            };
        }
        Err(e) => return Err(e),
    };
    let mut facts = facts;
    if let Some(u) = &layered {
        // The layers' changes to the base's packages come first (the later session saw the
        // layered disk as its base).
        let mut changes = u.package_changes.clone();
        changes.append(&mut facts.package_changes);
        facts.package_changes = changes;
    }
    let base = disk.origin.summary(&facts);
    // A first package named without a pin: the name says the version installed.
    let renamed;
    let job = match job.name_after_install(&facts) {
        Some(name) => {
            renamed = Job {
                name,
                ..job.clone()
            };
            &renamed
        }
        None => job,
    };
    let tags = job.tags(&base, &facts, &crate::context::env_map())?;
    if target.format == Format::Qcow2 {
        stages.run("write qcow2", |_| {
            image::convert(&disk_path, Format::Raw, &pending.tmp, Format::Qcow2)
        })?;
    }
    let size_bytes = image::virtual_size(&pending.tmp, target.format)?;
    let file_name = target
        .path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    stages.run(&format!("sync {file_name}"), |st| {
        st.timing("sync output");
        pending.sync()
    })?;
    pending.rename()?;
    let mut m = job.manifest(base, &facts, tags, stages.timings(), &work);
    if let Some(u) = layered {
        m.layers_from_cache = u.from_cache;
        m.layer_cache_key = Some(u.key);
    }
    m.output = Some(OutputSummary {
        path: std::path::absolute(&target.path)?,
        format: target.format,
        size_bytes,
        file_bytes: image::allocated_bytes(&target.path),
    });
    Ok(m)
}
