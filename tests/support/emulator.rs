//! The local AWS emulator (moto, patched; see docs/aws-emulator.md) for one test: started on a
//! free 127.0.0.1 port, stopped at drop. Nothing in the tests ever reaches a real AWS endpoint.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Emulator {
    pub port: u16,
    child: Child,
}

impl Emulator {
    pub fn start() -> Emulator {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(super::repo().join("tests/support/aws-emulator"))
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("starting tests/support/aws-emulator");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ready on") {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(600);
        while rx.recv_timeout(Duration::from_millis(200)).is_err() {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("the AWS emulator exited: {s}");
            }
            assert!(Instant::now() < deadline, "the AWS emulator did not start");
        }
        Emulator { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment that points the SDK (and bakery) at the emulator with fake credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
            // Never probe a real instance metadata service: these tests are "off EC2".
            ("BAKERY_IMDS_ENDPOINT", "http://127.0.0.1:9".into()),
        ]
    }

    pub fn apply(&self, cmd: &mut Command) {
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.env_remove("AWS_PROFILE");
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = nix_kill(self.child.id());
        let _ = self.child.wait();
    }
}

fn nix_kill(pid: u32) -> nix::Result<()> {
    // The emulator was started in its own process group: stop all of it.
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM)
}
