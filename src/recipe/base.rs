//! Base image definitions (base-images/*.yaml): what `bakery base build` makes from scratch.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::Size;
use crate::input;

/// The built-in default base, so an installed binary can bake without the source tree.
pub const DEFAULT_BASE_YAML: &str = include_str!("../../base-images/debian-trixie.yaml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BaseSpec {
    /// Image family name, e.g. bakery-base-bookworm (becomes base_ami_name).
    pub name: String,
    /// Version recorded as base_ami_version; defaults to the build time (YYYYMMDDHHMM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Debian suite (bookworm, trixie).
    pub suite: String,
    pub mirror: String,
    /// Mirror for SUITE-security; none disables the security source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_mirror: Option<String>,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    #[serde(default = "default_arch")]
    pub arch: String,
    /// Disk size (the root filesystem takes everything after the 1 MiB BIOS boot partition).
    pub size: Size,
    #[serde(default = "default_kernel")]
    pub kernel: String,
    /// Extra packages installed by debootstrap.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Layers applied after the system is bootable.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Root filesystem label.
    #[serde(default = "default_label")]
    pub root_label: String,
}

fn default_components() -> Vec<String> {
    vec!["main".into()]
}
fn default_arch() -> String {
    "amd64".into()
}
fn default_kernel() -> String {
    "linux-image-cloud-amd64".into()
}
fn default_label() -> String {
    "root".into()
}

impl BaseSpec {
    pub fn load(path: &Path) -> Result<BaseSpec> {
        let spec: BaseSpec = super::load_yaml(path)?;
        spec.validate(&path.display().to_string())?;
        Ok(spec)
    }

    pub fn builtin() -> BaseSpec {
        let spec: BaseSpec = super::parse_yaml(DEFAULT_BASE_YAML, "built-in debian-trixie.yaml")
            .expect("built-in base parses");
        spec
    }

    pub fn validate(&self, origin: &str) -> Result<()> {
        if self.arch != "amd64" {
            return Err(input!(
                "{origin}: arch `{}` is not supported yet; use amd64",
                self.arch
            ));
        }
        if self.size.bytes() < 1 << 30 {
            return Err(input!(
                "{origin}: size {} is too small for a bootable Debian; use at least 1GiB",
                self.size
            ));
        }
        if !(self.mirror.starts_with("http://")
            || self.mirror.starts_with("https://")
            || self.mirror.starts_with("file:/"))
        {
            return Err(input!(
                "{origin}: mirror `{}` must be an http(s):// or file:/ URL",
                self.mirror
            ));
        }
        let bad = |s: &str| {
            s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.+:_".contains(c))
        };
        if bad(&self.suite) {
            return Err(input!(
                "{origin}: suite `{}` is not a Debian suite name",
                self.suite
            ));
        }
        if let Some(p) = self.packages.iter().chain([&self.kernel]).find(|p| bad(p)) {
            return Err(input!("{origin}: package name `{p}` is not valid"));
        }
        // The name becomes the AMI name (`{name}-{version}`) when the base is published.
        if let Some(c) = self
            .name
            .chars()
            .find(|c| !crate::naming::is_ami_name_char(*c))
        {
            return Err(input!("{origin}: name `{}` contains `{c}`, which AWS does not allow in AMI names; use letters, digits and ()[] ./-'@_", self.name));
        }
        if self.name.is_empty() || self.name.chars().count() > crate::naming::MAX_AMI_NAME - 13 {
            return Err(input!("{origin}: name must be 1 to {} characters (it becomes the AMI name with a version)", crate::naming::MAX_AMI_NAME - 13));
        }
        if self.root_label.is_empty() || self.root_label.len() > 16 {
            return Err(input!(
                "{origin}: root-label must be 1 to 16 characters (ext4 limit)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_base_is_valid() {
        let b = BaseSpec::builtin();
        b.validate("builtin").unwrap();
        assert_eq!(b.suite, "trixie");
        assert!(b.packages.iter().any(|p| p == "cloud-init"));
    }

    #[test]
    fn validation_names_the_field() {
        let mut b = BaseSpec::builtin();
        b.size = Size(100 << 20);
        assert!(b
            .validate("x.yaml")
            .unwrap_err()
            .to_string()
            .starts_with("x.yaml: size"));
        let mut b = BaseSpec::builtin();
        b.packages.push("bad pkg".into());
        assert!(b
            .validate("x.yaml")
            .unwrap_err()
            .to_string()
            .contains("bad pkg"));
        let mut b = BaseSpec::builtin();
        b.name = "web base!".into();
        assert!(b
            .validate("x.yaml")
            .unwrap_err()
            .to_string()
            .starts_with("x.yaml: name `web base!` contains `!`"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = format!("{DEFAULT_BASE_YAML}\nflavour: vanilla\n");
        let e = crate::recipe::parse_yaml::<BaseSpec>(&text, "b.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `flavour`"), "{e}");
    }
}
