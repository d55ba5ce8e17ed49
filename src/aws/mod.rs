//! AWS: per-region SDK clients, the cleanup ledger, AMIs (find, register, copy, tag, share),
//! EBS direct snapshot I/O, and volume mode on an EC2 bake host.

pub mod alarm;
pub mod ami;
pub mod asg;
pub mod client;
pub mod ebs;
pub mod encryption;
pub mod error;
pub mod gc;
pub mod https;
pub mod imds;
pub mod launch_template;
pub mod ledger;
pub mod regions;
pub mod volume;

/// Every resource a bake creates carries this tag, so `bakery gc` can find what a crash left.
pub const BAKE_ID_TAG: &str = "bakery:bake-id";

/// `pending` from creation until the bake succeeds, then `complete`: `bakery gc` removes only
/// `pending` resources of bakes that are no longer running.
pub const BAKE_STATE_TAG: &str = "bakery:bake-state";
