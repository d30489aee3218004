//! The fbdev sink: frames copied into the mapped /dev/fbN, in the pixel format and stride the
//! device reports, with the console taken into graphics mode (see `console`).
//!
//! Needs read/write access to the framebuffer (root or the `video` group) and, for the console,
//! to the VT (root or the `tty` group). A console that can't be taken is a warning, not an
//! error: the art still shows, the cursor may blink over it.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{bail, Context};
use framebuffer::Framebuffer;

use super::{Geometry, Sink};
use crate::console::ConsoleGuard;
use crate::pixel_format::{Channel, PixelFormat};

/// FB_VISUAL_TRUECOLOR from <linux/fb.h>.
const FB_VISUAL_TRUECOLOR: u32 = 2;

pub struct FbdevSink {
    framebuffer: Framebuffer,
    geometry: Geometry,
    /// Byte offset of the visible page in the mapping.
    visible_offset: usize,
    // Dropped after the framebuffer: the console repaints only once we are done drawing.
    _console: Option<ConsoleGuard>,
}

fn open_hint(path: &Path, error: &std::io::Error) -> String {
    let path = path.display();
    match error.kind() {
        ErrorKind::PermissionDenied => format!(
            "cannot open framebuffer {path}: permission denied. Add this user to the `video` group \
             (`sudo usermod -aG video $USER`, then log in again), run as root, or watch the art in \
             this terminal with `--sink terminal`"
        ),
        ErrorKind::NotFound => format!(
            "cannot open framebuffer {path}: no such device. This machine has no framebuffer there \
             (no fbdev driver; on NVIDIA boot with `nvidia-drm.modeset=1 nvidia-drm.fbdev=1`), set \
             `display.framebuffer`, or watch the art in this terminal with `--sink terminal`"
        ),
        _ => format!("cannot open framebuffer {path}: {error}; `--sink terminal` shows the art in this terminal"),
    }
}

impl FbdevSink {
    pub fn open(path: &Path, console: Option<&Path>) -> anyhow::Result<Self> {
        // Opened once by hand first: the framebuffer crate flattens io errors to strings, and the
        // kind (permission, missing device) decides the advice.
        if let Err(error) = OpenOptions::new().read(true).write(true).open(path) {
            bail!(open_hint(path, &error));
        }
        let framebuffer = Framebuffer::new(path)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot map framebuffer {}", path.display()))?;
        let var = &framebuffer.var_screen_info;
        let fix = &framebuffer.fix_screen_info;
        let channel = |b: &framebuffer::Bitfield| Channel {
            offset: b.offset,
            length: b.length,
        };
        let format = PixelFormat::new(
            var.bits_per_pixel,
            channel(&var.red),
            channel(&var.green),
            channel(&var.blue),
            channel(&var.transp),
        );
        let id = String::from_utf8_lossy(&fix.id)
            .trim_end_matches('\0')
            .to_string();
        if fix.visual != FB_VISUAL_TRUECOLOR {
            bail!(
                "framebuffer {} ({id}) uses visual {}, only truecolor (2) is supported",
                path.display(),
                fix.visual
            );
        }
        format.validate().with_context(|| {
            format!(
                "framebuffer {} ({id}) reports an unsupported pixel format {format}",
                path.display()
            )
        })?;
        let geometry = Geometry {
            width: var.xres,
            height: var.yres,
            stride: fix.line_length as usize,
            format,
        };
        let visible_offset = var.yoffset as usize * geometry.stride
            + var.xoffset as usize * format.bytes_per_pixel();
        if visible_offset + geometry.frame_bytes() > framebuffer.frame.len() {
            bail!(
                "framebuffer {} ({id}) maps {} bytes, too few for {}x{} at stride {} and offset {visible_offset}",
                path.display(),
                framebuffer.frame.len(),
                geometry.width,
                geometry.height,
                geometry.stride
            );
        }
        log::info!(
            "framebuffer path={} id=\"{id}\" width={} height={} virtual_width={} virtual_height={} bpp={} format=\"{format}\" line_length={}",
            path.display(),
            var.xres,
            var.yres,
            var.xres_virtual,
            var.yres_virtual,
            var.bits_per_pixel,
            fix.line_length
        );
        let console = console.and_then(|console| match ConsoleGuard::take(console) {
            Ok(guard) => Some(guard),
            Err(error) => {
                log::warn!("console_unavailable error=\"{error:#}\": the console cursor and text may show over the art");
                None
            }
        });
        Ok(Self {
            framebuffer,
            geometry,
            visible_offset,
            _console: console,
        })
    }
}

impl Sink for FbdevSink {
    fn name(&self) -> &'static str {
        "fbdev"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn present(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let length = self.geometry.frame_bytes();
        self.framebuffer.frame[self.visible_offset..self.visible_offset + length]
            .copy_from_slice(&frame[..length]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_framebuffer_explains_how_to_fix_it() {
        let error = FbdevSink::open(Path::new("/nonexistent/fb9"), None)
            .err()
            .expect("no device");
        let text = format!("{error:#}");
        assert!(
            text.contains("/nonexistent/fb9") && text.contains("--sink terminal"),
            "{text}"
        );
    }
}
