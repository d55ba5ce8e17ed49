//! Image files: formats, fast sparse copies (reflink when the filesystem can), conversion with
//! qemu-img, and outputs that only appear under their final name once complete and synced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::input;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    /// The output format a file name asks for.
    pub fn from_output_path(p: &Path) -> Result<Format> {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("raw") | Some("img") => Ok(Format::Raw),
            Some("qcow2") => Ok(Format::Qcow2),
            _ => Err(input!(
                "output `{}`: unknown image format; end the name in .raw, .img or .qcow2",
                p.display()
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// The format of an existing image file, from its content.
pub fn detect_format(p: &Path) -> Result<Format> {
    let mut f = File::open(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => input!(
            "base `{}`: no such file; build one with `bakery base build` or check the path",
            p.display()
        ),
        _ => input!("base `{}`: cannot open: {e}", p.display()),
    })?;
    if f.metadata()?.is_dir() {
        return Err(input!(
            "base `{}` is a directory; pass a disk image file (raw or qcow2)",
            p.display()
        ));
    }
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic)?;
    Ok(if n == 4 && magic == *b"QFI\xfb" {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

/// Try a copy-on-write clone (btrfs, xfs with reflink): instant and takes no space.
fn reflink(src: &File, dst: &File) -> bool {
    // FICLONE = _IOW(0x94, 9, int)
    nix::ioctl_write_int!(ficlone, 0x94, 9);
    // SAFETY: both descriptors are open files owned by the caller for the duration of the call;
    // FICLONE reads only the integer fd argument.
    unsafe { ficlone(dst.as_raw_fd(), src.as_raw_fd() as u64).is_ok() }
}

/// Whether `dir`'s filesystem makes copy-on-write clones (XFS with reflink, btrfs), tried on
/// two temporary files there. Where it does, a bake's copies of its base and of a layer cache
/// entry are instant and take no space; elsewhere (ext4) each is a full copy of the image's
/// data, which the loop attach then writes back to disk.
pub fn dir_supports_reflink(dir: &Path) -> bool {
    let try_clone = || -> std::io::Result<bool> {
        let mut a = tempfile::tempfile_in(dir)?;
        a.write_all(&[0u8; 4096])?;
        let b = tempfile::tempfile_in(dir)?;
        Ok(reflink(&a, &b))
    };
    try_clone().unwrap_or(false)
}

/// Copy `src` to `dst` keeping holes: only data extents are copied (SEEK_DATA/SEEK_HOLE with
/// copy_file_range, which the kernel may turn into a server-side or block-shared copy).
/// Returns the number of bytes of data copied (0 for a reflink).
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<u64> {
    let s = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = s.metadata()?.len();
    let d = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .with_context(|| format!("creating {}", dst.display()))?;
    if reflink(&s, &d) {
        return Ok(0);
    }
    d.set_len(len)
        .with_context(|| format!("sizing {}", dst.display()))?;
    let (sfd, dfd) = (s.as_raw_fd(), d.as_raw_fd());
    let mut pos: i64 = 0;
    let mut copied = 0u64;
    // Progress over the whole length: holes are skipped at once, data moves at disk speed.
    let meter = crate::progress::meter();
    meter.bytes(Some(len));
    while (pos as u64) < len {
        // SAFETY: plain lseek on a descriptor we own.
        let data = unsafe { libc::lseek(sfd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data after pos, the rest is a hole
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(sfd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        let (mut off_in, mut off_out) = (data, data);
        while off_in < end {
            let want = (end - off_in).min(1 << 30) as usize;
            // SAFETY: offsets are valid pointers to locals; fds are open and owned here.
            let n = unsafe { libc::copy_file_range(sfd, &mut off_in, dfd, &mut off_out, want, 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return Err(e)
                    .with_context(|| format!("copying {} to {}", src.display(), dst.display()));
            }
            if n == 0 {
                bail!("{} shrank while being copied", src.display());
            }
            copied += n as u64;
            meter.set(off_in as u64);
        }
        pos = end;
    }
    Ok(copied)
}

/// Run qemu-img convert between formats, keeping the output sparse.
pub fn convert(src: &Path, src_fmt: Format, dst: &Path, dst_fmt: Format) -> Result<()> {
    let out = Command::new("qemu-img")
        .args([
            "convert",
            "-q",
            "-f",
            src_fmt.as_str(),
            "-O",
            dst_fmt.as_str(),
        ])
        .args(if dst_fmt == Format::Raw {
            vec!["-S", "4k"]
        } else {
            vec![]
        })
        .arg(src)
        .arg(dst)
        .output()
        .context("running qemu-img (install qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "qemu-img convert {} -> {}: {}",
            src.display(),
            dst.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Virtual size of an image file (what the guest sees).
pub fn virtual_size(p: &Path, fmt: Format) -> Result<u64> {
    match fmt {
        Format::Raw => Ok(std::fs::metadata(p)?.len()),
        Format::Qcow2 => {
            let out = Command::new("qemu-img")
                .args(["info", "--output=json"])
                .arg(p)
                .output()
                .context("running qemu-img info")?;
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).context("reading qemu-img info")?;
            v["virtual-size"]
                .as_u64()
                .context("qemu-img info has no virtual-size")
        }
    }
}

/// Bytes a file really occupies on disk (sparse files take less than their length).
pub fn allocated_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

/// An output that is written under a temporary name next to its final path and only renamed
/// into place, after fsync, by `commit`. Dropped without commit, the temporary file is removed,
/// so a crash or error never leaves a file that looks complete.
#[derive(Debug)]
pub struct PendingOutput {
    pub tmp: PathBuf,
    pub dest: PathBuf,
    committed: bool,
}

impl PendingOutput {
    /// Check the destination can be written (directory exists and is writable, file absent
    /// unless `force`) before any work starts.
    pub fn check(dest: &Path, force: bool, what: &str) -> Result<()> {
        let dir = parent_dir(dest);
        let meta = std::fs::metadata(&dir).map_err(|_| {
            input!(
                "{what} `{}`: directory {} does not exist; create it first",
                dest.display(),
                dir.display()
            )
        })?;
        if !meta.is_dir() {
            return Err(input!(
                "{what} `{}`: {} is not a directory",
                dest.display(),
                dir.display()
            ));
        }
        if nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_err()
            || is_read_only_mount(&dir)
        {
            return Err(input!(
                "{what} `{}`: directory {} is not writable; choose another output path",
                dest.display(),
                dir.display()
            ));
        }
        if dest.exists() && !force {
            return Err(input!(
                "{what} `{}` already exists; remove it or pass --force to overwrite",
                dest.display()
            ));
        }
        Ok(())
    }

    pub fn new(dest: &Path, tag: &str) -> PendingOutput {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent_dir(dest).join(format!(".{name}.bakery-{tag}.partial"));
        PendingOutput {
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        }
    }

    /// fsync the data, rename into place, fsync the directory (fault point `sync NAME` between
    /// the sync and the rename).
    pub fn commit(self) -> Result<()> {
        self.sync()?;
        crate::fault::point(&format!(
            "sync {}",
            self.dest.file_name().unwrap_or_default().to_string_lossy()
        ))?;
        self.rename()
    }

    /// fsync the temporary file's data.
    pub fn sync(&self) -> Result<()> {
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", self.tmp.display()))
    }

    /// Rename the (synced) temporary file into place and fsync the directory.
    pub fn rename(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.dest.display())
        })?;
        if let Ok(d) = File::open(parent_dir(&self.dest)) {
            let _ = d.sync_all();
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Write a small file (a manifest) atomically: temp name, fsync, rename.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let pending = PendingOutput::new(dest, &std::process::id().to_string());
    let mut f =
        File::create(&pending.tmp).with_context(|| format!("writing {}", pending.tmp.display()))?;
    f.write_all(bytes)?;
    drop(f);
    pending.commit()
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn is_read_only_mount(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_format_from_extension() {
        assert_eq!(
            Format::from_output_path(Path::new("a.qcow2")).unwrap(),
            Format::Qcow2
        );
        assert_eq!(
            Format::from_output_path(Path::new("a.RAW")).unwrap(),
            Format::Raw
        );
        assert_eq!(
            Format::from_output_path(Path::new("a.img")).unwrap(),
            Format::Raw
        );
        let e = Format::from_output_path(Path::new("a.vmdk"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(".qcow2"), "{e}");
    }

    #[test]
    fn sparse_copy_keeps_holes_and_data() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src.raw");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        let dst = d.path().join("dst.raw");
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(
            allocated_bytes(&dst) < 1 << 20,
            "copy is not sparse: {}",
            allocated_bytes(&dst)
        );
    }

    #[test]
    fn pending_output_appears_only_on_commit() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.raw");
        PendingOutput::check(&dest, false, "output").unwrap();
        let p = PendingOutput::new(&dest, "t1");
        std::fs::write(&p.tmp, b"x").unwrap();
        let tmp = p.tmp.clone();
        drop(p);
        assert!(!tmp.exists() && !dest.exists());
        let p = PendingOutput::new(&dest, "t2");
        std::fs::write(&p.tmp, b"x").unwrap();
        p.commit().unwrap();
        assert!(dest.exists());
        let e = PendingOutput::check(&dest, false, "output")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--force"), "{e}");
        PendingOutput::check(&dest, true, "output").unwrap();
        let e = PendingOutput::check(&d.path().join("nope/out.raw"), false, "output")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn detects_qcow2_and_missing_base() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("a.qcow2");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(detect_format(&q).unwrap(), Format::Qcow2);
        let e = detect_format(&d.path().join("none.raw")).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
    }
}
