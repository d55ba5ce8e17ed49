//! The local AWS emulator (moto, patched; see docs/aws-emulator.md) for tests: started on a free
//! 127.0.0.1 port, stopped (its whole process group) at drop. Nothing in the tests ever reaches
//! a real AWS endpoint.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

pub struct Emulator {
    pub port: u16,
    child: Mutex<Child>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Emulator {
    /// A private emulator on a free port.
    pub fn start() -> Emulator {
        Emulator::start_on(free_port(), &[])
    }

    /// Start on `port` with extra launcher flags (e.g. `--delay-ms-for CopyImage=1500`) and wait
    /// until it answers. The first run on a machine builds the emulator's venv (~40 s).
    pub fn start_on(port: u16, extra: &[&str]) -> Emulator {
        let mut child = Command::new(super::repo().join("tests/support/aws-emulator"))
            .args(["--port", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("starting tests/support/aws-emulator");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let want = format!("ready on http://127.0.0.1:{port}");
        std::thread::spawn(move || {
            // Keep draining stderr after "ready" so the emulator never blocks on a full pipe.
            let mut log = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(&want) {
                    let _ = tx.send(Ok(()));
                } else if log.len() < 50 {
                    log.push(line);
                }
            }
            let _ = tx.send(Err(log.join("\n")));
        });
        let emu = Emulator {
            port,
            child: Mutex::new(child),
        };
        match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(Ok(())) => emu,
            Ok(Err(log)) => panic!("the AWS emulator exited before it was ready:\n{log}"),
            Err(_) => panic!("the AWS emulator was not ready within 600 s"),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment that points the SDK (and bakery) at the emulator with fake credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_for(self.port)
    }

    pub fn apply(&self, cmd: &mut Command) {
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.env_remove("AWS_PROFILE");
    }
}

fn env_for(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        // Never probe a real instance metadata service: these tests are "off EC2".
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            "http://127.0.0.1:9".into(),
        ),
    ]
}

/// One emulator for the tests of this process, with the SDK environment of this process pointed
/// at it. The port is chosen once and the environment set once, before any client is built (so no
/// thread reads it while it changes); the emulator stops when the last user drops its handle and
/// starts again on the same port if needed.
pub fn shared(extra: &[&str]) -> Arc<Emulator> {
    static PORT: OnceLock<u16> = OnceLock::new();
    static SLOT: Mutex<Weak<Emulator>> = Mutex::new(Weak::new());
    let port = *PORT.get_or_init(|| {
        let port = free_port();
        for (k, v) in env_for(port) {
            std::env::set_var(k, v);
        }
        // The tests of the client layer decide these themselves.
        for k in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "BAKERY_FAIL_API",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            "BAKERY_AMI_WAIT_TIMEOUT",
        ] {
            std::env::remove_var(k);
        }
        port
    });
    let mut slot = SLOT.lock().unwrap();
    if let Some(e) = slot.upgrade() {
        return e;
    }
    let e = Arc::new(Emulator::start_on(port, extra));
    *slot = Arc::downgrade(&e);
    e
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        // The emulator was started in its own process group: stop all of it.
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
}
