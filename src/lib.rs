//! bakery: bake machine images (a base disk + layers + your packages) and roll them out.
//!
//! A bake is the same five steps over a block device, wherever the base came from and wherever
//! the result goes: source -> block device -> mounted root -> provision (chroot) -> seal -> sink.

pub mod aws;
pub mod bake;
pub mod base;
pub mod boot;
pub mod cache;
pub mod canary;
pub mod cli;
pub mod context;
pub mod deploy;
pub mod disk;
pub mod doctor;
pub mod error;
pub mod fault;
pub mod gc;
pub mod images;
pub mod manifest;
pub mod naming;
pub mod output;
pub mod package;
pub mod pipeline;
pub mod plugin;
pub mod progress;
pub mod provision;
pub mod recipe;
pub mod retention;
pub mod sys;
pub mod workdir;
