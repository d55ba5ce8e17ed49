//! A layer cache entry as an AMI (issue 18), pure: the tags that make a **layered base AMI** an
//! entry of the layer cache, read back into the same [`EntryMeta`] the local cache keeps in its
//! `<key>.json`, and the AMI's name. Keys and freshness stay [`super::layer_key`]'s.
//!
//! ## The encoding
//! An EC2 tag value holds at most 256 Unicode characters and a resource at most 50 tags (EC2
//! User Guide, "Tag restrictions"); a snapshot description 255. The keys fit one tag each; what
//! freshness needs (every apt source's Release URI and SHA-256) and the layers' package changes
//! do not, so they are one compact JSON record split over numbered tags:
//!
//! | tag | value |
//! |---|---|
//! | `bakery:layer-cache-lookup` | the lookup key (64 hex) |
//! | `bakery:layer-cache-key` | the entry key (64 hex) |
//! | `bakery:layer-cache-family` | [`family`] (64 hex): the same layers by name on the same base; a new entry supersedes its family's older ones |
//! | `bakery:layer-cache-created` | when the layers were applied (Unix seconds): the age rule |
//! | `bakery:layer-cache-layers` | the layer names, comma-separated (for people) |
//! | `bakery:layer-cache-base` | the base AMI and root snapshot the layers were applied to |
//! | `bakery:layer-cache-record` | `N`, the number of record tags |
//! | `bakery:layer-cache-record-1` … `-N` | consecutive 256-character pieces of `{"releases": [...], "package_changes": [...]}` |
//!
//! A record longer than [`MAX_RECORD_TAGS`] pieces is not cached (the bake still applies its
//! layers). An AMI whose tags do not decode (a piece missing, not JSON) is no entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::layer_key::EntryMeta;
use crate::provision::pkgdb::PackageChange;
use crate::provision::plan::AptRelease;

pub const LOOKUP_TAG: &str = "bakery:layer-cache-lookup";
pub const KEY_TAG: &str = "bakery:layer-cache-key";
pub const FAMILY_TAG: &str = "bakery:layer-cache-family";
pub const CREATED_TAG: &str = "bakery:layer-cache-created";
pub const LAYERS_TAG: &str = "bakery:layer-cache-layers";
pub const BASE_TAG: &str = "bakery:layer-cache-base";
pub const RECORD_TAG: &str = "bakery:layer-cache-record";
/// On an app AMI baked from a layered base: that layered base AMI's id (in the registering
/// region).
pub const LAYER_BASE_AMI_TAG: &str = "bakery:layer-base-ami";

/// EC2's limit on a tag value (Unicode characters).
pub const TAG_VALUE_MAX: usize = 256;
/// At most this many record pieces (6 KiB: some 40 apt sources), so the AMI keeps room for
/// bakery's other tags under EC2's 50.
pub const MAX_RECORD_TAGS: usize = 24;

/// What does not fit in one tag, as stored in the record tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    releases: Vec<AptRelease>,
    #[serde(default)]
    package_changes: Vec<PackageChange>,
}

/// Why an entry cannot be written as tags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error(
        "the layers' apt sources and package changes need {pieces} tags of {len} characters; at most {max} fit on an AMI",
        len = TAG_VALUE_MAX,
        max = MAX_RECORD_TAGS
    )]
    TooLarge { pieces: usize },
}

fn truncate(s: &str) -> String {
    s.chars().take(TAG_VALUE_MAX).collect()
}

/// The tags of a layered base AMI for entry `e` of `family` ([`family`]).
pub fn encode(e: &EntryMeta, family: &str) -> Result<BTreeMap<String, String>, TagError> {
    let record = serde_json::to_string(&Record {
        releases: e.releases.clone(),
        package_changes: e.package_changes.clone(),
    })
    .expect("a record serializes");
    let chars: Vec<char> = record.chars().collect();
    let pieces: Vec<String> = chars
        .chunks(TAG_VALUE_MAX)
        .map(|c| c.iter().collect())
        .collect();
    if pieces.len() > MAX_RECORD_TAGS {
        return Err(TagError::TooLarge {
            pieces: pieces.len(),
        });
    }
    let mut t = BTreeMap::from([
        (LOOKUP_TAG.to_string(), e.lookup.clone()),
        (KEY_TAG.to_string(), e.key.clone()),
        (FAMILY_TAG.to_string(), family.to_string()),
        (CREATED_TAG.to_string(), e.created.to_string()),
        (LAYERS_TAG.to_string(), truncate(&e.layers.join(","))),
        (BASE_TAG.to_string(), truncate(&e.base)),
        (RECORD_TAG.to_string(), pieces.len().to_string()),
    ]);
    for (i, p) in pieces.into_iter().enumerate() {
        t.insert(format!("{RECORD_TAG}-{}", i + 1), p);
    }
    Ok(t)
}

/// The entry an AMI's tags describe; `None` when they are not a whole entry. `last_used` is
/// `created` (an AMI records no use).
pub fn decode(tags: &BTreeMap<String, String>) -> Option<EntryMeta> {
    let n: usize = tags.get(RECORD_TAG)?.parse().ok()?;
    if n > MAX_RECORD_TAGS {
        return None;
    }
    let mut record = String::new();
    for i in 1..=n {
        record.push_str(tags.get(&format!("{RECORD_TAG}-{i}"))?);
    }
    let r: Record = serde_json::from_str(&record).ok()?;
    let created: i64 = tags.get(CREATED_TAG)?.parse().ok()?;
    let hex64 = |s: &String| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit());
    let (lookup, key) = (tags.get(LOOKUP_TAG)?, tags.get(KEY_TAG)?);
    if !hex64(lookup) || !hex64(key) {
        return None;
    }
    Some(EntryMeta {
        key: key.clone(),
        lookup: lookup.clone(),
        created,
        last_used: created,
        base: tags.get(BASE_TAG).cloned().unwrap_or_default(),
        layers: tags
            .get(LAYERS_TAG)
            .map(|l| {
                l.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        releases: r.releases,
        package_changes: r.package_changes,
    })
}

/// The base's identity in the lookup key: the base AMI, its root snapshot, and what the
/// layered snapshot's encryption will be (a child snapshot takes its parent's: an entry made
/// for one key never serves a bake that wants another, or none).
pub fn base_identity(image_id: &str, snapshot_id: &str, encryption: Option<&str>) -> String {
    format!(
        "ami {image_id} snapshot {snapshot_id} encryption {}",
        encryption.unwrap_or("none")
    )
}

/// The family of an entry: SHA-256 of the base's identity ([`base_identity`]), the layers'
/// names in order and `--disk-size` (bytes). Unlike the lookup key it ignores what the layers
/// hold: a bake that makes an entry deregisters its family's older entries (an edited layer's
/// old definition, a refreshed entry), which are not baked from again.
pub fn family(base: &str, layers: &[String], disk_size: Option<u64>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!(
        "{} family\n{base}\ndisk-size {disk_size:?}\n",
        super::layer_key::KEY_VERSION
    ));
    for l in layers {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The layered base AMI's name: `bakery-layers-{layers}-{first 12 of the key}-{bake id}`, in
/// AMI name characters and at most 128 of them (the bake id keeps a `--refresh-layers` of the
/// same key from colliding with the entry it replaces).
pub fn image_name(layers: &[String], key: &str, bake_id: &str) -> String {
    let short = &key[..key.len().min(12)];
    let tail = format!("-{short}-{bake_id}");
    let head = crate::naming::sanitize_name_part(&format!("bakery-layers-{}", layers.join("-")));
    let head: String = head.chars().take(128 - tail.len()).collect();
    format!("{head}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::PackageKind;
    use crate::provision::pkgdb::Action;

    fn entry(releases: Vec<AptRelease>) -> EntryMeta {
        EntryMeta {
            key: "a".repeat(64),
            lookup: "b".repeat(64),
            created: 1_790_000_000,
            last_used: 1_790_000_000,
            base: base_identity("ami-0abc", "snap-0def", None),
            layers: vec!["jvm-tomcat".into(), "extra".into()],
            releases,
            package_changes: vec![PackageChange {
                name: "openssh-server".into(),
                kind: PackageKind::Deb,
                from: "1:9.2p1-2".into(),
                to: None,
                action: Action::Remove,
            }],
        }
    }

    fn rel(uri: &str, sha: Option<&str>) -> AptRelease {
        AptRelease {
            uri: uri.into(),
            sha256: sha.map(str::to_string),
        }
    }

    #[test]
    fn an_entry_round_trips_through_tags_that_each_fit_ec2() {
        // Debian's three sources with long URIs: more than one tag value's worth.
        let releases: Vec<AptRelease> = [
            "http://deb.debian.org/debian/dists/trixie/InRelease",
            "http://deb.debian.org/debian/dists/trixie-updates/InRelease",
            "http://security.debian.org/debian-security/dists/trixie-security/InRelease",
        ]
        .iter()
        .map(|u| rel(u, Some(&"c".repeat(64))))
        .chain([rel("cdrom:[Debian]/dists/x/Release", None)])
        .collect();
        let e = entry(releases);
        let tags = encode(&e, &family("b", &e.layers, None)).unwrap();
        assert!(tags.values().all(|v| v.chars().count() <= TAG_VALUE_MAX));
        let pieces: usize = tags[RECORD_TAG].parse().unwrap();
        assert!(pieces >= 2, "{tags:?}");
        assert_eq!(tags.len(), 7 + pieces);
        assert_eq!(decode(&tags), Some(e.clone()));
        // A piece missing, or the count wrong: no entry (never a half-read freshness record).
        let mut missing = tags.clone();
        missing.remove(&format!("{RECORD_TAG}-2"));
        assert_eq!(decode(&missing), None);
        let mut short = tags.clone();
        short.insert(RECORD_TAG.into(), (pieces - 1).to_string());
        assert_eq!(decode(&short), None);
        let mut bad_key = tags.clone();
        bad_key.insert(KEY_TAG.into(), "x".into());
        assert_eq!(decode(&bad_key), None);
        // Not an entry at all (an app AMI's tags).
        assert_eq!(
            decode(&BTreeMap::from([("appversion".into(), "app-1".into())])),
            None
        );
    }

    #[test]
    fn a_record_too_large_for_the_tag_budget_is_refused() {
        let many: Vec<AptRelease> = (0..60)
            .map(|i| {
                rel(
                    &format!("http://mirror-{i}.example/dists/x/InRelease"),
                    Some(&"d".repeat(64)),
                )
            })
            .collect();
        assert!(matches!(
            encode(&entry(many), "f"),
            Err(TagError::TooLarge { .. })
        ));
        assert!(encode(&entry(vec![]), "f").is_ok());
    }

    #[test]
    fn names_say_what_the_image_is_and_fit_ami_rules() {
        let n = image_name(
            &["jvm-tomcat".into()],
            &"5f0c".repeat(16),
            "bk-0123456789ab",
        );
        assert_eq!(n, "bakery-layers-jvm-tomcat-5f0c5f0c5f0c-bk-0123456789ab");
        let long = image_name(&["x".repeat(200)], &"e".repeat(64), "bk-0123456789ab");
        assert!(long.len() <= 128, "{}", long.len());
        assert!(long.ends_with("-eeeeeeeeeeee-bk-0123456789ab"));
        crate::naming::validate_ami_name(&long).unwrap();
        assert_ne!(
            base_identity("ami-1", "snap-1", None),
            base_identity("ami-1", "snap-1", Some("arn:aws:kms:k"))
        );
        assert_ne!(
            base_identity("ami-1", "snap-1", None),
            base_identity("ami-1", "snap-2", None)
        );
    }

    #[test]
    fn a_family_is_the_layers_by_name_on_one_base_and_disk_size() {
        let l = vec!["jvm-tomcat".to_string()];
        let f = family("ami-1 snapshot s", &l, None);
        assert_eq!(f.len(), 64);
        assert_eq!(f, family("ami-1 snapshot s", &l, None));
        assert_ne!(f, family("ami-2 snapshot s", &l, None));
        assert_ne!(f, family("ami-1 snapshot s", &l, Some(8 << 30)));
        assert_ne!(f, family("ami-1 snapshot s", &["other".to_string()], None));
    }
}
