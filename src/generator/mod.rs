//! The model seam: a `Generator` makes keyframe latents and decodes latents to RGB images, both
//! in batches, on a candle `Device`. `ModelLock` shares one generator between the keyframe thread
//! and the decode thread and measures how long each waits for it; a generator whose decoders
//! have weights of their own hands them over (`split_decoder`) to be held under a second lock,
//! so decoding never waits for a keyframe. `build` gives Stable Diffusion (with
//! `model.fallback = "cppn"`) as a `handover::Handover`: the built-in generator while the model
//! loads on its own thread, the model from the keyframe after it is ready.
//!
//! Inputs: keyframe requests (index, seed, previous latent) and stacked latents. Outputs: latents
//! and RGB8 frames at the generator's internal resolution. Runs on the keyframe and decoder
//! threads, never on the display path. A failing generator returns an error to its caller, which
//! logs it and retries later; the display keeps playing what is buffered.

pub(crate) mod builtin;
/// Test double: flat colours, steerable (slow, stalled, failing). Not in the shipped binary.
#[cfg(any(test, feature = "test-doubles"))]
pub(crate) mod fake;
pub(crate) mod handover;
pub(crate) mod interpolation;
pub(crate) mod stable_diffusion;
pub(crate) mod test_pattern;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use candle_core::{Device, Tensor};

/// What the keyframe stage asks of a generator.
#[derive(Debug, Clone)]
pub struct KeyframeRequest {
    /// Position in the run, 0 for the first keyframe.
    pub index: u64,
    /// Seed of this keyframe alone, derived from the run seed and index (so a moment can be
    /// reproduced).
    pub seed: u64,
    /// The keyframe this one drifts from; `None` for the first.
    pub previous: Option<Tensor>,
}

/// What a generator can trade for speed: its part of the adapt ladder (`pipeline::adapt`).
#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    /// Decoded frame sizes it can switch between: the configured one first, then smaller.
    pub sizes: Vec<(u32, u32)>,
    /// In-between frames can move from the full decoder to a tiny one (its weights are loaded
    /// and it is not already in use for them).
    pub tiny_decoder: bool,
    /// Keyframe step counts it can run: the configured count first, then fewer; empty where
    /// keyframes have no steps.
    pub steps: Vec<usize>,
}

impl Knobs {
    /// One size, nothing else to trade.
    pub fn fixed(size: (u32, u32)) -> Self {
        Self {
            sizes: vec![size],
            tiny_decoder: false,
            steps: Vec::new(),
        }
    }

    /// `size` and smaller sizes of the same shape at each of `scales` (below 1, largest first)
    /// while both sides stay at least `min_side` pixels (a scale that gives no new size is left
    /// out): the shape never changes, so neither does the picture's framing on screen.
    pub fn scaled_sizes(size: (u32, u32), scales: &[f64], min_side: u32) -> Vec<(u32, u32)> {
        let mut sizes = vec![size];
        for scale in scales {
            let side = |n: u32| (n as f64 * scale).round() as u32;
            let smaller = (side(size.0), side(size.1));
            if smaller.0 < min_side || smaller.1 < min_side {
                break;
            }
            if sizes.last() != Some(&smaller) {
                sizes.push(smaller);
            }
        }
        sizes
    }
}

/// How the decoders work now: which of `Knobs::sizes` they decode at, and whether in-between
/// frames go through the tiny decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DecodeQuality {
    pub size: usize,
    pub tiny: bool,
}

pub trait Generator: Send {
    /// Short name for logs and status.json.
    fn name(&self) -> &str;
    fn device(&self) -> &Device;
    /// Internal resolution (width, height) of decoded frames.
    fn resolution(&self) -> (u32, u32);
    /// One keyframe latent per request, in order.
    fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>>;
    /// Decodes latents stacked on dimension 0 into one packed RGB8 image each.
    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>>;
    /// Decodes the keyframe that opens a transition ([1, ...]); a generator with a cheaper
    /// decoder for in-between frames uses its best one here.
    fn decode_keyframe(&mut self, latent: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        self.decode(latent)
    }
    /// The theme (its index and positive prompt) of keyframe `index`, for the log, so the
    /// keyframe can be reproduced; `None` for generators without prompts.
    fn keyframe_label(&self, _index: u64) -> Option<(u64, &str)> {
        None
    }
    /// Called before each keyframe, under the model lock: a generator standing in for a
    /// loading model takes it over here (`handover`).
    fn prepare(&mut self) {}
    /// For a generator standing in while a model loads (`handover::Handover`), that model's
    /// side of it; `None` for every other generator.
    fn stand_in(&self) -> Option<StandIn> {
        None
    }
    /// Moves on to the next theme now (a re-anchor); generators without prompts ignore it.
    fn next_theme(&mut self) {}
    /// Whether the walk's guard should judge this generator's keyframes: not for generators
    /// whose pictures are meant to stay put or be flat (test pattern, test doubles).
    fn guarded(&self) -> bool {
        true
    }
    /// New themes from a reload; generators without prompts ignore them.
    fn reconfigure(&mut self, _prompts: &crate::config::PromptsConfig) {}
    /// Hands over the decoders when they have weights of their own, so the pipeline can hold
    /// them under their own lock and decode while a keyframe is being made; afterwards `decode`
    /// and `decode_keyframe` on the generator fail. `None`: decoding stays with the generator.
    fn split_decoder(&mut self) -> Option<Box<dyn FrameDecoder>> {
        None
    }
    /// What it can trade for speed (the adapt ladder's generator rungs).
    fn knobs(&self) -> Knobs {
        Knobs::fixed(self.resolution())
    }
    /// Decode at `quality` from now on (a generator that decodes itself; split-off decoders
    /// take it through `FrameDecoder`).
    fn set_decode_quality(&mut self, _quality: DecodeQuality) {}
    /// Make keyframes with this many steps from the next one (one of `Knobs::steps`).
    fn set_steps(&mut self, _steps: usize) {}
}

/// Decoders split off a generator (`Generator::split_decoder`); the same contract as its
/// `decode` and `decode_keyframe`, latents on any device.
pub trait FrameDecoder: Send {
    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>>;
    fn decode_keyframe(&mut self, latent: &Tensor) -> anyhow::Result<Vec<Vec<u8>>>;
    /// Decode at `quality` from now on (`Generator::set_decode_quality`).
    fn set_decode_quality(&mut self, _quality: DecodeQuality) {}
}

/// The configured generator (weights seeded by `seed` for the built-in one). A Stable Diffusion
/// model that can't be loaded falls back to the built-in generator when `model.fallback` says so.
pub fn build(config: &crate::config::Config, seed: u64) -> anyhow::Result<Box<dyn Generator>> {
    use crate::config::{Fallback, ModelKind, CPPN_DEFAULT_SIZE};
    let cppn = |size: (u32, u32)| builtin::cppn(config, seed, Some(size));
    match config.model.kind {
        ModelKind::Cppn => builtin::build(builtin::Style::Cppn, config, seed),
        ModelKind::Warp => builtin::build(builtin::Style::Warp, config, seed),
        ModelKind::Flame => builtin::build(builtin::Style::Flame, config, seed),
        ModelKind::Mix => Ok(Box::new(builtin::mix::MixGenerator::new(config, seed)?)),
        ModelKind::TestPattern => {
            let (width, height) = config.model.size.unwrap_or(CPPN_DEFAULT_SIZE);
            Ok(Box::new(test_pattern::TestPattern::new(width, height)))
        }
        // Art at once: the built-in generator while the model loads, then a hand-over.
        ModelKind::StableDiffusion if config.model.fallback == Fallback::Cppn => {
            let frame_size = config
                .model
                .frame_size(config.interpolation.resolution_divisor);
            let interim_size = interim_size(frame_size);
            let owned = config.clone();
            Ok(Box::new(handover::Handover::start(
                cppn(interim_size)?,
                cppn(interim_size)?,
                frame_size,
                "stable-diffusion",
                stable_diffusion::configured_name(config),
                move || {
                    stable_diffusion::load_configured(&owned)
                        .map(|model| Box::new(model) as Box<dyn Generator>)
                },
            )?))
        }
        ModelKind::StableDiffusion => stable_diffusion::load_configured(config)
            .map(|model| Box::new(model) as Box<dyn Generator>)
            .map_err(|error| {
                error.context("cannot load the Stable Diffusion model (model.fallback = \"none\")")
            }),
    }
}

/// The built-in generator's size while a model of `frame_size` loads: the same shape, with no
/// more pixels than the built-in generator's own default (256 x 144), so it costs what the
/// built-in generator always costs; its frames are resized to the model's (its smooth fields
/// lose nothing by it).
fn interim_size((width, height): (u32, u32)) -> (u32, u32) {
    use crate::config::CPPN_DEFAULT_SIZE;
    let budget = (CPPN_DEFAULT_SIZE.0 * CPPN_DEFAULT_SIZE.1) as f64;
    let pixels = (width.max(1) * height.max(1)) as f64;
    let scale = (budget / pixels).sqrt().min(1.0);
    (
        ((width as f64 * scale) as u32).max(1),
        ((height as f64 * scale) as u32).max(1),
    )
}

/// Seed of keyframe `index` in a run seeded `run_seed` (SplitMix64 finaliser: neighbouring
/// indices give unrelated seeds).
pub fn keyframe_seed(run_seed: u64, index: u64) -> u64 {
    let mut z = run_seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a generator standing in for a loading model (the hand-over) tells the pipeline about it.
#[derive(Debug, Clone)]
pub struct StandIn {
    /// The name the walk is saved and resumed under: the model being loaded (or, once its load
    /// has failed, the generator that stays).
    pub settled_name: String,
    /// A model is still loading: the walk is neither saved nor resumed until it is ready.
    pub warming_up: bool,
    /// How the load fared, known the moment it ends (`warming_up` changes only at the next
    /// keyframe, which may be minutes away).
    pub load: LoadWatch,
    /// Something the people running the display should know (shown in status.json): why the
    /// built-in generator stays.
    pub note: Option<String>,
}

/// The outcome of a model load, shared by the loader thread (which sets it when the load
/// fails) and the status writer (which reads it at every tick).
#[derive(Debug, Clone, Default)]
pub struct LoadWatch(Arc<Mutex<Option<String>>>);

impl LoadWatch {
    /// Records why the load failed.
    pub fn fail(&self, reason: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// Why the load failed; `None` while it loads or once it has loaded.
    pub fn failure(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Wait statistics of the model lock.
#[derive(Debug, Default)]
pub(crate) struct LockStats {
    acquisitions: AtomicU64,
    contended: AtomicU64,
    wait_ns_total: AtomicU64,
    wait_ns_max: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub(crate) struct LockSummary {
    pub acquisitions: u64,
    pub contended: u64,
    pub avg_wait_ms: f64,
    pub max_wait_ms: f64,
}

impl LockStats {
    fn record(&self, waited_ns: u64, contended: bool) {
        self.acquisitions.fetch_add(1, Ordering::Relaxed);
        if contended {
            self.contended.fetch_add(1, Ordering::Relaxed);
        }
        self.wait_ns_total.fetch_add(waited_ns, Ordering::Relaxed);
        self.wait_ns_max.fetch_max(waited_ns, Ordering::Relaxed);
    }

    pub(crate) fn summary(&self) -> LockSummary {
        let acquisitions = self.acquisitions.load(Ordering::Relaxed);
        let total = self.wait_ns_total.load(Ordering::Relaxed) as f64;
        LockSummary {
            acquisitions,
            contended: self.contended.load(Ordering::Relaxed),
            avg_wait_ms: if acquisitions == 0 {
                0.0
            } else {
                total / acquisitions as f64 / 1e6
            },
            max_wait_ms: self.wait_ns_max.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// One generator shared by the keyframe and decode stages; its decoders under a lock of their
/// own when it splits them off, so decoding never waits for a keyframe.
pub(crate) struct ModelLock {
    model: Mutex<Box<dyn Generator>>,
    decoder: Option<Mutex<Box<dyn FrameDecoder>>>,
    /// Who makes keyframes: changes when a model loaded behind a `handover` takes over.
    identity: Mutex<Identity>,
    guarded: bool,
    resolution: (u32, u32),
    /// Waits for the generator's lock (keyframes, and decoding when not split).
    pub stats: LockStats,
    /// Waits for the split decoders' lock.
    pub decoder_stats: LockStats,
}

/// Who a generator is, as the pipeline and status.json see it.
#[derive(Debug, Clone)]
struct Identity {
    name: String,
    note: Option<String>,
    settled_name: String,
    warming_up: bool,
    load: Option<LoadWatch>,
    device: Device,
    knobs: Knobs,
}

impl Identity {
    fn of(model: &dyn Generator) -> Self {
        let stand_in = model.stand_in();
        Self {
            name: model.name().to_string(),
            note: stand_in.as_ref().and_then(|s| s.note.clone()),
            settled_name: stand_in
                .as_ref()
                .map_or_else(|| model.name().to_string(), |s| s.settled_name.clone()),
            warming_up: stand_in.as_ref().is_some_and(|s| s.warming_up),
            load: stand_in.map(|s| s.load),
            device: model.device().clone(),
            knobs: model.knobs(),
        }
    }
}

/// Takes `mutex`, recording the wait in `stats`; returns the guard and the wait in seconds.
fn acquire<'a, T: ?Sized>(
    mutex: &'a Mutex<Box<T>>,
    stats: &LockStats,
) -> (MutexGuard<'a, Box<T>>, f64) {
    match mutex.try_lock() {
        Ok(guard) => {
            stats.record(0, false);
            (guard, 0.0)
        }
        Err(TryLockError::WouldBlock) => {
            let start = Instant::now();
            // A panic while the model was held ends that stage; the other may go on.
            let guard = mutex
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let waited = start.elapsed();
            stats.record(waited.as_nanos() as u64, true);
            (guard, waited.as_secs_f64())
        }
        Err(TryLockError::Poisoned(poisoned)) => {
            stats.record(0, false);
            (poisoned.into_inner(), 0.0)
        }
    }
}

impl ModelLock {
    pub(crate) fn new(mut model: Box<dyn Generator>) -> Self {
        let decoder = model.split_decoder().map(Mutex::new);
        Self {
            identity: Mutex::new(Identity::of(model.as_ref())),
            guarded: model.guarded(),
            resolution: model.resolution(),
            model: Mutex::new(model),
            decoder,
            stats: LockStats::default(),
            decoder_stats: LockStats::default(),
        }
    }

    /// Whether decoding has a lock of its own.
    pub(crate) fn decoder_split(&self) -> bool {
        self.decoder.is_some()
    }

    /// Decodes `latents` (with the best decoder when `keyframe`) under the decoders' lock, or the
    /// generator's when they are not split. Returns the result and the lock wait in seconds.
    pub(crate) fn decode(
        &self,
        latents: &Tensor,
        keyframe: bool,
    ) -> (anyhow::Result<Vec<Vec<u8>>>, f64) {
        match &self.decoder {
            Some(decoder) => {
                let (mut decoder, waited) = acquire(decoder, &self.decoder_stats);
                let result = if keyframe {
                    decoder.decode_keyframe(latents)
                } else {
                    decoder.decode(latents)
                };
                (result, waited)
            }
            None => {
                let (mut model, waited) = self.lock();
                let result = if keyframe {
                    model.decode_keyframe(latents)
                } else {
                    model.decode(latents)
                };
                (result, waited)
            }
        }
    }

    fn identity(&self) -> std::sync::MutexGuard<'_, Identity> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generator making keyframes now.
    pub(crate) fn name(&self) -> String {
        self.identity().name.clone()
    }

    /// The name the walk is saved and resumed under (`StandIn::settled_name`).
    pub(crate) fn settled_name(&self) -> String {
        self.identity().settled_name.clone()
    }

    /// Whether a model is still loading behind the generator (`StandIn::warming_up`).
    pub(crate) fn warming_up(&self) -> bool {
        self.identity().warming_up
    }

    /// The model still loading behind the generator, if one is: not one whose load has failed,
    /// though the generator hears of that only at its next keyframe (`LoadWatch`).
    pub(crate) fn loading(&self) -> Option<String> {
        let identity = self.identity();
        let failed = identity
            .load
            .as_ref()
            .and_then(LoadWatch::failure)
            .is_some();
        (identity.warming_up && !failed).then(|| identity.settled_name.clone())
    }

    /// Takes note of who `model` is now (after a keyframe: a hand-over may have happened).
    pub(crate) fn refresh(&self, model: &dyn Generator) {
        *self.identity() = Identity::of(model);
    }

    pub(crate) fn resolution(&self) -> (u32, u32) {
        self.resolution
    }

    /// The generator's note; a failed model load's reason as soon as it fails.
    pub(crate) fn note(&self) -> Option<String> {
        let identity = self.identity();
        match identity.load.as_ref().and_then(LoadWatch::failure) {
            Some(reason) if identity.warming_up => Some(handover::fallback_note(&reason)),
            _ => identity.note.clone(),
        }
    }

    /// Whether the walk's guard judges this generator's keyframes (`Generator::guarded`).
    pub(crate) fn guarded(&self) -> bool {
        self.guarded
    }

    /// Where keyframes are made now.
    pub(crate) fn device(&self) -> Device {
        self.identity().device.clone()
    }

    /// What the generator making keyframes now can trade for speed (`Generator::knobs`).
    pub(crate) fn knobs(&self) -> Knobs {
        self.identity().knobs.clone()
    }

    /// Decodes at `quality` from now on, under the decoders' lock (or the generator's, where
    /// it keeps its decoders).
    pub(crate) fn set_decode_quality(&self, quality: DecodeQuality) {
        match &self.decoder {
            Some(decoder) => acquire(decoder, &self.decoder_stats)
                .0
                .set_decode_quality(quality),
            None => self.lock().0.set_decode_quality(quality),
        }
    }

    /// Takes the generator, recording the wait. Returns the guard and the wait in seconds.
    pub(crate) fn lock(&self) -> (MutexGuard<'_, Box<dyn Generator>>, f64) {
        acquire(&self.model, &self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_interim_keeps_the_models_shape_within_the_built_in_generators_pixels() {
        assert_eq!(interim_size((512, 512)), (192, 192));
        assert_eq!(interim_size((1024, 576)), (256, 144));
        assert_eq!(interim_size((128, 128)), (128, 128), "small frames stay");
        assert_eq!(
            interim_size((8192, 8)),
            (6144, 6),
            "extreme shapes keep theirs"
        );
    }

    #[test]
    fn keyframe_seeds_differ_per_index_and_repeat_per_run_seed() {
        assert_eq!(keyframe_seed(7, 3), keyframe_seed(7, 3));
        assert_ne!(keyframe_seed(7, 3), keyframe_seed(7, 4));
        assert_ne!(keyframe_seed(7, 3), keyframe_seed(8, 3));
    }

    /// A generator whose decoder can be split off; decoding through the generator fails after.
    struct Splittable {
        decoder: Option<Box<dyn FrameDecoder>>,
    }

    struct FlatDecoder;

    impl FrameDecoder for FlatDecoder {
        fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
            Ok(vec![vec![7; 3]; latents.dim(0)?])
        }
        fn decode_keyframe(&mut self, latent: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
            Ok(vec![vec![9; 3]; latent.dim(0)?])
        }
    }

    impl Generator for Splittable {
        fn name(&self) -> &str {
            "splittable"
        }
        fn device(&self) -> &Device {
            &Device::Cpu
        }
        fn resolution(&self) -> (u32, u32) {
            (1, 1)
        }
        fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>> {
            Ok(requests
                .iter()
                .map(|_| Tensor::zeros((1, 1, 1), candle_core::DType::F32, &Device::Cpu))
                .collect::<candle_core::Result<_>>()?)
        }
        fn decode(&mut self, _latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
            anyhow::bail!("decoder was split off")
        }
        fn split_decoder(&mut self) -> Option<Box<dyn FrameDecoder>> {
            self.decoder.take()
        }
    }

    #[test]
    fn split_decoders_decode_while_a_keyframe_holds_the_model() {
        let lock = Arc::new(ModelLock::new(Box::new(Splittable {
            decoder: Some(Box::new(FlatDecoder)),
        })));
        assert!(lock.decoder_split());
        let latents = Tensor::zeros((2, 1, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        // A "keyframe" holds the model for as long as the decode takes, and longer.
        let (held, _) = lock.lock();
        let decoding = {
            let lock = Arc::clone(&lock);
            let latents = latents.clone();
            std::thread::spawn(move || {
                let (frames, waited) = lock.decode(&latents, false);
                let (keyframe, _) = lock.decode(&latents.narrow(0, 0, 1).unwrap(), true);
                (frames.unwrap(), keyframe.unwrap(), waited)
            })
        };
        let (frames, keyframe, waited) = decoding.join().expect("decode thread panicked");
        drop(held);
        assert_eq!(frames, vec![vec![7; 3]; 2]);
        assert_eq!(keyframe, vec![vec![9; 3]]);
        assert_eq!(waited, 0.0);
        assert_eq!(lock.decoder_stats.summary().acquisitions, 2);
        assert_eq!(lock.decoder_stats.summary().contended, 0);
        assert_eq!(
            lock.stats.summary().acquisitions,
            1,
            "decoding never took the model"
        );
    }

    #[test]
    fn generators_that_keep_their_decoders_decode_under_the_model_lock() {
        let lock = ModelLock::new(Box::new(fake::FakeGenerator::new(8, 8)));
        assert!(!lock.decoder_split());
        let latents = lock.lock().0.keyframes(&[KeyframeRequest {
            index: 0,
            seed: 1,
            previous: None,
        }]);
        let latents = Tensor::stack(&latents.unwrap(), 0).unwrap();
        let (frames, _) = lock.decode(&latents, false);
        assert_eq!(frames.unwrap().len(), 1);
        assert_eq!(lock.stats.summary().acquisitions, 2);
        assert_eq!(lock.decoder_stats.summary().acquisitions, 0);
    }

    #[test]
    fn lock_records_contention_and_wait() {
        let lock = Arc::new(ModelLock::new(Box::new(fake::FakeGenerator::new(8, 8))));
        let (guard, waited) = lock.lock();
        assert_eq!(waited, 0.0);
        let other = Arc::clone(&lock);
        let waiter = std::thread::spawn(move || other.lock().1);
        std::thread::sleep(Duration::from_millis(30));
        drop(guard);
        let waited = waiter.join().expect("waiter thread panicked");
        assert!(waited >= 0.02, "waited {waited}");
        let summary = lock.stats.summary();
        assert_eq!(summary.acquisitions, 2);
        assert_eq!(summary.contended, 1);
        assert!(summary.max_wait_ms >= 20.0, "{summary:?}");
    }
}
