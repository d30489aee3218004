//! The files dreamframe reads and writes beside the display: bounded reads of regular files,
//! atomic writes, and the lock that keeps one display per output folder.
//!
//! Config, resume state and logs are edited by hand over SSH, so a path may name anything: a
//! FIFO (opening it would block until a writer comes), /dev/zero (endless), a folder, a huge
//! file. `read_regular` opens without blocking, refuses whatever is not a regular file and reads
//! at most a stated number of bytes, so no such file can hang or exhaust the display;
//! `open_append_regular` (the log) and `expect_char_device` (the console) refuse the wrong kind
//! of file the same way, before anything can block on it. `OutputLock` refuses a lock file that
//! is not a regular file, and holds even when the disk is too full for its PID. `write_atomic`
//! writes a temp file beside the target and renames it over, removing the temp file when any
//! step fails (a full disk leaves nothing behind). Runs on whichever thread calls; every failure
//! is an `io::Error` naming what was wrong, never a panic.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys::Lock;

/// What kind of thing a path names, for messages.
pub fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a folder"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_file() {
        "a regular file"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// "is a FIFO, expected a regular file".
fn wrong_kind(file_type: std::fs::FileType, expected: &str) -> std::io::Error {
    invalid(format!("is {}, expected {expected}", kind_of(file_type)))
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

/// Opens `path` for reading if it is a regular file (after following symlinks) of at most
/// `max_bytes`. Opening never blocks: a FIFO is opened non-blocking and then refused.
pub fn open_regular(path: &Path, max_bytes: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(wrong_kind(metadata.file_type(), "a regular file"));
    }
    if metadata.len() > max_bytes {
        return Err(invalid(format!(
            "is {} bytes, larger than the {} allowed",
            metadata.len(),
            human_bytes(max_bytes)
        )));
    }
    Ok(file)
}

/// Opens `path` for appending, creating it as a regular file if it is missing. Whatever else
/// stands there is refused, naming what it is: a FIFO (opening it for writing would block until
/// a reader comes, and rotation would rename it away), a device, a folder. Never blocks.
pub fn open_append_regular(path: &Path) -> std::io::Result<File> {
    refuse_special(path, "a regular file")?;
    // O_NONBLOCK: a FIFO put there since the check fails (ENXIO) instead of blocking.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(wrong_kind(metadata.file_type(), "a regular file"));
    }
    Ok(file)
}

/// Refuses `path` when something other than a regular file stands there (a missing one is
/// fine); looks without opening, so a FIFO can't block.
fn refuse_special(path: &Path, expected: &str) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => Err(wrong_kind(metadata.file_type(), expected)),
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Refuses `path` unless it names a character device, as a terminal is; looks without opening,
/// so a FIFO or a socket can't block whoever opens it next.
pub fn expect_char_device(path: &Path, expected: &str) -> std::io::Result<()> {
    let metadata = std::fs::metadata(path)?;
    if metadata.file_type().is_char_device() {
        Ok(())
    } else {
        Err(wrong_kind(metadata.file_type(), expected))
    }
}

/// The whole content of a regular file of at most `max_bytes` (see `open_regular`). A file that
/// grows while being read is cut off at the bound and refused too.
pub fn read_regular(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path, max_bytes)?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(invalid(format!(
            "grew past the {} allowed while being read",
            human_bytes(max_bytes)
        )));
    }
    Ok(bytes)
}

/// "1 MiB", "16 MiB", "512 KiB", "100 bytes".
pub fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

/// Writes `bytes` to `path` through a temp file in the same folder and a rename, so a reader
/// never sees half a file; on any failure the temp file is removed and the old file stays.
/// The temp file is always created new: whatever stood at its name (a stale temp, a FIFO, a
/// symlink) is removed first, never written through.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    let _ = std::fs::remove_file(&temp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Why opening a device was refused with EPERM rather than EACCES: no file permission (a group
/// would not help) but the device cgroup, which systemd's `DevicePolicy=`/`DeviceAllow=` and
/// container runtimes set, refuses it.
pub const DEVICE_POLICY_HINT: &str = "not the file's permissions: a device policy forbids it (the \
     systemd unit's DevicePolicy=/DeviceAllow=, or a container's device rules); allow the device \
     there";

/// Whether opening a device failed on a device policy (EPERM) rather than on the file's
/// permissions (EACCES); both read as `ErrorKind::PermissionDenied`.
pub fn refused_by_device_policy(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::EPERM)
}

/// What a person who may not read the service's files (root and the `dreamframe` group only,
/// by its UMask) is told to do, by `status` and the analyzer.
pub const PERMISSION_HINT: &str = "use sudo or join the dreamframe group";

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
pub const LOCK_FILE_NAME: &str = "dreamframe.lock";

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
    fn reads_regular_files_within_the_bound_and_refuses_everything_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "x = 1\n").unwrap();
        assert_eq!(read_regular(&file, 100).unwrap(), b"x = 1\n");
        let error = read_regular(&file, 3).unwrap_err().to_string();
        assert_eq!(error, "is 6 bytes, larger than the 3 bytes allowed");

        let error = read_regular(dir.path(), 100).unwrap_err().to_string();
        assert!(error.contains("a folder"), "{error}");
        let error = read_regular(Path::new("/dev/zero"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(error.contains("a character device"), "{error}");

        // A FIFO with no writer: opening it must not block.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let error = read_regular(&fifo, 100).unwrap_err().to_string();
        assert!(error.contains("a FIFO"), "{error}");

        // A symlink to a device is judged by what it points to.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read_regular(&link, 100).is_err());
    }

    #[test]
    fn atomic_write_replaces_the_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("status.json");
        write_atomic(&path, b"{\"a\":1}").unwrap();
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_failed_atomic_write_removes_its_temp_file_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The rename fails (the target is a folder that isn't empty) after the temp file was
        // written: the same clean-up as when a full disk fails the write.
        let target = dir.path().join("status.json");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"old").unwrap();
        assert!(write_atomic(&target, b"new").is_err());
        assert_eq!(names_in(dir.path()), vec!["status.json"]);
        assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"old");
    }

    #[test]
    fn whatever_stands_at_the_temp_name_is_replaced_never_written_through() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("resume.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("resume.json.tmp")).unwrap();
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert_eq!(names_in(dir.path()), vec!["resume.json", "victim"]);
    }

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
