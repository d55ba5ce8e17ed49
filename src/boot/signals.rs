//! Ctrl-C / SIGTERM / SIGHUP during a boot: the handler only records the signal; the wait loops
//! check it and run the same cleanup as any other exit (guards' Drop).

use anyhow::{Context, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    RECEIVED.store(sig, Ordering::SeqCst);
}

const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Installs the handlers; restores the previous ones on drop.
pub struct SignalGuard {
    previous: Vec<(Signal, SigAction)>,
}

impl SignalGuard {
    pub fn install() -> Result<SignalGuard> {
        RECEIVED.store(0, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(record),
            SaFlags::empty(),
            SigSet::empty(),
        );
        let mut guard = SignalGuard {
            previous: Vec::new(),
        };
        for sig in SIGNALS {
            // SAFETY: `record` only stores to an atomic, which is async-signal-safe.
            let old = unsafe { sigaction(sig, &action) }
                .with_context(|| format!("installing a {sig} handler"))?;
            guard.previous.push((sig, old));
        }
        Ok(guard)
    }

    /// The signal received since install, if any.
    pub fn received(&self) -> Option<Signal> {
        Signal::try_from(RECEIVED.load(Ordering::SeqCst)).ok()
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, old) in self.previous.drain(..).rev() {
            // SAFETY: restores the action that was in place before `install`.
            let _ = unsafe { sigaction(sig, &old) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_restores() {
        let g = SignalGuard::install().unwrap();
        assert_eq!(g.received(), None);
        nix::sys::signal::raise(Signal::SIGHUP).unwrap();
        assert_eq!(g.received(), Some(Signal::SIGHUP));
        drop(g);
        // SAFETY: only reads the current action back (set then immediately restored).
        let cur = unsafe {
            sigaction(
                Signal::SIGHUP,
                &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()),
            )
        }
        .unwrap();
        assert!(matches!(cur.handler(), SigHandler::SigDfl));
    }
}
