//! The pacer: a dedicated OS thread that puts frames on screen at `display.fps`.
//!
//! Inputs: rendered screen frames from the playback thread (a bounded channel, polled without
//! waiting). Outputs: `Sink::present` calls; used buffers go back to the playback thread's pool.
//! Deadlines are counted from one fixed base instant (no drift); the thread sleeps until just
//! before each deadline and spins the last stretch (sleep alone overshoots by up to a few ms).
//! After a miss it snaps to the next future deadline rather than hurrying to catch up.
//! Nothing here allocates, touches files or waits on a lock: statistics are atomics. The one
//! exception is a reload: when the control's settings generation moves, the new period is read
//! (one short lock) and the deadline grid re-based at the last deadline. While the schedule has
//! the screen blanked the pacer keeps its deadlines (the watchdog sees it alive) but presents
//! nothing. When no new frame is ready the last one simply stays on screen (counted as held). An
//! error from the sink ends the thread with that error; dropping the sink restores the console.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::{Control, Watcher};
use super::stats::{PipelineStats, PlaybackState, LATE_THRESHOLD};
use crate::events;
use crate::sink::Sink;

/// The last stretch before a deadline is spun, not slept (measured: sleep alone p99 0.3-0.8 ms
/// late on these machines, sleep + 1 ms spin p99 ~0.1 ms).
pub const SPIN: Duration = Duration::from_millis(1);

/// A frame ready for the screen.
pub struct ScreenFrame {
    /// In the sink's format, size and stride.
    pub pixels: Vec<u8>,
    pub seq: u64,
    /// How many display periods the frame stays on screen (more than 1 when playback slows).
    pub periods: u32,
}

pub struct Pacer {
    pub period: Duration,
    pub ready: Receiver<ScreenFrame>,
    /// Where used screen buffers go back; sized to hold them all, so `try_send` never fails
    /// for want of room.
    pub pool: SyncSender<Vec<u8>>,
    pub sink: Box<dyn Sink>,
    /// Ask for SCHED_FIFO (see `REALTIME_PRIORITY`).
    pub realtime: bool,
    pub stats: Arc<PipelineStats>,
    /// The period from the settings; stop and blank.
    pub control: Arc<Control>,
    pub watcher: Watcher,
}

/// Deadlines counted from one fixed base instant: deadline `index` is `base + index x period`.
struct Grid {
    base: Instant,
    index: u64,
    period_ns: u64,
}

impl Grid {
    fn deadline(&self) -> Instant {
        self.base + Duration::from_nanos(self.period_ns * self.index)
    }

    /// A new period starts a new grid from the last deadline.
    fn set_period(&mut self, period: Duration) -> bool {
        let period_ns = period.as_nanos().max(1) as u64;
        if period_ns == self.period_ns {
            return false;
        }
        self.base += Duration::from_nanos(self.period_ns * self.index.saturating_sub(1));
        self.index = 1;
        self.period_ns = period_ns;
        true
    }

    /// On to the next deadline; returns how many were skipped because the next one passed a
    /// whole period ago (the pacer snaps to the next future one instead of rushing frames out).
    fn advance(&mut self) -> u64 {
        self.index += 1;
        let slot = self.base.elapsed().as_nanos() as u64 / self.period_ns;
        if slot > self.index {
            let skipped = slot + 1 - self.index;
            self.index = slot + 1;
            skipped
        } else {
            0
        }
    }
}

fn wait_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now + SPIN {
        std::thread::sleep(deadline - now - SPIN);
    }
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

/// Real-time priority asked for, so other work on a busy machine can't delay a deadline. Needs
/// CAP_SYS_NICE or an RLIMIT_RTPRIO; without them the pacer runs at normal priority.
const REALTIME_PRIORITY: i32 = 10;

impl Pacer {
    pub fn run(mut self) -> anyhow::Result<()> {
        let realtime = self.realtime && crate::sys::set_realtime_priority(REALTIME_PRIORITY);
        log::info!(
            "{}",
            events::Pacer {
                fps: 1.0 / self.period.as_secs_f64(),
                realtime: Some(realtime),
                reloaded: None,
            }
        );
        let mut grid = Grid {
            base: Instant::now(),
            index: 0,
            period_ns: self.period.as_nanos().max(1) as u64,
        };
        let mut current: Option<ScreenFrame> = None;
        let mut periods_left: u32 = 0;
        let mut blanked = false;
        while !self.control.stopping() {
            if let Some(settings) = self.watcher.changed(&self.control) {
                if grid.set_period(settings.period) {
                    log::info!(
                        "{}",
                        events::Pacer {
                            fps: settings.live.fps,
                            realtime: None,
                            reloaded: Some(true),
                        }
                    );
                }
            }
            if self.control.blanked() != blanked {
                blanked = !blanked;
                self.blank(blanked);
            }
            let deadline = grid.deadline();
            wait_until(deadline);
            let lateness = deadline.elapsed();
            self.stats.lateness.record(lateness);
            self.stats.deadlines.fetch_add(1, Ordering::Relaxed);

            periods_left = periods_left.saturating_sub(1);
            if periods_left == 0 && !blanked {
                match self.ready.try_recv() {
                    Ok(frame) => {
                        self.present(&frame, deadline, lateness)?;
                        periods_left = frame.periods.max(1);
                        if let Some(previous) = current.replace(frame) {
                            let _ = self.pool.try_send(previous.pixels);
                        }
                    }
                    Err(TryRecvError::Empty) => {
                        if current.is_some() && self.stats.state() != PlaybackState::Buffering {
                            self.stats.held_deadlines.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            let skipped = grid.advance();
            if skipped > 0 {
                self.stats
                    .skipped_deadlines
                    .fetch_add(skipped, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn present(
        &mut self,
        frame: &ScreenFrame,
        deadline: Instant,
        lateness: Duration,
    ) -> anyhow::Result<()> {
        self.sink.present(&frame.pixels)?;
        self.stats.presented_lateness.record(deadline.elapsed());
        if lateness > LATE_THRESHOLD {
            self.stats.late_frames.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.shown_seq.store(frame.seq + 1, Ordering::Relaxed);
        self.stats.record_presented();
        Ok(())
    }

    /// Powers the screen down or up for the schedule; a failure leaves the picture lit (the
    /// schedule still pauses generation).
    fn blank(&mut self, blanked: bool) {
        match self.sink.set_blanked(blanked) {
            Ok(()) => log::info!(
                "{}",
                events::Screen {
                    blanked,
                    sink: self.sink.name().into(),
                }
            ),
            Err(error) => log::warn!(
                "{}",
                events::ScreenBlankFailed {
                    blanked,
                    error: format!("{error:#}"),
                }
            ),
        }
    }
}
