//! Source: a base built from nothing (`bakery base build`, and the built-in base). A GPT disk
//! with a 1 MiB BIOS boot partition and an ext4 root; debootstrap runs in the chroot session,
//! then the kernel, GRUB on the serial console, fstab by UUID, systemd-networkd DHCP,
//! cloud-init, the base's layers and a generalize pass.
//!
//! The disk layout is [`partition`]'s; a UEFI+BIOS layout (issue 15: an ESP beside the BIOS
//! boot partition, GRUB for both) goes there and in [`system_files`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{BaseOrigin, From, Source, SourceDisk};
use crate::disk::layout;
use crate::input;
use crate::manifest::Kind;
use crate::naming;
use crate::pipeline::{session, Job, Stages, TagRule};
use crate::provision::plan::{Bootstrap, Step};
use crate::recipe::base::BaseSpec;
use crate::recipe::layer::Layer;
use crate::sys::cmd::run;
use crate::workdir::new_bake_id;

/// The root partition's number in the layout [`partition`] makes.
pub const ROOT_PARTITION: u32 = 2;

/// Units enabled in every base.
pub const BASE_UNITS: &[&str] = &["systemd-networkd", "systemd-resolved", "ssh"];

/// A base to build: the spec, and what is decided up front (root filesystem UUID, version).
#[derive(Debug, Clone)]
pub struct Debootstrap {
    pub spec: BaseSpec,
    pub root_uuid: String,
    pub version: String,
}

/// A base spec as a pipeline job and its source: the steps (system files, kernel and packages,
/// GRUB, units, the layers, generalize), the name `{name}-{version}` and the base's own tags.
/// `layers`: the spec's layers, resolved.
pub fn job(spec: &BaseSpec, layers: &[Layer], env: &[(String, String)]) -> Result<(Job, Source)> {
    let now = time::OffsetDateTime::now_utc();
    let version = spec.version.clone().unwrap_or_else(|| naming::stamp(now));
    let built_at = now.format(&time::format_description::well_known::Rfc3339)?;
    let root_uuid = uuid::Uuid::new_v4().to_string();
    let env: BTreeMap<String, String> = env.iter().cloned().collect();
    let job = Job {
        kind: Kind::Base,
        bake_id: new_bake_id(),
        name: naming::sanitize_name_part(&format!("{}-{version}", spec.name)),
        now,
        started: Instant::now(),
        steps: steps(spec, &root_uuid, &version, &built_at, layers),
        packages: vec![],
        layers: layers.iter().map(|l| l.name.clone()).collect(),
        plugins: vec![],
        tags: TagRule::Fixed(base_tags(&spec.name, &version, &built_at, &env)),
        bake_key: None,
        shell: None,
        policy: None,
        disk_size: None,
    };
    let source = Source::Debootstrap(Box::new(Debootstrap {
        spec: spec.clone(),
        root_uuid,
        version,
    }));
    Ok((job, source))
}

/// A base's own tags: its family and version (what bakes on it record as `base_ami_*`), when
/// it was built, who built it, and CI's build tags.
pub fn base_tags(
    name: &str,
    version: &str,
    built_at: &str,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    tags.insert("base_ami_name".to_string(), name.to_string());
    tags.insert("base_ami_version".to_string(), version.to_string());
    tags.insert("creation_time".to_string(), built_at.to_string());
    if !env.is_empty() {
        tags.insert("creator".into(), crate::context::creator(env));
        tags.extend(naming::ci_tags(env));
    }
    tags
}

/// What the session runs after debootstrap. debootstrap makes only the minimal system;
/// everything else is installed with apt inside the prepared chroot (private /dev with by-uuid
/// links, /proc, /sys, no services), where kernel, initramfs and GRUB hooks see what they
/// would see on a real machine.
pub fn steps(
    spec: &BaseSpec,
    root_uuid: &str,
    version: &str,
    built_at: &str,
    layers: &[Layer],
) -> Vec<Step> {
    let mut steps: Vec<Step> = system_files(spec, root_uuid, version, built_at)
        .into_iter()
        .map(|(dest, content, mode)| Step::WriteFile {
            dest,
            content,
            mode,
        })
        .collect();
    let mut packages = vec![spec.kernel.clone(), "systemd-resolved".to_string()];
    packages.extend(spec.packages.iter().cloned());
    steps.push(Step::Apt {
        layer: "base".into(),
        packages,
    });
    steps.push(Step::Grub);
    steps.push(Step::Enable {
        layer: "base".into(),
        units: BASE_UNITS.iter().map(|s| s.to_string()).collect(),
    });
    steps.extend(session::plan_steps(layers, &[], "packages"));
    steps.push(Step::Generalize);
    steps
}

/// The files that make the system boot and network, written after debootstrap. Pure, so the
/// exact content is unit-tested.
pub fn system_files(
    spec: &BaseSpec,
    root_uuid: &str,
    version: &str,
    built_at: &str,
) -> Vec<(PathBuf, String, u32)> {
    let comps = spec.components.join(" ");
    let mut sources = format!(
        "deb {m} {s} {comps}\ndeb {m} {s}-updates {comps}\n",
        m = spec.mirror,
        s = spec.suite
    );
    if let Some(sec) = &spec.security_mirror {
        sources.push_str(&format!("deb {sec} {}-security {comps}\n", spec.suite));
    }
    let base_json = serde_json::json!({
        "name": spec.name,
        "version": version,
        "suite": spec.suite,
        "arch": spec.arch,
        "kernel": spec.kernel,
        "built_at": built_at,
        "root_uuid": root_uuid,
        "builder": format!("bakery {}", env!("CARGO_PKG_VERSION")),
    });
    vec![
        ("/etc/apt/sources.list".into(), sources, 0o644),
        (
            "/etc/fstab".into(),
            format!("# <file system> <mount point> <type> <options> <dump> <pass>\nUUID={root_uuid} / ext4 rw,discard,errors=remount-ro,x-systemd.growfs 0 1\n"),
            0o644,
        ),
        ("/etc/hostname".into(), "localhost\n".into(), 0o644),
        ("/etc/hosts".into(), "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n".into(), 0o644),
        (
            "/etc/systemd/network/90-bakery-dhcp.network".into(),
            "# bakery base: DHCP on every wired NIC (ens5 on Nitro, eth0 on Xen, ens3/enp0s* in QEMU)\n[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nUseHostname=no\n".into(),
            0o644,
        ),
        (
            "/etc/default/grub".into(),
            "# bakery base: boot on EC2 (HVM/Nitro) and QEMU, kernel and GRUB on the serial console\nGRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_DISTRIBUTOR=Debian\nGRUB_CMDLINE_LINUX_DEFAULT=\"\"\nGRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200n8 nvme_core.io_timeout=4294967295\"\nGRUB_TERMINAL=\"console serial\"\nGRUB_SERIAL_COMMAND=\"serial --speed=115200\"\nGRUB_DISABLE_OS_PROBER=true\nGRUB_DISABLE_LINUX_UUID=false\n".into(),
            0o644,
        ),
        ("/etc/bakery/base.json".into(), format!("{}\n", serde_json::to_string_pretty(&base_json).unwrap_or_default()), 0o644),
    ]
}

/// Refuse a spec that cannot be built here before creating anything.
pub fn require_tools() -> Result<()> {
    for tool in ["debootstrap", "sgdisk", "mkfs.ext4", "partx"] {
        if crate::context::which(tool).is_none() {
            return Err(input!(
                "`{tool}` is not installed; run `bakery doctor` for the fix"
            ));
        }
    }
    Ok(())
}

/// What the base made from `d` is: `debootstrap SUITE MIRROR`, the spec's name and version.
pub fn origin(d: &Debootstrap) -> BaseOrigin {
    BaseOrigin {
        image: format!("debootstrap {} {}", d.spec.suite, d.spec.mirror),
        name: Some(d.spec.name.clone()),
        fallback_name: d.spec.name.clone(),
        version: Some(d.version.clone()),
        format: None,
    }
}

/// Make the empty base disk at `disk` (stage `partition disk`).
pub fn open(d: &Debootstrap, disk: &Path, stages: &mut Stages) -> Result<SourceDisk> {
    stages.run("partition disk", |_| partition(d, disk))?;
    let spec = &d.spec;
    Ok(SourceDisk {
        path: disk.to_path_buf(),
        origin: origin(d),
        root_partition: Some(ROOT_PARTITION),
        bootstrap: Some(Bootstrap {
            suite: spec.suite.clone(),
            mirror: spec.mirror.clone(),
            include: vec!["ca-certificates".to_string(), "gpgv".to_string()],
            components: spec.components.clone(),
            arch: spec.arch.clone(),
        }),
        from: From::Local,
    })
}

/// GPT: 1 MiB BIOS boot partition, then the root (Linux root x86-64 type) over the rest, ext4
/// with the spec's label and the UUID fstab names.
fn partition(d: &Debootstrap, disk: &Path) -> Result<()> {
    std::fs::File::create(disk)
        .and_then(|f| f.set_len(d.spec.size.bytes()))
        .with_context(|| format!("creating {}", disk.display()))?;
    run(
        Command::new("sgdisk")
            .args([
                "--zap-all",
                "-n",
                "1:2048:+1M",
                "-t",
                "1:EF02",
                "-c",
                "1:bios",
                "-n",
                "2:0:0",
                "-t",
                "2:8304",
                "-c",
                "2:root",
            ])
            .arg(disk),
        "partitioning the disk with sgdisk (install gdisk)",
    )?;
    // The root filesystem is made on the partition in place (mke2fs with an offset), so no
    // partition mapping is needed yet.
    let pre = layout::read_layout(disk)?;
    let root = pre
        .partitions
        .iter()
        .find(|p| p.number == ROOT_PARTITION)
        .context("sgdisk made no root partition")?;
    run(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                &d.spec.root_label,
                "-U",
                &d.root_uuid,
                "-E",
            ])
            .arg(format!("offset={}", root.start))
            .arg(disk)
            .arg(format!("{}k", root.size / 1024)),
        "making the root filesystem (mkfs.ext4)",
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_files_boot_by_uuid_on_the_serial_console() {
        let spec = BaseSpec::builtin();
        let files = system_files(&spec, "1234-uuid", "v1", "2026-11-25T00:00:00Z");
        let get = |p: &str| {
            files
                .iter()
                .find(|f| f.0 == Path::new(p))
                .map(|f| f.1.clone())
                .unwrap()
        };
        assert!(get("/etc/fstab").contains("UUID=1234-uuid / ext4"));
        let grub = get("/etc/default/grub");
        assert!(grub.contains("console=ttyS0,115200n8"));
        assert!(grub.contains("GRUB_TERMINAL=\"console serial\""));
        let src = get("/etc/apt/sources.list");
        assert!(src.contains("deb http://deb.debian.org/debian bookworm main"));
        assert!(src.contains("bookworm-security"));
        let base: serde_json::Value = serde_json::from_str(&get("/etc/bakery/base.json")).unwrap();
        assert_eq!(base["name"], "bakery-base-bookworm");
        assert_eq!(base["version"], "v1");
        assert!(get("/etc/systemd/network/90-bakery-dhcp.network").contains("DHCP=yes"));
    }

    #[test]
    fn a_base_job_is_named_family_version_and_ends_generalized() {
        let mut spec = BaseSpec::builtin();
        spec.version = Some("7".into());
        let env = vec![("SUDO_USER".to_string(), "ops".to_string())];
        let (job, source) = job(&spec, &[], &env).unwrap();
        assert_eq!(job.name, "bakery-base-bookworm-7");
        assert_eq!(job.kind, Kind::Base);
        assert!(matches!(job.steps.last(), Some(Step::Generalize)));
        assert!(job.steps.iter().any(|s| matches!(s, Step::Grub)));
        match &job.tags {
            TagRule::Fixed(t) => {
                assert_eq!(t["base_ami_version"], "7");
                assert_eq!(t["creator"], "ops");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(source, Source::Debootstrap(d) if d.version == "7"));
    }
}
