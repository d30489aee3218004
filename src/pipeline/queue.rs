//! The frame queue between decoding and display: decoded frames at internal resolution, bounded
//! both by a frame count (seconds x fps) and by bytes.
//!
//! Inputs: frames pushed by the decoder thread, which blocks while the buffer is full
//! (backpressure). Outputs: frames taken by the playback thread, which never blocks on an empty
//! buffer unless it asks to wait. The pacer thread never touches it. `close` wakes every waiter
//! and makes pushes fail, which is how shutdown reaches the producers. An empty buffer always
//! accepts one frame, whatever the byte bound, so a frame larger than the bound cannot deadlock.
//! Its byte bound is its share of `buffer.max-megabytes` (`config::FrameBudget`).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::frame::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// How full the buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Level {
    pub frames: usize,
    pub bytes: usize,
    /// Frames it holds at most (from the seconds bound and, once a frame size is known, bytes).
    pub capacity_frames: usize,
    pub closed: bool,
}

struct State {
    frames: VecDeque<Arc<Frame>>,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
    last_frame_bytes: usize,
    closed: bool,
}

impl State {
    fn accepts(&self, frame_bytes: usize) -> bool {
        self.frames.is_empty()
            || (self.frames.len() < self.max_frames && self.bytes + frame_bytes <= self.max_bytes)
    }

    fn level(&self) -> Level {
        let by_bytes = self.max_bytes / self.last_frame_bytes.max(1);
        Level {
            frames: self.frames.len(),
            bytes: self.bytes,
            capacity_frames: self.max_frames.min(by_bytes).max(1),
            closed: self.closed,
        }
    }
}

pub(crate) struct FrameQueue {
    state: Mutex<State>,
    /// Signalled on every push, pop and close; waiters recheck their own condition.
    changed: Condvar,
}

impl FrameQueue {
    /// A buffer of at most `max_frames` frames and `max_bytes` bytes, for frames of about
    /// `frame_bytes` each (so its capacity is known before the first frame).
    pub(crate) fn new(max_frames: usize, max_bytes: usize, frame_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State {
                frames: VecDeque::with_capacity(max_frames.min(4096)),
                bytes: 0,
                max_frames: max_frames.max(1),
                max_bytes,
                last_frame_bytes: frame_bytes,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Holders only move frames in and out; a panic there leaves the queue consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a frame, waiting while the buffer is full. Fails once the buffer is closed.
    pub(crate) fn push(&self, frame: Arc<Frame>) -> Result<(), Closed> {
        let frame_bytes = frame.rgb.len();
        let mut state = self.lock();
        while !state.closed && !state.accepts(frame_bytes) {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.closed {
            return Err(Closed);
        }
        state.bytes += frame_bytes;
        state.last_frame_bytes = frame_bytes;
        state.frames.push_back(frame);
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// Takes the oldest frame, if any, without waiting.
    pub(crate) fn pop(&self) -> Option<Arc<Frame>> {
        let mut state = self.lock();
        let frame = state.frames.pop_front()?;
        state.bytes -= frame.rgb.len();
        drop(state);
        self.changed.notify_all();
        Some(frame)
    }

    /// The oldest frame, left in the buffer.
    pub(crate) fn front(&self) -> Option<Arc<Frame>> {
        self.lock().frames.front().cloned()
    }

    /// The newest frame, left in the buffer.
    pub(crate) fn back(&self) -> Option<Arc<Frame>> {
        self.lock().frames.back().cloned()
    }

    /// Waits until at least `frames` frames are buffered (or the buffer is full, or closed), at
    /// most `timeout`; returns the level then.
    pub(crate) fn wait_for_level(&self, frames: usize, timeout: Duration) -> Level {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            let level = state.level();
            let full = !state.frames.is_empty() && !state.accepts(state.last_frame_bytes);
            if level.closed || level.frames >= frames || full {
                return level;
            }
            let now = Instant::now();
            if now >= deadline {
                return level;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    pub(crate) fn level(&self) -> Level {
        self.lock().level()
    }

    /// Changes the frame bound (the fps or seconds changed); frames already in stay.
    pub(crate) fn set_max_frames(&self, max_frames: usize) {
        self.lock().max_frames = max_frames.max(1);
        self.changed.notify_all();
    }

    /// Makes pushes fail and wakes every waiter; frames already in can still be taken.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn frame(seq: u64, bytes: usize) -> Arc<Frame> {
        Arc::new(Frame {
            seq,
            width: 1,
            height: 1,
            rgb: vec![0; bytes],
            at: seq as f64,
        })
    }

    #[test]
    fn producer_blocks_when_full_and_resumes_when_drained() {
        let buffer = Arc::new(FrameQueue::new(3, usize::MAX, 3));
        let pushed = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (buffer, pushed) = (Arc::clone(&buffer), Arc::clone(&pushed));
            std::thread::spawn(move || {
                for seq in 0..5 {
                    buffer.push(frame(seq, 3)).expect("buffer open");
                    pushed.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            pushed.load(Ordering::SeqCst),
            3,
            "producer must block at capacity"
        );
        assert_eq!(buffer.pop().map(|f| f.seq), Some(0));
        assert_eq!(buffer.pop().map(|f| f.seq), Some(1));
        producer.join().expect("producer finished");
        assert_eq!(pushed.load(Ordering::SeqCst), 5);
        let order: Vec<u64> = std::iter::from_fn(|| buffer.pop()).map(|f| f.seq).collect();
        assert_eq!(order, vec![2, 3, 4]);
    }

    #[test]
    fn byte_bound_limits_the_frames_held() {
        let buffer = FrameQueue::new(100, 10, 4);
        buffer.push(frame(0, 4)).unwrap();
        buffer.push(frame(1, 4)).unwrap();
        let level = buffer.level();
        assert_eq!(
            (level.frames, level.bytes, level.capacity_frames),
            (2, 8, 2)
        );
        // A frame larger than the whole bound still goes into an empty buffer.
        let big = FrameQueue::new(100, 10, 4);
        big.push(frame(0, 50)).unwrap();
        assert_eq!(big.level().frames, 1);
    }

    #[test]
    fn the_capacity_is_known_before_the_first_frame() {
        let buffer = FrameQueue::new(900, 10 * 1024, 1024);
        assert_eq!(buffer.level().capacity_frames, 10);
    }

    #[test]
    fn close_releases_a_blocked_producer_and_a_waiting_consumer() {
        let buffer = Arc::new(FrameQueue::new(1, usize::MAX, 1));
        buffer.push(frame(0, 1)).unwrap();
        let blocked = {
            let buffer = Arc::clone(&buffer);
            std::thread::spawn(move || buffer.push(frame(1, 1)))
        };
        let waiting = {
            let buffer = Arc::new(FrameQueue::new(4, usize::MAX, 1));
            let waiter = Arc::clone(&buffer);
            let handle =
                std::thread::spawn(move || waiter.wait_for_level(4, Duration::from_secs(30)));
            std::thread::sleep(Duration::from_millis(20));
            buffer.close();
            handle
        };
        std::thread::sleep(Duration::from_millis(20));
        buffer.close();
        assert_eq!(blocked.join().unwrap(), Err(Closed));
        assert!(waiting.join().unwrap().closed);
    }

    #[test]
    fn wait_for_level_returns_when_reached_or_full() {
        let buffer = FrameQueue::new(2, usize::MAX, 1);
        assert_eq!(
            buffer.wait_for_level(1, Duration::from_millis(10)).frames,
            0
        );
        buffer.push(frame(0, 1)).unwrap();
        buffer.push(frame(1, 1)).unwrap();
        // Asking for more than fits returns once full instead of waiting out the timeout.
        let start = Instant::now();
        assert_eq!(buffer.wait_for_level(10, Duration::from_secs(5)).frames, 2);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
