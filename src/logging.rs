//! Logging, set up once by `main`: stderr (journald under systemd) and a log file rotated by size
//! (file-rotate), so the disk never fills. Lines are `time [LEVEL] event key=value ...` so tools/
//! can parse them, and each record is exactly one line: line breaks inside a message (a
//! multi-line error, a backtrace) are written as " | ". A log file that can't be opened, or is
//! not a regular file (a FIFO would block start-up until a reader came), is reported and
//! skipped, and a failing write (disk full) is dropped by simplelog: logging never stops the
//! display.

use std::path::Path;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use log::LevelFilter;
use log::{Log, Metadata, Record};
use simplelog::{CombinedLogger, ConfigBuilder, SharedLogger, WriteLogger};

/// Passes records on with their line breaks flattened, so one record is one line.
struct OneLine(Box<CombinedLogger>);

/// `text` on one line: each line break (and the spaces after it) becomes " | ", and any other
/// control character but tab is written as `\u{1b}` (events escape their values already; this
/// catches free text, so no escape sequence reaches a terminal reading the log).
pub(crate) fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim_start)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
        .chars()
        .map(|c| match c {
            c if needs_escape(c) => format!("\\u{{{:x}}}", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

fn needs_escape(c: char) -> bool {
    c.is_control() && c != '\t'
}

impl Log for OneLine {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = match record.args().as_str() {
            Some(text) => std::borrow::Cow::Borrowed(text),
            None => std::borrow::Cow::Owned(record.args().to_string()),
        };
        if !text.chars().any(needs_escape) {
            self.0.log(record);
            return;
        }
        let flat = one_line(&text);
        self.0.log(
            &Record::builder()
                .metadata(record.metadata().clone())
                .args(format_args!("{flat}"))
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Starts logging into stderr and, if given, `file` rotated past `max_bytes` keeping `files` old
/// ones; returns a warning to log if the file could not be opened.
pub(crate) fn init(
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
            .map_or(Ok(()), crate::checked_fs::create_folder)
            .and_then(|_| crate::checked_fs::open_append_regular(path));
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
                warning = Some(
                    crate::events::LogFileUnavailable {
                        path: path.display().to_string(),
                        error: error.to_string(),
                    }
                    .to_string(),
                )
            }
        }
    }
    log::set_boxed_logger(Box::new(OneLine(CombinedLogger::new(loggers))))?;
    log::set_max_level(level);
    Ok(warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_become_separators() {
        assert_eq!(one_line("a\n  b\r\nc\n"), "a | b | c");
        assert_eq!(one_line("plain"), "plain");
        assert_eq!(
            one_line("cfg/evil\x1b[31m\u{9b}2J\tend"),
            "cfg/evil\\u{1b}[31m\\u{9b}2J\tend"
        );
    }
}
