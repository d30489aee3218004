//! The lock that keeps one display per output folder: an exclusive `flock` on
//! `dreamframe.lock`, which holds the owner's PID, held until dropped (the kernel releases it when
//! the process dies, however it dies). A lock file that is not a regular file is refused, naming
//! it; the lock holds even when the disk is too full for the PID. `status` reads who holds it
//! without taking it.
//!
//! Runs on the main thread at start (and `status`'s); failures are `LockError`s a caller can
//! branch on, or the `io::Error` that caused them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::checked_fs::{kind_of, open_regular};
use crate::sys::Lock;

/// The lock that makes a display the only one writing into its output folder. Held (an
/// exclusive `flock` on `dreamframe.lock`, which holds the owner's PID) until dropped; the
/// kernel releases it when the process dies, however it dies.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
    pub path: PathBuf,
    /// Why the PID could not be written into the lock file (a full disk), if it could not.
    pub pid_error: Option<std::io::Error>,
}

/// Name of the lock file in the output folder.
pub(crate) const LOCK_FILE_NAME: &str = "dreamframe.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another dreamframe (PID {pid}) is already showing into {dir}: stop it first (`systemctl stop dreamframe`), or give this one another --output-dir")]
    Held { dir: PathBuf, pid: String },
    #[error("the lock file {path} is {what}, not a regular file, so it can't keep this the only display on its folder: remove it (`rm -r {path}`) and start again")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("cannot lock the output folder {dir}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl OutputLock {
    /// Takes the lock of `dir` (which must exist) for this process.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE_NAME);
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let not_a_file = |file_type: std::fs::FileType| LockError::NotAFile {
            path: path.clone(),
            what: kind_of(file_type),
        };
        // Looked at before opening: a folder, a symlink or a FIFO there would otherwise fail
        // the open (or the lock) and leave the folder without its guard.
        match std::fs::symlink_metadata(&path) {
            Ok(metadata) if !metadata.is_file() => return Err(not_a_file(metadata.file_type())),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        let metadata = file.metadata().map_err(io)?;
        if !metadata.is_file() {
            return Err(not_a_file(metadata.file_type()));
        }
        if crate::sys::lock_exclusive(&file).map_err(io)? == Lock::Held {
            let mut text = String::new();
            let _ = (&file).take(64).read_to_string(&mut text);
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                pid: pid_in(&text),
            });
        }
        // The PID is for people and `status`; the flock alone keeps the folder ours and needs
        // no space, so a full disk keeps the lock (readers then see PID "unknown").
        let pid_error = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .err();
        Ok(Self {
            _file: file,
            path,
            pid_error,
        })
    }

    /// The PID written in `dir`'s lock file if a live process holds the lock (`None`: the
    /// folder has no running display); an error when the file can't be looked at (permission).
    /// Changes nothing.
    pub fn holder(dir: &Path) -> std::io::Result<Option<String>> {
        let mut file = match open_regular(&dir.join(LOCK_FILE_NAME), 4096) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        // A shared lock taken is released when `file` closes, at the end of this function.
        if crate::sys::lock_shared(&file)? == Lock::Taken {
            return Ok(None);
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        Ok(Some(pid_in(&text)))
    }
}

/// The PID a lock file holds, or "unknown": anything else in it (written by someone else) is
/// never printed, so no escape sequence reaches a terminal.
fn pid_in(text: &str) -> String {
    let pid = text.trim();
    match pid.parse::<u32>() {
        Ok(number) if number > 0 => number.to_string(),
        _ => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_holding_anything_but_a_pid_reads_unknown() {
        assert_eq!(pid_in("1234\n"), "1234");
        assert_eq!(pid_in(""), "unknown");
        assert_eq!(pid_in("\u{1b}[2J\u{1b}[31mpwned"), "unknown");
        assert_eq!(pid_in("99999999999999999999"), "unknown");
    }

    #[test]
    fn a_second_lock_on_the_same_folder_names_the_first_holder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = OutputLock::acquire(dir.path()).expect("first lock");
        let error = OutputLock::acquire(dir.path()).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains(&format!("PID {}", std::process::id())),
            "{text}"
        );
        assert_eq!(
            OutputLock::holder(dir.path()).unwrap(),
            Some(std::process::id().to_string())
        );
        drop(first);
        assert_eq!(OutputLock::holder(dir.path()).unwrap(), None);
        OutputLock::acquire(dir.path()).expect("free again once dropped");
    }

    #[test]
    fn a_lock_file_that_is_not_a_regular_file_is_refused_naming_it() {
        let lock_path = |dir: &tempfile::TempDir| dir.path().join(LOCK_FILE_NAME);
        let folder = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(lock_path(&folder)).unwrap();
        let symlink = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::symlink(folder.path().join("elsewhere"), lock_path(&symlink)).unwrap();
        let fifo = tempfile::tempdir().expect("temp dir");
        nix::unistd::mkfifo(&lock_path(&fifo), nix::sys::stat::Mode::S_IRWXU).unwrap();
        for (dir, what) in [
            (&folder, "a folder"),
            (&symlink, "a symbolic link"),
            (&fifo, "a FIFO"),
        ] {
            let error = OutputLock::acquire(dir.path()).unwrap_err();
            assert!(matches!(error, LockError::NotAFile { .. }), "{error:?}");
            let text = error.to_string();
            assert!(
                text.contains(&format!(
                    "the lock file {} is {what}, not a regular file",
                    lock_path(dir).display()
                )),
                "{text}"
            );
        }
        // The symlink led nowhere and nothing was made there.
        assert!(!folder.path().join("elsewhere").exists());
    }
}
