//! Reading logs: lines of at most `MAX_LINE_BYTES` (anything longer is not ours: consumed to
//! its end and counted once, never held), streamed into an `Analyzer`, and the time of a text's
//! first line of ours (for putting rotated files in order). The line format itself is
//! `dreamframe::events::parse`.
//!
//! Runs on the caller's thread; holds one line at a time; fails only when the reader does.

use std::io::{BufRead, Read};

#[cfg(test)]
use dreamframe::events::parse::parse_line;

use crate::analysis::Analyzer;

/// Lines longer than this are not ours (ours are at most a few KiB).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// One line from `read_line`.
#[derive(Debug, PartialEq)]
pub enum LineRead {
    End,
    Text(String),
    /// Longer than `MAX_LINE_BYTES`: not ours, consumed to its end and counted once.
    TooLong,
}

/// Reads the next line from `reader`, holding at most `MAX_LINE_BYTES` of it.
pub fn read_line(reader: &mut impl std::io::BufRead) -> std::io::Result<LineRead> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(LineRead::End);
    }
    if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
        loop {
            let buffer = reader.fill_buf()?;
            if buffer.is_empty() {
                break;
            }
            match buffer.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    reader.consume(end + 1);
                    break;
                }
                None => {
                    let length = buffer.len();
                    reader.consume(length);
                }
            }
        }
        return Ok(LineRead::TooLong);
    }
    Ok(LineRead::Text(match String::from_utf8(line) {
        Ok(text) => text,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    }))
}

/// Reads `reader` line by line into `analyzer`, holding at most one line (of at most
/// `MAX_LINE_BYTES`) at a time.
pub fn feed_reader(
    analyzer: &mut Analyzer,
    reader: &mut impl std::io::BufRead,
) -> std::io::Result<()> {
    loop {
        match read_line(reader)? {
            LineRead::End => return Ok(()),
            LineRead::Text(text) => analyzer.feed(&text),
            LineRead::TooLong => analyzer.skip_unreadable(),
        }
    }
}

/// The time of the first line of ours in `text`, for putting whole texts in order (`analyze`).
#[cfg(test)]
pub fn first_time(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| parse_line(line).map(|l| l.time))
}
