//! The screen as the renderer must fill it: size, row stride and pixel format. Pure data, shared
//! by the sinks (which report it), the renderer (which fills it) and status.

use super::PixelFormat;

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
