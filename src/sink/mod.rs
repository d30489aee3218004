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
    let fbdev = || -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(fbdev::FbdevSink::open(
            &config.framebuffer,
            config.console.as_deref(),
        )?))
    };
    let terminal = || -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(terminal::TerminalSink::open(
            config.terminal_size,
        )?))
    };
    Ok(match config.sink {
        SinkKind::Auto => {
            use std::io::IsTerminal;
            choose_auto(fbdev, std::io::stdout().is_terminal(), terminal)?
        }
        SinkKind::Fbdev => fbdev()?,
        SinkKind::Terminal => terminal()?,
        SinkKind::Null => Box::new(null::NullSink::new(Geometry::packed(
            null_size.0,
            null_size.1,
            PixelFormat::XRGB8888,
        ))),
    })
}

/// `display.sink = "auto"`: the framebuffer if it opens; else the terminal if stdout is one;
/// else the framebuffer's error (under systemd, where stdout is the journal, nothing changes).
fn choose_auto(
    fbdev: impl FnOnce() -> anyhow::Result<Box<dyn Sink>>,
    stdout_is_terminal: bool,
    terminal: impl FnOnce() -> anyhow::Result<Box<dyn Sink>>,
) -> anyhow::Result<Box<dyn Sink>> {
    let chosen = |sink: &str, reason: String| {
        log::info!(
            "{}",
            crate::events::SinkChosen {
                sink: sink.into(),
                reason
            }
        );
    };
    match fbdev() {
        Ok(sink) => {
            chosen("fbdev", "the framebuffer opened".into());
            Ok(sink)
        }
        Err(error) if stdout_is_terminal => {
            let sink = terminal()?;
            chosen(
                "terminal",
                format!("stdout is a terminal and {}", crate::logging::one_line(&format!("{error:#}"))),
            );
            Ok(sink)
        }
        Err(error) => Err(error.context(
            "display.sink = \"auto\": no framebuffer, and stdout is not a terminal for the terminal sink",
        )),
    }
}

#[cfg(test)]
mod auto_tests {
    use super::*;

    fn null() -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(null::NullSink::new(Geometry::packed(
            4,
            2,
            PixelFormat::XRGB8888,
        ))))
    }

    fn no_framebuffer() -> anyhow::Result<Box<dyn Sink>> {
        anyhow::bail!("cannot open framebuffer /dev/fb0: No such file or directory")
    }

    #[test]
    fn a_framebuffer_that_opens_wins_even_in_a_terminal() {
        let terminal = || -> anyhow::Result<Box<dyn Sink>> { panic!("terminal must not open") };
        assert!(choose_auto(null, true, terminal).is_ok());
    }

    #[test]
    fn without_a_framebuffer_a_terminal_gets_the_art() {
        assert!(choose_auto(no_framebuffer, true, null).is_ok());
    }

    #[test]
    fn without_either_the_framebuffer_error_stands() {
        let terminal = || -> anyhow::Result<Box<dyn Sink>> { panic!("terminal must not open") };
        let Err(error) = choose_auto(no_framebuffer, false, terminal) else {
            panic!("opened a sink without a framebuffer or a terminal");
        };
        let error = format!("{error:#}");
        assert!(error.contains("display.sink = \"auto\""), "{error}");
        assert!(
            error.contains("cannot open framebuffer /dev/fb0"),
            "{error}"
        );
    }
}
