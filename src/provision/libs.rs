//! What an image's dynamic linker would find: the shared libraries on its library path
//! (`/etc/ld.so.conf` with its `include`s, then the default directories, as ld.so(8) and
//! ldconfig(8) search) and the symbol versions each one defines (its `SHT_GNU_verdef`, read with
//! the `object` crate). rpmbuild's generated requirements on a compiled package —
//! `libc.so.6()(64bit)`, `libc.so.6(GLIBC_2.34)(64bit)`, `rtld(GNU_HASH)` (rpm's elfdeps(1)) —
//! are checked against it on an image whose libraries rpm does not know (a Debian base).

use std::collections::{BTreeMap, BTreeSet};

use object::elf::{FileHeader32, FileHeader64, Machine};
use object::read::elf::FileHeader;
use object::Endianness;

use crate::sys::inroot::InRoot;

/// A requirement on a shared library, as elfdeps writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SonameReq {
    pub soname: String,
    /// The symbol version it must define (`GLIBC_2.34`); none for the soname alone.
    pub version: Option<String>,
    /// `(64bit)`: a 64-bit library; none: a 32-bit one.
    pub bits64: bool,
}

/// `libc.so.6()(64bit)`, `libc.so.6(GLIBC_2.34)(64bit)`, `libm.so.6`, `libm.so.6(GLIBC_2.0)`.
pub fn parse_soname_req(req: &str) -> Option<SonameReq> {
    let (name, rest) = match req.find('(') {
        Some(i) => (&req[..i], &req[i..]),
        None => (req, ""),
    };
    if name.is_empty()
        || name.starts_with('/')
        || !(name.contains(".so.") || name.ends_with(".so"))
        || name.contains(' ')
    {
        return None;
    }
    let mut groups = Vec::new();
    let mut r = rest;
    while let Some(body) = r.strip_prefix('(') {
        let end = body.find(')')?;
        groups.push(&body[..end]);
        r = &body[end + 1..];
    }
    if !r.is_empty() || groups.len() > 2 {
        return None;
    }
    let bits64 = groups.last() == Some(&"64bit");
    let version_groups: Vec<&&str> = groups.iter().filter(|g| **g != "64bit").collect();
    if version_groups.len() > 1 {
        return None;
    }
    let version = version_groups
        .first()
        .map(|g| g.to_string())
        .filter(|g| !g.is_empty());
    Some(SonameReq {
        soname: name.to_string(),
        version,
        bits64,
    })
}

/// Directories named by an ld.so.conf text; `include` patterns are expanded by `expand` (which
/// returns the texts of the files they match).
pub fn parse_ld_so_conf(
    text: &str,
    expand: &mut dyn FnMut(&str) -> Vec<String>,
    depth: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("hwcap ") {
            continue;
        }
        if let Some(pat) = line.strip_prefix("include") {
            if depth < 4 {
                for inc in pat.split_whitespace() {
                    for t in expand(inc) {
                        out.extend(parse_ld_so_conf(&t, expand, depth + 1));
                    }
                }
            }
            continue;
        }
        out.extend(
            line.split([' ', '\t', ',', ':'])
                .filter(|d| d.starts_with('/'))
                .map(|d| d.trim_end_matches('/').to_string()),
        );
    }
    out
}

/// A library found on the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lib {
    pub path: String,
    pub machine: Machine,
    pub versions: BTreeSet<String>,
}

/// ELF class, machine and defined versions of a shared object; none if it is not ELF.
pub fn read_elf(data: &[u8]) -> Option<(bool, Machine, BTreeSet<String>)> {
    fn go<H: FileHeader<Endian = Endianness>>(
        h: &H,
        data: &[u8],
    ) -> Option<(Machine, BTreeSet<String>)> {
        let e = h.endian().ok()?;
        let sections = h.sections(e, data).ok()?;
        let mut out = BTreeSet::new();
        if let Some((mut defs, link)) = sections.gnu_verdef(e, data).ok()? {
            let strings = sections.strings(e, data, link).ok()?;
            while let Ok(Some((def, mut aux))) = defs.next() {
                // The base entry names the file itself (its soname), not a version.
                if def.vd_flags.get(e).contains(object::elf::VER_FLG_BASE) {
                    continue;
                }
                if let Ok(Some(a)) = aux.next() {
                    if let Ok(n) = a.name(e, strings) {
                        out.insert(String::from_utf8_lossy(n).into_owned());
                    }
                }
            }
        }
        Some((h.e_machine(e), out))
    }
    match data.get(4)? {
        2 => {
            let h = FileHeader64::<Endianness>::parse(data).ok()?;
            go(h, data).map(|(m, v)| (true, m, v))
        }
        1 => {
            let h = FileHeader32::<Endianness>::parse(data).ok()?;
            go(h, data).map(|(m, v)| (false, m, v))
        }
        _ => None,
    }
}

/// ELF machine of an rpm architecture (`x86_64`, `aarch64`, ...); none for `noarch` or unknown.
pub fn machine_of(arch: &str) -> Option<Machine> {
    Some(match arch {
        "x86_64" | "amd64" => object::elf::EM_X86_64,
        "aarch64" | "arm64" => object::elf::EM_AARCH64,
        "i386" | "i486" | "i586" | "i686" | "x86" => object::elf::EM_386,
        "ppc64le" | "ppc64" => object::elf::EM_PPC64,
        "s390x" => object::elf::EM_S390,
        "riscv64" => object::elf::EM_RISCV,
        _ => return None,
    })
}

/// The image's library path and what it holds, looked up lazily (each library read once).
pub struct LibraryPath<'a> {
    fs: &'a InRoot,
    pub dirs: Vec<String>,
    cache: BTreeMap<(String, bool), Option<Lib>>,
}

impl<'a> LibraryPath<'a> {
    pub fn of(fs: &'a InRoot) -> LibraryPath<'a> {
        let conf = fs.read_string("/etc/ld.so.conf").unwrap_or_default();
        let mut expand = |pat: &str| -> Vec<String> {
            let (dir, file) = pat.rsplit_once('/').unwrap_or(("/etc", pat));
            let (pre, suf) = file.split_once('*').unwrap_or((file, ""));
            let exact = !file.contains('*');
            fs.list(dir)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| {
                    if exact {
                        n == file
                    } else {
                        n.starts_with(pre) && n.ends_with(suf) && n.len() >= pre.len() + suf.len()
                    }
                })
                .filter_map(|n| fs.read_string(&format!("{dir}/{n}")).ok())
                .collect()
        };
        let mut dirs = parse_ld_so_conf(&conf, &mut expand, 0);
        // ld.so's trusted directories come last (glibc: /lib, /usr/lib and their 64-bit twins).
        for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
            dirs.push(d.to_string());
        }
        let mut seen = BTreeSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        LibraryPath {
            fs,
            dirs,
            cache: BTreeMap::new(),
        }
    }

    /// The first library named `soname` of the wanted class (and machine, when given).
    pub fn find(&mut self, soname: &str, bits64: bool, machine: Option<Machine>) -> Option<&Lib> {
        let key = (soname.to_string(), bits64);
        if !self.cache.contains_key(&key) {
            let mut found = None;
            for d in &self.dirs {
                let p = format!("{d}/{soname}");
                let Ok(data) = self.fs.read_limited(&p, 256 << 20) else {
                    continue;
                };
                let Some((is64, m, versions)) = read_elf(&data) else {
                    continue;
                };
                if is64 != bits64 || machine.is_some_and(|want| want != m) {
                    continue;
                }
                found = Some(Lib {
                    path: p,
                    machine: m,
                    versions,
                });
                break;
            }
            self.cache.insert(key.clone(), found);
        }
        self.cache.get(&key).and_then(|l| l.as_ref())
    }

    /// Whether `req` is met by a library on the path.
    pub fn satisfies(&mut self, req: &SonameReq, machine: Option<Machine>) -> bool {
        match self.find(&req.soname, req.bits64, machine) {
            Some(lib) => req
                .version
                .as_ref()
                .is_none_or(|v| lib.versions.contains(v)),
            None => false,
        }
    }

    /// `rtld(GNU_HASH)`: a glibc dynamic linker that reads DT_GNU_HASH (glibc >= 2.5).
    pub fn rtld_gnu_hash(&mut self, machine: Option<Machine>) -> bool {
        [true, false].iter().any(|&b| {
            self.find("libc.so.6", b, machine)
                .is_some_and(|l| l.versions.contains("GLIBC_2.5"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elfdeps_requirements_are_recognised() {
        assert_eq!(
            parse_soname_req("libc.so.6(GLIBC_2.34)(64bit)"),
            Some(SonameReq {
                soname: "libc.so.6".into(),
                version: Some("GLIBC_2.34".into()),
                bits64: true
            })
        );
        assert_eq!(
            parse_soname_req("libc.so.6()(64bit)"),
            Some(SonameReq {
                soname: "libc.so.6".into(),
                version: None,
                bits64: true
            })
        );
        assert_eq!(
            parse_soname_req("libm.so.6(GLIBC_2.0)"),
            Some(SonameReq {
                soname: "libm.so.6".into(),
                version: Some("GLIBC_2.0".into()),
                bits64: false
            })
        );
        assert_eq!(
            parse_soname_req("ld-linux-x86-64.so.2()(64bit)")
                .unwrap()
                .soname,
            "ld-linux-x86-64.so.2"
        );
        for not in [
            "perl(Foo::Bar)",
            "bash",
            "rtld(GNU_HASH)",
            "/usr/lib/libx.so.1",
            "config(app)",
        ] {
            assert_eq!(parse_soname_req(not), None, "{not}");
        }
    }

    #[test]
    fn ld_so_conf_includes_are_followed() {
        let mut expand = |pat: &str| -> Vec<String> {
            assert_eq!(pat, "/etc/ld.so.conf.d/*.conf");
            vec![
                "# Multiarch support\n/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n".into(),
                "/usr/local/lib\n".into(),
            ]
        };
        let dirs = parse_ld_so_conf(
            "include /etc/ld.so.conf.d/*.conf\n/opt/app/lib:/opt/x/lib/\n",
            &mut expand,
            0,
        );
        assert_eq!(
            dirs,
            [
                "/usr/local/lib/x86_64-linux-gnu",
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/usr/local/lib",
                "/opt/app/lib",
                "/opt/x/lib"
            ]
        );
    }

    #[test]
    fn the_hosts_libc_defines_its_versions() {
        // The bake host is a glibc system (Debian): its libc is a real ELF to read.
        let Some(p) = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/libc.so.6",
            "/usr/lib64/libc.so.6",
        ]
        .iter()
        .find(|p| std::path::Path::new(p).exists()) else {
            return;
        };
        let (is64, m, v) = read_elf(&std::fs::read(p).unwrap()).unwrap();
        assert!(is64);
        assert_eq!(Some(m), machine_of(std::env::consts::ARCH));
        assert!(
            v.contains("GLIBC_2.2.5") || v.contains("GLIBC_2.17"),
            "{v:?}"
        );
        assert!(v.contains("GLIBC_2.34"), "{v:?}");
        assert!(!v.contains("libc.so.6"), "the base entry is not a version");
        assert_eq!(read_elf(b"#!/bin/sh\n"), None);
    }
}
