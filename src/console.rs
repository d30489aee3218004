//! The Linux console under the art: while we show frames on a framebuffer the VT is switched to
//! graphics mode (KDSETMODE KD_GRAPHICS), so fbcon draws neither its cursor nor text over the
//! picture, the cursor is hidden and screen blanking is switched off. `ConsoleGuard` restores the
//! previous mode, the cursor and the blanking timeout (read from the kernel's consoleblank) when
//! dropped (normal exit, SIGTERM/SIGINT via orderly shutdown) and `restore_after_panic` does it
//! from the panic hook. No crate wraps these two ioctls, so they are here.
//!
//! Needs write access to the VT (root, or the `tty` group for /dev/tty0 and /dev/ttyN).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, Context};

// From <linux/kd.h>.
const KDSETMODE: libc::c_ulong = 0x4B3A;
const KDGETMODE: libc::c_ulong = 0x4B3B;
pub const KD_TEXT: libc::c_int = 0x00;
pub const KD_GRAPHICS: libc::c_int = 0x01;

/// The console taken by the running guard, for the panic hook (-1: none).
static ACTIVE_FD: AtomicI32 = AtomicI32::new(-1);
static ACTIVE_PREVIOUS_MODE: AtomicI32 = AtomicI32::new(KD_TEXT);
/// The kernel's console blanking timeout in seconds, which "\x1b[9;N]" overrides per VT.
const CONSOLEBLANK: &str = "/sys/module/kernel/parameters/consoleblank";
/// Cursor off, blanking off ("setterm -cursor off -blank 0").
const HIDE: &[u8] = b"\x1b[?25l\x1b[9;0]";
static ACTIVE_BLANK_MINUTES: AtomicI32 = AtomicI32::new(0);

/// What to write to the VT to undo `HIDE`: cursor on, blanking back to its old timeout.
fn restore_sequence(blank_minutes: i32) -> String {
    format!("\x1b[?25h\x1b[9;{blank_minutes}]")
}

fn write_fd(fd: libc::c_int, bytes: &[u8]) {
    // SAFETY: writes from a live buffer to an fd that is open for the call; a short or failed
    // write of an escape sequence only leaves the cursor or blanking as they were.
    let _ = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// The VT mode of the console at `path`: KD_TEXT (0) or KD_GRAPHICS (1).
pub fn mode(path: &Path) -> anyhow::Result<libc::c_int> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("cannot open console {}", path.display()))?;
    get_mode(file.as_raw_fd())
        .with_context(|| format!("{} is not a virtual terminal", path.display()))
}

fn set_mode(fd: libc::c_int, mode: libc::c_int) -> std::io::Result<()> {
    // SAFETY: KDSETMODE takes its argument by value; fd is open for the call.
    if unsafe { libc::ioctl(fd, KDSETMODE as _, mode as libc::c_ulong) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn get_mode(fd: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut mode: libc::c_int = KD_TEXT;
    // SAFETY: KDGETMODE writes one int through the pointer, which lives across the call.
    if unsafe { libc::ioctl(fd, KDGETMODE as _, &mut mode) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(mode)
}

pub struct ConsoleGuard {
    file: File,
    path: PathBuf,
    previous: libc::c_int,
    blank_minutes: i32,
}

impl ConsoleGuard {
    /// Switches the VT at `path` (e.g. /dev/tty1, or /dev/tty0 for the active one) to graphics
    /// mode with blanking off.
    pub fn take(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot open console {} (needs root or the tty group)",
                    path.display()
                )
            })?;
        let fd = file.as_raw_fd();
        let previous = get_mode(fd)
            .with_context(|| format!("{} is not a virtual terminal", path.display()))?;
        if ACTIVE_FD.load(Ordering::SeqCst) >= 0 {
            bail!("the console is already taken by this process");
        }
        // The console must never blank the art after consoleblank minutes, nor blink a cursor.
        let blank_minutes = std::fs::read_to_string(CONSOLEBLANK)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .map_or(0, |seconds| (seconds + 59) / 60);
        let _ = (&file).write_all(HIDE);
        set_mode(fd, KD_GRAPHICS)
            .with_context(|| format!("cannot switch {} to graphics mode", path.display()))?;
        ACTIVE_PREVIOUS_MODE.store(previous, Ordering::SeqCst);
        ACTIVE_BLANK_MINUTES.store(blank_minutes, Ordering::SeqCst);
        ACTIVE_FD.store(fd, Ordering::SeqCst);
        log::info!(
            "console path={} mode=graphics previous_mode={}",
            path.display(),
            previous
        );
        Ok(Self {
            file,
            path: path.to_path_buf(),
            previous,
            blank_minutes,
        })
    }
}

impl Drop for ConsoleGuard {
    fn drop(&mut self) {
        ACTIVE_FD.store(-1, Ordering::SeqCst);
        let restored = set_mode(self.file.as_raw_fd(), self.previous);
        write_fd(
            self.file.as_raw_fd(),
            restore_sequence(self.blank_minutes).as_bytes(),
        );
        match restored {
            Ok(()) => log::info!("console path={} mode=restored", self.path.display()),
            Err(error) => log::error!(
                "console path={} restore_failed error=\"{error}\"",
                self.path.display()
            ),
        }
    }
}

/// Restores the console from a panic hook, where destructors may never run. Idempotent.
pub fn restore_after_panic() {
    let fd = ACTIVE_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        let _ = set_mode(fd, ACTIVE_PREVIOUS_MODE.load(Ordering::SeqCst));
        let minutes = ACTIVE_BLANK_MINUTES.load(Ordering::SeqCst);
        write_fd(fd, restore_sequence(minutes).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_vt_is_refused_and_nothing_is_registered() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let error = ConsoleGuard::take(file.path()).err().expect("not a VT");
        assert!(
            format!("{error:#}").contains("is not a virtual terminal"),
            "{error:#}"
        );
        assert_eq!(ACTIVE_FD.load(Ordering::SeqCst), -1);
        restore_after_panic(); // nothing to restore: must be a no-op
        assert!(mode(file.path()).is_err());
    }

    #[test]
    fn the_restore_sequence_shows_the_cursor_and_puts_blanking_back() {
        assert_eq!(restore_sequence(10), "\x1b[?25h\x1b[9;10]");
        assert_eq!(HIDE, b"\x1b[?25l\x1b[9;0]");
    }
}
