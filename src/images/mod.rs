//! Retention of baked AMIs: `bakery images prune` removes an app's old images and their
//! snapshots, never one that is among the newest N or still used by an ASG or an instance.

pub mod prune;
pub mod prune_plan;
pub mod usage;
