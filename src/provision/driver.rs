//! Parent side of a chroot session: start `bakery __session` in its own process group, feed it
//! the plan, follow its events (progress, timings), forward Ctrl-C as SIGTERM, and make sure
//! nothing it started outlives it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use super::plan::{Event, ImageFacts, SessionPlan};
use crate::error::{InputError, Interrupted};
use crate::progress::Progress;
use crate::sys::{procs, signals};

#[derive(Debug, Clone)]
pub struct SessionOutcome {
    pub facts: ImageFacts,
    pub timings: Vec<(String, f64)>,
}

pub fn run_session(plan: &SessionPlan, progress: &Progress) -> Result<SessionOutcome> {
    let exe = std::env::current_exe().context("finding the bakery executable")?;
    let mut cmd = Command::new(exe);
    // Host commands of the session (rpm --root runs scriptlets in the image) inherit its
    // environment: credentials and tokens stay with the parent, which alone talks to AWS.
    for (k, _) in std::env::vars_os() {
        if is_secret_env(&k.to_string_lossy()) {
            cmd.env_remove(&k);
        }
    }
    let mut child = cmd
        .arg("__session")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_default())
        // Its own process group: a terminal Ctrl-C reaches only us, and we stop it in order.
        .process_group(0)
        .spawn()
        .context("starting the chroot session")?;
    let pid = Pid::from_raw(child.id() as i32);
    {
        let mut stdin = child.stdin.take().unwrap();
        serde_json::to_writer(&mut stdin, plan)?;
        stdin.flush()?;
    }
    let (tx, rx) = mpsc::channel::<Event>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::io::Result::ok)
        {
            if let Ok(ev) = serde_json::from_str::<Event>(&line) {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        }
    });
    // The child's mount namespace, once it has left ours: whatever still lives in it after the
    // child exits (a daemon a postinst started) keeps the image mounted and must be stopped.
    let our_ns = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut child_ns = None;
    let mut forwarded = false;
    let mut told_again = false;
    let mut timings = Vec::new();
    let mut finished: Option<ImageFacts> = None;
    let mut failed: Option<(String, bool)> = None;
    let mut started: Option<(String, Instant)> = None;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => handle(
                ev,
                progress,
                &mut timings,
                &mut finished,
                &mut failed,
                &mut started,
            ),
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if child_ns.is_none() {
            if let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) {
                if Some(&ns) != our_ns.as_ref() {
                    child_ns = Some(ns.to_string_lossy().into_owned());
                }
            }
        }
        if signals::interrupted() && !forwarded {
            progress.println(
                "interrupted: stopping the chroot session and releasing everything it holds",
            );
            let _ = kill(pid, Signal::SIGTERM);
            forwarded = true;
        }
        if signals::count() >= 2 && forwarded && !told_again {
            // A second Ctrl-C: keep cleaning, but say once what is still held and how to remove it.
            told_again = true;
            progress.println(&again_message(plan, pid));
        }
        if let Some(s) = child.try_wait()? {
            break s;
        }
    };
    let _ = reader.join();
    while let Ok(ev) = rx.try_recv() {
        handle(
            ev,
            progress,
            &mut timings,
            &mut finished,
            &mut failed,
            &mut started,
        );
    }
    if let Some(ns) = &child_ns {
        let left = procs::in_mount_namespace(ns);
        if !left.is_empty() {
            warn!(
                "stopping processes left in the bake's mount namespace: {}",
                procs::describe(&left)
            );
            procs::stop(&left, Duration::from_secs(3));
        }
    }
    if let Some((error, input)) = failed {
        if error == "interrupted" || (forwarded && !input) {
            return Err(anyhow::Error::new(Interrupted));
        }
        if input {
            return Err(anyhow::Error::new(InputError(error)));
        }
        return Err(anyhow!(error));
    }
    match finished {
        Some(facts) if status.success() => {
            info!("chroot session finished");
            for s in &facts.sealed {
                info!("seal: {s}");
            }
            for c in &facts.package_changes {
                info!("base package {}: {} ({})", c.action, c.describe(), c.kind);
            }
            Ok(SessionOutcome { facts, timings })
        }
        _ if forwarded => Err(anyhow::Error::new(Interrupted)),
        _ => Err(anyhow!(
            "the chroot session died ({status}) during {}",
            started.map(|s| s.0).unwrap_or_else(|| "start-up".into())
        )),
    }
}

/// Environment variables that may hold secrets (AWS credentials, tokens, webhook URLs): never
/// passed to the chroot session.
pub fn is_secret_env(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    k.starts_with("AWS_") && k != "AWS_REGION" && k != "AWS_DEFAULT_REGION"
        || [
            "SECRET",
            "TOKEN",
            "PASSWORD",
            "PASSWD",
            "CREDENTIAL",
            "WEBHOOK",
            "API_KEY",
            "PRIVATE_KEY",
        ]
        .iter()
        .any(|s| k.contains(s))
}

/// What a second Ctrl-C is told: what is still held, and how to remove it if bakery is stopped.
pub fn again_message(plan: &SessionPlan, pid: Pid) -> String {
    let work_top = plan
        .log
        .parent()
        .and_then(|l| l.parent())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!(
        "interrupted again: still cleaning up; left so far: the chroot session (pid {pid}) with mounts under {}, and {} with its partitions. \
         Cleanup goes on; if bakery is killed now, run `bakery gc --work-dir {work_top}` to remove them",
        plan.root.display(),
        plan.disk.display()
    )
}

fn handle(
    ev: Event,
    progress: &Progress,
    timings: &mut Vec<(String, f64)>,
    finished: &mut Option<ImageFacts>,
    failed: &mut Option<(String, bool)>,
    started: &mut Option<(String, Instant)>,
) {
    match ev {
        Event::Start { step } => {
            // The session writes this step's header into the bake's log itself, in order with
            // the step's output.
            progress.show_step(&step);
            *started = Some((step, Instant::now()));
        }
        Event::Done { step, seconds } => {
            progress.finish_step(&step, seconds);
            timings.push((step, seconds));
        }
        Event::Finished { facts } => *finished = Some(*facts),
        Event::Shell { running } => progress.suspend(running),
        Event::Failed { error, input_error } => *failed = Some((error, input_error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_the_session() {
        for k in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SESSION_TOKEN",
            "GITHUB_TOKEN",
            "SLACK_WEBHOOK_URL",
            "DB_PASSWORD",
            "aws_profile",
        ] {
            assert!(is_secret_env(k), "{k}");
        }
        for k in [
            "PATH",
            "RUST_LOG",
            "BAKERY_FAIL_AT",
            "BAKERY_FAULT_LOG",
            "AWS_REGION",
            "HOME",
            "TMPDIR",
        ] {
            assert!(!is_secret_env(k), "{k}");
        }
    }
}
