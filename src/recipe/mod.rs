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

impl Recipe {
    /// Where the bake goes: AMIs (`output: ami`) or a file.
    pub fn wants_ami(&self) -> bool {
        self.output.as_ref().is_some_and(|o| o.as_os_str() == "ami")
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
        r.packages = r.packages.iter().map(abs).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
