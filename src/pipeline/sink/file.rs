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
    let disk = match source {
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
    let facts = crate::pipeline::provision(job, &disk, None, &work, stages, g)?;
    let base = disk.origin.summary(&facts);
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
    m.output = Some(OutputSummary {
        path: std::path::absolute(&target.path)?,
        format: target.format,
        size_bytes,
        file_bytes: image::allocated_bytes(&target.path),
    });
    Ok(m)
}
