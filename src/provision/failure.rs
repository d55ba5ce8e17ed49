//! Why a provisioning step failed, read from the output of the command that failed — the real
//! apt/dpkg/rpm/dnf run, never a trial run made before it (a simulation before `apt-get update`
//! says "not installable" about everything it has no list for). Causes the user fixes in their
//! input (a dependency nothing provides, a refused downgrade or removal, a base too small)
//! become one-line input errors (exit 2); a package's own maintainer script failing is a
//! run-time failure (exit 1) that shows what the script itself printed last. Pure.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The package manager could not satisfy these dependencies (its own lines).
    Unmet(Vec<String>),
    /// A write inside the image hit ENOSPC.
    NoSpace,
    /// The package manager refused to downgrade these packages.
    Downgrade(Vec<String>),
    /// The package manager refused to remove these (essential) packages.
    Removal(Vec<String>),
    /// A package's maintainer script (or rpm scriptlet) failed.
    Script(ScriptFailure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptFailure {
    pub package: String,
    /// `postinst`, `preinst`, `prerm`, `postrm`, or rpm's `%post`, `%pre`, ...
    pub script: String,
    /// How the tool names it: `post-installation script`, `%post scriptlet`.
    pub kind: String,
    /// `exit status 3`
    pub status: String,
    /// The script's own last lines (at most 3).
    pub lines: Vec<String>,
}

impl ScriptFailure {
    pub fn message(&self) -> String {
        let said = if self.lines.is_empty() {
            "it printed nothing".to_string()
        } else {
            format!("its last output: {}", self.lines.join(" | "))
        };
        format!(
            "{}: its {} ({}) failed ({}); {said}. Maintainer scripts run without a terminal and with stdin from /dev/null, as under CI: fix the package",
            self.package, self.kind, self.script, self.status
        )
    }
}

/// The names listed under apt's `heading` (indented lines after it).
fn apt_list(output: &str, heading: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = output.lines();
    while let Some(l) = lines.next() {
        if !l.contains(heading) {
            continue;
        }
        let mut started = false;
        for n in lines.by_ref() {
            if !n.starts_with(' ') {
                // apt may put a remark between the heading and the list.
                if started {
                    break;
                }
                continue;
            }
            started = true;
            // "  login (due to hunt)": names only, apt's remarks in parentheses dropped.
            let mut depth = 0usize;
            let plain: String = n
                .chars()
                .filter(|&c| {
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth = depth.saturating_sub(1);
                            return false;
                        }
                        _ => {}
                    }
                    depth == 0
                })
                .collect();
            out.extend(plain.split_whitespace().map(str::to_string));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// dpkg's name for a maintainer script, from its error line's wording.
fn dpkg_script(words: &str) -> Option<&'static str> {
    Some(match words {
        "post-installation" => "postinst",
        "pre-installation" => "preinst",
        "pre-removal" => "prerm",
        "post-removal" => "postrm",
        _ => return None,
    })
}

/// A line dpkg, apt or rpm print themselves (progress), not a script's own output.
fn is_tool_line(l: &str) -> bool {
    let t = l.trim_start();
    t.is_empty()
        || [
            "Setting up ",
            "Unpacking ",
            "Preparing to unpack ",
            "Selecting previously unselected",
            "(Reading database",
            "Removing ",
            "Processing triggers",
            "dpkg: ",
            "Get:",
            "Fetched ",
            "Reading package lists",
            "Building dependency tree",
            "Reading state information",
            "Verifying...",
            "Preparing...",
            "Updating / installing...",
            "Cleaning up / removing...",
        ]
        .iter()
        .any(|p| t.starts_with(p))
        || is_rpm_progress(t)
}

/// `   1:hunt-x-1.0-1   ################################# [100%]`
fn is_rpm_progress(t: &str) -> bool {
    t.contains("####") || t.ends_with("[100%]")
}

/// The script's lines just before line `at` (its output ends where the tool's error begins):
/// back to the tool's last progress line, the last three kept.
fn script_lines(lines: &[&str], at: usize, prefix_of_error_line: &str) -> Vec<String> {
    let mut said: Vec<String> = Vec::new();
    if !prefix_of_error_line.trim().is_empty() {
        said.push(prefix_of_error_line.trim().to_string());
    }
    for l in lines[..at].iter().rev() {
        if is_tool_line(l) {
            break;
        }
        said.push(l.trim().to_string());
        if said.len() >= 3 {
            break;
        }
    }
    said.reverse();
    said
}

fn script_failure(output: &str) -> Option<ScriptFailure> {
    let lines: Vec<&str> = output.lines().collect();
    // dpkg: " installed app package post-installation script subprocess returned error exit status 3"
    for (i, l) in lines.iter().enumerate() {
        let Some(p) = l.find(" script subprocess returned error ") else {
            continue;
        };
        let head: Vec<&str> = l[..p].split_whitespace().collect();
        let (Some(which), Some(pkg)) = (head.last(), head.iter().rev().nth(2)) else {
            continue;
        };
        let Some(script) = dpkg_script(which) else {
            continue;
        };
        let status = l[p + " script subprocess returned error ".len()..]
            .trim()
            .to_string();
        // The script's output ends where dpkg's "error processing" line starts (a prompt
        // without a newline shares that line).
        let err_at = lines[..i]
            .iter()
            .rposition(|x| x.contains("dpkg: error processing"))
            .unwrap_or(i);
        let prefix = lines[err_at]
            .find("dpkg: error processing")
            .map(|k| &lines[err_at][..k])
            .unwrap_or("");
        return Some(ScriptFailure {
            package: pkg.to_string(),
            script: script.to_string(),
            kind: format!("{which} script"),
            status,
            lines: script_lines(&lines, err_at, prefix),
        });
    }
    // rpm: "error: %post(app-1.0-1.noarch) scriptlet failed, exit status 3"
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let Some(rest) = t.strip_prefix("error: %") else {
            continue;
        };
        let Some((script, rest)) = rest.split_once('(') else {
            continue;
        };
        let Some((pkg, rest)) = rest.split_once(')') else {
            continue;
        };
        let Some(status) = rest.trim().strip_prefix("scriptlet failed, ") else {
            continue;
        };
        return Some(ScriptFailure {
            package: pkg.to_string(),
            script: format!("%{script}"),
            kind: format!("%{script} scriptlet"),
            status: status.to_string(),
            lines: script_lines(&lines, i, ""),
        });
    }
    None
}

/// The cause a failed command's output shows, if it is one of the known ones.
pub fn classify(output: &str) -> Option<Cause> {
    if output.contains("No space left on device") {
        return Some(Cause::NoSpace);
    }
    if output.contains("Packages were downgraded and -y was used without --allow-downgrades") {
        return Some(Cause::Downgrade(apt_list(
            output,
            "The following packages will be DOWNGRADED:",
        )));
    }
    // rpm -U: "package app-2.0-1.noarch (which is newer than app-1.0-1.noarch) is already installed"
    let rpm_newer: Vec<String> = output
        .lines()
        .filter(|l| l.contains("(which is newer than ") && l.contains("is already installed"))
        .filter_map(|l| l.trim().strip_prefix("package "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    if !rpm_newer.is_empty() {
        return Some(Cause::Downgrade(rpm_newer));
    }
    if output.contains("Essential packages were removed and -y was used")
        || output.contains("Removing essential system-critical packages is not permitted")
    {
        return Some(Cause::Removal(apt_list(
            output,
            "The following essential packages will be removed",
        )));
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
    if !unmet.is_empty() {
        return Some(Cause::Unmet(unmet));
    }
    script_failure(output).map(Cause::Script)
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
        assert_eq!(classify("E: Could not get lock /var/lib/dpkg/lock\n"), None);
    }

    #[test]
    fn a_refused_downgrade_is_named_whatever_the_dependencies() {
        // apt's real run (after `apt-get update`) on hunt-app 1.0-2 (Depends: jq) over 2.0-1.
        let out = "Reading package lists...\nThe following NEW packages will be installed:\n  jq libjq1 libonig5\nThe following packages will be DOWNGRADED:\n  hunt-app\n0 upgraded, 3 newly installed, 1 downgraded, 0 to remove and 0 not upgraded.\nE: Packages were downgraded and -y was used without --allow-downgrades.\n";
        assert_eq!(
            classify(out),
            Some(Cause::Downgrade(vec!["hunt-app".into()]))
        );
        let rpm = "\tpackage hunt-x-2.0-1.noarch (which is newer than hunt-x-1.0-1.noarch) is already installed\n";
        assert_eq!(
            classify(rpm),
            Some(Cause::Downgrade(vec!["hunt-x-2.0-1.noarch".into()]))
        );
    }

    #[test]
    fn a_failing_postinst_shows_the_scripts_own_lines() {
        let out = "Unpacking hunt-failpost (1.0-1) ...\nSetting up jq (1.6-2.1) ...\nSetting up hunt-failpost (1.0-1) ...\nchecking the config\nhunt-failpost: configuration failed\ndpkg: error processing package hunt-failpost (--configure):\n installed hunt-failpost package post-installation script subprocess returned error exit status 3\nErrors were encountered while processing:\n hunt-failpost\nE: Sub-process /usr/bin/dpkg returned an error code (1)\n";
        let Some(Cause::Script(f)) = classify(out) else {
            panic!("{:?}", classify(out))
        };
        assert_eq!(f.package, "hunt-failpost");
        assert_eq!(f.script, "postinst");
        assert_eq!(f.status, "exit status 3");
        assert_eq!(
            f.lines,
            vec!["checking the config", "hunt-failpost: configuration failed"]
        );
        assert!(f.message().contains("hunt-failpost: configuration failed"));
        assert!(f
            .message()
            .contains("its post-installation script (postinst) failed (exit status 3)"));
        // A prompt without a newline shares dpkg's error line.
        let out = "Setting up hunt-askstdin (1.0-1) ...\nAdmin e-mail: dpkg: error processing package hunt-askstdin (--configure):\n installed hunt-askstdin package post-installation script subprocess returned error exit status 1\n";
        let Some(Cause::Script(f)) = classify(out) else {
            panic!()
        };
        assert_eq!(f.lines, vec!["Admin e-mail:"]);
        let out = "Preparing to unpack .../x.deb ...\nno room for x\ndpkg: error processing archive /tmp/bakery-packages/x.deb (--install):\n new x package pre-installation script subprocess returned error exit status 1\n";
        let Some(Cause::Script(f)) = classify(out) else {
            panic!()
        };
        assert_eq!((f.package.as_str(), f.script.as_str()), ("x", "preinst"));
        let rpm = "Updating / installing...\n   1:rfail-1.0-1   ################################# [100%]\nrfail: post failed\nerror: %post(rfail-1.0-1.noarch) scriptlet failed, exit status 3\n";
        let Some(Cause::Script(f)) = classify(rpm) else {
            panic!()
        };
        assert_eq!(f.package, "rfail-1.0-1.noarch");
        assert_eq!(f.script, "%post");
        assert_eq!(f.lines, vec!["rfail: post failed"]);
    }

    #[test]
    fn refused_essential_removal_is_named() {
        let out = "WARNING: The following essential packages will be removed.\nThis should NOT be done unless you know exactly what you are doing!\n  login (due to hunt)\nE: Essential packages were removed and -y was used without --allow-remove-essential.\n";
        assert_eq!(classify(out), Some(Cause::Removal(vec!["login".into()])));
    }
}
