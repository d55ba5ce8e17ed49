//! Provisioning: the chroot session child process (its own mount namespace) and the parent that
//! drives it. See ARCHITECTURE.md, "Process model".

pub mod chroot;
pub mod driver;
pub mod failure;
pub mod generalize;
pub mod isolate;
pub mod libs;
pub mod pkgdb;
pub mod plan;
pub mod resolv;
pub mod rpm;
pub mod session;
pub mod shell;
pub mod steps;
