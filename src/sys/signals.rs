//! SIGINT/SIGTERM/SIGHUP become a flag the bake checks between steps and while it waits, so
//! every guard still runs its cleanup. A second signal during cleanup is counted and reported.

use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Install the handlers (idempotent).
pub fn install() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches an atomic, which is async-signal-safe.
        unsafe {
            let _ = sigaction(sig, &action);
        }
    }
}

/// How many termination signals arrived so far.
pub fn count() -> usize {
    SIGNALS.load(Ordering::SeqCst)
}

pub fn interrupted() -> bool {
    count() > 0
}

/// Err(Interrupted) once a signal arrived: call between steps.
pub fn check() -> anyhow::Result<()> {
    if interrupted() {
        return Err(anyhow::Error::new(crate::error::Interrupted));
    }
    Ok(())
}

/// Resolves once a termination signal arrived (the flag is polled; for use in a select).
pub async fn arrived() {
    while !interrupted() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Run an AWS step on `rt`, dropping it with Err(Interrupted) as soon as a signal arrives, so a
/// Ctrl-C during a long upload or wait starts the cleanup at once instead of after the step.
pub fn block_on<T>(
    rt: &tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    rt.block_on(async {
        tokio::select! {
            r = fut => r,
            _ = arrived() => Err(anyhow::Error::new(crate::error::Interrupted)),
        }
    })
}
