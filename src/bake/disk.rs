//! One disk image on a loop device for the length of a chroot session: attach, map partitions,
//! provision, and release in reverse, collecting every failure.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Result};

use crate::disk::layout::Layout;
use crate::progress::Progress;
use crate::provision::driver::{run_session, SessionOutcome};
use crate::provision::plan::{Bootstrap, PackageCheck, PartitionDev, SessionPlan, Step};
use crate::sys::loopdev::LoopGuard;
use crate::sys::partx::{part_path, PartitionsGuard};
use crate::workdir::WorkDir;

pub struct DiskJob<'a> {
    /// An image file (attached to a loop device here) or a block device (an attached volume).
    pub disk: &'a Path,
    pub layout: &'a Layout,
    pub root_partition: u32,
    pub bootstrap: Option<Bootstrap>,
    pub steps: Vec<Step>,
    pub packages: Vec<PackageCheck>,
    pub echo_output: bool,
    pub plugins: Vec<(crate::plugin::PluginSpec, std::path::PathBuf)>,
    /// A bake's package policy (None for base builds and refreshes).
    pub policy: Option<crate::provision::pkgdb::Policy>,
}

pub fn provision(job: DiskJob<'_>, work: &WorkDir, progress: &Progress) -> Result<SessionOutcome> {
    let t = Instant::now();
    let is_device = std::fs::metadata(job.disk)
        .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        .unwrap_or(false);
    let lo = if is_device {
        None
    } else {
        progress.start_step("attach loop device");
        Some(LoopGuard::attach(
            job.disk,
            &crate::sys::lock::host_wide_dir(),
        )?)
    };
    crate::fault::point("attach loop device")?;
    let dev = lo
        .as_ref()
        .map(|l| l.path.clone())
        .unwrap_or_else(|| job.disk.to_path_buf());
    let numbers: Vec<u32> = job
        .layout
        .partitions
        .iter()
        .map(|p| p.number)
        .filter(|&n| n > 0)
        .collect();
    let parts = PartitionsGuard::add(&dev, &numbers)?;
    crate::fault::point("map partitions")?;
    let attach = (
        format!("attach {}", dev.display()),
        t.elapsed().as_secs_f64(),
    );
    if lo.is_some() {
        progress.finish_step(&attach.0, attach.1);
    }

    let root = work.join("root");
    std::fs::create_dir_all(&root)?;
    let plan = SessionPlan {
        root,
        disk: dev.clone(),
        partitions: job
            .layout
            .partitions
            .iter()
            .map(|p| PartitionDev {
                number: p.number,
                device: part_path(&dev, p.number),
                part_uuid: p.part_uuid.clone(),
                fs: p.fs.clone(),
            })
            .collect(),
        root_partition: job.root_partition,
        bootstrap: job.bootstrap,
        steps: job.steps,
        log: work.log(),
        echo_output: job.echo_output,
        packages: job.packages,
        plugins: job.plugins,
        bake_id: work.bake_id.clone(),
        policy: job.policy,
    };
    let outcome = run_session(&plan, progress);

    let t = Instant::now();
    let mut errors = Vec::new();
    if let Err(e) = parts.close() {
        errors.push(format!("{e:#}"));
    }
    errors.extend(
        crate::fault::point("unmap partitions")
            .err()
            .map(|e| format!("{e:#}")),
    );
    if let Some(lo) = lo {
        if let Err(e) = lo.close() {
            errors.push(format!("{e:#}"));
        }
        errors.extend(
            crate::fault::point("detach loop device")
                .err()
                .map(|e| format!("{e:#}")),
        );
    }
    let mut outcome = outcome?;
    if !errors.is_empty() {
        return Err(anyhow!("releasing the disk: {}", errors.join("; ")));
    }
    outcome.timings.insert(0, attach);
    outcome
        .timings
        .push(("detach loop device".into(), t.elapsed().as_secs_f64()));
    Ok(outcome)
}
