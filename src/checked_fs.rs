//! File access checked against hostile paths: bounded reads of regular files, kind checks
//! before anything can block, atomic writes, and what to say when an open is refused.
//!
//! Config, resume state and logs are edited by hand over SSH, so a path may name anything: a
//! FIFO (opening it would block until a writer comes), /dev/zero (endless), a folder, a huge
//! file. `read_regular` opens without blocking, refuses whatever is not a regular file and reads
//! at most a stated number of bytes, so no such file can hang or exhaust the display;
//! `open_append_regular` (the log) and `expect_char_device` (the console) refuse the wrong kind
//! of file the same way, before anything can block on it; `create_folder` names what stands
//! where a folder should be. `write_atomic` writes a temp file beside the target and renames it
//! over, removing the temp file when any step fails (a full disk leaves nothing behind). Runs on
//! whichever thread calls; every failure is an `io::Error` naming what was wrong, never a panic.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

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

/// `create_dir_all`, with "/x/out is a FIFO, expected a folder" where something other than a
/// folder stands at `path` or at one of its parents (std says only "File exists" or "Not a
/// directory").
pub fn create_folder(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path).map_err(|error| match folder_blocked(path) {
        Some(why) => invalid(why),
        None => error,
    })
}

/// "/x/out is a FIFO, expected a folder" where the deepest part of `path` that exists is not a
/// folder (so `path` can never be made); `None` where it could be (permissions aside).
pub fn folder_blocked(path: &Path) -> Option<String> {
    let (part, metadata) = path
        .ancestors()
        .find_map(|part| std::fs::metadata(part).ok().map(|m| (part, m)))?;
    (!metadata.is_dir()).then(|| {
        format!(
            "{} is {}, expected a folder",
            part.display(),
            kind_of(metadata.file_type())
        )
    })
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
    fn a_folder_that_cannot_be_made_names_what_stands_in_its_way() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        for path in [fifo.clone(), fifo.join("deeper/still")] {
            let error = create_folder(&path).unwrap_err().to_string();
            assert_eq!(
                error,
                format!("{} is a FIFO, expected a folder", fifo.display())
            );
        }
        let made = dir.path().join("a/b");
        create_folder(&made).expect("made");
        create_folder(&made).expect("already there is fine");
        assert!(made.is_dir());
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
}
