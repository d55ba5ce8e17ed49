//! The kernel side: loop devices, partition nodes, mounts, locks, processes and signals. Each
//! acquisition is a guard whose Drop releases it.

pub mod cmd;
pub mod inroot;
pub mod lock;
pub mod loopdev;
pub mod partx;
pub mod procs;
pub mod signals;
