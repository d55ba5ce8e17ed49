//! Retention of what bakes leave on purpose (bake logs, cached snapshots and bases, and any
//! other cache that registers in [`crate::cache::kinds`]): one [`Policy`] — an age, a count and
//! a size limit, each optional — and one pure [`plan`] that says which items go and why.
//! `bakery gc` measures the items, plans, and removes; what a running bake holds is marked
//! `in_use` and never planned for removal (it still counts toward the limits).

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Limits on a set of items; `None` is no limit. An item goes when it breaks any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Items not used for longer than this go.
    pub max_age: Option<Duration>,
    /// Only this many most recently used items stay.
    pub max_count: Option<usize>,
    /// Least recently used items go until the rest take at most this many bytes on disk.
    pub max_bytes: Option<u64>,
}

/// One thing retention may remove: a log file, or a cache entry (its files together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Unique within one plan (e.g. `snapshot/snap-0123`).
    pub id: String,
    /// Bytes allocated on disk (sparse files count what they really take).
    pub bytes: u64,
    /// When it was last written or read by a bake.
    pub last_used: SystemTime,
    /// Held by a running bake: never removed.
    pub in_use: bool,
}

/// Why an item goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Unused for longer than `max_age`.
    Age,
    /// Beyond the `max_count` most recently used.
    Count,
    /// Least recently used while the total was over `max_bytes`.
    Size,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Age => "older than the age limit",
            Reason::Count => "beyond the newest kept",
            Reason::Size => "least recently used over the size budget",
        }
    }
}

/// Which of `items` go under `policy` at `now`: `(index into items, reason)`, least recently
/// used first. Age goes first, then count (newest kept), then size (oldest removed until the
/// rest fit; items in use count toward the total but are never removed, so the budget may stay
/// exceeded while a bake holds them). Ties in `last_used` break by `id`, so the plan is stable.
pub fn plan(items: &[Item], policy: &Policy, now: SystemTime) -> Vec<(usize, Reason)> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Newest first.
    order.sort_by(|&a, &b| {
        (items[b].last_used, &items[a].id).cmp(&(items[a].last_used, &items[b].id))
    });
    let mut reason: Vec<Option<Reason>> = vec![None; items.len()];
    let mut kept = 0usize;
    for &i in &order {
        let it = &items[i];
        if it.in_use {
            kept += 1;
            continue;
        }
        let age = now.duration_since(it.last_used).unwrap_or_default();
        if policy.max_age.is_some_and(|m| age > m) {
            reason[i] = Some(Reason::Age);
        } else if policy.max_count.is_some_and(|m| kept >= m) {
            reason[i] = Some(Reason::Count);
        } else {
            kept += 1;
        }
    }
    if let Some(budget) = policy.max_bytes {
        let mut total: u64 = (0..items.len())
            .filter(|&i| reason[i].is_none())
            .map(|i| items[i].bytes)
            .sum();
        for &i in order.iter().rev() {
            if total <= budget {
                break;
            }
            if reason[i].is_none() && !items[i].in_use {
                reason[i] = Some(Reason::Size);
                total -= items[i].bytes;
            }
        }
    }
    order
        .into_iter()
        .rev()
        .filter_map(|i| reason[i].map(|r| (i, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    fn item(id: &str, bytes: u64, days_ago: u64, in_use: bool) -> Item {
        Item {
            id: id.into(),
            bytes,
            last_used: SystemTime::UNIX_EPOCH + 100 * DAY - DAY * days_ago as u32,
            in_use,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + 100 * DAY
    }

    fn ids(items: &[Item], p: &[(usize, Reason)]) -> Vec<(String, Reason)> {
        p.iter().map(|&(i, r)| (items[i].id.clone(), r)).collect()
    }

    #[test]
    fn no_limits_remove_nothing() {
        let items = [item("a", 10, 400, false), item("b", 1 << 40, 0, false)];
        assert!(plan(&items, &Policy::default(), now()).is_empty());
    }

    #[test]
    fn age_removes_what_was_not_used_recently() {
        let items = [
            item("old", 1, 31, false),
            item("new", 1, 1, false),
            item("edge", 1, 30, false),
        ];
        let p = Policy {
            max_age: Some(30 * DAY),
            ..Default::default()
        };
        assert_eq!(
            ids(&items, &plan(&items, &p, now())),
            [("old".to_string(), Reason::Age)]
        );
    }

    #[test]
    fn count_keeps_the_newest() {
        let items = [
            item("c", 1, 3, false),
            item("a", 1, 1, false),
            item("b", 1, 2, false),
            item("d", 1, 4, false),
        ];
        let p = Policy {
            max_count: Some(2),
            ..Default::default()
        };
        assert_eq!(
            ids(&items, &plan(&items, &p, now())),
            [
                ("d".to_string(), Reason::Count),
                ("c".to_string(), Reason::Count)
            ]
        );
    }

    #[test]
    fn size_removes_least_recently_used_first_until_under_budget() {
        let items = [
            item("mid", 40, 5, false),
            item("oldest", 30, 9, false),
            item("newest", 50, 1, false),
            item("old", 10, 7, false),
        ];
        let p = Policy {
            max_bytes: Some(95),
            ..Default::default()
        };
        // 130 bytes: oldest (30) and old (10) go, leaving 90.
        assert_eq!(
            ids(&items, &plan(&items, &p, now())),
            [
                ("oldest".to_string(), Reason::Size),
                ("old".to_string(), Reason::Size)
            ]
        );
        let p0 = Policy {
            max_bytes: Some(0),
            ..Default::default()
        };
        assert_eq!(plan(&items, &p0, now()).len(), 4);
    }

    #[test]
    fn items_in_use_are_never_removed_but_count_toward_limits() {
        let items = [
            item("held", 100, 90, true),
            item("a", 10, 2, false),
            item("b", 10, 1, false),
        ];
        let p = Policy {
            max_age: Some(30 * DAY),
            max_count: Some(2),
            max_bytes: Some(105),
        };
        // "held" is the oldest and over every limit, but a bake holds it: it stays, and its
        // 100 bytes leave room for neither of the others.
        assert_eq!(
            ids(&items, &plan(&items, &p, now())),
            [
                ("a".to_string(), Reason::Size),
                ("b".to_string(), Reason::Size)
            ]
        );
        let held_new = [
            item("held", 1, 0, true),
            item("a", 1, 2, false),
            item("b", 1, 1, false),
        ];
        // Held and newest: it takes one of the two places, so only b stays.
        assert_eq!(
            ids(&held_new, &plan(&held_new, &p, now())),
            [("a".to_string(), Reason::Count)]
        );
        let all_held: Vec<Item> = items
            .iter()
            .map(|i| Item {
                in_use: true,
                ..i.clone()
            })
            .collect();
        assert!(plan(&all_held, &p, now()).is_empty());
    }

    #[test]
    fn ties_break_by_id() {
        let items = [item("b", 10, 3, false), item("a", 10, 3, false)];
        let p = Policy {
            max_bytes: Some(10),
            ..Default::default()
        };
        // Same age: "b" sorts as the older (ids descending among equals go first).
        assert_eq!(plan(&items, &p, now()).len(), 1);
        assert_eq!(plan(&items, &p, now()), plan(&items, &p, now()));
    }

    #[test]
    fn a_clock_behind_the_files_makes_nothing_old() {
        let items = [item("future", 1, 0, false)];
        let p = Policy {
            max_age: Some(Duration::ZERO),
            ..Default::default()
        };
        assert!(plan(&items, &p, SystemTime::UNIX_EPOCH).is_empty());
    }
}
