//! The Linux console under the art: while we show frames on a framebuffer the VT is switched to
//! graphics mode (KDSETMODE KD_GRAPHICS), so fbcon draws neither its cursor nor text over the
//! picture, the cursor is hidden and screen blanking is switched off. `ConsoleGuard` restores the
//! previous mode, the cursor and the blanking timeout (read from the kernel's consoleblank) when
//! dropped (normal exit, SIGTERM/SIGINT via orderly shutdown); `restore_at_exit` does it for a
//! guard that is still held when the process leaves (a stuck pacer thread left behind, or main
//! unwinding from a panic). A panic inside a stage thread is caught and never touches the
//! console: the display may run on. The KD ioctls themselves are in `sys::tty`.
//!
//! Needs write access to the VT, which is all it opens it for (Debian's udev makes /dev/tty0 and
//! /dev/ttyN mode 0620 group `tty`: the group may write, not read), and, for KDSETMODE, the VT
//! to be this process's controlling terminal or CAP_SYS_TTY_CONFIG (the kernel's rule for most
//! VT ioctls). The systemd unit gives the first (TTYPath=/dev/tty1, StandardInput=tty-force);
//! so does a login on that VT; root has both.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, Context};

use crate::sys::tty::{get_mode, set_mode};
pub(crate) use crate::sys::tty::{KD_GRAPHICS, KD_TEXT};

/// The console taken by the running guard, for `restore_at_exit` (-1: none).
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

/// Refuses a console path that is not a character device (a FIFO would block the open for
/// ever, a regular file would take the escape sequences), before anything opens it.
fn expect_terminal(path: &Path) -> anyhow::Result<()> {
    crate::checked_fs::expect_char_device(path, "a terminal (a console is /dev/ttyN)")
        .with_context(|| format!("cannot use console {}", path.display()))
}

/// The console at `path` opened for what the KD ioctls and the cursor sequences need: writing
/// (mode 0620 lets the `tty` group write, never read), never as a controlling terminal.
fn open_console(path: &Path) -> anyhow::Result<File> {
    expect_terminal(path)?;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(|error| {
            let why = if crate::checked_fs::refused_by_device_policy(&error) {
                crate::checked_fs::DEVICE_POLICY_HINT
            } else {
                "writing to it needs root, the `tty` group, or to own it (a login there, or the \
                 systemd unit's TTYPath=)"
            };
            anyhow::anyhow!("cannot open console {}: {error}; {why}", path.display())
        })
}

/// Why KDSETMODE was refused, for its error.
fn set_mode_hint(path: &Path, error: &std::io::Error) -> String {
    let mut message = format!("cannot switch {} to graphics mode: {error}", path.display());
    if error.raw_os_error() == Some(libc::EPERM) {
        message.push_str(
            "; only a process whose controlling terminal it is (a login on that VT, or the \
             systemd unit with TTYPath= naming it; /dev/tty0 is whichever VT is active) or one \
             with CAP_SYS_TTY_CONFIG (root) may",
        );
    }
    message
}

/// The VT mode of the console at `path`: KD_TEXT (0) or KD_GRAPHICS (1).
pub(crate) fn mode(path: &Path) -> anyhow::Result<libc::c_int> {
    let file = open_console(path)?;
    get_mode(file.as_raw_fd())
        .with_context(|| format!("{} is not a virtual terminal", path.display()))
}

pub(crate) struct ConsoleGuard {
    file: File,
    path: PathBuf,
    previous: libc::c_int,
    blank_minutes: i32,
}

impl ConsoleGuard {
    /// `take` for a sink: the console named (if any), or a warning and `None` when it can't be
    /// taken (the art still shows; the cursor may blink over it).
    pub(crate) fn take_or_warn(path: Option<&Path>) -> Option<Self> {
        let path = path?;
        match Self::take(path) {
            Ok(guard) => Some(guard),
            Err(error) => {
                log::warn!(
                    "{}",
                    crate::events::ConsoleUnavailable {
                        error: format!("{error:#}")
                    }
                );
                None
            }
        }
    }

    /// Switches the VT at `path` (e.g. /dev/tty1, or /dev/tty0 for the active one) to graphics
    /// mode with blanking off.
    pub(crate) fn take(path: &Path) -> anyhow::Result<Self> {
        let file = open_console(path)?;
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
        set_mode(fd, KD_GRAPHICS).map_err(|error| anyhow::anyhow!(set_mode_hint(path, &error)))?;
        ACTIVE_PREVIOUS_MODE.store(previous, Ordering::SeqCst);
        ACTIVE_BLANK_MINUTES.store(blank_minutes, Ordering::SeqCst);
        ACTIVE_FD.store(fd, Ordering::SeqCst);
        log::info!(
            "{}",
            crate::events::Console {
                path: path.display().to_string(),
                mode: "graphics".into(),
                previous_mode: Some(previous.into()),
                error: None,
            }
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
        // A short or failed write only leaves the cursor or blanking as they were.
        let _ = (&self.file).write_all(restore_sequence(self.blank_minutes).as_bytes());
        let event = crate::events::Console {
            path: self.path.display().to_string(),
            mode: "restored".into(),
            previous_mode: None,
            error: restored.err().map(|error| error.to_string()),
        };
        match event.error {
            None => log::info!("{event}"),
            Some(_) => log::error!("{event}"),
        }
    }
}

/// Restores a console whose guard is still held as the process leaves (its owner, the sink on
/// the pacer thread, may be stuck or unreachable). Idempotent; the guard's own drop does nothing
/// more afterwards but close its file.
pub(crate) fn restore_at_exit() {
    let fd = ACTIVE_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        let _ = set_mode(fd, ACTIVE_PREVIOUS_MODE.load(Ordering::SeqCst));
        let minutes = ACTIVE_BLANK_MINUTES.load(Ordering::SeqCst);
        let _ = crate::sys::tty::write_all(fd, restore_sequence(minutes).as_bytes());
    }
}

/// Calls `restore_at_exit` when dropped: held by `main` for the display's lifetime, so the
/// console comes back on every way out of it, unwinding included.
pub(crate) struct RestoreAtExit;

impl Drop for RestoreAtExit {
    fn drop(&mut self) {
        restore_at_exit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_console_that_is_not_a_terminal_is_refused_before_it_is_opened() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A FIFO with no writer: opening it for reading would block for ever.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").expect("plain file");
        for (path, what) in [(&fifo, "a FIFO"), (&plain, "a regular file")] {
            let expected = format!("is {what}, expected a terminal");
            let error = format!("{:#}", mode(path).unwrap_err());
            assert!(error.contains(&expected), "{error}");
            let error = format!("{:#}", ConsoleGuard::take(path).err().expect("refused"));
            assert!(error.contains(&expected), "{error}");
        }
        // Nothing was written into the plain file.
        assert_eq!(std::fs::read(&plain).unwrap(), b"");
    }

    #[test]
    fn a_caught_panic_leaves_the_console_alone_and_the_exit_guard_restores_it() {
        // A pipe stands in for the VT: what a restore writes to it can be read back.
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        let fd = write_end.as_raw_fd();
        ACTIVE_PREVIOUS_MODE.store(KD_TEXT, Ordering::SeqCst);
        ACTIVE_BLANK_MINUTES.store(10, Ordering::SeqCst);
        ACTIVE_FD.store(fd, Ordering::SeqCst);
        let at_exit = RestoreAtExit;

        // A stage thread's panic, caught as the run's stage wrapper catches it.
        let caught = std::thread::spawn(|| std::panic::catch_unwind(|| panic!("stage panic")))
            .join()
            .expect("the thread itself ends normally");
        assert!(caught.is_err());
        assert_eq!(
            ACTIVE_FD.load(Ordering::SeqCst),
            fd,
            "still in graphics mode"
        );

        drop(at_exit);
        assert_eq!(ACTIVE_FD.load(Ordering::SeqCst), -1);
        drop(write_end);
        let mut written = String::new();
        std::fs::File::from(read_end)
            .read_to_string(&mut written)
            .expect("read the pipe");
        assert_eq!(written, restore_sequence(10), "restored once, at exit");

        // A character device that is not a VT: refused, and nothing registered for the exit
        // guard. (Other files are refused before opening: see the next test.)
        let not_a_vt = Path::new("/dev/null");
        let error = ConsoleGuard::take(not_a_vt).err().expect("not a VT");
        assert!(
            format!("{error:#}").contains("is not a virtual terminal"),
            "{error:#}"
        );
        assert_eq!(ACTIVE_FD.load(Ordering::SeqCst), -1);
        restore_at_exit(); // nothing to restore: must be a no-op
        assert!(mode(not_a_vt).is_err());
    }

    #[test]
    fn the_console_is_opened_only_for_writing_which_the_tty_group_may() {
        // Debian's /dev/ttyN are 0620 root:tty: an open for reading fails for the group.
        let file = open_console(Path::new("/dev/null")).expect("a character device");
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).expect("F_GETFL");
        assert_eq!(flags & libc::O_ACCMODE, libc::O_WRONLY);
    }

    #[test]
    fn a_refused_graphics_mode_says_what_the_kernel_wants() {
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        let message = set_mode_hint(Path::new("/dev/tty0"), &eperm);
        assert!(
            message
                .starts_with("cannot switch /dev/tty0 to graphics mode: Operation not permitted"),
            "{message}"
        );
        assert!(message.contains("controlling terminal"), "{message}");
        assert!(message.contains("TTYPath="), "{message}");
        assert!(message.contains("CAP_SYS_TTY_CONFIG"), "{message}");
        assert!(!message.contains("group"), "no group helps here: {message}");
        let other = std::io::Error::from_raw_os_error(libc::ENOTTY);
        assert!(!set_mode_hint(Path::new("/dev/tty0"), &other).contains("controlling"));
    }

    #[test]
    fn the_restore_sequence_shows_the_cursor_and_puts_blanking_back() {
        assert_eq!(restore_sequence(10), "\x1b[?25h\x1b[9;10]");
        assert_eq!(HIDE, b"\x1b[?25l\x1b[9;0]");
    }
}
