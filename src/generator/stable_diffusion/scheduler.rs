//! The denoising schedules (DDIM and Euler ancestral) as diffusers computes them from a model
//! repo's scheduler_config.json, and img2img's choice of where to start.
//!
//! Inputs: the preset's `ScheduleConfig`, the step count, and per step the model's prediction,
//! the current latents and (Euler ancestral only) a noise tensor the caller draws. Outputs: the
//! timesteps, the scaled model input and the next latents. Runs on the keyframe thread. Errors
//! only for a step count of 0 or above the training timesteps.
//!
//! Why not candle-transformers' schedulers: their Euler ancestral draws its per-step noise from
//! the device's unseeded RNG (`randn_like`), so a logged seed could not reproduce a keyframe, and
//! the noise cannot be fed from outside to compare against diffusers; its trailing timesteps
//! count down from 1000 where diffusers counts down from 999. Here every value follows diffusers'
//! `DDIMScheduler` / `EulerAncestralDiscreteScheduler` and the golden tests
//! (tests/reference.rs) hold us to them.

use anyhow::ensure;
use candle_core::Tensor;

pub(crate) use crate::config::SchedulerKind;

/// What the UNet predicts (scheduler_config.json `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prediction {
    Epsilon,
    VPrediction,
}

/// How inference timesteps are spread over the training timesteps (`timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spacing {
    Leading,
    Trailing,
    /// Evenly from the last training timestep to 0; Euler's are fractional.
    Linspace,
}

/// The fields of a model repo's scheduler_config.json that change the arithmetic. Every preset
/// uses `beta_schedule = "scaled_linear"`, `clip_sample = false`, `set_alpha_to_one = false`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScheduleConfig {
    pub train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub steps_offset: usize,
    /// `None` where the repo's file has no `timestep_spacing` (sd-1.5, sd-2.1): each scheduler
    /// then uses its own default, "leading" for DDIM and "linspace" for Euler ancestral.
    pub spacing: Option<Spacing>,
    pub prediction: Prediction,
}

impl ScheduleConfig {
    /// sd-1.5, sd-2.1 (with v-prediction), sd-turbo and sdxl-turbo (trailing) all share these.
    pub(crate) fn stable_diffusion(spacing: Option<Spacing>, prediction: Prediction) -> Self {
        Self {
            train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            steps_offset: 1,
            spacing,
            prediction,
        }
    }
}

/// One run's schedule: `steps` timesteps, from noisiest to cleanest.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    kind: SchedulerKind,
    config: ScheduleConfig,
    spacing: Spacing,
    steps: usize,
    /// Whole numbers except Euler's linspace, which diffusers keeps fractional (f32).
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    /// Euler: the noise level at each timestep, then 0.
    sigmas: Vec<f64>,
}

impl Schedule {
    pub(crate) fn new(
        kind: SchedulerKind,
        config: &ScheduleConfig,
        steps: usize,
    ) -> anyhow::Result<Self> {
        let n = config.train_timesteps;
        ensure!(
            (1..=n).contains(&steps),
            "steps = {steps}: allowed 1 to {n} (the model's training timesteps)"
        );
        // scaled_linear: betas evenly spaced in sqrt, then squared.
        let (start, end) = (config.beta_start.sqrt(), config.beta_end.sqrt());
        let mut product = 1.0;
        let alphas_cumprod: Vec<f64> = (0..n)
            .map(|i| {
                let beta = (start + (end - start) * i as f64 / (n - 1) as f64).powi(2);
                product *= 1.0 - beta;
                product
            })
            .collect();
        let spacing = config.spacing.unwrap_or(match kind {
            SchedulerKind::Ddim => Spacing::Leading,
            SchedulerKind::EulerAncestral => Spacing::Linspace,
        });
        let timesteps: Vec<f64> = match spacing {
            Spacing::Leading => {
                let ratio = n / steps;
                (0..steps)
                    .rev()
                    // A large offset could step past the last training timestep.
                    .map(|i| (i * ratio + config.steps_offset).min(n - 1) as f64)
                    .collect()
            }
            Spacing::Trailing => {
                // np.round(np.arange(n, 0, -n / steps)) - 1
                let ratio = n as f64 / steps as f64;
                (0..steps)
                    .map(|i| round_half_even(n as f64 - i as f64 * ratio) - 1.0)
                    .collect()
            }
            Spacing::Linspace => {
                // np.linspace(0, n - 1, steps), reversed: rounded for DDIM, f32 for Euler.
                let last = (n - 1) as f64;
                (0..steps)
                    .rev()
                    .map(|i| {
                        let t = if steps == 1 {
                            0.0 // numpy's linspace of one value is its start
                        } else if i + 1 == steps {
                            last
                        } else {
                            i as f64 * (last / (steps - 1) as f64)
                        };
                        match kind {
                            SchedulerKind::Ddim => round_half_even(t),
                            SchedulerKind::EulerAncestral => t as f32 as f64,
                        }
                    })
                    .collect()
            }
        };
        // Euler: sigma at each timestep, interpolated linearly between training timesteps
        // (np.interp), kept in f32 as diffusers does.
        let sigma_at = |t: f64| {
            let sigma = |i: usize| ((1.0 - alphas_cumprod[i]) / alphas_cumprod[i]).sqrt();
            let low = (t.floor() as usize).min(n - 1);
            let high = (low + 1).min(n - 1);
            let fraction = t - low as f64;
            (sigma(low) * (1.0 - fraction) + sigma(high) * fraction) as f32 as f64
        };
        let sigmas = timesteps
            .iter()
            .map(|&t| sigma_at(t))
            .chain(std::iter::once(0.0))
            .collect();
        Ok(Self {
            kind,
            config: config.clone(),
            spacing,
            steps,
            timesteps,
            alphas_cumprod,
            sigmas,
        })
    }

    pub(crate) fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    #[cfg(test)]
    /// Euler: the noise level of each timestep, then 0 (empty for DDIM).
    pub(crate) fn sigmas(&self) -> &[f64] {
        match self.kind {
            SchedulerKind::Ddim => &[],
            SchedulerKind::EulerAncestral => &self.sigmas,
        }
    }

    #[cfg(test)]
    /// DDIM: the cumulative alpha at each timestep (empty for Euler ancestral).
    pub(crate) fn alphas_cumprod(&self) -> Vec<f64> {
        match self.kind {
            SchedulerKind::Ddim => self
                .timesteps
                .iter()
                .map(|&t| self.alphas_cumprod[t as usize])
                .collect(),
            SchedulerKind::EulerAncestral => Vec::new(),
        }
    }

    /// Whether `step` wants a fresh noise tensor (Euler ancestral draws one every step).
    pub(crate) fn step_takes_noise(&self) -> bool {
        self.kind == SchedulerKind::EulerAncestral
    }

    /// What txt2img multiplies its initial unit noise by.
    pub(crate) fn init_noise_sigma(&self) -> f64 {
        match self.kind {
            SchedulerKind::Ddim => 1.0,
            SchedulerKind::EulerAncestral => {
                let max = self.sigmas.iter().copied().fold(0.0, f64::max);
                match self.spacing {
                    Spacing::Trailing | Spacing::Linspace => max,
                    Spacing::Leading => (max * max + 1.0).sqrt(),
                }
            }
        }
    }

    /// img2img with `strength` of the way back into noise: the index of the first timestep run,
    /// as `StableDiffusionImg2ImgPipeline.get_timesteps` picks it (`int(steps * strength)` steps,
    /// truncated), except that we always run at least one step where diffusers would run none
    /// and refuse: a keyframe equal to the previous one would freeze the walk.
    pub(crate) fn img2img_start(&self, strength: f64) -> usize {
        let run = ((self.steps as f64 * strength) as usize).clamp(1, self.steps);
        self.steps - run
    }

    /// img2img's starting latents: `original` noised to the level of timestep `index`.
    pub(crate) fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        index: usize,
    ) -> anyhow::Result<Tensor> {
        Ok(match self.kind {
            SchedulerKind::Ddim => {
                let alpha = self.alphas_cumprod[self.timesteps[index] as usize];
                ((original * alpha.sqrt())? + (noise * (1.0 - alpha).sqrt())?)?
            }
            SchedulerKind::EulerAncestral => (original + (noise * self.sigmas[index])?)?,
        })
    }

    /// The UNet's input at step `index` (Euler scales it to unit variance; DDIM does not).
    pub(crate) fn scale_model_input(
        &self,
        sample: &Tensor,
        index: usize,
    ) -> anyhow::Result<Tensor> {
        Ok(match self.kind {
            SchedulerKind::Ddim => sample.clone(),
            SchedulerKind::EulerAncestral => {
                let sigma = self.sigmas[index];
                (sample / (sigma * sigma + 1.0).sqrt())?
            }
        })
    }

    /// The latents after step `index`, from the model's prediction. `noise` (same shape) is
    /// used by Euler ancestral only; DDIM runs with eta = 0 and needs none.
    pub(crate) fn step(
        &self,
        prediction: &Tensor,
        index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> anyhow::Result<Tensor> {
        match self.kind {
            SchedulerKind::Ddim => self.ddim_step(prediction, index, sample),
            SchedulerKind::EulerAncestral => {
                let noise = noise.ok_or_else(|| anyhow::anyhow!("Euler ancestral needs noise"))?;
                self.euler_ancestral_step(prediction, index, sample, noise)
            }
        }
    }

    fn ddim_step(
        &self,
        prediction: &Tensor,
        index: usize,
        sample: &Tensor,
    ) -> anyhow::Result<Tensor> {
        let timestep = self.timesteps[index] as usize;
        // diffusers steps back by n / steps whatever the spacing.
        let previous = timestep.checked_sub(self.config.train_timesteps / self.steps);
        let alpha = self.alphas_cumprod[timestep];
        // set_alpha_to_one = false: past the first timestep, alpha stays at alphas_cumprod[0].
        let alpha_prev = previous.map_or(self.alphas_cumprod[0], |t| self.alphas_cumprod[t]);
        let beta = 1.0 - alpha;
        let (original, epsilon) = match self.config.prediction {
            Prediction::Epsilon => (
                ((sample - (prediction * beta.sqrt())?)? / alpha.sqrt())?,
                prediction.clone(),
            ),
            Prediction::VPrediction => (
                ((sample * alpha.sqrt())? - (prediction * beta.sqrt())?)?,
                ((prediction * alpha.sqrt())? + (sample * beta.sqrt())?)?,
            ),
        };
        Ok(((original * alpha_prev.sqrt())? + (epsilon * (1.0 - alpha_prev).sqrt())?)?)
    }

    fn euler_ancestral_step(
        &self,
        prediction: &Tensor,
        index: usize,
        sample: &Tensor,
        noise: &Tensor,
    ) -> anyhow::Result<Tensor> {
        let (from, to) = (self.sigmas[index], self.sigmas[index + 1]);
        let original = match self.config.prediction {
            Prediction::Epsilon => (sample - (prediction * from)?)?,
            Prediction::VPrediction => {
                ((prediction * (-from / (from * from + 1.0).sqrt()))?
                    + (sample / (from * from + 1.0))?)?
            }
        };
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let down = (to * to - up * up).sqrt();
        let derivative = ((sample - original)? / from)?;
        let next = (sample + (derivative * (down - from))?)?;
        Ok((next + (noise * up)?)?)
    }
}

/// numpy's round: halves go to the even neighbour.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: SchedulerKind, spacing: Spacing, steps: usize) -> Schedule {
        let config = ScheduleConfig::stable_diffusion(Some(spacing), Prediction::Epsilon);
        Schedule::new(kind, &config, steps).expect("valid steps")
    }

    #[test]
    fn timesteps_follow_each_spacing() {
        let leading = schedule(SchedulerKind::Ddim, Spacing::Leading, 4);
        assert_eq!(leading.timesteps(), &[751.0, 501.0, 251.0, 1.0]);
        let trailing = schedule(SchedulerKind::Ddim, Spacing::Trailing, 3);
        assert_eq!(trailing.timesteps(), &[999.0, 666.0, 332.0]);
        let linspace = schedule(SchedulerKind::EulerAncestral, Spacing::Linspace, 3);
        assert_eq!(linspace.timesteps(), &[999.0, 499.5, 0.0]);
    }

    #[test]
    fn img2img_runs_the_truncated_share_of_steps_and_at_least_one() {
        let s = schedule(SchedulerKind::Ddim, Spacing::Leading, 20);
        assert_eq!(s.img2img_start(0.5), 10);
        assert_eq!(s.img2img_start(0.26), 15); // int(5.2) = 5 steps
        assert_eq!(s.img2img_start(1.0), 0);
        assert_eq!(s.img2img_start(0.01), 19); // diffusers: 0 steps, an error
    }

    #[test]
    fn step_counts_outside_the_training_range_are_refused() {
        let config = ScheduleConfig::stable_diffusion(None, Prediction::Epsilon);
        assert!(Schedule::new(SchedulerKind::Ddim, &config, 0).is_err());
        assert!(Schedule::new(SchedulerKind::Ddim, &config, 1001).is_err());
        assert!(Schedule::new(SchedulerKind::Ddim, &config, 1000).is_ok());
    }

    #[test]
    fn numpy_rounding_goes_to_even() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(666.6667), 667.0);
    }
}
