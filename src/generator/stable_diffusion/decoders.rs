//! The Stable Diffusion decoders, latents to RGB8: the full VAE (keyframes, and in-betweens when
//! there is no tiny decoder) and TAESD. They have weights of their own, apart from the UNet and
//! text encoders, so the pipeline holds them under a lock of their own (`ModelLock`), and on CUDA
//! they run on a device of their own: the same GPU with its own stream and cuBLAS/cuDNN handles,
//! so in-between frames are never queued behind a keyframe's UNet work.
//!
//! Inputs: latents [n, c, h, w] on any device (moved to the decoders' device first). Outputs:
//! packed RGB8 pictures, converted to u8 on the device, so only those bytes cross to the host.
//! The adapt ladder may change how they decode (`set_decode_quality`): a larger resolution
//! divisor, and in-betweens through TAESD where it is loaded.
//! Runs on the decoder thread (the bench thread in `bench-sd`). Errors go to the caller, which
//! retries the same batch.

use anyhow::bail;
use candle_core::{DType, Device, DeviceLocation, Tensor};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;

use super::taesd::TinyDecoder;
use crate::generator::FrameDecoder;

pub(crate) struct Decoders {
    pub(crate) vae: AutoEncoderKL,
    pub(crate) tiny: Option<TinyDecoder>,
    /// In-betweens go through the tiny decoder (`decode.tiny-decoder`, or the adapt ladder's
    /// choice when it was loaded for the ladder only).
    pub(crate) use_tiny: bool,
    /// `decode.tiny-decoder` as configured: the ladder never takes the tiny decoder away.
    pub(crate) tiny_configured: bool,
    pub(crate) device: Device,
    pub(crate) dtype: DType,
    /// The preset's VAE scaling factor (latents are divided by it before the full VAE).
    pub(crate) vae_scale: f64,
    /// The divisor in use, and the configured one (the ladder's size 0).
    pub(crate) resolution_divisor: u32,
    pub(crate) configured_divisor: u32,
}

/// The divisors the adapt ladder may decode at for latents of `latent` (height, width): the
/// configured one doubled and doubled again while the latent divides evenly, at most 8 (as
/// `interpolation.resolution-divisor` allows) and at least 8 latent pixels a side.
pub(crate) fn ladder_divisors(configured: u32, latent: (usize, usize)) -> Vec<u32> {
    let mut divisors = vec![configured.max(1)];
    for factor in [2, 4] {
        let divisor = configured.max(1) * factor;
        let fits = |side: usize| side % divisor as usize == 0 && side / divisor as usize >= 8;
        if divisor > 8 || !fits(latent.0) || !fits(latent.1) {
            break;
        }
        divisors.push(divisor);
    }
    divisors
}

/// The decoders' device for a model on `device`: on CUDA the same GPU with a stream of its own.
pub(crate) fn decoder_device(device: &Device) -> anyhow::Result<Device> {
    match device.location() {
        DeviceLocation::Cuda { gpu_id } => Ok(Device::new_cuda_with_stream(gpu_id)?),
        _ => Ok(device.clone()),
    }
}

impl Decoders {
    /// Latents on this device in this dtype, shrunk by the resolution divisor (average pooling
    /// keeps their statistics).
    fn prepare(&self, latents: &Tensor) -> anyhow::Result<Tensor> {
        let latents = latents.to_device(&self.device)?.to_dtype(self.dtype)?;
        let divisor = self.resolution_divisor as usize;
        Ok(if divisor > 1 {
            latents.avg_pool2d(divisor)?
        } else {
            latents
        })
    }

    /// [n, 3, H, W] in [0, 1] -> packed RGB8 images (converted on the device).
    fn to_rgb8(images: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let images = (images.clamp(0.0, 1.0)? * 255.0)?
            .round()?
            .to_dtype(DType::U8)?
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .to_device(&Device::Cpu)?;
        let n = images.dim(0)?;
        let flat = images.flatten_all()?.to_vec1::<u8>()?;
        let per_image = flat.len() / n.max(1);
        Ok(flat.chunks_exact(per_image).map(<[u8]>::to_vec).collect())
    }

    /// One scaled latent [1, c, h, w] through the full VAE: [1, 3, H, W] in [0, 1] (unclamped).
    fn vae_image(&self, scaled: &Tensor) -> anyhow::Result<Tensor> {
        Ok(((self.vae.decode(scaled)?.to_dtype(DType::F32)? + 1.0)? / 2.0)?)
    }

    /// Decodes through the full VAE whatever the tiny-decoder setting: latents / the preset's
    /// scaling factor, then [-1, 1] -> [0, 1] -> u8 (diffusers' postprocess).
    ///
    /// One latent at a time: candle-transformers 0.11.1's VAE attention block mixes the images
    /// of a batch (every image after the first comes out wrong; 0.34 max abs difference on the
    /// golden test's tiny VAE, tests/reference.rs, which checks a batch of two).
    pub(crate) fn decode_full(&self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let latents = (self.prepare(latents)? / self.vae_scale)?;
        let mut pictures = Vec::with_capacity(latents.dim(0)?);
        for i in 0..latents.dim(0)? {
            pictures.extend(Self::to_rgb8(&self.vae_image(&latents.narrow(0, i, 1)?)?)?);
        }
        Ok(pictures)
    }

    /// The full VAE's or the tiny decoder's pictures before the conversion to u8 ([n, 3, H, W]
    /// f32, on this device): what GPU op checks compare.
    pub(crate) fn decoded_images(&self, latents: &Tensor, tiny: bool) -> anyhow::Result<Tensor> {
        let latents = self.prepare(latents)?;
        match (&self.tiny, tiny) {
            (Some(decoder), true) => Ok(decoder.forward(&latents)?.to_dtype(DType::F32)?),
            (None, true) => bail!("this model has no tiny decoder"),
            (_, false) => {
                let scaled = (latents / self.vae_scale)?;
                let images = (0..scaled.dim(0)?)
                    .map(|i| self.vae_image(&scaled.narrow(0, i, 1)?))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(Tensor::cat(&images, 0)?)
            }
        }
    }
}

impl FrameDecoder for Decoders {
    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        match self.tiny.as_ref().filter(|_| self.use_tiny) {
            Some(tiny) => Self::to_rgb8(
                &tiny
                    .forward(&self.prepare(latents)?)?
                    .to_dtype(DType::F32)?,
            ),
            None => self.decode_full(latents),
        }
    }

    fn decode_keyframe(&mut self, latent: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        self.decode_full(latent)
    }

    /// Size `quality.size` is the configured divisor doubled that many times (see
    /// `ladder_divisors`); the tiny decoder when it is loaded and asked for (or configured).
    fn set_decode_quality(&mut self, quality: crate::generator::DecodeQuality) {
        self.resolution_divisor = self.configured_divisor.max(1) << quality.size.min(2);
        self.use_tiny = self.tiny.is_some() && (self.tiny_configured || quality.tiny);
    }
}
