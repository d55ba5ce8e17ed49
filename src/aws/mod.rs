//! AWS: per-region SDK clients, the cleanup ledger, AMIs (find, register, copy, tag, share),
//! EBS direct snapshot I/O, and volume mode on an EC2 bake host.

pub mod ami;
pub mod client;
pub mod ebs;
pub mod imds;
pub mod ledger;
pub mod volume;

/// Every resource a bake creates carries this tag, so `bakery gc` can find what a crash left.
pub const BAKE_ID_TAG: &str = "bakery:bake-id";
