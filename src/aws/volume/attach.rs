//! Create the bake volume from a snapshot in this host's AZ, attach it under a host-wide device
//! lock, wait for the kernel to show it; later detach and delete it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use aws_sdk_ec2::types::{ResourceType, VolumeType};
use tracing::{info, warn};

use super::device::{find_device, free_device_names};
use crate::aws::ami::{tag_spec_for, with_bake_id};
use crate::aws::client::{describe_sdk_error, AwsContext};
use crate::aws::imds::Ec2Host;
use crate::aws::ledger::{Ledger, Resource};
use crate::sys::lock::HostLock;

/// An attached bake volume. Holding it holds the device-name lock; drop it after detaching.
#[derive(Debug)]
pub struct AttachedVolume {
    pub volume_id: String,
    /// The kernel's block device (`/dev/nvme1n1`, `/dev/xvdf`).
    pub device: PathBuf,
    pub lock: HostLock,
    /// The name given to AttachVolume (`/dev/sdf`).
    pub device_name: String,
    pub region: String,
    pub instance_id: String,
}

#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// How long to wait for the kernel to show the attached device.
    pub device_wait: Duration,
    /// How long to wait for the volume to become available / detached.
    pub volume_wait: Duration,
    pub poll: Duration,
    pub sys_root: PathBuf,
    pub dev_root: PathBuf,
    /// Create the volume encrypted with this KMS key (CreateVolume `Encrypted` + `KmsKeyId`):
    /// its snapshot is then encrypted with it too. None: as its snapshot (and EBS encryption
    /// by default) make it.
    pub kms_key_id: Option<String>,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            device_wait: Duration::from_secs(120),
            volume_wait: Duration::from_secs(600),
            poll: Duration::from_millis(500),
            sys_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
            kms_key_id: None,
        }
    }
}

/// [`create_and_attach_with`] with the defaults (2 min for the device, the real /sys and /dev).
pub async fn create_and_attach(
    ctx: &AwsContext,
    host: &Ec2Host,
    snapshot_id: &str,
    size_gib: i32,
    ledger: &Ledger,
    lock_dir: &Path,
) -> Result<AttachedVolume> {
    create_and_attach_with(
        ctx,
        host,
        snapshot_id,
        size_gib,
        ledger,
        lock_dir,
        &AttachOptions::default(),
    )
    .await
}

/// CreateVolume (gp3, from `snapshot_id`, in the host's AZ, tagged with the bake id; recorded),
/// wait available, claim a free device name under the host lock `device-sdX`, AttachVolume
/// (recorded), wait until the kernel shows the device. On error what was made stays in the
/// ledger for the caller's rollback.
pub async fn create_and_attach_with(
    ctx: &AwsContext,
    host: &Ec2Host,
    snapshot_id: &str,
    size_gib: i32,
    ledger: &Ledger,
    lock_dir: &Path,
    opts: &AttachOptions,
) -> Result<AttachedVolume> {
    let region = host.region.as_str();
    let ec2 = ctx.ec2(region);
    let mut tags: BTreeMap<String, String> = with_bake_id(&BTreeMap::new(), &ledger.bake_id);
    tags.insert("Name".into(), format!("bakery {}", ledger.bake_id));
    let out = ec2
        .create_volume()
        .availability_zone(&host.availability_zone)
        .snapshot_id(snapshot_id)
        .size(size_gib)
        .volume_type(VolumeType::Gp3)
        .set_encrypted(opts.kms_key_id.as_ref().map(|_| true))
        .set_kms_key_id(opts.kms_key_id.clone())
        .tag_specifications(tag_spec_for(ResourceType::Volume, &tags))
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "creating a volume from {snapshot_id} in {} ({region}): {}",
                host.availability_zone,
                describe_sdk_error(&e)
            )
        })?;
    let volume_id = out
        .volume_id()
        .ok_or_else(|| anyhow!("CreateVolume in {region} returned no volume id"))?
        .to_string();
    ledger.record(Resource::Volume {
        region: region.to_string(),
        id: volume_id.clone(),
    });
    info!(
        "created volume {volume_id} from {snapshot_id} in {}",
        host.availability_zone
    );

    wait_volume_state(&ec2, region, &volume_id, "available", opts).await?;

    let attached_names = instance_device_names(&ec2, region, &host.instance_id).await?;
    let mut last_err = None;
    for name in free_device_names(&opts.dev_root, &attached_names) {
        let short = name.trim_start_matches("/dev/");
        let Some(lock) = HostLock::try_acquire(lock_dir, &format!("device-{short}"))? else {
            continue; // another bake on this host holds it
        };
        match ec2
            .attach_volume()
            .volume_id(&volume_id)
            .instance_id(&host.instance_id)
            .device(&name)
            .send()
            .await
        {
            Ok(_) => {
                ledger.record(Resource::Attachment {
                    region: region.to_string(),
                    volume_id: volume_id.clone(),
                    instance_id: host.instance_id.clone(),
                });
                info!("attaching {volume_id} to {} as {name}", host.instance_id);
                let device = wait_for_device(&volume_id, &name, &host.instance_id, opts).await?;
                info!("{volume_id} is {}", device.display());
                return Ok(AttachedVolume {
                    volume_id,
                    device,
                    lock,
                    device_name: name,
                    region: region.to_string(),
                    instance_id: host.instance_id.clone(),
                });
            }
            Err(e) => {
                let msg = describe_sdk_error(&e);
                // Someone outside bakery took the name between our look and the call: AWS says
                // InvalidParameterValue ("attachment point ... is already in use"). Whether the
                // name is taken now is asked, not read from the message; then try the next.
                let taken = crate::aws::error::code(&e) == Some("InvalidParameterValue")
                    && instance_device_names(&ec2, region, &host.instance_id)
                        .await?
                        .iter()
                        .any(|n| n == &name);
                if taken {
                    warn!(
                        "{name} is taken on {}: {msg}; trying the next name",
                        host.instance_id
                    );
                    last_err = Some(msg);
                    continue;
                }
                bail!(
                    "attaching {volume_id} to {} as {name} ({region}): {msg}",
                    host.instance_id
                );
            }
        }
    }
    bail!(
        "no free device name for {volume_id} on {}: /dev/sdf../dev/sdp are all in use or locked by other bakes{}",
        host.instance_id,
        last_err.map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )
}

async fn wait_for_device(
    volume_id: &str,
    name: &str,
    instance_id: &str,
    opts: &AttachOptions,
) -> Result<PathBuf> {
    let start = Instant::now();
    loop {
        if let Some(d) = find_device(&opts.sys_root, &opts.dev_root, volume_id, name) {
            return Ok(d);
        }
        if start.elapsed() >= opts.device_wait {
            let short = name.trim_start_matches("/dev/sd");
            bail!(
                "{volume_id} is attached to {instance_id} as {name} but no block device for it appeared within {}s (looked for NVMe serial {} under {}/class/nvme, and {}/sd{short}, {}/xvd{short}); is this the instance the volume was attached to?",
                opts.device_wait.as_secs_f64(),
                volume_id.replace('-', ""),
                opts.sys_root.display(),
                opts.dev_root.display(),
                opts.dev_root.display()
            );
        }
        tokio::time::sleep(opts.poll.min(Duration::from_millis(250))).await;
    }
}

/// Device names EC2 reports attached to the instance (on Nitro nothing local tells them).
async fn instance_device_names(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    instance_id: &str,
) -> Result<Vec<String>> {
    let out = ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "describing this instance {instance_id} ({region}): {}",
                describe_sdk_error(&e)
            )
        })?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .flat_map(|i| i.block_device_mappings())
        .filter_map(|m| m.device_name().map(str::to_string))
        .collect())
}

async fn wait_volume_state(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    volume_id: &str,
    want: &str,
    opts: &AttachOptions,
) -> Result<()> {
    let start = Instant::now();
    let mut last_log = Instant::now();
    loop {
        let out = ec2
            .describe_volumes()
            .volume_ids(volume_id)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "waiting for volume {volume_id} ({region}): {}",
                    describe_sdk_error(&e)
                )
            })?;
        let state = out
            .volumes()
            .first()
            .and_then(|v| v.state())
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "missing".into());
        if state == want {
            return Ok(());
        }
        if state == "error" || state == "deleted" || state == "missing" {
            bail!("volume {volume_id} ({region}) is {state}, waiting for {want}");
        }
        if start.elapsed() >= opts.volume_wait {
            bail!(
                "volume {volume_id} ({region}) is still {state} after {}s, waiting for {want}",
                opts.volume_wait.as_secs()
            );
        }
        if last_log.elapsed() >= Duration::from_secs(30) {
            info!(
                "waiting for volume {volume_id} to be {want}: {state} ({}s)",
                start.elapsed().as_secs()
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(opts.poll).await;
    }
}

/// DetachVolume, wait until it is available, forget the attachment. The filesystem must be
/// unmounted first. The device lock is released when `v` is dropped.
pub async fn detach(
    ctx: &AwsContext,
    host: &Ec2Host,
    v: &AttachedVolume,
    ledger: &Ledger,
) -> Result<()> {
    let ec2 = ctx.ec2(&v.region);
    ec2.detach_volume()
        .volume_id(&v.volume_id)
        .instance_id(&host.instance_id)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "detaching {} from {} ({}): {}",
                v.volume_id,
                host.instance_id,
                v.region,
                describe_sdk_error(&e)
            )
        })?;
    wait_volume_state(
        &ec2,
        &v.region,
        &v.volume_id,
        "available",
        &AttachOptions::default(),
    )
    .await?;
    ledger.forget(&Resource::Attachment {
        region: v.region.clone(),
        volume_id: v.volume_id.clone(),
        instance_id: v.instance_id.clone(),
    });
    info!("detached {}", v.volume_id);
    Ok(())
}

/// DeleteVolume and forget it.
pub async fn delete(
    ctx: &AwsContext,
    region: &str,
    volume_id: &str,
    ledger: &Ledger,
) -> Result<()> {
    ctx.ec2(region)
        .delete_volume()
        .volume_id(volume_id)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "deleting volume {volume_id} ({region}): {}",
                describe_sdk_error(&e)
            )
        })?;
    ledger.forget(&Resource::Volume {
        region: region.to_string(),
        id: volume_id.to_string(),
    });
    info!("deleted volume {volume_id}");
    Ok(())
}

/// Detach, wait, delete; both forgotten by the ledger.
pub async fn detach_and_delete(
    ctx: &AwsContext,
    v: &AttachedVolume,
    ledger: &Ledger,
) -> Result<()> {
    let host = Ec2Host {
        instance_id: v.instance_id.clone(),
        availability_zone: String::new(),
        region: v.region.clone(),
    };
    detach(ctx, &host, v, ledger).await?;
    delete(ctx, &v.region, &v.volume_id, ledger).await
}

#[cfg(test)]
mod tests {
    /// The real thing, on an EC2 bake host (Nitro or Xen), as root, with credentials allowed to
    /// create/attach/delete volumes and snapshots:
    ///
    /// ```text
    /// BAKERY_TEST_SNAPSHOT=snap-0123... cargo test --lib real_volume_on_an_ec2_host -- --ignored --nocapture
    /// ```
    ///
    /// It creates a volume from the snapshot in this host's AZ, attaches it under a device lock in
    /// a temporary lock dir, checks that the kernel device appears (NVMe serial on Nitro,
    /// /dev/xvdX on Xen) and is a block device, then detaches and deletes it; on failure the
    /// ledger rollback removes what it made (tagged bakery:bake-id=real-volume-test-*).
    #[test]
    #[ignore = "needs an EC2 instance, AWS credentials and BAKERY_TEST_SNAPSHOT"]
    fn real_volume_on_an_ec2_host() {
        use std::os::unix::fs::FileTypeExt;
        let snapshot =
            std::env::var("BAKERY_TEST_SNAPSHOT").expect("set BAKERY_TEST_SNAPSHOT=snap-...");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let host = crate::aws::imds::detect()
                .await
                .expect("not on EC2 (IMDSv2 did not answer)");
            let ctx = crate::aws::client::AwsContext::load().await;
            let ledger = crate::aws::ledger::Ledger::new(&format!(
                "real-volume-test-{}",
                std::process::id()
            ));
            let locks = tempfile::tempdir().unwrap();
            let r =
                super::create_and_attach(&ctx, &host, &snapshot, 8, &ledger, locks.path()).await;
            let r = match r {
                Ok(v) => {
                    let ft = std::fs::metadata(&v.device).unwrap().file_type();
                    assert!(
                        ft.is_block_device(),
                        "{} is not a block device",
                        v.device.display()
                    );
                    super::detach_and_delete(&ctx, &v, &ledger).await
                }
                Err(e) => Err(e),
            };
            let failures = ledger.rollback(&ctx).await;
            r.unwrap();
            assert!(failures.is_empty(), "{failures:?}");
        });
    }
}
