//! What the image's package databases say is installed, and what a bake changed in them: the
//! base's packages that were removed, upgraded or downgraded (listed in the manifest as
//! `package_changes`), and which of those changes the bake's policy refuses. Pure, except
//! [`read_dpkg`] which reads `/var/lib/dpkg/status` through [`InRoot`].
//!
//! The policy is one rule on every path (apt, the dpkg fast path, dnf/yum, rpm, the host's
//! `rpm --root`, layer steps): a base package may be downgraded only with `--allow-downgrade`
//! (recipe `allow-downgrade: true`), and removed only when the recipe names it in
//! `allow-remove:`. Aminator's `-e`/`--preserve-on-error` had no such rule; apt's own
//! `--allow-downgrades` and `--allow-remove-essential` are the model.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::package::deb822;
use crate::package::version::{compare_deb, compare_rpm};
use crate::package::PackageKind;
use crate::sys::inroot::InRoot;

/// Installed packages of one database: name (with `:arch` when one name is installed for two
/// architectures) -> version (`[epoch:]upstream[-revision]` or `[epoch:]version-release`).
pub type Installed = BTreeMap<String, String>;

/// The image's packages, per database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub deb: Installed,
    pub rpm: Installed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Remove,
    Upgrade,
    Downgrade,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Remove => "remove",
            Action::Upgrade => "upgrade",
            Action::Downgrade => "downgrade",
        })
    }
}

/// A change the bake made to a package the base had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageChange {
    pub name: String,
    pub kind: PackageKind,
    /// The base's version.
    pub from: String,
    /// The version after the bake; none when removed.
    pub to: Option<String>,
    pub action: Action,
}

impl PackageChange {
    pub fn describe(&self) -> String {
        match &self.to {
            Some(to) => format!("{} {} -> {}", self.name, self.from, to),
            None => format!("{} {}", self.name, self.from),
        }
    }
}

/// What a bake may change in the base's packages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub allow_downgrade: bool,
    /// Base packages the recipe allows to be removed (by name).
    pub allow_remove: Vec<String>,
}

/// Installed packages from a dpkg status file (`Status: install ok installed`, and the
/// half-installed states that still hold files; `config-files` and `not-installed` are gone).
pub fn parse_dpkg_status(text: &str) -> Installed {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for para in deb822::paragraphs(text) {
        let present = matches!(
            para.dpkg_state(),
            Some(
                "installed"
                    | "unpacked"
                    | "half-configured"
                    | "half-installed"
                    | "triggers-awaited"
                    | "triggers-pending"
            )
        );
        let name = para.field("Package").unwrap_or("");
        if !name.is_empty() && present {
            let arch = para.field("Architecture").unwrap_or("");
            let version = para.field("Version").unwrap_or("");
            rows.push((name.to_string(), arch.to_string(), version.to_string()));
        }
    }
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, _, _) in &rows {
        *count.entry(n.as_str()).or_default() += 1;
    }
    rows.iter()
        .map(|(n, a, v)| {
            let key = if count[n.as_str()] > 1 {
                format!("{n}:{a}")
            } else {
                n.clone()
            };
            (key, v.clone())
        })
        .collect()
}

/// Virtual packages (`Provides:`) and real names installed per a dpkg status file: what a
/// requirement on a Debian package name can be met by.
pub fn dpkg_names_and_provides(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for para in deb822::paragraphs(text) {
        let Some(name) = para.field("Package").filter(|n| !n.is_empty()) else {
            continue;
        };
        if para.dpkg_state() != Some("installed") {
            continue;
        }
        out.insert(name.to_string());
        for p in para.field("Provides").unwrap_or("").split(',') {
            if let Some(n) = p.split_whitespace().next() {
                out.insert(n.to_string());
            }
        }
    }
    out
}

/// `dpkg`'s database of the image, if it has one.
pub fn read_dpkg(fs: &InRoot) -> Option<String> {
    fs.read_string("/var/lib/dpkg/status").ok()
}

/// `NAME VERSION-RELEASE` lines (from `rpm -qa --qf '%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE}\n'`).
pub fn parse_rpm_list(text: &str) -> Installed {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, v)| {
            let v = v.trim();
            (n.to_string(), v.strip_prefix("0:").unwrap_or(v).to_string())
        })
        .collect()
}

fn compare(kind: PackageKind, a: &str, b: &str) -> Ordering {
    match kind {
        PackageKind::Deb => compare_deb(a, b),
        PackageKind::Rpm => compare_rpm(a, b),
    }
}

/// Removals, upgrades and downgrades of the base's packages, by name.
pub fn changes(before: &Snapshot, after: &Snapshot) -> Vec<PackageChange> {
    let mut out = Vec::new();
    for (kind, b, a) in [
        (PackageKind::Deb, &before.deb, &after.deb),
        (PackageKind::Rpm, &before.rpm, &after.rpm),
    ] {
        for (name, from) in b {
            let (to, action) = match a.get(name) {
                None => (None, Action::Remove),
                Some(to) => match compare(kind, to, from) {
                    Ordering::Greater => (Some(to.clone()), Action::Upgrade),
                    Ordering::Less => (Some(to.clone()), Action::Downgrade),
                    Ordering::Equal => continue,
                },
            };
            out.push(PackageChange {
                name: name.clone(),
                kind,
                from: from.clone(),
                to,
                action,
            });
        }
    }
    out
}

/// The changes the policy refuses: downgrades without `allow_downgrade`, removals of packages
/// not named in `allow_remove` (a `name:arch` key matches its plain name too).
pub fn refused<'a>(changes: &'a [PackageChange], policy: &Policy) -> Vec<&'a PackageChange> {
    changes
        .iter()
        .filter(|c| match c.action {
            Action::Upgrade => false,
            Action::Downgrade => !policy.allow_downgrade,
            Action::Remove => {
                let plain = c.name.split(':').next().unwrap_or(&c.name);
                !policy
                    .allow_remove
                    .iter()
                    .any(|a| a == &c.name || a == plain)
            }
        })
        .collect()
}

/// One line for the refused changes (of the step it is reported under), with the way to allow
/// them.
pub fn refusal_message(refused: &[&PackageChange]) -> String {
    let removed: Vec<String> = refused
        .iter()
        .filter(|c| c.action == Action::Remove)
        .map(|c| c.describe())
        .collect();
    let downgraded: Vec<String> = refused
        .iter()
        .filter(|c| c.action == Action::Downgrade)
        .map(|c| c.describe())
        .collect();
    let mut parts = Vec::new();
    if !removed.is_empty() {
        let names: Vec<&str> = refused
            .iter()
            .filter(|c| c.action == Action::Remove)
            .map(|c| c.name.split(':').next().unwrap_or(&c.name))
            .collect();
        parts.push(format!(
            "it would remove base package(s) {} (a Conflicts/Breaks/Obsoletes of what is installed, or the package manager's choice); refused: allow it in the recipe with `allow-remove: [{}]`, or fix the package's relations",
            removed.join(", "),
            names.join(", ")
        ));
    }
    if !downgraded.is_empty() {
        parts.push(format!(
            "it would downgrade base package(s) {}; refused: pass --allow-downgrade (recipe: `allow-downgrade: true`) to allow it",
            downgraded.join(", ")
        ));
    }
    parts.join("; and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: openssh-server\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: 1:9.2p1-2+deb12u3\nProvides: ssh-server\nDescription: secure shell\n more text: with colon\n\nPackage: old\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1.0\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: i386\nVersion: 2.36-9\n\nPackage: hunt-app\nStatus: install ok installed\nArchitecture: all\nVersion: 2.0-1\n";

    fn snap(deb: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            deb: deb
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            rpm: Installed::new(),
        }
    }

    #[test]
    fn dpkg_status_lists_what_is_installed() {
        let i = parse_dpkg_status(STATUS);
        assert_eq!(i["openssh-server"], "1:9.2p1-2+deb12u3");
        assert_eq!(i["libc6:amd64"], "2.36-9");
        assert_eq!(i["libc6:i386"], "2.36-9");
        assert!(!i.contains_key("old"), "config-files is not installed");
        assert_eq!(i.len(), 4);
        let names = dpkg_names_and_provides(STATUS);
        assert!(names.contains("ssh-server") && names.contains("hunt-app"));
        assert!(!names.contains("old"));
    }

    #[test]
    fn changes_are_removals_upgrades_and_downgrades_of_base_packages() {
        let before = snap(&[
            ("openssh-server", "1:9.2p1-2+deb12u3"),
            ("hunt-app", "2.0-1"),
            ("curl", "7.88.1-10+deb12u8"),
            ("same", "1"),
        ]);
        let after = snap(&[
            ("hunt-app", "1.0-2"),
            ("curl", "7.88.1-10+deb12u12"),
            ("same", "1"),
            ("jq", "1.6-2.1"),
        ]);
        let c = changes(&before, &after);
        let got: Vec<(String, Action)> = c.iter().map(|c| (c.name.clone(), c.action)).collect();
        assert_eq!(
            got,
            vec![
                ("curl".to_string(), Action::Upgrade),
                ("hunt-app".to_string(), Action::Downgrade),
                ("openssh-server".to_string(), Action::Remove),
            ]
        );
        assert_eq!(c[2].to, None);
        let strict = Policy::default();
        let r = refused(&c, &strict);
        assert_eq!(r.len(), 2);
        let msg = refusal_message(&r);
        assert!(msg.contains("allow-remove: [openssh-server]"), "{msg}");
        assert!(msg.contains("--allow-downgrade"), "{msg}");
        assert!(msg.contains("hunt-app 2.0-1 -> 1.0-2"), "{msg}");
        let lenient = Policy {
            allow_downgrade: true,
            allow_remove: vec!["openssh-server".into()],
        };
        assert!(refused(&c, &lenient).is_empty());
    }

    #[test]
    fn rpm_list_drops_the_zero_epoch() {
        let i = parse_rpm_list("hunt-elf 0:1.0-1\nfoo 2:3.1-4\n");
        assert_eq!(i["hunt-elf"], "1.0-1");
        assert_eq!(i["foo"], "2:3.1-4");
    }
}
