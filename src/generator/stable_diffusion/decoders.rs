//! The Stable Diffusion decoders, latents to RGB8: the full VAE (keyframes, and in-betweens when
//! there is no tiny decoder) and TAESD. They have weights of their own, apart from the UNet and
//! text encoders, so the pipeline holds them under a lock of their own (`ModelLock`), and on CUDA
//! they run on a device of their own: the same GPU with its own stream and cuBLAS/cuDNN handles,
//! so in-between frames are never queued behind a keyframe's UNet work.
//!
//! Inputs: latents [n, c, h, w] on any device (moved to the decoders' device first), decoded as
//! one batch (the full VAE's on the CPU in parts of at most 128 MiB of activations). Outputs:
//! packed RGB8 pictures, converted to u8 on the device, so only those bytes cross to the host.
//! The full VAE runs in f32 where the preset's overflows f16 (SDXL's, `Spec::vae_upcast`), the
//! tiny decoder in the model's dtype.
//! The adapt ladder may change how they decode (`set_decode_quality`): a larger resolution
//! divisor, and in-betweens through TAESD where it is loaded.
//! Runs on the decoder thread (the bench thread in `bench-sd`). Errors go to the caller, which
//! retries the same batch.

use anyhow::bail;
use candle_core::{DType, Device, DeviceLocation, Tensor};

use super::taesd::TinyDecoder;
use super::vae::VaeDecoder;
use crate::generator::FrameDecoder;

pub(crate) struct Decoders {
    pub(crate) vae: VaeDecoder,
    pub(crate) tiny: Option<TinyDecoder>,
    /// In-betweens go through the tiny decoder (`decode.tiny-decoder`, or the adapt ladder's
    /// choice when it was loaded for the ladder only).
    pub(crate) use_tiny: bool,
    /// `decode.tiny-decoder` as configured: the ladder never takes the tiny decoder away.
    pub(crate) tiny_configured: bool,
    pub(crate) device: Device,
    /// The tiny decoder's dtype (the model's).
    pub(crate) dtype: DType,
    /// The full VAE's: f32 where the preset's VAE overflows f16 (`Spec::vae_upcast`).
    pub(crate) vae_dtype: DType,
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

/// The most activation memory one full-VAE call may take on the CPU. Batching pays there only
/// while a batch stays small (`dreamframe bench-sd --device cpu --preset sd-turbo`, 10 latents:
/// at 64x64, ~13 MB a picture, 499 ms/frame batched against 589 one at a time; at 128x128,
/// ~50 MB, all ten at once took 2391 against 2144, two at a time 1909 against 1892), and a batch
/// of 512x512 pictures (~0.8 GB each in f32) would push a box with a few GB of RAM into swap.
/// On CUDA a batch that does not fit halves and retries (the decoder stage), so it is not split
/// ahead of time.
const CPU_VAE_BYTES: usize = 128 << 20;

/// How many of `count` pictures the full VAE decodes per call, at `per_picture` bytes each.
fn vae_chunk(cpu: bool, count: usize, per_picture: usize) -> usize {
    let fits = if cpu {
        CPU_VAE_BYTES / per_picture.max(1)
    } else {
        count
    };
    fits.clamp(1, count.max(1))
}

impl Decoders {
    /// Latents on this device in `dtype`, shrunk by the resolution divisor (average pooling
    /// keeps their statistics).
    fn prepare(&self, latents: &Tensor, dtype: DType) -> anyhow::Result<Tensor> {
        let latents = latents.to_device(&self.device)?.to_dtype(dtype)?;
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

    /// Scaled latents [n, c, h, w] through the full VAE, as one batch: [n, 3, H, W] in [0, 1]
    /// (unclamped).
    fn vae_images(&self, scaled: &Tensor) -> anyhow::Result<Tensor> {
        Ok(((self.vae.decode(scaled)?.to_dtype(DType::F32)? + 1.0)? / 2.0)?)
    }

    /// Decodes through the full VAE whatever the tiny-decoder setting: latents / the preset's
    /// scaling factor, then [-1, 1] -> [0, 1] -> u8 (diffusers' postprocess). The whole batch
    /// at once, except on the CPU where it would not fit `CPU_VAE_BYTES` (`vae_chunk`).
    pub(crate) fn decode_full(&self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let scaled = (self.prepare(latents, self.vae_dtype)? / self.vae_scale)?;
        let (count, _, height, width) = scaled.dims4()?;
        let per_picture = self
            .vae
            .peak_bytes_per_picture((height, width), self.vae_dtype);
        let chunk = vae_chunk(self.device.is_cpu(), count, per_picture);
        let mut pictures = Vec::with_capacity(count);
        for start in (0..count).step_by(chunk) {
            let part = scaled.narrow(0, start, chunk.min(count - start))?;
            pictures.extend(Self::to_rgb8(&self.vae_images(&part)?)?);
        }
        Ok(pictures)
    }

    /// The full VAE's or the tiny decoder's pictures before the conversion to u8 ([n, 3, H, W]
    /// f32, on this device): what GPU op checks compare.
    pub(crate) fn decoded_images(&self, latents: &Tensor, tiny: bool) -> anyhow::Result<Tensor> {
        match (&self.tiny, tiny) {
            (Some(decoder), true) => Ok(decoder
                .forward(&self.prepare(latents, self.dtype)?)?
                .to_dtype(DType::F32)?),
            (None, true) => bail!("this model has no tiny decoder"),
            (_, false) => {
                self.vae_images(&(self.prepare(latents, self.vae_dtype)? / self.vae_scale)?)
            }
        }
    }
}

impl FrameDecoder for Decoders {
    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        match self.tiny.as_ref().filter(|_| self.use_tiny) {
            Some(tiny) => Self::to_rgb8(
                &tiny
                    .forward(&self.prepare(latents, self.dtype)?)?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_decodes_large_pictures_a_few_at_a_time_and_cuda_the_whole_batch() {
        // 512x512 in f32 (~0.8 GB each): one at a time on the CPU.
        let sd_512 = 512 * 512 * 128 * 4 * 6;
        assert_eq!(vae_chunk(true, 10, sd_512), 1);
        // 128x128 (~50 MB each): two at a time; 64x64 (~13 MB): all ten.
        assert_eq!(vae_chunk(true, 10, sd_512 / 16), 2);
        assert_eq!(vae_chunk(true, 10, sd_512 / 64), 10);
        // Small pictures: the whole batch, and never more than asked for.
        assert_eq!(vae_chunk(true, 10, 1000), 10);
        assert_eq!(vae_chunk(true, 3, 0), 3);
        assert_eq!(vae_chunk(false, 10, sd_512 * 8), 10);
        assert_eq!(vae_chunk(true, 0, sd_512), 1);
    }
}
