//! The `mix` style: the built-in styles in turn, one per theme (`themes`: a theme's `style`,
//! else cppn and warp alternating), cross-faded. A mix keyframe carries a latent of each style
//! and a fade (0: cppn, 1: warp) set to its theme's style, so the walk from a keyframe of one
//! style to one of the other is a cross-fade over that transition, as the model hand-over's
//! is. Both styles walk all the time (a keyframe latent costs next to nothing), so a style
//! comes back with the look it had, drifted on; only frames inside a cross-fade decode both.
//! Each style renders at its own size (256 x 144 and 384 x 216, or `model.width` x
//! `model.height` for both) and the smaller is resized to the mix's (the warp's).
//!
//! Inputs: keyframe requests and latents. Outputs: latents and RGB8 frames. Runs on the
//! keyframe and decoder threads; fails where a style's decode fails.

use anyhow::{ensure, Context};
use candle_core::{DType, Device, Tensor};

use super::cppn::CppnGenerator;
use super::warp::WarpGenerator;
use super::Style;
use crate::config::{Config, PromptsConfig, WARP_DEFAULT_SIZE};
use crate::generator::{keyframe_seed, DecodeQuality, Generator, KeyframeRequest, Knobs};

/// A fade this close to one end shows that style alone (under half an 8-bit level of the other).
const FADE_EPSILON: f32 = 1.0 / 512.0;

pub(crate) struct MixGenerator {
    cppn: CppnGenerator,
    warp: WarpGenerator,
    /// The configured resolution: the warp's.
    full: (u32, u32),
    /// The adapt ladder's rung, passed on to both styles.
    quality: DecodeQuality,
    device: Device,
}

impl MixGenerator {
    /// Both styles as `config` sets them, drawn from `seed`, following `config`'s themes.
    pub(crate) fn new(config: &Config, seed: u64) -> anyhow::Result<Self> {
        Ok(Self {
            cppn: super::cppn(config, seed, None)?,
            // Its own seed, so the two styles' weights and walks are unrelated.
            warp: super::warp(config, keyframe_seed(seed, u64::MAX), None)?,
            full: config.model.size.unwrap_or(WARP_DEFAULT_SIZE),
            quality: DecodeQuality::default(),
            device: Device::Cpu,
        })
    }

    /// Values in one keyframe latent: the cppn's, the warp's, the fade.
    fn latent_len(&self) -> usize {
        self.cppn.latent_len() + self.warp.latent_len() + 1
    }

    /// The size a generator decodes at on the current rung of the ladder.
    fn size_now(&self, knobs: Knobs) -> (u32, u32) {
        knobs.sizes[self.quality.size.min(knobs.sizes.len() - 1)]
    }

    /// Requests for one style: `previous` cut down to its part (`start`, `len`), its seeds
    /// `salt`ed so the styles draw different values.
    fn style_requests(
        &self,
        requests: &[KeyframeRequest],
        start: usize,
        len: usize,
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
                        Some(previous.narrow(0, start, len)?)
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
}

/// The `rows` of one style's part (`start`, `len` of each row) decoded by `style` and resized
/// to `to`.
fn decode_part(
    style: &mut dyn Generator,
    size: (u32, u32),
    rows: &[&[f32]],
    (start, len): (usize, usize),
    to: (u32, u32),
    device: &Device,
) -> anyhow::Result<Vec<Vec<u8>>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<f32> = rows
        .iter()
        .flat_map(|row| row[start..start + len].iter().copied())
        .collect();
    let latents = Tensor::from_vec(values, (rows.len(), len), device)?;
    style
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
        self.cppn.set_decode_quality(quality);
        self.warp.set_decode_quality(quality);
    }

    fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>> {
        let (cppn_len, warp_len) = (self.cppn.latent_len(), self.warp.latent_len());
        let cppn_requests = self.style_requests(requests, 0, cppn_len, 0)?;
        let warp_requests = self.style_requests(requests, cppn_len, warp_len, 1)?;
        let cppn = self.cppn.keyframes(&cppn_requests)?;
        let warp = self.warp.keyframes(&warp_requests)?;
        requests
            .iter()
            .zip(cppn.into_iter().zip(warp))
            .map(|(request, (cppn, warp))| {
                let fade = match self.cppn.themes().style(request.index) {
                    Style::Cppn => 0f32,
                    Style::Warp => 1f32,
                };
                let fade = Tensor::from_slice(&[fade], 1, &self.device)?;
                Ok(Tensor::cat(&[cppn, warp, fade], 0)?)
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
        let fades: Vec<f32> = rows
            .iter()
            .map(|row| row[len - 1].clamp(0.0, 1.0))
            .collect();
        let to = self.size_now(self.knobs());
        let (cppn_len, warp_len) = (self.cppn.latent_len(), self.warp.latent_len());
        let rows_where = |shows: fn(f32) -> bool| -> Vec<&[f32]> {
            rows.iter()
                .zip(&fades)
                .filter(|(_, &fade)| shows(fade))
                .map(|(row, _)| row.as_slice())
                .collect()
        };
        let cppn_size = self.size_now(self.cppn.knobs());
        let warp_size = self.size_now(self.warp.knobs());
        let mut cppn_frames = decode_part(
            &mut self.cppn,
            cppn_size,
            &rows_where(shows_cppn),
            (0, cppn_len),
            to,
            &self.device,
        )?
        .into_iter();
        let mut warp_frames = decode_part(
            &mut self.warp,
            warp_size,
            &rows_where(shows_warp),
            (cppn_len, warp_len),
            to,
            &self.device,
        )?
        .into_iter();
        fades
            .iter()
            .map(|&fade| {
                let cppn = shows_cppn(fade).then(|| cppn_frames.next()).flatten();
                let warp = shows_warp(fade).then(|| warp_frames.next()).flatten();
                match (cppn, warp) {
                    (Some(cppn), Some(warp)) => Ok(blend(&cppn, &warp, fade)),
                    (Some(alone), None) | (None, Some(alone)) => Ok(alone),
                    (None, None) => anyhow::bail!("a style decoded fewer frames than asked"),
                }
            })
            .collect()
    }

    // Both styles follow the same themes; the cppn's copy answers for the mix.
    fn keyframe_label(&self, index: u64) -> Option<(u64, &str)> {
        self.cppn.keyframe_label(index)
    }

    fn next_theme(&mut self) {
        self.cppn.next_theme();
        self.warp.next_theme();
    }

    fn reconfigure(&mut self, prompts: &PromptsConfig) {
        self.cppn.reconfigure(prompts);
        self.warp.reconfigure(prompts);
    }
}

/// Whether a frame at `fade` shows the cppn.
fn shows_cppn(fade: f32) -> bool {
    fade < 1.0 - FADE_EPSILON
}

/// Whether a frame at `fade` shows the warp.
fn shows_warp(fade: f32) -> bool {
    fade > FADE_EPSILON
}

/// `share` (0..=1) of the way from frame `a` to frame `b`, pixel by pixel.
fn blend(a: &[u8], b: &[u8], share: f32) -> Vec<u8> {
    let weight = (share * 256.0).round() as u32;
    a.iter()
        .zip(b)
        .map(|(&a, &b)| ((a as u32 * (256 - weight) + b as u32 * weight + 128) >> 8) as u8)
        .collect()
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
        let themes = vec![theme(None), theme(Some(Style::Warp)), theme(None)];
        let mut mix = MixGenerator::new(&config(themes), 3).unwrap();
        let latents = walk(&mut mix, 6);
        let fades: Vec<f32> = latents
            .iter()
            .map(|latent| latent.to_vec1::<f32>().unwrap()[mix.latent_len() - 1])
            .collect();
        // The first and third themes' turns (cppn: they are at even places), the second's key.
        assert_eq!(fades, [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);

        // A keyframe of one style shows exactly that style's picture.
        let cppn_len = mix.cppn.latent_len();
        let row = latents[3].to_vec1::<f32>().unwrap();
        let alone = Tensor::from_vec(row[..cppn_len].to_vec(), (1, cppn_len), &Device::Cpu);
        let expected = mix.cppn.decode(&alone.unwrap()).unwrap();
        let got = mix.decode(&latents[3].unsqueeze(0).unwrap()).unwrap();
        assert_eq!(got, expected);

        // A re-anchor moves the mix on to the next theme: keyframe 6 is the second theme's.
        mix.next_theme();
        let next = mix
            .keyframes(&[KeyframeRequest {
                index: 6,
                seed: keyframe_seed(5, 6),
                previous: latents.last().cloned(),
            }])
            .unwrap();
        assert_eq!(next[0].to_vec1::<f32>().unwrap()[mix.latent_len() - 1], 1.0);
        assert_eq!(mix.keyframe_label(6), Some((1, "abstract")));
    }

    #[test]
    fn a_change_of_style_is_a_cross_fade_without_jumps() {
        let themes = vec![theme(Some(Style::Cppn)), theme(Some(Style::Warp))];
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
        assert!(ends > 10.0, "the two styles look alike: {ends}");
        let (mean, largest) = steps(&decoded);
        // The same bound as a style's own transition: no step stands out (a cut would be the
        // whole distance between the ends at once).
        assert!(
            largest < 3.0 * mean + 1.0 && largest < ends / 2.0,
            "largest step {largest}, mean {mean}, ends {ends}"
        );
        // Halfway, both styles show.
        let middle = &decoded[frames_between / 2];
        assert!(difference(middle, &decoded[0]) > ends / 5.0);
        assert!(difference(middle, &decoded[frames_between]) > ends / 5.0);
    }

    #[test]
    fn the_ladder_s_sizes_reach_both_styles() {
        let mut config = config(vec![theme(None), theme(None)]);
        config.model.size = None;
        let mut mix = MixGenerator::new(&config, 2).unwrap();
        assert_eq!(mix.resolution(), WARP_DEFAULT_SIZE);
        let latents = walk(&mut mix, 2);
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
