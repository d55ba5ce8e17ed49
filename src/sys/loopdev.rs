//! Loop devices as guards: attached with autoclear (so even a SIGKILLed bake cannot leak one once
//! its mounts are gone), detached on drop with retries while the kernel still holds them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use loopdev::{LoopControl, LoopDevice};
use tracing::{debug, warn};

use super::lock::HostLock;

#[derive(Debug)]
pub struct LoopGuard {
    dev: Option<LoopDevice>,
    pub path: PathBuf,
    pub backing: PathBuf,
}

impl LoopGuard {
    /// Attach `file` to a free loop device. Finding a free device and attaching to it is not
    /// atomic in the kernel API, so bakes on one host serialize it under a host lock and retry
    /// when another tool wins the race.
    pub fn attach(file: &Path, lock_dir: &Path) -> Result<LoopGuard> {
        // Attaching writes back the file's dirty pages first (a freshly copied base: hundreds
        // of MB, a third of a second or more). Do it here, before the host lock, so concurrent
        // bakes flush in parallel instead of one after another inside the lock.
        if let Ok(f) = std::fs::File::open(file) {
            let _ = f.sync_data();
        }
        let _lock = HostLock::acquire(lock_dir, "loop-attach")?;
        let ctl = Control::open()?;
        let mut last_err = None;
        for _ in 0..8 {
            let dev = ctl.next_free()?;
            match dev.with().autoclear(true).attach(file) {
                Ok(()) => {
                    let path = dev.path().context("loop device has no path")?;
                    debug!(device = %path.display(), file = %file.display(), "attached loop device");
                    return Ok(LoopGuard {
                        dev: Some(dev),
                        path,
                        backing: file.to_path_buf(),
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last_err = Some(e),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("attaching {} to a loop device", file.display()))
                }
            }
        }
        Err(last_err.unwrap())
            .context("every free loop device was taken before bakery could attach it")
    }

    /// Detach now and report the error (the happy path); Drop does the same silently.
    pub fn close(mut self) -> Result<()> {
        self.detach()
    }

    fn detach(&mut self) -> Result<()> {
        let Some(dev) = self.dev.take() else {
            return Ok(());
        };
        let mut last = None;
        for attempt in 0..10 {
            match dev.detach() {
                Ok(()) => return Ok(()),
                // ENXIO: autoclear already released it.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
                }
            }
        }
        Err(last.unwrap()).with_context(|| format!("detaching {}", self.path.display()))
    }
}

/// The loop control device. `BAKERY_LOOP_CONTROL=PATH` (a test seam) makes bakery ask another
/// file instead of /dev/loop-control, so a host without a free loop device can be simulated
/// honestly: the request for a free device fails as it would there.
enum Control {
    Kernel(LoopControl),
    Path(std::fs::File, PathBuf),
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);

impl Control {
    fn open() -> Result<Control> {
        match std::env::var_os("BAKERY_LOOP_CONTROL") {
            None => Ok(Control::Kernel(LoopControl::open().context(
                "opening /dev/loop-control (is the loop module loaded? run `modprobe loop`)",
            )?)),
            Some(p) => {
                let p = PathBuf::from(p);
                let f = std::fs::File::open(&p)
                    .with_context(|| format!("opening {} (BAKERY_LOOP_CONTROL)", p.display()))?;
                Ok(Control::Path(f, p))
            }
        }
    }

    fn next_free(&self) -> Result<LoopDevice> {
        let hint = "no free loop device: detach unused ones (`losetup -a` lists them; `bakery gc` removes what dead bakes left) or allow more (`modprobe loop max_loop=64`)";
        match self {
            Control::Kernel(ctl) => ctl.next_free().with_context(|| {
                format!("asking /dev/loop-control for a free loop device: {hint}")
            }),
            Control::Path(f, p) => {
                use std::os::fd::AsRawFd;
                // SAFETY: LOOP_CTL_GET_FREE takes no argument; the fd is open for the call's duration.
                let n = unsafe { loop_ctl_get_free(f.as_raw_fd()) }
                    .map_err(std::io::Error::from)
                    .with_context(|| {
                        format!("asking {} for a free loop device: {hint}", p.display())
                    })?;
                LoopDevice::open(format!("/dev/loop{n}"))
                    .with_context(|| format!("opening /dev/loop{n}"))
            }
        }
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            warn!("{e:#}; it will detach itself once nothing holds it (autoclear)");
        }
    }
}
