//! Framebuffer system calls: blanking (FBIOBLANK), waiting for vsync (FBIO_WAITFORVSYNC) and
//! mapping the device's memory. The screen-info ioctls come from the `framebuffer` crate.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use memmap2::MmapMut;

// <linux/fb.h>: FBIOBLANK is _IO('F', 0x11) with its level by value; FBIO_WAITFORVSYNC is
// _IOW('F', 0x20, __u32).
nix::ioctl_write_int_bad!(fbio_blank, nix::request_code_none!(b'F', 0x11));
nix::ioctl_write_ptr!(fbio_wait_for_vsync, b'F', 0x20, u32);

const FB_BLANK_UNBLANK: libc::c_int = 0;
const FB_BLANK_POWERDOWN: libc::c_int = 4;

/// Powers the display down (`true`) or up.
pub(crate) fn blank(file: &File, blank: bool) -> io::Result<()> {
    let level = if blank {
        FB_BLANK_POWERDOWN
    } else {
        FB_BLANK_UNBLANK
    };
    // SAFETY: FBIOBLANK takes its argument by value; the descriptor is open for the call.
    unsafe { fbio_blank(file.as_raw_fd(), level) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Blocks until the next vertical blank of the first CRTC.
pub(crate) fn wait_for_vsync(fd: libc::c_int) -> io::Result<()> {
    let crtc: u32 = 0;
    // SAFETY: FBIO_WAITFORVSYNC reads one u32 through the pointer, which outlives the call.
    unsafe { fbio_wait_for_vsync(fd, &crtc) }
        .map(drop)
        .map_err(io::Error::from)
}

/// A shared, writable mapping of the first `length` bytes of `file` (a framebuffer device, or
/// an ordinary file standing in for one).
pub(crate) fn map_shared(file: &File, length: usize) -> io::Result<MmapMut> {
    // SAFETY: a shared mapping that only this process writes: callers hold an exclusive flock
    // on the file, which keeps other cooperating players out, and nothing else in this process
    // maps it. Its contents changing underneath (the kernel scanning it out) is harmless: we
    // only ever write it.
    unsafe { memmap2::MmapOptions::new().len(length).map_mut(file) }
}
