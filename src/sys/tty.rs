//! Terminal system calls: the virtual terminal's text/graphics mode (KDGETMODE/KDSETMODE) and
//! a terminal's size in cells (TIOCGWINSZ).

use std::io;

// <linux/kd.h>: KDSETMODE is _IO('K', 0x3A) with the mode by value; KDGETMODE is _IO('K', 0x3B)
// writing an int (legacy numbering, hence the `bad` variants).
nix::ioctl_write_int_bad!(kd_set_mode, nix::request_code_none!(b'K', 0x3A));
nix::ioctl_read_bad!(
    kd_get_mode,
    nix::request_code_none!(b'K', 0x3B),
    libc::c_int
);
nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

pub(crate) const KD_TEXT: libc::c_int = 0x00;
pub(crate) const KD_GRAPHICS: libc::c_int = 0x01;

pub(crate) fn set_mode(fd: libc::c_int, mode: libc::c_int) -> io::Result<()> {
    // SAFETY: KDSETMODE takes its argument by value; fd is open for the call.
    unsafe { kd_set_mode(fd, mode) }
        .map(drop)
        .map_err(io::Error::from)
}

pub(crate) fn get_mode(fd: libc::c_int) -> io::Result<libc::c_int> {
    let mut mode: libc::c_int = KD_TEXT;
    // SAFETY: KDGETMODE writes one int through the pointer, which lives across the call.
    unsafe { kd_get_mode(fd, &mut mode) }.map_err(io::Error::from)?;
    Ok(mode)
}

/// (columns, rows) of the terminal on `fd`, if it is one.
pub(crate) fn size(fd: libc::c_int) -> Option<(u32, u32)> {
    // SAFETY: an all-zero winsize is a valid value of this plain C struct.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize struct, which lives across the call.
    unsafe { tiocgwinsz(fd, &mut size) }.ok()?;
    Some((size.ws_col as u32, size.ws_row as u32))
}

/// Writes all of `bytes` to `fd`, which the caller keeps open (used where only the raw
/// descriptor of a still-open file is at hand).
pub(crate) fn write_all(fd: libc::c_int, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: the caller guarantees `fd` is open for the call; ManuallyDrop keeps this borrowed
    // File from closing a descriptor it does not own.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    file.write_all(bytes)
}
