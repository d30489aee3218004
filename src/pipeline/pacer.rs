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
//!
//! A sink that flips on the vertical blank (drm, `Sink::refresh`) changes three things. The
//! period becomes a whole number of refreshes (`cadence`: the nearest to refresh/fps, at
//! least 1), so every frame stays up equally long. Each deadline is the vertical blank the frame
//! is meant for, and the flip is requested `lead` before it (enough for the copy: twice the
//! slowest recent present, 2 ms at least, at most 3/4 of a refresh). The flip completions the
//! sink reports give `presented_*` (completion minus deadline) and `flips_missed` (later by half
//! a refresh or more: the frame missed its vertical blank and the one before stayed up a
//! refresh longer); real vblank timestamps also re-phase the grid onto the display's own clock,
//! so a pixel clock that drifts from ours never brings two flips into one refresh.

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
pub(crate) const SPIN: Duration = Duration::from_millis(1);

/// A frame ready for the screen.
pub(crate) struct ScreenFrame {
    /// In the sink's format, size and stride.
    pub pixels: Vec<u8>,
    pub seq: u64,
    /// How many display periods the frame stays on screen (more than 1 when playback slows).
    pub periods: u32,
    /// A picture after the first that moves on from it (time-to-first-motion counts to the
    /// first of these on screen).
    pub moves: bool,
}

pub(crate) struct Pacer {
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

    /// Moves the whole grid by `later` (negative: earlier), keeping its period: onto the
    /// display's vertical blanks.
    fn shift(&mut self, later: Duration, earlier: Duration) {
        self.base = (self.base + later)
            .checked_sub(earlier)
            .unwrap_or(self.base);
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

/// Flip bookkeeping for a sink that shows frames on the vertical blank.
struct Flips {
    refresh: Duration,
    /// Frames queued and not yet seen on screen: (flip number, deadline).
    waiting: std::collections::VecDeque<(u64, Instant)>,
    presents: u64,
    /// The slowest recent `present` (decays by 1/64 a frame).
    slowest_present: Duration,
    /// Completions carry real vertical-blank times: lock onto them and request ahead.
    locked: bool,
}

/// Flips are requested at least this long before their vertical blank.
const MIN_LEAD: Duration = Duration::from_millis(2);

impl Flips {
    fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            waiting: std::collections::VecDeque::new(),
            presents: 0,
            slowest_present: Duration::ZERO,
            locked: false,
        }
    }

    /// How long before its vertical blank a frame's flip is requested.
    fn lead(&self) -> Duration {
        if !self.locked {
            return Duration::ZERO;
        }
        (self.slowest_present * 2)
            .max(MIN_LEAD)
            .min(self.refresh * 3 / 4)
    }

    fn presented(&mut self, deadline: Instant, took: Duration) {
        self.waiting.push_back((self.presents, deadline));
        self.presents += 1;
        self.slowest_present = (self.slowest_present - self.slowest_present / 64).max(took);
    }
}

impl Pacer {
    pub(crate) fn run(mut self) -> anyhow::Result<()> {
        let realtime = self.realtime && crate::sys::set_realtime_priority(REALTIME_PRIORITY);
        let mut flips = self.sink.refresh().map(Flips::new);
        let period = self.period_for(self.period, flips.as_ref());
        self.log_pacer(self.period, flips.as_ref(), Some(realtime), None);
        let mut grid = Grid {
            base: Instant::now(),
            index: 0,
            period_ns: period.as_nanos().max(1) as u64,
        };
        let mut fps_period = self.period;
        let mut current: Option<ScreenFrame> = None;
        let mut periods_left: u32 = 0;
        let mut blanked = false;
        while !self.control.stopping() {
            if let Some(settings) = self.watcher.changed(&self.control) {
                fps_period = settings.period;
                if grid.set_period(self.period_for(fps_period, flips.as_ref())) {
                    self.log_pacer(fps_period, flips.as_ref(), None, Some(true));
                }
            }
            if let Some(flips) = &mut flips {
                // A new screen after a hotplug may refresh at another rate.
                if let Some(refresh) = self.sink.refresh().filter(|r| *r != flips.refresh) {
                    flips.refresh = refresh;
                    grid.set_period(self.period_for(fps_period, Some(flips)));
                    self.log_pacer(fps_period, Some(flips), None, Some(true));
                }
            }
            if self.control.blanked() != blanked {
                blanked = !blanked;
                self.blank(blanked);
            }
            let lead = flips.as_ref().map_or(Duration::ZERO, Flips::lead);
            let wake = grid.deadline().checked_sub(lead).unwrap_or(grid.deadline());
            wait_until(wake);
            self.sink.maintain()?;
            if let Some(flips) = &mut flips {
                self.take_flips(flips, &mut grid);
            }
            let deadline = grid.deadline();
            let wake = deadline.checked_sub(lead).unwrap_or(deadline);
            // Re-phased later by a missed flip: wait for the new wake-up time.
            wait_until(wake);
            let lateness = wake.elapsed();
            self.stats.lateness.record(lateness);
            self.stats.deadlines.fetch_add(1, Ordering::Relaxed);

            periods_left = periods_left.saturating_sub(1);
            if periods_left == 0 && !blanked {
                match self.ready.try_recv() {
                    Ok(frame) => {
                        self.present(&frame, deadline, lateness, flips.as_mut())?;
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

    /// The deadline period: the frame period, or on a vertical-blank sink the whole number of
    /// refreshes nearest to it (told to playback through the stats).
    fn period_for(&self, fps_period: Duration, flips: Option<&Flips>) -> Duration {
        let period = self.deadline_period(fps_period, flips);
        self.stats
            .pacer_period_ns
            .store(period.as_nanos() as u64, Ordering::Relaxed);
        period
    }

    fn deadline_period(&self, fps_period: Duration, flips: Option<&Flips>) -> Duration {
        match flips {
            Some(flips) => {
                let refreshes = cadence(
                    1.0 / flips.refresh.as_secs_f64(),
                    1.0 / fps_period.as_secs_f64(),
                );
                self.stats.cadence.store(refreshes, Ordering::Relaxed);
                flips.refresh * refreshes
            }
            None => fps_period,
        }
    }

    fn log_pacer(
        &self,
        fps_period: Duration,
        flips: Option<&Flips>,
        realtime: Option<bool>,
        reloaded: Option<bool>,
    ) {
        let refresh_hz = flips.map(|f| 1.0 / f.refresh.as_secs_f64());
        let refreshes = flips.map(|_| self.stats.cadence.load(Ordering::Relaxed));
        log::info!(
            "{}",
            events::Pacer {
                fps: 1.0 / fps_period.as_secs_f64(),
                realtime,
                reloaded,
                refresh_hz,
                cadence: refreshes,
                shown_fps: refresh_hz
                    .zip(refreshes)
                    .map(|(hz, n)| hz / n.max(1) as f64),
            }
        );
    }

    /// Completed flips: presentation lateness against each frame's deadline, missed vertical
    /// blanks, and (on real vblank timestamps) the grid re-phased onto the display's clock.
    fn take_flips(&mut self, flips: &mut Flips, grid: &mut Grid) {
        while let Some(flip) = self.sink.take_flip() {
            while flips.waiting.front().is_some_and(|(n, _)| *n < flip.number) {
                flips.waiting.pop_front(); // given up by the sink: never went up by a flip
            }
            let Some((_, deadline)) = flips.waiting.pop_front() else {
                continue;
            };
            let late = flip.at.saturating_duration_since(deadline);
            self.stats.presented_lateness.record(late);
            self.stats.flips.fetch_add(1, Ordering::Relaxed);
            // Before the grid is locked onto real vertical blanks a flip waits up to a refresh
            // by design; from then on, half a refresh late is a vertical blank missed.
            if late * 2 >= flips.refresh && (flips.locked || !flip.vblank) {
                self.stats.flips_missed.fetch_add(1, Ordering::Relaxed);
            }
            if flip.vblank {
                flips.locked = true;
                let early = deadline.saturating_duration_since(flip.at);
                grid.shift(late, early);
            }
        }
    }

    fn present(
        &mut self,
        frame: &ScreenFrame,
        deadline: Instant,
        lateness: Duration,
        flips: Option<&mut Flips>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        self.sink.present(&frame.pixels)?;
        match flips {
            // On screen at the flip's completion, reported later (`take_flips`).
            Some(flips) => flips.presented(deadline, started.elapsed()),
            None => self.stats.presented_lateness.record(deadline.elapsed()),
        }
        if lateness > LATE_THRESHOLD {
            self.stats.late_frames.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.shown_seq.store(frame.seq + 1, Ordering::Relaxed);
        self.stats.record_presented();
        if frame.moves {
            self.stats.record_motion();
        }
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

/// How many refreshes each frame stays on screen at `fps`: the whole number nearest to
/// refresh/fps, at least 1. The frame rate shown is then refresh/cadence (60 Hz at 24 fps: 2.5
/// rounds to 3 refreshes a frame, 20 fps: even steps rather than 3:2 judder, and never faster
/// than asked).
pub(crate) fn cadence(refresh_hz: f64, fps: f64) -> u32 {
    if !(refresh_hz > 0.0 && fps > 0.0) {
        return 1;
    }
    ((refresh_hz / fps).round() as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::cadence;

    #[test]
    fn each_frame_stays_a_whole_number_of_refreshes() {
        assert_eq!(cadence(60.0, 60.0), 1);
        assert_eq!(cadence(60.0, 30.0), 2);
        assert_eq!(cadence(59.94, 30.0), 2);
        assert_eq!(cadence(60.0, 24.0), 3); // 2.5 rounds up: 20 fps, never faster than asked
        assert_eq!(cadence(60.0, 25.0), 2);
        assert_eq!(cadence(60.0, 120.0), 1); // faster than the screen: every refresh
        assert_eq!(cadence(144.0, 30.0), 5);
        assert_eq!(cadence(0.0, 30.0), 1);
    }
}
