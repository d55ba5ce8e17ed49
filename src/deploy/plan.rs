//! Pure deploy decisions, no AWS: generation names (with wrap), retention, waves, batches, and
//! what a rollback restores.

use std::collections::BTreeSet;

use anyhow::Result;

use super::state::{Follows, SwapRecord};
use crate::input;

/// Generations are `CLUSTER-v000` .. `CLUSTER-v999` (Asgard); `CLUSTER` itself is a generation too.
pub const GENERATIONS: u16 = 1000;

/// The generation number of `name` in `cluster`: `Some(Some(n))` for `cluster-vNNN`,
/// `Some(None)` for the bare cluster name, `None` for an ASG of another cluster.
pub fn generation_of(cluster: &str, name: &str) -> Option<Option<u16>> {
    if name == cluster {
        return Some(None);
    }
    let rest = name.strip_prefix(cluster)?.strip_prefix("-v")?;
    if rest.len() == 3 && rest.bytes().all(|b| b.is_ascii_digit()) {
        rest.parse().ok().map(Some)
    } else {
        None
    }
}

pub fn generation_name(cluster: &str, n: u16) -> String {
    format!("{cluster}-v{n:03}")
}

/// What the plan needs to know of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gen {
    pub name: String,
    pub number: Option<u16>,
    /// Creation time (ms since the epoch): the newest generation is the last one created, not
    /// the highest number (numbers wrap after v999).
    pub created_ms: i64,
}

/// Newest first (creation time, then number).
pub fn newest_first(gens: &[Gen]) -> Vec<Gen> {
    let mut v = gens.to_vec();
    v.sort_by_key(|g| std::cmp::Reverse((g.created_ms, g.number)));
    v
}

/// The name of the next generation: one after the newest, wrapping v999 -> v000 and skipping
/// numbers still in use.
pub fn next_generation(cluster: &str, gens: &[Gen]) -> Result<String> {
    let used: BTreeSet<u16> = gens.iter().filter_map(|g| g.number).collect();
    let start = match newest_first(gens).first().map(|g| g.number) {
        Some(Some(n)) => (n + 1) % GENERATIONS,
        _ => 0,
    };
    (0..GENERATIONS)
        .map(|i| (start + i) % GENERATIONS)
        .find(|n| !used.contains(n))
        .map(|n| generation_name(cluster, n))
        .ok_or_else(|| input!("cluster `{cluster}` has all {GENERATIONS} generations in use: delete old ones first"))
}

/// Generations to delete so that `keep` remain (newest first), never one in `protect`
/// (the serving generation, the one just made).
pub fn to_delete(gens: &[Gen], keep: usize, protect: &[&str]) -> Vec<String> {
    let protected = gens
        .iter()
        .filter(|g| protect.contains(&g.name.as_str()))
        .count();
    newest_first(gens)
        .into_iter()
        .filter(|g| !protect.contains(&g.name.as_str()))
        .skip(keep.saturating_sub(protected))
        .map(|g| g.name)
        .collect()
}

/// `--waves a:b,c` -> [[a], [b, c]] (`:` separates waves, `,` regions of one wave). Every
/// region deployed must be in exactly one wave and every wave's region must be deployed.
/// Without waves: one wave of every region.
pub fn waves(spec: Option<&str>, regions: &[String]) -> Result<Vec<Vec<String>>> {
    let Some(spec) = spec else {
        return Ok(vec![regions.to_vec()]);
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for wave in spec.split(':') {
        let rs: Vec<String> = wave
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect();
        if rs.is_empty() {
            return Err(input!("--waves `{spec}`: an empty wave (waves are `:`-separated, regions of a wave `,`-separated)"));
        }
        for r in &rs {
            if !regions.contains(r) {
                return Err(input!(
                    "--waves names region {r}, which is not deployed (regions: {})",
                    regions.join(", ")
                ));
            }
            if !seen.insert(r.clone()) {
                return Err(input!("--waves names region {r} twice"));
            }
        }
        out.push(rs);
    }
    if let Some(missing) = regions.iter().find(|r| !seen.contains(*r)) {
        return Err(input!("region {missing} is in no wave of --waves `{spec}`"));
    }
    Ok(out)
}

/// How many instances to replace at once so that `min_healthy` percent of `desired` stay in
/// service (at least one).
pub fn batch_size(desired: usize, min_healthy: u8) -> usize {
    let must_stay = (desired * min_healthy as usize).div_ceil(100);
    desired.saturating_sub(must_stay).max(1)
}

/// What undoing a swap does to the launch template / ASG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// Point the ASG back at exactly this launch template version string.
    AsgVersion(String),
    /// Make this version the template's default again.
    DefaultVersion(i64),
    /// The ASG follows $Latest and our version is still the latest: delete it.
    DeleteLatest(i64),
    /// The ASG follows $Latest but a newer version exists: make a copy of the previous one the latest.
    CopyAsLatest(i64),
}

/// What rolling back `rec` restores, given the template's latest version now.
pub fn restore(rec: &SwapRecord, latest_now: i64) -> Restore {
    match rec.follows {
        Follows::Pinned => Restore::AsgVersion(rec.prev.clone()),
        Follows::Default => Restore::DefaultVersion(rec.prev_n),
        Follows::Latest if latest_now == rec.new => Restore::DeleteLatest(rec.new),
        Follows::Latest => Restore::CopyAsLatest(rec.prev_n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, created_ms: i64) -> Gen {
        Gen {
            name: name.into(),
            number: generation_of("app-prod", name).unwrap(),
            created_ms,
        }
    }

    #[test]
    fn generation_names_parse_only_their_cluster() {
        assert_eq!(generation_of("app-prod", "app-prod-v007"), Some(Some(7)));
        assert_eq!(generation_of("app-prod", "app-prod"), Some(None));
        assert_eq!(generation_of("app-prod", "app-prod-canary-v001"), None);
        assert_eq!(generation_of("app-prod", "app-prod-v07"), None);
        assert_eq!(generation_of("app-prod", "app-prod-v1000"), None);
        assert_eq!(generation_of("app", "app-prod-v001"), None);
    }

    #[test]
    fn next_generation_follows_the_newest_and_wraps_safely() {
        assert_eq!(next_generation("app-prod", &[]).unwrap(), "app-prod-v000");
        assert_eq!(
            next_generation("app-prod", &[g("app-prod", 1)]).unwrap(),
            "app-prod-v000"
        );
        assert_eq!(
            next_generation("app-prod", &[g("app-prod-v003", 1), g("app-prod-v004", 2)]).unwrap(),
            "app-prod-v005"
        );
        // v999 wraps to v000, skipping numbers still in use.
        assert_eq!(
            next_generation("app-prod", &[g("app-prod-v998", 1), g("app-prod-v999", 2)]).unwrap(),
            "app-prod-v000"
        );
        assert_eq!(
            next_generation("app-prod", &[g("app-prod-v000", 1), g("app-prod-v999", 2)]).unwrap(),
            "app-prod-v001"
        );
        // After the wrap the newest is v000 even though v999 is a higher number.
        assert_eq!(
            next_generation("app-prod", &[g("app-prod-v999", 1), g("app-prod-v000", 2)]).unwrap(),
            "app-prod-v001"
        );
        let all: Vec<Gen> = (0..1000)
            .map(|n| g(&generation_name("app-prod", n), n as i64))
            .collect();
        assert!(next_generation("app-prod", &all).is_err());
    }

    #[test]
    fn retention_keeps_the_newest_and_never_the_protected() {
        let gens = [
            g("app-prod-v001", 1),
            g("app-prod-v002", 2),
            g("app-prod-v003", 3),
            g("app-prod-v004", 4),
        ];
        assert_eq!(
            to_delete(&gens, 2, &["app-prod-v004"]),
            vec!["app-prod-v002", "app-prod-v001"]
        );
        // The serving generation is old (a rollback happened): kept, and counts toward keep.
        assert_eq!(
            to_delete(&gens, 2, &["app-prod-v004", "app-prod-v001"]),
            vec!["app-prod-v003", "app-prod-v002"]
        );
        assert_eq!(
            to_delete(&gens, 1, &["app-prod-v004", "app-prod-v003"]),
            vec!["app-prod-v002", "app-prod-v001"]
        );
        assert!(to_delete(&gens, 10, &[]).is_empty());
    }

    #[test]
    fn waves_are_colon_separated_and_cover_every_region() {
        let rs: Vec<String> = ["us-east-1", "eu-west-1", "us-west-2"]
            .map(String::from)
            .to_vec();
        assert_eq!(waves(None, &rs).unwrap(), vec![rs.clone()]);
        assert_eq!(
            waves(Some("us-east-1:eu-west-1,us-west-2"), &rs).unwrap(),
            vec![
                vec!["us-east-1".to_string()],
                vec!["eu-west-1".to_string(), "us-west-2".to_string()]
            ]
        );
        for bad in [
            "us-east-1:eu-west-1",
            "us-east-1:eu-west-1,us-west-2,ap-south-1",
            "us-east-1::eu-west-1,us-west-2",
            "us-east-1:us-east-1,eu-west-1,us-west-2",
        ] {
            let e = waves(Some(bad), &rs).unwrap_err();
            assert_eq!(
                crate::error::exit_code(&e),
                crate::error::EXIT_INPUT,
                "{bad}"
            );
        }
    }

    #[test]
    fn batches_keep_the_healthy_share_in_service() {
        assert_eq!(batch_size(10, 90), 1);
        assert_eq!(batch_size(10, 50), 5);
        assert_eq!(batch_size(4, 100), 1);
        assert_eq!(batch_size(4, 0), 4);
        assert_eq!(batch_size(3, 66), 1);
    }

    #[test]
    fn rollback_restores_exactly_what_the_swap_replaced() {
        let rec = |follows, prev: &str| SwapRecord {
            id: "dp-1".into(),
            lt: "lt-1".into(),
            follows,
            prev: prev.into(),
            prev_n: 3,
            new: 5,
            image: "ami-new".into(),
            prev_image: "ami-old".into(),
            phase: "done".into(),
        };
        assert_eq!(
            restore(&rec(Follows::Pinned, "3"), 5),
            Restore::AsgVersion("3".into())
        );
        assert_eq!(
            restore(&rec(Follows::Default, "$Default"), 5),
            Restore::DefaultVersion(3)
        );
        assert_eq!(
            restore(&rec(Follows::Latest, "$Latest"), 5),
            Restore::DeleteLatest(5)
        );
        assert_eq!(
            restore(&rec(Follows::Latest, "$Latest"), 6),
            Restore::CopyAsLatest(3)
        );
    }
}
