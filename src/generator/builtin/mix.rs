//! The `mix` style: the built-in styles in turn, one per theme (`themes`: a theme's `style`,
//! else cppn, warp and flame in turn), cross-faded. A mix keyframe carries a latent of each
//! style and a weight per style, 1 for its theme's style and 0 for the others, so the walk from
//! a keyframe of one style to one of another is a cross-fade over that transition, as the model
//! hand-over's is. Every style walks all the time (a keyframe latent costs next to nothing), so
//! a style comes back with the look it had, drifted on; only frames inside a cross-fade decode
//! two. Each style renders at its own size (256 x 144 for the cppn, 384 x 216 for the others,
//! or `model.width` x `model.height` for all) and is resized to the mix's (384 x 216).
//!
//! Inputs: keyframe requests and latents. Outputs: latents and RGB8 frames. Runs on the
//! keyframe and decoder threads; fails where a style's decode fails.

use anyhow::{ensure, Context};
use candle_core::{DType, Device, Tensor};

use super::themes::Themes;
use super::Style;
use crate::config::{Config, PromptsConfig, WARP_DEFAULT_SIZE};
use crate::generator::{keyframe_seed, DecodeQuality, Generator, KeyframeRequest, Knobs};

/// A style with less than this share of a frame is left out of it (under half an 8-bit level).
const SHARE_EPSILON: f32 = 1.0 / 512.0;

/// One of the mix's styles: its generator and where its values sit in a mix latent.
struct Part {
    style: Style,
    generator: Box<dyn Generator>,
    start: usize,
    len: usize,
}

pub(crate) struct MixGenerator {
    /// In `Style::NAMED`'s order, so a style's weight sits at its place there.
    parts: Vec<Part>,
    themes: Themes,
    /// The configured resolution: the warp's.
    full: (u32, u32),
    /// The adapt ladder's rung, passed on to every style.
    quality: DecodeQuality,
    device: Device,
}

impl MixGenerator {
    /// Every style as `config` sets it, drawn from `seed`, following `config`'s themes.
    pub(crate) fn new(config: &Config, seed: u64) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut start = 0;
        for (place, &(_, style)) in Style::NAMED.iter().enumerate() {
            // Each style its own seed (the cppn the run's), so their walks are unrelated.
            let seed = match place {
                0 => seed,
                _ => keyframe_seed(seed, u64::MAX - (place as u64 - 1)),
            };
            let (generator, len): (Box<dyn Generator>, usize) = match style {
                Style::Cppn => {
                    let cppn = super::cppn(config, seed, None)?;
                    let len = cppn.latent_len();
                    (Box::new(cppn), len)
                }
                Style::Warp => {
                    let warp = super::warp(config, seed, None)?;
                    let len = warp.latent_len();
                    (Box::new(warp), len)
                }
                Style::Flame => {
                    let flame = super::flame(config, seed, None)?;
                    let len = flame.latent_len();
                    (Box::new(flame), len)
                }
            };
            parts.push(Part {
                style,
                generator,
                start,
                len,
            });
            start += len;
        }
        Ok(Self {
            parts,
            themes: Themes::new(&config.prompts),
            full: config.model.size.unwrap_or(WARP_DEFAULT_SIZE),
            quality: DecodeQuality::default(),
            device: Device::Cpu,
        })
    }

    /// Values in one keyframe latent: each style's, then a weight per style.
    fn latent_len(&self) -> usize {
        self.weights_start() + self.parts.len()
    }

    fn weights_start(&self) -> usize {
        self.parts.iter().map(|part| part.len).sum()
    }

    /// The size a generator decodes at on the current rung of the ladder.
    fn size_now(&self, knobs: Knobs) -> (u32, u32) {
        knobs.sizes[self.quality.size.min(knobs.sizes.len() - 1)]
    }

    /// Requests for one style: `previous` cut down to its part, its seeds `salt`ed so the
    /// styles draw different values.
    fn style_requests(
        &self,
        requests: &[KeyframeRequest],
        part: &Part,
        salt: u64,
    ) -> anyhow::Result<Vec<KeyframeRequest>> {
        requests
            .iter()
            .map(|request| {
                let previous = match &request.previous {
                    Some(previous) => {
                        ensure!(
                            previous.dims() == [self.latent_len()],
                            "the previous keyframe's latent has shape {:?}, expected [{}]",
                            previous.dims(),
                            self.latent_len()
                        );
                        Some(previous.narrow(0, part.start, part.len)?)
                    }
                    None => None,
                };
                Ok(KeyframeRequest {
                    index: request.index,
                    seed: keyframe_seed(request.seed, salt),
                    previous,
                })
            })
            .collect()
    }

    /// Each row's share per style (`parts`' order), from its weights: they sum to 1.
    fn shares(&self, row: &[f32]) -> Vec<f32> {
        let weights: Vec<f32> = row[self.weights_start()..]
            .iter()
            .map(|w| if w.is_finite() { w.max(0.0) } else { 0.0 })
            .collect();
        let total: f32 = weights.iter().sum();
        if total <= 0.0 {
            // No style weighed: the first, rather than a black frame.
            let mut first = vec![0.0; weights.len()];
            first[0] = 1.0;
            return first;
        }
        weights.iter().map(|w| w / total).collect()
    }
}

/// The `rows` of one style's part decoded by its generator at `size` and resized to `to`.
fn decode_part(
    part: &mut Part,
    size: (u32, u32),
    rows: &[&[f32]],
    to: (u32, u32),
    device: &Device,
) -> anyhow::Result<Vec<Vec<u8>>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<f32> = rows
        .iter()
        .flat_map(|row| row[part.start..part.start + part.len].iter().copied())
        .collect();
    let latents = Tensor::from_vec(values, (rows.len(), part.len), device)?;
    part.generator
        .decode(&latents)?
        .iter()
        .map(|frame| crate::frame::resized(frame, size, to))
        .collect()
}

impl Generator for MixGenerator {
    fn name(&self) -> &str {
        "mix"
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn resolution(&self) -> (u32, u32) {
        self.full
    }

    fn knobs(&self) -> Knobs {
        super::knobs(self.full)
    }

    fn set_decode_quality(&mut self, quality: DecodeQuality) {
        self.quality = quality;
        for part in &mut self.parts {
            part.generator.set_decode_quality(quality);
        }
    }

    fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>> {
        let mut latents: Vec<Vec<Tensor>> = vec![Vec::new(); requests.len()];
        for place in 0..self.parts.len() {
            let style_requests = self.style_requests(requests, &self.parts[place], place as u64)?;
            let part_latents = self.parts[place].generator.keyframes(&style_requests)?;
            for (latent, part_latent) in latents.iter_mut().zip(part_latents) {
                latent.push(part_latent);
            }
        }
        requests
            .iter()
            .zip(latents)
            .map(|(request, mut pieces)| {
                let style = self.themes.style(request.index);
                let weights: Vec<f32> = self
                    .parts
                    .iter()
                    .map(|part| if part.style == style { 1.0 } else { 0.0 })
                    .collect();
                pieces.push(Tensor::from_vec(weights, self.parts.len(), &self.device)?);
                Ok(Tensor::cat(&pieces, 0)?)
            })
            .collect()
    }

    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let (_, len) = latents
            .dims2()
            .context("mix latents must be [batch, latent]")?;
        ensure!(
            len == self.latent_len(),
            "mix latent has {len} values, expected {}",
            self.latent_len()
        );
        let rows = latents.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let shares: Vec<Vec<f32>> = rows.iter().map(|row| self.shares(row)).collect();
        let to = self.size_now(self.knobs());
        let mut decoded = Vec::with_capacity(self.parts.len());
        for place in 0..self.parts.len() {
            let showing: Vec<&[f32]> = rows
                .iter()
                .zip(&shares)
                .filter(|(_, share)| share[place] > SHARE_EPSILON)
                .map(|(row, _)| row.as_slice())
                .collect();
            let size = self.size_now(self.parts[place].generator.knobs());
            let frames = decode_part(&mut self.parts[place], size, &showing, to, &self.device)?;
            decoded.push(frames.into_iter());
        }
        shares
            .iter()
            .map(|share| {
                let mut layers = Vec::new();
                for (place, frames) in decoded.iter_mut().enumerate() {
                    if share[place] > SHARE_EPSILON {
                        let frame = frames
                            .next()
                            .context("a style decoded fewer frames than asked")?;
                        layers.push((frame, share[place]));
                    }
                }
                blend(layers)
            })
            .collect()
    }

    fn keyframe_label(&self, index: u64) -> Option<(u64, &str)> {
        self.themes.label(index)
    }

    fn next_theme(&mut self) {
        self.themes.advance();
        for part in &mut self.parts {
            part.generator.next_theme();
        }
    }

    fn reconfigure(&mut self, prompts: &PromptsConfig) {
        self.themes.reconfigure(prompts);
        for part in &mut self.parts {
            part.generator.reconfigure(prompts);
        }
    }
}

/// Frames laid over each other by their shares (which sum to 1), pixel by pixel.
fn blend(layers: Vec<(Vec<u8>, f32)>) -> anyhow::Result<Vec<u8>> {
    let mut layers = layers.into_iter();
    let (first, share) = layers.next().context("a frame with no style to show")?;
    if share >= 1.0 - SHARE_EPSILON {
        return Ok(first);
    }
    let mut sum: Vec<f32> = first.iter().map(|&c| c as f32 * share).collect();
    for (frame, share) in layers {
        for (total, &c) in sum.iter_mut().zip(&frame) {
            *total += c as f32 * share;
        }
    }
    Ok(sum
        .iter()
        .map(|&c| (c + 0.5).clamp(0.0, 255.0) as u8)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Theme, ThemePalette};
    use crate::generator::interpolation::slerp;

    fn config(themes: Vec<Theme>) -> Config {
        let mut config = Config::default();
        config.model.size = Some((64, 36));
        config.prompts = PromptsConfig {
            rotation_interval: 1,
            themes,
        };
        config
    }

    fn theme(style: Option<Style>) -> Theme {
        Theme {
            positive: "abstract".into(),
            negative: String::new(),
            style,
            palette: Some(ThemePalette::Aurora),
        }
    }

    /// Keyframes 0..count, each drifting from the one before.
    fn walk(mix: &mut MixGenerator, count: u64) -> Vec<Tensor> {
        let mut latents: Vec<Tensor> = Vec::new();
        for index in 0..count {
            let request = KeyframeRequest {
                index,
                seed: keyframe_seed(5, index),
                previous: latents.last().cloned(),
            };
            latents.extend(mix.keyframes(&[request]).unwrap());
        }
        latents
    }

    #[test]
    fn themes_pick_the_style_each_keyframe_shows() {
        let themes = vec![
            theme(None),
            theme(Some(Style::Flame)),
            theme(None),
            theme(None),
            theme(None),
        ];
        let mut mix = MixGenerator::new(&config(themes), 3).unwrap();
        let latents = walk(&mut mix, 8);
        let shown: Vec<Style> = latents
            .iter()
            .map(|latent| {
                let row = latent.to_vec1::<f32>().unwrap();
                let shares = mix.shares(&row);
                assert!(shares.iter().all(|s| *s == 0.0 || *s == 1.0), "{shares:?}");
                let place = shares.iter().position(|s| *s == 1.0).unwrap();
                mix.parts[place].style
            })
            .collect();
        // The second theme's key; the others' turns by their places (the fourth's is the
        // first's again, as there are three styles).
        use Style::{Cppn, Flame, Warp};
        assert_eq!(shown, [Cppn, Flame, Flame, Cppn, Warp, Cppn, Flame, Flame]);

        // A keyframe of one style shows exactly that style's picture.
        let row = latents[1].to_vec1::<f32>().unwrap();
        let flame = &mut mix.parts[2];
        let alone = &row[flame.start..flame.start + flame.len];
        let alone = Tensor::from_vec(alone.to_vec(), (1, flame.len), &Device::Cpu);
        let expected = flame.generator.decode(&alone.unwrap()).unwrap();
        let got = mix.decode(&latents[1].unsqueeze(0).unwrap()).unwrap();
        assert_eq!(got, expected);

        // A re-anchor moves the mix on to the next theme: keyframe 8 is the fifth theme's (its
        // turn: the warp), not the fourth's.
        mix.next_theme();
        let next = mix
            .keyframes(&[KeyframeRequest {
                index: 8,
                seed: keyframe_seed(5, 8),
                previous: latents.last().cloned(),
            }])
            .unwrap();
        let row = next[0].to_vec1::<f32>().unwrap();
        assert_eq!(mix.shares(&row), [0.0, 1.0, 0.0]);
        assert_eq!(mix.keyframe_label(8), Some((4, "abstract")));
    }

    #[test]
    fn a_change_of_style_is_a_cross_fade_without_jumps() {
        use Style::{Cppn, Flame, Warp};
        for (from, to) in [(Cppn, Warp), (Warp, Flame), (Flame, Cppn)] {
            cross_fade(from, to);
        }
    }

    fn cross_fade(from: Style, to: Style) {
        let themes = vec![theme(Some(from)), theme(Some(to))];
        let mut mix = MixGenerator::new(&config(themes), 11).unwrap();
        let latents = walk(&mut mix, 2);
        use super::super::tests::{mean_difference as difference, steps};
        let frames_between = 48;
        let frames: Vec<Tensor> = (0..=frames_between)
            .map(|step| {
                slerp(
                    &latents[0],
                    &latents[1],
                    step as f64 / frames_between as f64,
                )
                .unwrap()
            })
            .collect();
        let decoded = mix.decode(&Tensor::stack(&frames, 0).unwrap()).unwrap();
        let ends = difference(&decoded[0], &decoded[frames_between]);
        assert!(ends > 10.0, "{from:?} and {to:?} look alike: {ends}");
        let (mean, largest) = steps(&decoded);
        // The same bound as a style's own transition: no step stands out (a cut would be the
        // whole distance between the ends at once).
        assert!(
            largest < 3.0 * mean + 1.0 && largest < ends / 2.0,
            "{from:?} to {to:?}: largest step {largest}, mean {mean}, ends {ends}"
        );
        // Halfway, both styles show.
        let middle = &decoded[frames_between / 2];
        assert!(difference(middle, &decoded[0]) > ends / 5.0);
        assert!(difference(middle, &decoded[frames_between]) > ends / 5.0);
    }

    #[test]
    fn the_ladder_s_sizes_reach_every_style() {
        let mut config = config(vec![theme(None), theme(None), theme(None)]);
        config.model.size = None;
        let mut mix = MixGenerator::new(&config, 2).unwrap();
        assert_eq!(mix.resolution(), WARP_DEFAULT_SIZE);
        let latents = walk(&mut mix, 3);
        let batch = Tensor::stack(&latents, 0).unwrap();
        for (rung, size) in mix.knobs().sizes.into_iter().enumerate() {
            mix.set_decode_quality(DecodeQuality {
                size: rung,
                tiny: false,
            });
            for frame in mix.decode(&batch).unwrap() {
                assert_eq!(frame.len(), size.0 as usize * size.1 as usize * 3);
            }
        }
    }
}
