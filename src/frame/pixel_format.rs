//! Pixel formats of a framebuffer, as the kernel reports them (bits per pixel and each channel's
//! bit offset and length), and packing of RGB8 into them.
//!
//! Any truecolor layout of 16, 24 or 32 bits per pixel with channels of 1 to 8 bits is accepted:
//! XRGB8888, ARGB8888, XBGR8888, RGB888, BGR888, RGB565, BGR565, ... Pixels are stored in the
//! CPU's byte order (little-endian on every target this runs on). Pure functions; no thread.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Channel {
    pub offset: u32,
    pub length: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PixelFormat {
    pub bits_per_pixel: u32,
    pub red: Channel,
    pub green: Channel,
    pub blue: Channel,
    /// Alpha; length 0 when the format has none.
    pub transp: Channel,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PixelFormatError {
    #[error("{0} bits per pixel is not supported (allowed: 16, 24, 32)")]
    BitsPerPixel(u32),
    #[error("{name} channel at offset {offset} length {length} is not supported (allowed: length 1 to 8 within {bits} bits)")]
    Channel {
        name: &'static str,
        offset: u32,
        length: u32,
        bits: u32,
    },
    #[error("channels overlap in {0}")]
    Overlap(PixelFormat),
}

const fn channel(offset: u32, length: u32) -> Channel {
    Channel { offset, length }
}

const NO_ALPHA: Channel = channel(0, 0);

impl PixelFormat {
    pub const XRGB8888: Self =
        Self::new(32, channel(16, 8), channel(8, 8), channel(0, 8), NO_ALPHA);
    pub const ARGB8888: Self = Self::new(
        32,
        channel(16, 8),
        channel(8, 8),
        channel(0, 8),
        channel(24, 8),
    );
    pub const XBGR8888: Self =
        Self::new(32, channel(0, 8), channel(8, 8), channel(16, 8), NO_ALPHA);
    /// Bytes in memory: blue, green, red.
    pub const RGB888: Self = Self::new(24, channel(16, 8), channel(8, 8), channel(0, 8), NO_ALPHA);
    /// Bytes in memory: red, green, blue (what the terminal sink uses).
    pub const BGR888: Self = Self::new(24, channel(0, 8), channel(8, 8), channel(16, 8), NO_ALPHA);
    pub const RGB565: Self = Self::new(16, channel(11, 5), channel(5, 6), channel(0, 5), NO_ALPHA);
    pub const BGR565: Self = Self::new(16, channel(0, 5), channel(5, 6), channel(11, 5), NO_ALPHA);

    pub const fn new(
        bits_per_pixel: u32,
        red: Channel,
        green: Channel,
        blue: Channel,
        transp: Channel,
    ) -> Self {
        Self {
            bits_per_pixel,
            red,
            green,
            blue,
            transp,
        }
    }

    pub fn bytes_per_pixel(&self) -> usize {
        self.bits_per_pixel as usize / 8
    }

    pub fn validate(&self) -> Result<(), PixelFormatError> {
        let bits = self.bits_per_pixel;
        if !matches!(bits, 16 | 24 | 32) {
            return Err(PixelFormatError::BitsPerPixel(bits));
        }
        let mut used = 0u64;
        for (name, c) in [
            ("red", self.red),
            ("green", self.green),
            ("blue", self.blue),
            ("alpha", self.transp),
        ] {
            if name == "alpha" && c.length == 0 {
                continue;
            }
            if c.length == 0 || c.length > 8 || c.offset + c.length > bits {
                return Err(PixelFormatError::Channel {
                    name,
                    offset: c.offset,
                    length: c.length,
                    bits,
                });
            }
            let mask = ((1u64 << c.length) - 1) << c.offset;
            if used & mask != 0 {
                return Err(PixelFormatError::Overlap(*self));
            }
            used |= mask;
        }
        Ok(())
    }

    /// The pixel value of an RGB8 colour (alpha, if any, opaque).
    #[inline]
    pub fn pack(&self, r: u8, g: u8, b: u8) -> u32 {
        #[inline]
        fn put(value: u8, c: Channel) -> u32 {
            ((value as u32) >> (8 - c.length)) << c.offset
        }
        let alpha = if self.transp.length > 0 {
            ((1u32 << self.transp.length) - 1) << self.transp.offset
        } else {
            0
        };
        put(r, self.red) | put(g, self.green) | put(b, self.blue) | alpha
    }

    /// Where each colour byte sits, when every channel is 8 bits on a byte boundary: the common
    /// 24- and 32-bit layouts, which then need only a byte shuffle, no bit packing.
    pub fn byte_layout(&self) -> Option<ByteLayout> {
        let byte =
            |c: Channel| (c.length == 8 && c.offset % 8 == 0).then_some((c.offset / 8) as usize);
        Some(ByteLayout {
            bytes_per_pixel: self.bytes_per_pixel(),
            red: byte(self.red)?,
            green: byte(self.green)?,
            blue: byte(self.blue)?,
        })
    }

    /// Writes `pixel` (from `pack`) as `bytes_per_pixel` little-endian bytes.
    #[inline]
    pub fn store(&self, pixel: u32, out: &mut [u8]) {
        let bytes = pixel.to_le_bytes();
        out.copy_from_slice(&bytes[..out.len()]);
    }

    /// Reads a pixel back as RGB8 (low bits replicated), for snapshots and tests.
    pub fn unpack(&self, bytes: &[u8]) -> [u8; 3] {
        let mut word = [0u8; 4];
        word[..bytes.len()].copy_from_slice(bytes);
        let value = u32::from_le_bytes(word);
        let get = |c: Channel| {
            let raw = (value >> c.offset) & ((1 << c.length) - 1);
            let v = (raw << (8 - c.length)) as u8;
            // Replicate the high bits into the empty low ones, so full scale stays 255.
            if c.length >= 8 {
                v
            } else {
                v | (v >> c.length)
            }
        };
        [get(self.red), get(self.green), get(self.blue)]
    }
}

/// "offset/length", as the log and the probe print a channel.
impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.offset, self.length)
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}bpp r{} g{} b{} a{}",
            self.bits_per_pixel, self.red, self.green, self.blue, self.transp
        )
    }
}

/// Byte positions of red, green and blue within one pixel; other bytes are padding or alpha.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteLayout {
    pub bytes_per_pixel: usize,
    pub red: usize,
    pub green: usize,
    pub blue: usize,
}

#[cfg(test)]
#[allow(clippy::unusual_byte_groupings)] // 16-bit literals are grouped by colour channel
mod tests {
    use super::*;

    #[test]
    fn known_formats_pack_known_values() {
        let (r, g, b) = (0xF8, 0x0C, 0x84);
        assert_eq!(PixelFormat::XRGB8888.pack(r, g, b), 0x00F8_0C84);
        assert_eq!(PixelFormat::ARGB8888.pack(r, g, b), 0xFFF8_0C84);
        assert_eq!(PixelFormat::XBGR8888.pack(r, g, b), 0x0084_0CF8);
        assert_eq!(PixelFormat::RGB888.pack(r, g, b), 0xF8_0C84);
        // RGB565: 11111 000011 10000 (the top 5, 6, 5 bits)
        assert_eq!(PixelFormat::RGB565.pack(r, g, b), 0b11111_000011_10000);
        assert_eq!(PixelFormat::BGR565.pack(r, g, b), 0b10000_000011_11111);
        let mut out = [0u8; 2];
        PixelFormat::RGB565.store(0xF830, &mut out);
        assert_eq!(out, [0x30, 0xF8], "little-endian in memory");
    }

    #[test]
    fn byte_layouts_of_byte_aligned_formats() {
        let l = PixelFormat::XRGB8888.byte_layout().unwrap();
        assert_eq!((l.bytes_per_pixel, l.red, l.green, l.blue), (4, 2, 1, 0));
        let l = PixelFormat::BGR888.byte_layout().unwrap();
        assert_eq!((l.bytes_per_pixel, l.red, l.green, l.blue), (3, 0, 1, 2));
        assert_eq!(PixelFormat::RGB565.byte_layout(), None);
    }

    #[test]
    fn invalid_formats_are_rejected_with_reasons() {
        let mut f = PixelFormat::XRGB8888;
        f.bits_per_pixel = 8;
        assert_eq!(f.validate(), Err(PixelFormatError::BitsPerPixel(8)));
        let mut f = PixelFormat::RGB565;
        f.red = channel(12, 5);
        assert!(matches!(
            f.validate(),
            Err(PixelFormatError::Channel { name: "red", .. })
        ));
        let mut f = PixelFormat::XRGB8888;
        f.green = channel(12, 8);
        assert!(matches!(f.validate(), Err(PixelFormatError::Overlap(_))));
        for ok in [
            PixelFormat::XRGB8888,
            PixelFormat::ARGB8888,
            PixelFormat::RGB565,
            PixelFormat::RGB888,
        ] {
            ok.validate().unwrap();
        }
    }

    #[test]
    fn unpack_inverts_pack_up_to_precision() {
        assert_eq!(PixelFormat::RGB565.unpack(&[0xFF, 0xFF]), [255, 255, 255]);
        let f = PixelFormat::ARGB8888;
        let mut out = [0u8; 4];
        f.store(f.pack(1, 2, 3), &mut out);
        assert_eq!(f.unpack(&out), [1, 2, 3]);
    }
}
