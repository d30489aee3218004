//! The walk's guard: judges every keyframe as decoded (what the viewer will see) and asks for a
//! re-anchor when the walk stagnates or degrades. Chains of img2img keyframes drift (contrast
//! and saturation creep up, detail washes out or turns to noise) or settle into near-copies of
//! one picture; a CPPN walk can wander into a flat field of colour.
//!
//! Per keyframe: a signature (8x8 cells of mean luma and two opponent colours) and health
//! figures (contrast, colourfulness, detail, clipped channels), all from a sparse grid of at
//! most `MAX_SAMPLES` pixels, so a check costs well under a millisecond at any size. Novelty is
//! the signature's distance to the nearest of the last `reanchor.history` keyframes. A check
//! that fails `reanchor.patience` keyframes running asks for a re-anchor: the keyframe stage
//! makes its next keyframe fresh (txt2img, or a new random latent) with the next theme, and the
//! decoder walks there as to any keyframe, so it is never a cut. Until that fresh keyframe
//! arrives nothing more is judged.
//!
//! Inputs: decoded keyframes (packed RGB8) and the `[reanchor]` settings. Outputs: a
//! `Reanchor` the caller logs and passes to `Control::request_reanchor`. Runs on the decoder
//! thread. Cannot fail: an empty or odd-sized frame is skipped.

use std::collections::VecDeque;

use crate::config::ReanchorConfig;
use crate::events;

/// Pixels examined per keyframe at most (a grid over the frame).
pub(crate) const MAX_SAMPLES: usize = 16_384;
/// Signature cells per side.
const CELLS: usize = 8;
/// A channel value this close to 0 or 255 counts as clipped.
const CLIP_MARGIN: u8 = 2;

/// What the guard measures of one keyframe. Every figure is on a 0..1 scale of pixel values.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Mean luma, two opponent colours (red-green, yellow-blue) per cell.
    pub signature: Vec<f32>,
    /// Standard deviation of luma.
    pub contrast: f32,
    /// Hasler and Süsstrunk's colourfulness (spread plus 0.3 x mean of the opponent colours).
    pub colourfulness: f32,
    /// Mean luma step between neighbouring pixels: fine detail (high: noise).
    pub detail: f32,
    /// Share of channel values at 0 or 255 (within `CLIP_MARGIN`).
    pub clipped: f32,
}

/// The figure a check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Novelty,
    Contrast,
    Colourfulness,
    Detail,
    Clipped,
}

/// Why the guard asks for a re-anchor: the check, its figure and the threshold it crossed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reanchor {
    pub reason: &'static str,
    pub metric: Metric,
    pub value: f32,
    pub threshold: f32,
    /// The keyframe that decided it.
    pub index: u64,
}

impl Reanchor {
    /// The `reanchor` log line: the figure goes under the metric's own name.
    pub fn event(&self) -> events::Reanchor {
        let value = Some(self.value as f64);
        let mut event = events::Reanchor {
            reason: self.reason.into(),
            threshold: self.threshold as f64,
            index: self.index,
            ..Default::default()
        };
        *match self.metric {
            Metric::Novelty => &mut event.novelty,
            Metric::Contrast => &mut event.contrast,
            Metric::Colourfulness => &mut event.colourfulness,
            Metric::Detail => &mut event.detail,
            Metric::Clipped => &mut event.clipped,
        } = value;
        event
    }
}

/// Measures one packed RGB8 frame; `None` when its size doesn't match.
pub(crate) fn judge(rgb: &[u8], width: usize, height: usize) -> Option<Judgement> {
    if width < 2 || height < 2 || rgb.len() != width * height * 3 {
        return None;
    }
    let step = ((width * height) as f64 / MAX_SAMPLES as f64)
        .sqrt()
        .ceil()
        .max(1.0) as usize;
    let luma = |i: usize| {
        let p = &rgb[i * 3..i * 3 + 3];
        (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) / 255.0
    };
    let mut cells = vec![[0f32; 4]; CELLS * CELLS];
    let (mut sum_y, mut sum_yy) = (0f64, 0f64);
    let (mut sum_rg, mut sum_rg2, mut sum_yb, mut sum_yb2) = (0f64, 0f64, 0f64, 0f64);
    let (mut detail, mut clipped, mut samples) = (0f64, 0usize, 0usize);
    for y in (0..height - 1).step_by(step) {
        let cell_row = y * CELLS / height * CELLS;
        for x in (0..width - 1).step_by(step) {
            let i = y * width + x;
            let p = &rgb[i * 3..i * 3 + 3];
            let (r, g, b) = (
                p[0] as f32 / 255.0,
                p[1] as f32 / 255.0,
                p[2] as f32 / 255.0,
            );
            let l = luma(i);
            let rg = r - g;
            let yb = 0.5 * (r + g) - b;
            sum_y += l as f64;
            sum_yy += (l * l) as f64;
            sum_rg += rg as f64;
            sum_rg2 += (rg * rg) as f64;
            sum_yb += yb as f64;
            sum_yb2 += (yb * yb) as f64;
            detail += (((l - luma(i + 1)).abs() + (l - luma(i + width)).abs()) * 0.5) as f64;
            clipped += p
                .iter()
                .filter(|&&c| c <= CLIP_MARGIN || c >= 255 - CLIP_MARGIN)
                .count();
            let cell = &mut cells[cell_row + x * CELLS / width];
            cell[0] += l;
            cell[1] += rg;
            cell[2] += yb;
            cell[3] += 1.0;
            samples += 1;
        }
    }
    let n = samples as f64;
    let spread = |sum: f64, sum_sq: f64| (sum_sq / n - (sum / n).powi(2)).max(0.0);
    let colourfulness = (spread(sum_rg, sum_rg2) + spread(sum_yb, sum_yb2)).sqrt()
        + 0.3 * ((sum_rg / n).powi(2) + (sum_yb / n).powi(2)).sqrt();
    let signature = cells
        .iter()
        .flat_map(|cell| {
            let count = cell[3].max(1.0);
            [cell[0] / count, cell[1] / count, cell[2] / count]
        })
        .collect();
    Some(Judgement {
        signature,
        contrast: spread(sum_y, sum_yy).sqrt() as f32,
        colourfulness: colourfulness as f32,
        detail: (detail / n) as f32,
        clipped: clipped as f32 / (3 * samples) as f32,
    })
}

/// Mean absolute difference of two signatures.
pub(crate) fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len().max(1) as f32
}

/// One check: its name, figure, threshold and whether the figure fails it.
struct Check {
    reason: &'static str,
    metric: Metric,
    value: f32,
    threshold: f32,
    failed: bool,
}

/// The guard's memory of the walk.
pub(crate) struct WalkGuard {
    settings: ReanchorConfig,
    history: VecDeque<Vec<f32>>,
    /// Keyframes running that failed each check, by reason.
    streaks: Vec<(&'static str, u32)>,
    /// A re-anchor was asked for and its fresh keyframe has not come yet.
    waiting: bool,
}

impl WalkGuard {
    pub(crate) fn new(settings: ReanchorConfig) -> Self {
        Self {
            settings,
            history: VecDeque::new(),
            streaks: Vec::new(),
            waiting: false,
        }
    }

    /// New thresholds from a reload; the walk's memory stays.
    pub(crate) fn reconfigure(&mut self, settings: &ReanchorConfig) {
        self.settings = settings.clone();
        while self.history.len() > self.settings.history {
            self.history.pop_front();
        }
    }

    /// Judges keyframe `index` (`fresh`: the re-anchor asked for, or a first keyframe). Returns
    /// the re-anchor to ask for, if any.
    pub(crate) fn observe(
        &mut self,
        index: u64,
        fresh: bool,
        rgb: &[u8],
        width: usize,
        height: usize,
    ) -> Option<Reanchor> {
        if fresh {
            self.waiting = false;
            self.history.clear();
            self.streaks.clear();
        }
        if !self.settings.enabled || self.waiting {
            return None;
        }
        let judgement = judge(rgb, width, height)?;
        let verdict = self.verdict(&judgement, index);
        if self.settings.history > 0 {
            if self.history.len() == self.settings.history {
                self.history.pop_front();
            }
            self.history.push_back(judgement.signature);
        }
        if verdict.is_some() {
            self.waiting = true;
        }
        verdict
    }

    /// Distance of `signature` to the nearest remembered keyframe (`None`: none remembered).
    pub(crate) fn novelty(&self, signature: &[f32]) -> Option<f32> {
        self.history
            .iter()
            .map(|old| distance(old, signature))
            .reduce(f32::min)
    }

    /// The first check that has now failed `patience` keyframes running.
    fn verdict(&mut self, judgement: &Judgement, index: u64) -> Option<Reanchor> {
        let novelty = self.novelty(&judgement.signature);
        let s = &self.settings;
        let checks = [
            Check {
                reason: "stagnant",
                metric: Metric::Novelty,
                value: novelty.unwrap_or(f32::INFINITY),
                threshold: s.min_novelty,
                failed: novelty.is_some_and(|n| n < s.min_novelty),
            },
            Check {
                reason: "flat",
                metric: Metric::Contrast,
                value: judgement.contrast,
                threshold: s.min_contrast,
                failed: judgement.contrast < s.min_contrast,
            },
            Check {
                reason: "washed-out",
                metric: Metric::Colourfulness,
                value: judgement.colourfulness,
                threshold: s.min_colourfulness,
                failed: judgement.colourfulness < s.min_colourfulness,
            },
            Check {
                reason: "blurred",
                metric: Metric::Detail,
                value: judgement.detail,
                threshold: s.min_detail,
                failed: judgement.detail < s.min_detail,
            },
            Check {
                reason: "noise",
                metric: Metric::Detail,
                value: judgement.detail,
                threshold: s.max_detail,
                failed: judgement.detail > s.max_detail,
            },
            Check {
                reason: "saturated",
                metric: Metric::Clipped,
                value: judgement.clipped,
                threshold: s.max_clipped,
                failed: judgement.clipped > s.max_clipped,
            },
        ];
        let mut verdict = None;
        for check in checks {
            let streak = match self.streaks.iter_mut().find(|(r, _)| *r == check.reason) {
                Some((_, streak)) => streak,
                None => {
                    self.streaks.push((check.reason, 0));
                    &mut self.streaks.last_mut().expect("just pushed").1
                }
            };
            *streak = if check.failed { *streak + 1 } else { 0 };
            if verdict.is_none() && *streak >= s.patience.max(1) {
                verdict = Some(Reanchor {
                    reason: check.reason,
                    metric: check.metric,
                    value: check.value,
                    threshold: check.threshold,
                    index,
                });
            }
        }
        verdict
    }
}

/// A walk of `keyframes` keyframes made and judged in turn, as the keyframe stage and the
/// decoder do but without the pipeline's lead: what `walk` found.
#[cfg(any(test, feature = "test-doubles"))]
#[derive(Debug, Default)]
pub struct WalkReport {
    pub keyframes: u64,
    pub reanchors: Vec<Reanchor>,
    /// Every keyframe's figures, in order (novelty: `None` for a fresh keyframe).
    pub figures: Vec<(Option<f32>, Judgement)>,
    /// Time of each check (`WalkGuard::observe`), in nanoseconds.
    pub check_ns: Vec<u64>,
}

/// Walks `generator` from a fresh keyframe for `keyframes` keyframes seeded by `run_seed`,
/// judging each decoded keyframe and re-anchoring when the guard asks (for the tests and
/// `cargo bench --bench guard`).
#[cfg(any(test, feature = "test-doubles"))]
pub fn walk(
    generator: &mut dyn crate::generator::Generator,
    keyframes: u64,
    run_seed: u64,
    settings: &ReanchorConfig,
) -> anyhow::Result<WalkReport> {
    use crate::generator::{keyframe_seed, KeyframeRequest};
    let (width, height) = generator.resolution();
    let mut guard = WalkGuard::new(settings.clone());
    let mut report = WalkReport {
        keyframes,
        ..WalkReport::default()
    };
    let mut previous = None;
    for index in 0..keyframes {
        let request = KeyframeRequest {
            index,
            seed: keyframe_seed(run_seed, index),
            previous: previous.take(),
        };
        let fresh = request.previous.is_none();
        let latent = generator
            .keyframes(std::slice::from_ref(&request))?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("generator returned no keyframe"))?;
        let rgb = generator
            .decode_keyframe(&latent.unsqueeze(0)?)?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("generator decoded no keyframe"))?;
        // The figures as the guard will see them (it judges again, timed, in `observe`).
        if let Some(judgement) = judge(&rgb, width as usize, height as usize) {
            let novelty = if fresh {
                None
            } else {
                guard.novelty(&judgement.signature)
            };
            report.figures.push((novelty, judgement));
        }
        let started = std::time::Instant::now();
        let verdict = guard.observe(index, fresh, &rgb, width as usize, height as usize);
        report.check_ns.push(started.elapsed().as_nanos() as u64);
        match verdict {
            Some(reanchor) => {
                report.reanchors.push(reanchor);
                generator.next_theme();
            }
            None => previous = Some(latent),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ModelKind};
    use crate::generator::fake::{Decay, WalkingFake};

    fn defaults() -> ReanchorConfig {
        Config::default().reanchor
    }

    fn frame(width: usize, height: usize, pixel: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
        (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .flat_map(|(x, y)| pixel(x, y))
            .collect()
    }

    /// A smooth coloured gradient: healthy by every measure.
    fn gradient(shift: usize) -> Vec<u8> {
        frame(64, 36, |x, y| {
            [
                (x * 3 + shift) as u8,
                (y * 5) as u8,
                (200 - x - shift) as u8,
            ]
        })
    }

    #[test]
    fn figures_tell_flat_noisy_clipped_and_healthy_frames_apart() {
        let flat = judge(&frame(64, 36, |_, _| [90, 120, 150]), 64, 36).unwrap();
        assert_eq!((flat.contrast, flat.detail, flat.clipped), (0.0, 0.0, 0.0));
        let noise = judge(
            &frame(64, 36, |x, y| {
                let b = crate::generator::keyframe_seed(x as u64, y as u64).to_le_bytes();
                [b[0], b[1], b[2]]
            }),
            64,
            36,
        )
        .unwrap();
        assert!(noise.detail > defaults().max_detail, "{noise:?}");
        let white = judge(&frame(64, 36, |x, _| [255, (x % 2 * 255) as u8, 0]), 64, 36).unwrap();
        assert_eq!(white.clipped, 1.0);
        let healthy = judge(&gradient(0), 64, 36).unwrap();
        let s = defaults();
        assert!(healthy.contrast > s.min_contrast, "{healthy:?}");
        assert!(healthy.detail < s.max_detail && healthy.clipped < s.max_clipped);
        assert!(healthy.colourfulness > 0.1);
        assert_eq!(healthy.signature.len(), CELLS * CELLS * 3);
        assert_eq!(judge(&[0; 10], 64, 36), None, "size that doesn't match");
        assert_eq!(judge(&[], 0, 0), None);
    }

    #[test]
    fn a_stuck_walk_is_reanchored_after_patience_and_judged_again_once_fresh() {
        let settings = defaults();
        let mut guard = WalkGuard::new(settings.clone());
        let same = gradient(0);
        assert_eq!(guard.observe(0, true, &same, 64, 36), None);
        assert_eq!(guard.observe(1, false, &same, 64, 36), None, "patience 2");
        let reanchor = guard.observe(2, false, &same, 64, 36).expect("re-anchor");
        assert_eq!(
            (reanchor.reason, reanchor.metric),
            ("stagnant", Metric::Novelty)
        );
        assert_eq!((reanchor.value, reanchor.index), (0.0, 2));
        // Keyframes already made before the fresh one are not judged: one re-anchor each time.
        assert_eq!(guard.observe(3, false, &same, 64, 36), None);
        assert_eq!(guard.observe(4, false, &same, 64, 36), None);
        // The fresh keyframe clears the memory; the walk is judged from there.
        assert_eq!(guard.observe(5, true, &same, 64, 36), None);
        assert_eq!(guard.observe(6, false, &gradient(20), 64, 36), None);
        assert_eq!(guard.observe(7, false, &gradient(40), 64, 36), None);
        // A walk that comes back to a picture of the last `history` is stagnant too.
        assert_eq!(guard.observe(8, false, &gradient(20), 64, 36), None);
        let back = guard
            .observe(9, false, &gradient(40), 64, 36)
            .expect("cycle");
        assert_eq!(back.reason, "stagnant");
        let line = back.event().to_string();
        assert!(
            line.starts_with("reanchor reason=stagnant novelty=0.000 threshold=0.004 index=9"),
            "{line}"
        );
        let mut off = WalkGuard::new(ReanchorConfig {
            enabled: false,
            ..settings
        });
        assert!((0..10).all(|i| off.observe(i, i == 0, &same, 64, 36).is_none()));
    }

    #[test]
    fn each_decaying_fake_is_reanchored_within_a_few_keyframes_and_a_healthy_one_never() {
        let settings = defaults();
        for (decay, reason) in [
            (Decay::Converge, "stagnant"),
            (Decay::Saturate, "saturated"),
            (Decay::Fade, "flat"),
        ] {
            let mut fake = WalkingFake::new(96, 54, decay);
            let report = walk(&mut fake, 40, 3, &settings).unwrap();
            let first = report.reanchors.first().expect("re-anchored");
            assert_eq!(first.reason, reason, "{decay:?}");
            assert!(first.index <= 6, "{decay:?}: first at {}", first.index);
            // The fresh keyframe after each re-anchor is healthy again, so it happens over and
            // over, a few keyframes apart, instead of every keyframe.
            assert!(
                report.reanchors.len() >= 4,
                "{decay:?}: {:?}",
                report.reanchors
            );
            assert!(
                report.reanchors.len() <= 10,
                "{decay:?}: {:?}",
                report.reanchors
            );
        }
        let mut healthy = WalkingFake::new(96, 54, Decay::Healthy);
        let report = walk(&mut healthy, 200, 3, &settings).unwrap();
        assert_eq!(report.reanchors, vec![]);
    }

    #[test]
    fn a_healthy_builtin_walk_of_1000_keyframes_reanchors_at_most_one_percent() {
        for kind in [
            ModelKind::Cppn,
            ModelKind::Warp,
            ModelKind::Flame,
            ModelKind::Mix,
        ] {
            let mut config = Config::default();
            config.model.kind = kind;
            config.model.size = Some((128, 72));
            let mut generator = crate::generator::build(&config, 11).unwrap();
            let report = walk(generator.as_mut(), 1000, 11, &config.reanchor).unwrap();
            assert_eq!(report.figures.len(), 1000);
            assert!(
                report.reanchors.len() <= 10,
                "{kind:?}: {:?}",
                report.reanchors
            );
        }
    }
}
