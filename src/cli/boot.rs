//! `bakery boot`: start a baked image under QEMU and check that the app answers.
//!
//! clap definitions only; the work is in [`crate::boot`].

use std::path::PathBuf;

/// Boot a baked raw/qcow2 image under QEMU (through its own bootloader, on a throw-away
/// overlay) and wait until the app answers.
#[derive(clap::Args, Debug, Clone)]
pub struct BootArgs {
    /// Image file to boot (raw or qcow2). It is never written: the VM writes to a temporary
    /// qcow2 overlay.
    pub image: PathBuf,

    /// Health check: `http://localhost:PORT/PATH` (GET through the forwarded port, any 2xx is
    /// healthy; the host part means the guest) or `tcp:PORT` (a TCP connection that sends at
    /// least one byte, e.g. an SSH banner). The port is forwarded automatically.
    #[arg(long, value_name = "URL|tcp:PORT")]
    pub health: Option<String>,

    /// Health command run in the guest over SSH as root (exit 0 is healthy). Needs --ssh-key,
    /// with the private key next to the public one (same path without `.pub`).
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,

    /// Seconds to wait for the health check to pass, counted from QEMU's start.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,

    /// Forward a guest TCP port to 127.0.0.1: `GUEST_PORT` (free host port, printed) or
    /// `HOST_PORT:GUEST_PORT`. Repeatable. The health check's port is forwarded automatically.
    #[arg(long, value_name = "GUEST_PORT|HOST:GUEST")]
    pub forward: Vec<String>,

    /// Public SSH key to authorize for root and the image's default user (cloud-init seed).
    /// Guest port 22 is then forwarded too.
    #[arg(long, value_name = "PUBKEY_FILE")]
    pub ssh_key: Option<PathBuf>,

    /// CI mode: exit 0 as soon as the image is healthy, and stop the VM.
    #[arg(long, conflicts_with = "console")]
    pub check: bool,

    /// Stream the serial console to stderr and keep the VM running until Ctrl-C.
    #[arg(long)]
    pub console: bool,

    /// Also keep the serial console log at this path (it is otherwise deleted on success and
    /// kept in the temp dir on failure).
    #[arg(long, value_name = "PATH")]
    pub console_log: Option<PathBuf>,

    /// Accelerator: `auto` uses KVM only when the CPU flags say so and /dev/kvm works, else TCG
    /// (software emulation, several times slower).
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,

    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1536)]
    pub memory: u32,

    /// Guest virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,

    /// Hostname given to the guest through the cloud-init seed.
    #[arg(long, default_value = "bakery-boot")]
    pub hostname: String,

    /// Firmware: `bios` (SeaBIOS, the image's BIOS boot partition), `uefi` (OVMF from Debian's `ovmf` package, a fresh copy of its variable store per boot; the image's ESP) or `uefi-secure` (the same with Secure Boot enforced and Microsoft's keys enrolled, as on EC2 and most hardware: only a signed shim → GRUB → kernel chain boots).
    #[arg(long, value_enum, default_value_t = Firmware::Bios)]
    pub firmware: Firmware,
}

/// Which firmware the VM boots with.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// Legacy BIOS (SeaBIOS): GRUB from the BIOS boot partition.
    Bios,
    /// UEFI (OVMF): shim and GRUB from the EFI System Partition.
    Uefi,
    /// UEFI with Secure Boot enforced (OVMF's `secboot` build with Microsoft's keys enrolled).
    #[value(name = "uefi-secure")]
    #[serde(rename = "uefi-secure")]
    UefiSecure,
}

/// Which QEMU accelerator to use.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when it really works, otherwise TCG.
    Auto,
    /// Hardware virtualization; fails if /dev/kvm is unusable.
    Kvm,
    /// Software emulation (always available, slow).
    Tcg,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    struct Wrap {
        #[command(flatten)]
        args: BootArgs,
    }

    #[test]
    fn boot_args_are_valid() {
        Wrap::command().debug_assert();
    }

    #[test]
    fn defaults_and_repeatable_forward() {
        let w = Wrap::parse_from([
            "x",
            "a.qcow2",
            "--health",
            "http://localhost:8080/",
            "--forward",
            "22",
            "--forward",
            "9000:80",
            "--check",
        ]);
        assert_eq!(w.args.timeout, 300);
        assert_eq!(w.args.memory, 1536);
        assert_eq!(w.args.cpus, 2);
        assert_eq!(w.args.accel, Accel::Auto);
        assert_eq!(w.args.hostname, "bakery-boot");
        assert_eq!(w.args.firmware, Firmware::Bios);
        assert_eq!(w.args.forward, vec!["22", "9000:80"]);
        assert!(w.args.check && !w.args.console);
    }

    #[test]
    fn check_and_console_conflict() {
        assert!(Wrap::try_parse_from(["x", "a.raw", "--check", "--console"]).is_err());
    }
}
