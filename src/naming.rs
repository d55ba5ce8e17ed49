//! Aminator-style image names and tags, and the AWS limits they must respect. Pure functions.

use std::collections::BTreeMap;

use crate::package::PackageInfo;

/// AWS limits checked before anything is created.
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;
pub const MAX_AMI_NAME: usize = 128;
pub const MIN_AMI_NAME: usize = 3;

/// Characters EC2 accepts in an AMI name: letters, digits, `( ) [ ] space . / - ' @ _`.
pub fn is_ami_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c)
}

/// Replace what an AMI name cannot carry (`+`, `~`, `:` from package versions) by `_`.
pub fn sanitize_name_part(s: &str) -> String {
    s.chars()
        .map(|c| if is_ami_name_char(c) { c } else { '_' })
        .collect()
}

/// `{name}-{version}-{release}-{arch}-{YYYYMMDDHHMM}`; the release is left out when the package has none.
pub fn image_name(pkg: &PackageInfo, stamp: &str) -> String {
    // A package named without a version pin has no version or architecture before the bake:
    // its name is `{package}-{stamp}` (empty parts are left out).
    let parts: Vec<&str> = [
        pkg.name.as_str(),
        pkg.version.as_str(),
        pkg.release.as_str(),
        pkg.arch.as_str(),
        stamp,
    ]
    .into_iter()
    .filter(|p| !p.is_empty())
    .collect();
    let name = sanitize_name_part(&parts.join("-"));
    truncate_keeping_suffix(&name, stamp, MAX_AMI_NAME)
}

/// Keep the timestamp (what makes names unique) when a long package name must be cut.
fn truncate_keeping_suffix(name: &str, suffix: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let head_len = max - suffix.len() - 1;
    format!("{}-{suffix}", &name[..head_len])
}

/// `{name}-{version}-{release}`, the appversion tag Asgard and Aminator users key on.
pub fn appversion(pkg: &PackageInfo) -> String {
    if pkg.release.is_empty() {
        format!("{}-{}", pkg.name, pkg.version)
    } else {
        format!("{}-{}-{}", pkg.name, pkg.version, pkg.release)
    }
}

/// UTC time as YYYYMMDDHHMM, the suffix Aminator puts on every name.
pub fn stamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// Build job, number and URL from whichever CI is running us (Jenkins, GitHub Actions, GitLab).
pub fn ci_tags(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    let mut tags = BTreeMap::new();
    if let Some(job) = get("JOB_NAME") {
        tags.insert("build_job".into(), job);
        if let Some(n) = get("BUILD_NUMBER") {
            tags.insert("build_number".into(), n);
        }
        if let Some(u) = get("BUILD_URL") {
            tags.insert("build_url".into(), u);
        }
    } else if let Some(repo) = get("GITHUB_REPOSITORY") {
        let workflow = get("GITHUB_WORKFLOW").unwrap_or_default();
        tags.insert(
            "build_job".into(),
            if workflow.is_empty() {
                repo.clone()
            } else {
                format!("{repo}/{workflow}")
            },
        );
        if let Some(run) = get("GITHUB_RUN_ID") {
            let server = get("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
            tags.insert(
                "build_url".into(),
                format!("{server}/{repo}/actions/runs/{run}"),
            );
            tags.insert(
                "build_number".into(),
                get("GITHUB_RUN_NUMBER").unwrap_or(run),
            );
        }
    } else if let Some(job) = get("CI_JOB_NAME") {
        let project = get("CI_PROJECT_PATH")
            .map(|p| format!("{p}/"))
            .unwrap_or_default();
        tags.insert("build_job".into(), format!("{project}{job}"));
        if let Some(n) = get("CI_PIPELINE_ID") {
            tags.insert("build_number".into(), n);
        }
        if let Some(u) = get("CI_JOB_URL") {
            tags.insert("build_url".into(), u);
        }
    } else if let Some(n) = get("BUILD_NUMBER") {
        tags.insert("build_number".into(), n);
    }
    tags
}

/// A tag set EC2 would refuse (EC2 User Guide, "Tag restrictions"): the message names the
/// offending tag and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("{0} tags, but AWS allows at most {max} per resource (snapshot, AMI); drop some (--tag or the recipe's `tags:`)", max = MAX_TAGS)]
    TooMany(usize),
    #[error("a tag key is empty; write tags as KEY=VALUE")]
    EmptyKey,
    #[error("tag key `{key}…` is {len} characters; AWS allows at most {max}", max = MAX_TAG_KEY)]
    KeyTooLong { key: String, len: usize },
    #[error("tag `{key}` value is {len} characters; AWS allows at most {max}", max = MAX_TAG_VALUE)]
    ValueTooLong { key: String, len: usize },
    #[error("tag key `{0}` starts with `aws:`, which AWS reserves")]
    Reserved(String),
    #[error("tag `{0}` contains a control character")]
    ControlCharacter(String),
}

/// Check a tag set against EC2's limits.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError::TooMany(tags.len()));
    }
    for (k, v) in tags {
        if k.is_empty() {
            return Err(TagError::EmptyKey);
        }
        if k.chars().count() > MAX_TAG_KEY {
            return Err(TagError::KeyTooLong {
                key: short(k),
                len: k.chars().count(),
            });
        }
        if v.chars().count() > MAX_TAG_VALUE {
            return Err(TagError::ValueTooLong {
                key: short(k),
                len: v.chars().count(),
            });
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(TagError::Reserved(k.clone()));
        }
        if k.chars().chain(v.chars()).any(char::is_control) {
            return Err(TagError::ControlCharacter(short(k)));
        }
    }
    Ok(())
}

/// The tag recording a bake's [`bake_key`] on its snapshots and AMIs: an AMI of the same name
/// is reused only when this tag matches (see [`name_verdict`]).
pub const BAKE_KEY_TAG: &str = "bakery:bake-key";

/// The full tag set of one resource a bake writes (the snapshot at StartSnapshot or
/// CreateSnapshot, the AMI, each regional copy and its snapshots): the image tags (Aminator's,
/// CI's, the user's, plugins', `bakery:bake-key`) plus `bakery:bake-id=<bake_id>` and
/// `bakery:bake-state=pending`. The writers and the up-front limit check both use this one
/// function, so no tag bakery writes goes uncounted (AWS: 50 tags per resource, EC2 User Guide
/// "Tag restrictions").
pub fn resource_tags(image: &BTreeMap<String, String>, bake_id: &str) -> BTreeMap<String, String> {
    let mut out = image.clone();
    out.insert(crate::aws::BAKE_ID_TAG.to_string(), bake_id.to_string());
    out.insert(
        crate::aws::BAKE_STATE_TAG.to_string(),
        "pending".to_string(),
    );
    out
}

/// What a bake's image is made of, for [`bake_key`]: each part a stable text (no bake id, no
/// scratch path, no time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BakeKeyInput {
    /// The base's identity: `ami-…/snap-…` for a base AMI, path, size and mtime for a file.
    pub base: String,
    /// One line per package: kind, name, version and the file's SHA-256.
    pub packages: Vec<String>,
    /// One line per provisioning step (layers), files by their SHA-256.
    pub steps: Vec<String>,
    /// Recipe options that change the image (package policy, plugins).
    pub options: Vec<String>,
    /// The user's tags (they end up on the AMI).
    pub tags: BTreeMap<String, String>,
}

/// The bake key: SHA-256 (hex) of everything that makes the image what it is. Two bakes with
/// equal keys make the same image; an AMI carrying this key in [`BAKE_KEY_TAG`] may be reused.
pub fn bake_key(input: &BakeKeyInput) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |label: &str, v: &str| {
        // Length-prefixed, so no two different inputs serialize alike.
        h.update(format!("{label}:{}:", v.len()));
        h.update(v.as_bytes());
    };
    field("base", &input.base);
    for p in &input.packages {
        field("package", p);
    }
    for s in &input.steps {
        field("step", s);
    }
    for o in &input.options {
        field("option", o);
    }
    for (k, v) in &input.tags {
        field("tag", &format!("{k}={v}"));
    }
    hex::encode(h.finalize())
}

/// How many names [`attempt_name`] tries before giving up.
pub const MAX_NAME_ATTEMPTS: u32 = 20;

/// The name of attempt `n` (1-based) for `name`: `name` itself first, then `name-2`, `name-3`…
/// (Aminator's attempt suffix; kept within AMI name limits by cutting the head).
pub fn attempt_name(name: &str, n: u32) -> String {
    if n <= 1 {
        return name.to_string();
    }
    let suffix = format!("-{n}");
    if name.len() + suffix.len() <= MAX_AMI_NAME {
        format!("{name}{suffix}")
    } else {
        format!("{}{suffix}", &name[..MAX_AMI_NAME - suffix.len()])
    }
}

/// What an existing AMI of the wanted name means for a bake with key `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameVerdict {
    /// No AMI has this name: register under it.
    Free,
    /// The AMI was made by the same bake (equal [`BAKE_KEY_TAG`]): reuse it.
    Same,
    /// Another bake's AMI (other key, or none recorded): try the next name.
    Taken,
}

/// Decide on one name: `existing` is `None` when no AMI has it, else that AMI's bake key tag.
pub fn name_verdict(existing: Option<Option<&str>>, key: &str) -> NameVerdict {
    match existing {
        None => NameVerdict::Free,
        Some(Some(k)) if k == key => NameVerdict::Same,
        Some(_) => NameVerdict::Taken,
    }
}

/// An AMI name EC2 would refuse (EC2 API reference, RegisterImage `Name`: 3-128 characters of
/// letters, digits and `( ) [ ] space . / - ' @ _`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmiNameError {
    #[error("image name `{name}` is {len} characters; AWS needs {min} to {max}", min = MIN_AMI_NAME, max = MAX_AMI_NAME)]
    Length { name: String, len: usize },
    #[error("image name `{name}` contains `{c}`; AWS allows letters, digits and ()[] ./-'@_")]
    Character { name: String, c: char },
}

/// Check a (user-given or computed) AMI name against EC2's rules.
pub fn validate_ami_name(name: &str) -> Result<(), AmiNameError> {
    let n = name.chars().count();
    if !(MIN_AMI_NAME..=MAX_AMI_NAME).contains(&n) {
        return Err(AmiNameError::Length {
            name: short(name),
            len: n,
        });
    }
    if let Some(c) = name.chars().find(|c| !is_ami_name_char(*c)) {
        return Err(AmiNameError::Character {
            name: name.to_string(),
            c,
        });
    }
    Ok(())
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Tags an image of a bake gets (Aminator's set: `appversion`, `base_ami_id`,
/// `base_ami_name`, `base_ami_version`, `creator`, `creation_time`), then CI's build tags, then
/// the user's tags, which win.
pub fn image_tags(
    app: Option<&PackageInfo>,
    base: &crate::manifest::BaseSummary,
    creation_time: &str,
    user_tags: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    if let Some(p) = app {
        tags.insert("appversion".into(), appversion(p));
    }
    tags.insert("base_ami_id".into(), base.image.clone());
    tags.insert("base_ami_name".into(), base.name.clone());
    tags.insert("base_ami_version".into(), base.version.clone());
    tags.insert("creator".into(), crate::context::creator(env));
    tags.insert("creation_time".into(), creation_time.into());
    tags.extend(ci_tags(env));
    tags.extend(user_tags.clone());
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::PackageKind;

    fn pkg(name: &str, version: &str, release: &str, arch: &str) -> PackageInfo {
        PackageInfo {
            kind: PackageKind::Deb,
            path: "x.deb".into(),
            name: name.into(),
            version: version.into(),
            release: release.into(),
            epoch: None,
            arch: arch.into(),
            ..PackageInfo::for_tests()
        }
    }

    #[test]
    fn a_name_without_version_or_arch_leaves_those_parts_out() {
        assert_eq!(
            image_name(&pkg("jq", "", "", ""), "202611250000"),
            "jq-202611250000"
        );
        assert_eq!(
            image_name(&pkg("jq", "1.6", "2.1", ""), "202611250000"),
            "jq-1.6-2.1-202611250000"
        );
    }

    #[test]
    fn names_follow_aminator() {
        let p = pkg("helloworld", "1.2", "3", "all");
        assert_eq!(
            image_name(&p, "202611251830"),
            "helloworld-1.2-3-all-202611251830"
        );
        assert_eq!(appversion(&p), "helloworld-1.2-3");
        let native = pkg("tool", "2.0", "", "amd64");
        assert_eq!(
            image_name(&native, "202611251830"),
            "tool-2.0-amd64-202611251830"
        );
        assert_eq!(appversion(&native), "tool-2.0");
    }

    #[test]
    fn names_are_made_valid_for_ec2() {
        let p = pkg("app", "1.0+dfsg~rc1", "2", "all");
        let n = image_name(&p, "202601010000");
        assert_eq!(n, "app-1.0_dfsg_rc1-2-all-202601010000");
        validate_ami_name(&n).unwrap();
        let long = pkg(&"x".repeat(200), "1", "1", "all");
        let n = image_name(&long, "202601010000");
        assert_eq!(n.len(), MAX_AMI_NAME);
        assert!(n.ends_with("-202601010000"));
        validate_ami_name(&n).unwrap();
    }

    #[test]
    fn ami_name_rules() {
        assert!(validate_ami_name("ab").is_err());
        assert!(validate_ami_name("app*1")
            .unwrap_err()
            .to_string()
            .contains("`*`"));
        assert!(validate_ami_name("app (v1) [x] it's@home_/.-").is_ok());
    }

    #[test]
    fn stamp_is_utc_minutes() {
        let t = time::macros::datetime!(2026-11-25 18:30:59 +02:00);
        assert_eq!(stamp(t), "202611251630");
    }

    #[test]
    fn tag_limits() {
        let mut t = BTreeMap::new();
        t.insert("k".to_string(), "v".repeat(256));
        validate_tags(&t).unwrap();
        t.insert("k".to_string(), "v".repeat(257));
        assert!(validate_tags(&t)
            .unwrap_err()
            .to_string()
            .contains("at most 256"));
        let mut t = BTreeMap::new();
        t.insert("k".repeat(129), "v".into());
        assert!(validate_tags(&t)
            .unwrap_err()
            .to_string()
            .contains("at most 128"));
        let many: BTreeMap<_, _> = (0..51)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(validate_tags(&many)
            .unwrap_err()
            .to_string()
            .contains("at most 50"));
        let mut t = BTreeMap::new();
        t.insert("aws:x".to_string(), "v".into());
        assert!(validate_tags(&t)
            .unwrap_err()
            .to_string()
            .contains("reserves"));
    }

    #[test]
    fn ci_variables_become_tags() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let j = ci_tags(&env(&[
            ("JOB_NAME", "app-build"),
            ("BUILD_NUMBER", "42"),
            ("BUILD_URL", "https://ci/job/42/"),
        ]));
        assert_eq!(j["build_job"], "app-build");
        assert_eq!(j["build_number"], "42");
        assert_eq!(j["build_url"], "https://ci/job/42/");
        let g = ci_tags(&env(&[
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_WORKFLOW", "bake"),
            ("GITHUB_RUN_ID", "99"),
            ("GITHUB_RUN_NUMBER", "7"),
        ]));
        assert_eq!(g["build_job"], "o/r/bake");
        assert_eq!(g["build_number"], "7");
        assert_eq!(g["build_url"], "https://github.com/o/r/actions/runs/99");
        let l = ci_tags(&env(&[
            ("CI_JOB_NAME", "bake"),
            ("CI_PROJECT_PATH", "g/p"),
            ("CI_PIPELINE_ID", "5"),
        ]));
        assert_eq!(l["build_job"], "g/p/bake");
        assert!(ci_tags(&env(&[])).is_empty());
    }

    #[test]
    fn every_resource_tag_bakery_writes_is_counted() {
        // 41 user tags + bakery's 9 (6 Aminator/CI + bake-key + bake-id + bake-state) = 50.
        let mut image: BTreeMap<String, String> = (0..47)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        image.insert(BAKE_KEY_TAG.into(), "0".repeat(64));
        let all = resource_tags(&image, "bk-1");
        assert_eq!(all.len(), 50);
        assert_eq!(all[crate::aws::BAKE_ID_TAG], "bk-1");
        assert_eq!(all[crate::aws::BAKE_STATE_TAG], "pending");
        assert!(validate_tags(&all).is_ok());
        image.insert("one-more".into(), "x".into());
        assert_eq!(
            validate_tags(&resource_tags(&image, "bk-1")),
            Err(TagError::TooMany(51))
        );
        // The caller's stale bake id never survives, nor adds a tag.
        image.insert(crate::aws::BAKE_ID_TAG.into(), "old".into());
        assert_eq!(resource_tags(&image, "bk-2").len(), 51);
    }

    #[test]
    fn the_bake_key_changes_with_every_input_and_only_with_them() {
        let a = BakeKeyInput {
            base: "ami-a/snap-a".into(),
            packages: vec!["deb tiny 1.0-1 sha256:aa".into()],
            steps: vec!["run x".into()],
            options: vec![],
            tags: BTreeMap::from([("team".to_string(), "payments".to_string())]),
        };
        let k = bake_key(&a);
        assert_eq!(k.len(), 64);
        assert_eq!(k, bake_key(&a.clone()));
        let other_base = BakeKeyInput {
            base: "ami-b/snap-b".into(),
            ..a.clone()
        };
        let other_pkg = BakeKeyInput {
            packages: vec!["deb tiny 1.0-1 sha256:ab".into()],
            ..a.clone()
        };
        let other_step = BakeKeyInput {
            steps: vec![],
            ..a.clone()
        };
        let other_tags = BakeKeyInput {
            tags: BTreeMap::new(),
            ..a.clone()
        };
        let other_opts = BakeKeyInput {
            options: vec!["allow-downgrade".into()],
            ..a.clone()
        };
        // A field's text moved to the next field is another input.
        let shifted = BakeKeyInput {
            packages: vec![],
            steps: vec!["deb tiny 1.0-1 sha256:aa".into(), "run x".into()],
            ..a.clone()
        };
        for o in [
            other_base, other_pkg, other_step, other_tags, other_opts, shifted,
        ] {
            assert_ne!(bake_key(&o), k, "{o:?}");
        }
    }

    #[test]
    fn a_name_is_reused_only_for_the_same_bake_and_otherwise_gets_an_attempt_suffix() {
        assert_eq!(name_verdict(None, "k"), NameVerdict::Free);
        assert_eq!(name_verdict(Some(Some("k")), "k"), NameVerdict::Same);
        assert_eq!(name_verdict(Some(Some("j")), "k"), NameVerdict::Taken);
        // An AMI without a key (another tool's, an older bakery's) is never taken for ours.
        assert_eq!(name_verdict(Some(None), "k"), NameVerdict::Taken);
        let n = "tiny-1.0-1-all-202611300912";
        assert_eq!(attempt_name(n, 1), n);
        assert_eq!(attempt_name(n, 2), format!("{n}-2"));
        let long = "a".repeat(MAX_AMI_NAME);
        let cut = attempt_name(&long, 12);
        assert_eq!(cut.len(), MAX_AMI_NAME);
        assert!(cut.ends_with("a-12"));
        assert!(validate_ami_name(&cut).is_ok());
    }
}
