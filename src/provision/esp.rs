//! The EFI System Partition of a hybrid UEFI+BIOS disk, kept right without mounting it (this
//! kernel has no vfat; the session writes it with mtools on a copy of the partition).
//!
//! bakery owns the ESP's boot files: Debian's signed shim as the removable-media path
//! `EFI/BOOT/BOOTX64.EFI` (what firmware boots with no boot entry, as on a fresh EC2 instance)
//! and as `EFI/debian/shimx64.efi`, the signed GRUB beside each, MokManager when present, and a
//! `grub.cfg` stub that finds the root filesystem by UUID and loads `/boot/grub/grub.cfg` (the
//! layout `grub-install --uefi-secure-boot` makes). They are copied from the image's own
//! packages (`shim-signed`, `grub-efi-amd64-signed`) at the base build's GRUB step and again at
//! the end of every session, so a bake or `base refresh` that upgrades shim or GRUB leaves the
//! ESP matching the packages. Unchanged files are not rewritten (an incremental snapshot stays
//! small).
//!
//! Reading the ESP through mtools is slow (its FAT has one-sector clusters so that a 127 MiB
//! FAT32 is valid: ~0.45 s to read the 3 MiB of boot files, a quarter of a small local bake).
//! So what the ESP was last made from is recorded in the image, [`RECORD`]: the SHA-256 of each
//! signed binary and the root UUID the stub names. A session whose image still has the same
//! binaries and root UUID does not read the ESP at all: nothing bakery does changes it without
//! updating the record, and nothing in the image can write it (it is never mounted here). Where
//! the kernel has vfat and the ESP is mounted at /boot/efi, a package script could have written
//! it, so it is always compared there (cheaply, through the mount).

use std::path::PathBuf;

use crate::disk::layout::fstab_extra_mounts;
use crate::provision::plan::PartitionDev;

/// In the image: the fingerprint of what the ESP was last written or checked from (see the
/// module doc).
pub const RECORD: &str = "/var/lib/bakery/esp.sha256";

/// Where a running system mounts its ESP.
pub const MOUNT_POINT: &str = "/boot/efi";

/// The ESP's device node (as the chroot's /dev names it): the vfat partition the image's fstab
/// mounts at /boot/efi. `None`: a BIOS-only disk.
pub fn find(fstab: &str, parts: &[PartitionDev]) -> Option<PathBuf> {
    let entry = fstab_extra_mounts(fstab)
        .into_iter()
        .find(|e| e.target == MOUNT_POINT && e.fstype == "vfat")?;
    let dev = PartitionDev::find_by_spec(parts, &entry.source)?;
    if dev.fs.as_ref().is_none_or(|f| f.kind != "vfat") {
        return None;
    }
    Some(PathBuf::from("/dev").join(dev.device.file_name()?))
}

/// Debian's signed shim (`shim-signed`): the ESP's `BOOTX64.EFI` and `shimx64.efi`.
pub const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
/// Debian's signed GRUB (`grub-efi-amd64-signed`): the ESP's `grubx64.efi`.
pub const GRUB: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
/// MokManager (`shim-signed`, where it ships it): the ESP's `mmx64.efi`.
pub const MOK_MANAGER: &str = "/usr/lib/shim/mmx64.efi.signed";

/// What [`RECORD`] holds once the ESP was written or checked from `files` (each a path and
/// its SHA-256, in the order shim, GRUB, MokManager when present) for the root filesystem
/// `root_uuid`: the lines `sha256sum` prints (`HEX  PATH`), then `root-uuid UUID`, without the
/// final newline ([`SYNC_SCRIPT`] compares the record through `$(...)`, which drops it).
pub fn fingerprint(files: &[(&str, [u8; 32])], root_uuid: &str) -> String {
    let mut fp = String::new();
    for (path, digest) in files {
        fp.push_str(&format!("{}  {path}\n", hex::encode(digest)));
    }
    fp.push_str(&format!("root-uuid {root_uuid}"));
    fp
}

/// The shell script (run in the chroot: `$1` the ESP's device, `$2` the root filesystem's UUID,
/// `$3` `required` or `optional`) that brings the ESP's boot files in line with the image's
/// packages. Optional: an image without the signed packages or mtools is left alone.
pub const SYNC_SCRIPT: &str = r#"set -eu
esp=$1 root_uuid=$2 need=$3
shim=/usr/lib/shim/shimx64.efi.signed
grub=/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed
mm=/usr/lib/shim/mmx64.efi.signed
for f in "$shim" "$grub"; do
  if [ ! -f "$f" ]; then
    [ "$need" = required ] && { echo "error: $f is missing (shim-signed, grub-efi-amd64-signed)" >&2; exit 1; }
    echo "ESP left alone: $f is not in the image"; exit 0
  fi
done
if ! command -v mcopy >/dev/null; then
  [ "$need" = required ] && { echo "error: mtools is not in the image" >&2; exit 1; }
  echo "ESP left alone: mtools is not in the image" >&2; exit 0
fi
export MTOOLS_SKIP_CHECK=1
record=/var/lib/bakery/esp.sha256
fp=$(sha256sum "$shim" "$grub"; if [ -f "$mm" ]; then sha256sum "$mm"; fi; echo "root-uuid $root_uuid")
remember() { mkdir -p "${record%/*}"; printf '%s\n' "$fp" > "$record"; }
mounted=
if mountpoint -q /boot/efi 2>/dev/null; then mounted=1; fi
if [ -z "$mounted" ] && [ -f "$record" ] && [ "$(cat "$record")" = "$fp" ]; then
  echo "ESP up to date (shim, GRUB and the root UUID are those it was written from)"; exit 0
fi
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
for dir in BOOT debian; do
  mkdir -p "$d/EFI/$dir"
  cp "$grub" "$d/EFI/$dir/grubx64.efi"
  [ -f "$mm" ] && cp "$mm" "$d/EFI/$dir/mmx64.efi"
  printf "search.fs_uuid %s root\nset prefix=(\$root)'/boot/grub'\nconfigfile \$prefix/grub.cfg\n" "$root_uuid" > "$d/EFI/$dir/grub.cfg"
done
cp "$shim" "$d/EFI/BOOT/BOOTX64.EFI"
cp "$shim" "$d/EFI/debian/shimx64.efi"
# Where the kernel has vfat the session mounted the ESP at /boot/efi: write through it (never
# under a mounted filesystem's feet).
if [ -n "$mounted" ]; then
  stale=
  for f in $(cd "$d" && find EFI -type f | sort); do
    cmp -s "$d/$f" "/boot/efi/$f" 2>/dev/null && continue
    mkdir -p "$(dirname "/boot/efi/$f")"
    cp "$d/$f" "/boot/efi/$f"
    stale="$stale $f"
  done
  sync -f /boot/efi
  remember
  if [ -z "$stale" ]; then echo "ESP up to date"; else echo "ESP updated:$stale"; fi
  exit 0
fi
# Read in place (cheap: every bake checks); mtools only warns that a loop partition has no
# geometry.
stale=
for f in $(cd "$d" && find EFI -type f | sort); do
  mtype -i "$esp" "::/$f" 2>/dev/null | cmp -s - "$d/$f" || stale="$stale $f"
done
if [ -z "$stale" ]; then remember; echo "ESP up to date"; exit 0; fi
# Written on a copy, put back whole: an interrupted mcopy never leaves a half-written FAT.
img="$d/esp.img"
cat "$esp" > "$img"
mcopy -s -o -D oO -i "$img" "$d/EFI" ::/
dd if="$img" of="$esp" bs=1M conv=notrunc,fsync status=none
remember
echo "ESP updated:$stale"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::FsInfo;

    fn dev(n: u32, kind: &str, uuid: &str) -> PartitionDev {
        PartitionDev {
            number: n,
            device: format!("/dev/loop7p{n}").into(),
            part_uuid: None,
            fs: Some(FsInfo {
                kind: kind.into(),
                uuid: Some(uuid.into()),
                label: None,
            }),
        }
    }

    /// The session's own check and the script's must agree byte for byte, or the session would
    /// never skip the script (or, worse, skip it when the script would write).
    #[test]
    fn the_fingerprint_is_what_the_script_records() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("shim"), dir.path().join("grub"));
        std::fs::write(&a, b"shim bytes").unwrap();
        std::fs::write(&b, vec![7u8; 100_000]).unwrap();
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "fp=$(sha256sum \"$1\" \"$2\"; echo \"root-uuid $3\"); printf %s \"$fp\"",
            ])
            .args(["sh", a, b, "1b2c-uuid"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let digest =
            |p: &str| -> [u8; 32] { sha2::Sha256::digest(std::fs::read(p).unwrap()).into() };
        let ours = fingerprint(&[(a, digest(a)), (b, digest(b))], "1b2c-uuid");
        assert_eq!(ours, String::from_utf8(out.stdout).unwrap());
    }

    #[test]
    fn the_script_reads_the_files_the_session_checks() {
        for (var, path) in [("shim", SHIM), ("grub", GRUB), ("mm", MOK_MANAGER)] {
            assert!(SYNC_SCRIPT.contains(&format!("\n{var}={path}\n")), "{var}");
        }
        assert!(SYNC_SCRIPT.contains(&format!("record={RECORD}\n")));
    }

    #[test]
    fn the_esp_is_the_vfat_partition_fstab_mounts_at_boot_efi() {
        let parts = [dev(2, "vfat", "ABCD-0123"), dev(3, "ext4", "r-1")];
        let fstab = "UUID=r-1 / ext4 rw 0 1\nUUID=abcd-0123 /boot/efi vfat umask=0077,nofail 0 2\n";
        assert_eq!(find(fstab, &parts), Some(PathBuf::from("/dev/loop7p2")));
        assert_eq!(find("UUID=r-1 / ext4 rw 0 1\n", &parts), None, "BIOS-only");
        let elsewhere = "UUID=ABCD-0123 /efi vfat rw 0 2\n";
        assert_eq!(find(elsewhere, &parts), None);
    }
}
