//! Logging, set up once by `main`: stderr (journald under systemd) and a log file in the output
//! folder. Lines are `time [LEVEL] event key=value ...` so tools/ can parse them. A log file
//! that can't be opened is reported and skipped: logging must never stop the display.

use std::fs::OpenOptions;
use std::path::Path;

use log::LevelFilter;
use simplelog::{CombinedLogger, ConfigBuilder, SharedLogger, WriteLogger};

/// Starts logging; returns a warning to log if the file could not be opened.
pub fn init(level: LevelFilter, file: Option<&Path>) -> anyhow::Result<Option<String>> {
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
            Ok(file) => loggers.push(WriteLogger::new(level, config, file)),
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
