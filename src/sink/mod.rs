//! Sinks: where finished frames go. The pacer thread owns the sink and calls `present` once per
//! new frame, with a buffer already in the sink's own pixel format, size and stride.
//!
//! `present` must be quick and must not block: no file I/O that can stall, no waiting on other
//! threads (a sink that needs slow output, like the terminal, hands the frame to its own thread
//! and drops frames it can't keep up with). An error from `present` ends the run; dropping the
//! sink restores whatever it changed (console mode, terminal state).
//!
//! A sink that shows frames on the display's vertical blank (drm) says so through `refresh`;
//! `present` then only queues the frame, and `take_flip` reports when each one really went on
//! screen.

pub(crate) mod drm;
pub(crate) mod fbdev;
/// Test double: records what was presented. Not in the shipped binary.
#[cfg(any(test, feature = "test-doubles"))]
pub(crate) mod memory;
pub(crate) mod null;
pub(crate) mod terminal;

use std::time::{Duration, Instant};

use crate::config::{DisplayConfig, SinkKind};
use crate::frame::{Geometry, PixelFormat};

/// A queued frame that went on screen (a completed page flip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flip {
    /// Which `present` it was, counting from 0.
    pub number: u64,
    /// When it went on screen (the vertical blank's timestamp).
    pub at: Instant,
    /// `at` is a real vertical blank (false: the driver completes flips at once, without a
    /// vblank interrupt, as QEMU's bochs does; `at` is then when the kernel took the frame).
    pub vblank: bool,
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
    /// The display's refresh period, for sinks whose frames go up on its vertical blank; `None`
    /// for sinks whose frame is visible when `present` returns.
    fn refresh(&self) -> Option<Duration> {
        None
    }
    /// Called at every pacer deadline, whether or not a frame is presented (held frames, the
    /// schedule's blank): for upkeep that must not wait for the next frame (the drm sink's
    /// hotplug check). Must be as quick as `present`; an error ends the run like one of its.
    fn maintain(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// The next completed flip not yet taken, oldest first (vertical-blank sinks only).
    fn take_flip(&mut self) -> Option<Flip> {
        None
    }
}

/// Opens the configured sink. The null sink shows nothing at `null_size` (a benchmark's screen).
pub(crate) fn open(config: &DisplayConfig, null_size: (u32, u32)) -> anyhow::Result<Box<dyn Sink>> {
    let drm = || -> anyhow::Result<Box<dyn Sink>> { Ok(Box::new(drm::DrmSink::open(config)?)) };
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
            choose_auto(drm, fbdev, std::io::stdout().is_terminal(), terminal)?
        }
        SinkKind::Drm => drm()?,
        SinkKind::Fbdev => fbdev()?,
        SinkKind::Terminal => terminal()?,
        SinkKind::Null => Box::new(null::NullSink::new(Geometry::packed(
            null_size.0,
            null_size.1,
            PixelFormat::XRGB8888,
        ))),
    })
}

/// `display.sink = "auto"`: KMS where a card has a connected screen and we can be its master;
/// else the framebuffer if it opens; else the terminal if stdout is one; else both errors
/// (under systemd, where stdout is the journal, a box without either fails clearly).
fn choose_auto(
    drm: impl FnOnce() -> anyhow::Result<Box<dyn Sink>>,
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
    let one_line = |error: &anyhow::Error| crate::logging::one_line(&format!("{error:#}"));
    let drm_error = match drm() {
        Ok(sink) => {
            chosen(
                "drm",
                "a DRM card has a connected screen and we are its master".into(),
            );
            return Ok(sink);
        }
        Err(error) => error,
    };
    match fbdev() {
        Ok(sink) => {
            chosen(
                "fbdev",
                format!("the framebuffer opened; no KMS: {}", one_line(&drm_error)),
            );
            Ok(sink)
        }
        Err(error) if stdout_is_terminal => {
            let sink = terminal()?;
            chosen("terminal", terminal_reason(&drm_error, &error));
            Ok(sink)
        }
        Err(error) => Err(error.context(format!(
            "display.sink = \"auto\": no KMS screen ({}), no framebuffer, and stdout is not a \
             terminal for the terminal sink",
            one_line(&drm_error)
        ))),
    }
}

/// Why `auto` took the terminal, without the errors' advice to take it (it was taken).
fn terminal_reason(drm_error: &anyhow::Error, fbdev_error: &anyhow::Error) -> String {
    let without_advice = |error: &anyhow::Error| {
        crate::logging::one_line(&format!("{error:#}"))
            .split("; ")
            .filter(|part| !part.contains("--sink terminal"))
            .map(|part| {
                part.split(", or ")
                    .filter(|clause| !clause.contains("--sink terminal"))
                    .collect::<Vec<_>>()
                    .join(", or ")
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!(
        "stdout is a terminal; no KMS: {}; no framebuffer: {}",
        without_advice(drm_error),
        without_advice(fbdev_error)
    )
}

#[cfg(test)]
mod auto_tests {
    use super::*;

    #[test]
    fn choosing_the_terminal_does_not_advise_choosing_the_terminal() {
        let drm = anyhow::anyhow!("no DRM card under /dev/dri (no KMS driver loaded)");
        let fbdev = anyhow::anyhow!(
            "cannot open framebuffer /dev/fb0: No such file or directory; `--sink terminal` shows the art in this terminal"
        );
        let reason = terminal_reason(&drm, &fbdev);
        assert_eq!(
            reason,
            "stdout is a terminal; no KMS: no DRM card under /dev/dri (no KMS driver loaded); no framebuffer: cannot open framebuffer /dev/fb0: No such file or directory"
        );
        let fbdev = anyhow::anyhow!(
            "cannot open /dev/fb0: Permission denied: join the video group, or watch the art in this terminal with `--sink terminal`"
        );
        assert!(!terminal_reason(&drm, &fbdev).contains("--sink terminal"));
    }

    fn null() -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(null::NullSink::new(Geometry::packed(
            4,
            2,
            PixelFormat::XRGB8888,
        ))))
    }

    fn no_kms() -> anyhow::Result<Box<dyn Sink>> {
        anyhow::bail!("no DRM card under /dev/dri (no KMS driver loaded)")
    }

    fn no_framebuffer() -> anyhow::Result<Box<dyn Sink>> {
        anyhow::bail!("cannot open framebuffer /dev/fb0: No such file or directory")
    }

    fn must_not_open() -> anyhow::Result<Box<dyn Sink>> {
        panic!("must not be tried")
    }

    #[test]
    fn kms_wins_over_the_framebuffer_and_the_terminal() {
        assert!(choose_auto(null, must_not_open, true, must_not_open).is_ok());
    }

    #[test]
    fn without_kms_a_framebuffer_that_opens_wins_even_in_a_terminal() {
        assert!(choose_auto(no_kms, null, true, must_not_open).is_ok());
    }

    #[test]
    fn without_either_a_terminal_gets_the_art() {
        assert!(choose_auto(no_kms, no_framebuffer, true, null).is_ok());
    }

    #[test]
    fn without_any_the_errors_stand() {
        let Err(error) = choose_auto(no_kms, no_framebuffer, false, must_not_open) else {
            panic!("opened a sink without a screen or a terminal");
        };
        let error = format!("{error:#}");
        assert!(error.contains("display.sink = \"auto\""), "{error}");
        assert!(error.contains("no DRM card under /dev/dri"), "{error}");
        assert!(
            error.contains("cannot open framebuffer /dev/fb0"),
            "{error}"
        );
    }
}
