//! What a user may pass as a package (`--package`, a recipe's `packages:`), as Aminator allowed:
//! a package **file**, a package **name** from the image's own sources (in apt's spellings:
//! `name`, `name=version`, `name/release`, each with an optional `:arch`), or an **http(s)
//! URL** (downloaded on the host, optionally pinned with a `#sha256=HEX` fragment).
//!
//! [`parse`] is the one rule, pure (the caller says whether the spec names an existing file):
//! 1. `http://` or `https://` (any case): a URL. A fragment must be `sha256=` and 64 hex digits.
//!    Another `scheme://` (ftp, s3, file) is refused: bakery downloads http(s) only.
//! 2. An existing file is a file, whatever its spelling (`a=b.deb`, `jq`, `C:\pkgs\x.deb`).
//! 3. `NAME[:ARCH]/RELEASE` (one `/`, no leading `.` or `~`, no `.deb`/`.rpm` ending): a name
//!    from a target release, apt's `apt-get install jq/bookworm-backports` (the release is a
//!    Release file's `Suite` or `Codename`: letters, digits, `+ . _ -`). A missing file spelled
//!    `dir/app` therefore reads as a release; write `./dir/app` for a file.
//! 4. Anything else that looks like a path is a file (reported missing later): it has a `/` or
//!    `\`, starts with `.` or `~`, or ends in `.deb`/`.rpm`.
//! 5. `NAME[:ARCH]` or `NAME[:ARCH]=VERSION` in the package-name alphabet of dpkg and rpm
//!    (letters, digits, `+ . _ -`; versions also `~ : ^`; an architecture is dpkg's or rpm's,
//!    lower-case letters, digits, `-` and `_`): a name. Aminator's apt provisioner took the same
//!    `name=version` spelling (`apt-get install name=version`); `name:arch` is apt's multiarch
//!    spelling (`libc6:amd64`, `jq:amd64=1.6-2.1+deb12u1`, see apt-get(8)).
//! 6. Anything else is refused with the rule above.
//!
//! A version pin and a release are exclusive, as in apt (`name=version` already names one
//! version). On an rpm image, dnf is given the same request in its own spelling:
//! `name.arch` for `name:arch` and `name-version` for `name=version`; a release has no dnf
//! equivalent and is refused there (enable the repository in a layer instead).

use std::fmt;
use std::path::PathBuf;

/// One package as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSpec {
    /// A .deb or .rpm file on the bake host.
    File(PathBuf),
    /// A package from the image's own sources: `arch` picks an architecture (`name:arch`),
    /// and at most one of `version` (`name=version`) and `release` (`name/release`, apt's
    /// target release) picks the version.
    Name {
        name: String,
        arch: Option<String>,
        version: Option<String>,
        release: Option<String>,
    },
    /// An http(s) URL of a package file; `sha256` (lowercase hex) pins its content.
    Url { url: String, sha256: Option<String> },
}

/// Which of the three kinds a package came from (the manifest's `origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    File,
    Name,
    Url,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::File => "file",
            Origin::Name => "name",
            Origin::Url => "url",
        })
    }
}

impl PackageSpec {
    pub fn origin(&self) -> Origin {
        match self {
            PackageSpec::File(_) => Origin::File,
            PackageSpec::Name { .. } => Origin::Name,
            PackageSpec::Url { .. } => Origin::Url,
        }
    }
}

impl fmt::Display for PackageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageSpec::File(p) => write!(f, "{}", p.display()),
            PackageSpec::Name {
                name,
                arch,
                version,
                release,
            } => {
                f.write_str(name)?;
                if let Some(a) = arch {
                    write!(f, ":{a}")?;
                }
                if let Some(v) = version {
                    write!(f, "={v}")?;
                }
                if let Some(r) = release {
                    write!(f, "/{r}")?;
                }
                Ok(())
            }
            PackageSpec::Url { url, sha256: None } => f.write_str(url),
            PackageSpec::Url {
                url,
                sha256: Some(h),
            } => write!(f, "{url}#sha256={h}"),
        }
    }
}

/// Why a spec was refused; Display is the part after the flag or recipe key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("an empty package; pass a .deb/.rpm file, a package name (name, name=version, name/release, name:arch) or an http(s) URL")]
    Empty,
    #[error("`{spec}`: bakery downloads http:// and https:// URLs only, not {scheme}://; download it yourself and pass the file")]
    Scheme { spec: String, scheme: String },
    #[error("`{spec}`: the URL fragment must be #sha256= and 64 hex digits (the SHA-256 of the file, as `sha256sum` prints it)")]
    Fragment { spec: String },
    #[error("`{spec}`: not a file, a package name (name, name=version, name/release, name:arch; letters, digits and + . _ -) or an http(s) URL")]
    Unrecognized { spec: String },
}

/// Classify `raw` (see the module doc). `exists`: whether `raw` names an existing file, as
/// the caller resolves relative paths (the working directory for flags, the recipe's
/// directory for a recipe).
pub fn parse(raw: &str, exists: bool) -> Result<PackageSpec, SpecError> {
    if raw.trim().is_empty() {
        return Err(SpecError::Empty);
    }
    if let Some((scheme, _)) = raw.split_once("://") {
        let lower = scheme.to_ascii_lowercase();
        if lower == "http" || lower == "https" {
            return parse_url(raw, scheme.len());
        }
        if !exists && !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(SpecError::Scheme {
                spec: raw.into(),
                scheme: scheme.into(),
            });
        }
    }
    if exists {
        return Ok(PackageSpec::File(PathBuf::from(raw)));
    }
    if let Some(spec) = parse_release(raw) {
        return Ok(spec);
    }
    if looks_like_path(raw) {
        return Ok(PackageSpec::File(PathBuf::from(raw)));
    }
    let (name_arch, version) = match raw.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (raw, None),
    };
    if let Some((name, arch)) = split_arch(name_arch) {
        if version.is_none_or(is_version) {
            return Ok(PackageSpec::Name {
                name: name.into(),
                arch: arch.map(str::to_string),
                version: version.map(str::to_string),
                release: None,
            });
        }
    }
    Err(SpecError::Unrecognized { spec: raw.into() })
}

/// Rule 3: `NAME[:ARCH]/RELEASE`, or `None`.
fn parse_release(raw: &str) -> Option<PackageSpec> {
    let lower = raw.to_ascii_lowercase();
    if raw.starts_with(['.', '~']) || lower.ends_with(".deb") || lower.ends_with(".rpm") {
        return None;
    }
    let (name_arch, release) = raw.split_once('/')?;
    let (name, arch) = split_arch(name_arch)?;
    is_release(release).then(|| PackageSpec::Name {
        name: name.into(),
        arch: arch.map(str::to_string),
        version: None,
        release: Some(release.into()),
    })
}

/// `NAME` or `NAME:ARCH`, each valid, or `None`.
fn split_arch(s: &str) -> Option<(&str, Option<&str>)> {
    let (name, arch) = match s.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (s, None),
    };
    (is_package_name(name) && arch.is_none_or(is_arch)).then_some((name, arch))
}

/// A dpkg (`amd64`, `arm64`, `musl-linux-amd64`) or rpm (`x86_64`, `noarch`) architecture.
fn is_arch(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c))
}

/// An apt target release: a Release file's `Suite` (`stable`, `bookworm-backports`) or
/// `Codename`.
fn is_release(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c))
}

/// Rule 4: spelled as a path.
pub fn looks_like_path(raw: &str) -> bool {
    let lower = raw.to_ascii_lowercase();
    raw.contains('/')
        || raw.contains('\\')
        || raw.starts_with('.')
        || raw.starts_with('~')
        || lower.ends_with(".deb")
        || lower.ends_with(".rpm")
}

/// dpkg's package-name alphabet widened to rpm's (upper case, `_`): starts with a letter or digit.
pub fn is_package_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c))
}

/// A Debian (`[epoch:]upstream[-revision]`) or rpm (`version[-release]`) version.
fn is_version(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+._-~:^".contains(c))
}

fn parse_url(raw: &str, scheme_len: usize) -> Result<PackageSpec, SpecError> {
    let (url, fragment) = match raw.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (raw, None),
    };
    // Nothing after `scheme://`: not a URL to fetch.
    if url.len() <= scheme_len + 3 {
        return Err(SpecError::Unrecognized { spec: raw.into() });
    }
    let sha256 = match fragment {
        None => None,
        Some(f) => {
            let hex = f
                .strip_prefix("sha256=")
                .or_else(|| f.strip_prefix("sha256:"))
                .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(|| SpecError::Fragment { spec: raw.into() })?;
            Some(hex.to_ascii_lowercase())
        }
    };
    let url = format!(
        "{}{}",
        url[..scheme_len].to_ascii_lowercase(),
        &url[scheme_len..]
    );
    Ok(PackageSpec::Url { url, sha256 })
}

/// The file name a URL's package is saved as: the last path segment without query, or
/// `package` when it has none (the kind is read from the content, never from the name).
pub fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.split_once("://").map_or(path, |(_, r)| r);
    let last = after_host
        .split_once('/')
        .map(|(_, p)| p.rsplit('/').next().unwrap_or(""))
        .unwrap_or("");
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+._-~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        "package".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str, v: Option<&str>) -> PackageSpec {
        PackageSpec::Name {
            name: n.into(),
            arch: None,
            version: v.map(str::to_string),
            release: None,
        }
    }

    fn full(n: &str, arch: Option<&str>, v: Option<&str>, rel: Option<&str>) -> PackageSpec {
        PackageSpec::Name {
            name: n.into(),
            arch: arch.map(str::to_string),
            version: v.map(str::to_string),
            release: rel.map(str::to_string),
        }
    }

    #[test]
    fn apt_target_releases_and_architectures() {
        assert_eq!(
            parse("jq/bookworm-backports", false),
            Ok(full("jq", None, None, Some("bookworm-backports")))
        );
        assert_eq!(
            parse("libc6:amd64", false),
            Ok(full("libc6", Some("amd64"), None, None))
        );
        assert_eq!(
            parse("jq:amd64=1.6-2.1+deb12u1", false),
            Ok(full("jq", Some("amd64"), Some("1.6-2.1+deb12u1"), None))
        );
        assert_eq!(
            parse("jq:arm64/trixie", false),
            Ok(full("jq", Some("arm64"), None, Some("trixie")))
        );
        assert_eq!(
            parse("openssl:amd64=1:3.0.11-1~deb12u2", false),
            Ok(full(
                "openssl",
                Some("amd64"),
                Some("1:3.0.11-1~deb12u2"),
                None
            ))
        );
        assert_eq!(
            parse("bash:x86_64", false),
            Ok(full("bash", Some("x86_64"), None, None))
        );
        // An existing file still wins, and path spellings stay files.
        assert_eq!(
            parse("dist/app", true),
            Ok(PackageSpec::File("dist/app".into()))
        );
        for s in [
            "./jq/stable",
            "~/jq",
            "dist/app.deb",
            "a/b/c",
            "/jq/stable",
            "jq/",
            "jq:/stable",
            // A version and a release together is no name: a path, reported missing.
            "jq=1.6/stable",
        ] {
            assert_eq!(parse(s, false), Ok(PackageSpec::File(s.into())), "{s}");
        }
        // An empty or odd part: refused with the rule.
        for bad in [
            "jq:",
            "jq:AMD64",
            "jq:amd 64",
            ":amd64",
            "jq::amd64",
            "jq:amd64:i386",
            "jq:amd64=",
        ] {
            assert!(
                matches!(parse(bad, false), Err(SpecError::Unrecognized { .. })),
                "{bad}: {:?}",
                parse(bad, false)
            );
        }
        let e = parse("jq@1", false).unwrap_err().to_string();
        assert!(e.contains("name/release") && e.contains("name:arch"), "{e}");
    }

    #[test]
    fn names_and_pinned_versions() {
        assert_eq!(parse("jq", false), Ok(name("jq", None)));
        assert_eq!(parse("jq=1.6-2.1", false), Ok(name("jq", Some("1.6-2.1"))));
        assert_eq!(
            parse("libc6=2.36-9+deb12u4", false).unwrap().origin(),
            Origin::Name
        );
        assert_eq!(parse("lib.so_X-1", false), Ok(name("lib.so_X-1", None)));
        assert_eq!(
            parse("openssl=1:3.0.11-1~deb12u2", false),
            Ok(name("openssl", Some("1:3.0.11-1~deb12u2")))
        );
        assert_eq!(parse("g++", false), Ok(name("g++", None)));
    }

    #[test]
    fn an_existing_file_is_a_file_whatever_its_spelling() {
        for s in ["jq", "a=b", "app=1.0", "C:\\x.deb", "ftp://x"] {
            assert_eq!(parse(s, true), Ok(PackageSpec::File(s.into())), "{s}");
        }
    }

    #[test]
    fn path_spellings_are_files_even_when_missing() {
        for s in [
            "dist/app.deb",
            "./app",
            "../x",
            "~/a.rpm",
            "app_1.0_all.deb",
            "APP.RPM",
            "C:\\pkgs\\app.deb",
            "/abs/app",
            "dir/app=1.0",
            "app=1.0.deb",
        ] {
            assert_eq!(parse(s, false), Ok(PackageSpec::File(s.into())), "{s}");
        }
    }

    #[test]
    fn urls_with_and_without_a_pin() {
        assert_eq!(
            parse("http://127.0.0.1:8080/jq_1.6-2.1_amd64.deb", false),
            Ok(PackageSpec::Url {
                url: "http://127.0.0.1:8080/jq_1.6-2.1_amd64.deb".into(),
                sha256: None
            })
        );
        let h = "AB".repeat(32);
        assert_eq!(
            parse(&format!("HTTPS://h/x.deb#sha256={h}"), false),
            Ok(PackageSpec::Url {
                url: "https://h/x.deb".into(),
                sha256: Some("ab".repeat(32))
            })
        );
        // A URL is a URL even if a file of that odd name exists.
        assert_eq!(parse("http://h/x.deb", true).unwrap().origin(), Origin::Url);
        for bad in [
            "http://h/x.deb#md5=00",
            "http://h/x#sha256=abc",
            "http://h/x#",
        ] {
            assert!(
                matches!(parse(bad, false), Err(SpecError::Fragment { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse("http://", false),
            Err(SpecError::Unrecognized { .. })
        ));
    }

    #[test]
    fn other_schemes_and_garbage_are_refused_with_the_rule() {
        let e = parse("ftp://h/x.deb", false).unwrap_err();
        assert!(e.to_string().contains("not ftp://"), "{e}");
        assert!(matches!(
            parse("s3://b/k.deb", false),
            Err(SpecError::Scheme { .. })
        ));
        assert_eq!(parse("", false), Err(SpecError::Empty));
        assert_eq!(parse("  ", false), Err(SpecError::Empty));
        for bad in ["jq 1.6", "-jq", "jq=", "jq==1", "jq=1 2", "jq@1", "=1.0"] {
            assert!(
                matches!(parse(bad, false), Err(SpecError::Unrecognized { .. })),
                "{bad}: {:?}",
                parse(bad, false)
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "jq",
            "jq=1.6-2.1",
            "jq/bookworm-backports",
            "libc6:amd64",
            "jq:amd64=1.6-2.1+deb12u1",
            "jq:i386/stable",
            "http://h/x.deb",
            "dist/a.deb",
        ] {
            assert_eq!(parse(s, false).unwrap().to_string(), s);
        }
        let pinned = format!("https://h/x.deb#sha256={}", "0".repeat(64));
        assert_eq!(parse(&pinned, false).unwrap().to_string(), pinned);
    }

    #[test]
    fn url_file_names() {
        assert_eq!(
            url_file_name("http://h/a/jq_1.6_amd64.deb"),
            "jq_1.6_amd64.deb"
        );
        assert_eq!(url_file_name("http://h/a/x.deb?token=1"), "x.deb");
        assert_eq!(url_file_name("http://h"), "package");
        assert_eq!(url_file_name("http://h/"), "package");
        assert_eq!(url_file_name("http://h/..%2f"), "package");
        assert_eq!(url_file_name("http://h/a%20b.deb"), "a_20b.deb");
    }
}
