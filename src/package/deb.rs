//! .deb: an ar archive of `debian-binary`, `control.tar[.gz|.xz|.zst]` and `data.tar.*`.
//! The metadata is the `control` file inside the control archive.
use std::io::{self, Read, Seek, Write};

use super::{ar, read_at, Fault, PackageInfo, PackageKind};

/// A control archive holds a few small files; real ones are kilobytes.
const MAX_CONTROL_TAR: u64 = 64 << 20;
const MAX_CONTROL_FILE: u64 = 4 << 20;
const REBUILD: &str = "rebuild the package with dpkg-deb";
const FIX_CONTROL: &str = "fix DEBIAN/control and rebuild the package with dpkg-deb";

pub(crate) fn read<R: Read + Seek>(r: &mut R, len: u64) -> Result<PackageInfo, Fault> {
    let members = ar::members(r, len)?;
    let first = members
        .first()
        .ok_or_else(|| Fault::Truncated("ar archive".into()))?;
    if first.name != "debian-binary" {
        return Err(Fault::NotAPackage(format!(
            "an ar archive whose first member is '{}', not debian-binary",
            first.name
        )));
    }
    let format = read_at(r, first.offset, first.size.min(64) as usize)?;
    if !format.starts_with(b"2.") {
        return Err(Fault::malformed(
            format!(
                "unsupported deb format '{}' in debian-binary (expected 2.0)",
                format.trim_ascii().escape_ascii()
            ),
            REBUILD,
        ));
    }
    let control = members
        .iter()
        .find(|m| m.name.starts_with("control.tar"))
        .ok_or_else(|| Fault::malformed("no control.tar member", REBUILD))?;
    if !members.iter().any(|m| m.name.starts_with("data.tar")) {
        return Err(Fault::malformed(
            "no data.tar member",
            "rebuild or re-download the package",
        ));
    }
    let compression = Compression::from_member(&control.name)?;
    if control.size > MAX_CONTROL_TAR {
        return Err(Fault::malformed(
            format!(
                "{} is {} bytes, too big for a control archive",
                control.name, control.size
            ),
            REBUILD,
        ));
    }
    let packed = read_at(r, control.offset, control.size as usize)?;
    let tar = compression
        .unpack(&packed, MAX_CONTROL_TAR)
        .map_err(|e| match e {
            Unpack::Truncated => Fault::Truncated(control.name.clone()),
            Unpack::TooBig => Fault::malformed(
                format!(
                    "{} unpacks to more than {MAX_CONTROL_TAR} bytes",
                    control.name
                ),
                REBUILD,
            ),
            Unpack::Corrupt(why) => {
                Fault::malformed(format!("{} is corrupt ({why})", control.name), REBUILD)
            }
        })?;
    let text = control_file(&tar, &control.name)?;
    let fields = parse_control(&text).map_err(|p| Fault::malformed(p, FIX_CONTROL))?;
    info_from_fields(&fields)
}

/// Builds the package info from the control paragraph (split out for tests).
fn info_from_fields(fields: &Fields) -> Result<PackageInfo, Fault> {
    let required = |name: &str| match fields.get(name) {
        None => Err(Fault::malformed(
            format!("control file has no {name} field"),
            FIX_CONTROL,
        )),
        Some("") => Err(Fault::malformed(
            format!("control file has an empty {name} field"),
            FIX_CONTROL,
        )),
        Some(v) => Ok(v.to_string()),
    };
    let name = required("Package")?;
    let full = required("Version")?;
    let arch = required("Architecture")?;
    let (epoch, version, release) =
        split_version(&full).map_err(|p| Fault::malformed(p, FIX_CONTROL))?;
    Ok(PackageInfo {
        kind: PackageKind::Deb,
        path: Default::default(),
        name,
        version,
        release,
        epoch,
        arch,
        depends: relations(fields.get("Depends")),
        pre_depends: relations(fields.get("Pre-Depends")),
        provides: relations(fields.get("Provides")),
        conflicts: [fields.get("Conflicts"), fields.get("Breaks")]
            .into_iter()
            .flat_map(relations)
            .collect(),
        requires: Vec::new(),
        source: Default::default(),
    })
}

/// Finds `./control` in the (uncompressed) control archive.
fn control_file(tar: &[u8], member: &str) -> Result<String, Fault> {
    let tar_fault = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Fault::Truncated(member.to_string())
        } else {
            Fault::malformed(
                format!("{member} is not a valid tar archive ({e})"),
                REBUILD,
            )
        }
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(tar_fault)? {
        let entry = entry.map_err(tar_fault)?;
        let path = entry.path_bytes();
        let path = path.strip_prefix(b"./").unwrap_or(&path);
        if path != b"control" || !entry.header().entry_type().is_file() {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .take(MAX_CONTROL_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(tar_fault)?;
        if bytes.len() as u64 > MAX_CONTROL_FILE {
            return Err(Fault::malformed(
                format!("control file in {member} is larger than {MAX_CONTROL_FILE} bytes"),
                FIX_CONTROL,
            ));
        }
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    Err(Fault::malformed(
        format!("{member} has no control file"),
        REBUILD,
    ))
}

/// The fields of the first paragraph of a control file, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    /// Field names are case-insensitive.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the first RFC822-style paragraph; continuation lines are joined with '\n'.
pub(crate) fn parse_control(text: &str) -> Result<Fields, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = fields.last_mut() else {
                return Err(format!(
                    "control file line {} is a continuation line with no field before it",
                    i + 1
                ));
            };
            value.push('\n');
            value.push_str(line.trim());
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "control file line {} is not 'Field: value' ('{}')",
                i + 1,
                line.escape_debug()
            ));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!(
                "control file line {} has a bad field name '{}'",
                i + 1,
                name.escape_debug()
            ));
        }
        fields.push((name.to_string(), value.trim().to_string()));
    }
    if fields.is_empty() {
        return Err("control file is empty".into());
    }
    Ok(Fields(fields))
}

/// Splits a relation field at commas, keeping each relation raw but with whitespace collapsed.
pub(crate) fn relations(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(|rel| rel.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|rel| !rel.is_empty())
        .collect()
}

/// `[epoch:]upstream[-revision]` into (epoch, upstream, revision); the revision follows the last
/// hyphen and is empty when there is none.
pub(crate) fn split_version(full: &str) -> Result<(Option<String>, String, String), String> {
    let bad = |why: &str| format!("control file Version '{}' {why}", full.escape_debug());
    if full.contains(char::is_whitespace) {
        return Err(bad("contains whitespace"));
    }
    let (epoch, rest) = match full.split_once(':') {
        Some((e, rest)) => {
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("has an epoch that is not a number"));
            }
            (Some(e.to_string()), rest)
        }
        None => (None, full),
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((_, "")) => return Err(bad("ends with '-' but has no revision")),
        Some((u, r)) => (u, r),
        None => (rest, ""),
    };
    if upstream.is_empty() {
        return Err(bad("has an empty upstream version"));
    }
    Ok((epoch, upstream.to_string(), revision.to_string()))
}

/// How the control archive is compressed, from its member name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

#[derive(Debug)]
enum Unpack {
    Truncated,
    TooBig,
    Corrupt(String),
}

impl Compression {
    fn from_member(name: &str) -> Result<Compression, Fault> {
        match name {
            "control.tar" => Ok(Compression::None),
            "control.tar.gz" => Ok(Compression::Gzip),
            "control.tar.xz" => Ok(Compression::Xz),
            "control.tar.zst" => Ok(Compression::Zstd),
            other => Err(Fault::malformed(
                format!(
                    "unsupported control member '{other}' (expected control.tar, .gz, .xz or .zst)"
                ),
                "rebuild the package with dpkg-deb -Zxz",
            )),
        }
    }

    /// Decompresses `data`, refusing output larger than `cap`.
    fn unpack(self, data: &[u8], cap: u64) -> Result<Vec<u8>, Unpack> {
        let mut out = Vec::new();
        match self {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .take(cap + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| Unpack::classify(&e))?;
            }
            Compression::Zstd => {
                ruzstd::decoding::StreamingDecoder::new(data)
                    .map_err(|e| Unpack::classify(&e))?
                    .take(cap + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| Unpack::classify(&e))?;
            }
            Compression::Xz => {
                let mut sink = Capped { out: &mut out, cap };
                lzma_rs::xz_decompress(&mut io::BufReader::new(data), &mut sink).map_err(|e| {
                    match &e {
                        lzma_rs::error::Error::IoError(io) if io.to_string() == CAPPED => {
                            Unpack::TooBig
                        }
                        _ => Unpack::classify(&e),
                    }
                })?;
            }
        }
        if out.len() as u64 > cap {
            return Err(Unpack::TooBig);
        }
        Ok(out)
    }
}

impl Unpack {
    /// The decoders report a stream that stops early in different ways, most of them wrapping
    /// the `UnexpectedEof` of the input reader; anything else is corruption.
    fn classify<E: std::fmt::Debug + std::fmt::Display>(e: &E) -> Unpack {
        let debug = format!("{e:?}");
        let shown = e.to_string();
        if debug.contains("UnexpectedEof") || shown.contains("failed to fill whole buffer") {
            Unpack::Truncated
        } else {
            Unpack::Corrupt(shown)
        }
    }
}

const CAPPED: &str = "output limit reached";

/// A writer that fails once more than `cap` bytes were written.
struct Capped<'a> {
    out: &'a mut Vec<u8>,
    cap: u64,
}

impl Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() as u64 + buf.len() as u64 > self.cap {
            return Err(io::Error::other(CAPPED));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompression_is_capped() {
        let plain = vec![b'a'; 4096];
        let gz = {
            use std::io::Write as _;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &plain[..], &mut xz).unwrap();
        let zst = ruzstd::encoding::compress_to_vec(
            &plain[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        for (c, packed) in [
            (Compression::Gzip, gz),
            (Compression::Xz, xz),
            (Compression::Zstd, zst),
            (Compression::None, plain.clone()),
        ] {
            assert_eq!(c.unpack(&packed, 4096).unwrap(), plain, "{c:?}");
            assert!(
                matches!(c.unpack(&packed, 100), Err(Unpack::TooBig)),
                "{c:?}"
            );
        }
    }

    #[test]
    fn versions_split_at_epoch_and_last_hyphen() {
        let ok = |v: &str| split_version(v).unwrap();
        assert_eq!(ok("1.0"), (None, "1.0".into(), "".into()));
        assert_eq!(ok("1.0-1"), (None, "1.0".into(), "1".into()));
        assert_eq!(
            ok("2:1.4.2-3ubuntu1"),
            (Some("2".into()), "1.4.2".into(), "3ubuntu1".into())
        );
        assert_eq!(ok("1.2-rc1-4"), (None, "1.2-rc1".into(), "4".into()));
        assert_eq!(ok("1:2:3-4"), (Some("1".into()), "2:3".into(), "4".into()));
        for bad in ["", "a:1.0", ":1.0", "1.0-", "1:", "1:-2", "1.0 -2"] {
            assert!(split_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_paragraph_with_continuations() {
        let text = "\n# comment\nPackage: hello\nversion:  1.0-1 \nDepends: libc6 (>= 2.34),\n adduser | passwd,\n\tfoo\nDescription: x\n more\n\nPackage: second\n";
        let f = parse_control(text).unwrap();
        assert_eq!(f.get("package"), Some("hello"));
        assert_eq!(f.get("Version"), Some("1.0-1"));
        assert_eq!(
            relations(f.get("Depends")),
            ["libc6 (>= 2.34)", "adduser | passwd", "foo"]
        );
        assert_eq!(f.get("Description"), Some("x\nmore"));
        assert_eq!(relations(f.get("Provides")), Vec::<String>::new());
        assert_eq!(relations(Some(" a ,, b (<<  2) ")), ["a", "b (<< 2)"]);
    }

    #[test]
    fn control_errors() {
        assert!(parse_control("").is_err());
        assert!(parse_control(" leading continuation\n").is_err());
        assert!(parse_control("Package hello\n").is_err());
        assert!(parse_control("Bad Name: x\n").is_err());
        let fields = parse_control("Package: a\nArchitecture: all\n").unwrap();
        match info_from_fields(&fields) {
            Err(Fault::Malformed { problem, .. }) => {
                assert_eq!(problem, "control file has no Version field")
            }
            other => panic!("{other:?}"),
        }
        let fields = parse_control("Package: a\nVersion:\nArchitecture: all\n").unwrap();
        assert!(matches!(
            info_from_fields(&fields),
            Err(Fault::Malformed { problem, .. }) if problem.contains("empty Version")
        ));
    }
}
