//! .rpm: a 96-byte lead, the signature header (padded to 8 bytes), the main header, then the
//! compressed payload. Only the headers are read; the payload is checked for length.
use std::io::{Read, Seek};

use super::{read_at, Fault, PackageInfo, PackageKind};

const LEAD_LEN: u64 = 96;
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
const INTRO_LEN: u64 = 16;
const ENTRY_LEN: u64 = 16;
/// rpm's own limits (HEADER_TAGS_MAX, HEADER_DATA_MAX in rpm's header.c).
const MAX_TAGS: u32 = 0xffff;
const MAX_DATA: u32 = 0x0fff_ffff;
/// Lead `type` of a source package.
const LEAD_SOURCE: u16 = 1;
/// Lead `signature_type` of every rpm since 3.0: a header-style signature.
const SIGTYPE_HEADERSIG: u16 = 5;

// Signature header tags.
const SIG_SIZE: u32 = 1000;
const SIG_LONGSIZE: u32 = 270;
// Main header tags.
const NAME: u32 = 1000;
const VERSION: u32 = 1001;
const RELEASE: u32 = 1002;
const EPOCH: u32 = 1003;
const ARCH: u32 = 1022;
const SOURCERPM: u32 = 1044;
const PROVIDENAME: u32 = 1047;
const REQUIRENAME: u32 = 1049;
const SOURCEPACKAGE: u32 = 1106;

// Entry data types.
const T_INT32: u32 = 4;
const T_INT64: u32 = 5;
const T_STRING: u32 = 6;
const T_STRING_ARRAY: u32 = 8;
const T_I18NSTRING: u32 = 9;

const REBUILD: &str = "rebuild it with rpmbuild or re-download it";

pub(crate) fn read<R: Read + Seek>(r: &mut R, len: u64) -> Result<PackageInfo, Fault> {
    if len < LEAD_LEN {
        return Err(Fault::Truncated("rpm lead".into()));
    }
    let lead = read_at(r, 0, LEAD_LEN as usize)?;
    let major = lead[4];
    let lead_type = u16::from_be_bytes([lead[6], lead[7]]);
    let sig_type = u16::from_be_bytes([lead[78], lead[79]]);
    if !(3..=4).contains(&major) {
        return Err(Fault::malformed(
            format!("unsupported rpm format version {major} (expected 3 or 4)"),
            REBUILD,
        ));
    }
    if sig_type != SIGTYPE_HEADERSIG {
        return Err(Fault::malformed(
            format!("rpm lead has signature type {sig_type} (expected {SIGTYPE_HEADERSIG})"),
            REBUILD,
        ));
    }
    let lead_name = {
        let raw = &lead[10..76];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).into_owned()
    };
    if lead_type == LEAD_SOURCE {
        return Err(Fault::SourceRpm(lead_name));
    }

    let (sig, sig_end) = Header::read(r, LEAD_LEN, len, "signature header")?;
    // The main header starts at the next multiple of 8.
    let main_start = sig_end.next_multiple_of(8);
    if main_start > len {
        return Err(Fault::Truncated("signature header padding".into()));
    }
    let (main, main_end) = Header::read(r, main_start, len, "main header")?;

    // SIZE in the signature is the length of the main header plus the payload.
    let size = match sig.int64(SIG_LONGSIZE)? {
        Some(size) => Some(size),
        None => sig.int32(SIG_SIZE)?.map(u64::from),
    };
    let complete = match size {
        Some(size) => len - main_start >= size,
        None => len > main_end,
    };
    if !complete {
        return Err(Fault::Truncated("payload".into()));
    }

    let name = main.required_string(NAME, "NAME")?;
    let arch = main.required_string(ARCH, "ARCH")?;
    if main.has(SOURCEPACKAGE) || (!main.has(SOURCERPM) && arch == "src") {
        return Err(Fault::SourceRpm(name));
    }
    Ok(PackageInfo {
        kind: PackageKind::Rpm,
        path: Default::default(),
        version: main.required_string(VERSION, "VERSION")?,
        release: main.required_string(RELEASE, "RELEASE")?,
        epoch: main.int32(EPOCH)?.map(|e| e.to_string()),
        name,
        arch,
        depends: Vec::new(),
        pre_depends: Vec::new(),
        provides: main.string_array(PROVIDENAME)?,
        conflicts: Vec::new(),
        requires: main.string_array(REQUIRENAME)?,
        source: Default::default(),
    })
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u32,
    kind: u32,
    offset: u32,
    count: u32,
}

/// One header structure: the index entries and the data store they point into.
struct Header {
    what: &'static str,
    entries: Vec<Entry>,
    store: Vec<u8>,
}

impl Header {
    /// Reads the header at `start` of a file of `len` bytes; returns it and its end offset.
    fn read<R: Read + Seek>(
        r: &mut R,
        start: u64,
        len: u64,
        what: &'static str,
    ) -> Result<(Header, u64), Fault> {
        if len - start < INTRO_LEN {
            return Err(Fault::Truncated(what.into()));
        }
        let intro = read_at(r, start, INTRO_LEN as usize)?;
        if intro[0..4] != HEADER_MAGIC {
            return Err(Fault::malformed(
                format!(
                    "{what} has a bad magic number '{}'",
                    intro[0..4].escape_ascii()
                ),
                REBUILD,
            ));
        }
        let tags = u32::from_be_bytes([intro[8], intro[9], intro[10], intro[11]]);
        let data = u32::from_be_bytes([intro[12], intro[13], intro[14], intro[15]]);
        if tags == 0 || tags > MAX_TAGS || data > MAX_DATA {
            return Err(Fault::malformed(
                format!(
                    "{what} claims {tags} entries and {data} bytes of data, outside rpm's limits"
                ),
                REBUILD,
            ));
        }
        let index_len = u64::from(tags) * ENTRY_LEN;
        let body = index_len + u64::from(data);
        // Allocations below are bounded by what the file actually holds.
        if body > len - start - INTRO_LEN {
            return Err(Fault::Truncated(what.into()));
        }
        let index = read_at(r, start + INTRO_LEN, index_len as usize)?;
        let store = read_at(r, start + INTRO_LEN + index_len, data as usize)?;
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let entries = index
            .chunks_exact(ENTRY_LEN as usize)
            .map(|e| Entry {
                tag: be(&e[0..4]),
                kind: be(&e[4..8]),
                offset: be(&e[8..12]),
                count: be(&e[12..16]),
            })
            .collect();
        let header = Header {
            what,
            entries,
            store,
        };
        Ok((header, start + INTRO_LEN + body))
    }

    fn has(&self, tag: u32) -> bool {
        self.entries.iter().any(|e| e.tag == tag)
    }

    fn find(&self, tag: u32) -> Option<Entry> {
        self.entries.iter().copied().find(|e| e.tag == tag)
    }

    fn bad(&self, tag: u32, why: &str) -> Fault {
        Fault::malformed(format!("{} tag {tag} {why}", self.what), REBUILD)
    }

    /// The data from the entry's offset to the end of the store.
    fn data(&self, e: Entry) -> Result<&[u8], Fault> {
        self.store
            .get(e.offset as usize..)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| self.bad(e.tag, "points outside the header data"))
    }

    /// Fixed-size integer data, checked for kind, count and bounds.
    fn fixed<const N: usize>(&self, tag: u32, kind: u32) -> Result<Option<[u8; N]>, Fault> {
        let Some(e) = self.find(tag) else {
            return Ok(None);
        };
        if e.kind != kind || e.count < 1 {
            return Err(self.bad(tag, &format!("has type {} (expected {kind})", e.kind)));
        }
        let data = self.data(e)?;
        let bytes = data
            .get(..N)
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or_else(|| self.bad(tag, "runs past the header data"))?;
        Ok(Some(bytes))
    }

    fn int32(&self, tag: u32) -> Result<Option<u32>, Fault> {
        Ok(self.fixed::<4>(tag, T_INT32)?.map(u32::from_be_bytes))
    }

    fn int64(&self, tag: u32) -> Result<Option<u64>, Fault> {
        Ok(self.fixed::<8>(tag, T_INT64)?.map(u64::from_be_bytes))
    }

    /// The first string of a STRING, I18NSTRING or STRING_ARRAY entry.
    fn string(&self, tag: u32) -> Result<Option<String>, Fault> {
        let Some(e) = self.find(tag) else {
            return Ok(None);
        };
        if !matches!(e.kind, T_STRING | T_I18NSTRING | T_STRING_ARRAY) {
            return Err(self.bad(tag, &format!("has type {} (expected a string)", e.kind)));
        }
        let data = self.data(e)?;
        Ok(Some(self.cstr(tag, data)?.0))
    }

    fn required_string(&self, tag: u32, name: &str) -> Result<String, Fault> {
        match self.string(tag)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(Fault::malformed(
                format!("{} has an empty {name} tag", self.what),
                REBUILD,
            )),
            None => Err(Fault::malformed(
                format!("{} has no {name} tag", self.what),
                REBUILD,
            )),
        }
    }

    /// A STRING_ARRAY (or single STRING) entry; absent means empty.
    fn string_array(&self, tag: u32) -> Result<Vec<String>, Fault> {
        let Some(e) = self.find(tag) else {
            return Ok(Vec::new());
        };
        if !matches!(e.kind, T_STRING | T_STRING_ARRAY) {
            return Err(self.bad(
                tag,
                &format!("has type {} (expected a string array)", e.kind),
            ));
        }
        let mut data = self.data(e)?;
        // Each string takes at least its NUL, which bounds the count by the data size.
        let count = if e.kind == T_STRING {
            1
        } else {
            e.count as usize
        };
        if count > data.len() {
            return Err(self.bad(tag, "has more strings than header data"));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let (s, used) = self.cstr(tag, data)?;
            out.push(s);
            data = &data[used..];
        }
        Ok(out)
    }

    /// The NUL-terminated string at the start of `data`, and the bytes it used.
    fn cstr(&self, tag: u32, data: &[u8]) -> Result<(String, usize), Fault> {
        let end = data
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.bad(tag, "has a string without its terminating NUL"))?;
        Ok((String::from_utf8_lossy(&data[..end]).into_owned(), end + 1))
    }
}

#[cfg(test)]
mod test_support {
    use super::*;

    /// A header entry value for [`header`].
    pub(crate) enum Value<'a> {
        Str(&'a str),
        Strs(&'a [&'a str]),
        Int32(u32),
        /// Raw (kind, offset, count) for corrupt entries.
        Raw(u32, u32, u32),
    }

    /// A header structure with the given entries.
    pub(crate) fn header(entries: &[(u32, Value)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut store: Vec<u8> = Vec::new();
        for (tag, value) in entries {
            let (kind, offset, count) = match value {
                Value::Str(s) => {
                    let off = store.len();
                    store.extend(s.as_bytes());
                    store.push(0);
                    (T_STRING, off, 1)
                }
                Value::Strs(list) => {
                    let off = store.len();
                    for s in *list {
                        store.extend(s.as_bytes());
                        store.push(0);
                    }
                    (T_STRING_ARRAY, off, list.len())
                }
                Value::Int32(v) => {
                    while !store.len().is_multiple_of(4) {
                        store.push(0);
                    }
                    let off = store.len();
                    store.extend(v.to_be_bytes());
                    (T_INT32, off, 1)
                }
                Value::Raw(kind, off, count) => (*kind, *off as usize, *count as usize),
            };
            for n in [*tag, kind, offset as u32, count as u32] {
                index.extend(n.to_be_bytes());
            }
        }
        let mut out = HEADER_MAGIC.to_vec();
        out.extend([0; 4]);
        out.extend((entries.len() as u32).to_be_bytes());
        out.extend((store.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(store);
        out
    }

    /// A whole rpm: lead of `lead_type`, a signature with SIZE, `main`, then `payload`.
    pub(crate) fn rpm(lead_type: u16, main: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = crate::package::RPM_MAGIC.to_vec();
        out.extend([3, 0]);
        out.extend(lead_type.to_be_bytes());
        out.extend([0, 1]);
        let mut name = b"hello-1.0-1".to_vec();
        name.resize(66, 0);
        out.extend(name);
        out.extend([0, 1]);
        out.extend(SIGTYPE_HEADERSIG.to_be_bytes());
        out.extend([0; 16]);
        assert_eq!(out.len(), 96);
        let size = (main.len() + payload.len()) as u32;
        out.extend(header(&[(SIG_SIZE, Value::Int32(size))]));
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        out.extend(main);
        out.extend(payload);
        out
    }

    pub(crate) fn basic_main(extra: &[(u32, Value)]) -> Vec<u8> {
        let mut entries = vec![
            (NAME, Value::Str("hello")),
            (VERSION, Value::Str("1.0")),
            (RELEASE, Value::Str("1.el9")),
            (ARCH, Value::Str("aarch64")),
            (SOURCERPM, Value::Str("hello-1.0-1.el9.src.rpm")),
        ];
        for (tag, v) in extra {
            let v = match v {
                Value::Str(s) => Value::Str(s),
                Value::Strs(s) => Value::Strs(s),
                Value::Int32(i) => Value::Int32(*i),
                Value::Raw(a, b, c) => Value::Raw(*a, *b, *c),
            };
            entries.retain(|(t, _)| t != tag);
            entries.push((*tag, v));
        }
        header(&entries)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use std::io::Cursor;

    fn parse(bytes: &[u8]) -> Result<PackageInfo, Fault> {
        read(&mut Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn reads_hand_made_rpm() {
        let main = basic_main(&[
            (EPOCH, Value::Int32(3)),
            (REQUIRENAME, Value::Strs(&["bash", "rpmlib(X)"])),
            (PROVIDENAME, Value::Strs(&["hello", "web"])),
        ]);
        let info = parse(&rpm(0, &main, b"payload")).unwrap();
        assert_eq!(info.kind, PackageKind::Rpm);
        assert_eq!(info.name, "hello");
        assert_eq!(info.full_version(), "1.0-1.el9");
        assert_eq!(info.epoch.as_deref(), Some("3"));
        assert_eq!(info.normalized_arch(), "arm64");
        assert_eq!(info.requires, ["bash", "rpmlib(X)"]);
        assert_eq!(info.provides, ["hello", "web"]);
    }

    #[test]
    fn source_rpms_are_rejected() {
        let main = basic_main(&[]);
        assert!(
            matches!(parse(&rpm(1, &main, b"p")), Err(Fault::SourceRpm(n)) if n == "hello-1.0-1")
        );
        let main = basic_main(&[(SOURCEPACKAGE, Value::Int32(1))]);
        assert!(matches!(
            parse(&rpm(0, &main, b"p")),
            Err(Fault::SourceRpm(_))
        ));
    }

    #[test]
    fn missing_payload_is_truncated() {
        let main = basic_main(&[]);
        let whole = rpm(0, &main, b"payload");
        assert!(matches!(
            parse(&whole[..whole.len() - 1]),
            Err(Fault::Truncated(p)) if p == "payload"
        ));
    }

    #[test]
    fn corrupt_entries_are_malformed() {
        let cases: Vec<Vec<u8>> = vec![
            basic_main(&[(NAME, Value::Raw(T_STRING, 1 << 30, 1))]),
            basic_main(&[(NAME, Value::Raw(T_INT32, 0, 1))]),
            basic_main(&[(NAME, Value::Str(""))]),
            basic_main(&[(EPOCH, Value::Raw(T_INT32, 0xffff_fffe, 1))]),
            basic_main(&[(EPOCH, Value::Raw(T_STRING, 0, 1))]),
            basic_main(&[(REQUIRENAME, Value::Raw(T_STRING_ARRAY, 0, u32::MAX))]),
            basic_main(&[(REQUIRENAME, Value::Raw(T_INT32, 0, 1))]),
            header(&[(NAME, Value::Str("x"))]),
            {
                // A string running off the end of the store.
                let mut h = basic_main(&[(PROVIDENAME, Value::Strs(&["a"]))]);
                let last = h.len() - 1;
                h[last] = b'x';
                h
            },
        ];
        for (i, main) in cases.iter().enumerate() {
            match parse(&rpm(0, main, b"p")) {
                Err(Fault::Malformed { .. }) => {}
                other => panic!("case {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn absurd_header_sizes_are_rejected_without_allocating() {
        let main = basic_main(&[]);
        let mut bytes = rpm(0, &main, b"p");
        let main_at = bytes.len() - main.len() - 1;
        // 65535 entries, 256 MiB of data: within rpm's limits but far past the file's end.
        bytes[main_at + 8..main_at + 16]
            .copy_from_slice(&[0, 0, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff]);
        assert!(matches!(parse(&bytes), Err(Fault::Truncated(p)) if p == "main header"));
        bytes[main_at + 8..main_at + 12].copy_from_slice(&[0xff; 4]);
        assert!(matches!(parse(&bytes), Err(Fault::Malformed { .. })));
        bytes[main_at] = 0;
        assert!(matches!(parse(&bytes), Err(Fault::Malformed { .. })));
    }

    #[test]
    fn bad_lead_is_malformed() {
        let mut bytes = rpm(0, &basic_main(&[]), b"p");
        bytes[79] = 1;
        assert!(matches!(parse(&bytes), Err(Fault::Malformed { .. })));
        bytes[79] = 5;
        bytes[4] = 9;
        assert!(matches!(parse(&bytes), Err(Fault::Malformed { .. })));
    }
}
