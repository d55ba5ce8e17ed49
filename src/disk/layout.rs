//! Read a disk's partition table (GPT or MBR) and the filesystems on it straight from the image
//! file, before any loop device exists: a base without a usable root is refused up front.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const SECTOR: u64 = 512;

/// GPT type of "Linux root (x86-64)" (systemd's discoverable partitions spec).
pub const GPT_ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
pub const GPT_LINUX_DATA: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
pub const GPT_BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
pub const GPT_ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
pub const GPT_XBOOTLDR: &str = "bc13c2ff-59e6-4262-a352-b275fd6f7172";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Mbr,
    /// The whole disk is one filesystem.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsInfo {
    pub kind: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based partition number (the `N` of /dev/loopXpN); 0 for a whole-disk filesystem.
    pub number: u32,
    pub start: u64,
    pub size: u64,
    pub type_id: String,
    pub part_uuid: Option<String>,
    pub fs: Option<FsInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub table: TableKind,
    pub disk_size: u64,
    pub partitions: Vec<Partition>,
}

impl Layout {
    /// The partition holding `/`: the GPT root type if present, else a Linux filesystem
    /// labelled like a root, else the largest Linux filesystem.
    pub fn root(&self) -> Option<&Partition> {
        let linux = |p: &&Partition| {
            p.fs.as_ref().is_some_and(|f| {
                matches!(f.kind.as_str(), "ext4" | "ext3" | "ext2" | "xfs" | "btrfs")
            })
        };
        if let Some(p) = self
            .partitions
            .iter()
            .filter(linux)
            .find(|p| p.type_id == GPT_ROOT_X86_64)
        {
            return Some(p);
        }
        let rootish = |p: &&Partition| {
            p.fs.as_ref()
                .and_then(|f| f.label.as_deref())
                .is_some_and(|l| matches!(l, "root" | "rootfs" | "cloudimg-rootfs" | "ROOT"))
        };
        if let Some(p) = self.partitions.iter().filter(linux).find(rootish) {
            return Some(p);
        }
        self.partitions
            .iter()
            .filter(linux)
            .filter(|p| !matches!(p.type_id.as_str(), GPT_ESP | GPT_XBOOTLDR))
            .max_by_key(|p| p.size)
    }

    /// Find the partition an fstab source (`UUID=`, `LABEL=`, `PARTUUID=`) names.
    pub fn find_by_spec(&self, spec: &str) -> Option<&Partition> {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if let Some(u) = spec.strip_prefix("UUID=") {
            return self.partitions.iter().find(|p| {
                p.fs.as_ref()
                    .and_then(|f| f.uuid.as_deref())
                    .is_some_and(|x| eq(x, u))
            });
        }
        if let Some(l) = spec.strip_prefix("LABEL=") {
            return self
                .partitions
                .iter()
                .find(|p| p.fs.as_ref().and_then(|f| f.label.as_deref()) == Some(l));
        }
        if let Some(u) = spec.strip_prefix("PARTUUID=") {
            return self
                .partitions
                .iter()
                .find(|p| p.part_uuid.as_deref().is_some_and(|x| eq(x, u)));
        }
        None
    }
}

pub fn read_layout(path: &Path) -> Result<Layout> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // Seeking to the end gives the size of block devices too (their metadata length is 0).
    let size = f.seek(SeekFrom::End(0))?;
    read_layout_from(&mut f, size)
}

pub fn read_layout_from<R: Read + Seek>(r: &mut R, disk_size: u64) -> Result<Layout> {
    let mut mbr = [0u8; 512];
    if disk_size < 512 || read_at(r, 0, &mut mbr).is_err() {
        return Ok(Layout {
            table: TableKind::None,
            disk_size,
            partitions: vec![],
        });
    }
    let mut partitions = Vec::new();
    let table;
    let mut hdr = [0u8; 92];
    let has_gpt = read_at(r, SECTOR, &mut hdr).is_ok() && &hdr[0..8] == b"EFI PART";
    if has_gpt {
        table = TableKind::Gpt;
        let entries_lba = u64::from_le_bytes(hdr[72..80].try_into().unwrap());
        let count = u32::from_le_bytes(hdr[80..84].try_into().unwrap()).min(256);
        let esize = u32::from_le_bytes(hdr[84..88].try_into().unwrap()) as u64;
        if !(128..=4096).contains(&esize) {
            anyhow::bail!("GPT entry size {esize} is not valid");
        }
        for i in 0..count as u64 {
            let mut e = vec![0u8; esize as usize];
            if read_at(r, entries_lba * SECTOR + i * esize, &mut e).is_err() {
                break;
            }
            let type_id = guid(&e[0..16]);
            if type_id == "00000000-0000-0000-0000-000000000000" {
                continue;
            }
            let first = u64::from_le_bytes(e[32..40].try_into().unwrap());
            let last = u64::from_le_bytes(e[40..48].try_into().unwrap());
            if last < first || last.saturating_mul(SECTOR) >= disk_size {
                continue;
            }
            partitions.push(Partition {
                number: i as u32 + 1,
                start: first * SECTOR,
                size: (last - first + 1) * SECTOR,
                type_id,
                part_uuid: Some(guid(&e[16..32])),
                fs: None,
            });
        }
    } else if mbr[510] == 0x55
        && mbr[511] == 0xAA
        && (0..4).any(|i| mbr[446 + i * 16 + 4] != 0)
        && detect_fs(r, 0)?.is_none()
    {
        table = TableKind::Mbr;
        for i in 0..4 {
            let e = &mbr[446 + i * 16..446 + (i + 1) * 16];
            let kind = e[4];
            let start = u32::from_le_bytes(e[8..12].try_into().unwrap()) as u64;
            let len = u32::from_le_bytes(e[12..16].try_into().unwrap()) as u64;
            if kind == 0 || kind == 0xEE || kind == 0x05 || kind == 0x0f || len == 0 {
                continue;
            }
            partitions.push(Partition {
                number: i as u32 + 1,
                start: start * SECTOR,
                size: len * SECTOR,
                type_id: format!("0x{kind:02x}"),
                part_uuid: None,
                fs: None,
            });
        }
    } else {
        table = TableKind::None;
        if disk_size > 0 {
            partitions.push(Partition {
                number: 0,
                start: 0,
                size: disk_size,
                type_id: String::new(),
                part_uuid: None,
                fs: None,
            });
        }
    }
    for p in &mut partitions {
        p.fs = detect_fs(r, p.start)?;
    }
    Ok(Layout {
        table,
        disk_size,
        partitions,
    })
}

fn read_at<R: Read + Seek>(r: &mut R, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
    r.seek(SeekFrom::Start(off))?;
    r.read_exact(buf)
}

/// Mixed-endian GUID text as GPT stores it.
fn guid(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        u32::from_le_bytes(b[0..4].try_into().unwrap()),
        u16::from_le_bytes(b[4..6].try_into().unwrap()),
        u16::from_le_bytes(b[6..8].try_into().unwrap()),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn uuid_be(b: &[u8]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn label(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// Identify the filesystem whose first byte is at `off` from its superblock magic.
pub fn detect_fs<R: Read + Seek>(r: &mut R, off: u64) -> Result<Option<FsInfo>> {
    let mut sb = vec![0u8; 4096];
    if read_at(r, off, &mut sb[..]).is_err() {
        return Ok(None);
    }
    let mut ext = [0u8; 1024];
    if read_at(r, off + 1024, &mut ext).is_ok() && ext[56] == 0x53 && ext[57] == 0xEF {
        let incompat = u32::from_le_bytes(ext[96..100].try_into().unwrap());
        let compat = u32::from_le_bytes(ext[92..96].try_into().unwrap());
        let kind = if incompat & 0x40 != 0 || incompat & 0x80 != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return Ok(Some(FsInfo {
            kind: kind.into(),
            uuid: Some(uuid_be(&ext[104..120])),
            label: label(&ext[120..136]),
        }));
    }
    if &sb[0..4] == b"XFSB" {
        return Ok(Some(FsInfo {
            kind: "xfs".into(),
            uuid: Some(uuid_be(&sb[32..48])),
            label: label(&sb[108..120]),
        }));
    }
    let mut btrfs = [0u8; 0x22b];
    if read_at(r, off + 0x10000, &mut btrfs).is_ok() && &btrfs[0x40..0x48] == b"_BHRfS_M" {
        return Ok(Some(FsInfo {
            kind: "btrfs".into(),
            uuid: Some(uuid_be(&btrfs[0x20..0x30])),
            label: label(&btrfs[0x12b..0x22b]),
        }));
    }
    if sb[510] == 0x55 && sb[511] == 0xAA && (&sb[82..87] == b"FAT32" || &sb[54..57] == b"FAT") {
        let (id, lab) = if &sb[82..87] == b"FAT32" {
            (&sb[67..71], &sb[71..82])
        } else {
            (&sb[39..43], &sb[43..54])
        };
        let uuid = format!("{:02X}{:02X}-{:02X}{:02X}", id[3], id[2], id[1], id[0]);
        return Ok(Some(FsInfo {
            kind: "vfat".into(),
            uuid: Some(uuid),
            label: label(lab).filter(|l| l != "NO NAME"),
        }));
    }
    if &sb[4086..4096] == b"SWAPSPACE2" {
        return Ok(Some(FsInfo {
            kind: "swap".into(),
            uuid: Some(uuid_be(&sb[1036..1052])),
            label: label(&sb[1052..1068]),
        }));
    }
    Ok(None)
}

/// One line of /etc/fstab that bakery has to mount for a bake (`/boot`, `/boot/efi`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: String,
}

/// Entries under the root that hold part of the OS (the bake must see them mounted), in mount order.
pub fn fstab_extra_mounts(fstab: &str) -> Vec<FstabEntry> {
    let mut out: Vec<FstabEntry> = fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| FstabEntry {
                source: f[0].into(),
                target: f[1].into(),
                fstype: f[2].into(),
                options: f.get(3).copied().unwrap_or("defaults").into(),
            })
        })
        .filter(|e| {
            e.target.starts_with("/boot")
                || e.target == "/usr"
                || e.target == "/var"
                || e.target == "/opt"
        })
        .filter(|e| {
            !matches!(
                e.fstype.as_str(),
                "swap" | "tmpfs" | "proc" | "sysfs" | "none"
            )
        })
        .collect();
    out.sort_by_key(|e| e.target.matches('/').count() + usize::from(e.target.len() > 1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn ext4_at(img: &mut [u8], off: usize, uuid: [u8; 16], lab: &str) {
        let sb = off + 1024;
        img[sb + 56] = 0x53;
        img[sb + 57] = 0xEF;
        img[sb + 96] = 0x40; // extents => ext4
        img[sb + 104..sb + 120].copy_from_slice(&uuid);
        img[sb + 120..sb + 120 + lab.len()].copy_from_slice(lab.as_bytes());
    }

    fn gpt_entry(img: &mut [u8], i: usize, type_le: [u8; 16], first: u64, last: u64) {
        let e = 1024 + i * 128;
        img[e..e + 16].copy_from_slice(&type_le);
        img[e + 16] = i as u8 + 1;
        img[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
        img[e + 40..e + 48].copy_from_slice(&last.to_le_bytes());
    }

    // GPT type GUIDs in on-disk (mixed-endian) byte order.
    const BIOS: [u8; 16] = [
        0x48, 0x61, 0x68, 0x21, 0x49, 0x64, 0x6f, 0x6e, 0x74, 0x4e, 0x65, 0x65, 0x64, 0x45, 0x46,
        0x49,
    ];
    const ROOT: [u8; 16] = [
        0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7,
        0x09,
    ];

    fn gpt_disk() -> Vec<u8> {
        let mut img = vec![0u8; 4 << 20];
        img[510] = 0x55;
        img[511] = 0xAA;
        img[446 + 4] = 0xEE;
        img[512..520].copy_from_slice(b"EFI PART");
        img[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        img[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        img[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        gpt_entry(&mut img, 0, BIOS, 2048, 4095);
        gpt_entry(&mut img, 1, ROOT, 4096, 8000);
        ext4_at(&mut img, 4096 * 512, [0x11; 16], "root");
        img
    }

    #[test]
    fn reads_gpt_with_bios_boot_and_ext4_root() {
        let img = gpt_disk();
        let l = read_layout_from(&mut Cursor::new(&img), img.len() as u64).unwrap();
        assert_eq!(l.table, TableKind::Gpt);
        assert_eq!(l.partitions.len(), 2);
        assert_eq!(l.partitions[0].type_id, GPT_BIOS_BOOT);
        assert_eq!(l.partitions[0].fs, None);
        let root = l.root().unwrap();
        assert_eq!(root.number, 2);
        assert_eq!(root.start, 4096 * 512);
        assert_eq!(root.type_id, GPT_ROOT_X86_64);
        let fs = root.fs.as_ref().unwrap();
        assert_eq!(fs.kind, "ext4");
        assert_eq!(fs.label.as_deref(), Some("root"));
        assert_eq!(
            fs.uuid.as_deref(),
            Some("11111111-1111-1111-1111-111111111111")
        );
        assert_eq!(
            l.find_by_spec("UUID=11111111-1111-1111-1111-111111111111")
                .unwrap()
                .number,
            2
        );
        assert_eq!(l.find_by_spec("LABEL=root").unwrap().number, 2);
        assert!(l.find_by_spec("LABEL=boot").is_none());
    }

    #[test]
    fn whole_disk_filesystem_and_garbage() {
        let mut img = vec![0u8; 1 << 20];
        ext4_at(&mut img, 0, [0x22; 16], "");
        let l = read_layout_from(&mut Cursor::new(&img), img.len() as u64).unwrap();
        assert_eq!(l.table, TableKind::None);
        assert_eq!(l.root().unwrap().number, 0);

        let junk = b"this is a text file, not a disk".to_vec();
        let l = read_layout_from(&mut Cursor::new(&junk), junk.len() as u64).unwrap();
        assert!(l.root().is_none());
    }

    #[test]
    fn mbr_partitions() {
        let mut img = vec![0u8; 4 << 20];
        img[510] = 0x55;
        img[511] = 0xAA;
        let e = 446;
        img[e + 4] = 0x83;
        img[e + 8..e + 12].copy_from_slice(&2048u32.to_le_bytes());
        img[e + 12..e + 16].copy_from_slice(&4096u32.to_le_bytes());
        ext4_at(&mut img, 2048 * 512, [0x33; 16], "cloudimg-rootfs");
        let l = read_layout_from(&mut Cursor::new(&img), img.len() as u64).unwrap();
        assert_eq!(l.table, TableKind::Mbr);
        assert_eq!(l.root().unwrap().number, 1);
    }

    #[test]
    fn fstab_mounts_that_matter() {
        let fstab = "# comment\nUUID=a / ext4 defaults 0 1\nUUID=c /boot/efi vfat umask=0077 0 1\nUUID=b /boot ext4 defaults 0 2\n/swap none swap sw 0 0\ntmpfs /tmp tmpfs defaults 0 0\n";
        let m = fstab_extra_mounts(fstab);
        let targets: Vec<&str> = m.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["/boot", "/boot/efi"]);
    }
}
