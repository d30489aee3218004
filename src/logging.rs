//! Logging, set up once by `main`: stderr (journald under systemd) and a log file rotated by size
//! (file-rotate), so the disk never fills. Lines are `time [LEVEL] event key=value ...` so tools/
//! can parse them. A log file that can't be opened is reported and skipped, and a failing write
//! (disk full) is dropped by simplelog: logging never stops the display.

use std::fs::OpenOptions;
use std::path::Path;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use log::LevelFilter;
use simplelog::{CombinedLogger, ConfigBuilder, SharedLogger, WriteLogger};

/// Starts logging into stderr and, if given, `file` rotated past `max_bytes` keeping `files` old
/// ones; returns a warning to log if the file could not be opened.
pub fn init(
    level: LevelFilter,
    file: Option<&Path>,
    max_bytes: usize,
    files: usize,
) -> anyhow::Result<Option<String>> {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .add_filter_allow_str("dreamframe")
        .build();
    let mut loggers: Vec<Box<dyn SharedLogger>> =
        vec![WriteLogger::new(level, config.clone(), std::io::stderr())];
    let mut warning = None;
    if let Some(path) = file {
        let opened = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| OpenOptions::new().create(true).append(true).open(path));
        match opened {
            Ok(_) => {
                // Checked above: file-rotate panics on a folder it can't create.
                let rotating = FileRotate::new(
                    path,
                    AppendCount::new(files),
                    ContentLimit::BytesSurpassed(max_bytes),
                    Compression::None,
                    None,
                );
                loggers.push(WriteLogger::new(level, config, rotating));
            }
            Err(error) => {
                warning = Some(format!(
                    "log_file_unavailable path={} error=\"{error}\"",
                    path.display()
                ))
            }
        }
    }
    CombinedLogger::init(loggers)?;
    Ok(warning)
}
