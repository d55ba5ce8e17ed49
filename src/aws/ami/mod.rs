//! AMIs: find a base (by id or newest by name), register a baked snapshot, copy to other regions
//! concurrently, tag, share, wait. One job per file, like pubsys's `aws/ami/`.
//!
//! Every call goes through an [`AwsContext`](crate::aws::client::AwsContext) client; every image
//! this module creates is recorded in the [`Ledger`](crate::aws::ledger::Ledger) right after the
//! call that made it returns, and tagged `bakery:bake-id`.

mod copy;
mod find;
mod register;
mod share;
mod tags;
mod wait;

pub use copy::{copy_to_regions, copy_to_regions_with, RegionalImage};
pub(crate) use find::{describe_own_images, snapshot_ids};
pub use find::{
    find_image_by_name, find_tagged_image_by_name, glob_match, list_images, resolve_base, BaseAmi,
    BaseRef, BlockDevice, ImageSummary,
};
pub use register::{register, register_with, RegisterSpec, Registered};
pub use share::share;
pub use tags::{ec2_tags, tag_map, tag_resources, tag_spec_for, with_bake_id};
pub use wait::{wait_image_available, WaitConfig};
