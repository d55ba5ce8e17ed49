//! Files of a mounted image, reached from the host as if the image were `/`: every path is
//! resolved with `openat2(RESOLVE_IN_ROOT)` (Linux 5.6+), so a symlink in the image — absolute or
//! full of `..` — can never lead a read, write or removal out onto the bake host. Operations on the
//! last component (stat, readlink, unlink, truncate) never follow it.
//!
//! Used by the session for quick, process-free looks at the image (the package database, the
//! per-machine files checked at seal, the linker path) where a `sh` in the chroot per file would
//! cost a process each.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;

/// What is at a path (the last component not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub size: u64,
    /// Modification time, seconds and nanoseconds.
    pub mtime: (i64, i64),
    pub mode: u32,
}

/// An image root opened for confined access. Open it after the image is mounted there (the
/// descriptor pins whatever directory is at the path when it is opened).
pub struct InRoot {
    root: OwnedFd,
}

fn to_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// `/a/b/c` -> (`a/b`, `c`); the root itself has no parent.
fn split(path: &str) -> io::Result<(String, String)> {
    let p = path.trim_matches('/');
    if p.is_empty() || p.split('/').any(|c| c == "..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{path}`: not a path below the image root"),
        ));
    }
    Ok(match p.rsplit_once('/') {
        Some((d, n)) => (d.to_string(), n.to_string()),
        None => (".".to_string(), p.to_string()),
    })
}

impl InRoot {
    pub fn open(root: &Path) -> io::Result<InRoot> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(to_io)?;
        Ok(InRoot { root: fd })
    }

    fn open_how(&self, path: &str, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(self.root.as_fd(), rel, how).map_err(to_io)
    }

    /// The directory holding `path`'s last component, and that component.
    fn parent(&self, path: &str) -> io::Result<(OwnedFd, String)> {
        let (dir, name) = split(path)?;
        let fd = self.open_how(&dir, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?;
        Ok((fd, name))
    }

    /// Read a file (symlinks followed, inside the image), at most `limit` bytes.
    pub fn read_limited(&self, path: &str, limit: u64) -> io::Result<Vec<u8>> {
        let fd = self.open_how(path, OFlag::O_RDONLY | OFlag::O_NOCTTY, 0)?;
        let mut buf = Vec::new();
        File::from(fd).take(limit).read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Read a whole file (symlinks followed, inside the image).
    pub fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        self.read_limited(path, u64::MAX)
    }

    pub fn read_string(&self, path: &str) -> io::Result<String> {
        Ok(String::from_utf8_lossy(&self.read(path)?).into_owned())
    }

    /// What is at `path`, its last component not followed.
    pub fn lstat(&self, path: &str) -> io::Result<Entry> {
        let st = if path.trim_matches('/').is_empty() {
            fstatat(self.root.as_fd(), "", AtFlags::AT_EMPTY_PATH)
        } else {
            let (dir, name) = self.parent(path)?;
            fstatat(dir.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        }
        .map_err(to_io)?;
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let kind = if fmt == SFlag::S_IFREG {
            Kind::File
        } else if fmt == SFlag::S_IFDIR {
            Kind::Dir
        } else if fmt == SFlag::S_IFLNK {
            Kind::Link
        } else {
            Kind::Other
        };
        Ok(Entry {
            kind,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            mode: st.st_mode & 0o7777,
        })
    }

    pub fn exists(&self, path: &str) -> bool {
        self.lstat(path).is_ok()
    }

    /// Whether `path` resolves (symlinks followed inside the image) to something.
    pub fn resolves(&self, path: &str) -> bool {
        self.open_how(path, OFlag::O_PATH, 0).is_ok()
    }

    /// The target of the symlink at `path`, as written.
    pub fn read_link(&self, path: &str) -> io::Result<PathBuf> {
        let (dir, name) = self.parent(path)?;
        nix::fcntl::readlinkat(dir.as_fd(), name.as_str())
            .map(PathBuf::from)
            .map_err(to_io)
    }

    /// Names in the directory `path` (symlinks followed inside the image), sorted.
    pub fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let fd = self.open_how(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
        list_fd(fd)
    }

    /// Remove the file, link or (recursively) directory at `path`; missing is fine.
    pub fn remove(&self, path: &str) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        remove_at(&dir, &name)
    }

    /// Rename `from` to `to` (both in one directory's reach inside the image; links not followed).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (fd, fname) = self.parent(from)?;
        let (td, tname) = self.parent(to)?;
        nix::fcntl::renameat(fd.as_fd(), fname.as_str(), td.as_fd(), tname.as_str()).map_err(to_io)
    }

    /// Make a symlink at `path` pointing to `target` (written as given).
    pub fn symlink(&self, target: &str, path: &str) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        nix::unistd::symlinkat(target, dir.as_fd(), name.as_str()).map_err(to_io)
    }

    /// Create the directory `path` and its missing parents (mode 0755), inside the image.
    pub fn create_dir_all(&self, path: &str) -> io::Result<()> {
        let mut so_far = String::new();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            so_far.push('/');
            so_far.push_str(c);
            if self
                .open_how(&so_far, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
                .is_ok()
            {
                continue;
            }
            let (dir, name) = self.parent(&so_far)?;
            match nix::sys::stat::mkdirat(
                dir.as_fd(),
                name.as_str(),
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(to_io(e)),
            }
        }
        Ok(())
    }

    /// Replace the content of the regular file at `path` (never through a symlink), creating it
    /// if missing; `mode` (when given) is set exactly, whatever the umask.
    pub fn write(&self, path: &str, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        let fd = nix::fcntl::openat(
            dir.as_fd(),
            name.as_str(),
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_NOFOLLOW
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode.unwrap_or(0o644)),
        )
        .map_err(to_io)?;
        if let Some(m) = mode {
            nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(m)).map_err(to_io)?;
        }
        let mut f = File::from(fd);
        f.write_all(bytes)?;
        f.sync_data()
    }

    /// Cut the regular file at `path` (never through a symlink) to `len` bytes.
    pub fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        let fd = nix::fcntl::openat(
            dir.as_fd(),
            name.as_str(),
            OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(to_io)?;
        File::from(fd).set_len(len)
    }
}

fn list_fd(fd: OwnedFd) -> io::Result<Vec<String>> {
    let mut d = Dir::from_fd(fd).map_err(to_io)?;
    let mut names: Vec<String> = d
        .iter()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    Ok(names)
}

fn remove_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let st = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(to_io(e)),
    };
    if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
        let sub = nix::fcntl::openat(
            dir.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(to_io)?;
        let children = {
            let dup = sub.try_clone()?;
            list_fd(dup)?
        };
        for c in children {
            remove_at(&sub, &c)?;
        }
        nix::unistd::unlinkat(dir.as_fd(), name, UnlinkatFlags::RemoveDir).map_err(to_io)
    } else {
        match nix::unistd::unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(to_io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "host file").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/own"), "image file").unwrap();
        // An absolute link and a `..` escape both resolve inside the image.
        std::os::unix::fs::symlink(host.path().join("secret"), r.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/own", r.join("etc/dots")).unwrap();
        std::os::unix::fs::symlink(host.path(), r.join("escape")).unwrap();
        let fs = InRoot::open(r).unwrap();
        assert_eq!(fs.read_string("/etc/own").unwrap(), "image file");
        assert!(
            fs.read("/etc/abs").is_err(),
            "an absolute link reached the host"
        );
        assert_eq!(fs.read_string("/etc/dots").unwrap(), "image file");
        assert!(fs.read("/escape/secret").is_err());
        assert_eq!(fs.lstat("/etc/abs").unwrap().kind, Kind::Link);
        assert_eq!(
            fs.read_link("/etc/abs").unwrap(),
            host.path().join("secret")
        );
        // Writes, truncation and removal never go through a link onto the host.
        assert!(fs.write("/etc/abs", b"x", None).is_err());
        assert!(fs.write("/escape/secret", b"x", None).is_err());
        assert!(fs.truncate("/etc/abs", 0).is_err());
        fs.remove("/escape").unwrap();
        assert_eq!(
            std::fs::read_to_string(host.path().join("secret")).unwrap(),
            "host file"
        );
        assert!(host.path().exists());
        fs.write("/etc/new", b"abc", Some(0o600)).unwrap();
        assert_eq!(fs.lstat("/etc/new").unwrap().mode, 0o600);
        fs.create_dir_all("/run/a/b").unwrap();
        fs.symlink("../x", "/run/a/b/l").unwrap();
        fs.rename("/run/a/b/l", "/run/a/m").unwrap();
        assert_eq!(fs.read_link("/run/a/m").unwrap(), PathBuf::from("../x"));
        assert_eq!(fs.lstat("/etc/new").unwrap().size, 3);
        fs.truncate("/etc/new", 1).unwrap();
        assert_eq!(fs.read_string("/etc/new").unwrap(), "a");
        std::fs::create_dir_all(r.join("var/tmp/a/b")).unwrap();
        std::fs::write(r.join("var/tmp/a/b/f"), "1").unwrap();
        assert_eq!(fs.list("/var/tmp").unwrap(), vec!["a".to_string()]);
        fs.remove("/var/tmp/a").unwrap();
        assert!(fs.list("/var/tmp").unwrap().is_empty());
        fs.remove("/var/tmp/missing").unwrap();
        assert!(fs.remove("/var/../etc").is_err());
    }
}
