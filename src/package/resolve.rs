//! The one resolver from what the user gave (`--package`, a recipe's `packages:`) to the
//! packages a job installs: every command that installs packages goes through [`parse_all`]
//! (no I/O but "does this file exist", so `--dry-run` needs neither root nor network) and then
//! [`resolve`] (reads files, downloads URLs).
//!
//! - a file is read as before ([`super::inspect`]);
//! - a URL is downloaded into the bake's scratch directory (removed with the bake), its SHA-256
//!   checked against the `#sha256=` pin before anything else reads it, then read as a file;
//! - a name stays a name (in any of apt's spellings, kept as given): the chroot session installs
//!   it from the image's own sources, reads the exact version and architecture back from the
//!   package database and, on apt images, the SHA-256 of the archive from the package index
//!   (`provision::steps`, `Runner::index_sha256`, says why the index and not the file).
//!
//! Errors are input errors (exit 2) that start with `field` (`--package` or the recipe key),
//! except a download that fails for the network or the disk (exit 1).

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::fetch::{self, FetchError};
use super::spec::{self, PackageSpec};
use super::{PackageInfo, PackageKind, PackageSource};
use crate::input;

/// Classify each entry (see [`spec::parse`]). `from_flags`: relative paths are files of the
/// working directory; otherwise (a recipe, whose files were made absolute when it was loaded)
/// a relative entry is never a file of the working directory.
pub fn parse_all(raw: &[PathBuf], field: &str, from_flags: bool) -> Result<Vec<PackageSpec>> {
    raw.iter()
        .map(|p| {
            let s = p.to_string_lossy();
            let exists = (from_flags || p.is_absolute()) && std::fs::metadata(p).is_ok();
            spec::parse(&s, exists).map_err(|e| input!("{field}: {e}"))
        })
        .collect()
}

/// The packages of `specs`, in order. URLs are downloaded into `scratch`.
pub fn resolve(specs: &[PackageSpec], field: &str, scratch: &Path) -> Result<Vec<PackageInfo>> {
    let dir = scratch.join("downloads");
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            PackageSpec::File(p) => {
                let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                super::inspect(&abs).map_err(|e| input!("{e}"))
            }
            PackageSpec::Name { .. } => Ok(named_spec(s).expect("a name")),
            PackageSpec::Url { url, sha256 } => {
                // One directory per package: two URLs may end in the same file name.
                let d = dir.join(i.to_string());
                std::fs::create_dir_all(&d)?;
                let dest = d.join(spec::url_file_name(url));
                download(url, sha256.as_deref(), &dest, field)
            }
        })
        .collect()
}

fn download(url: &str, pin: Option<&str>, dest: &Path, field: &str) -> Result<PackageInfo> {
    tracing::info!("downloading {url}");
    let got = match fetch::download(url, dest) {
        Ok(f) => f,
        Err(e) => {
            return Err(match e.downcast::<FetchError>() {
                Ok(FetchError::Refused(m)) => input!("{field} {url}: {m}"),
                Ok(FetchError::Failed(m)) => anyhow::anyhow!("{field} {url}: {m}"),
                Err(other) => other.context(format!("downloading {url}")),
            });
        }
    };
    if let Some(want) = pin {
        if want != got.sha256 {
            let _ = std::fs::remove_file(dest);
            return Err(input!(
                "{field} {url}: the download's SHA-256 is {}, but the URL pins sha256={want}; nothing was installed: fix the pin or the file on the server",
                got.sha256
            ));
        }
    }
    tracing::info!(
        "downloaded {url}: {} bytes, sha256 {}",
        got.bytes,
        got.sha256
    );
    let mut info = super::inspect(dest).map_err(|e| input!("{field} {url}: {e}"))?;
    info.source = PackageSource::Url {
        url: url.to_string(),
        sha256: got.sha256,
    };
    Ok(info)
}

/// A package named for the image's sources, before the session resolves it: the pin's parts
/// split as dpkg and rpm write them (`[epoch:]version[-release]`).
pub fn named(name: &str, pin: Option<&str>) -> PackageInfo {
    let (epoch, version, release) = match pin {
        Some(v) => split_evr(v),
        None => (None, String::new(), String::new()),
    };
    PackageInfo {
        kind: PackageKind::Deb,
        path: PathBuf::new(),
        name: name.to_string(),
        version,
        release,
        epoch,
        arch: String::new(),
        depends: Vec::new(),
        pre_depends: Vec::new(),
        provides: Vec::new(),
        conflicts: Vec::new(),
        requires: Vec::new(),
        source: PackageSource::Name {
            spec: match pin {
                Some(v) => format!("{name}={v}"),
                None => name.to_string(),
            },
            sha256: None,
        },
    }
}

/// [`named`] for a [`PackageSpec::Name`] in any of its spellings (`name:arch`, `name/release`
/// too: the spec is kept as given, for the session and the manifest); `None` for another kind.
pub fn named_spec(spec: &PackageSpec) -> Option<PackageInfo> {
    let PackageSpec::Name { name, version, .. } = spec else {
        return None;
    };
    let mut p = named(name, version.as_deref());
    p.source = PackageSource::Name {
        spec: spec.to_string(),
        sha256: None,
    };
    Some(p)
}

/// `[epoch:]version[-release]` into its parts (the release after the last `-`, as dpkg splits
/// the Debian revision and rpm the release).
pub fn split_evr(evr: &str) -> (Option<String>, String, String) {
    let (epoch, rest) = match evr.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()) => {
            (Some(e.to_string()), r)
        }
        _ => (None, evr),
    };
    match rest.rsplit_once('-') {
        Some((v, r)) => (epoch, v.to_string(), r.to_string()),
        None => (epoch, rest.to_string(), String::new()),
    }
}

/// What the session installed for a named package: `kind`, the version as the package
/// database writes it (`[epoch:]version[-release]`), the architecture and the SHA-256 of the
/// archive installed, as the image's package index gives it (`None` when it gives none).
pub fn installed(
    p: &PackageInfo,
    kind: PackageKind,
    evr: &str,
    arch: &str,
    sha256: Option<&str>,
) -> PackageInfo {
    let (epoch, version, release) = split_evr(evr);
    let source = match &p.source {
        PackageSource::Name { spec, .. } => PackageSource::Name {
            spec: spec.clone(),
            sha256: sha256.map(str::to_string),
        },
        other => other.clone(),
    };
    PackageInfo {
        kind,
        epoch,
        version,
        release,
        arch: arch.to_string(),
        source,
        ..p.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_split_like_dpkg_and_rpm() {
        assert_eq!(split_evr("1.6-2.1"), (None, "1.6".into(), "2.1".into()));
        assert_eq!(
            split_evr("1:3.0.11-1~deb12u2"),
            (Some("1".into()), "3.0.11".into(), "1~deb12u2".into())
        );
        assert_eq!(split_evr("2.0"), (None, "2.0".into(), String::new()));
        assert_eq!(split_evr("1.2-3-4"), (None, "1.2-3".into(), "4".into()));
    }

    #[test]
    fn a_name_is_resolved_without_io_and_keeps_its_spec() {
        let p = named("jq", Some("1.6-2.1"));
        assert!(p.is_named());
        assert_eq!((p.version.as_str(), p.release.as_str()), ("1.6", "2.1"));
        assert_eq!(
            p.source,
            PackageSource::Name {
                spec: "jq=1.6-2.1".into(),
                sha256: None
            }
        );
        let h = "ab".repeat(32);
        let i = installed(
            &named("jq", None),
            PackageKind::Deb,
            "1.6-2.1",
            "amd64",
            Some(&h),
        );
        assert_eq!(i.full_version(), "1.6-2.1");
        assert_eq!(i.arch, "amd64");
        assert!(i.is_named());
        assert_eq!(
            i.source,
            PackageSource::Name {
                spec: "jq".into(),
                sha256: Some(h)
            }
        );
    }

    #[test]
    fn apt_spellings_keep_their_spec_and_split_their_pin() {
        for (raw, version, arch) in [
            ("jq/bookworm-backports", "", None),
            ("libc6:amd64", "", Some("amd64")),
            ("jq:amd64=1.6-2.1+deb12u1", "1.6", Some("amd64")),
        ] {
            let s = spec::parse(raw, false).unwrap();
            let p = named_spec(&s).unwrap();
            assert_eq!(p.name, raw.split([':', '/', '=']).next().unwrap());
            assert_eq!(p.version, version, "{raw}");
            // The architecture is the database's, after the install; asked for, it is in
            // the spec.
            assert!(p.arch.is_empty());
            assert_eq!(p.named_arch().as_deref(), arch, "{raw}");
            assert_eq!(
                p.source,
                PackageSource::Name {
                    spec: raw.into(),
                    sha256: None
                }
            );
        }
        assert!(named_spec(&PackageSpec::File("a.deb".into())).is_none());
    }

    #[test]
    fn parse_all_names_the_field() {
        let e = parse_all(&[PathBuf::from("ftp://h/x.deb")], "--package", true).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        assert!(
            e.to_string().starts_with("--package: `ftp://h/x.deb`"),
            "{e}"
        );
        let ok = parse_all(
            &[PathBuf::from("jq=1.6"), PathBuf::from("http://h/x.deb")],
            "--package",
            true,
        )
        .unwrap();
        assert_eq!(ok[0].origin(), spec::Origin::Name);
        assert_eq!(ok[1].origin(), spec::Origin::Url);
    }
}
