//! The terminal sink: the art in 24-bit colour half-block characters (two pixels per cell), for
//! watching over SSH or on a machine without a framebuffer.
//!
//! `present` only copies the frame into a spare buffer and hands it to the sink's own writer
//! thread; when the writer is still busy with the previous frame (a slow SSH link) the new one
//! is dropped, so the pacer never waits on the terminal. The writer switches to the alternate
//! screen with the cursor hidden, and restores both when the sink is dropped.
//!
//! The terminal is the display: when writing to it fails (a closed pipe, a full disk behind a
//! redirect, a closed stdout) the writer stops and the next `present` returns that error, which
//! ends the run; a terminal that fails its very first write (entering the alternate screen) fails
//! `open`, before any frame is made. Its size is bounded (`MAX_COLUMNS` x `MAX_ROWS`) whatever the
//! terminal reports, and dropping the sink waits at most `STOP_WAIT` for a writer stuck on a
//! blocked output. When the terminal is resized (its size is looked at before each frame; no
//! signal handler) the writer redraws each frame at the new size, resampled from the sink's
//! geometry, which stays as it was opened; a size configured (`display.terminal-columns`/`-rows`) is kept.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use super::Sink;
use crate::frame::pixel_format::PixelFormat;
use crate::frame::Geometry;

pub const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[2J";
pub const RESTORE: &str = "\x1b[0m\x1b[?25h\x1b[?1049l";

use crate::config::{TERMINAL_MAX_COLUMNS as MAX_COLUMNS, TERMINAL_MAX_ROWS as MAX_ROWS};
/// How long dropping the sink waits for the writer to restore the terminal, and `open` for the
/// first write to succeed or fail.
const STOP_WAIT: Duration = Duration::from_secs(1);

pub(crate) struct TerminalSink {
    geometry: Geometry,
    to_writer: Option<SyncSender<Vec<u8>>>,
    spares: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<()>>,
    /// Why the writer stopped, once it has.
    failure: Arc<Mutex<Option<std::io::Error>>>,
    /// Disconnected once the writer has finished.
    finished: Receiver<()>,
}

/// The terminal's size in cells from stdout, if it is a terminal.
fn terminal_size() -> Option<(u32, u32)> {
    crate::sys::tty::size(libc::STDOUT_FILENO).filter(|&(columns, rows)| columns > 0 && rows > 1)
}

impl TerminalSink {
    /// `size` in character cells; `None` asks the terminal (80x24 when stdout is not one).
    pub(crate) fn open(size: Option<(u32, u32)>) -> anyhow::Result<Self> {
        let follow = size.is_none();
        let (columns, rows) = size.or_else(terminal_size).unwrap_or((80, 24));
        let (columns, rows) = (columns.clamp(1, MAX_COLUMNS), rows.clamp(2, MAX_ROWS));
        let geometry = cells_geometry((columns, rows));
        let (to_writer, from_sink) = mpsc::sync_channel::<Vec<u8>>(1);
        let (spare_tx, spares) = mpsc::sync_channel::<Vec<u8>>(2);
        for _ in 0..2 {
            spare_tx
                .send(vec![0; geometry.frame_bytes()])
                .expect("spare channel has room for two buffers");
        }
        let failure = Arc::new(Mutex::new(None));
        let (finished_tx, finished) = mpsc::channel::<()>();
        let (entered_tx, entered) = mpsc::sync_channel::<std::io::Result<()>>(1);
        let writer = {
            let failure = Arc::clone(&failure);
            std::thread::Builder::new()
                .name("terminal".into())
                .spawn(move || {
                    let _finished = finished_tx;
                    let mut out = std::io::stdout().lock();
                    let entering = out.write_all(ENTER.as_bytes()).and_then(|()| out.flush());
                    let ok = entering.is_ok();
                    let _ = entered_tx.send(entering);
                    if !ok {
                        return;
                    }
                    let size = || terminal_size().filter(|_| follow);
                    if let Err(error) = write_frames(&mut out, geometry, from_sink, spare_tx, size)
                    {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                    }
                })
                .context("cannot start the terminal writer thread")?
        };
        // A terminal that can't take its first bytes (stdout on /dev/full, a closed pipe) is no
        // display: say so now, not at the first frame. A blocked one is left to the writer.
        match entered.recv_timeout(STOP_WAIT) {
            Ok(Err(error)) => {
                return Err(
                    anyhow::Error::new(error).context("cannot write to the terminal (stdout)")
                )
            }
            Ok(Ok(())) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the terminal writer thread ended before its first write")
            }
        }
        log::info!("{}", crate::events::Terminal { columns, rows });
        Ok(Self {
            geometry,
            to_writer: Some(to_writer),
            spares,
            writer: Some(writer),
            failure,
            finished,
        })
    }

    /// The error that stopped the writer.
    fn writer_failure(&self) -> anyhow::Error {
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(error) => anyhow::Error::new(error).context("cannot write to the terminal"),
            None => anyhow::anyhow!("the terminal writer thread ended"),
        }
    }
}

/// The frame geometry for a terminal of `(columns, rows)` cells, bounded; one row is left free
/// so the last line never scrolls the screen.
fn cells_geometry((columns, rows): (u32, u32)) -> Geometry {
    let (columns, rows) = (columns.clamp(1, MAX_COLUMNS), rows.clamp(2, MAX_ROWS));
    Geometry::packed(columns, (rows - 1).max(1) * 2, PixelFormat::BGR888)
}

/// Draws frames (after the alternate screen was entered) until the sink goes (then restores the
/// terminal) or a write fails. `size` is the terminal's size now, when it is to be followed.
fn write_frames(
    out: &mut impl Write,
    geometry: Geometry,
    frames: Receiver<Vec<u8>>,
    spares: SyncSender<Vec<u8>>,
    mut size: impl FnMut() -> Option<(u32, u32)>,
) -> std::io::Result<()> {
    let mut text = String::new();
    let mut shown = geometry;
    let mut resized = Vec::new();
    while let Ok(frame) = frames.recv() {
        let now = size().map_or(shown, cells_geometry);
        if now != shown {
            // Resized: what was drawn at the old size would stay around the new picture.
            out.write_all(b"\x1b[2J")?;
            shown = now;
        }
        if shown == geometry {
            encode_half_blocks(&geometry, &frame, &mut text);
        } else {
            resample(&geometry, &frame, &shown, &mut resized);
            encode_half_blocks(&shown, &resized, &mut text);
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        let _ = spares.send(frame);
    }
    out.write_all(RESTORE.as_bytes())?;
    out.flush()
}

/// `frame` (3 bytes a pixel, `from`'s layout) resized to `to` by nearest neighbour: half-block
/// cells are too coarse for a filter to show.
fn resample(from: &Geometry, frame: &[u8], to: &Geometry, out: &mut Vec<u8>) {
    out.clear();
    out.resize(to.frame_bytes(), 0);
    for y in 0..to.height as usize {
        let source_y = y * from.height as usize / to.height as usize;
        for x in 0..to.width as usize {
            let source_x = x * from.width as usize / to.width as usize;
            let i = source_y * from.stride + source_x * 3;
            let o = y * to.stride + x * 3;
            out[o..o + 3].copy_from_slice(&frame[i..i + 3]);
        }
    }
}

/// Two pixel rows per text row: the upper pixel as the foreground of '▀', the lower as
/// background; each row placed at its screen line (for the alternate screen).
pub(crate) fn encode_half_blocks(geometry: &Geometry, frame: &[u8], text: &mut String) {
    encode_rows(geometry, frame, text, true)
}

/// The same picture as lines of text, one after another (to print into a terminal's scrollback).
pub(crate) fn encode_half_block_lines(geometry: &Geometry, frame: &[u8], text: &mut String) {
    encode_rows(geometry, frame, text, false)
}

fn encode_rows(geometry: &Geometry, frame: &[u8], text: &mut String, positioned: bool) {
    text.clear();
    let width = geometry.width as usize;
    let pixel = |x: usize, y: usize| {
        let i = y * geometry.stride + x * 3;
        (frame[i], frame[i + 1], frame[i + 2])
    };
    for row in 0..geometry.height as usize / 2 {
        if positioned {
            let _ = write!(text, "\x1b[{};1H", row + 1);
        } else if row > 0 {
            text.push_str("\x1b[0m\n");
        }
        let mut last = None;
        for x in 0..width {
            let colours = (pixel(x, row * 2), pixel(x, row * 2 + 1));
            if last != Some(colours) {
                let ((r, g, b), (br, bg, bb)) = colours;
                let _ = write!(text, "\x1b[38;2;{r};{g};{b};48;2;{br};{bg};{bb}m");
                last = Some(colours);
            }
            text.push('▀');
        }
    }
    text.push_str("\x1b[0m");
}

impl Sink for TerminalSink {
    fn name(&self) -> &'static str {
        "terminal"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn present(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let mut spare = match self.spares.try_recv() {
            Ok(spare) => spare,
            Err(TryRecvError::Empty) => return Ok(()), // the writer is behind: drop this frame
            Err(TryRecvError::Disconnected) => return Err(self.writer_failure()),
        };
        let length = spare.len();
        spare.copy_from_slice(&frame[..length]);
        let to_writer = self
            .to_writer
            .as_ref()
            .context("terminal writer already stopped")?;
        match to_writer.try_send(spare) {
            Ok(()) | Err(TrySendError::Full(_)) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(self.writer_failure()),
        }
    }
}

impl Drop for TerminalSink {
    fn drop(&mut self) {
        self.to_writer.take();
        // A writer blocked on an output nobody reads would never return: wait a moment only.
        if let Err(mpsc::RecvTimeoutError::Disconnected) = self.finished.recv_timeout(STOP_WAIT) {
            if let Some(writer) = self.writer.take() {
                let _ = writer.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_terminal_ends_the_writer_with_the_error() {
        let geometry = Geometry::packed(2, 2, PixelFormat::BGR888);
        let (_to_writer, frames) = mpsc::sync_channel(1);
        let (spares, _) = mpsc::sync_channel(1);
        _to_writer.send(vec![0; 12]).unwrap();
        let error = write_frames(&mut Failing, geometry, frames, spares, || None).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn a_resized_terminal_gets_the_picture_at_its_new_size() {
        // Opened at 4 columns x 3 rows: a 4x4 picture, left half red, right half blue.
        let geometry = cells_geometry((4, 3));
        assert_eq!((geometry.width, geometry.height), (4, 4));
        let mut frame = vec![0; geometry.frame_bytes()];
        for y in 0..4 {
            for x in 0..4 {
                let i = y * geometry.stride + x * 3;
                frame[i..i + 3].copy_from_slice(if x < 2 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        let (to_writer, frames) = mpsc::sync_channel(2);
        let (spares, _spares) = mpsc::sync_channel(2);
        to_writer.send(frame.clone()).unwrap();
        to_writer.send(frame).unwrap();
        drop(to_writer);
        // The terminal shrinks to 2 columns x 2 rows before the second frame.
        let mut sizes = [None, Some((2, 2))].into_iter();
        let mut out = Vec::new();
        write_frames(&mut out, geometry, frames, spares, || {
            sizes.next().flatten()
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let (first, second) = text.split_once("\x1b[2J").expect("cleared at the resize");
        assert_eq!(first.matches('▀').count(), 4 * 2, "4 columns, 2 rows");
        assert_eq!(second.matches('▀').count(), 2, "2 columns, 1 row");
        assert!(
            second.contains("38;2;255;0;0") && second.contains("38;2;0;0;255"),
            "both halves survive the shrink: {second:?}"
        );
    }

    #[test]
    fn half_blocks_carry_both_pixels_colours() {
        let geometry = Geometry::packed(2, 2, PixelFormat::BGR888);
        let frame = [255, 0, 0, 255, 0, 0, 0, 0, 255, 0, 0, 255];
        let mut text = String::new();
        encode_half_blocks(&geometry, &frame, &mut text);
        assert_eq!(text, "\x1b[1;1H\x1b[38;2;255;0;0;48;2;0;0;255m▀▀\x1b[0m");
    }
}
