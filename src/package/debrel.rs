//! Debian package relationships (`Depends`, `Pre-Depends`, `Conflicts`, `Breaks`; Debian Policy
//! §7.1 for the syntax, §7.3–7.4 for conflicts and breaks) checked against an image's dpkg
//! database, for one decision: can `dpkg -i` install a step's local .deb files exactly as
//! `apt-get install ./x.deb` would, without asking apt?
//!
//! apt's answer (a simulation) costs a process that loads libapt and builds its cache, 0.1 s
//! warm and 0.3 s from a cold page cache: a fifth of a small local bake's own overhead. The
//! check here answers "yes" only in the plain case, where apt's plan is certain to be "unpack and
//! configure these packages, nothing else": every dependency already installed and satisfied,
//! nothing conflicting either way, none of the packages installed before, and a database with
//! no package in a half-done state. Anything else — an alternative only another local package
//! meets, an architecture qualifier, a versioned virtual package, a conflict even outside its
//! version range — is "ask apt", which is always correct. Pure.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::version::compare_deb;
use super::PackageInfo;

/// One alternative of a relation: `name`, optionally `(op version)`.
#[derive(Debug, PartialEq, Eq)]
struct Alt<'a> {
    name: &'a str,
    constraint: Option<(&'a str, &'a str)>,
}

/// `a (>= 1) | b`: the alternatives, or `None` when the relation has anything this check does
/// not model (an architecture qualifier or restriction list, an unknown operator).
fn alternatives(relation: &str) -> Option<Vec<Alt<'_>>> {
    relation
        .split('|')
        .map(|alt| {
            let alt = alt.trim();
            let (name, rest) = match alt.split_once('(') {
                Some((n, r)) => (n.trim(), Some(r)),
                None => (alt, None),
            };
            // name:arch, `[arch list]`, `<build profile>`: not modelled.
            if name.is_empty() || name.contains([':', '[', '<', ' ']) {
                return None;
            }
            let constraint = match rest {
                None => None,
                Some(r) => {
                    let (inner, after) = r.split_once(')')?;
                    if !after.trim().is_empty() {
                        return None;
                    }
                    let inner = inner.trim();
                    let op_len = inner
                        .find(|c: char| !matches!(c, '<' | '>' | '='))
                        .unwrap_or(inner.len());
                    let (op, version) = inner.split_at(op_len);
                    if !matches!(op, "<<" | "<=" | "=" | ">=" | ">>") {
                        return None;
                    }
                    let version = version.trim();
                    if version.is_empty() {
                        return None;
                    }
                    Some((op, version))
                }
            };
            Some(Alt { name, constraint })
        })
        .collect()
}

fn satisfies(installed: &str, (op, wanted): (&str, &str)) -> bool {
    let o = compare_deb(installed, wanted);
    match op {
        "<<" => o == Ordering::Less,
        "<=" => o != Ordering::Greater,
        "=" => o == Ordering::Equal,
        ">=" => o != Ordering::Less,
        ">>" => o == Ordering::Greater,
        _ => false,
    }
}

/// The installed packages of a dpkg status file, as far as this check needs them.
#[derive(Default)]
struct Db<'a> {
    /// Real package name → installed versions (one per architecture).
    versions: BTreeMap<&'a str, Vec<&'a str>>,
    /// Names provided by installed packages (virtual packages, unversioned use only).
    provided: BTreeSet<&'a str>,
    /// Every name an installed package conflicts with or breaks.
    conflicted: BTreeSet<&'a str>,
    /// A package in a state other than installed or gone (half-installed, unpacked,
    /// triggers-pending...): apt would act on it too.
    unsettled: bool,
}

fn names_of(field: &str) -> impl Iterator<Item = &str> {
    field.split([',', '|']).filter_map(|r| {
        r.split(['(', ':', '[', '<'])
            .next()
            .map(str::trim)
            .filter(|n| !n.is_empty())
    })
}

impl<'a> Db<'a> {
    fn parse(status: &'a str) -> Db<'a> {
        let mut db = Db::default();
        for para in super::deb822::paragraphs(status) {
            let field = |key: &str| para.field(key);
            match para.dpkg_state() {
                Some("installed") => {}
                Some("not-installed" | "config-files") => continue,
                None if field("Package").is_none() => continue,
                _ => {
                    db.unsettled = true;
                    continue;
                }
            }
            let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
                continue;
            };
            db.versions.entry(name).or_default().push(version);
            if let Some(p) = field("Provides") {
                for n in names_of(p) {
                    db.provided.insert(n);
                }
            }
            for key in ["Conflicts", "Breaks"] {
                if let Some(v) = field(key) {
                    for n in names_of(v) {
                        db.conflicted.insert(n);
                    }
                }
            }
        }
        db
    }

    fn installed(&self, name: &str) -> bool {
        self.versions.contains_key(name) || self.provided.contains(name)
    }

    fn meets(&self, alt: &Alt) -> bool {
        match alt.constraint {
            None => self.installed(alt.name),
            Some(c) => self
                .versions
                .get(alt.name)
                .is_some_and(|vs| vs.iter().all(|v| satisfies(v, c))),
        }
    }
}

/// Whether `dpkg -i` of `packages` (.deb files of one step) does exactly what apt's install of
/// them would, given the image's dpkg `status` file: see the module doc for the conditions.
/// `false` means "ask apt" and is always safe.
pub fn dpkg_alone_suffices(packages: &[PackageInfo], status: &str) -> bool {
    if packages.is_empty() {
        return false;
    }
    let db = Db::parse(status);
    if db.unsettled || db.versions.is_empty() {
        return false;
    }
    let local: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    packages.iter().all(|p| {
        let provides: Vec<&str> = p.provides.iter().flat_map(|r| names_of(r)).collect();
        let deps_met = p
            .depends
            .iter()
            .chain(&p.pre_depends)
            .all(|rel| alternatives(rel).is_some_and(|alts| alts.iter().any(|a| db.meets(a))));
        let conflicts_clear = p.conflicts.iter().flat_map(|r| names_of(r)).all(|n| {
            // A package may conflict with a virtual name it provides itself (Policy §7.6.2).
            (!db.installed(n) || provides.contains(&n))
                && !local.iter().any(|l| *l == n && *l != p.name)
        });
        let not_conflicted = !db.conflicted.contains(p.name.as_str())
            && provides.iter().all(|n| !db.conflicted.contains(n));
        !db.versions.contains_key(p.name.as_str()) && deps_met && conflicts_clear && not_conflicted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\nProvides: libc6-udeb\n\n\
Package: tomcat10\nStatus: install ok installed\nVersion: 10.1.34-0+deb12u1\nDepends: libc6\nBreaks: oldapp (<< 2)\n\n\
Package: openjdk-17-jre-headless\nStatus: install ok installed\nVersion: 17.0.13+11-1~deb12u1\nProvides: java-runtime-headless, java17-runtime-headless\n\n\
Package: removed-one\nStatus: deinstall ok config-files\nVersion: 1.0\n";

    fn deb(name: &str, depends: &[&str], conflicts: &[&str]) -> PackageInfo {
        PackageInfo {
            name: name.into(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            conflicts: conflicts.iter().map(|s| s.to_string()).collect(),
            ..PackageInfo::for_tests()
        }
    }

    #[test]
    fn an_app_whose_dependencies_are_all_installed_needs_no_apt() {
        let app = deb(
            "app",
            &["tomcat10 (>= 10.1)", "java-runtime-headless | default-jre"],
            &[],
        );
        assert!(dpkg_alone_suffices(&[app], STATUS));
        assert!(dpkg_alone_suffices(&[deb("bare", &[], &[])], STATUS));
        // A package it conflicts with is only in config-files state: gone.
        assert!(dpkg_alone_suffices(
            &[deb("app", &[], &["removed-one"])],
            STATUS
        ));
    }

    #[test]
    fn anything_apt_would_have_to_resolve_goes_to_apt() {
        let no = |p: PackageInfo| assert!(!dpkg_alone_suffices(&[p], STATUS));
        no(deb("app", &["tomcat11"], &[])); // missing: apt downloads it
        no(deb("app", &["tomcat10 (>= 11)"], &[])); // too old: apt upgrades it
        no(deb("app", &["libc6 (<< 2.0)"], &[]));
        no(deb("app", &["java-runtime-headless (>= 17)"], &[])); // versioned virtual
        no(deb("app", &["python3:any"], &[])); // architecture qualifier
        no(deb("app", &["tomcat10 (~> 1)"], &[])); // not an operator
        no(deb("app", &[], &["tomcat10"])); // conflicts with an installed package
        no(deb("app", &[], &["java-runtime-headless"])); // ... or a provided name
        no(deb("oldapp", &[], &[])); // an installed package breaks it
        no(deb("libc6", &[], &[])); // already installed: an upgrade or reinstall
        assert!(!dpkg_alone_suffices(&[], STATUS));
    }

    #[test]
    fn local_packages_that_need_or_fight_each_other_go_to_apt() {
        let a = deb("a", &["b"], &[]);
        let b = deb("b", &[], &[]);
        assert!(!dpkg_alone_suffices(&[a, b.clone()], STATUS));
        let c = deb("c", &[], &["b"]);
        assert!(!dpkg_alone_suffices(&[b, c], STATUS));
    }

    #[test]
    fn a_half_installed_database_goes_to_apt() {
        let status =
            format!("{STATUS}\nPackage: broken\nStatus: install ok half-configured\nVersion: 1\n");
        assert!(!dpkg_alone_suffices(&[deb("bare", &[], &[])], &status));
        assert!(!dpkg_alone_suffices(&[deb("bare", &[], &[])], ""));
    }

    #[test]
    fn a_package_may_conflict_with_the_virtual_name_it_provides() {
        let mut p = deb("mta-x", &[], &["mail-transport-agent"]);
        p.provides = vec!["mail-transport-agent".into()];
        assert!(dpkg_alone_suffices(&[p], STATUS));
    }

    #[test]
    fn relations_parse_as_policy_writes_them() {
        assert_eq!(
            alternatives("a (>= 1.0) | b").unwrap(),
            vec![
                Alt {
                    name: "a",
                    constraint: Some((">=", "1.0"))
                },
                Alt {
                    name: "b",
                    constraint: None
                }
            ]
        );
        assert_eq!(
            alternatives("a(<<2)").unwrap(),
            vec![Alt {
                name: "a",
                constraint: Some(("<<", "2"))
            }]
        );
        assert!(alternatives("a [amd64]").is_none());
        assert!(alternatives("a (>= )").is_none());
        assert!(alternatives("a (> 1)").is_none()); // obsolete `>`: ask apt
    }
}
