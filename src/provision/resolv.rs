//! DNS for the bake without the bake host's DNS in the image.
//!
//! Scripts need a resolver while the image is provisioned (apt downloads, `getent`), but the
//! image must keep its own `/etc/resolv.conf` (on the default base a link to
//! `../run/systemd/resolve/stub-resolv.conf`, which systemd-resolved writes at boot) and no byte
//! of the host's file may be written to its disk (Packer #500/#4698, rancher/os #697). So the
//! host's content only ever lives in the session's tmpfs `/run`:
//!
//! - **runtime**: the image's `/etc/resolv.conf` is a link into `/run`; the file it names is
//!   created there. Nothing on the image's disk changes.
//! - **link**: otherwise (a regular file, a link elsewhere, none), the image's entry is renamed
//!   to `/etc/resolv.conf.bakery-orig` (metadata only) and `/etc/resolv.conf` becomes a link to
//!   `/run/bakery/resolv.conf` for the length of the bake.
//!
//! At the end the image's own entry comes back. A package that edited the file during the bake
//! (a `search` line appended, a `nameserver` added) has its edit applied to the image's own
//! regular file, or, when the image's file is written at boot by a resolver (a link into /run),
//! a warning names the change that cannot be kept. A package that installed its own link
//! (systemd-resolved, resolvconf) keeps it. [`plan_restore`] is the pure decision.

use std::path::{Component, Path, PathBuf};

/// Where our temporary resolver file lives in link mode.
pub const BAKE_RESOLV: &str = "/run/bakery/resolv.conf";
pub const RESOLV: &str = "/etc/resolv.conf";
pub const BACKUP: &str = "/etc/resolv.conf.bakery-orig";

/// How the host's DNS was provided to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// The image's link (`link`, as written) points at `path` under /run, created on the tmpfs.
    Runtime { link: String, path: String },
    /// The image's entry was moved to [`BACKUP`]; [`RESOLV`] links to [`BAKE_RESOLV`].
    Link,
}

/// What is (or was) at a path of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    File(String),
    Link(String),
    Missing,
}

/// Lexically resolve a link `target` found at `at` (absolute, inside the image).
pub fn resolve_link(at: &str, target: &str) -> String {
    let base = if target.starts_with('/') {
        PathBuf::from("/")
    } else {
        Path::new(at)
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf()
    };
    let mut out: Vec<String> = Vec::new();
    for c in base.join(target).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    format!("/{}", out.join("/"))
}

/// How to provide DNS, given what the image has at /etc/resolv.conf.
pub fn plan_setup(image: &Found) -> Setup {
    if let Found::Link(t) = image {
        let path = resolve_link(RESOLV, t);
        if path.starts_with("/run/") && path.len() > "/run/".len() {
            return Setup::Runtime {
                link: t.clone(),
                path,
            };
        }
    }
    Setup::Link
}

/// Lines a package added to and removed from the content it found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Edit {
    pub fn between(found: &str, left: &str) -> Edit {
        let norm = |t: &str| -> Vec<String> {
            t.lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        };
        let (a, b) = (norm(found), norm(left));
        Edit {
            added: b.iter().filter(|l| !a.contains(l)).cloned().collect(),
            removed: a.iter().filter(|l| !b.contains(l)).cloned().collect(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
    /// `+search corp.example, -nameserver 10.0.0.2`
    pub fn describe(&self) -> String {
        self.added
            .iter()
            .map(|l| format!("+`{l}`"))
            .chain(self.removed.iter().map(|l| format!("-`{l}`")))
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// `content` with the added lines appended (once) and the removed lines dropped.
    pub fn apply(&self, content: &str) -> String {
        let mut out: Vec<&str> = content
            .lines()
            .filter(|l| !self.removed.iter().any(|r| r == l.trim()))
            .collect();
        for a in &self.added {
            if !out.iter().any(|l| l.trim() == a) {
                out.push(a);
            }
        }
        let mut s = out.join("\n");
        s.push('\n');
        s
    }
}

/// What to do with /etc/resolv.conf at the end of the bake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// A package put its own link there (a resolver manager): keep it, drop the backup.
    KeepPackagesLink,
    /// Put the image's own entry back; `content` replaces its (regular file) content.
    PutBack { content: Option<String> },
    /// Runtime mode, the image's link untouched: nothing to do on disk.
    Nothing,
    /// Runtime mode, the link was replaced or removed: make it again.
    Relink,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub restore: Restore,
    /// What the user is told (a warning when a change could not be kept).
    pub warning: Option<String>,
    pub info: Option<String>,
}

/// Decide the end state. `now`: /etc/resolv.conf at the end; `runtime`: the content of the file
/// our link (or the image's runtime link) pointed at; `original`: the image's own entry (link
/// mode: what was moved to the backup; runtime mode: its link).
pub fn plan_restore(
    setup: &Setup,
    host: &str,
    now: &Found,
    runtime: Option<&str>,
    original: &Found,
) -> Outcome {
    let ours = match setup {
        Setup::Runtime { link, .. } => link.clone(),
        Setup::Link => BAKE_RESOLV.to_string(),
    };
    if let Found::Link(t) = now {
        if *t != ours {
            return Outcome {
                restore: match setup {
                    Setup::Link => Restore::KeepPackagesLink,
                    Setup::Runtime { .. } => Restore::Nothing,
                },
                warning: None,
                info: Some(format!(
                    "/etc/resolv.conf: a package made it a link to {t} during the bake; kept"
                )),
            };
        }
    }
    let left = match now {
        Found::Link(_) => runtime.unwrap_or(""),
        Found::File(c) => c.as_str(),
        Found::Missing => "",
    };
    let edit = if *now == Found::Missing {
        Edit::default()
    } else {
        Edit::between(host, left)
    };
    let removed_note = (*now == Found::Missing).then(|| {
        "/etc/resolv.conf: a package removed it during the bake; the image keeps its own"
            .to_string()
    });
    let own = match original {
        Found::File(_) => "its own /etc/resolv.conf".to_string(),
        Found::Link(t) => format!("its own /etc/resolv.conf (a link to {t}, written at boot)"),
        Found::Missing => "no /etc/resolv.conf, as the base had none".to_string(),
    };
    let (content, warning, info) = match (original, edit.is_empty()) {
        (_, true) => (None, removed_note, None),
        (Found::File(c), false) => (
            Some(edit.apply(c)),
            removed_note,
            Some(format!(
                "/etc/resolv.conf: the bake's change ({}) applied to the image's own file",
                edit.describe()
            )),
        ),
        (_, false) => (
            None,
            Some(format!(
                "/etc/resolv.conf: a package changed it during the bake ({}); the image keeps {own}, so this change is not in the image: configure it where the image's resolver takes it (e.g. Domains=/DNS= in /etc/systemd/resolved.conf, or DHCP)",
                edit.describe()
            )),
            None,
        ),
    };
    let restore = match setup {
        Setup::Link => Restore::PutBack { content },
        Setup::Runtime { .. } => {
            if matches!(now, Found::Link(t) if *t == ours) {
                Restore::Nothing
            } else {
                Restore::Relink
            }
        }
    };
    Outcome {
        restore,
        warning,
        info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "nameserver 10.255.255.53\n";
    const STUB: &str = "../run/systemd/resolve/stub-resolv.conf";

    #[test]
    fn links_into_run_are_served_from_the_tmpfs() {
        assert_eq!(
            plan_setup(&Found::Link(STUB.into())),
            Setup::Runtime {
                link: STUB.into(),
                path: "/run/systemd/resolve/stub-resolv.conf".into()
            }
        );
        assert_eq!(resolve_link(RESOLV, "/run/x/../y"), "/run/y");
        assert_eq!(
            plan_setup(&Found::Link("../run/../etc/passwd".into())),
            Setup::Link
        );
        assert_eq!(plan_setup(&Found::Link("/run".into())), Setup::Link);
        assert_eq!(
            plan_setup(&Found::File("nameserver 1.1.1.1".into())),
            Setup::Link
        );
        assert_eq!(plan_setup(&Found::Missing), Setup::Link);
    }

    #[test]
    fn an_edit_of_a_runtime_link_is_named_in_a_warning_and_the_link_kept() {
        // resolv-conf-edit: a postinst appends a search line to the stub link's target.
        let setup = plan_setup(&Found::Link(STUB.into()));
        let left = format!("{HOST}search corp.example.invalid\n");
        let o = plan_restore(
            &setup,
            HOST,
            &Found::Link(STUB.into()),
            Some(&left),
            &Found::Link(STUB.into()),
        );
        assert_eq!(o.restore, Restore::Nothing);
        let w = o.warning.unwrap();
        assert!(w.contains("+`search corp.example.invalid`"), "{w}");
        assert!(w.contains(STUB), "{w}");
        assert!(!w.contains("10.255.255.53"), "{w}");
        // `sed -i` replaced the link with a file (host lines + edit): the link comes back.
        let o = plan_restore(
            &setup,
            HOST,
            &Found::File(left.clone()),
            None,
            &Found::Link(STUB.into()),
        );
        assert_eq!(o.restore, Restore::Relink);
        assert!(o.warning.is_some());
        // Untouched: nothing to do, nothing said.
        let o = plan_restore(
            &setup,
            HOST,
            &Found::Link(STUB.into()),
            Some(HOST),
            &Found::Link(STUB.into()),
        );
        assert_eq!(
            (o.restore, o.warning, o.info),
            (Restore::Nothing, None, None)
        );
    }

    #[test]
    fn an_edit_of_a_regular_file_is_applied_to_the_images_own_file() {
        let own = "nameserver 169.254.169.253\nsearch ec2.internal\n";
        let left = format!("{HOST}search corp.example.invalid\n");
        let o = plan_restore(
            &Setup::Link,
            HOST,
            &Found::Link(BAKE_RESOLV.into()),
            Some(&left),
            &Found::File(own.into()),
        );
        let Restore::PutBack {
            content: Some(content),
        } = o.restore
        else {
            panic!("{o:?}")
        };
        assert_eq!(
            content,
            "nameserver 169.254.169.253\nsearch ec2.internal\nsearch corp.example.invalid\n"
        );
        assert!(!content.contains("10.255.255.53"));
        assert!(o.info.is_some() && o.warning.is_none());
        // Nothing changed: the original goes back as it was.
        let o = plan_restore(
            &Setup::Link,
            HOST,
            &Found::Link(BAKE_RESOLV.into()),
            Some(HOST),
            &Found::File(own.into()),
        );
        assert_eq!(o.restore, Restore::PutBack { content: None });
    }

    #[test]
    fn a_package_installing_its_own_link_keeps_it() {
        let o = plan_restore(
            &Setup::Link,
            HOST,
            &Found::Link(STUB.into()),
            None,
            &Found::File(HOST.into()),
        );
        assert_eq!(o.restore, Restore::KeepPackagesLink);
        assert!(o.warning.is_none());
    }
}
