//! The drm sink's choices, as pure functions of what the card reported: which mode (the
//! configured one or the screen's preferred one), which pixel format (XRGB8888, else RGB565),
//! how many refreshes each frame stays up for a given fps, and where a frame rendered at one
//! size lands on a screen of another. No I/O; the sink and `dreamframe probe` call these.

use crate::config::ModeRequest;
use crate::frame::pixel_format::PixelFormat;

/// A mode as the choices need it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ModeInfo {
    pub width: u32,
    pub height: u32,
    /// Exact, from the pixel clock and the totals (59.94 is not 60).
    pub refresh_hz: f64,
    pub preferred: bool,
}

impl ModeInfo {
    pub(crate) fn of(mode: &drm::control::Mode) -> Self {
        let (width, height) = mode.size();
        let (_, _, htotal) = mode.hsync();
        let (_, _, vtotal) = mode.vsync();
        let flags = mode.flags();
        let mut refresh_hz = if htotal > 0 && vtotal > 0 {
            mode.clock() as f64 * 1000.0 / (htotal as f64 * vtotal as f64)
        } else {
            mode.vrefresh() as f64
        };
        if flags.contains(drm::control::ModeFlags::INTERLACE) {
            refresh_hz *= 2.0;
        }
        if flags.contains(drm::control::ModeFlags::DBLSCAN) {
            refresh_hz /= 2.0;
        }
        if mode.vscan() > 1 {
            refresh_hz /= mode.vscan() as f64;
        }
        if !(refresh_hz.is_finite() && refresh_hz > 0.0) {
            refresh_hz = mode.vrefresh().max(1) as f64;
        }
        Self {
            width: width as u32,
            height: height as u32,
            refresh_hz,
            preferred: mode
                .mode_type()
                .contains(drm::control::ModeTypeFlags::PREFERRED),
        }
    }

    /// "1920x1080@60" (two decimals when the rate is not whole: "1920x1080@59.94").
    pub(crate) fn label(&self) -> String {
        let rounded = self.refresh_hz.round();
        if (self.refresh_hz - rounded).abs() < 0.005 {
            format!("{}x{}@{}", self.width, self.height, rounded as u32)
        } else {
            format!("{}x{}@{:.2}", self.width, self.height, self.refresh_hz)
        }
    }
}

/// The labels of `modes`, the preferred one marked: for errors and `probe`.
pub(crate) fn mode_list(modes: &[ModeInfo]) -> String {
    let mut labels: Vec<String> = Vec::new();
    for mode in modes {
        let label = if mode.preferred {
            format!("{} (preferred)", mode.label())
        } else {
            mode.label()
        };
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    labels.join(", ")
}

/// The index of the mode to use: the one asked for (at that size, the refresh closest to the
/// one asked for within 1 Hz, or the highest when none was given), else the preferred one, else
/// the first (the kernel lists the best first). `Err` names what was asked for and what there is.
pub(crate) fn pick_mode(modes: &[ModeInfo], wanted: Option<&ModeRequest>) -> Result<usize, String> {
    if modes.is_empty() {
        return Err("the screen reports no modes".into());
    }
    let Some(wanted) = wanted else {
        return Ok(modes.iter().position(|m| m.preferred).unwrap_or(0));
    };
    let sized = modes
        .iter()
        .enumerate()
        .filter(|(_, m)| m.width == wanted.width && m.height == wanted.height);
    let best = match wanted.refresh {
        Some(hz) => sized
            .filter(|(_, m)| (m.refresh_hz - hz).abs() < 1.0)
            .min_by(|(_, a), (_, b)| {
                (a.refresh_hz - hz)
                    .abs()
                    .total_cmp(&(b.refresh_hz - hz).abs())
            }),
        None => sized.max_by(|(_, a), (_, b)| a.refresh_hz.total_cmp(&b.refresh_hz)),
    };
    best.map(|(index, _)| index).ok_or_else(|| {
        format!(
            "display.mode = \"{wanted}\" is not one of this screen's modes; it offers: {}",
            mode_list(modes)
        )
    })
}

/// DRM fourcc codes (drm_fourcc.h), little-endian.
pub(crate) const FOURCC_XRGB8888: u32 = u32::from_le_bytes(*b"XR24");
pub(crate) const FOURCC_RGB565: u32 = u32::from_le_bytes(*b"RG16");

/// The buffer format: XRGB8888 where the primary plane takes it (or lists nothing: drivers
/// without universal planes all take it), else RGB565; `None` when neither is offered.
pub(crate) fn pick_format(formats: &[u32]) -> Option<(u32, PixelFormat)> {
    if formats.is_empty() || formats.contains(&FOURCC_XRGB8888) {
        Some((FOURCC_XRGB8888, PixelFormat::XRGB8888))
    } else if formats.contains(&FOURCC_RGB565) {
        Some((FOURCC_RGB565, PixelFormat::RGB565))
    } else {
        None
    }
}

/// A fourcc as its four letters ("XR24"), or hex when they are not printable.
pub(crate) fn fourcc_name(code: u32) -> String {
    let bytes = code.to_le_bytes();
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(&bytes).trim_end().to_string()
    } else {
        format!("{code:#010x}")
    }
}

/// Where a frame of `frame` size goes on a `screen`: centred, cropped where it is larger.
/// Returns (source x, source y, screen x, screen y, width, height) of the copied rectangle.
pub(crate) fn placement(frame: (u32, u32), screen: (u32, u32)) -> (u32, u32, u32, u32, u32, u32) {
    let axis = |f: u32, s: u32| {
        if f >= s {
            ((f - s) / 2, 0, s)
        } else {
            (0, (s - f) / 2, f)
        }
    };
    let (src_x, dst_x, width) = axis(frame.0, screen.0);
    let (src_y, dst_y, height) = axis(frame.1, screen.1);
    (src_x, src_y, dst_x, dst_y, width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(width: u32, height: u32, refresh_hz: f64, preferred: bool) -> ModeInfo {
        ModeInfo {
            width,
            height,
            refresh_hz,
            preferred,
        }
    }

    fn screen() -> Vec<ModeInfo> {
        vec![
            mode(3840, 2160, 30.0, false),
            mode(1920, 1080, 60.0, true),
            mode(1920, 1080, 59.94, false),
            mode(1920, 1080, 50.0, false),
            mode(1280, 720, 60.0, false),
        ]
    }

    fn request(text: &str) -> ModeRequest {
        text.parse().expect("a valid mode request")
    }

    #[test]
    fn no_request_takes_the_preferred_mode_else_the_first() {
        assert_eq!(pick_mode(&screen(), None), Ok(1));
        let mut plain = screen();
        plain[1].preferred = false;
        assert_eq!(pick_mode(&plain, None), Ok(0));
        assert!(pick_mode(&[], None).is_err());
    }

    #[test]
    fn a_request_takes_the_closest_refresh_at_that_size() {
        assert_eq!(pick_mode(&screen(), Some(&request("1920x1080@60"))), Ok(1));
        assert_eq!(
            pick_mode(&screen(), Some(&request("1920x1080@59.94"))),
            Ok(2)
        );
        assert_eq!(pick_mode(&screen(), Some(&request("1920x1080@50"))), Ok(3));
        // No rate: the highest at that size.
        assert_eq!(pick_mode(&screen(), Some(&request("1920x1080"))), Ok(1));
        assert_eq!(pick_mode(&screen(), Some(&request("3840x2160"))), Ok(0));
    }

    #[test]
    fn an_unknown_mode_is_an_error_listing_the_available_ones() {
        let error = pick_mode(&screen(), Some(&request("1920x1080@144"))).unwrap_err();
        assert!(
            error.contains("display.mode = \"1920x1080@144\""),
            "{error}"
        );
        assert!(
            error.contains("3840x2160@30, 1920x1080@60 (preferred), 1920x1080@59.94, 1920x1080@50, 1280x720@60"),
            "{error}"
        );
        assert!(pick_mode(&screen(), Some(&request("800x600"))).is_err());
    }

    #[test]
    fn mode_requests_parse_strictly() {
        for good in ["1920x1080", "1920x1080@60", "1024x768@59.94"] {
            assert_eq!(request(good).to_string(), good);
        }
        for bad in [
            "",
            "1920",
            "1920x",
            "x1080",
            "1920X1080",
            "1920x1080@",
            "1920x1080@0",
            "1920x1080@fast",
            "0x0",
            "+1920x1080",
            "1920x1080@inf",
            "1920x1080@nan",
            "99999x1",
        ] {
            assert!(bad.parse::<ModeRequest>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn xrgb8888_is_preferred_then_rgb565() {
        let argb = u32::from_le_bytes(*b"AR24");
        assert_eq!(
            pick_format(&[argb, FOURCC_RGB565, FOURCC_XRGB8888]).map(|f| f.1),
            Some(PixelFormat::XRGB8888)
        );
        assert_eq!(
            pick_format(&[FOURCC_RGB565]).map(|f| f.1),
            Some(PixelFormat::RGB565)
        );
        assert_eq!(pick_format(&[argb]), None);
        assert_eq!(pick_format(&[]).map(|f| f.0), Some(FOURCC_XRGB8888));
        assert_eq!(fourcc_name(FOURCC_XRGB8888), "XR24");
        assert_eq!(fourcc_name(0x0102_0304), "0x01020304");
    }

    #[test]
    fn a_frame_is_centred_and_cropped_to_the_screen() {
        assert_eq!(placement((800, 600), (800, 600)), (0, 0, 0, 0, 800, 600));
        assert_eq!(
            placement((800, 600), (1024, 768)),
            (0, 0, 112, 84, 800, 600)
        );
        assert_eq!(
            placement((1024, 768), (800, 600)),
            (112, 84, 0, 0, 800, 600)
        );
        assert_eq!(
            placement((1024, 600), (800, 768)),
            (112, 0, 0, 84, 800, 600)
        );
    }
}
