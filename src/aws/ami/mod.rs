//! AMIs: find a base (by id or newest by name), register a baked snapshot with its launch
//! attributes, copy to other regions concurrently, tag, share (with the snapshots), deprecate,
//! protect, wait, and read back what AWS made. One job per file, like pubsys's `aws/ami/`.
//!
//! Every call goes through an [`AwsContext`](crate::aws::client::AwsContext) client; every image
//! this module creates is recorded in the [`Ledger`](crate::aws::ledger::Ledger) right after the
//! call that made it returns, and tagged `bakery:bake-id`.

pub mod attributes;
mod copy;
mod describe;
mod find;
pub mod lifecycle;
mod register;
mod share;
mod tags;
mod wait;

pub use attributes::{AttributeOverrides, BootMode, DiskFirmware, Protection};
pub use copy::{copy_to_regions, copy_to_regions_with, CopyOptions, RegionalImage};
pub use describe::{describe_image, ImageAttributes, ImageReport, SnapshotInfo};
pub(crate) use find::{describe_own_images, same_device, snapshot_ids};
pub use find::{
    find_image_by_name, find_tagged_image_by_name, glob_match, list_images, resolve_base, BaseAmi,
    BaseRef, BlockDevice, ImageSummary,
};
pub use lifecycle::Lifecycle;
pub use register::{register, register_with, RegisterSpec, Registered};
pub use share::{share, ShareTarget};
pub use tags::{ec2_tags, tag_map, tag_resources, tag_spec_for, with_bake_id};
pub use wait::{wait_image_available, WaitConfig};
