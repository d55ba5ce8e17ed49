//! Sinks: where the sealed disk goes, and what fills the manifest's `output` or `amis`.
//!
//! - `file.rs`: a raw or qcow2 file, written under a temporary name and renamed into place only
//!   once complete and synced
//! - `ami.rs`: AMIs — the disk uploaded with the EBS direct APIs (only changed blocks when it
//!   came from a base snapshot) or the bake volume snapshotted, then registered, shared, copied
//!   to every other region and tagged, everything recorded in the cleanup ledger

pub mod ami;
pub mod ami_options;
pub mod file;

/// Where the image goes (what the command asked for).
#[derive(Debug, Clone)]
pub enum Sink {
    File(file::FileTarget),
    Ami(ami::AmiTarget),
}
