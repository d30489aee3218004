//! Writing the commands' output (reports, probe lines, `--check-config`, bench figures) to
//! stdout, which may be a pipe whose reader has left (`| head -1`) or a full device. Input: the
//! text; output: the text on stdout, flushed. Failure: an error naming stdout and the cause
//! (EPIPE, ENOSPC), for the caller to print on stderr and exit non-zero; never a panic, as
//! `print!` would.

use std::io::Write as _;

use anyhow::Context as _;

/// Writes `text` to stdout and flushes it.
pub fn write(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Writes `text` and a newline to stdout.
pub fn line(text: impl std::fmt::Display) -> anyhow::Result<()> {
    write(&format!("{text}\n"))
}
