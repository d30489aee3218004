//! The snapshot: a PNG of the frame on screen (at internal resolution), written atomically every
//! `output.snapshot-seconds` so someone on SSH can see what the display shows. Encoded and
//! written on tokio's blocking pool, never on the display path; a failure is logged only.

use std::path::Path;

use anyhow::Context;
use image::{ExtendedColorType, ImageFormat};

use crate::frame::Frame;

pub(crate) fn write_png(frame: &Frame, path: &Path) -> anyhow::Result<()> {
    let mut png = Vec::new();
    image::write_buffer_with_format(
        &mut std::io::Cursor::new(&mut png),
        &frame.rgb,
        frame.width,
        frame.height,
        ExtendedColorType::Rgb8,
        ImageFormat::Png,
    )
    .context("encoding snapshot PNG")?;
    crate::checked_fs::write_atomic(path, &png)
        .with_context(|| format!("writing snapshot {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_through_png() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshot.png");
        let frame = Frame {
            seq: 3,
            width: 2,
            height: 1,
            rgb: vec![255, 0, 0, 0, 0, 255],
            at: 0.0,
        };
        write_png(&frame, &path).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (2, 1));
        assert_eq!(image.into_raw(), frame.rgb);
    }
}
