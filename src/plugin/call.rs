//! Running one plugin once: `PLUGIN HOOK`, the event on stdin, the reply on stdout, a deadline.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tracing::{debug, warn};

use super::event::{Event, Hook, Reply};
use super::find::PATH_PREFIX;

/// The most a reply may be; more is an error (a plugin printing a log to stdout, most likely).
pub const MAX_REPLY_BYTES: usize = 1 << 20;
/// How many stderr lines are kept for error messages (all are logged at debug).
const STDERR_KEPT: usize = 20;
/// How long to wait for a plugin's pipes to close once it was killed or has exited.
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// The plugin's name for messages: the file name without `bakery-plugin-`.
pub fn plugin_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    file.strip_prefix(PATH_PREFIX)
        .map(str::to_string)
        .unwrap_or(file)
}

/// Run `path hook` with `event` (its `hook` set to `hook`) on stdin and return its reply.
/// The plugin runs in its own process group, which is killed when `timeout` passes. A non-zero
/// exit, a timeout, more than [`MAX_REPLY_BYTES`] or a reply that is not a JSON object is an
/// error naming the plugin and hook; an empty stdout is an empty reply.
pub fn call(path: &Path, hook: Hook, event: &Event, timeout: Duration) -> Result<Reply> {
    let name = plugin_name(path);
    let what = format!("plugin {name} ({hook})");
    let input = if event.hook == hook {
        serde_json::to_vec(event)?
    } else {
        serde_json::to_vec(&Event {
            hook,
            ..event.clone()
        })?
    };

    let started = Instant::now();
    let deadline = started + timeout;
    let mut child =
        spawn(path, hook).with_context(|| format!("starting {what}: {}", path.display()))?;
    let group = Pid::from_raw(child.id() as i32);
    debug!(plugin = %name, %hook, pid = child.id(), "plugin started");

    // Pipes are served by threads so a plugin that writes much before reading (or never reads)
    // cannot deadlock us. The writer is not joined: if the plugin never reads, it ends with EPIPE.
    let mut stdin = child.stdin.take().expect("piped");
    thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let tx_out = tx.clone();
    thread::spawn(move || {
        let _ = tx_out.send(Pipe::Stdout(read_capped(stdout, MAX_REPLY_BYTES)));
    });
    let stderr = child.stderr.take().expect("piped");
    let (log_name, log_hook) = (name.clone(), hook);
    thread::spawn(move || {
        let _ = tx.send(Pipe::Stderr(read_stderr(stderr, &log_name, log_hook)));
    });

    let status = wait_until(&mut child, deadline).with_context(|| format!("waiting for {what}"))?;
    let timed_out = status.is_none();
    let status = match status {
        Some(s) => s,
        None => {
            kill_group(group);
            child.wait().with_context(|| format!("reaping {what}"))?
        }
    };
    debug!(plugin = %name, %hook, %status, seconds = started.elapsed().as_secs_f64(), "plugin exited");

    // The pipes close when the plugin and everything it started are gone. Something it left
    // running in the background may hold them: wait until the deadline, then kill the group.
    let mut pipes = Pipes::default();
    let wait_for = deadline
        .saturating_duration_since(Instant::now())
        .max(PIPE_GRACE);
    if !pipes.collect(&rx, wait_for) {
        warn!(plugin = %name, %hook, "a process the plugin started still holds its output; killing its process group");
        kill_group(group);
        pipes.collect(&rx, PIPE_GRACE);
    }
    let last_line = pipes
        .stderr
        .back()
        .map(|l| format!(": {l}"))
        .unwrap_or_else(|| " (nothing on stderr)".into());

    if timed_out {
        return Err(anyhow!(
            "{what} timed out after {timeout:?} and was killed{last_line}"
        ));
    }
    if !status.success() {
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => status.to_string(),
        };
        return Err(anyhow!("{what} failed ({how}){last_line}"));
    }
    let Some((out, overflow)) = pipes.stdout else {
        return Err(anyhow!("{what}: its stdout was still open after it exited"));
    };
    let out = out.with_context(|| format!("reading the reply of {what}"))?;
    if overflow {
        return Err(anyhow!("{what}: reply is over {MAX_REPLY_BYTES} bytes; a plugin prints one JSON object to stdout and logs to stderr"));
    }
    parse_reply(&out).with_context(|| format!("{what}: the reply on stdout is not a JSON object"))
}

/// Empty (or whitespace) stdout is an empty reply.
pub fn parse_reply(out: &[u8]) -> Result<Reply> {
    if out.iter().all(u8::is_ascii_whitespace) {
        return Ok(Reply::default());
    }
    serde_json::from_slice(out).map_err(|e| {
        let start: String = String::from_utf8_lossy(out).chars().take(60).collect();
        anyhow!("{e} (stdout starts with {start:?})")
    })
}

fn spawn(path: &Path, hook: Hook) -> io::Result<Child> {
    let mut cmd = Command::new(path);
    cmd.arg(hook.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // A plugin written just before (tests, installers) can be briefly busy in another forked child.
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 10 => {
                tries += 1;
                thread::sleep(Duration::from_millis(20 * tries));
            }
            r => return r,
        }
    }
}

/// `Some(status)` when the child exits before `deadline`, `None` when it is still running.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    let mut nap = Duration::from_millis(5);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(100));
    }
}

fn kill_group(group: Pid) {
    // ESRCH: the group is already gone, which is what we want.
    if let Err(e) = killpg(group, Signal::SIGKILL) {
        if e != nix::errno::Errno::ESRCH {
            warn!(
                pgid = group.as_raw(),
                "killing the plugin's process group: {e}"
            );
        }
    }
}

enum Pipe {
    Stdout((io::Result<Vec<u8>>, bool)),
    Stderr(VecDeque<String>),
}

#[derive(Default)]
struct Pipes {
    stdout: Option<(io::Result<Vec<u8>>, bool)>,
    stderr: VecDeque<String>,
    stderr_done: bool,
}

impl Pipes {
    /// Receive until both pipes reported or `wait` passed; true when both did.
    fn collect(&mut self, rx: &mpsc::Receiver<Pipe>, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        while self.stdout.is_none() || !self.stderr_done {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(Pipe::Stdout(r)) => self.stdout = Some(r),
                Ok(Pipe::Stderr(lines)) => {
                    self.stderr = lines;
                    self.stderr_done = true;
                }
                Err(_) => return false,
            }
        }
        true
    }
}

/// Up to `cap` bytes, then drain the rest (so the plugin is not blocked); true if there was more.
fn read_capped(r: impl Read, cap: usize) -> (io::Result<Vec<u8>>, bool) {
    let mut buf = Vec::new();
    let mut r = r;
    if let Err(e) = (&mut r).take(cap as u64 + 1).read_to_end(&mut buf) {
        return (Err(e), false);
    }
    let overflow = buf.len() > cap;
    if overflow {
        buf.truncate(cap);
        let _ = io::copy(&mut r, &mut io::sink());
    }
    (Ok(buf), overflow)
}

/// Log every line at debug; keep the last few non-empty ones for the error message.
fn read_stderr(r: impl Read, plugin: &str, hook: Hook) -> VecDeque<String> {
    let mut kept = VecDeque::new();
    let mut r = BufReader::new(r);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match r.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
        debug!(plugin, %hook, "stderr: {line}");
        if line.trim().is_empty() {
            continue;
        }
        if kept.len() == STDERR_KEPT {
            kept.pop_front();
        }
        kept.push_back(line);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A shell-script plugin in `dir`.
    pub(crate) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn event() -> Event {
        Event::new(Hook::PostBake, "bk-test")
    }

    const SEC: Duration = Duration::from_secs(10);

    #[test]
    fn reply_is_parsed_and_the_event_arrives_on_stdin_with_the_hook_as_argument() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("seen");
        let p = script(
            t.path(),
            "echoer",
            &format!("echo \"$1\" > {o}.arg; cat > {o}; echo '{{\"tags\": {{\"scan\": \"passed\"}}, \"message\": \"hi\", \"extra\": 1}}'", o = out.display()),
        );
        let r = call(&p, Hook::PostRegister, &event(), SEC).unwrap();
        assert_eq!(r.tags.get("scan").map(String::as_str), Some("passed"));
        assert_eq!(r.message.as_deref(), Some("hi"));
        assert_eq!(
            std::fs::read_to_string(t.path().join("seen.arg"))
                .unwrap()
                .trim(),
            "post-register"
        );
        let sent: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(sent["hook"], "post-register");
        assert_eq!(sent["bake_id"], "bk-test");
        assert_eq!(sent["protocol"], 1);
    }

    #[test]
    fn empty_stdout_is_an_empty_reply_even_if_stdin_is_never_read() {
        let t = tempfile::tempdir().unwrap();
        let p = script(t.path(), "quiet", "echo 'only a log line' >&2");
        let big = event().with("padding", "x".repeat(200_000));
        assert_eq!(
            call(&p, Hook::PostBake, &big, SEC).unwrap(),
            Reply::default()
        );
    }

    #[test]
    fn a_non_zero_exit_names_plugin_hook_code_and_last_stderr_line() {
        let t = tempfile::tempdir().unwrap();
        let p = script(
            t.path(),
            "bakery-plugin-failing",
            "echo first >&2; echo 'disk on fire' >&2; echo >&2; exit 3",
        );
        let e = call(&p, Hook::PreProvision, &event(), SEC)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "plugin failing (pre-provision) failed (exit 3): disk on fire"
        );
        let p = script(t.path(), "silent-fail", "exit 4");
        let e = call(&p, Hook::PostBake, &event(), SEC)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "plugin silent-fail (post-bake) failed (exit 4) (nothing on stderr)"
        );
    }

    #[test]
    fn a_plugin_past_its_timeout_is_killed_with_its_children() {
        let t = tempfile::tempdir().unwrap();
        let marker = t.path().join("survivor");
        // The background sleep holds stdout too: the whole group must go, not just the shell.
        let p = script(
            t.path(),
            "slow",
            &format!(
                "echo 'working' >&2; (sleep 3; touch {}) & sleep 30",
                marker.display()
            ),
        );
        let started = Instant::now();
        let e = call(&p, Hook::PostBake, &event(), Duration::from_millis(500))
            .unwrap_err()
            .to_string();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            e,
            "plugin slow (post-bake) timed out after 500ms and was killed: working"
        );
        thread::sleep(Duration::from_millis(3500));
        assert!(
            !marker.exists(),
            "a process of the plugin's group survived the timeout"
        );
    }

    #[test]
    fn a_background_process_holding_stdout_after_exit_is_killed_at_the_deadline() {
        let t = tempfile::tempdir().unwrap();
        let p = script(
            t.path(),
            "leaver",
            "echo '{\"message\": \"done\"}'; sleep 30 &",
        );
        let started = Instant::now();
        let r = call(&p, Hook::PostBake, &event(), Duration::from_millis(800)).unwrap();
        assert_eq!(r.message.as_deref(), Some("done"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn bad_json_and_oversized_replies_are_errors_naming_the_plugin() {
        let t = tempfile::tempdir().unwrap();
        let p = script(t.path(), "chatty", "echo 'Posting to slack...'");
        let e = format!("{:#}", call(&p, Hook::PostBake, &event(), SEC).unwrap_err());
        assert!(
            e.starts_with("plugin chatty (post-bake): the reply on stdout is not a JSON object: "),
            "{e}"
        );
        assert!(e.contains("Posting to slack"), "{e}");
        let p = script(t.path(), "array", "echo '[1, 2]'");
        assert!(call(&p, Hook::PostBake, &event(), SEC).is_err());
        let p = script(
            t.path(),
            "flood",
            "head -c 3000000 /dev/zero | tr '\\0' ' '; echo '{}'",
        );
        let e = call(&p, Hook::PostBake, &event(), SEC)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("plugin flood (post-bake): reply is over 1048576 bytes"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_or_unexecutable_plugin_is_an_error_naming_it() {
        let e = format!(
            "{:#}",
            call(
                Path::new("/nonexistent/bakery-plugin-x"),
                Hook::Judge,
                &event(),
                SEC
            )
            .unwrap_err()
        );
        assert!(
            e.starts_with("starting plugin x (judge): /nonexistent/bakery-plugin-x: "),
            "{e}"
        );
    }

    #[test]
    fn names_drop_the_path_prefix() {
        assert_eq!(
            plugin_name(Path::new("/usr/bin/bakery-plugin-notify-webhook")),
            "notify-webhook"
        );
        assert_eq!(
            plugin_name(Path::new("plugins/judge-metrics-file")),
            "judge-metrics-file"
        );
    }
}
