//! DRM helpers the `drm` crate leaves to its user: mapping a dumb buffer at the offset the
//! kernel gave, waiting for the card's event queue with a timeout, and the clock its event
//! timestamps are on (CLOCK_MONOTONIC, the same as `Instant` on Linux).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use memmap2::MmapMut;

/// A shared, writable mapping of `length` bytes of a dumb buffer, at the fake offset
/// DRM_IOCTL_MODE_MAP_DUMB returned for it on `card`.
pub(crate) fn map_dumb(card: &File, offset: u64, length: usize) -> io::Result<MmapMut> {
    // SAFETY: the kernel owns the pages behind this offset for as long as the dumb buffer
    // exists; the sink unmaps (drops the mapping) before destroying the buffer, only this
    // process writes it, and the display engine only reads it.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(length)
            .map_mut(card)
    }
}

/// Waits up to `timeout` for `file` to have something to read; `Ok(false)` on timeout.
pub(crate) fn wait_readable(file: &File, timeout: Duration) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one pollfd that lives across the call, and its count.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    match ready {
        -1 => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(error)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// The `Instant` of a DRM event timestamp (CLOCK_MONOTONIC since boot). Rust's `Instant` reads
/// the same clock on Linux, so the conversion is exact up to the two readings' distance.
pub(crate) fn instant_of_monotonic(timestamp: Duration) -> Instant {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let instant_now = Instant::now();
    // SAFETY: clock_gettime writes the one timespec, which lives across the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return instant_now;
    }
    let monotonic_now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
    match monotonic_now.checked_sub(timestamp) {
        Some(ago) => instant_now.checked_sub(ago).unwrap_or(instant_now),
        None => instant_now + (timestamp - monotonic_now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_of_now_is_now_and_one_of_a_second_ago_is_a_second_ago() {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as above.
        let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        assert_eq!(status, 0);
        let stamp = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        let second_ago = instant_of_monotonic(stamp - Duration::from_secs(1));
        let age = second_ago.elapsed();
        // At least a second old whatever the scheduling; not ten.
        assert!(
            age >= Duration::from_secs(1) && age < Duration::from_secs(10),
            "{age:?}"
        );
    }
}
