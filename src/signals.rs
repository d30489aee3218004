//! Signals: SIGTERM, SIGINT and SIGQUIT stop the display; SIGHUP re-reads the config.
//!
//! Installed first thing when the display starts (before the config, the log or the model are
//! touched), so a signal that arrives while starting up is acted on once the run begins instead
//! of killing the process with no log line. Lives on tokio; the handlers only record the signal.

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

pub(crate) struct Signals {
    terminate: Signal,
    interrupt: Signal,
    quit: Signal,
    /// SIGHUP, taken out by the reload task.
    hangup: Option<Signal>,
}

impl Signals {
    /// Installs every handler; must be called inside the tokio runtime. A parent that started
    /// us with these signals blocked (inherited across exec) would hide them: they are unblocked
    /// once the handlers are in place.
    pub(crate) fn install() -> anyhow::Result<Self> {
        let install = |kind: SignalKind| signal(kind).context("cannot install a signal handler");
        let signals = Self {
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
            quit: install(SignalKind::quit())?,
            hangup: Some(install(SignalKind::hangup())?),
        };
        use nix::sys::signal::Signal;
        crate::sys::unblock_signals(&[
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGHUP,
        ])
        .context("cannot unblock the stop and reload signals")?;
        Ok(signals)
    }

    /// The SIGHUP stream (once).
    pub(crate) fn take_hangup(&mut self) -> Option<Signal> {
        self.hangup.take()
    }

    /// Completes on SIGTERM, SIGINT or SIGQUIT, with the signal's name (SIGHUP reloads).
    pub(crate) async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.quit.recv() => "SIGQUIT",
        }
    }
}
