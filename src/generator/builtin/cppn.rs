//! The built-in generator: a compositional pattern-producing network (CPPN). Needs no weights
//! and no GPU, so a fresh machine shows art at once.
//!
//! Every pixel's colour is a small network of its coordinates (x, y, radius) and the keyframe
//! latent. The latent carries three things, all walked: the style's own values (`latent-size`,
//! fed to the first layer), the network's weights as a mix of `MIX` seed-drawn weight sets (a
//! unit vector of mixing coefficients, so every mix is as structured as one set), and the
//! keyframe's look (`look`: placement, symmetry, palette). The weight sets come from the run
//! seed, the walk visits the space between them: over minutes the shapes, the composition and
//! the colours all change, and a slerp between two keyframes morphs every one of them smoothly.
//! The network gives two values per pixel: where on the palette the pixel sits, and its shade.
//!
//! Frames are evaluated in tiles of rows, so a decode's working memory stays within
//! `TILE_VALUES` values per tensor whatever the frame size. The adapt ladder may lower the
//! resolution it decodes at (`Knobs::sizes`: 3/4, 1/2, 3/8 and 1/4 of the configured size): the
//! network is a function of the coordinates, so a smaller frame is the same picture with fewer
//! samples. Runs on the keyframe and decoder threads under the model lock; errors are candle's.

use anyhow::{ensure, Context};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::look::{Look, LOOK_SIZE};
use super::themes::Themes;
use crate::config::CppnConfig;
use crate::generator::Generator;

#[derive(Debug, Clone, Copy)]
enum Activation {
    Sin,
    Tanh,
    Gaussian,
}

impl Activation {
    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Sin => x.sin(),
            Activation::Tanh => x.tanh(),
            Activation::Gaussian => x.sqr()?.neg()?.exp(),
        }
    }
}

/// Weight sets the walk mixes: the latent values after the style's own.
pub(crate) const MIX: usize = 4;
/// Values in one tile's [pixels, hidden] tensor: ~16 MB of f32.
const TILE_VALUES: usize = 4 * 1024 * 1024;

/// One tensor of the network as `MIX` seed-drawn sets: [MIX, values].
struct Mixed {
    sets: Tensor,
    shape: Vec<usize>,
}

impl Mixed {
    fn draw(
        rng: &mut ChaCha8Rng,
        shape: &[usize],
        scale: f64,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let values: usize = shape.iter().product();
        Ok(Self {
            sets: normal_tensor(rng, &[MIX, values], scale, device)?,
            shape: shape.to_vec(),
        })
    }

    /// The tensor for mixing coefficients `mix` ([1, MIX], unit length): normal with the
    /// drawn scale whatever the mix, since the sets are independent normals.
    fn at(&self, mix: &Tensor) -> candle_core::Result<Tensor> {
        mix.matmul(&self.sets)?.reshape(self.shape.as_slice())
    }
}

struct Layer {
    weight: Mixed,
    bias: Mixed,
    activation: Activation,
}

/// The network one latent describes, ready to evaluate.
struct Network {
    coord_weight: Tensor,
    /// Layer one's bias plus the projection of the style's latent values.
    first_bias: Tensor,
    hidden: Vec<(Tensor, Tensor, Activation)>,
    output_weight: Tensor,
    output_bias: Tensor,
    look: Look,
}

pub struct CppnGenerator {
    /// The configured resolution (`Generator::resolution`).
    full: (u32, u32),
    /// The resolution decoded now (the adapt ladder's choice among `Knobs::sizes`).
    width: u32,
    height: u32,
    latent_size: usize,
    zoom: f64,
    drift: f64,
    device: Device,
    /// [3, hidden] and [hidden]: layer one's coordinate weights and bias.
    coord_weight: Mixed,
    first_bias: Mixed,
    /// [latent, hidden]
    latent_weight: Tensor,
    hidden: Vec<Layer>,
    /// [hidden, 2] and [2]: palette position and shade.
    output_weight: Mixed,
    output_bias: Mixed,
    /// Threads a decode batch is split across.
    threads: usize,
    /// The themes' palettes, rotating.
    themes: Themes,
    /// `TILE_VALUES`, smaller in tests.
    tile_values: usize,
}

fn normal_tensor(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    scale: f64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| (rng.sample::<f64, _>(StandardNormal) * scale) as f32)
        .collect();
    Tensor::from_vec(values, shape, device)
}

impl CppnGenerator {
    /// Builds the network for `seed` at `width` x `height`; `drift` is how far each keyframe
    /// moves from the previous one (0..=1).
    pub fn new(
        config: &CppnConfig,
        width: u32,
        height: u32,
        seed: u64,
        drift: f64,
        device: Device,
    ) -> anyhow::Result<Self> {
        ensure!(
            width > 0 && height > 0,
            "cppn resolution must be non-zero, got {width}x{height}"
        );
        let hidden = config.hidden_units;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let coord_weight = Mixed::draw(&mut rng, &[3, hidden], 1.0, &device)?;
        // Wide biases put the first layer's edges all over the screen, not all through its centre.
        let first_bias = Mixed::draw(&mut rng, &[hidden], 1.2, &device)?;
        let latent_weight = normal_tensor(
            &mut rng,
            &[config.latent_size, hidden],
            1.0 / (config.latent_size as f64).sqrt(),
            &device,
        )?;

        let activations = [Activation::Sin, Activation::Tanh, Activation::Gaussian];
        let mut layers = Vec::with_capacity(config.layers);
        for index in 0..config.layers {
            layers.push(Layer {
                // A gain above 1 keeps the fields structured rather than flat.
                weight: Mixed::draw(
                    &mut rng,
                    &[hidden, hidden],
                    1.8 / (hidden as f64).sqrt(),
                    &device,
                )?,
                bias: Mixed::draw(&mut rng, &[hidden], 0.5, &device)?,
                activation: activations[index % activations.len()],
            });
        }
        let output_weight = Mixed::draw(
            &mut rng,
            &[hidden, 2],
            2.0 / (hidden as f64).sqrt(),
            &device,
        )?;
        let output_bias = Mixed::draw(&mut rng, &[2], 1.0, &device)?;
        Ok(Self {
            full: (width, height),
            width,
            height,
            latent_size: config.latent_size,
            zoom: config.zoom,
            drift,
            device,
            coord_weight,
            first_bias,
            latent_weight,
            hidden: layers,
            output_weight,
            output_bias,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            themes: Themes::none(),
            tile_values: TILE_VALUES,
        })
    }

    /// Values in one keyframe latent: the style's own, the weight mix, the look.
    pub(crate) fn latent_len(&self) -> usize {
        self.latent_size + MIX + LOOK_SIZE
    }

    /// The style's own values at the head of the latent.
    fn style_len(&self) -> usize {
        self.latent_size
    }

    /// The same style, its palettes steered by `themes`.
    pub(crate) fn with_themes(self, themes: Themes) -> Self {
        Self { themes, ..self }
    }

    /// The network and look one latent (`latent_len` values) describes.
    fn network(&self, latent: &[f32]) -> candle_core::Result<Network> {
        let (style, rest) = latent.split_at(self.latent_size);
        let (mix, look) = rest.split_at(MIX);
        let norm = mix.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-3);
        let mix: Vec<f32> = mix.iter().map(|v| v / norm).collect();
        let mix = Tensor::from_vec(mix, (1, MIX), &self.device)?;
        let style = Tensor::from_vec(style.to_vec(), (1, self.latent_size), &self.device)?
            .matmul(&self.latent_weight)?
            .squeeze(0)?;
        Ok(Network {
            coord_weight: self.coord_weight.at(&mix)?,
            first_bias: (self.first_bias.at(&mix)? + style)?,
            hidden: self
                .hidden
                .iter()
                .map(|layer| {
                    Ok((
                        layer.weight.at(&mix)?,
                        layer.bias.at(&mix)?,
                        layer.activation,
                    ))
                })
                .collect::<candle_core::Result<_>>()?,
            output_weight: self.output_weight.at(&mix)?,
            output_bias: self.output_bias.at(&mix)?,
            look: Look::from_latent(look),
        })
    }
}

impl Generator for CppnGenerator {
    style_methods!("cppn");

    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let (batch, latent_size) = latents
            .dims2()
            .context("cppn latents must be [batch, latent]")?;
        ensure!(
            latent_size == self.latent_len(),
            "cppn latent has {latent_size} values, expected {}",
            self.latent_len()
        );
        let networks = latents
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?
            .iter()
            .map(|latent| self.network(latent))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // candle's CPU element-wise ops (the activations, most of the cost) run on one core:
        // every core takes a share.
        let pixels = self.width as usize * self.height as usize;
        super::render_parallel(
            batch,
            pixels,
            self.threads,
            |frame, frames, first, count| {
                self.colours(&networks[frame..frame + frames], first, count)
            },
        )
    }
}

impl CppnGenerator {
    /// RGB8 of pixels `first..first + count` (row-major) for every network, network after
    /// network, evaluated in tiles.
    fn colours(&self, networks: &[Network], first: usize, count: usize) -> anyhow::Result<Vec<u8>> {
        let hidden = self.first_bias.shape[0];
        let tile = (self.tile_values / hidden.max(1)).clamp(1, count.max(1));
        let mut out = Vec::with_capacity(networks.len() * count * 3);
        for network in networks {
            let mut offset = 0;
            while offset < count {
                let length = tile.min(count - offset);
                self.tile_colours(network, first + offset, length, &mut out)?;
                offset += length;
            }
        }
        Ok(out)
    }

    /// Pixels `start..start + count` (row-major) as points of the pattern's plane under the
    /// network's look: x, y and radius each.
    fn coordinates(&self, network: &Network, start: usize, count: usize) -> Vec<f32> {
        // Centred on the screen; y spans [-1, 1], x keeps the aspect ratio; the look places
        // the pattern, then the zoom says how much of its plane the screen shows.
        let (width, height) = (self.width as usize, self.height as usize);
        let zoom = self.zoom as f32;
        let mut coords = Vec::with_capacity(count * 3);
        for pixel in start..start + count {
            let (x, y) = super::screen_point(pixel, width, height);
            let (x, y) = network.look.placement.apply(x, y);
            let (x, y) = (x * zoom, y * zoom);
            coords.extend_from_slice(&[x, y, (x * x + y * y).sqrt()]);
        }
        coords
    }

    /// Appends the RGB8 of pixels `first..first + count` under `network` to `out`.
    fn tile_colours(
        &self,
        network: &Network,
        first: usize,
        count: usize,
        out: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        let coords = Tensor::from_vec(
            self.coordinates(network, first, count),
            (count, 3),
            &self.device,
        )?;
        let mut h = coords
            .matmul(&network.coord_weight)?
            .broadcast_add(&network.first_bias)?
            .tanh()?;
        for (weight, bias, activation) in &network.hidden {
            h = activation.apply(&h.matmul(weight)?.broadcast_add(bias)?)?;
        }
        let values = h
            .matmul(&network.output_weight)?
            .broadcast_add(&network.output_bias)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // Where on the palette, and how bright: shade keeps at least half the light, so the
        // palette always shows.
        let palette = &network.look.palette;
        for pair in values.chunks_exact(2) {
            let shade = 0.75 + 0.25 * pair[1].sin();
            out.extend_from_slice(&palette.rgb(pair[0] * 0.5, shade));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{DecodeQuality, KeyframeRequest};

    fn small() -> CppnConfig {
        CppnConfig {
            latent_size: 8,
            hidden_units: 8,
            layers: 3,
            zoom: 1.5,
        }
    }

    fn frames(seed: u64) -> Vec<Vec<u8>> {
        let mut generator =
            CppnGenerator::new(&small(), 32, 18, seed, 0.4, Device::Cpu).expect("cppn builds");
        let requests: Vec<KeyframeRequest> = (0..2)
            .map(|index| KeyframeRequest {
                index,
                seed: crate::generator::keyframe_seed(seed, index),
                previous: None,
            })
            .collect();
        let keys = generator.keyframes(&requests).expect("keyframes");
        generator
            .decode(&Tensor::stack(&keys, 0).expect("stack"))
            .expect("decode")
    }

    #[test]
    fn tiles_and_threads_give_the_same_frames() {
        let mut whole =
            CppnGenerator::new(&small(), 128, 72, 9, 0.4, Device::Cpu).expect("cppn builds");
        whole.threads = 1;
        let mut tiled = CppnGenerator::new(&small(), 128, 72, 9, 0.4, Device::Cpu).unwrap();
        // Tiles of 37 pixels (not a whole number of rows), the pixels shared by three threads.
        tiled.tile_values = 37 * 8;
        tiled.threads = 3;
        let size = whole.latent_len();
        let latents = Tensor::from_vec(
            (0..3 * size)
                .map(|i| (i as f32 * 0.37).sin())
                .collect::<Vec<_>>(),
            (3, size),
            &Device::Cpu,
        )
        .unwrap();
        let expected = whole.decode(&latents).unwrap();
        assert_eq!(tiled.decode(&latents).unwrap(), expected);
    }

    #[test]
    fn a_lower_resolution_is_the_same_picture_with_fewer_samples() {
        let mut generator = CppnGenerator::new(&small(), 64, 36, 3, 0.4, Device::Cpu).unwrap();
        let knobs = generator.knobs();
        assert_eq!(
            knobs.sizes,
            vec![(64, 36), (48, 27), (32, 18)],
            "no side below 16 pixels, the shape kept"
        );
        assert_eq!(generator.resolution(), (64, 36));
        let size = generator.latent_len();
        let latent = Tensor::from_vec(vec![0.3f32; size], (1, size), &Device::Cpu).unwrap();
        let full = generator.decode(&latent).unwrap().remove(0);
        generator.set_decode_quality(DecodeQuality {
            size: 2,
            tiny: false,
        });
        let half = generator.decode(&latent).unwrap().remove(0);
        assert_eq!(half.len(), 32 * 18 * 3);
        assert_eq!(
            generator.resolution(),
            (64, 36),
            "the configured size stays"
        );
        // The half-size frame resampled to full size is close to the full-size one.
        let up = crate::frame::resized(&half, (32, 18), (64, 36)).unwrap();
        let error: f64 = full
            .iter()
            .zip(&up)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / full.len() as f64;
        assert!(error < 12.0, "mean difference {error}");
        generator.set_decode_quality(DecodeQuality::default());
        assert_eq!(generator.decode(&latent).unwrap().remove(0), full);
    }

    #[test]
    fn same_seed_same_frames_other_seed_other_frames() {
        let a = frames(11);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].len(), 32 * 18 * 3);
        assert_eq!(a, frames(11));
        assert_ne!(a, frames(12));
        assert_ne!(a[0], a[1], "consecutive keyframes differ");
    }

    #[test]
    fn frames_are_colourful_fields_not_flat_or_noise() {
        let frame = &frames(5)[0];
        let pixels: Vec<[i32; 3]> = frame
            .chunks_exact(3)
            .map(|p| [p[0] as i32, p[1] as i32, p[2] as i32])
            .collect();
        // Colourful: channels differ from each other somewhere (not grey), and values vary.
        let max_channel_spread = pixels
            .iter()
            .map(|p| p.iter().max().unwrap() - p.iter().min().unwrap())
            .max()
            .unwrap();
        assert!(
            max_channel_spread > 60,
            "looks grey: spread {max_channel_spread}"
        );
        let distinct: std::collections::HashSet<_> = pixels.iter().collect();
        assert!(
            distinct.len() > 50,
            "looks flat: {} colours",
            distinct.len()
        );
        // Smooth: neighbouring pixels are much closer than random pixels would be.
        let width = 32;
        let neighbour: i32 = pixels
            .windows(2)
            .enumerate()
            .filter(|(i, _)| (i + 1) % width != 0)
            .map(|(_, w)| (0..3).map(|c| (w[0][c] - w[1][c]).abs()).sum::<i32>())
            .sum();
        let pairs = pixels.len() - pixels.len() / width;
        let mean_step = neighbour as f64 / pairs as f64;
        assert!(
            mean_step < 40.0,
            "looks like noise: mean neighbour step {mean_step}"
        );
    }
}
