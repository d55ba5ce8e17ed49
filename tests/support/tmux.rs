//! A command on a real pseudo-terminal: a private tmux server (its own socket under the test's
//! directory), which keeps the screen as a terminal shows it. Killed when dropped, so a failing
//! test leaves no server behind.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmux {
    sock: PathBuf,
}

/// The one session every test terminal runs in.
const SESSION: &str = "bake";

impl Tmux {
    /// Start `command` (a shell command line) on a `cols`×`rows` terminal, with 50,000 lines of
    /// scrollback, on a server whose socket is `dir/tmux.sock`.
    pub fn start(dir: &Path, cols: u16, rows: u16, command: &str) -> Tmux {
        let tmux = Tmux {
            sock: dir.join("tmux.sock"),
        };
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            "-s",
            SESSION,
            command,
        ]);
        tmux.run(&["set-option", "-t", SESSION, "history-limit", "50000"]);
        tmux
    }

    /// Run one tmux command against this server; its stdout. Panics when tmux fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.sock)
            .args(args)
            .output()
            .expect("tmux (in .ci/packages.txt)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Append every byte written to the terminal (escape sequences included) to `file`.
    pub fn pipe_to(&self, file: &Path) {
        self.run(&[
            "pipe-pane",
            "-t",
            SESSION,
            &format!("cat >> '{}'", file.display()),
        ]);
    }

    /// Type `keys` and Enter.
    pub fn type_line(&self, keys: &str) {
        self.run(&["send-keys", "-t", SESSION, keys, "Enter"]);
    }

    /// The visible screen (wrapped lines joined).
    pub fn visible(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", SESSION])
    }

    /// The screen and its whole scrollback, as text (wrapped lines joined).
    pub fn screen(&self) -> String {
        self.run(&[
            "capture-pane",
            "-p",
            "-J",
            "-S",
            "-",
            "-E",
            "-",
            "-t",
            SESSION,
        ])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.sock)
            .arg("kill-server")
            .output();
    }
}
