//! Package metadata read from the package file itself (.deb, .rpm). Owned by the package helper.
//!
//! The kind is decided by the magic bytes, never by the file name, and everything is read in
//! pure Rust: no `dpkg-deb` or `rpm` process. Only the metadata is read (the ar member table and
//! the control archive of a .deb, the lead and headers of an .rpm); the payload is checked for
//! length but not unpacked. Hostile input gives an error, never a panic or a huge allocation.
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

mod ar;
mod deb;
pub mod deb822;
pub mod debrel;
pub mod fetch;
pub mod resolve;
pub mod richdep;
mod rpm;
pub mod spec;
#[cfg(test)]
mod tests;
pub mod version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    Deb,
    Rpm,
}

impl std::fmt::Display for PackageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PackageKind::Deb => "deb",
            PackageKind::Rpm => "rpm",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageInfo {
    pub kind: PackageKind,
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    /// Debian revision or RPM release; empty when the package has none.
    pub release: String,
    pub epoch: Option<String>,
    /// As spelled by the package (`amd64`, `x86_64`, `all`, `noarch`); see [`Self::normalized_arch`].
    pub arch: String,
    /// Debian `Depends:` relations, raw (`libc6 (>= 2.34)`, `a | b`); empty for an rpm.
    pub depends: Vec<String>,
    /// Debian `Pre-Depends:` relations, raw; empty for an rpm.
    pub pre_depends: Vec<String>,
    /// Debian `Provides:` relations (raw) or RPM PROVIDENAME names.
    pub provides: Vec<String>,
    /// Debian `Conflicts:` and `Breaks:` relations (raw); empty for an rpm. Not in the
    /// manifest: only the install decision reads them ([`debrel`]).
    #[serde(skip)]
    pub conflicts: Vec<String>,
    /// RPM REQUIRENAME names as stored, including `rpmlib(...)` and scriptlet interpreters such
    /// as `/bin/sh`; empty for a .deb.
    pub requires: Vec<String>,
    /// Where the package came from (a file, a URL, or a name in the image's sources).
    #[serde(flatten)]
    pub source: PackageSource,
}

/// Where a package came from ([`spec::PackageSpec`] once resolved). Serialized flat into the
/// package: `"origin": "file"|"url"|"name"`, and `url` + `sha256` for a URL, `spec` for a name.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(tag = "origin", rename_all = "lowercase")]
pub enum PackageSource {
    /// A file on the bake host (`path`).
    #[default]
    File,
    /// Downloaded from `url` (without its `#sha256=` fragment) to `path`; `sha256` is the
    /// verified digest of what was downloaded.
    Url { url: String, sha256: String },
    /// Installed by name from the image's own sources: `spec` is the name as given (`name`,
    /// `name=version`, `name/release`, `name:arch`...; see [`spec::parse`]). Until the session
    /// has installed it, only `name` (and, when pinned, `version`/`release`/`epoch`) of the
    /// [`PackageInfo`] are meaningful: `path` and `arch` are empty and `kind` is a placeholder
    /// (the image's package manager decides it). `sha256`, once installed: the SHA-256 of the
    /// archive installed, from the image's package index (see `provision::steps`).
    Name {
        spec: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
}

impl PackageSource {
    pub fn origin(&self) -> spec::Origin {
        match self {
            PackageSource::File => spec::Origin::File,
            PackageSource::Url { .. } => spec::Origin::Url,
            PackageSource::Name { .. } => spec::Origin::Name,
        }
    }
}

impl PackageInfo {
    /// The architecture in one vocabulary for both formats: `x86_64`, `arm64`, `x86`, `noarch`;
    /// anything else is returned as spelled.
    pub fn normalized_arch(&self) -> &str {
        normalize_arch(&self.arch)
    }

    /// True for `all` (.deb) and `noarch` (.rpm) packages.
    pub fn is_arch_independent(&self) -> bool {
        self.normalized_arch() == "noarch"
    }

    /// A placeholder (`hello` 1.0-1, `all`, .deb) for tests elsewhere in the crate, to be
    /// completed with struct update syntax: `PackageInfo { name: .., ..PackageInfo::for_tests() }`.
    #[doc(hidden)]
    pub fn for_tests() -> PackageInfo {
        PackageInfo {
            kind: PackageKind::Deb,
            path: PathBuf::from("hello_1.0-1_all.deb"),
            name: "hello".into(),
            version: "1.0".into(),
            release: "1".into(),
            epoch: None,
            arch: "all".into(),
            depends: Vec::new(),
            pre_depends: Vec::new(),
            provides: Vec::new(),
            conflicts: Vec::new(),
            requires: Vec::new(),
            source: PackageSource::File,
        }
    }

    /// True for a package installed by name from the image's sources.
    pub fn is_named(&self) -> bool {
        matches!(self.source, PackageSource::Name { .. })
    }

    /// The architecture a package named for the image's sources asked for (`name:arch`), or
    /// `None` (not named, or no architecture asked for).
    pub fn named_arch(&self) -> Option<String> {
        let PackageSource::Name { spec, .. } = &self.source else {
            return None;
        };
        match spec::parse(spec, false) {
            Ok(spec::PackageSpec::Name { arch, .. }) => arch,
            _ => None,
        }
    }

    /// The version as the package databases write it: `[epoch:]version[-release]`.
    pub fn evr(&self) -> String {
        match &self.epoch {
            Some(e) if !e.is_empty() && e != "0" => format!("{e}:{}", self.full_version()),
            _ => self.full_version(),
        }
    }

    /// `version-release`, or `version` when there is no release; the epoch is not included.
    pub fn full_version(&self) -> String {
        if self.release.is_empty() {
            self.version.clone()
        } else {
            format!("{}-{}", self.version, self.release)
        }
    }
}

/// Maps deb and rpm architecture spellings to one vocabulary (see [`PackageInfo::normalized_arch`]).
pub fn normalize_arch(arch: &str) -> &str {
    match arch {
        "amd64" | "x86_64" => "x86_64",
        "arm64" | "aarch64" => "arm64",
        "all" | "noarch" => "noarch",
        "i386" | "i486" | "i586" | "i686" => "x86",
        other => other,
    }
}

/// Why a package could not be read. Display is one line: `{path}: {what is wrong}; {what to do}`.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{}: no such file; check the --package path", path.display())]
    NotFound { path: PathBuf },

    /// The file exists but could not be read (permissions, I/O error).
    #[error("{}: cannot read the package ({error}); check the path and its permissions", path.display())]
    Io { path: PathBuf, error: io::Error },

    /// Neither a .deb nor an .rpm: `detail` says what it is instead (`starts with 'PK\x03\x04'`).
    #[error(
        "{}: not a .deb or .rpm package ({detail}); pass a package built by dpkg-deb or rpmbuild",
        path.display()
    )]
    NotAPackage { path: PathBuf, detail: String },

    /// The file ends before `part` (an ar member, an rpm header, the payload) does.
    #[error("{}: truncated package ({part} ends early); rebuild or re-download it", path.display())]
    Truncated { path: PathBuf, part: String },

    /// The package is complete but its content is invalid.
    #[error("{}: {problem}; {hint}", path.display())]
    Malformed {
        path: PathBuf,
        problem: String,
        hint: &'static str,
    },

    /// A source rpm (`.src.rpm`): it builds packages, it does not install.
    #[error(
        "{}: {name} is a source rpm, not an installable package; pass the binary rpm that `rpmbuild -bb` produces",
        path.display()
    )]
    SourceRpm { path: PathBuf, name: String },
}

impl PackageError {
    /// The package file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PackageError::NotFound { path }
            | PackageError::Io { path, .. }
            | PackageError::NotAPackage { path, .. }
            | PackageError::Truncated { path, .. }
            | PackageError::Malformed { path, .. }
            | PackageError::SourceRpm { path, .. } => path,
        }
    }
}

/// Reads name, version, architecture and relations from a .deb or .rpm file.
pub fn inspect(path: &Path) -> Result<PackageInfo, PackageError> {
    let file = File::open(path).map_err(|e| Fault::from_open(e).at(path))?;
    let meta = file.metadata().map_err(|e| Fault::Io(e).at(path))?;
    if meta.is_dir() {
        return Err(Fault::NotAPackage("it is a directory".into()).at(path));
    }
    if !meta.is_file() {
        return Err(Fault::NotAPackage("it is not a regular file".into()).at(path));
    }
    inspect_reader(path, &mut BufReader::new(file), meta.len())
}

/// [`inspect`] on an open reader of `len` bytes; `path` is only used to label results and errors.
pub(crate) fn inspect_reader<R: Read + Seek>(
    path: &Path,
    r: &mut R,
    len: u64,
) -> Result<PackageInfo, PackageError> {
    let read = sniff(r).and_then(|kind| match kind {
        PackageKind::Deb => deb::read(r, len),
        PackageKind::Rpm => rpm::read(r, len),
    });
    let mut info = read.map_err(|f| f.at(path))?;
    info.path = path.to_path_buf();
    Ok(info)
}

pub(crate) const DEB_MAGIC: &[u8; 8] = b"!<arch>\n";
pub(crate) const RPM_MAGIC: &[u8; 4] = &[0xed, 0xab, 0xee, 0xdb];

/// Decides the kind from the first bytes.
fn sniff<R: Read + Seek>(r: &mut R) -> Result<PackageKind, Fault> {
    let mut head = [0u8; 8];
    r.seek(SeekFrom::Start(0))?;
    let n = read_up_to(r, &mut head)?;
    let head = &head[..n];
    if head.starts_with(DEB_MAGIC) {
        return Ok(PackageKind::Deb);
    }
    if head.starts_with(RPM_MAGIC) {
        return Ok(PackageKind::Rpm);
    }
    if n == 0 {
        return Err(Fault::NotAPackage("it is empty".into()));
    }
    if n < DEB_MAGIC.len() && DEB_MAGIC.starts_with(head) {
        return Err(Fault::Truncated("ar magic".into()));
    }
    if n < RPM_MAGIC.len() && RPM_MAGIC.starts_with(head) {
        return Err(Fault::Truncated("rpm lead".into()));
    }
    let shown = &head[..n.min(4)];
    Err(Fault::NotAPackage(format!(
        "starts with '{}'",
        shown.escape_ascii()
    )))
}

/// Fills as much of `buf` as the reader has; returns the count.
pub(crate) fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads exactly `len` bytes at `offset`; the caller has already checked they are in the file.
pub(crate) fn read_at<R: Read + Seek>(
    r: &mut R,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, Fault> {
    r.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// An error before the path is attached; the format readers return these.
#[derive(Debug)]
pub(crate) enum Fault {
    NotFound,
    Io(io::Error),
    NotAPackage(String),
    Truncated(String),
    Malformed { problem: String, hint: &'static str },
    SourceRpm(String),
}

impl Fault {
    pub(crate) fn malformed(problem: impl Into<String>, hint: &'static str) -> Fault {
        Fault::Malformed {
            problem: problem.into(),
            hint,
        }
    }

    fn from_open(e: io::Error) -> Fault {
        match e.kind() {
            io::ErrorKind::NotFound => Fault::NotFound,
            _ => Fault::Io(e),
        }
    }

    fn at(self, path: &Path) -> PackageError {
        let path = path.to_path_buf();
        match self {
            Fault::NotFound => PackageError::NotFound { path },
            Fault::Io(error) => PackageError::Io { path, error },
            Fault::NotAPackage(detail) => PackageError::NotAPackage { path, detail },
            Fault::Truncated(part) => PackageError::Truncated { path, part },
            Fault::Malformed { problem, hint } => PackageError::Malformed {
                path,
                problem,
                hint,
            },
            Fault::SourceRpm(name) => PackageError::SourceRpm { path, name },
        }
    }
}

/// Raw I/O while reading inside bounds already checked against the file size: an early end
/// means the file shrank under us.
impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Fault {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Fault::Truncated("the file".into())
        } else {
            Fault::Io(e)
        }
    }
}
