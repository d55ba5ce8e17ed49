//! The chroot session: what it runs (layers first, then packages grouped by kind) and running
//! it. The child process (`bakery __session`, in its own mount namespace) mounts the root and
//! the image's /boot, /proc, /sys, a private /dev, runs the steps with services forbidden, then
//! restores, trims and unmounts (see `provision::session`); it reports each step's progress and
//! timing, and the image's facts at the end.

use std::path::PathBuf;

use anyhow::Result;

use super::device::Attached;
use super::source::SourceDisk;
use super::{Job, Stages};
use crate::context::Globals;
use crate::input;
use crate::manifest::Timing;
use crate::package::{PackageInfo, PackageKind, PackageSource};
use crate::provision::driver::run_session;
use crate::provision::plan::{ImageFacts, PackageCheck, PartitionDev, SessionPlan, Step};
use crate::recipe::layer::{Layer, LayerStep};
use crate::sys::partx::part_path;
use crate::workdir::WorkDir;

/// A layer's steps, in order.
pub fn layer_steps(l: &Layer) -> Vec<Step> {
    let name = l.name.clone();
    l.file
        .steps
        .iter()
        .map(|s| match s {
            LayerStep::Apt(p) => Step::Apt {
                layer: name.clone(),
                packages: p.clone(),
            },
            LayerStep::Script(p) => Step::Script {
                layer: name.clone(),
                path: l.dir.join(p),
            },
            LayerStep::Run(c) => Step::Run {
                layer: name.clone(),
                command: c.clone(),
            },
            LayerStep::Enable(u) => Step::Enable {
                layer: name.clone(),
                units: u.clone(),
            },
            LayerStep::File(f) => Step::CopyFile {
                layer: name.clone(),
                src: l.dir.join(&f.src),
                dest: f.dest.clone(),
                mode: u32::from_str_radix(&f.mode, 8).unwrap_or(0o644),
            },
        })
        .collect()
}

/// Layers first, then packages grouped by kind in the order given (adjacent packages of one
/// kind install in one transaction, so they may depend on each other).
/// Packages by name group the same way (one transaction of the image's package manager);
/// `field` is where the user gave the packages, for the session's errors.
pub fn plan_steps(layers: &[Layer], packages: &[PackageInfo], field: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = layers.iter().flat_map(layer_steps).collect();
    let mut i = 0;
    while i < packages.len() {
        let first = &packages[i];
        if let PackageSource::Name { .. } = first.source {
            let group: Vec<String> = packages[i..]
                .iter()
                .map_while(|p| match &p.source {
                    PackageSource::Name { spec, .. } => Some(spec.clone()),
                    _ => None,
                })
                .collect();
            i += group.len();
            steps.push(Step::InstallNamed {
                packages: group,
                field: field.to_string(),
            });
            continue;
        }
        let kind = first.kind;
        let group: Vec<PathBuf> = packages[i..]
            .iter()
            .take_while(|p| p.kind == kind && !p.is_named())
            .map(|p| p.path.clone())
            .collect();
        i += group.len();
        steps.push(match kind {
            PackageKind::Deb => Step::InstallDebs { files: group },
            PackageKind::Rpm => Step::InstallRpms { files: group },
        });
    }
    steps
}

/// What the session checks each package file against (its architecture) before installing.
pub fn package_checks(packages: &[PackageInfo]) -> Vec<PackageCheck> {
    packages
        .iter()
        .filter(|p| !p.is_named())
        .map(|p| PackageCheck {
            file: p.path.display().to_string(),
            kind: p.kind,
            arch: p.normalized_arch().to_string(),
        })
        .collect()
}

/// Run the job's steps on the attached disk (stage `provision`, with the child's own steps
/// timed and fault-pointed inside it).
pub fn provision(
    job: &Job,
    disk: &SourceDisk,
    attached: &Attached,
    grown: Option<&crate::disk::grow::Growth>,
    work: &WorkDir,
    stages: &mut Stages,
    g: &Globals,
) -> Result<ImageFacts> {
    let root_partition = match disk.root_partition {
        Some(n) => n,
        None => {
            attached
                .layout
                .root()
                .ok_or_else(|| {
                    input!(
                        "base `{}`: no Linux root filesystem found on the disk",
                        disk.origin.image
                    )
                })?
                .number
        }
    };
    let root = work.join("root");
    std::fs::create_dir_all(&root)?;
    let dev = &attached.dev;
    let plan = SessionPlan {
        root,
        disk: dev.clone(),
        partitions: attached
            .layout
            .partitions
            .iter()
            .map(|p| PartitionDev {
                number: p.number,
                device: part_path(dev, p.number),
                part_uuid: p.part_uuid.clone(),
                fs: p.fs.clone(),
            })
            .collect(),
        root_partition,
        bootstrap: disk.bootstrap.clone(),
        steps: job.steps.clone(),
        log: work.log(),
        echo_output: g.verbose >= 2,
        packages: package_checks(&job.packages),
        plugins: job.plugins.clone(),
        bake_id: work.bake_id.clone(),
        policy: job.policy.clone(),
        grow_root_fs: grown.map(|g| g.fs.clone()),
        shell: job.shell.clone(),
    };
    stages.run("provision", |st| {
        let outcome = run_session(&plan, st.progress())?;
        st.record(
            outcome
                .timings
                .iter()
                .map(|(step, secs)| Timing::new(step, *secs)),
        );
        Ok(outcome.facts)
    })
}
