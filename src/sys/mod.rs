//! The platform layer: every system call that needs `unsafe` lives under this folder, each with a
//! SAFETY comment, behind safe functions that return `io::Result`. The rest of the program
//! stays safe Rust. Nothing here keeps state.

use std::io;

/// Unblocks `signals` for this thread and the threads it starts later (a blocked signal stays
/// pending and never reaches its handler; the mask is inherited across exec from a parent).
pub fn unblock_signals(signals: &[libc::c_int]) -> io::Result<()> {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use; pthread_sigmask
    // only reads it, and a null old-set pointer is allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        let code = libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        if code != 0 {
            return Err(io::Error::from_raw_os_error(code));
        }
    }
    Ok(())
}
