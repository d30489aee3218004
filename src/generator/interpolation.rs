//! Interpolation: the walk through latent space from one keyframe to the next, here with the
//! generators whose latents it walks (the built-in generator blends its own keyframes with
//! `slerp` too): the in-between latents of one transition, by spherical linear interpolation
//! (slerp) between two keyframe latents, with optional easing.
//!
//! Inputs: two keyframe latents of the same shape. Output: a range of the transition's latents
//! stacked on a new first dimension, on the latents' device. Runs on the decoder thread, outside
//! the model lock (it needs no model). Errors are candle's (shape mismatch).

use candle_core::{DType, Tensor};

use crate::config::Easing;

/// Above this |cos(angle)| the vectors are treated as parallel and lerp is used: slerp divides
/// by sin(angle), which is then too close to zero to be stable.
pub(crate) const PARALLEL_DOT_THRESHOLD: f64 = 0.9995;

/// Coefficients (for `a`, for `b`) of the point `t` of the way from `a` to `b`.
#[derive(Debug, Clone, Copy)]
struct SlerpBasis {
    /// Angle between a and b; `None` when (nearly) parallel.
    theta: Option<f64>,
}

impl SlerpBasis {
    fn new(a: &Tensor, b: &Tensor) -> candle_core::Result<Self> {
        let a = a.flatten_all()?.to_dtype(DType::F64)?;
        let b = b.flatten_all()?.to_dtype(DType::F64)?;
        let dot = (&a * &b)?.sum_all()?.to_scalar::<f64>()?;
        let norms = a.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt()
            * b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
        let cos = if norms > 0.0 { dot / norms } else { 1.0 };
        let theta = (cos.abs() <= PARALLEL_DOT_THRESHOLD).then(|| cos.clamp(-1.0, 1.0).acos());
        Ok(Self { theta })
    }

    fn coefficients(self, t: f64) -> (f64, f64) {
        match self.theta {
            Some(theta) => {
                let sin = theta.sin();
                (((1.0 - t) * theta).sin() / sin, (t * theta).sin() / sin)
            }
            None => (1.0 - t, t),
        }
    }
}

fn combine(a: &Tensor, b: &Tensor, (ca, cb): (f64, f64)) -> candle_core::Result<Tensor> {
    a.affine(ca, 0.0)? + b.affine(cb, 0.0)?
}

/// The point `t` (0..=1) of the way from `a` to `b` along the great circle; lerp when the two
/// are nearly parallel. `t = 0` gives `a` and `t = 1` gives `b` exactly.
pub(crate) fn slerp(a: &Tensor, b: &Tensor, t: f64) -> candle_core::Result<Tensor> {
    if t == 0.0 {
        return Ok(a.clone());
    }
    if t == 1.0 {
        return Ok(b.clone());
    }
    combine(a, b, SlerpBasis::new(a, b)?.coefficients(t))
}

pub(crate) fn ease(t: f64, easing: Easing) -> f64 {
    match easing {
        Easing::Linear => t,
        Easing::Smoothstep => t * t * (3.0 - 2.0 * t),
    }
}

/// The walk from one keyframe latent to the next, `frames` steps long: step 0 is `a`, step
/// `frames` is `b`. Latents are made a range at a time, so a long transition never holds more
/// than one decode batch of them.
pub(crate) struct Transition {
    a: Tensor,
    b: Tensor,
    basis: SlerpBasis,
    frames: usize,
    easing: Easing,
}

impl Transition {
    pub(crate) fn new(
        a: &Tensor,
        b: &Tensor,
        frames: usize,
        easing: Easing,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            basis: SlerpBasis::new(a, b)?,
            a: a.clone(),
            b: b.clone(),
            frames: frames.max(1),
            easing,
        })
    }

    /// The latents of steps `range` (within `0..=frames`), stacked on dimension 0.
    pub(crate) fn latents(&self, range: std::ops::Range<usize>) -> candle_core::Result<Tensor> {
        let fractions: Vec<f64> = range.map(|i| i as f64 / self.frames as f64).collect();
        self.latents_at(&fractions)
    }

    /// The latents at these fractions of the way (0 is `a`, 1 and beyond `b`; eased), stacked
    /// on dimension 0: the walk taken with any number of steps, even one that changes midway.
    pub(crate) fn latents_at(&self, fractions: &[f64]) -> candle_core::Result<Tensor> {
        let latents = fractions
            .iter()
            .map(|&u| {
                if u <= 0.0 {
                    Ok(self.a.clone())
                } else if u >= 1.0 {
                    Ok(self.b.clone())
                } else {
                    combine(
                        &self.a,
                        &self.b,
                        self.basis.coefficients(ease(u, self.easing)),
                    )
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::stack(&latents, 0)
    }
}

/// The `frames` latents from `a` (included) towards `b` (excluded: it opens the next
/// transition), stacked on dimension 0.
pub fn transition(
    a: &Tensor,
    b: &Tensor,
    frames: usize,
    easing: Easing,
) -> candle_core::Result<Tensor> {
    Transition::new(a, b, frames, easing)?.latents(0..frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn vector(values: &[f32]) -> Tensor {
        Tensor::from_slice(values, values.len(), &Device::Cpu).expect("tensor")
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values")
    }

    fn norm(t: &Tensor) -> f64 {
        values(t)
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn endpoints_are_exact() {
        let (a, b) = (vector(&[1.0, 2.0, 3.0]), vector(&[-3.0, 0.5, 2.0]));
        assert_eq!(values(&slerp(&a, &b, 0.0).unwrap()), values(&a));
        assert_eq!(values(&slerp(&a, &b, 1.0).unwrap()), values(&b));
    }

    #[test]
    fn equal_norm_inputs_keep_their_norm_all_the_way() {
        let (a, b) = (vector(&[3.0, 0.0, 4.0]), vector(&[0.0, 5.0, 0.0]));
        for step in 0..=10 {
            let n = norm(&slerp(&a, &b, step as f64 / 10.0).unwrap());
            assert!((n - 5.0).abs() < 1e-4, "norm {n} at step {step}");
        }
        // Lerp would sag in the middle: slerp does not.
        let mid = values(&slerp(&a, &b, 0.5).unwrap());
        let expected = 5.0 / 2f32.sqrt();
        assert!((mid[1] - expected).abs() < 1e-4, "{mid:?}");
    }

    #[test]
    fn nearly_parallel_inputs_fall_back_to_lerp() {
        let (a, b) = (vector(&[1.0, 0.0]), vector(&[2.0, 1e-4]));
        let mid = values(&slerp(&a, &b, 0.5).unwrap());
        assert!(
            (mid[0] - 1.5).abs() < 1e-6 && mid.iter().all(|v| v.is_finite()),
            "{mid:?}"
        );
        // Identical vectors (angle 0) must not divide by zero either.
        let same = values(&slerp(&a, &a, 0.3).unwrap());
        assert_eq!(same, vec![1.0, 0.0]);
    }

    #[test]
    fn transition_starts_at_a_and_approaches_b() {
        let (a, b) = (vector(&[1.0, 0.0]), vector(&[0.0, 1.0]));
        let frames = transition(&a, &b, 4, Easing::Linear).unwrap();
        assert_eq!(frames.dims(), &[4, 2]);
        let rows = frames.to_vec2::<f32>().unwrap();
        assert_eq!(rows[0], vec![1.0, 0.0]);
        let angle = |r: &Vec<f32>| (r[1] as f64).atan2(r[0] as f64);
        for (i, row) in rows.iter().enumerate() {
            let expected = std::f64::consts::FRAC_PI_2 * i as f64 / 4.0;
            assert!((angle(row) - expected).abs() < 1e-5, "frame {i}: {row:?}");
        }
    }

    #[test]
    fn smoothstep_eases_in_and_out() {
        assert_eq!(ease(0.0, Easing::Smoothstep), 0.0);
        assert_eq!(ease(1.0, Easing::Smoothstep), 1.0);
        assert!(ease(0.1, Easing::Smoothstep) < 0.1);
        assert!(ease(0.9, Easing::Smoothstep) > 0.9);
        assert_eq!(ease(0.5, Easing::Smoothstep), 0.5);
    }

    #[test]
    fn ranges_of_a_transition_join_into_the_whole_and_end_at_b() {
        let (a, b) = (vector(&[1.0, 0.0, 0.0]), vector(&[0.0, 1.0, 0.0]));
        let walk = Transition::new(&a, &b, 5, Easing::Smoothstep).unwrap();
        let whole = values(&walk.latents(0..6).unwrap());
        let parts = [
            values(&walk.latents(0..2).unwrap()),
            values(&walk.latents(2..6).unwrap()),
        ]
        .concat();
        assert_eq!(whole, parts);
        assert_eq!(values(&walk.latents(5..6).unwrap()), values(&b));
        assert_eq!(
            values(&transition(&a, &b, 5, Easing::Smoothstep).unwrap()),
            whole[..15].to_vec()
        );
    }
}
