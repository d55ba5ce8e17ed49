//! Source: a gp3 volume made from the base AMI's root snapshot in this EC2 host's AZ, attached
//! to a free device name claimed under a host-wide lock, found by its NVMe serial on Nitro (or
//! as /dev/xvdX, /dev/sdX on Xen). The bake works on the block device itself; the seal detaches
//! it and the AMI sink snapshots and deletes it.

use anyhow::Result;

use super::{BaseOrigin, From, SourceDisk};
use crate::aws::ami::BaseAmi;
use crate::aws::imds::Ec2Host;
use crate::aws::volume;
use crate::input;
use crate::pipeline::sink::ami::Cloud;
use crate::pipeline::Stages;

/// This EC2 host, or an input error naming `--mode direct` elsewhere.
pub fn host(cloud: &Cloud) -> Result<Ec2Host> {
    cloud
        .aws
        .rt
        .block_on(crate::aws::imds::detect())
        .ok_or_else(|| input!("--mode volume needs an EC2 bake host (IMDSv2 did not answer); use --mode direct elsewhere"))
}

/// Create the volume (`size_gib`: the base's root volume size, or `--disk-size`), attach it
/// here (stage `attach volume`).
pub fn open(
    base: &BaseAmi,
    cloud: &Cloud,
    size_gib: i32,
    stages: &mut Stages,
) -> Result<SourceDisk> {
    let host = host(cloud)?;
    let attached = stages.run_shown("attach volume", "create and attach volume", |st| {
        st.timing("create and attach volume");
        crate::sys::signals::block_on(
            cloud.aws.rt,
            volume::create_and_attach_with(
                &cloud.aws.ctx,
                &host,
                &base.root_snapshot_id,
                size_gib,
                &cloud.ledger,
                &crate::sys::lock::host_wide_dir(),
                &volume::AttachOptions {
                    // Encrypted with the region's key when one is asked for (its snapshot then is).
                    kms_key_id: cloud
                        .encryption
                        .want(&cloud.region)
                        .key_to_ask()
                        .map(str::to_string),
                    ..Default::default()
                },
            ),
        )
    })?;
    Ok(SourceDisk {
        path: attached.device.clone(),
        origin: BaseOrigin::of_ami(base),
        root_partition: None,
        bootstrap: None,
        from: From::Volume {
            base: base.clone(),
            host,
            attached,
        },
    })
}
