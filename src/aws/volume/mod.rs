//! Volume mode on an EC2 bake host: a gp3 volume from the base's root snapshot in this host's AZ,
//! attached under a host-wide device-name lock, found by the kernel name it really got (NVMe on
//! Nitro, xvd on Xen), then detached, snapshotted and deleted.
//!
//! Running it for real needs an EC2 instance: see the ignored test
//! `attach::tests::real_volume_on_an_ec2_host` for how.

mod attach;
mod device;
mod snapshot;

pub use attach::{
    create_and_attach, create_and_attach_with, delete, detach, detach_and_delete, AttachOptions,
    AttachedVolume,
};
pub use device::{find_device, free_device_names, DEVICE_LETTERS};
pub use snapshot::{snapshot_volume, snapshot_volume_with};
