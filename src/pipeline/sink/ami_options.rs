//! The AMI options of a bake (issue 15), as the AMI sink takes them: launch attributes
//! (inherited from the base, overridden per attribute), lifecycle (deprecation, deregistration
//! protection) and encryption (`--encrypt`, KMS keys per region). Sharing is the target's
//! `share_with`. The command layer fills an [`AmiOptionSpec`] from flags and recipe keys;
//! [`AmiOptionSpec::resolve`] checks it (one-line input errors, before anything is made).

use std::collections::BTreeMap;

use anyhow::Result;

use crate::aws::ami::attributes::{
    AttributeOverrides, BootMode, Protection, SriovSetting, V2Setting,
};
use crate::aws::ami::lifecycle::{deprecation_time, Lifecycle};
use crate::aws::encryption::{EncryptionError, KmsKeys};
use crate::input;

/// The options as typed: flags (which win) merged over recipe keys by the command layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AmiOptionSpec {
    pub boot_mode: Option<BootMode>,
    pub imds_support: Option<V2Setting>,
    pub tpm_support: Option<V2Setting>,
    pub ena_support: Option<bool>,
    pub sriov_net_support: Option<SriovSetting>,
    /// RFC 3339 time (`--deprecate-at`).
    pub deprecate_at: Option<String>,
    /// A duration from the bake's start (`--deprecate-in 90d`).
    pub deprecate_in: Option<String>,
    pub deregistration_protection: Option<Protection>,
    pub encrypt: bool,
    /// Recipe `kms-key-id`: the key for every region.
    pub kms_key_id: Option<String>,
    /// Recipe `region-kms-key-ids`: region -> key.
    pub region_kms_key_ids: BTreeMap<String, String>,
    /// Flags `--kms-key-id KEY|REGION=KEY`, over the recipe's.
    pub kms_key_id_flags: Vec<String>,
}

/// Checked options: what the AMI sink carries out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AmiOptions {
    pub attributes: AttributeOverrides,
    pub lifecycle: Lifecycle,
    pub encrypt: bool,
    pub kms_keys: KmsKeys,
}

impl AmiOptionSpec {
    /// Check what can be checked without AWS; `now_secs`: the bake's start (Unix seconds),
    /// from which `--deprecate-in` counts.
    pub fn resolve(&self, now_secs: i64) -> Result<AmiOptions> {
        let kms_keys = KmsKeys::parse(
            self.kms_key_id.as_deref(),
            &self.region_kms_key_ids,
            &self.kms_key_id_flags,
        )
        .map_err(|e| input!("{e}"))?;
        if !kms_keys.is_empty() && !self.encrypt {
            return Err(input!("{}", EncryptionError::KeyWithoutEncrypt));
        }
        if self.tpm_support == Some(V2Setting::V2) && self.boot_mode == Some(BootMode::LegacyBios) {
            return Err(input!(
                "--tpm-support v2.0 needs an AMI that boots UEFI; --boot-mode legacy-bios cannot (use uefi or uefi-preferred)"
            ));
        }
        let deprecate_at = deprecation_time(
            self.deprecate_at.as_deref(),
            self.deprecate_in.as_deref(),
            now_secs,
        )
        .map_err(|e| input!("{e}"))?;
        Ok(AmiOptions {
            attributes: AttributeOverrides {
                boot_mode: self.boot_mode,
                imds_support: self.imds_support,
                tpm_support: self.tpm_support,
                ena_support: self.ena_support,
                sriov_net_support: self.sriov_net_support,
            },
            lifecycle: Lifecycle {
                deprecate_at,
                protection: self.deregistration_protection,
            },
            encrypt: self.encrypt,
            kms_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code, EXIT_INPUT};

    const NOW: i64 = 1_795_000_000;

    #[test]
    fn options_are_checked_before_anything_is_made() {
        let ok = AmiOptionSpec {
            boot_mode: Some(BootMode::Uefi),
            tpm_support: Some(V2Setting::V2),
            deprecate_in: Some("30d".into()),
            encrypt: true,
            kms_key_id_flags: vec!["us-west-2=alias/bakery".into()],
            ..Default::default()
        }
        .resolve(NOW)
        .unwrap();
        assert_eq!(ok.lifecycle.deprecate_at.unwrap().secs(), NOW + 30 * 86400);
        assert_eq!(ok.kms_keys.for_region("us-west-2"), Some("alias/bakery"));
        for (spec, want) in [
            (
                AmiOptionSpec {
                    kms_key_id_flags: vec!["alias/x".into()],
                    ..Default::default()
                },
                "needs --encrypt",
            ),
            (
                AmiOptionSpec {
                    tpm_support: Some(V2Setting::V2),
                    boot_mode: Some(BootMode::LegacyBios),
                    ..Default::default()
                },
                "needs an AMI that boots UEFI",
            ),
            (
                AmiOptionSpec {
                    deprecate_at: Some("2020-01-01T00:00:00Z".into()),
                    ..Default::default()
                },
                "in the past",
            ),
        ] {
            let e = spec.resolve(NOW).unwrap_err();
            assert_eq!(exit_code(&e), EXIT_INPUT);
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
