//! The seal check: a baked image leaves as generalized as its base came in. Whatever the bake's
//! scripts made that belongs to one machine or to the build host is put back as the base had it
//! or removed, and what bakery cannot decide is named in a warning. [`take`] records the watched
//! files before the first step, [`plan`] (pure) compares them with the end of the bake, and
//! [`apply`] carries the plan out inside the image (through [`InRoot`], never following a link
//! out of it).
//!
//! The list follows what cloud image builders clean before capture (Packer's and Image
//! Builder's generalization steps, `cloud-init clean`, systemd's "Safely Building Images"
//! guidance on machine-id and random seeds, Debian's cloud image scripts).

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::sys::inroot::{InRoot, Kind};

/// Files up to this size are remembered byte for byte (to be put back).
const KEEP_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Per-machine: put back as the base had it (or remove it, if the base had none).
    Restore,
    /// A change is named in a warning, and kept.
    Warn,
}

/// Single files and what they are.
const FILES: &[(&str, Rule, &str)] = &[
    (
        "/etc/machine-id",
        Rule::Restore,
        "machine id (each instance makes its own at first boot)",
    ),
    (
        "/var/lib/dbus/machine-id",
        Rule::Restore,
        "D-Bus machine id",
    ),
    (
        "/etc/hostname",
        Rule::Restore,
        "host name (set per instance at boot)",
    ),
    (
        "/var/lib/systemd/random-seed",
        Rule::Restore,
        "random seed (instances must not share one)",
    ),
    (
        "/var/lib/urandom/random-seed",
        Rule::Restore,
        "random seed (instances must not share one)",
    ),
    (
        "/var/lib/systemd/credential.secret",
        Rule::Restore,
        "systemd credential secret (per machine)",
    ),
    (
        "/etc/udev/rules.d/70-persistent-net.rules",
        Rule::Restore,
        "NIC names of the build host",
    ),
    ("/root/.bash_history", Rule::Restore, "shell history"),
    ("/etc/hosts", Rule::Warn, "host table"),
];

/// Directories whose new entries (those the base did not have, names starting with the prefix)
/// are removed.
const NEW_ENTRIES: &[(&str, &str, &str)] = &[
    (
        "/etc/ssh",
        "ssh_host_",
        "SSH host key (each instance makes its own at first boot)",
    ),
    ("/var/lib/dhcp", "", "DHCP lease"),
    ("/var/lib/dhclient", "", "DHCP lease"),
    ("/var/lib/NetworkManager", "", "NetworkManager state"),
    ("/var/lib/cloud/instances", "", "cloud-init instance state"),
    ("/var/lib/cloud/instance", "", "cloud-init instance state"),
    ("/var/lib/cloud/data", "", "cloud-init instance data"),
    ("/var/lib/cloud/sem", "", "cloud-init semaphores"),
    ("/var/tmp", "", "temporary file"),
    ("/root", ".bash_history", "shell history"),
    ("/root", ".python_history", "shell history"),
    ("/root", ".lesshst", "shell history"),
    ("/root", ".viminfo", "shell history"),
    ("/root", ".wget-hsts", "shell history"),
];

const LOGS: &str = "/var/log";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Missing,
    File {
        /// Its bytes, when small enough to put back.
        content: Option<Vec<u8>>,
        size: u64,
        mtime: (i64, i64),
        mode: u32,
    },
    Link(String),
    Other,
}

/// The watched part of an image at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub files: BTreeMap<String, State>,
    /// Directory -> its entries.
    pub dirs: BTreeMap<String, Vec<String>>,
    /// Regular files under /var/log -> size.
    pub logs: BTreeMap<String, u64>,
}

fn state(fs: &InRoot, path: &str) -> State {
    let Ok(e) = fs.lstat(path) else {
        return State::Missing;
    };
    match e.kind {
        Kind::File => State::File {
            content: (e.size <= KEEP_BYTES)
                .then(|| fs.read_limited(path, KEEP_BYTES).ok())
                .flatten(),
            size: e.size,
            mtime: e.mtime,
            mode: e.mode,
        },
        Kind::Link => State::Link(
            fs.read_link(path)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        _ => State::Other,
    }
}

fn walk_logs(fs: &InRoot, dir: &str, depth: usize, out: &mut BTreeMap<String, u64>) {
    if depth > 6 {
        return;
    }
    for name in fs.list(dir).unwrap_or_default() {
        let p = format!("{dir}/{name}");
        match fs.lstat(&p) {
            Ok(e) if e.kind == Kind::File => {
                out.insert(p, e.size);
            }
            Ok(e) if e.kind == Kind::Dir => walk_logs(fs, &p, depth + 1, out),
            _ => {}
        }
    }
}

/// Record the watched files (a few dozen stats; no process).
pub fn take(fs: &InRoot) -> Snapshot {
    let mut s = Snapshot::default();
    for (p, _, _) in FILES {
        s.files.insert(p.to_string(), state(fs, p));
    }
    for (d, _, _) in NEW_ENTRIES {
        if fs.lstat(d).is_ok_and(|e| e.kind == Kind::Dir) {
            s.dirs.insert(d.to_string(), fs.list(d).unwrap_or_default());
        }
    }
    if fs.lstat(LOGS).is_ok_and(|e| e.kind == Kind::Dir) {
        walk_logs(fs, LOGS, 0, &mut s.logs);
    }
    s
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    Remove(String),
    Write {
        path: String,
        content: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Truncate {
        path: String,
        len: u64,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Each fix with the reason shown in the log (empty: told in `notes`).
    pub fixes: Vec<(Fix, String)>,
    /// Summaries of fixes told together (the logs).
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

fn same(a: &State, b: &State) -> bool {
    match (a, b) {
        (
            State::File {
                content: Some(x), ..
            },
            State::File {
                content: Some(y), ..
            },
        ) => x == y,
        (
            State::File {
                size: s1,
                mtime: m1,
                ..
            },
            State::File {
                size: s2,
                mtime: m2,
                ..
            },
        ) => s1 == s2 && m1 == m2,
        _ => a == b,
    }
}

fn lines_diff(before: &[u8], after: &[u8]) -> String {
    let e = super::resolv::Edit::between(
        &String::from_utf8_lossy(before),
        &String::from_utf8_lossy(after),
    );
    e.describe()
}

/// What to put back, remove or say, comparing the end of the bake with its start.
pub fn plan(before: &Snapshot, after: &Snapshot) -> Plan {
    let mut p = Plan::default();
    for (path, rule, what) in FILES {
        let (Some(b), Some(a)) = (before.files.get(*path), after.files.get(*path)) else {
            continue;
        };
        if same(b, a) {
            continue;
        }
        let why = format!("{path}: {what} changed during the bake");
        match rule {
            Rule::Warn => {
                let change = match (b, a) {
                    (
                        State::File {
                            content: Some(x), ..
                        },
                        State::File {
                            content: Some(y), ..
                        },
                    ) => lines_diff(x, y),
                    _ => "replaced".into(),
                };
                p.warnings.push(format!(
                    "{path}: changed during the bake ({change}); kept — make sure it holds nothing of one machine"
                ));
            }
            Rule::Restore => match b {
                State::Missing => p
                    .fixes
                    .push((Fix::Remove(path.to_string()), format!("{why}; removed"))),
                State::File {
                    content: Some(c),
                    mode,
                    ..
                } => {
                    if *a != State::Missing && !matches!(a, State::File { .. }) {
                        p.fixes.push((Fix::Remove(path.to_string()), String::new()));
                    }
                    p.fixes.push((
                        Fix::Write {
                            path: path.to_string(),
                            content: c.clone(),
                            mode: *mode,
                        },
                        format!("{why}; put back as the base had it"),
                    ));
                }
                State::Link(t) => {
                    p.fixes.push((Fix::Remove(path.to_string()), String::new()));
                    p.fixes.push((
                        Fix::Symlink {
                            path: path.to_string(),
                            target: t.clone(),
                        },
                        format!("{why}; put back as the base had it"),
                    ));
                }
                _ => p.warnings.push(format!("{why}; bakery cannot put it back")),
            },
        }
    }
    for (dir, prefix, what) in NEW_ENTRIES {
        let Some(now) = after.dirs.get(*dir) else {
            continue;
        };
        let had = before.dirs.get(*dir);
        for name in now {
            if !name.starts_with(prefix) || had.is_some_and(|h| h.contains(name)) {
                continue;
            }
            p.fixes.push((
                Fix::Remove(format!("{dir}/{name}")),
                format!("{dir}/{name}: {what} made during the bake; removed"),
            ));
        }
    }
    let mut logs = Vec::new();
    for (path, size) in &after.logs {
        let base = before.logs.get(path).copied();
        if path.starts_with("/var/log/journal/") && base.is_none() {
            p.fixes.push((Fix::Remove(path.clone()), String::new()));
            logs.push(path.clone());
            continue;
        }
        let keep = base.unwrap_or(0);
        if *size > keep {
            p.fixes.push((
                Fix::Truncate {
                    path: path.clone(),
                    len: keep,
                },
                String::new(),
            ));
            logs.push(path.clone());
        }
    }
    if !logs.is_empty() {
        p.notes.push(format!(
            "logs written during the bake cut back to what the base had: {}",
            logs.join(", ")
        ));
    }
    p
}

/// Carry out the plan inside the image; returns the lines describing what was done.
pub fn apply(fs: &InRoot, plan: &Plan) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for (fix, why) in &plan.fixes {
        match fix {
            Fix::Remove(p) => fs.remove(p).with_context(|| format!("removing {p}"))?,
            Fix::Write {
                path,
                content,
                mode,
            } => fs
                .write(path, content, Some(*mode))
                .with_context(|| format!("putting back {path}"))?,
            Fix::Symlink { path, target } => fs
                .symlink(target, path)
                .with_context(|| format!("putting back the link {path}"))?,
            Fix::Truncate { path, len } => fs
                .truncate(path, *len)
                .with_context(|| format!("cutting back {path}"))?,
        }
        if !why.is_empty() {
            done.push(why.clone());
        }
    }
    done.extend(plan.notes.iter().cloned());
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(c: &str) -> State {
        State::File {
            content: Some(c.as_bytes().to_vec()),
            size: c.len() as u64,
            mtime: (1, 0),
            mode: 0o444,
        }
    }

    fn snap(files: &[(&str, State)], dirs: &[(&str, &[&str])], logs: &[(&str, u64)]) -> Snapshot {
        Snapshot {
            files: files
                .iter()
                .map(|(p, s)| (p.to_string(), s.clone()))
                .collect(),
            dirs: dirs
                .iter()
                .map(|(d, e)| (d.to_string(), e.iter().map(|x| x.to_string()).collect()))
                .collect(),
            logs: logs.iter().map(|(p, s)| (p.to_string(), *s)).collect(),
        }
    }

    #[test]
    fn per_machine_files_made_by_the_bake_go_and_the_base_state_comes_back() {
        let before = snap(
            &[
                ("/etc/machine-id", file("")),
                ("/var/lib/dbus/machine-id", State::Missing),
                ("/etc/hostname", file("localhost\n")),
                ("/etc/hosts", file("127.0.0.1 localhost\n")),
                ("/var/lib/systemd/random-seed", State::Missing),
            ],
            &[
                ("/etc/ssh", &["sshd_config", "ssh_config"]),
                ("/var/tmp", &[]),
            ],
            &[("/var/log/dpkg.log", 0), ("/var/log/apt/history.log", 10)],
        );
        let after = snap(
            &[
                (
                    "/etc/machine-id",
                    file("0123456789abcdef0123456789abcdef\n"),
                ),
                ("/var/lib/dbus/machine-id", file("0123\n")),
                ("/etc/hostname", file("buildhost-42\n")),
                (
                    "/etc/hosts",
                    file("127.0.0.1 localhost\n10.1.2.3 buildhost-42\n"),
                ),
                ("/var/lib/systemd/random-seed", State::Missing),
            ],
            &[
                (
                    "/etc/ssh",
                    &[
                        "sshd_config",
                        "ssh_config",
                        "ssh_host_ed25519_key",
                        "ssh_host_ed25519_key.pub",
                    ],
                ),
                ("/var/tmp", &["build-cache"]),
            ],
            &[
                ("/var/log/dpkg.log", 5000),
                ("/var/log/apt/history.log", 10),
                ("/var/log/app/new.log", 7),
                ("/var/log/journal/abc/system.journal", 8),
            ],
        );
        let p = plan(&before, &after);
        let fixes: Vec<&Fix> = p.fixes.iter().map(|(f, _)| f).collect();
        assert!(fixes.contains(&&Fix::Write {
            path: "/etc/machine-id".into(),
            content: vec![],
            mode: 0o444
        }));
        assert!(fixes.contains(&&Fix::Remove("/var/lib/dbus/machine-id".into())));
        assert!(fixes.contains(&&Fix::Write {
            path: "/etc/hostname".into(),
            content: b"localhost\n".to_vec(),
            mode: 0o444
        }));
        for k in ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"] {
            assert!(
                fixes.contains(&&Fix::Remove(format!("/etc/ssh/{k}"))),
                "{k}"
            );
        }
        assert!(!fixes.contains(&&Fix::Remove("/etc/ssh/sshd_config".into())));
        assert!(fixes.contains(&&Fix::Remove("/var/tmp/build-cache".into())));
        assert!(fixes.contains(&&Fix::Truncate {
            path: "/var/log/dpkg.log".into(),
            len: 0
        }));
        assert!(fixes.contains(&&Fix::Truncate {
            path: "/var/log/app/new.log".into(),
            len: 0
        }));
        assert!(fixes.contains(&&Fix::Remove("/var/log/journal/abc/system.journal".into())));
        assert!(!fixes.iter().any(
            |f| matches!(f, Fix::Truncate { path, .. } if path == "/var/log/apt/history.log")
        ));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("+`10.1.2.3 buildhost-42`"));
        // Nothing changed: nothing to do.
        assert_eq!(plan(&before, &before), Plan::default());
    }
}
