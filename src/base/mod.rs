//! `bakery base build`: a bootable Debian disk from nothing. GPT with a 1 MiB BIOS boot partition
//! and an ext4 root, debootstrap, kernel, GRUB on the serial console, fstab by UUID,
//! systemd-networkd DHCP, cloud-init, then the base's layers and a generalize pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::bake::{disk, resolve_layers, Globals};
use crate::cli::BaseBuildArgs;
use crate::disk::image::{self, Format, PendingOutput};
use crate::disk::layout;
use crate::input;
use crate::manifest::{BaseSummary, Manifest, OutputSummary, Timing};
use crate::naming;
use crate::progress::Progress;
use crate::provision::plan::{Bootstrap, Step};
use crate::recipe::base::{BaseSpec, DEFAULT_BASE_YAML};
use crate::sys::cmd::run;
use crate::sys::lock::HostLock;
use crate::sys::signals;
use crate::workdir::{new_bake_id, WorkDir};

pub mod publish;
pub mod refresh;

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
        ("/etc/bakery/base.json".into(), format!("{}\n", serde_json::to_string_pretty(&base_json).unwrap()), 0o644),
    ]
}

/// Units enabled in every base.
pub const BASE_UNITS: &[&str] = &["systemd-networkd", "systemd-resolved", "ssh"];

pub fn build(args: &BaseBuildArgs, g: &Globals) -> Result<Manifest> {
    let (spec, origin) = match &args.spec {
        Some(p) => (BaseSpec::load(p)?, p.display().to_string()),
        None => (
            BaseSpec::builtin(),
            "built-in debian-bookworm.yaml".to_string(),
        ),
    };
    let to_ami = args.output.as_os_str() == "ami";
    let format = if to_ami {
        Format::Raw
    } else {
        Format::from_output_path(&args.output)?
    };
    if to_ami {
        publish::check(&args.publish)?;
    } else {
        PendingOutput::check(&args.output, args.force, "output")?;
    }
    let scratch = tempfile::Builder::new()
        .prefix("bakery-layers-")
        .tempdir()?;
    let layers = resolve_layers(&spec.layers, &args.layer_path, scratch.path())?;
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"spec": origin, "base": spec, "output": args.output, "format": if to_ami { "ami" } else { format.as_str() }})
            )?
        );
        return Err(anyhow::Error::new(DryRun));
    }
    if !to_ami {
        return build_spec(&spec, &layers, &args.output, format, g);
    }
    // Build the disk into a scratch file, then publish it: a full upload (zero blocks omitted)
    // registered as `NAME-VERSION` and copied to the other regions.
    let dir = tempfile::Builder::new()
        .prefix("publish-")
        .tempdir_in(ensure_dir(&g.work_dir)?)?;
    let raw = dir.path().join("base.raw");
    let built = build_spec(&spec, &layers, &raw, Format::Raw, g)?;
    publish::publish(&raw, built, &args.publish, g)
}

fn ensure_dir(p: &Path) -> Result<&Path> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}

/// Marker: a dry run printed its plan and nothing else happens.
#[derive(Debug)]
pub struct DryRun;
impl std::fmt::Display for DryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dry run")
    }
}
impl std::error::Error for DryRun {}

fn build_spec(
    spec: &BaseSpec,
    layers: &[crate::recipe::layer::Layer],
    output: &Path,
    format: Format,
    g: &Globals,
) -> Result<Manifest> {
    let started = Instant::now();
    signals::install();
    let progress = Progress::new(g.quiet);
    let bake_id = new_bake_id();
    let work = WorkDir::create(&g.work_dir, &bake_id)?;
    let now = time::OffsetDateTime::now_utc();
    let stamp = naming::stamp(now);
    let version = spec.version.clone().unwrap_or_else(|| stamp.clone());
    let built_at = now.format(&time::format_description::well_known::Rfc3339)?;
    info!(bake_id = %bake_id, log = %work.log().display(), "building base {} {version}", spec.name);
    let mut timings = Vec::new();

    let t = Instant::now();
    progress.start_step("partition disk");
    let pending = PendingOutput::new(output, &bake_id);
    work.note_partial_output(&pending.tmp)?;
    let disk = if format == Format::Raw {
        pending.tmp.clone()
    } else {
        work.join("disk.raw")
    };
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(spec.size.bytes()))
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
            .arg(&disk),
        "partitioning the disk with sgdisk (install gdisk)",
    )?;
    let root_uuid = uuid::Uuid::new_v4().to_string();
    // The root filesystem is made on the partition through a loop device with an offset, so no
    // partition mapping is needed yet.
    let pre = layout::read_layout(&disk)?;
    let root_part = pre
        .partitions
        .iter()
        .find(|p| p.number == 2)
        .context("sgdisk made no root partition")?
        .clone();
    mkfs_ext4(
        &disk,
        root_part.start,
        root_part.size,
        &spec.root_label,
        &root_uuid,
    )?;
    let layout = layout::read_layout(&disk)?;
    progress.finish_step("partition disk", t.elapsed().as_secs_f64());
    timings.push(Timing::new("partition disk", t.elapsed().as_secs_f64()));

    // debootstrap makes only the minimal system; everything else is installed with apt inside
    // the prepared chroot (private /dev with by-uuid links, /proc, /sys, no services), where
    // kernel, initramfs and GRUB hooks see what they would see on a real machine.
    let mut steps: Vec<Step> = system_files(spec, &root_uuid, &version, &built_at)
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
    for l in layers {
        steps.extend(crate::bake::plan_steps(std::slice::from_ref(l), &[]));
    }
    steps.push(Step::Generalize);
    let include = vec!["ca-certificates".to_string(), "gpgv".to_string()];
    let bootstrap = Bootstrap {
        suite: spec.suite.clone(),
        mirror: spec.mirror.clone(),
        include,
        components: spec.components.clone(),
        arch: spec.arch.clone(),
    };
    let job = disk::DiskJob {
        disk: &disk,
        layout: &layout,
        root_partition: 2,
        bootstrap: Some(bootstrap),
        steps,
        packages: vec![],
        echo_output: g.verbose >= 2,
        plugins: vec![],
        policy: None,
    };
    let outcome =
        disk::provision(job, &work, &progress).map_err(|e| crate::bake::with_log_hint(e, &work))?;
    timings.extend(
        outcome
            .timings
            .iter()
            .map(|(s, secs)| Timing::new(s, *secs)),
    );
    signals::check()?;
    if format == Format::Qcow2 {
        let t = Instant::now();
        image::convert(&disk, Format::Raw, &pending.tmp, Format::Qcow2)?;
        timings.push(Timing::new("write qcow2", t.elapsed().as_secs_f64()));
    }
    let size_bytes = image::virtual_size(&pending.tmp, format)?;
    pending.commit()?;
    let mut tags = BTreeMap::new();
    tags.insert("base_ami_name".to_string(), spec.name.clone());
    tags.insert("base_ami_version".to_string(), version.clone());
    tags.insert("creation_time".to_string(), built_at);
    Ok(Manifest {
        bakery_version: env!("CARGO_PKG_VERSION"),
        kind: "base",
        bake_id,
        name: naming::sanitize_name_part(&format!("{}-{version}", spec.name)),
        package: None,
        packages: vec![],
        base: BaseSummary {
            image: format!("debootstrap {} {}", spec.suite, spec.mirror),
            name: spec.name.clone(),
            version,
            format: None,
        },
        layers: layers.iter().map(|l| l.name.clone()).collect(),
        output: Some(OutputSummary {
            path: std::path::absolute(output)?,
            format: format.as_str(),
            size_bytes,
            file_bytes: image::allocated_bytes(output),
        }),
        amis: vec![],
        upload: None,
        os: outcome.facts.os,
        arch: outcome.facts.arch,
        package_changes: vec![],
        tags,
        timings,
        total_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        log: work.log(),
    })
}

fn mkfs_ext4(disk: &Path, offset: u64, size: u64, label: &str, uuid: &str) -> Result<()> {
    // mke2fs writes into a file region directly with -E offset; size in 1k blocks.
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-U", uuid, "-E"])
            .arg(format!("offset={offset}"))
            .arg(disk)
            .arg(format!("{}k", size / 1024)),
        "making the root filesystem (mkfs.ext4)",
    )
    .map(|_| ())
}

/// The built-in base, built once per content of its YAML and kept under `<work-dir>/bases`.
/// Concurrent bakes wait for one build instead of each building their own.
pub fn cached_default(g: &Globals, progress: &Progress) -> Result<PathBuf> {
    let hash = hex::encode(&Sha256::digest(DEFAULT_BASE_YAML.as_bytes())[..8]);
    let dir = g.work_dir.join("bases");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("debian-bookworm-{hash}.raw"));
    let _lock = HostLock::acquire(&g.work_dir.join("locks"), &format!("base-{hash}"))?;
    if path.exists() {
        return Ok(path);
    }
    progress.println(&format!(
        "building the built-in Debian 12 base once (cached as {})",
        path.display()
    ));
    let spec = BaseSpec::builtin();
    let m = build_spec(&spec, &[], &path, Format::Raw, g)?;
    info!("built-in base ready in {:.0}s", m.total_seconds);
    Ok(path)
}

/// Refuse a spec that cannot be built here before creating anything.
pub fn require_tools() -> Result<()> {
    for tool in ["debootstrap", "sgdisk", "mkfs.ext4", "partx"] {
        if which(tool).is_none() {
            return Err(input!(
                "`{tool}` is not installed; run `bakery doctor` for the fix"
            ));
        }
    }
    Ok(())
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|c| c.is_file())
        })
        .unwrap_or(None)
        .or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|c| c.is_file())
        })
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
}
