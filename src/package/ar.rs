//! The member table of a Unix `ar` archive (the outer layer of a .deb), read without
//! loading member data. Every header is bounds-checked against the file size.
//!
//! Not the `ar` crate (0.9): it does not check a member against the file's length (a seeking
//! scan past the end just stops, so a truncated .deb reads as complete), it skips a member by
//! reading it through (the whole data.tar, to reach nothing after it), and its errors are
//! `io::Error` strings where this module tells truncation from corruption (`Fault`). The format
//! is a 60-byte header per member (ar(5), dpkg's deb(5)); this is all a .deb needs of it.
use std::io::{Read, Seek};

use super::{read_at, Fault, DEB_MAGIC};

const HEADER_LEN: u64 = 60;
/// A .deb has three members (four or five when signed); anything past this is not a .deb.
const MAX_MEMBERS: usize = 64;
const HINT: &str = "rebuild the package with dpkg-deb";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub name: String,
    /// Offset of the member data in the file.
    pub offset: u64,
    pub size: u64,
}

/// Lists the members of the ar archive of `len` bytes, checking that each one fits in the file.
pub(crate) fn members<R: Read + Seek>(r: &mut R, len: u64) -> Result<Vec<Member>, Fault> {
    let mut out: Vec<Member> = Vec::new();
    let mut pos = DEB_MAGIC.len() as u64;
    while pos < len {
        let part = || match out.last() {
            Some(m) => format!("ar member header after {}", m.name),
            None => "first ar member header".to_string(),
        };
        if len - pos < HEADER_LEN {
            return Err(Fault::Truncated(part()));
        }
        if out.len() == MAX_MEMBERS {
            return Err(Fault::malformed(
                format!("ar archive has more than {MAX_MEMBERS} members, a .deb has 3"),
                HINT,
            ));
        }
        let header = read_at(r, pos, HEADER_LEN as usize)?;
        let member = parse_header(&header, pos).map_err(|problem| {
            Fault::malformed(format!("{} is corrupt ({problem})", part()), HINT)
        })?;
        let data_end = pos + HEADER_LEN + member.size;
        if member.size > len - pos - HEADER_LEN {
            return Err(Fault::Truncated(member.name));
        }
        // Member data is padded to an even offset, the last member's too (dpkg insists).
        pos = data_end + (data_end % 2);
        if pos > len {
            return Err(Fault::Truncated(member.name));
        }
        out.push(member);
    }
    Ok(out)
}

fn parse_header(h: &[u8], pos: u64) -> Result<Member, String> {
    if h.len() != HEADER_LEN as usize || &h[58..60] != b"`\n" {
        return Err("bad header terminator".into());
    }
    let name = std::str::from_utf8(&h[0..16]).map_err(|_| "name is not text".to_string())?;
    let name = name.trim_end_matches(' ');
    // GNU ar ends names with '/' (dpkg-deb does not, tools that rewrite debs may); "/" and "//"
    // are GNU's symbol and long-name tables and keep their names.
    let name = match name.strip_suffix('/') {
        Some(short) if !short.is_empty() && !short.starts_with('/') => short,
        _ => name,
    };
    if name.is_empty() || name.chars().any(|c| c.is_control()) {
        return Err(format!("bad member name '{}'", h[0..16].escape_ascii()));
    }
    let size = std::str::from_utf8(&h[48..58])
        .ok()
        .map(|s| s.trim_end_matches(' '))
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("bad size field '{}'", h[48..58].escape_ascii()))?;
    Ok(Member {
        name: name.to_string(),
        offset: pos + HEADER_LEN,
        size,
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    /// Builds an ar archive in memory; `size` overrides the declared size of a member.
    pub(crate) fn build(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = super::DEB_MAGIC.to_vec();
        for (name, data) in members {
            out.extend_from_slice(&header(name, &data.len().to_string()));
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    /// One 60-byte header with a raw size field.
    pub(crate) fn header(name: &str, size: &str) -> Vec<u8> {
        format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n",
            0, 0, 0, 100644
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{build, header};
    use super::*;
    use std::io::Cursor;

    fn list(bytes: &[u8]) -> Result<Vec<Member>, Fault> {
        members(&mut Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn lists_members_with_padding() {
        let ar = build(&[("debian-binary", b"2.0\n"), ("odd", b"abc"), ("last", b"z")]);
        let m = list(&ar).unwrap();
        let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["debian-binary", "odd", "last"]);
        assert_eq!(&ar[m[1].offset as usize..][..3], b"abc");
        // The last member's pad byte is part of the archive.
        assert!(matches!(list(&ar[..ar.len() - 1]), Err(Fault::Truncated(p)) if p == "last"));
    }

    #[test]
    fn gnu_slash_names_are_trimmed() {
        let ar = build(&[("control.tar.gz/", b"x")]);
        assert_eq!(list(&ar).unwrap()[0].name, "control.tar.gz");
    }

    #[test]
    fn member_past_the_end_is_truncated() {
        let mut ar = DEB_MAGIC.to_vec();
        ar.extend(header("data.tar.xz", "9999999999"));
        ar.extend(b"short");
        match list(&ar) {
            Err(Fault::Truncated(part)) => assert_eq!(part, "data.tar.xz"),
            other => panic!("{other:?}"),
        }
        let ar = build(&[("debian-binary", b"2.0\n")]);
        match list(&ar[..ar.len() - 1]) {
            Err(Fault::Truncated(part)) => assert_eq!(part, "debian-binary"),
            other => panic!("{other:?}"),
        }
        let mut ar = build(&[("debian-binary", b"2.0\n")]);
        ar.extend(&header("control.tar", "1")[..30]);
        match list(&ar) {
            Err(Fault::Truncated(part)) => {
                assert_eq!(part, "ar member header after debian-binary")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn corrupt_headers_are_malformed() {
        for bad in [
            header("x", "12ab"),
            header("x", ""),
            header("x", "-1"),
            {
                let mut h = header("x", "1");
                h[59] = b'X';
                h
            },
            header("\u{1}", "1"),
        ] {
            let mut ar = DEB_MAGIC.to_vec();
            ar.extend(bad);
            ar.extend(b"zz");
            assert!(
                matches!(list(&ar), Err(Fault::Malformed { .. })),
                "{:?}",
                list(&ar)
            );
        }
    }

    #[test]
    fn member_count_is_capped() {
        let many: Vec<(String, Vec<u8>)> =
            (0..100).map(|i| (format!("m{i}"), vec![b'x'; 2])).collect();
        let refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        assert!(matches!(list(&build(&refs)), Err(Fault::Malformed { .. })));
    }
}
