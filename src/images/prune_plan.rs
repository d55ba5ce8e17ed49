//! Which AMIs of an app `bakery images prune` removes, and why each other one stays. Pure: the
//! caller gathers the images and what uses them (src/images/usage.rs), this decides.
//!
//! An image is kept when it is among the newest `keep`, when anything uses it (a launch template
//! version an ASG resolves to, an ASG's launch configuration, an instance that is pending,
//! running, stopping or stopped), or when it is not `available` (a bake may be registering it).
//! A deleted image's snapshots go with it unless an image that stays also uses them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// One of the app's images in a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub image_id: String,
    pub name: String,
    /// ISO 8601 (as DescribeImages reports it): sorts by time as text.
    pub created: String,
    pub state: String,
    pub snapshots: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub image_id: String,
    pub name: String,
    pub created: String,
    pub action: Action,
    /// Why it is kept (all reasons), or why it may go.
    pub reasons: Vec<String>,
    /// Snapshots deleted with the image (empty when kept).
    pub delete_snapshots: Vec<String>,
    /// Snapshots of a deleted image that stay, with the image that still uses each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep_snapshots: Vec<String>,
}

impl Decision {
    /// The decision for `c`, its snapshots not settled yet ([`settle_snapshots`]).
    fn of(c: &Candidate, action: Action, reasons: Vec<String>) -> Decision {
        Decision {
            image_id: c.image_id.clone(),
            name: c.name.clone(),
            created: c.created.clone(),
            action,
            reasons,
            delete_snapshots: vec![],
            keep_snapshots: vec![],
        }
    }
}

/// Whether an image belongs to `app`: its `appversion` tag is `{app}-{version}[-{release}]` and the
/// version starts with a digit (so app `web` does not take `web-admin-1.0-1`).
pub fn is_app_image(app: &str, appversion: &str) -> bool {
    appversion
        .strip_prefix(app)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|v| v.chars().next())
        .is_some_and(|c| c.is_ascii_digit())
}

/// Newest first: creation time, then name, then id (descending), so ties are decided the same way every run.
fn newest_first(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.created
        .cmp(&a.created)
        .then_with(|| b.name.cmp(&a.name))
        .then_with(|| b.image_id.cmp(&a.image_id))
}

/// Decide for every candidate. `in_use` maps image ids to what uses them (one line each);
/// `other_images` are the region's other images of ours (any app) with their snapshots, whose
/// snapshots must survive.
pub fn plan(
    candidates: &[Candidate],
    keep: usize,
    in_use: &BTreeMap<String, Vec<String>>,
    other_images: &[(String, Vec<String>)],
) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| newest_first(a, b));
    let mut decisions: Vec<Decision> = sorted
        .iter()
        .enumerate()
        .map(|(rank, c)| {
            let mut reasons = Vec::new();
            if rank < keep {
                reasons.push(format!(
                    "newest {} of {} (--keep {keep})",
                    rank + 1,
                    sorted.len()
                ));
            }
            if let Some(uses) = in_use.get(&c.image_id) {
                reasons.extend(uses.iter().map(|u| format!("in use: {u}")));
            }
            if c.state != "available" {
                reasons.push(format!(
                    "state {}: only available images are pruned",
                    c.state
                ));
            }
            let action = if reasons.is_empty() {
                Action::Delete
            } else {
                Action::Keep
            };
            if action == Action::Delete {
                reasons.push(format!("older than the newest {keep} and not in use"));
            }
            Decision::of(c, action, reasons)
        })
        .collect();

    settle_snapshots(&mut decisions, &sorted, other_images);
    decisions
}

/// A deleted image's snapshots go with it, unless an image that stays (`decisions` zipped with
/// `images`, or one of `other_images`) also uses them.
fn settle_snapshots(
    decisions: &mut [Decision],
    sorted: &[&Candidate],
    other_images: &[(String, Vec<String>)],
) {
    // Snapshots stay when any image that stays uses them.
    let staying: BTreeMap<String, String> = decisions
        .iter()
        .zip(sorted)
        .filter(|(d, _)| d.action == Action::Keep)
        .flat_map(|(d, c)| {
            c.snapshots
                .iter()
                .map(move |s| (s.clone(), d.image_id.clone()))
        })
        .chain(
            other_images
                .iter()
                .flat_map(|(id, snaps)| snaps.iter().map(move |s| (s.clone(), id.clone()))),
        )
        .collect();
    for (d, c) in decisions.iter_mut().zip(sorted) {
        if d.action != Action::Delete {
            continue;
        }
        let mut seen = BTreeSet::new();
        for s in c.snapshots.iter().filter(|s| seen.insert(s.as_str())) {
            match staying.get(s.as_str()) {
                Some(other) => d.keep_snapshots.push(format!("{s} (also used by {other})")),
                None => d.delete_snapshots.push(s.clone()),
            }
        }
    }
}

/// A layered base AMI: an entry of the layer cache (tagged `bakery:layer-cache-lookup`, see
/// `pipeline::source::layer_tags`), listed by `images prune` as its own kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerCandidate {
    pub image: Candidate,
    /// Its lookup key: `images prune` keeps the newest entry of each.
    pub lookup: String,
    /// Its family (the same layers by name on the same base): a bake's new entry supersedes
    /// the older entries of its family, whatever their layer definitions were.
    pub family: String,
    /// When its layers were applied (Unix seconds, its `bakery:layer-cache-created` tag).
    pub created_unix: i64,
    /// Tagged `bakery:bake-state=complete`; otherwise a bake is still making it (or died
    /// making it: `bakery gc` removes it), and it neither supersedes nor is pruned.
    pub complete: bool,
}

/// Newest first among layer cache entries: when the layers were applied, then the image id
/// (descending) — the order a bake picks its entry by.
pub fn newest_layer_first(a: &LayerCandidate, b: &LayerCandidate) -> std::cmp::Ordering {
    b.created_unix
        .cmp(&a.created_unix)
        .then_with(|| b.image.image_id.cmp(&a.image.image_id))
}

/// Which entries replace each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supersede {
    /// Those of one lookup key (`images prune`: a bake may still start from the newest entry
    /// of any lookup key).
    ByLookup,
    /// Those of one family (a bake that made an entry: the older definitions of its layers).
    ByFamily,
}

/// Decide for every layered base AMI: the newest complete entry of each group (`by`) stays
/// (bakes start from it), as does any image in use (`in_use`, the same rules as an app's
/// images), not complete, or not `available`; an entry superseded by a newer one of its group
/// goes, with its snapshots unless an image that stays (or one of `other_images`) uses them.
/// `--keep` does not apply: an older entry of the same layers is never baked from again.
pub fn plan_layer_cache(
    candidates: &[LayerCandidate],
    in_use: &BTreeMap<String, Vec<String>>,
    other_images: &[(String, Vec<String>)],
    by: Supersede,
) -> Vec<Decision> {
    fn group_of(c: &LayerCandidate, by: Supersede) -> String {
        match by {
            Supersede::ByLookup => c.lookup.clone(),
            Supersede::ByFamily => c.family.clone(),
        }
    }
    let mut sorted: Vec<&LayerCandidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| {
        group_of(a, by)
            .cmp(&group_of(b, by))
            .then_with(|| newest_layer_first(a, b))
    });
    let mut newest: BTreeMap<String, &str> = BTreeMap::new();
    for c in sorted.iter().filter(|c| c.complete) {
        newest
            .entry(group_of(c, by))
            .or_insert(c.image.image_id.as_str());
    }
    let what = match by {
        Supersede::ByLookup => "lookup key",
        Supersede::ByFamily => "layers on this base",
    };
    let mut decisions: Vec<Decision> = sorted
        .iter()
        .map(|lc| {
            let c = &lc.image;
            let g = group_of(lc, by);
            let short: String = g.chars().take(12).collect();
            let newer = newest.get(&g).copied().unwrap_or("-");
            let mut reasons = Vec::new();
            if newer == c.image_id {
                reasons.push(format!("newest layer cache entry of {what} {short}"));
            }
            if !lc.complete {
                reasons.push("not complete: a bake is still making it".to_string());
            }
            if let Some(uses) = in_use.get(&c.image_id) {
                reasons.extend(uses.iter().map(|u| format!("in use: {u}")));
            }
            if c.state != "available" {
                reasons.push(format!(
                    "state {}: only available images are pruned",
                    c.state
                ));
            }
            let action = if reasons.is_empty() {
                reasons.push(format!(
                    "layer cache entry superseded by {newer} ({what} {short}) and not in use"
                ));
                Action::Delete
            } else {
                Action::Keep
            };
            Decision::of(c, action, reasons)
        })
        .collect();
    let images: Vec<&Candidate> = sorted.iter().map(|lc| &lc.image).collect();
    settle_snapshots(&mut decisions, &images, other_images);
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, created: &str, snaps: &[&str]) -> Candidate {
        Candidate {
            image_id: id.into(),
            name: format!("app-{id}"),
            created: created.into(),
            state: "available".into(),
            snapshots: snaps.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn by_id(d: &[Decision]) -> BTreeMap<&str, &Decision> {
        d.iter().map(|x| (x.image_id.as_str(), x)).collect()
    }

    #[test]
    fn app_images_are_matched_by_appversion_not_by_prefix() {
        assert!(is_app_image("web", "web-1.0-1"));
        assert!(is_app_image("web", "web-2:1.0"));
        assert!(is_app_image("hello-web", "hello-web-1.2-3"));
        assert!(!is_app_image("web", "web-admin-1.0-1"));
        assert!(!is_app_image("web", "webx-1.0"));
        assert!(!is_app_image("web", "web"));
        assert!(!is_app_image("web", "web-"));
    }

    #[test]
    fn keeps_the_newest_n_and_deletes_the_rest_with_their_snapshots() {
        let cands = [
            c("a", "2026-01-01T00:00:00Z", &["s-a"]),
            c("c", "2026-03-01T00:00:00Z", &["s-c"]),
            c("b", "2026-02-01T00:00:00Z", &["s-b", "s-b2"]),
        ];
        let d = plan(&cands, 1, &BTreeMap::new(), &[]);
        assert_eq!(
            d.iter().map(|x| x.image_id.as_str()).collect::<Vec<_>>(),
            ["c", "b", "a"],
            "newest first"
        );
        let m = by_id(&d);
        assert_eq!(m["c"].action, Action::Keep);
        assert_eq!(m["c"].reasons, ["newest 1 of 3 (--keep 1)"]);
        assert!(m["c"].delete_snapshots.is_empty());
        assert_eq!(m["b"].action, Action::Delete);
        assert_eq!(m["b"].delete_snapshots, ["s-b", "s-b2"]);
        assert_eq!(m["a"].action, Action::Delete);
        assert_eq!(m["a"].reasons, ["older than the newest 1 and not in use"]);
    }

    #[test]
    fn in_use_and_unavailable_images_are_kept_with_every_reason() {
        let mut pending = c("p", "2026-01-03T00:00:00Z", &[]);
        pending.state = "pending".into();
        let cands = [
            c("new", "2026-01-05T00:00:00Z", &["s1"]),
            c("lt", "2026-01-01T00:00:00Z", &["s2"]),
            pending,
            c("old", "2026-01-02T00:00:00Z", &["s3"]),
        ];
        let mut uses = BTreeMap::new();
        uses.insert(
            "lt".to_string(),
            vec![
                "ASG web-v001 (launch template lt-1 version 3, $Default)".to_string(),
                "instance i-1 (running)".to_string(),
            ],
        );
        uses.insert(
            "new".to_string(),
            vec!["instance i-2 (stopped)".to_string()],
        );
        let d = plan(&cands, 1, &uses, &[]);
        let m = by_id(&d);
        assert_eq!(
            m["new"].reasons,
            ["newest 1 of 4 (--keep 1)", "in use: instance i-2 (stopped)"]
        );
        assert_eq!(m["lt"].action, Action::Keep);
        assert_eq!(m["lt"].reasons.len(), 2);
        assert!(m["lt"].reasons[0].contains("lt-1 version 3"));
        assert_eq!(m["p"].action, Action::Keep);
        assert!(m["p"].reasons[0].starts_with("state pending"));
        assert_eq!(m["old"].action, Action::Delete);
    }

    #[test]
    fn a_snapshot_shared_with_a_staying_image_stays() {
        let cands = [
            c("new", "2026-01-05T00:00:00Z", &["shared"]),
            c("old", "2026-01-01T00:00:00Z", &["shared", "own", "own"]),
        ];
        let d = plan(
            &cands,
            1,
            &BTreeMap::new(),
            &[("ami-other".into(), vec!["own2".into()])],
        );
        let m = by_id(&d);
        assert_eq!(
            m["old"].delete_snapshots,
            ["own"],
            "listed once, the shared one stays"
        );
        assert_eq!(m["old"].keep_snapshots, ["shared (also used by new)"]);
        let cands = [
            c("new", "2026-01-05T00:00:00Z", &[]),
            c("old", "2026-01-01T00:00:00Z", &["x"]),
        ];
        let d = plan(
            &cands,
            1,
            &BTreeMap::new(),
            &[("ami-other".into(), vec!["x".into()])],
        );
        assert!(by_id(&d)["old"].delete_snapshots.is_empty());
    }

    #[test]
    fn fewer_images_than_keep_deletes_nothing_and_ties_are_stable() {
        let cands = [
            c("a", "2026-01-01T00:00:00Z", &[]),
            c("b", "2026-01-01T00:00:00Z", &[]),
        ];
        let d = plan(&cands, 5, &BTreeMap::new(), &[]);
        assert!(d.iter().all(|x| x.action == Action::Keep));
        let d1 = plan(&cands, 1, &BTreeMap::new(), &[]);
        let rev = [cands[1].clone(), cands[0].clone()];
        let d2 = plan(&rev, 1, &BTreeMap::new(), &[]);
        assert_eq!(d1, d2);
    }

    fn lc(id: &str, lookup: &str, created: i64, snaps: &[&str]) -> LayerCandidate {
        LayerCandidate {
            image: c(id, "2026-01-01T00:00:00Z", snaps),
            family: "F".into(),
            lookup: lookup.into(),
            created_unix: created,
            complete: true,
        }
    }

    #[test]
    fn layer_cache_entries_keep_the_newest_of_each_lookup_key_and_any_in_use() {
        let mut making = lc("making", "L1", 50, &["s-m"]);
        making.complete = false;
        let cands = [
            lc("old", "L1", 10, &["s-old"]),
            lc("mid", "L1", 20, &["s-mid"]),
            lc("new", "L1", 30, &["s-new"]),
            making,
            lc("only", "L2", 5, &["s-only"]),
            lc("used", "L3", 1, &["s-used"]),
            lc("top", "L3", 2, &["s-top"]),
        ];
        let uses = BTreeMap::from([(
            "mid".to_string(),
            vec!["instance i-1 (running)".to_string()],
        )]);
        let others = [("ami-app".to_string(), vec!["s-used".to_string()])];
        let d = plan_layer_cache(&cands, &uses, &others, Supersede::ByLookup);
        let m = by_id(&d);
        // The newest complete entry of each key stays, whatever its age; the one a bake is
        // still making neither goes nor supersedes.
        assert_eq!(m["new"].action, Action::Keep);
        assert!(m["new"].reasons[0].starts_with("newest layer cache entry of lookup key L1"));
        assert_eq!(m["making"].action, Action::Keep);
        assert_eq!(m["only"].action, Action::Keep);
        assert_eq!(m["top"].action, Action::Keep);
        // In use: kept with why.
        assert_eq!(m["mid"].action, Action::Keep);
        assert_eq!(m["mid"].reasons, ["in use: instance i-1 (running)"]);
        // Superseded: deleted with its snapshot, unless another image uses it.
        assert_eq!(m["old"].action, Action::Delete);
        assert!(
            m["old"].reasons[0].contains("superseded by new"),
            "{:?}",
            m["old"]
        );
        assert_eq!(m["old"].delete_snapshots, ["s-old"]);
        assert_eq!(m["used"].action, Action::Delete);
        assert!(m["used"].delete_snapshots.is_empty());
        assert_eq!(m["used"].keep_snapshots, ["s-used (also used by ami-app)"]);
        // Ties on time are broken by id, the same way every run.
        let tie = [lc("a", "L", 7, &[]), lc("b", "L", 7, &[])];
        let d = plan_layer_cache(&tie, &BTreeMap::new(), &[], Supersede::ByLookup);
        assert_eq!(by_id(&d)["b"].action, Action::Keep);
        assert_eq!(by_id(&d)["a"].action, Action::Delete);
        // A bake's new entry supersedes its family's older definitions too (one family here):
        // only the newest complete entry, the one in use and the one being made stay.
        let d = plan_layer_cache(&cands, &uses, &others, Supersede::ByFamily);
        let kept: Vec<&str> = d
            .iter()
            .filter(|x| x.action == Action::Keep)
            .map(|x| x.image_id.as_str())
            .collect();
        assert_eq!(kept, ["making", "new", "mid"]);
        assert!(by_id(&d)["only"].reasons[0].contains("superseded by new (layers on this base F)"));
    }
}
