//! Merging the tags plugins return: they add to the image's tags but never replace the ones
//! bakery itself sets. Pure.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};

use crate::naming;

/// Tags bakery sets that no plugin may set.
pub const PROTECTED_TAGS: [&str; 7] = [
    "appversion",
    "base_ami_id",
    "base_ami_name",
    "base_ami_version",
    "creator",
    "creation_time",
    "bakery:bake-id",
];

/// Prefixes reserved the same way: Aminator's `base_ami_*` and bakery's own `bakery:*`.
const PROTECTED_PREFIXES: [&str; 2] = ["base_ami_", "bakery:"];

pub fn is_protected(key: &str) -> bool {
    PROTECTED_TAGS.contains(&key) || PROTECTED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Add `plugin`'s tags to `merged` (a later plugin's value wins over an earlier one's) and check
/// the result against AWS limits; the error names the plugin and the key.
pub fn merge(
    merged: &mut BTreeMap<String, String>,
    plugin: &str,
    tags: BTreeMap<String, String>,
) -> Result<()> {
    if let Some(key) = tags.keys().find(|k| is_protected(k)) {
        return Err(anyhow!(
            "plugin {plugin} tried to set tag `{key}`, which bakery sets itself (appversion, base_ami_*, creator, creation_time, bakery:*); use another key"
        ));
    }
    merged.extend(tags);
    naming::validate_tags(merged)
        .map_err(|e| anyhow!("plugin {plugin}: its tags are not valid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn later_plugins_win_and_protected_keys_are_refused() {
        let mut m = BTreeMap::new();
        merge(&mut m, "a", tags(&[("scan", "pending"), ("team", "x")])).unwrap();
        merge(&mut m, "b", tags(&[("scan", "passed")])).unwrap();
        assert_eq!(m, tags(&[("scan", "passed"), ("team", "x")]));
        for key in [
            "appversion",
            "base_ami_id",
            "base_ami_arch",
            "creator",
            "creation_time",
            "bakery:bake-id",
            "bakery:other",
        ] {
            let e = merge(&mut m, "sneaky", tags(&[(key, "v")]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("plugin sneaky tried to set tag `{key}`")),
                "{e}"
            );
        }
        assert!(!is_protected("AppVersion_note") && !is_protected("build_job"));
    }

    #[test]
    fn merged_tags_are_checked_against_aws_limits() {
        let mut m = BTreeMap::new();
        let e = merge(&mut m, "long", tags(&[("k", &"v".repeat(300))]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("plugin long: its tags are not valid: tag `k` value is 300 characters"),
            "{e}"
        );
        let mut m = BTreeMap::new();
        assert!(merge(&mut m, "aws", tags(&[("aws:x", "v")])).is_err());
    }
}
