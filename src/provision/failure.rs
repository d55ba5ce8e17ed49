//! Why a provisioning step failed, read from its output: causes the user fixes in their input
//! (a dependency nothing provides, a base too small for the package) become one-line input
//! errors (exit 2) instead of the package manager's last words. Pure.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The package manager could not satisfy these dependencies (its own lines).
    Unmet(Vec<String>),
    /// A write inside the image hit ENOSPC.
    NoSpace,
}

/// The cause a step's output shows, if it is one of the known input problems.
pub fn classify(output: &str) -> Option<Cause> {
    if output.contains("No space left on device") {
        return Some(Cause::NoSpace);
    }
    let mut unmet: Vec<String> = Vec::new();
    for l in output.lines().map(str::trim) {
        // apt: " app : Depends: libfoo (>= 2) but it is not installable"; dnf: "nothing provides libfoo needed by app-1.0"
        let apt = l.contains("Depends:")
            && (l.contains("but it is not installable")
                || l.contains("but it is not going to be installed")
                || l.contains("but it is not available"));
        let dnf = l.contains("nothing provides ");
        if (apt || dnf) && !unmet.iter().any(|u| u == l) {
            unmet.push(l.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    (!unmet.is_empty()).then_some(Cause::Unmet(unmet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_unmet_dependencies_are_named() {
        let out = "Reading package lists...\nSome packages could not be installed.\nThe following packages have unmet dependencies:\n needy : Depends: libdoesnotexist1 (>= 2) but it is not installable\n         Depends: other but it is not going to be installed\nE: Unable to correct problems, you have held broken packages.\n";
        assert_eq!(
            classify(out),
            Some(Cause::Unmet(vec![
                "needy : Depends: libdoesnotexist1 (>= 2) but it is not installable".into(),
                "Depends: other but it is not going to be installed".into()
            ]))
        );
        let dnf = "Error:\n Problem: conflicting requests\n  - nothing provides libnothere needed by app-1-1.noarch\n";
        assert_eq!(
            classify(dnf),
            Some(Cause::Unmet(vec![
                "- nothing provides libnothere needed by app-1-1.noarch".into()
            ]))
        );
    }

    #[test]
    fn enospc_wins_and_other_failures_are_not_classified() {
        let out = "dpkg: error processing archive /tmp/x.deb (--unpack):\n cannot copy extracted data for './opt/big' to '/opt/big.dpkg-new': failed to write (No space left on device)\n";
        assert_eq!(classify(out), Some(Cause::NoSpace));
        assert_eq!(classify("dpkg: error processing package app (--configure):\n post-installation script subprocess returned error exit status 3\n"), None);
    }
}
