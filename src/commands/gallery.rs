//! `dreamframe gallery`: the built-in styles' art as PNG files, so anyone can see it without a
//! screen. For each style and seed it walks as the display does (each keyframe drifting from
//! the last, with the config's settings) and writes every `--every`th keyframe as
//! `<style>-<seed>-<index>.png` at the style's internal size, then `contact-sheet.png`: one row
//! per style and seed, the keyframes left to right. The walk is the generator's alone: the
//! display's guard, which may re-anchor a stagnant walk, does not run here.
//!
//! Inputs: the arguments and the config. Outputs: the files, and one line on stdout. Runs on the
//! main thread. Files are written whole or not at all (`checked_fs::write_atomic`: a FIFO or
//! link at a file's name is replaced, never written through); a folder that can't be made or
//! written fails the command naming it.

use std::path::Path;

use anyhow::Context;
use candle_core::Tensor;

use crate::checked_fs;
use crate::commands::cli::GalleryArgs;
use crate::config::Config;
use crate::generator::builtin::{self, Style};
use crate::generator::{keyframe_seed, KeyframeRequest};

/// Pixels between the contact sheet's pictures.
const GAP: u32 = 4;

/// One row of the contact sheet: a style and seed's keyframes.
struct Row {
    size: (u32, u32),
    frames: Vec<Vec<u8>>,
}

/// Writes the gallery; returns what was written, for the command's one line.
pub(crate) fn run(args: &GalleryArgs, config: &Config) -> anyhow::Result<String> {
    make_folder(&args.out)?;
    let every_style: Vec<Style> = Style::NAMED.iter().map(|(_, style)| *style).collect();
    let styles: &[Style] = if args.styles.is_empty() {
        &every_style
    } else {
        &args.styles
    };
    let mut rows = Vec::new();
    let mut written = 0;
    for &style in styles {
        for seed in seeds(args.seed, args.seeds) {
            let row = walk(style, config, seed, args)?;
            for (position, rgb) in row.frames.iter().enumerate() {
                let index = position as u64 * args.every;
                let name = format!("{}-{seed}-{index}.png", style.name());
                write_png(&args.out.join(name), row.size, rgb)?;
                written += 1;
            }
            rows.push(row);
        }
    }
    let (size, sheet) = contact_sheet(&rows);
    write_png(&args.out.join("contact-sheet.png"), size, &sheet)?;
    Ok(format!(
        "wrote {written} keyframes and contact-sheet.png ({}x{}) to {}",
        size.0,
        size.1,
        args.out.display()
    ))
}

/// `count` seeds from `first` on, wrapping past the largest (a range would end there, empty).
fn seeds(first: u64, count: u64) -> impl Iterator<Item = u64> {
    (0..count).map(move |offset| first.wrapping_add(offset))
}

fn make_folder(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)
        .with_context(|| format!("cannot make the gallery folder {}", path.display()))?;
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read the gallery folder {}", path.display()))?;
    anyhow::ensure!(
        metadata.is_dir(),
        "the gallery folder {} is {}",
        path.display(),
        checked_fs::kind_of(metadata.file_type())
    );
    Ok(())
}

/// `args.keyframes` keyframes of `style`'s walk from `seed`, `args.every` apart, decoded.
fn walk(style: Style, config: &Config, seed: u64, args: &GalleryArgs) -> anyhow::Result<Row> {
    let mut generator = builtin::build(style, config, seed)?;
    let mut previous: Option<Tensor> = None;
    let mut frames = Vec::new();
    let last = (args.keyframes - 1) * args.every;
    for index in 0..=last {
        let request = KeyframeRequest {
            index,
            seed: keyframe_seed(seed, index),
            previous: previous.take(),
        };
        let latent = generator
            .keyframes(std::slice::from_ref(&request))?
            .pop()
            .context("the generator made no keyframe")?;
        if index % args.every == 0 {
            let rgb = generator
                .decode_keyframe(&latent.unsqueeze(0)?)?
                .pop()
                .context("the generator decoded no keyframe")?;
            frames.push(rgb);
        }
        previous = Some(latent);
    }
    Ok(Row {
        size: generator.resolution(),
        frames,
    })
}

/// The rows' pictures on one dark sheet, each at its own size in a grid of the largest.
fn contact_sheet(rows: &[Row]) -> ((u32, u32), Vec<u8>) {
    let cell = rows
        .iter()
        .fold((1, 1), |(w, h), row| (w.max(row.size.0), h.max(row.size.1)));
    let columns = rows.iter().map(|row| row.frames.len()).max().unwrap_or(1) as u32;
    let width = GAP + columns * (cell.0 + GAP);
    let height = GAP + rows.len().max(1) as u32 * (cell.1 + GAP);
    let mut sheet = vec![16u8; (width * height * 3) as usize];
    for (r, row) in rows.iter().enumerate() {
        for (c, rgb) in row.frames.iter().enumerate() {
            let left = (GAP + c as u32 * (cell.0 + GAP)) as usize;
            let top = (GAP + r as u32 * (cell.1 + GAP)) as usize;
            let line = row.size.0 as usize * 3;
            for (y, source) in rgb.chunks_exact(line).enumerate() {
                let at = ((top + y) * width as usize + left) * 3;
                sheet[at..at + line].copy_from_slice(source);
            }
        }
    }
    ((width, height), sheet)
}

fn write_png(path: &Path, (width, height): (u32, u32), rgb: &[u8]) -> anyhow::Result<()> {
    let image = image::RgbImage::from_raw(width, height, rgb.to_vec())
        .context("a frame of the wrong size")?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .context("cannot encode a PNG")?;
    checked_fs::write_atomic(path, png.get_ref())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_near_the_largest_wrap_instead_of_running_out() {
        assert_eq!(seeds(5, 3).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(seeds(u64::MAX, 2).collect::<Vec<_>>(), [u64::MAX, 0]);
    }

    #[test]
    fn the_contact_sheet_holds_every_picture_in_its_place() {
        let rows = vec![
            Row {
                size: (2, 1),
                frames: vec![vec![200; 6], vec![100; 6]],
            },
            Row {
                size: (1, 2),
                frames: vec![vec![50; 6]],
            },
        ];
        let ((width, height), sheet) = contact_sheet(&rows);
        assert_eq!((width, height), (4 + 2 * 6, 4 + 2 * 6));
        let at = |x: u32, y: u32| sheet[((y * width + x) * 3) as usize];
        assert_eq!(
            (at(4, 4), at(5, 4), at(10, 4), at(11, 4)),
            (200, 200, 100, 100)
        );
        assert_eq!((at(4, 10), at(4, 11), at(5, 10)), (50, 50, 16));
        assert_eq!(at(0, 0), 16, "the gaps stay dark");
    }
}
