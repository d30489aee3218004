//! Sinks: where finished frames go. The pacer thread owns the sink and calls `present` once per
//! new frame, with a buffer already in the sink's own pixel format, size and stride.
//!
//! `present` must be quick and must not block: no file I/O that can stall, no waiting on other
//! threads (a sink that needs slow output, like the terminal, hands the frame to its own thread
//! and drops frames it can't keep up with). An error from `present` ends the run; dropping the
//! sink restores whatever it changed (console mode, terminal state).

pub mod fbdev;
/// Test double: records what was presented. Not in the shipped binary.
#[cfg(any(test, feature = "test-doubles"))]
pub mod memory;
pub mod null;
pub mod terminal;

use crate::config::{DisplayConfig, SinkKind};
use crate::render::pixel_format::PixelFormat;

/// The screen as the renderer must fill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    /// Bytes from one row's start to the next's (the framebuffer's line_length).
    pub stride: usize,
    pub format: PixelFormat,
}

impl Geometry {
    /// A geometry whose rows have no padding.
    pub fn packed(width: u32, height: u32, format: PixelFormat) -> Self {
        Self {
            width,
            height,
            stride: width as usize * format.bytes_per_pixel(),
            format,
        }
    }

    pub fn frame_bytes(&self) -> usize {
        self.stride * self.height as usize
    }
}

pub trait Sink: Send {
    fn name(&self) -> &'static str;
    fn geometry(&self) -> Geometry;
    /// Shows one frame of `geometry().frame_bytes()` bytes.
    fn present(&mut self, frame: &[u8]) -> anyhow::Result<()>;
    /// The device as probed at start, for status.json (the fbdev sink's framebuffer); `None`
    /// for sinks without one.
    fn device_report(&self) -> Option<serde_json::Value> {
        None
    }
    /// Powers the screen down (`true`) or up, for the night schedule. Sinks without a screen
    /// to power down do nothing.
    fn set_blanked(&mut self, _blanked: bool) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Opens the configured sink. The null sink shows nothing at `null_size` (a benchmark's screen).
pub fn open(config: &DisplayConfig, null_size: (u32, u32)) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match config.sink {
        SinkKind::Fbdev => Box::new(fbdev::FbdevSink::open(
            &config.framebuffer,
            config.console.as_deref(),
        )?),
        SinkKind::Terminal => Box::new(terminal::TerminalSink::open(config.terminal_size)?),
        SinkKind::Null => Box::new(null::NullSink::new(Geometry::packed(
            null_size.0,
            null_size.1,
            PixelFormat::XRGB8888,
        ))),
    })
}
