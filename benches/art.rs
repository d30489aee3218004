//! `cargo bench --bench art`: the built-in art over a long seeded walk, judged with the walk
//! guard's own figures, so styles can be compared by numbers as well as by eye (`dreamframe
//! gallery`). Per kind (`ART_KINDS`, default "cppn,warp,flame,mix"; `ART_KEYFRAMES`, default 5000;
//! `ART_SEED`, default 1), at the shipped settings (a keyframe every 90 frames at 30 fps: 3 s,
//! 1200 an hour):
//!
//! - colourfulness (Hasler and Süsstrunk, the guard's): median and p10 over every keyframe;
//! - hue coverage per hour: the share of 12 hue bins holding at least 5% of an hour's coloured
//!   pixels (chroma above 10%; grey has no hue), every 4th keyframe sampled;
//! - composition diversity: the median distance of the guard's 8x8 signature between keyframes
//!   10 minutes (200 keyframes) apart (the guard's novelty measure, against one keyframe);
//! - detail at 1080p: the mean luma step between neighbouring pixels of every 10th keyframe
//!   resized (bilinear, as the display does) to 1920x1080;
//! - re-anchors per hour, from the guard walking the same seed.
//!
//! It uses only what the library exported before the issue-24 styles, so the same file runs
//! against an earlier commit to put the old CPPN beside the new styles. Speed is `dreamframe
//! bench`'s business, not this file's.

#![deny(unsafe_code)]

use anyhow::Context;
use dreamframe::config::Config;
use dreamframe::testing::{build_generator, keyframe_seed, walk};
use dreamframe::{Generator, KeyframeRequest};
use fast_image_resize as fr;

/// Keyframes an hour at the shipped settings (90 frames a transition at 30 fps).
const PER_HOUR: usize = 1200;
/// 10 minutes of keyframes.
const TEN_MINUTES: usize = PER_HOUR / 6;
const SCREEN: (u32, u32) = (1920, 1080);

fn quantile(values: &mut [f32], q: f64) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    values.sort_by(f32::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// The hue bin (of 12) of an RGB pixel, or `None` for one too grey to have a hue.
fn hue_bin([r, g, b]: [u8; 3]) -> Option<usize> {
    let (r, g, b) = (r as f32 / 255.0, g as f32 / 255.0, b as f32 / 255.0);
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    let chroma = max - min;
    if chroma < 0.1 {
        return None;
    }
    let sector = if max == r {
        ((g - b) / chroma).rem_euclid(6.0)
    } else if max == g {
        (b - r) / chroma + 2.0
    } else {
        (r - g) / chroma + 4.0
    };
    Some(((sector * 2.0) as usize).min(11))
}

/// Mean luma step between horizontal and vertical neighbours, 0..1.
fn detail(rgb: &[u8], (width, height): (u32, u32)) -> f32 {
    let (width, height) = (width as usize, height as usize);
    let luma = |x: usize, y: usize| {
        let at = (y * width + x) * 3;
        (0.299 * rgb[at] as f32 + 0.587 * rgb[at + 1] as f32 + 0.114 * rgb[at + 2] as f32) / 255.0
    };
    let (mut sum, mut count) = (0f64, 0u64);
    for y in (0..height - 1).step_by(4) {
        for x in 0..width - 1 {
            let here = luma(x, y);
            sum += ((luma(x + 1, y) - here).abs() + (luma(x, y + 1) - here).abs()) as f64;
            count += 2;
        }
    }
    (sum / count.max(1) as f64) as f32
}

fn upscale(rgb: &[u8], from: (u32, u32)) -> anyhow::Result<Vec<u8>> {
    let source = fr::images::ImageRef::new(from.0, from.1, rgb, fr::PixelType::U8x3)?;
    let mut target = fr::images::Image::new(SCREEN.0, SCREEN.1, fr::PixelType::U8x3);
    fr::Resizer::new().resize(
        &source,
        &mut target,
        &fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear)),
    )?;
    Ok(target.into_vec())
}

/// The walk's pixels: hue coverage per hour and detail at 1080p.
fn pixels(
    generator: &mut dyn Generator,
    keyframes: usize,
    seed: u64,
) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let size = generator.resolution();
    let mut coverage = Vec::new();
    let mut details = Vec::new();
    let mut bins = [0u64; 12];
    let mut previous = None;
    for index in 0..keyframes {
        let request = KeyframeRequest {
            index: index as u64,
            seed: keyframe_seed(seed, index as u64),
            previous: previous.take(),
        };
        let latent = generator
            .keyframes(std::slice::from_ref(&request))?
            .pop()
            .context("no keyframe")?;
        if index % 4 == 0 || index % 10 == 0 {
            let rgb = generator
                .decode_keyframe(&latent.unsqueeze(0)?)?
                .pop()
                .context("no frame")?;
            if index % 4 == 0 {
                for pixel in rgb.chunks_exact(3) {
                    if let Some(bin) = hue_bin([pixel[0], pixel[1], pixel[2]]) {
                        bins[bin] += 1;
                    }
                }
            }
            if index % 10 == 0 {
                details.push(detail(&upscale(&rgb, size)?, SCREEN));
            }
        }
        if (index + 1) % PER_HOUR == 0 {
            let total = bins.iter().sum::<u64>().max(1) as f64;
            let held = bins.iter().filter(|&&n| n as f64 / total >= 0.05).count();
            coverage.push(held as f32 / 12.0);
            bins = [0; 12];
        }
        previous = Some(latent);
    }
    Ok((coverage, details))
}

fn judge_kind(kind: &str, keyframes: usize, seed: u64) -> anyhow::Result<()> {
    let config = Config::from_str(&format!("[model]\nkind = \"{kind}\"\n"), "art bench")
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let mut generator = build_generator(&config, seed)?;
    let (width, height) = generator.resolution();
    let report = walk(generator.as_mut(), keyframes as u64, seed, &config.reanchor)?;
    let mut colourfulness: Vec<f32> = report.figures.iter().map(|f| f.1.colourfulness).collect();
    let signatures: Vec<&Vec<f32>> = report.figures.iter().map(|f| &f.1.signature).collect();
    let mut apart: Vec<f32> = signatures
        .iter()
        .zip(signatures.iter().skip(TEN_MINUTES))
        .map(|(a, b)| {
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| (x - y).abs())
                .sum::<f32>()
                / a.len().max(1) as f32
        })
        .collect();
    let mut fresh = build_generator(&config, seed)?;
    let (mut coverage, mut details) = pixels(fresh.as_mut(), keyframes, seed)?;
    let hours = keyframes as f64 / PER_HOUR as f64;
    let coverage_spread = (
        quantile(&mut coverage, 0.0),
        quantile(&mut coverage, 0.5),
        quantile(&mut coverage, 1.0),
    );
    println!(
        "{kind} {width}x{height} seed {seed}: {keyframes} keyframes ({hours:.1} h) | colourfulness median {:.3} p10 {:.3} | hue coverage per hour median {:.2} (min {:.2} max {:.2}) | novelty 10 min apart median {:.4} | detail at 1080p median {:.4} | re-anchors {} ({:.2} per hour)",
        quantile(&mut colourfulness, 0.5),
        quantile(&mut colourfulness, 0.1),
        coverage_spread.1,
        coverage_spread.0,
        coverage_spread.2,
        quantile(&mut apart, 0.5),
        quantile(&mut details, 0.5),
        report.reanchors.len(),
        report.reanchors.len() as f64 / hours,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let kinds = std::env::var("ART_KINDS").unwrap_or_else(|_| "cppn,warp,flame,mix".into());
    let keyframes = std::env::var("ART_KEYFRAMES").map_or(Ok(5000), |n| n.parse())?;
    let seed = std::env::var("ART_SEED").map_or(Ok(1), |n| n.parse())?;
    for kind in kinds.split(',') {
        judge_kind(kind.trim(), keyframes, seed)?;
    }
    Ok(())
}
