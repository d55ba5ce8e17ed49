//! Layers: reusable provisioning steps kept as data (provisioners/NAME/layer.yaml + scripts).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::input;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LayerFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub steps: Vec<LayerStep>,
}

/// One step of a layer, written as a single-key map in YAML (`- apt: [tomcat10]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum LayerStep {
    /// Install packages from the image's own repositories (apt-get, or dnf/yum on RPM bases).
    Apt(Vec<String>),
    /// Run a script from the layer directory inside the chroot.
    Script(PathBuf),
    /// Run an inline shell command inside the chroot.
    Run(String),
    /// Enable systemd units so they start at boot (never started during the bake).
    Enable(Vec<String>),
    /// Copy a file from the layer directory into the image.
    File(FileStep),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileStep {
    pub src: PathBuf,
    pub dest: PathBuf,
    #[serde(default = "default_mode")]
    pub mode: String,
}

fn default_mode() -> String {
    "0644".into()
}

/// A layer resolved to a directory on disk, ready to run.
#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    pub dir: PathBuf,
    pub file: LayerFile,
}

/// Layers compiled into the binary so an installed `bakery` works without the source tree.
const EMBEDDED: &[(&str, &[(&str, &str)])] = &[(
    "jvm-tomcat",
    &[
        (
            "layer.yaml",
            include_str!("../../provisioners/jvm-tomcat/layer.yaml"),
        ),
        (
            "configure.sh",
            include_str!("../../provisioners/jvm-tomcat/configure.sh"),
        ),
        (
            "tomcat10.logrotate",
            include_str!("../../provisioners/jvm-tomcat/tomcat10.logrotate"),
        ),
    ],
)];

pub fn is_path_like(s: &str) -> bool {
    s.contains('/') || s.starts_with('.')
}

/// Directories searched for a layer by name, in order.
pub fn search_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    search_dirs_for(extra, std::env::current_exe().ok().as_deref())
}

/// [`search_dirs`] for the binary at `exe`: `--layer-path` dirs, `./provisioners`, the binary's
/// own `<prefix>/share/bakery/provisioners`, then `/usr/local/share` and `/usr/share`; each
/// directory once (an installed `/usr/local/bin/bakery`'s prefix dir is `/usr/local/share`).
pub fn search_dirs_for(extra: &[PathBuf], exe: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    dirs.push(PathBuf::from("provisioners"));
    if let Some(prefix) = exe.and_then(Path::parent).and_then(Path::parent) {
        dirs.push(prefix.join("share/bakery/provisioners"));
    }
    dirs.push(PathBuf::from("/usr/local/share/bakery/provisioners"));
    dirs.push(PathBuf::from("/usr/share/bakery/provisioners"));
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// Find a layer by name or path. Embedded layers are unpacked into `scratch` when used.
pub fn resolve(spec: &str, extra_dirs: &[PathBuf], scratch: &Path) -> Result<Layer> {
    let dir = if is_path_like(spec) {
        let d = PathBuf::from(spec);
        if !d.join("layer.yaml").is_file() {
            return Err(input!("layer `{spec}`: no layer.yaml in that directory; a layer is a directory with layer.yaml"));
        }
        d
    } else if let Some(d) = search_dirs(extra_dirs)
        .into_iter()
        .map(|d| d.join(spec))
        .find(|d| d.join("layer.yaml").is_file())
    {
        d
    } else if let Some((_, files)) = EMBEDDED.iter().find(|(n, _)| *n == spec) {
        let d = scratch.join("layers").join(spec);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        for (name, body) in files.iter() {
            std::fs::write(d.join(name), body)
                .with_context(|| format!("unpacking layer {spec}"))?;
        }
        d
    } else {
        let known: Vec<&str> = EMBEDDED.iter().map(|(n, _)| *n).collect();
        return Err(input!(
            "layer `{spec}`: not found in {} or built in (built-in: {}); pass a directory or --layer-path",
            search_dirs(extra_dirs).iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            known.join(", ")
        ));
    };
    load_dir(&dir)
}

pub fn load_dir(dir: &Path) -> Result<Layer> {
    let path = dir.join("layer.yaml");
    let file: LayerFile = super::load_yaml(&path)?;
    for step in &file.steps {
        let referenced = match step {
            LayerStep::Script(p) => Some(p),
            LayerStep::File(f) => Some(&f.src),
            _ => None,
        };
        if let Some(p) = referenced {
            if !dir.join(p).is_file() {
                return Err(input!(
                    "{}: step refers to `{}`, which is not in the layer directory",
                    path.display(),
                    p.display()
                ));
            }
        }
        if let LayerStep::File(f) = step {
            if !f.dest.is_absolute() {
                return Err(input!(
                    "{}: file dest `{}` must be an absolute path in the image",
                    path.display(),
                    f.dest.display()
                ));
            }
            u32::from_str_radix(&f.mode, 8).map_err(|_| {
                input!(
                    "{}: file mode `{}` is not octal like 0644",
                    path.display(),
                    f.mode
                )
            })?;
        }
    }
    Ok(Layer {
        name: file.name.clone(),
        dir: dir.to_path_buf(),
        file,
    })
}

/// [`resolve`] each of `names`, in order.
pub fn resolve_all(names: &[String], extra: &[PathBuf], scratch: &Path) -> Result<Vec<Layer>> {
    names.iter().map(|n| resolve(n, extra, scratch)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_from_single_key_maps() {
        let f: LayerFile = crate::recipe::parse_yaml(
            "name: t\nsteps:\n  - apt: [a, b]\n  - run: echo hi\n  - enable: [tomcat10]\n  - file: {src: x, dest: /etc/x}\n",
            "layer.yaml",
        )
        .unwrap();
        assert_eq!(f.steps[0], LayerStep::Apt(vec!["a".into(), "b".into()]));
        assert_eq!(f.steps[1], LayerStep::Run("echo hi".into()));
        assert!(matches!(&f.steps[3], LayerStep::File(s) if s.mode == "0644"));
    }

    #[test]
    fn unknown_step_is_an_error() {
        let e = crate::recipe::parse_yaml::<LayerFile>(
            "name: t\nsteps:\n  - aptt: [a]\n",
            "layer.yaml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("aptt"), "{e}");
    }

    #[test]
    fn the_builtin_jvm_tomcat_layer_is_valid() {
        let scratch = tempfile::tempdir().unwrap();
        let l = resolve("jvm-tomcat", &[], scratch.path()).unwrap();
        assert_eq!(l.name, "jvm-tomcat");
        assert!(l
            .file
            .steps
            .iter()
            .any(|s| matches!(s, LayerStep::Enable(u) if u.contains(&"tomcat10".to_string()))));
    }

    #[test]
    fn each_layer_directory_is_searched_and_named_once() {
        let dirs = search_dirs_for(&[], Some(Path::new("/usr/local/bin/bakery")));
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        assert_eq!(
            shown,
            [
                "provisioners",
                "/usr/local/share/bakery/provisioners",
                "/usr/share/bakery/provisioners"
            ]
        );
    }

    #[test]
    fn missing_layer_names_where_it_looked() {
        let scratch = tempfile::tempdir().unwrap();
        let e = resolve("no-such-layer", &[], scratch.path())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("layer `no-such-layer`: not found"), "{e}");
        assert!(e.contains("jvm-tomcat"));
    }

    #[test]
    fn a_step_referring_to_a_missing_script_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("layer.yaml"),
            "name: t\nsteps:\n  - script: nope.sh\n",
        )
        .unwrap();
        let e = load_dir(d.path()).unwrap_err().to_string();
        assert!(e.contains("nope.sh"), "{e}");
    }
}
