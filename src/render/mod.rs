//! Upscale + convert: one internal-resolution RGB8 frame into the screen's own pixel format, at
//! screen size and stride, turned by the rotation and placed by the fit mode. Rotation turns the
//! small source frame (a copy of ~100 KB) before the resize, so the resizer writes the turned
//! picture straight into the screen buffer at no cost per screen pixel.
//!
//! Inputs: a `Frame` and a screen buffer of `geometry.frame_bytes()`. Output: that buffer, filled.
//! Runs on the playback thread. Every buffer is made once in `Renderer::new` and reused: nothing is
//! allocated per frame. Errors only for a frame of the wrong size (a bug upstream).
//!
//! Why two paths: for 8-bit byte-aligned formats (every common 24/32-bit framebuffer) the colour
//! conversion is a byte shuffle, and a shuffle commutes with resizing, so it is done on the small
//! source and the resizer writes screen pixels directly into the (strided) screen buffer. Other
//! formats (RGB565, odd strides) resize to RGBX and pack each pixel through lookup tables.

use anyhow::{ensure, Context};
use fast_image_resize as fr;
use fr::images::{TypedCroppedImageMut, TypedImage, TypedImageRef};
use fr::pixels::{U8x3, U8x4};
use fr::{FilterType, PixelTrait, ResizeAlg, ResizeOptions};

use crate::config::{Fit, Rotation, UpscaleFilter};
use crate::frame::pixel_format::ByteLayout;
use crate::frame::Frame;
use crate::frame::Geometry;

/// A rectangle on screen, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Where a `source`-sized image goes on a `screen`-sized display, and which part of the source
/// is used (`crop`: left, top, width, height), for each fit mode.
pub(crate) fn placement(
    fit: Fit,
    source: (u32, u32),
    screen: (u32, u32),
) -> (Rect, Option<(f64, f64, f64, f64)>) {
    let (sw, sh) = (source.0 as f64, source.1 as f64);
    let (dw, dh) = (screen.0 as f64, screen.1 as f64);
    let full = Rect {
        x: 0,
        y: 0,
        width: screen.0,
        height: screen.1,
    };
    match fit {
        Fit::Stretch => (full, None),
        Fit::Fit => {
            let scale = (dw / sw).min(dh / sh);
            let width = ((sw * scale).round() as u32).clamp(1, screen.0);
            let height = ((sh * scale).round() as u32).clamp(1, screen.1);
            let rect = Rect {
                x: (screen.0 - width) / 2,
                y: (screen.1 - height) / 2,
                width,
                height,
            };
            (rect, None)
        }
        Fit::Fill => {
            let scale = (dw / sw).max(dh / sh);
            let (cw, ch) = (dw / scale, dh / scale);
            (full, Some(((sw - cw) / 2.0, (sh - ch) / 2.0, cw, ch)))
        }
    }
}

enum Path {
    Bytes {
        layout: ByteLayout,
        shuffled: Vec<u8>,
    },
    Packed {
        /// The source as RGBX: the resizer's 4-channel path is much faster than its 3-channel one.
        rgbx: Vec<u8>,
        /// The resized picture, RGBX at target size.
        scratch: Vec<u8>,
        /// Each channel's 8-bit value already shifted into place (alpha folded into red), so
        /// packing a pixel is three lookups and two ORs.
        lookup: Box<[[u32; 256]; 3]>,
    },
}

fn channel_lookup(format: &crate::frame::pixel_format::PixelFormat) -> Box<[[u32; 256]; 3]> {
    let mut lookup = Box::new([[0u32; 256]; 3]);
    let alpha = format.pack(0, 0, 0);
    for value in 0..=255u8 {
        let v = value as usize;
        lookup[0][v] = format.pack(value, 0, 0);
        lookup[1][v] = format.pack(0, value, 0) & !alpha;
        lookup[2][v] = format.pack(0, 0, value) & !alpha;
    }
    lookup
}

pub struct Renderer {
    geometry: Geometry,
    source: (u32, u32),
    rotation: Rotation,
    fit: Fit,
    filter: UpscaleFilter,
    /// The source frame turned and dimmed, when either applies.
    turned: Vec<u8>,
    /// Brightness lookup (identity at full brightness) and its factor in thousandths.
    brightness: ([u8; 256], u32),
    target: Rect,
    options: ResizeOptions,
    resizer: fr::Resizer,
    path: Path,
}

fn resize_alg(filter: UpscaleFilter) -> ResizeAlg {
    match filter {
        UpscaleFilter::Nearest => ResizeAlg::Nearest,
        UpscaleFilter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        UpscaleFilter::CatmullRom => ResizeAlg::Convolution(FilterType::CatmullRom),
        UpscaleFilter::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
    }
}

impl Renderer {
    pub fn new(
        geometry: Geometry,
        source: (u32, u32),
        fit: Fit,
        rotation: Rotation,
        filter: UpscaleFilter,
    ) -> anyhow::Result<Self> {
        geometry
            .format
            .validate()
            .context("unsupported screen pixel format")?;
        let bpp = geometry.format.bytes_per_pixel();
        ensure!(
            geometry.width > 0 && geometry.height > 0,
            "screen has no pixels"
        );
        ensure!(
            geometry.stride >= geometry.width as usize * bpp,
            "screen stride {} is shorter than a row of {} pixels",
            geometry.stride,
            geometry.width
        );
        let oriented = if rotation.is_quarter() {
            (source.1, source.0)
        } else {
            source
        };
        let (target, crop) = placement(fit, oriented, (geometry.width, geometry.height));
        let mut options = ResizeOptions::new()
            .resize_alg(resize_alg(filter))
            .use_alpha(false);
        if let Some((left, top, width, height)) = crop {
            options = options.crop(left, top, width, height);
        }
        let source_pixels = source.0 as usize * source.1 as usize;
        let path = match geometry.format.byte_layout() {
            Some(layout) if geometry.stride % bpp == 0 => Path::Bytes {
                layout,
                // Padding and alpha bytes stay 0xFF (opaque) for good.
                shuffled: vec![0xFF; source_pixels * bpp],
            },
            _ => Path::Packed {
                rgbx: vec![0xFF; source_pixels * 4],
                scratch: vec![0; target.width as usize * target.height as usize * 4],
                lookup: channel_lookup(&geometry.format),
            },
        };
        Ok(Self {
            geometry,
            source,
            rotation,
            fit,
            filter,
            turned: vec![0; source_pixels * 3],
            brightness: (std::array::from_fn(|i| i as u8), 1000),
            target,
            options,
            resizer: fr::Resizer::new(),
            path,
        })
    }

    /// The same screen and source with another fit and rotation (a reload).
    pub fn reconfigured(&self, fit: Fit, rotation: Rotation) -> anyhow::Result<Self> {
        let mut renderer = Self::new(self.geometry, self.source, fit, rotation, self.filter)?;
        renderer.brightness = self.brightness;
        Ok(renderer)
    }

    /// The same screen, fit, rotation and filter for frames of another `source` size (the
    /// adapt ladder's lower resolutions).
    pub fn for_source(&self, source: (u32, u32)) -> anyhow::Result<Self> {
        let mut renderer = Self::new(self.geometry, source, self.fit, self.rotation, self.filter)?;
        renderer.brightness = self.brightness;
        Ok(renderer)
    }

    /// The frame size this renderer takes.
    pub fn source(&self) -> (u32, u32) {
        self.source
    }

    pub fn fit(&self) -> Fit {
        self.fit
    }

    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// Scales the picture's brightness (the night schedule's dimming); 1.0 leaves it as is.
    pub fn set_brightness(&mut self, factor: f32) {
        let permille = (factor.clamp(0.0, 1.0) * 1000.0).round() as u32;
        if permille != self.brightness.1 {
            self.brightness = (
                std::array::from_fn(|i| ((i as u32 * permille + 500) / 1000) as u8),
                permille,
            );
        }
    }

    /// Fills a screen buffer with black (the bars around a fitted picture stay so).
    pub fn clear(&self, out: &mut [u8]) {
        let format = self.geometry.format;
        let bpp = format.bytes_per_pixel();
        let black = format.pack(0, 0, 0);
        for row in out.chunks_mut(self.geometry.stride) {
            for pixel in row.chunks_exact_mut(bpp) {
                format.store(black, pixel);
            }
        }
    }

    pub fn render(&mut self, frame: &Frame, out: &mut [u8]) -> anyhow::Result<()> {
        ensure!(
            (frame.width, frame.height) == self.source
                && frame.rgb.len() == self.source.0 as usize * self.source.1 as usize * 3,
            "frame is {}x{} ({} bytes), renderer expects {}x{}",
            frame.width,
            frame.height,
            frame.rgb.len(),
            self.source.0,
            self.source.1
        );
        let frame_bytes = self.geometry.frame_bytes();
        ensure!(
            out.len() >= frame_bytes,
            "screen buffer has {} bytes, needs {frame_bytes}",
            out.len()
        );
        let out = &mut out[..frame_bytes];
        let dimmed = self.brightness.1 < 1000;
        let (rgb, (width, height)) = if self.rotation == Rotation::None && !dimmed {
            (&frame.rgb[..], self.source)
        } else {
            let size = turn(&frame.rgb, self.source, self.rotation, &mut self.turned);
            if dimmed {
                // On the small source, before the resize: ~100 KB instead of the whole screen.
                let lookup = &self.brightness.0;
                for value in self.turned.iter_mut() {
                    *value = lookup[*value as usize];
                }
            }
            (&self.turned[..], size)
        };
        match &mut self.path {
            Path::Bytes { layout, shuffled } => {
                let bpp = layout.bytes_per_pixel;
                for (src, dst) in rgb.chunks_exact(3).zip(shuffled.chunks_exact_mut(bpp)) {
                    dst[layout.red] = src[0];
                    dst[layout.green] = src[1];
                    dst[layout.blue] = src[2];
                }
                let stride_pixels = (self.geometry.stride / bpp) as u32;
                if bpp == 4 {
                    resize_into::<U8x4>(
                        &mut self.resizer,
                        &self.options,
                        shuffled,
                        (width, height),
                        out,
                        stride_pixels,
                        self.geometry.height,
                        self.target,
                    )
                } else {
                    resize_into::<U8x3>(
                        &mut self.resizer,
                        &self.options,
                        shuffled,
                        (width, height),
                        out,
                        stride_pixels,
                        self.geometry.height,
                        self.target,
                    )
                }
            }
            Path::Packed {
                rgbx,
                scratch,
                lookup,
            } => {
                for (src, dst) in rgb.chunks_exact(3).zip(rgbx.chunks_exact_mut(4)) {
                    dst[..3].copy_from_slice(src);
                }
                let target = self.target;
                resize_into::<U8x4>(
                    &mut self.resizer,
                    &self.options,
                    rgbx,
                    (width, height),
                    scratch,
                    target.width,
                    target.height,
                    Rect {
                        x: 0,
                        y: 0,
                        ..target
                    },
                )?;
                pack_rows(&self.geometry, target, scratch, lookup, out);
                Ok(())
            }
        }
    }
}

/// Turns an RGB8 `source`-sized image clockwise into `out`; returns the turned size.
fn turn(rgb: &[u8], (width, height): (u32, u32), rotation: Rotation, out: &mut [u8]) -> (u32, u32) {
    let (w, h) = (width as usize, height as usize);
    let (turned_width, turned_height) = if rotation.is_quarter() {
        (h, w)
    } else {
        (w, h)
    };
    for y in 0..turned_height {
        for x in 0..turned_width {
            // The source pixel that lands at (x, y) after the turn.
            let (sx, sy) = match rotation {
                Rotation::None => (x, y),
                Rotation::Clockwise90 => (y, h - 1 - x),
                Rotation::Half => (w - 1 - x, h - 1 - y),
                Rotation::Clockwise270 => (w - 1 - y, x),
            };
            let from = (sy * w + sx) * 3;
            let to = (y * turned_width + x) * 3;
            out[to..to + 3].copy_from_slice(&rgb[from..from + 3]);
        }
    }
    (turned_width as u32, turned_height as u32)
}

#[allow(clippy::too_many_arguments)]
fn resize_into<P: PixelTrait>(
    resizer: &mut fr::Resizer,
    options: &ResizeOptions,
    source: &[u8],
    (width, height): (u32, u32),
    out: &mut [u8],
    out_width: u32,
    out_height: u32,
    target: Rect,
) -> anyhow::Result<()> {
    let src =
        TypedImageRef::<P>::from_buffer(width, height, source).context("source image view")?;
    let mut screen =
        TypedImage::<P>::from_buffer(out_width, out_height, out).context("screen image view")?;
    let mut dst = TypedCroppedImageMut::from_ref(
        &mut screen,
        target.x,
        target.y,
        target.width,
        target.height,
    )
    .context("target rectangle")?;
    resizer
        .resize_typed(&src, &mut dst, options)
        .context("resize")?;
    Ok(())
}

/// Packs RGBX `scratch` (target-sized) into the screen buffer, pixel by pixel.
fn pack_rows(
    geometry: &Geometry,
    target: Rect,
    scratch: &[u8],
    lookup: &[[u32; 256]; 3],
    out: &mut [u8],
) {
    let bpp = geometry.format.bytes_per_pixel();
    let row_bytes = target.width as usize * 4;
    let pack =
        |p: &[u8]| lookup[0][p[0] as usize] | lookup[1][p[1] as usize] | lookup[2][p[2] as usize];
    for (y, src_row) in scratch.chunks_exact(row_bytes).enumerate() {
        let start = (target.y as usize + y) * geometry.stride + target.x as usize * bpp;
        let dst_row = &mut out[start..start + target.width as usize * bpp];
        // One loop per pixel size, so the stores compile to plain 16/24/32-bit writes.
        match bpp {
            2 => {
                for (src, dst) in src_row.chunks_exact(4).zip(dst_row.chunks_exact_mut(2)) {
                    dst.copy_from_slice(&(pack(src) as u16).to_le_bytes());
                }
            }
            3 => {
                for (src, dst) in src_row.chunks_exact(4).zip(dst_row.chunks_exact_mut(3)) {
                    dst.copy_from_slice(&pack(src).to_le_bytes()[..3]);
                }
            }
            _ => {
                for (src, dst) in src_row.chunks_exact(4).zip(dst_row.chunks_exact_mut(4)) {
                    dst.copy_from_slice(&pack(src).to_le_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unusual_byte_groupings)] // 16-bit literals are grouped by colour channel
mod tests {
    use super::*;
    use crate::frame::pixel_format::PixelFormat;

    fn solid(width: u32, height: u32, rgb: [u8; 3]) -> Frame {
        Frame {
            seq: 0,
            width,
            height,
            rgb: rgb.repeat((width * height) as usize),
            at: 0.0,
        }
    }

    fn geometry(width: u32, height: u32, format: PixelFormat, padding: usize) -> Geometry {
        Geometry {
            width,
            height,
            stride: width as usize * format.bytes_per_pixel() + padding,
            format,
        }
    }

    const PADDING_MARK: u8 = 0xA5;

    /// Renders a solid colour and checks every visible pixel's bytes and that row padding is
    /// never written.
    fn check_solid(format: PixelFormat, padding: usize, rgb: [u8; 3], expected: &[u8]) {
        let g = geometry(7, 5, format, padding);
        let mut renderer = Renderer::new(
            g,
            (4, 3),
            Fit::Stretch,
            Rotation::None,
            UpscaleFilter::CatmullRom,
        )
        .expect("renderer");
        let mut out = vec![PADDING_MARK; g.frame_bytes()];
        renderer
            .render(&solid(4, 3, rgb), &mut out)
            .expect("render");
        let bpp = format.bytes_per_pixel();
        for row in out.chunks(g.stride) {
            for pixel in row[..7 * bpp].chunks_exact(bpp) {
                assert_eq!(pixel, expected, "{format}");
            }
            assert!(
                row[7 * bpp..].iter().all(|&b| b == PADDING_MARK),
                "padding written for {format}"
            );
        }
    }

    #[test]
    fn every_pixel_format_gets_known_bytes_with_stride_padding() {
        let rgb = [0xF8, 0x0C, 0x84];
        check_solid(PixelFormat::XRGB8888, 8, rgb, &[0x84, 0x0C, 0xF8, 0xFF]);
        check_solid(PixelFormat::ARGB8888, 4, rgb, &[0x84, 0x0C, 0xF8, 0xFF]);
        check_solid(PixelFormat::XBGR8888, 12, rgb, &[0xF8, 0x0C, 0x84, 0xFF]);
        check_solid(PixelFormat::RGB888, 3, rgb, &[0x84, 0x0C, 0xF8]);
        check_solid(PixelFormat::BGR888, 6, rgb, &[0xF8, 0x0C, 0x84]);
        // 24-bit with a stride that is not a whole number of pixels takes the packing path.
        check_solid(PixelFormat::RGB888, 1, rgb, &[0x84, 0x0C, 0xF8]);
        check_solid(
            PixelFormat::RGB565,
            6,
            rgb,
            &0b11111_000011_10000u16.to_le_bytes(),
        );
        check_solid(
            PixelFormat::BGR565,
            2,
            rgb,
            &0b10000_000011_11111u16.to_le_bytes(),
        );
    }

    #[test]
    fn fit_letterboxes_fill_crops_stretch_covers() {
        assert_eq!(
            placement(Fit::Fit, (100, 100), (200, 100)),
            (
                Rect {
                    x: 50,
                    y: 0,
                    width: 100,
                    height: 100
                },
                None
            )
        );
        let (rect, crop) = placement(Fit::Fill, (100, 100), (200, 100));
        assert_eq!(
            rect,
            Rect {
                x: 0,
                y: 0,
                width: 200,
                height: 100
            }
        );
        assert_eq!(crop, Some((0.0, 25.0, 100.0, 50.0)));
        assert_eq!(placement(Fit::Stretch, (3, 9), (20, 10)).0.width, 20);
    }

    #[test]
    fn fitted_picture_leaves_black_bars() {
        let format = PixelFormat::XRGB8888;
        let g = geometry(8, 4, format, 0);
        let mut renderer =
            Renderer::new(g, (4, 4), Fit::Fit, Rotation::None, UpscaleFilter::Nearest).unwrap();
        let mut out = vec![0x11; g.frame_bytes()];
        renderer.clear(&mut out);
        renderer
            .render(&solid(4, 4, [255, 255, 255]), &mut out)
            .unwrap();
        let pixel = |x: usize, y: usize| format.unpack(&out[y * g.stride + x * 4..][..4]);
        assert_eq!(pixel(0, 0), [0, 0, 0]);
        assert_eq!(pixel(1, 3), [0, 0, 0]);
        assert_eq!(pixel(2, 0), [255, 255, 255]);
        assert_eq!(pixel(5, 3), [255, 255, 255]);
        assert_eq!(pixel(6, 2), [0, 0, 0]);
    }

    #[test]
    fn upscale_keeps_a_gradient_ordered() {
        let format = PixelFormat::RGB565;
        let g = geometry(64, 2, format, 0);
        let mut renderer = Renderer::new(
            g,
            (4, 1),
            Fit::Stretch,
            Rotation::None,
            UpscaleFilter::Bilinear,
        )
        .unwrap();
        let frame = Frame {
            seq: 0,
            width: 4,
            height: 1,
            rgb: vec![0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255],
            at: 0.0,
        };
        let mut out = vec![0; g.frame_bytes()];
        renderer.render(&frame, &mut out).unwrap();
        let reds: Vec<u8> = out[..64 * 2]
            .chunks_exact(2)
            .map(|p| format.unpack(p)[0])
            .collect();
        assert!(reds.windows(2).all(|w| w[0] <= w[1]), "{reds:?}");
        assert!(reds[0] < 16 && reds[63] > 240, "{reds:?}");
    }

    #[test]
    fn wrong_frame_size_is_an_error() {
        let g = geometry(8, 8, PixelFormat::XRGB8888, 0);
        let mut renderer =
            Renderer::new(g, (4, 4), Fit::Fill, Rotation::None, UpscaleFilter::Nearest).unwrap();
        let mut out = vec![0; g.frame_bytes()];
        assert!(renderer.render(&solid(5, 4, [0, 0, 0]), &mut out).is_err());
    }

    /// A 3x2 source of six distinct colours, shown 1:1 (nearest, stretch onto the turned size),
    /// must come out turned clockwise, in both conversion paths.
    #[test]
    fn rotation_turns_the_picture_clockwise() {
        let colours: Vec<[u8; 3]> = (0..6u8).map(|i| [i * 40, 250 - i * 40, 100 + i]).collect();
        let frame = Frame {
            seq: 0,
            width: 3,
            height: 2,
            rgb: colours.concat(),
            at: 0.0,
        };
        // Source pixels by index:  0 1 2
        //                          3 4 5
        let expected = [
            (Rotation::None, (3, 2), vec![0, 1, 2, 3, 4, 5]),
            (Rotation::Clockwise90, (2, 3), vec![3, 0, 4, 1, 5, 2]),
            (Rotation::Half, (3, 2), vec![5, 4, 3, 2, 1, 0]),
            (Rotation::Clockwise270, (2, 3), vec![2, 5, 1, 4, 0, 3]),
        ];
        for format in [PixelFormat::XRGB8888, PixelFormat::RGB565] {
            for (rotation, (width, height), order) in &expected {
                let g = geometry(*width, *height, format, 0);
                let mut renderer =
                    Renderer::new(g, (3, 2), Fit::Stretch, *rotation, UpscaleFilter::Nearest)
                        .expect("renderer");
                let mut out = vec![0; g.frame_bytes()];
                renderer.render(&frame, &mut out).expect("render");
                let shown: Vec<[u8; 3]> = out
                    .chunks_exact(format.bytes_per_pixel())
                    .map(|p| format.unpack(p))
                    .collect();
                let want: Vec<[u8; 3]> = order
                    .iter()
                    .map(|&i| {
                        let c = colours[i];
                        format.unpack(&format.pack(c[0], c[1], c[2]).to_le_bytes())
                    })
                    .collect();
                assert_eq!(shown, want, "{format} rotated {}", rotation.degrees());
            }
        }
    }

    #[test]
    fn fit_applies_to_the_turned_picture() {
        // A 16:9 picture turned onto a 9:16 screen fills it exactly with "fit".
        let g = geometry(9, 16, PixelFormat::XRGB8888, 0);
        let mut renderer = Renderer::new(
            g,
            (16, 9),
            Fit::Fit,
            Rotation::Clockwise90,
            UpscaleFilter::Nearest,
        )
        .expect("renderer");
        let mut out = vec![0; g.frame_bytes()];
        renderer
            .render(&solid(16, 9, [200, 200, 200]), &mut out)
            .expect("render");
        assert!(
            out.chunks_exact(4).all(|p| p[..3] == [200, 200, 200]),
            "no black bars"
        );
    }

    #[test]
    fn brightness_scales_the_picture_and_reconfiguring_keeps_it() {
        let g = geometry(4, 4, PixelFormat::XRGB8888, 0);
        let mut renderer = Renderer::new(
            g,
            (2, 2),
            Fit::Stretch,
            Rotation::None,
            UpscaleFilter::Nearest,
        )
        .expect("renderer");
        renderer.set_brightness(0.5);
        let mut out = vec![0; g.frame_bytes()];
        renderer
            .render(&solid(2, 2, [200, 100, 0]), &mut out)
            .expect("render");
        assert!(
            out.chunks_exact(4).all(|p| p[..3] == [0, 50, 100]),
            "{:?}",
            &out[..4]
        );
        let mut turned = renderer
            .reconfigured(Fit::Fit, Rotation::Half)
            .expect("reconfigured");
        assert_eq!(
            (turned.fit(), turned.rotation()),
            (Fit::Fit, Rotation::Half)
        );
        turned
            .render(&solid(2, 2, [200, 100, 0]), &mut out)
            .expect("render");
        assert!(
            out.chunks_exact(4).all(|p| p[..3] == [0, 50, 100]),
            "dimming kept"
        );
        turned.set_brightness(1.0);
        turned
            .render(&solid(2, 2, [200, 100, 0]), &mut out)
            .expect("render");
        assert!(out.chunks_exact(4).all(|p| p[..3] == [0, 100, 200]));
    }
}
