//! The pacer: a dedicated OS thread that puts frames on screen at `display.fps`.
//!
//! Inputs: rendered screen frames from the playback thread (a bounded channel, polled without
//! waiting). Outputs: `Sink::present` calls; used buffers go back to the playback thread's pool.
//! Deadlines are counted from one fixed base instant (no drift); the thread sleeps until just
//! before each deadline and spins the last stretch (sleep alone overshoots by up to a few ms).
//! After a miss it snaps to the next future deadline rather than hurrying to catch up.
//! Nothing here allocates, touches files or waits on a lock: statistics are atomics. The one
//! exception is a reload: when the live settings' generation counter moves, the new fps is read
//! (one short lock) and the deadline grid re-based at the last deadline. While the schedule has
//! the screen blanked the pacer keeps its deadlines (the watchdog sees it alive) but presents
//! nothing. When no new frame is ready the last one simply stays on screen (counted as held). An
//! error from the sink ends the thread with that error; dropping the sink restores the console.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::stats::{PipelineStats, PlaybackState, LATE_THRESHOLD};
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
    /// Ask for SCHED_FIFO (see `request_realtime_priority`).
    pub realtime: bool,
    pub stats: Arc<PipelineStats>,
    pub stop: Arc<AtomicBool>,
    /// fps from reloads; blanking from the schedule.
    pub live: Arc<crate::pipeline::control::Live>,
    pub watcher: crate::pipeline::control::Watcher,
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
            "pacer fps={:.3} realtime={realtime}",
            1.0 / self.period.as_secs_f64()
        );
        let mut period_ns = self.period.as_nanos().max(1) as u64;
        let mut base = Instant::now();
        let mut deadline_index: u64 = 0;
        let mut current: Option<ScreenFrame> = None;
        let mut periods_left: u32 = 0;
        let mut blanked = false;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(settings) = self.watcher.changed(&self.live) {
                // A new rate starts a new deadline grid from the last deadline.
                let new_ns = Duration::from_secs_f64(1.0 / settings.fps)
                    .as_nanos()
                    .max(1) as u64;
                if new_ns != period_ns {
                    base += Duration::from_nanos(period_ns * deadline_index.saturating_sub(1));
                    deadline_index = 1;
                    period_ns = new_ns;
                    log::info!("pacer fps={:.3} reloaded=true", 1e9 / period_ns as f64);
                }
            }
            if self.live.blanked() != blanked {
                blanked = !blanked;
                match self.sink.set_blanked(blanked) {
                    Ok(()) => log::info!("screen blanked={blanked} sink={}", self.sink.name()),
                    // The schedule still pauses generation; the picture just stays lit.
                    Err(error) => {
                        log::warn!("screen_blank_failed blanked={blanked} error=\"{error:#}\"")
                    }
                }
            }
            let deadline = base + Duration::from_nanos(period_ns * deadline_index);
            wait_until(deadline);
            let lateness = deadline.elapsed();
            self.stats.lateness.record(lateness);
            self.stats.deadlines.fetch_add(1, Ordering::Relaxed);

            periods_left = periods_left.saturating_sub(1);
            if periods_left == 0 && !blanked {
                match self.ready.try_recv() {
                    Ok(frame) => {
                        self.sink.present(&frame.pixels)?;
                        self.stats.presented_lateness.record(deadline.elapsed());
                        if lateness > LATE_THRESHOLD {
                            self.stats.late_frames.fetch_add(1, Ordering::Relaxed);
                        }
                        self.stats.shown_seq.store(frame.seq + 1, Ordering::Relaxed);
                        self.stats.record_presented();
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

            deadline_index += 1;
            let slot = base.elapsed().as_nanos() as u64 / period_ns;
            if slot > deadline_index {
                // The next deadline passed a whole period ago: skip to the next future one
                // instead of rushing frames out to catch up.
                self.stats
                    .skipped_deadlines
                    .fetch_add(slot + 1 - deadline_index, Ordering::Relaxed);
                deadline_index = slot + 1;
            }
        }
        Ok(())
    }
}
