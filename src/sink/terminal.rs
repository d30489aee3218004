//! The terminal sink: the art in 24-bit colour half-block characters (two pixels per cell), for
//! watching over SSH or on a machine without a framebuffer.
//!
//! `present` only copies the frame into a spare buffer and hands it to the sink's own writer
//! thread; when the writer is still busy with the previous frame (a slow SSH link) the new one
//! is dropped, so the pacer never waits on the terminal. The writer switches to the alternate
//! screen with the cursor hidden, and restores both when the sink is dropped.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use anyhow::Context;

use super::{Geometry, Sink};
use crate::pixel_format::PixelFormat;

pub const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[2J";
pub const RESTORE: &str = "\x1b[0m\x1b[?25h\x1b[?1049l";

pub struct TerminalSink {
    geometry: Geometry,
    to_writer: Option<SyncSender<Vec<u8>>>,
    spares: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<()>>,
}

/// The terminal's size in cells from stdout, if it is a terminal.
fn terminal_size() -> Option<(u32, u32)> {
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize struct, which lives across the call.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0 && size.ws_row > 1).then_some((size.ws_col as u32, size.ws_row as u32))
}

impl TerminalSink {
    /// `size` in character cells; `None` asks the terminal (80x24 when stdout is not one).
    pub fn open(size: Option<(u32, u32)>) -> anyhow::Result<Self> {
        let (columns, rows) = size.or_else(terminal_size).unwrap_or((80, 24));
        // One row is left free so the last line never scrolls the screen.
        let geometry = Geometry::packed(columns, (rows - 1).max(1) * 2, PixelFormat::BGR888);
        let (to_writer, from_sink) = mpsc::sync_channel::<Vec<u8>>(1);
        let (spare_tx, spares) = mpsc::sync_channel::<Vec<u8>>(2);
        for _ in 0..2 {
            spare_tx
                .send(vec![0; geometry.frame_bytes()])
                .expect("spare channel has room for two buffers");
        }
        let writer = std::thread::Builder::new()
            .name("terminal".into())
            .spawn(move || write_frames(geometry, from_sink, spare_tx))
            .context("cannot start the terminal writer thread")?;
        log::info!("terminal columns={columns} rows={rows}");
        Ok(Self {
            geometry,
            to_writer: Some(to_writer),
            spares,
            writer: Some(writer),
        })
    }
}

fn write_frames(geometry: Geometry, frames: Receiver<Vec<u8>>, spares: SyncSender<Vec<u8>>) {
    let stdout = std::io::stdout();
    let mut text = String::with_capacity(geometry.frame_bytes() * 12);
    let _ = stdout.lock().write_all(ENTER.as_bytes());
    while let Ok(frame) = frames.recv() {
        encode_half_blocks(&geometry, &frame, &mut text);
        let mut out = stdout.lock();
        // A closed terminal (SSH gone) is not a reason to stop the display.
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        let _ = spares.send(frame);
    }
    let mut out = stdout.lock();
    let _ = out.write_all(RESTORE.as_bytes()).and_then(|_| out.flush());
}

/// Two pixel rows per text row: the upper pixel as the foreground of '▀', the lower as background.
pub fn encode_half_blocks(geometry: &Geometry, frame: &[u8], text: &mut String) {
    text.clear();
    let width = geometry.width as usize;
    let pixel = |x: usize, y: usize| {
        let i = y * geometry.stride + x * 3;
        (frame[i], frame[i + 1], frame[i + 2])
    };
    for row in 0..geometry.height as usize / 2 {
        let _ = write!(text, "\x1b[{};1H", row + 1);
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
        let Ok(mut spare) = self.spares.try_recv() else {
            return Ok(()); // the writer is behind: drop this frame
        };
        let length = spare.len();
        spare.copy_from_slice(&frame[..length]);
        let to_writer = self
            .to_writer
            .as_ref()
            .context("terminal writer already stopped")?;
        match to_writer.try_send(spare) {
            Ok(()) | Err(TrySendError::Full(_)) => Ok(()),
            Err(TrySendError::Disconnected(_)) => anyhow::bail!("terminal writer thread ended"),
        }
    }
}

impl Drop for TerminalSink {
    fn drop(&mut self) {
        self.to_writer.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_blocks_carry_both_pixels_colours() {
        let geometry = Geometry::packed(2, 2, PixelFormat::BGR888);
        let frame = [255, 0, 0, 255, 0, 0, 0, 0, 255, 0, 0, 255];
        let mut text = String::new();
        encode_half_blocks(&geometry, &frame, &mut text);
        assert_eq!(text, "\x1b[1;1H\x1b[38;2;255;0;0;48;2;0;0;255m▀▀\x1b[0m");
    }
}
