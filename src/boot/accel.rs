//! Choosing KVM or TCG. `/dev/kvm` alone proves nothing (nested hosts expose it without
//! vmx/svm and guests then hang), so KVM needs the CPU flags *and* a working probe.

use crate::cli::boot::Accel;

/// The accelerator chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub kvm: bool,
    pub reason: String,
}

impl AccelChoice {
    pub fn name(&self) -> &'static str {
        if self.kvm {
            "kvm"
        } else {
            "tcg"
        }
    }
}

/// Why KVM cannot be used on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KvmUnusable(pub String);

impl From<&str> for KvmUnusable {
    fn from(s: &str) -> KvmUnusable {
        KvmUnusable(s.to_string())
    }
}

/// `--accel kvm` on a host where KVM does not work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--accel kvm: KVM is not usable here ({0}); use --accel tcg or auto")]
pub struct KvmRequired(pub KvmUnusable);

/// Does /proc/cpuinfo text show hardware virtualization (vmx or svm)?
pub fn cpu_has_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':'))
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Decide from the request, the cpuinfo text and a KVM probe (called only when needed).
pub fn decide(
    requested: Accel,
    cpuinfo: &str,
    probe_kvm: impl FnOnce() -> Result<(), KvmUnusable>,
) -> Result<AccelChoice, KvmRequired> {
    if requested == Accel::Tcg {
        return Ok(AccelChoice {
            kvm: false,
            reason: "--accel tcg".into(),
        });
    }
    let unusable = if !cpu_has_virt(cpuinfo) {
        Some(KvmUnusable::from("the CPU flags show no vmx/svm"))
    } else {
        probe_kvm().err()
    };
    match (requested, unusable) {
        (_, None) => Ok(AccelChoice {
            kvm: true,
            reason: "/dev/kvm works".into(),
        }),
        (Accel::Kvm, Some(why)) => Err(KvmRequired(why)),
        (_, Some(why)) => Ok(AccelChoice {
            kvm: false,
            reason: format!("no usable KVM: {why}"),
        }),
    }
}

/// Probe the real system: open /dev/kvm, check the API version and create (and drop) a VM.
pub fn probe_kvm() -> Result<(), KvmUnusable> {
    use std::os::fd::AsRawFd;
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| KvmUnusable(format!("cannot open /dev/kvm: {e}")))?;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00; // _IO(KVMIO, 0x00)
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01; // _IO(KVMIO, 0x01)
                                                 // SAFETY: `kvm` is an open fd for the whole call; KVM_GET_API_VERSION takes no argument.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if version != 12 {
        return Err(KvmUnusable(format!(
            "KVM_GET_API_VERSION returned {version}, expected 12"
        )));
    }
    // SAFETY: as above; KVM_CREATE_VM takes the machine type (0) and returns a new fd or -1.
    let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM as _, 0) };
    if vm < 0 {
        return Err(KvmUnusable(format!(
            "KVM_CREATE_VM failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `vm` is a fresh fd we own and close exactly once.
    unsafe { libc::close(vm) };
    Ok(())
}

/// Decide for this host.
pub fn choose(requested: Accel) -> Result<AccelChoice, KvmRequired> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    decide(requested, &cpuinfo, probe_kvm)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMX: &str = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n";
    const NONE: &str = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor sse2\n";

    #[test]
    fn flags() {
        assert!(cpu_has_virt(VMX));
        assert!(cpu_has_virt("flags : svm"));
        assert!(!cpu_has_virt(NONE));
        assert!(!cpu_has_virt(
            "vmx flags are elsewhere\nmodel name : vmxfoo"
        ));
        assert!(!cpu_has_virt(""));
    }

    #[test]
    fn auto_uses_kvm_only_with_flags_and_probe() {
        assert!(decide(Accel::Auto, VMX, || Ok(())).unwrap().kvm);
        let c = decide(Accel::Auto, VMX, || Err("KVM_CREATE_VM failed".into())).unwrap();
        assert!(!c.kvm && c.reason.contains("KVM_CREATE_VM"), "{c:?}");
        let c = decide(Accel::Auto, NONE, || panic!("no probe without flags")).unwrap();
        assert_eq!(c.name(), "tcg");
        assert!(c.reason.contains("vmx/svm"));
    }

    #[test]
    fn explicit_choices() {
        assert!(
            !decide(Accel::Tcg, VMX, || panic!("no probe for tcg"))
                .unwrap()
                .kvm
        );
        assert!(decide(Accel::Kvm, VMX, || Ok(())).unwrap().kvm);
        let e = decide(Accel::Kvm, NONE, || Ok(())).unwrap_err().to_string();
        assert!(e.contains("--accel tcg"), "{e}");
    }
}
