//! The platform layer: every system call that needs `unsafe` lives under this folder, each
//! behind a safe function with a SAFETY comment, returning `io::Result`. ioctl request numbers
//! come from nix's `request_code_*` macros (the kernel's _IO/_IOW encodings), never typed by
//! hand. The rest of the program stays safe Rust. Nothing here keeps state.
//!
//! `cuda` (CUDA builds): our own kernels' launches. `drm`: dumb-buffer mappings, waiting on a card's events and their clock. `fb`: framebuffer
//! ioctls and the shared mapping. `tty`: the virtual terminal's mode and the
//! terminal size. Here: signals, scheduling, the local clock, advisory locks, mapped files.

// The one module where `unsafe` is allowed (the crate denies it everywhere else).
#![allow(unsafe_code)]

#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub(crate) mod drm;
pub(crate) mod fb;
pub(crate) mod tty;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// Unblocks `signals` for this thread and the threads it starts later (a blocked signal stays
/// pending and never reaches its handler; the mask is inherited across exec from a parent).
pub(crate) fn unblock_signals(signals: &[Signal]) -> io::Result<()> {
    let mut set = SigSet::empty();
    for &signal in signals {
        set.add(signal);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
        .map_err(io::Error::from)
}

/// Asks for real-time (SCHED_FIFO) scheduling of the calling thread at `priority`. Needs
/// CAP_SYS_NICE or an RLIMIT_RTPRIO; returns false without them.
pub(crate) fn set_realtime_priority(priority: i32) -> bool {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: plain syscall on the calling thread (pid 0) with a parameter struct that lives
    // across the call.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// Lowers the calling thread's scheduling priority to `nice` (0 to 19; raising it back needs
/// privileges, lowering never does). Returns false where the kernel refused.
pub(crate) fn lower_thread_priority(nice: i32) -> bool {
    // SAFETY: gettid takes no arguments and only returns the calling thread's id.
    let thread = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: plain syscall on one thread of this process (on Linux a thread id names just that
    // thread for PRIO_PROCESS); no memory is passed.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, thread, nice.clamp(0, 19)) == 0 }
}

/// Minutes after local midnight now (the system time zone: /etc/localtime or TZ); `None` if
/// the C library can't tell.
pub(crate) fn local_minute_of_day() -> Option<u32> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value of this plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r only reads `now` and writes `tm`, both local and live for the call;
    // it is the thread-safe variant.
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return None;
    }
    Some(tm.tm_hour as u32 * 60 + tm.tm_min as u32)
}

/// What an advisory lock attempt found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lock {
    Taken,
    /// Another open file (in this or another process) holds it.
    Held,
}

fn flock(file: &File, operation: libc::c_int) -> io::Result<Lock> {
    // SAFETY: flock on a descriptor the caller keeps open for the call; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0 {
        return Ok(Lock::Taken);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(Lock::Held)
    } else {
        Err(error)
    }
}

/// An exclusive `flock` on `file`, without waiting; released when the file is closed.
pub(crate) fn lock_exclusive(file: &File) -> io::Result<Lock> {
    flock(file, libc::LOCK_EX)
}

/// A shared `flock` on `file`, without waiting: `Held` means someone holds it exclusively.
pub(crate) fn lock_shared(file: &File) -> io::Result<Lock> {
    flock(file, libc::LOCK_SH)
}

/// The safetensors file at `path`, memory-mapped read-only.
pub(crate) fn map_safetensors(
    path: &Path,
) -> candle_core::Result<candle_core::safetensors::MmapedSafetensors> {
    // SAFETY: a read-only mapping; the weights folder must not be rewritten while the display
    // runs (the README says so), which is the mapping's one requirement.
    unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
}

/// Freed memory below this size stays with the allocator instead of going back to the kernel.
#[cfg(target_env = "gnu")]
const KEEP_FREED_BYTES: libc::c_int = 64 * 1024 * 1024;

/// Tunes glibc's allocator for tensor work: candle allocates and frees buffers of several MB per
/// operation, which glibc by default maps fresh from the kernel and unmaps again, so every
/// frame's tensors are faulted in page by page (measured on the built-in generator: 2.4 times
/// the page faults and a quarter slower decode). Kept up to `KEEP_FREED_BYTES`, they are reused.
/// Call first thing, before any thread starts; elsewhere than glibc it does nothing.
pub(crate) fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_FREED_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * KEEP_FREED_BYTES);
    }
}
