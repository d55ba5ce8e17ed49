//! The launch attributes an AMI is registered with — boot mode, IMDS, NitroTPM, ENA, SR-IOV —
//! and how a bake decides them: **inherited** from the base AMI (or, for a base made from
//! nothing, from what its disk can boot), each one **overridden** by a flag or recipe key.
//! Pure, unit-tested; `register.rs` sends them, `describe.rs` reads them back.
//!
//! Values are AWS's (RegisterImage, EC2 API reference): `BootMode` legacy-bios | uefi |
//! uefi-preferred, `ImdsSupport` v2.0, `TpmSupport` v2.0, `EnaSupport` true|false,
//! `SriovNetSupport` simple. NitroTPM needs an instance that boots UEFI (EC2 User Guide,
//! "NitroTPM requirements"), so `tpm-support v2.0` needs boot mode uefi or uefi-preferred (or
//! none on arm64, whose default is uefi).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use super::find::BaseAmi;
use crate::disk::layout::{Layout, TableKind, GPT_BIOS_BOOT, GPT_ESP};

/// How instances launched from the AMI boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMode {
    LegacyBios,
    Uefi,
    UefiPreferred,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::LegacyBios => "legacy-bios",
            BootMode::Uefi => "uefi",
            BootMode::UefiPreferred => "uefi-preferred",
        }
    }
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BootMode {
    type Err = String;
    fn from_str(s: &str) -> Result<BootMode, String> {
        match s {
            "legacy-bios" => Ok(BootMode::LegacyBios),
            "uefi" => Ok(BootMode::Uefi),
            "uefi-preferred" => Ok(BootMode::UefiPreferred),
            _ => Err(format!(
                "`{s}` is not a boot mode; use legacy-bios, uefi or uefi-preferred"
            )),
        }
    }
}

/// `v2.0` (IMDSv2 required / NitroTPM 2.0) or `none` (registered without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum V2Setting {
    #[serde(rename = "v2.0")]
    V2,
    #[serde(rename = "none")]
    None,
}

impl V2Setting {
    /// The RegisterImage value: `Some("v2.0")`, or `None` to leave the attribute out.
    pub fn value(self) -> Option<String> {
        match self {
            V2Setting::V2 => Some("v2.0".into()),
            V2Setting::None => None,
        }
    }
}

impl FromStr for V2Setting {
    type Err = String;
    fn from_str(s: &str) -> Result<V2Setting, String> {
        match s {
            "v2.0" => Ok(V2Setting::V2),
            "none" => Ok(V2Setting::None),
            _ => Err(format!("`{s}`: use v2.0, or none to register without it")),
        }
    }
}

/// `simple` (SR-IOV with the Intel 82599 VF interface) or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SriovSetting {
    Simple,
    None,
}

impl SriovSetting {
    pub fn value(self) -> Option<String> {
        match self {
            SriovSetting::Simple => Some("simple".into()),
            SriovSetting::None => None,
        }
    }
}

impl FromStr for SriovSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<SriovSetting, String> {
        match s {
            "simple" => Ok(SriovSetting::Simple),
            "none" => Ok(SriovSetting::None),
            _ => Err(format!("`{s}`: use simple, or none")),
        }
    }
}

/// Deregistration protection (EnableImageDeregistrationProtection): on, on with AWS's 24-hour
/// cooldown after it is disabled, or off. Recipe: `true`, `false` or `with-cooldown`; flag:
/// `--deregistration-protection[=on|with-cooldown|off]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protection {
    On,
    WithCooldown,
    Off,
}

impl FromStr for Protection {
    type Err = String;
    fn from_str(s: &str) -> Result<Protection, String> {
        match s {
            "on" | "true" => Ok(Protection::On),
            "with-cooldown" => Ok(Protection::WithCooldown),
            "off" | "false" => Ok(Protection::Off),
            _ => Err(format!("`{s}`: use on, with-cooldown or off")),
        }
    }
}

impl<'de> Deserialize<'de> for Protection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Protection, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Protection::On),
            Raw::Bool(false) => Ok(Protection::Off),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What flags and recipe keys say about the launch attributes; `None` everywhere: inherit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeOverrides {
    pub boot_mode: Option<BootMode>,
    pub imds_support: Option<V2Setting>,
    pub tpm_support: Option<V2Setting>,
    pub ena_support: Option<bool>,
    pub sriov_net_support: Option<SriovSetting>,
}

/// A choice of attributes AWS would refuse, or that would make an unbootable image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error("--tpm-support v2.0 needs an AMI that boots UEFI, but its boot mode is {0}; pass --boot-mode uefi (or uefi-preferred) with a disk that has an EFI System Partition")]
    TpmNeedsUefi(String),
    #[error("--boot-mode {mode}: the disk has {has}; it cannot boot {wants}")]
    DiskCannotBoot {
        mode: BootMode,
        has: &'static str,
        wants: &'static str,
    },
}

/// The attributes of `base` (the base AMI, or a from-scratch base's defaults) with the
/// overrides applied. Inheritance is per attribute: what is not overridden stays the base's.
pub fn apply_overrides(base: &BaseAmi, o: &AttributeOverrides) -> BaseAmi {
    let mut out = base.clone();
    if let Some(m) = o.boot_mode {
        out.boot_mode = Some(m.as_str().to_string());
    }
    if let Some(v) = o.imds_support {
        out.imds_support = v.value();
    }
    if let Some(v) = o.tpm_support {
        out.tpm_support = v.value();
    }
    if let Some(v) = o.ena_support {
        out.ena_support = v;
    }
    if let Some(v) = o.sriov_net_support {
        out.sriov_net_support = v.value();
    }
    out
}

/// Check the attributes an AMI is about to be registered with: NitroTPM needs UEFI.
pub fn check(image: &BaseAmi) -> Result<(), AttributeError> {
    if image.tpm_support.is_some() {
        let uefi = match image.boot_mode.as_deref() {
            Some("uefi") | Some("uefi-preferred") => true,
            // No boot mode: the instance type's default, uefi on Graviton (arm64).
            None => image.architecture == "arm64",
            Some(_) => false,
        };
        if !uefi {
            return Err(AttributeError::TpmNeedsUefi(
                image
                    .boot_mode
                    .clone()
                    .unwrap_or_else(|| "unset (legacy-bios on x86_64)".into()),
            ));
        }
    }
    Ok(())
}

/// What a disk can boot, read from its partition table: an EFI System Partition (GPT type, or
/// MBR type 0xef) for UEFI; a BIOS boot partition (GPT) or an MBR for BIOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFirmware {
    pub uefi: bool,
    pub bios: bool,
}

impl DiskFirmware {
    pub fn of(layout: &Layout) -> DiskFirmware {
        let esp = layout
            .partitions
            .iter()
            .any(|p| p.type_id == GPT_ESP || p.type_id == "0xef");
        let bios = match layout.table {
            TableKind::Mbr => true,
            TableKind::Gpt => layout.partitions.iter().any(|p| p.type_id == GPT_BIOS_BOOT),
            _ => false,
        };
        DiskFirmware { uefi: esp, bios }
    }

    /// The boot mode a base made from this disk is registered with by default: uefi-preferred
    /// for a disk that boots both (AWS: "the operating system must support both"), else the
    /// one it boots; None when the table says neither.
    pub fn default_boot_mode(self) -> Option<BootMode> {
        match (self.uefi, self.bios) {
            (true, true) => Some(BootMode::UefiPreferred),
            (true, false) => Some(BootMode::Uefi),
            (false, true) => Some(BootMode::LegacyBios),
            (false, false) => None,
        }
    }

    /// A boot mode asked for that this disk cannot boot (an input error).
    pub fn check(self, mode: BootMode) -> Result<(), AttributeError> {
        let has = match (self.uefi, self.bios) {
            (true, true) => return Ok(()),
            (true, false) => "only an EFI System Partition (UEFI)",
            (false, true) => "no EFI System Partition (BIOS only)",
            (false, false) => return Ok(()), // unknown layout: AWS and the user know better
        };
        let ok = match mode {
            BootMode::LegacyBios => self.bios,
            BootMode::Uefi => self.uefi,
            BootMode::UefiPreferred => self.uefi && self.bios,
        };
        if ok {
            return Ok(());
        }
        Err(AttributeError::DiskCannotBoot {
            mode,
            has,
            wants: match mode {
                BootMode::LegacyBios => "with BIOS",
                BootMode::Uefi => "with UEFI",
                BootMode::UefiPreferred => "both ways",
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::Partition;

    fn base() -> BaseAmi {
        BaseAmi {
            id: "ami-1".into(),
            name: "base".into(),
            region: "us-east-1".into(),
            root_device_name: "/dev/xvda".into(),
            root_snapshot_id: "snap-1".into(),
            root_volume_size_gib: 8,
            block_device_mappings: vec![],
            architecture: "x86_64".into(),
            boot_mode: Some("uefi".into()),
            ena_support: true,
            virtualization_type: "hvm".into(),
            tags: Default::default(),
            version: None,
            imds_support: Some("v2.0".into()),
            tpm_support: Some("v2.0".into()),
            sriov_net_support: Some("simple".into()),
        }
    }

    #[test]
    fn every_attribute_is_inherited_unless_overridden() {
        let b = base();
        assert_eq!(apply_overrides(&b, &AttributeOverrides::default()), b);
        let o = AttributeOverrides {
            boot_mode: Some(BootMode::UefiPreferred),
            imds_support: Some(V2Setting::None),
            ena_support: Some(false),
            ..Default::default()
        };
        let r = apply_overrides(&b, &o);
        assert_eq!(r.boot_mode.as_deref(), Some("uefi-preferred"));
        assert_eq!(r.imds_support, None, "`none` drops the inherited v2.0");
        assert!(!r.ena_support);
        assert_eq!(
            r.tpm_support.as_deref(),
            Some("v2.0"),
            "not overridden: kept"
        );
        assert_eq!(r.sriov_net_support.as_deref(), Some("simple"));
    }

    #[test]
    fn nitro_tpm_needs_uefi() {
        assert!(check(&base()).is_ok());
        let bios = apply_overrides(
            &base(),
            &AttributeOverrides {
                boot_mode: Some(BootMode::LegacyBios),
                ..Default::default()
            },
        );
        let e = check(&bios).unwrap_err();
        assert!(e.to_string().contains("boot mode is legacy-bios"), "{e}");
        let unset = BaseAmi {
            boot_mode: None,
            ..base()
        };
        assert!(check(&unset).is_err(), "x86_64 defaults to legacy-bios");
        let arm = BaseAmi {
            architecture: "arm64".into(),
            ..unset
        };
        assert!(check(&arm).is_ok(), "arm64 defaults to uefi");
        let no_tpm = BaseAmi {
            tpm_support: None,
            ..bios
        };
        assert!(check(&no_tpm).is_ok());
    }

    fn layout(table: TableKind, types: &[&str]) -> Layout {
        Layout {
            table,
            disk_size: 1 << 30,
            partitions: types
                .iter()
                .enumerate()
                .map(|(i, t)| Partition {
                    number: i as u32 + 1,
                    start: 0,
                    size: 0,
                    type_id: t.to_string(),
                    part_uuid: None,
                    fs: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_disk_decides_a_from_scratch_boot_mode() {
        let root = crate::disk::layout::GPT_ROOT_X86_64;
        let hybrid = DiskFirmware::of(&layout(TableKind::Gpt, &[GPT_BIOS_BOOT, GPT_ESP, root]));
        assert_eq!(hybrid.default_boot_mode(), Some(BootMode::UefiPreferred));
        assert!(hybrid.check(BootMode::Uefi).is_ok());
        assert!(hybrid.check(BootMode::LegacyBios).is_ok());
        let bios = DiskFirmware::of(&layout(TableKind::Gpt, &[GPT_BIOS_BOOT, root]));
        assert_eq!(bios.default_boot_mode(), Some(BootMode::LegacyBios));
        let e = bios.check(BootMode::Uefi).unwrap_err().to_string();
        assert!(e.contains("no EFI System Partition"), "{e}");
        assert!(bios.check(BootMode::UefiPreferred).is_err());
        let uefi = DiskFirmware::of(&layout(TableKind::Gpt, &[GPT_ESP, root]));
        assert_eq!(uefi.default_boot_mode(), Some(BootMode::Uefi));
        assert!(uefi.check(BootMode::LegacyBios).is_err());
        let mbr = DiskFirmware::of(&layout(TableKind::Mbr, &["0x83"]));
        assert_eq!(mbr.default_boot_mode(), Some(BootMode::LegacyBios));
        let mbr_esp = DiskFirmware::of(&layout(TableKind::Mbr, &["0xef", "0x83"]));
        assert_eq!(mbr_esp.default_boot_mode(), Some(BootMode::UefiPreferred));
    }

    #[test]
    fn values_parse_as_aws_spells_them() {
        assert_eq!("uefi-preferred".parse(), Ok(BootMode::UefiPreferred));
        assert!("bios"
            .parse::<BootMode>()
            .unwrap_err()
            .contains("legacy-bios"));
        assert_eq!("v2.0".parse(), Ok(V2Setting::V2));
        assert!("v1".parse::<V2Setting>().is_err());
        assert_eq!("simple".parse(), Ok(SriovSetting::Simple));
        assert_eq!("with-cooldown".parse(), Ok(Protection::WithCooldown));
        let p: Protection = serde_yaml_ng::from_str("true").unwrap();
        assert_eq!(p, Protection::On);
        let p: Protection = serde_yaml_ng::from_str("with-cooldown").unwrap();
        assert_eq!(p, Protection::WithCooldown);
        assert!(serde_yaml_ng::from_str::<Protection>("maybe").is_err());
        let b: BootMode = serde_yaml_ng::from_str("legacy-bios").unwrap();
        assert_eq!(b, BootMode::LegacyBios);
    }
}
