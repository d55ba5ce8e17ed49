//! The chroot session child (`bakery __session`): reads a plan on stdin, enters its own mount
//! namespace, then its own PID, IPC and UTS namespaces (as their PID 1, see `isolate`), mounts
//! and provisions the image, tears everything down and reports events as JSON lines on stdout.
//! If it dies, the kernel drops its private mounts and kills every process of its namespaces.

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::chroot::Chroot;
use super::isolate;
use super::plan::{Event, ImageFacts, SessionPlan};
use super::steps::Runner;
use crate::error::InputError;
use crate::sys::signals;

fn emit(ev: &Event) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, ev);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Entry point of the hidden subcommand; returns the process exit code.
pub fn main() -> i32 {
    // If the parent dies (even by SIGKILL), so do we, and our mounts go with our namespace.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    signals::install();
    let result = (|| -> Result<ImageFacts> {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading the session plan")?;
        let plan: SessionPlan = serde_json::from_str(&input).context("parsing the session plan")?;
        unshare(CloneFlags::CLONE_NEWNS)
            .context("creating a private mount namespace (are we root?)")?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .context("making mounts private")?;
        drop_copied_loop_mounts(&plan_paths(&plan));
        // From here on this process is PID 1 of the bake's own PID, IPC and UTS namespaces
        // (the process that called us waits as a relay; see `isolate`).
        if let isolate::Role::Relay(code) = isolate::enter()? {
            std::process::exit(code);
        }
        let mut chroot = Chroot::new(&plan.root, &plan.log, plan.echo_output)?;
        let outcome = run(&plan, &mut chroot);
        let teardown = chroot.teardown();
        let facts = outcome?;
        teardown?;
        crate::fault::point("unmount")?;
        Ok(facts)
    })();
    match result {
        Ok(facts) => {
            emit(&Event::Finished {
                facts: Box::new(facts),
            });
            0
        }
        Err(e) => {
            let input_error = e.chain().any(|c| c.is::<InputError>());
            let interrupted = e.chain().any(|c| c.is::<crate::error::Interrupted>());
            emit(&Event::Failed {
                error: if interrupted {
                    "interrupted".into()
                } else {
                    format!("{e:#}")
                },
                input_error,
            });
            1
        }
    }
}

/// `unshare` copied every mount of the host into our namespace, including filesystems on loop
/// devices that other tools (or other bakes' helpers) mounted at that moment. Our copies would
/// keep those filesystems alive after their owners unmount them — their `partx -d` then fails
/// and a later user of the same loop device finds stale partitions. Nothing here needs them:
/// detach our copies (private propagation: the host's mounts are untouched). Except the ones
/// holding a path the plan names: a work dir, package or layer on a loop-mounted filesystem (an
/// XFS image mounted for its reflinks) must stay reachable, or the session cannot even open its
/// log.
fn drop_copied_loop_mounts(needed: &[std::path::PathBuf]) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let targets = loop_mount_points(&info);
    for t in targets.iter().rev() {
        if holds_any(t, needed) {
            continue;
        }
        let _ = nix::mount::umount2(t.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every absolute path the plan names (work dir, log, disk, packages, layer files, plugins).
fn plan_paths(plan: &SessionPlan) -> Vec<std::path::PathBuf> {
    fn walk(v: &serde_json::Value, out: &mut Vec<std::path::PathBuf>) {
        match v {
            serde_json::Value::String(s) if s.starts_with('/') => out.push(s.into()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(plan) {
        walk(&v, &mut out);
    }
    out
}

/// Whether the filesystem mounted at `point` holds one of `paths`.
fn holds_any(point: &str, paths: &[std::path::PathBuf]) -> bool {
    paths.iter().any(|p| p.starts_with(point))
}

/// Mount points (in mountinfo order) whose source is a loop device or one of its partitions.
fn loop_mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let source = right.split_whitespace().nth(1)?;
            let point = left.split_whitespace().nth(4)?;
            source
                .starts_with("/dev/loop")
                .then(|| point.replace("\\040", " ").replace("\\011", "\t"))
        })
        .collect()
}

/// The bake's log, where each step's header goes before the step's output.
static LOG: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn run(plan: &SessionPlan, chroot: &mut Chroot) -> Result<ImageFacts> {
    let _ = LOG.set(plan.log.clone());
    let root_dev = plan
        .partitions
        .iter()
        .find(|p| p.number == plan.root_partition)
        .context("the plan names a root partition that is not on the disk")?;
    let grow = plan.grow_root_fs.as_deref();
    if let Some(fs) = grow.filter(|fs| crate::disk::grow::grows_offline(fs)) {
        timed(&format!("grow root filesystem ({fs})"), || {
            crate::disk::grow::grow_offline(&root_dev.device)
        })?;
    }
    timed("mount image", || {
        chroot.mount_image(root_dev, &plan.partitions)
    })?;
    if let Some(fs) = grow.filter(|fs| !crate::disk::grow::grows_offline(fs)) {
        timed(&format!("grow root filesystem ({fs})"), || {
            let argv = crate::disk::grow::grow_mounted_command(fs, &plan.root)
                .with_context(|| format!("cannot grow a {fs} filesystem"))?;
            crate::sys::cmd::run(
                std::process::Command::new(&argv[0]).args(&argv[1..]),
                &format!("growing the root filesystem ({})", argv[0]),
            )
            .map(|_| ())
        })?;
    }
    let mut runner = Runner::new(chroot, plan);
    if let Some(b) = &plan.bootstrap {
        timed(&format!("debootstrap {}", b.suite), || runner.bootstrap(b))?;
    }
    timed("prepare chroot", || {
        runner.chroot.prepare(&plan.disk, &plan.partitions)
    })?;
    crate::fault::point("prepare chroot")?;
    runner.check_packages()?;
    runner.begin();
    crate::fault::point("check packages")?;
    let hook = |h: crate::plugin::Hook| -> Result<std::collections::BTreeMap<String, String>> {
        if plan.plugins.is_empty() {
            return Ok(Default::default());
        }
        let ev = crate::plugin::Event {
            root: Some(plan.root.clone()),
            ..crate::plugin::Event::new(h, &plan.bake_id)
        };
        crate::plugin::run_hook(&plan.plugins, h, &ev)
    };
    let pre = timed_if(!plan.plugins.is_empty(), "plugins: pre-provision", || {
        hook(crate::plugin::Hook::PreProvision)
    })?;
    runner.facts.plugin_tags.extend(pre);
    for step in &plan.steps {
        signals::check()?;
        timed(&step.label(), || runner.step(step))?;
        crate::fault::point(&step.label())?;
        let strays = runner.chroot.stop_strays();
        runner
            .facts
            .stray_processes
            .extend(strays.iter().map(|p| p.comm.clone()));
    }
    let post = timed_if(!plan.plugins.is_empty(), "plugins: post-provision", || {
        hook(crate::plugin::Hook::PostProvision)
    })?;
    runner.facts.plugin_tags.extend(post);
    if let Some(sh) = &plan.shell {
        let code = timed("shell", || {
            emit(&Event::Shell { running: true });
            let banner = format!(
                "bakery: a shell in the image of bake {} (same isolation as the bake's scripts). `exit` continues the bake and seals the image; `exit 1` stops it.",
                plan.bake_id
            );
            let r = super::shell::run(runner.chroot, &sh.tty, &sh.term, &banner);
            emit(&Event::Shell { running: false });
            r
        })?;
        let strays = runner.chroot.stop_strays();
        runner
            .facts
            .stray_processes
            .extend(strays.iter().map(|p| p.comm.clone()));
        if code != 0 {
            anyhow::bail!(
                "the --shell exited with status {code}: the bake is stopped before the seal (to keep the disk for a look, add --keep-on-error)"
            );
        }
    }
    timed("seal", || runner.seal())?;
    crate::fault::point("seal")?;
    Ok(runner.facts)
}

fn timed_if<T: Default>(cond: bool, label: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if cond {
        timed(label, f)
    } else {
        Ok(T::default())
    }
}

fn timed<T>(label: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    emit(&Event::Start {
        step: label.to_string(),
    });
    if let Some(log) = LOG.get() {
        crate::progress::log_header(log, label);
    }
    let t = Instant::now();
    let r = f().with_context(|| label.to_string());
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            if let Some(log) = LOG.get() {
                let msg = format!("{e:#}").replace('\n', " ");
                crate::progress::log_header(log, &format!("{label} FAILED: {msg}"));
            }
            return Err(e);
        }
    };
    emit(&Event::Done {
        step: label.to_string(),
        seconds: t.elapsed().as_secs_f64(),
    });
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_loop_mount_holding_the_work_dir_is_kept() {
        let needed = [std::path::PathBuf::from("/var/tmp/xfs/wd/logs/bk-1.log")];
        assert!(super::holds_any("/var/tmp/xfs", &needed));
        assert!(!super::holds_any("/var/tmp/xf", &needed));
        assert!(!super::holds_any("/var/tmp/floor mnt", &needed));
    }

    #[test]
    fn loop_mount_points_are_found_in_mountinfo() {
        let info = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    90 22 7:2 / /var/tmp/floor\\040mnt rw,relatime - ext4 /dev/loop0p2 rw\n\
                    91 90 0:5 / /var/tmp/floor\\040mnt/proc rw - proc proc rw\n\
                    95 22 7:3 / /snap/core rw - squashfs /dev/loop3 ro\n";
        assert_eq!(
            super::loop_mount_points(info),
            ["/var/tmp/floor mnt", "/snap/core"]
        );
    }
}
