//! What every stage thread shares: how it is started (a named thread whose result, panics
//! included, is reported on one channel) and how a failing generator is retried (`Retry`: the
//! error is counted and logged, then waited out 1 s, 2 s, 4 s ... up to 30 s, in slices so a
//! stop is noticed at once), and how generating threads yield to the display's
//! (`yield_to_display`). Pausing while blanked is `Control::wait_while_blanked`.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::sync::mpsc::UnboundedSender;

use super::control::Control;
use super::stats::PipelineStats;
use crate::events;

const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(30);

/// The nice value of the generating threads (keyframes, decoder, and the built-in generator's
/// workers they start): on a machine too slow for both, playback and the pacer come first, so
/// the screen keeps changing every period while generation takes what is left (the quality
/// ladder sees the smaller capacity and adapts).
pub(crate) const GENERATION_NICE: i32 = 5;

/// Makes the calling (generating) thread yield to the display's threads.
pub(crate) fn yield_to_display() {
    if !crate::sys::lower_thread_priority(GENERATION_NICE) {
        log::debug!("could not lower the generating thread's priority");
    }
}

/// A stage's end: its name and result.
pub(crate) type StageExit = (&'static str, anyhow::Result<()>);

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `body` on a thread named `name`; its result (a panic becomes an error) goes to `exits`.
pub(crate) fn spawn(
    name: &'static str,
    exits: &UnboundedSender<StageExit>,
    body: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<()> {
    let exits = exits.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
                Err(anyhow!(
                    "thread panicked: {}",
                    panic_message(panic.as_ref())
                ))
            });
            let _ = exits.send((name, result));
        })
        .with_context(|| format!("cannot start the {name} thread"))?;
    Ok(())
}

/// Retry pacing for a failing generator.
#[derive(Debug)]
pub(crate) struct Retry {
    next: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Retry {
    #[cfg(test)]
    /// The wait the next failure will take.
    pub(crate) fn next_delay(&self) -> Duration {
        self.next
    }

    /// A success: the next failure waits the shortest time again.
    pub(crate) fn succeeded(&mut self) {
        self.next = FIRST;
    }

    /// A generator failure: counts it, logs `event` (its `retry_in_s` filled in) and waits
    /// before the next try, doubling the wait; false when told to stop meanwhile.
    pub(crate) fn failed(
        &mut self,
        control: &Control,
        stats: &PipelineStats,
        mut event: events::GeneratorError,
    ) -> bool {
        stats.generator_failed(format!("{}: {}", event.stage, event.error));
        event.retry_in_s = Some(self.next.as_secs());
        log::warn!("{event}");
        let wait = self.next;
        self.next = (self.next * 2).min(LONGEST);
        control.sleep(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, FrameBudget};
    use crate::pipeline::control::Settings;
    use std::sync::atomic::Ordering;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let budget = FrameBudget::plan(1 << 20, 100, 1).unwrap();
        let control = Control::new(Settings::derive(&Config::default(), &budget));
        control.stop();
        let stats = PipelineStats::default();
        let mut retry = Retry::default();
        let mut delays = Vec::new();
        for _ in 0..7 {
            delays.push(retry.next_delay().as_secs());
            assert!(
                !retry.failed(&control, &stats, events::GeneratorError::default()),
                "a stopped pipeline ends the wait at once"
            );
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(stats.generator_errors.load(Ordering::Relaxed), 7);
        retry.succeeded();
        assert_eq!(retry.next_delay(), FIRST);
    }
}
