//! Retry pacing for a failing generator: waits 1 s, 2 s, 4 s ... up to 30 s between tries, in
//! short slices so shutdown is noticed at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(30);
const SLICE: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Backoff {
    /// The wait the next `sleep` will take.
    pub fn next_delay(&self) -> Duration {
        self.next
    }

    pub fn reset(&mut self) {
        self.next = FIRST;
    }

    /// Sleeps the current delay and doubles it; returns false when `stop` was set meanwhile.
    pub fn sleep(&mut self, stop: &AtomicBool) -> bool {
        let mut left = self.next;
        self.next = (self.next * 2).min(LONGEST);
        while !left.is_zero() {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let step = left.min(SLICE);
            std::thread::sleep(step);
            left -= step;
        }
        !stop.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::default();
        let stop = AtomicBool::new(true);
        let mut delays = Vec::new();
        for _ in 0..7 {
            delays.push(backoff.next_delay().as_secs());
            assert!(
                !backoff.sleep(&stop),
                "a set stop flag ends the wait at once"
            );
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), FIRST);
    }
}
