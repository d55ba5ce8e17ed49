//! The serial console log: spotting a boot that can no longer succeed, and its last lines.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Console lines that mean the boot is over, with what to tell the user.
const FATAL: &[(&str, &str)] = &[
    ("Kernel panic - not syncing", "the guest kernel panicked"),
    (
        "No bootable device",
        "the firmware found no bootable device (no bootloader on the image?)",
    ),
    (
        "grub rescue>",
        "GRUB dropped to its rescue shell (it cannot find its modules or config)",
    ),
    (
        "Dropping to a shell!",
        "the initramfs could not mount the root filesystem",
    ),
    (
        "You are in emergency mode",
        "systemd entered emergency mode",
    ),
];

/// A fatal condition seen on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// The console text that matched.
    pub pattern: &'static str,
    /// What it means.
    pub meaning: &'static str,
}

/// Look for a fatal condition in console text. A line that starts with `grub>` (GRUB's normal
/// shell, reached when there is no grub.cfg) counts too.
pub fn detect_fatal(text: &str) -> Option<Fatal> {
    let hit = FATAL
        .iter()
        .filter_map(|&(pattern, meaning)| text.find(pattern).map(|at| (at, pattern, meaning)))
        .chain(
            text.match_indices("\ngrub> ")
                .next()
                .map(|(at, _)| (at, "grub>", "GRUB dropped to its shell (no grub.cfg?)")),
        )
        .min_by_key(|&(at, _, _)| at)?;
    Some(Fatal {
        pattern: hit.1,
        meaning: hit.2,
    })
}

/// Remove ANSI escape sequences and carriage returns from console text.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    // CSI: parameters then one final byte in @..~
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\r' => {}
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// The last `n` non-empty lines of console text, cleaned.
pub fn tail_lines(text: &str, n: usize) -> Vec<String> {
    let cleaned = clean(text);
    let lines: Vec<&str> = cleaned.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// The last `n` lines of a console log file (reads at most the last 64 KiB).
pub fn tail_file(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    tail_lines(&String::from_utf8_lossy(&buf), n)
}

/// Reads a growing log file incrementally, for fatal-pattern scans and `--console` streaming.
pub struct Follower {
    file: Option<File>,
    path: std::path::PathBuf,
    /// Text not yet scanned, plus a little overlap so patterns split across reads match.
    window: String,
}

impl Follower {
    pub fn new(path: &Path) -> Self {
        Follower {
            file: None,
            path: path.to_path_buf(),
            window: String::new(),
        }
    }

    /// New bytes since the last call (empty if none or the file does not exist yet).
    pub fn read_new(&mut self) -> Vec<u8> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let mut buf = Vec::new();
        if let Some(f) = self.file.as_mut() {
            let _ = f.read_to_end(&mut buf);
        }
        buf
    }

    /// Feed new bytes and report a fatal condition if one appears.
    pub fn scan(&mut self, new: &[u8]) -> Option<Fatal> {
        if new.is_empty() {
            return None;
        }
        self.window.push_str(&String::from_utf8_lossy(new));
        let found = detect_fatal(&clean(&self.window));
        // Keep an overlap longer than the longest pattern.
        if self.window.len() > 256 {
            let mut cut = self.window.len() - 256;
            while !self.window.is_char_boundary(cut) {
                cut += 1;
            }
            self.window.drain(..cut);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_fatal_lines() {
        let seabios = "\u{1b}c\u{1b}[?7l\u{1b}[2JSeaBIOS (version 1.16.3)\r\nBooting from Hard Disk...\r\nBoot failed: not a bootable disk\r\n\r\nNo bootable device.\r\n";
        let f = detect_fatal(&clean(seabios)).unwrap();
        assert_eq!(f.pattern, "No bootable device");
        let panic = "[    1.2] VFS: Unable to mount root fs\n[    1.3] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n";
        assert_eq!(
            detect_fatal(panic).unwrap().pattern,
            "Kernel panic - not syncing"
        );
        assert_eq!(
            detect_fatal("error: unknown filesystem.\ngrub rescue> ")
                .unwrap()
                .pattern,
            "grub rescue>"
        );
        assert_eq!(detect_fatal("GNU GRUB\n\ngrub> ").unwrap().pattern, "grub>");
        assert_eq!(
            detect_fatal("ALERT!  UUID=abc does not exist.  Dropping to a shell!\n")
                .unwrap()
                .pattern,
            "Dropping to a shell!"
        );
        assert!(detect_fatal("You are in emergency mode. After logging in").is_some());
    }

    #[test]
    fn healthy_boot_is_not_fatal() {
        let ok = "SeaBIOS\r\nBooting from Hard Disk...\r\nLoading Linux 6.1.0-31-cloud-amd64 ...\r\n[  OK  ] Reached target multi-user.target\r\nbakery-boot login: ";
        assert_eq!(detect_fatal(&clean(ok)), None);
        // a log line that merely mentions panic settings
        assert_eq!(
            detect_fatal("kernel.panic = 10\nsetting panic_on_oops\n"),
            None
        );
    }

    #[test]
    fn earliest_fatal_wins() {
        let t = "Kernel panic - not syncing: x\nNo bootable device.\n";
        assert_eq!(
            detect_fatal(t).unwrap().pattern,
            "Kernel panic - not syncing"
        );
    }

    #[test]
    fn clean_and_tail() {
        assert_eq!(
            clean("\u{1b}[0m\u{1b}[1;31mred\u{1b}[0m\r\nx\u{7}"),
            "red\nx"
        );
        let text: String = (1..=30).map(|i| format!("line {i}\r\n\r\n")).collect();
        let t = tail_lines(&text, 20);
        assert_eq!(t.len(), 20);
        assert_eq!(t[0], "line 11");
        assert_eq!(t[19], "line 30");
        assert!(tail_lines("", 5).is_empty());
    }

    #[test]
    fn follower_matches_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut f = Follower::new(&p);
        assert!(f.read_new().is_empty());
        assert_eq!(f.scan(b"Booting...\nKernel pa"), None);
        assert_eq!(f.scan(&[b'x'; 1000]), None);
        assert_eq!(f.scan(b"\nKernel pa"), None);
        assert_eq!(
            f.scan(b"nic - not syncing: boom\n").unwrap().pattern,
            "Kernel panic - not syncing"
        );
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(f.read_new(), b"abc");
        assert!(f.read_new().is_empty());
    }
}
