//! Recipes (what to bake), base definitions (how to build a base) and layers, read strictly:
//! an unknown or misspelt key is an error naming the file, never a silent default.

pub mod base;
pub mod layer;
pub mod size;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::input;
pub use size::Size;

/// How an AMI bake gets its block device: an EBS volume attached to this EC2 bake host, or the
/// EBS direct APIs and a local loop device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Volume,
    Direct,
}

/// The command-line flags a recipe merges (`bakery bake`), as plain data: the command layer
/// fills it from its clap arguments, so recipes know nothing of the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub base: Option<PathBuf>,
    pub packages: Vec<PathBuf>,
    pub layers: Vec<String>,
    pub output: Option<PathBuf>,
    /// `KEY=VALUE`, as typed.
    pub tags: Vec<String>,
    pub plugins: Vec<String>,
    pub base_name: Option<String>,
    pub region: Option<String>,
    pub copy_to: Vec<String>,
    pub share_with: Vec<String>,
    pub mode: Option<Mode>,
    /// `--allow-downgrade`.
    pub allow_downgrade: bool,
    /// AMI attributes, lifecycle and encryption flags (`kms_key_id_flags`: `KEY|REGION=KEY`).
    pub ami: crate::pipeline::sink::ami_options::AmiOptionSpec,
    /// `--disk-size`, as typed.
    pub disk_size: Option<String>,
}

/// A bake recipe. Relative paths are relative to the recipe file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Recipe {
    /// Base disk image (raw or qcow2). None: the built-in Debian 12 base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<PathBuf>,
    /// Packages (.deb/.rpm), installed in order after the layers.
    #[serde(default)]
    pub packages: Vec<PathBuf>,
    /// Layers (names or directories), applied in order before the packages.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Output file; the extension picks the format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    /// Extra tags for the image.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Base AMI by name pattern (newest owned image that matches), instead of `base`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_name: Option<String>,
    /// Region to register in (with `output: ami`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// More regions to copy the AMI to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_to: Vec<String>,
    /// Accounts granted launch permission.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub share_with: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Plugins run at the bake's hook points (see plugins/README.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<crate::plugin::PluginSpec>,
    /// Allow the bake to downgrade packages the base has (`--allow-downgrade`); refused by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_downgrade: bool,
    /// Base packages the bake may remove (a package's Conflicts/Obsoletes, apt's choice), by
    /// name; any other removal of a base package is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_remove: Vec<String>,
    /// AMI boot mode: legacy-bios, uefi, uefi-preferred (default: the base AMI's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<crate::aws::ami::attributes::BootMode>,
    /// `v2.0` (IMDSv2 required) or `none` (default: the base AMI's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds_support: Option<crate::aws::ami::attributes::V2Setting>,
    /// `v2.0` (NitroTPM; needs UEFI) or `none` (default: the base AMI's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_support: Option<crate::aws::ami::attributes::V2Setting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ena_support: Option<bool>,
    /// `simple` or `none` (default: the base AMI's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov_net_support: Option<crate::aws::ami::attributes::SriovSetting>,
    /// Deprecate the AMIs at this time (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecate_at: Option<String>,
    /// Deprecate the AMIs this long after the bake (90d, 12weeks, 1y).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecate_in: Option<String>,
    /// `true`, `false` or `with-cooldown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistration_protection: Option<crate::aws::ami::attributes::Protection>,
    /// Encrypt every snapshot of every regional AMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<bool>,
    /// The KMS key for every region (id, ARN or alias).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// A KMS key per region (region: key), over `kms-key-id`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub region_kms_key_ids: BTreeMap<String, String>,
    /// Grow the image's disk, root partition and filesystem to this size (`6GiB`); never
    /// smaller than the base. For AMIs a whole number of GiB: the root volume's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<Size>,
}

/// Read a YAML file into `T`, mapping every problem to one line that names the file.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => input!("{}: no such file; check the path", path.display()),
        _ => input!("{}: cannot read: {e}", path.display()),
    })?;
    parse_yaml(&text, &path.display().to_string())
}

pub fn parse_yaml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    if text.trim().is_empty() {
        return Err(input!(
            "{origin}: the file is empty; see the examples in the README"
        ));
    }
    serde_yaml_ng::from_str(text).map_err(|e| {
        let msg = e.to_string().replace('\n', " ");
        input!("{origin}: {msg}")
    })
}

/// `ami-` followed by hex: a base given as an AMI id rather than a file.
pub fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An option that only means something for AMIs (`--output ami`).
pub struct AmiOnly {
    /// The command-line flag.
    pub flag: &'static str,
    /// The recipe key.
    pub key: &'static str,
    pub is_set: fn(&Recipe) -> bool,
}

/// Every option that only applies to `--output ami`: the one table the local-output check
/// reads (a new AMI option adds its row here).
pub const AMI_ONLY: &[AmiOnly] = &[
    AmiOnly {
        flag: "--region",
        key: "region",
        is_set: |r| r.region.is_some(),
    },
    AmiOnly {
        flag: "--copy-to",
        key: "copy-to",
        is_set: |r| !r.copy_to.is_empty(),
    },
    AmiOnly {
        flag: "--share-with",
        key: "share-with",
        is_set: |r| !r.share_with.is_empty(),
    },
    AmiOnly {
        flag: "--mode",
        key: "mode",
        is_set: |r| r.mode.is_some(),
    },
    AmiOnly {
        flag: "--boot-mode",
        key: "boot-mode",
        is_set: |r| r.boot_mode.is_some(),
    },
    AmiOnly {
        flag: "--imds-support",
        key: "imds-support",
        is_set: |r| r.imds_support.is_some(),
    },
    AmiOnly {
        flag: "--tpm-support",
        key: "tpm-support",
        is_set: |r| r.tpm_support.is_some(),
    },
    AmiOnly {
        flag: "--ena-support",
        key: "ena-support",
        is_set: |r| r.ena_support.is_some(),
    },
    AmiOnly {
        flag: "--sriov-net-support",
        key: "sriov-net-support",
        is_set: |r| r.sriov_net_support.is_some(),
    },
    AmiOnly {
        flag: "--deprecate-at",
        key: "deprecate-at",
        is_set: |r| r.deprecate_at.is_some(),
    },
    AmiOnly {
        flag: "--deprecate-in",
        key: "deprecate-in",
        is_set: |r| r.deprecate_in.is_some(),
    },
    AmiOnly {
        flag: "--deregistration-protection",
        key: "deregistration-protection",
        is_set: |r| r.deregistration_protection.is_some(),
    },
    AmiOnly {
        flag: "--encrypt",
        key: "encrypt",
        is_set: |r| r.encrypt == Some(true),
    },
    AmiOnly {
        flag: "--kms-key-id",
        key: "kms-key-id",
        is_set: |r| r.kms_key_id.is_some(),
    },
    AmiOnly {
        flag: "--kms-key-id",
        key: "region-kms-key-ids",
        is_set: |r| !r.region_kms_key_ids.is_empty(),
    },
];

impl Recipe {
    /// Where the bake goes: AMIs (`output: ami`) or a file.
    pub fn wants_ami(&self) -> bool {
        self.output.as_ref().is_some_and(|o| o.as_os_str() == "ami")
    }

    /// The AMI-only options ([`AMI_ONLY`]) this recipe sets although its output is a file: each
    /// would be silently ignored, so a bake refuses them (input error naming the first).
    pub fn ami_only_options_on_a_file(&self) -> Vec<&'static AmiOnly> {
        if self.wants_ami() {
            return vec![];
        }
        AMI_ONLY.iter().filter(|o| (o.is_set)(self)).collect()
    }

    /// Load a recipe file and make its relative paths absolute against the file's directory.
    pub fn load(path: &Path) -> Result<Recipe> {
        let mut r: Recipe = load_yaml(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                dir.join(p)
            }
        };
        r.base = r.base.as_ref().map(|b| {
            if is_ami_id(&b.to_string_lossy()) {
                b.clone()
            } else {
                abs(b)
            }
        });
        r.output = r.output.as_ref().map(|o| {
            if o.as_os_str() == "ami" {
                o.clone()
            } else {
                abs(o)
            }
        });
        // Files are relative to the recipe; names and URLs stay as written (package::spec).
        r.packages = r
            .packages
            .iter()
            .map(|p| {
                let exists = dir.join(p).exists();
                match crate::package::spec::parse(&p.to_string_lossy(), exists) {
                    Ok(crate::package::spec::PackageSpec::File(_)) => abs(p),
                    _ => p.clone(),
                }
            })
            .collect();
        r.layers = r
            .layers
            .iter()
            .map(|l| {
                if layer::is_path_like(l) && !Path::new(l).is_absolute() {
                    dir.join(l).display().to_string()
                } else {
                    l.clone()
                }
            })
            .collect();
        Ok(r)
    }

    /// Merge command-line flags over a recipe: scalars replace, lists given on the command line
    /// replace the recipe's lists (so CI can pass "the package of this build"), tags merge with
    /// the flag winning per key.
    pub fn merge_flags(mut self, args: &Overrides) -> Result<Recipe> {
        if let Some(b) = &args.base {
            self.base = Some(b.clone());
        }
        if !args.packages.is_empty() {
            self.packages = args.packages.clone();
        }
        if !args.layers.is_empty() {
            self.layers = args.layers.clone();
        }
        if let Some(o) = &args.output {
            self.output = Some(o.clone());
        }
        if let Some(b) = &args.base_name {
            self.base_name = Some(b.clone());
            self.base = None;
        }
        if args.base.is_some() {
            self.base_name = None;
        }
        if let Some(r) = &args.region {
            self.region = Some(r.clone());
        }
        if !args.copy_to.is_empty() {
            self.copy_to = args.copy_to.clone();
        }
        if !args.share_with.is_empty() {
            self.share_with = args.share_with.clone();
        }
        if args.mode.is_some() {
            self.mode = args.mode;
        }
        if args.allow_downgrade {
            self.allow_downgrade = true;
        }
        self.merge_ami_flags(&args.ami);
        if let Some(s) = &args.disk_size {
            self.disk_size = Some(Size::parse(s).map_err(|e| input!("--disk-size {e}"))?);
        }
        for name in &args.plugins {
            if !self.plugins.iter().any(|p| &p.name == name) {
                self.plugins.push(crate::plugin::PluginSpec::named(name));
            }
        }
        for t in &args.tags {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| input!("--tag `{t}`: write it as KEY=VALUE"))?;
            self.tags.insert(k.to_string(), v.to_string());
        }
        Ok(self)
    }
}

impl Recipe {
    /// AMI option flags over the recipe's keys: each flag given replaces its key;
    /// `--kms-key-id KEY` replaces `kms-key-id`, `--kms-key-id REGION=KEY` sets that region
    /// in `region-kms-key-ids`.
    pub fn merge_ami_flags(&mut self, f: &crate::pipeline::sink::ami_options::AmiOptionSpec) {
        macro_rules! over {
            ($($field:ident),*) => { $( if f.$field.is_some() { self.$field = f.$field.clone(); } )* };
        }
        over!(
            boot_mode,
            imds_support,
            tpm_support,
            ena_support,
            sriov_net_support,
            deregistration_protection
        );
        if f.deprecate_at.is_some() || f.deprecate_in.is_some() {
            self.deprecate_at = f.deprecate_at.clone();
            self.deprecate_in = f.deprecate_in.clone();
        }
        if f.encrypt {
            self.encrypt = Some(true);
        }
        for k in &f.kms_key_id_flags {
            match k.split_once('=') {
                Some((region, key)) => {
                    self.region_kms_key_ids
                        .insert(region.trim().to_string(), key.trim().to_string());
                }
                None => self.kms_key_id = Some(k.trim().to_string()),
            }
        }
    }

    /// The recipe's AMI options, for the AMI sink (flags already merged).
    pub fn ami_options(&self) -> crate::pipeline::sink::ami_options::AmiOptionSpec {
        crate::pipeline::sink::ami_options::AmiOptionSpec {
            boot_mode: self.boot_mode,
            imds_support: self.imds_support,
            tpm_support: self.tpm_support,
            ena_support: self.ena_support,
            sriov_net_support: self.sriov_net_support,
            deprecate_at: self.deprecate_at.clone(),
            deprecate_in: self.deprecate_in.clone(),
            deregistration_protection: self.deregistration_protection,
            encrypt: self.encrypt.unwrap_or(false),
            kms_key_id: self.kms_key_id.clone(),
            region_kms_key_ids: self.region_kms_key_ids.clone(),
            kms_key_id_flags: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_option_keys_read_and_flags_win() {
        let r = parse_yaml::<Recipe>(
            "boot-mode: uefi\nimds-support: v2.0\nderegistration-protection: with-cooldown\nencrypt: true\nkms-key-id: alias/app\nregion-kms-key-ids: {us-west-2: alias/west}\ndeprecate-in: 90d\n",
            "r.yaml",
        )
        .unwrap();
        let flags = Overrides {
            ami: crate::pipeline::sink::ami_options::AmiOptionSpec {
                boot_mode: Some(crate::aws::ami::attributes::BootMode::UefiPreferred),
                deprecate_at: Some("2027-01-01T00:00:00Z".into()),
                kms_key_id_flags: vec!["eu-west-1=alias/eu".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let o = r.merge_flags(&flags).unwrap().ami_options();
        assert_eq!(
            o.boot_mode,
            Some(crate::aws::ami::attributes::BootMode::UefiPreferred)
        );
        assert_eq!(
            o.imds_support,
            Some(crate::aws::ami::attributes::V2Setting::V2)
        );
        assert_eq!(
            o.deregistration_protection,
            Some(crate::aws::ami::attributes::Protection::WithCooldown)
        );
        assert!(o.encrypt);
        assert_eq!(o.kms_key_id.as_deref(), Some("alias/app"));
        assert_eq!(o.region_kms_key_ids.len(), 2);
        assert_eq!(o.deprecate_at.as_deref(), Some("2027-01-01T00:00:00Z"));
        assert_eq!(o.deprecate_in, None, "--deprecate-at replaces deprecate-in");
        let e = parse_yaml::<Recipe>("boot-mode: bios\n", "r.yaml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.yaml: boot-mode: unknown variant `bios`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_file_and_key() {
        let err = parse_yaml::<Recipe>("bse: x.raw\n", "app.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("app.yaml: unknown field `bse`"), "{msg}");
        assert!(!msg.contains('\n'));
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_INPUT);
    }

    #[test]
    fn wrong_type_and_bad_yaml_are_errors() {
        let msg = parse_yaml::<Recipe>("packages: 3\n", "r.yaml")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("r.yaml: packages: invalid type"), "{msg}");
        assert!(parse_yaml::<Recipe>("packages: [a\n", "r.yaml").is_err());
        assert!(parse_yaml::<Recipe>("", "r.yaml")
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse_yaml::<Recipe>(
            "base: b.raw\npackages: [a.deb]\nlayers: [jvm-tomcat]\ntags: {team: x, env: dev}\n",
            "r.yaml",
        )
        .unwrap();
        let args = Overrides {
            packages: vec!["c.deb".into(), "d.rpm".into()],
            output: Some("o.qcow2".into()),
            tags: vec!["env=prod".into(), "k=v=w".into()],
            ..Default::default()
        };
        let r = file.merge_flags(&args).unwrap();
        assert_eq!(r.base, Some("b.raw".into()));
        assert_eq!(
            r.packages,
            vec![PathBuf::from("c.deb"), PathBuf::from("d.rpm")]
        );
        assert_eq!(r.layers, vec!["jvm-tomcat".to_string()]);
        assert_eq!(r.tags["env"], "prod");
        assert_eq!(r.tags["team"], "x");
        assert_eq!(r.tags["k"], "v=w");
        assert!(Recipe::default()
            .merge_flags(&Overrides {
                tags: vec!["novalue".into()],
                ..Default::default()
            })
            .is_err());
    }

    #[test]
    fn relative_paths_follow_the_recipe_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.yaml");
        std::fs::write(
            &f,
            "base: ../b.raw\npackages: [pkgs/a.deb]\nlayers: [jvm-tomcat, ./mylayer]\n",
        )
        .unwrap();
        let r = Recipe::load(&f).unwrap();
        assert_eq!(r.base.unwrap(), dir.path().join("../b.raw"));
        assert_eq!(r.packages[0], dir.path().join("pkgs/a.deb"));
        assert_eq!(r.layers[0], "jvm-tomcat");
        assert_eq!(
            r.layers[1],
            dir.path().join("./mylayer").display().to_string()
        );
    }

    #[test]
    fn ami_only_options_on_a_file_output_are_listed_from_the_one_table() {
        let local = Recipe {
            output: Some("out.raw".into()),
            region: Some("us-east-1".into()),
            mode: Some(Mode::Direct),
            ..Default::default()
        };
        let flags: Vec<&str> = local
            .ami_only_options_on_a_file()
            .iter()
            .map(|o| o.flag)
            .collect();
        assert_eq!(flags, ["--region", "--mode"]);
        // AMI attributes, lifecycle and encryption are in the same table (the bake and base
        // build checks read only it).
        let attrs = Recipe {
            output: Some("out.raw".into()),
            encrypt: Some(true),
            deprecate_in: Some("90d".into()),
            ..Default::default()
        };
        let keys: Vec<&str> = attrs
            .ami_only_options_on_a_file()
            .iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["deprecate-in", "encrypt"]);
        let ami = Recipe {
            output: Some("ami".into()),
            ..local.clone()
        };
        assert!(ami.ami_only_options_on_a_file().is_empty());
        let plain = Recipe {
            output: Some("out.qcow2".into()),
            copy_to: vec!["eu-west-1".into()],
            share_with: vec!["123456789012".into()],
            ..Default::default()
        };
        let flags: Vec<&str> = plain
            .ami_only_options_on_a_file()
            .iter()
            .map(|o| o.flag)
            .collect();
        assert_eq!(flags, ["--copy-to", "--share-with"]);
    }
}
