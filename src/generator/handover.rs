//! Art from the first second: while a model loads (Stable Diffusion: gigabytes of weights and
//! CUDA start-up, tens of seconds) the built-in generator makes the keyframes, at the model's
//! frame size; when the model is ready it takes over at the next keyframe, and the decoder walks
//! from the last built-in keyframe to the model's first by a cross-fade (their latents don't
//! mix). Logged `model_ready after_s=`; a model that fails to load leaves the built-in generator
//! on, as `model.fallback = "cppn"` says: `model_unavailable` is logged, and status.json says so
//! (`LoadWatch`), the moment the load fails, not at the next keyframe.
//!
//! Inputs: the interim generator, the model's frame size and a loader run on its own thread
//! ("model-loader"). Outputs: keyframe latents (vectors from the interim, images from the
//! model) and, through the split-off `HandoverDecoder`, frames of the model's size. The adapt
//! ladder's knobs are the model's once it has taken over (steps and decode quality are passed
//! on to it); before, the interim's frames come at one size. Runs on
//! the keyframe thread (keyframes) and the decoder thread (decoding), like any generator.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use candle_core::{Device, Tensor};

use super::builtin::cppn::CppnGenerator;
use super::{DecodeQuality, FrameDecoder, Generator, KeyframeRequest, Knobs, LoadWatch, StandIn};
use crate::events;

/// A loaded model, or why it couldn't be.
pub(crate) type Loaded = anyhow::Result<Box<dyn Generator>>;

/// What decodes the model's latents once it is ready: its split-off decoders, or the model
/// itself (shared with the keyframe side) when it keeps them.
enum ModelDecoders {
    Split(Box<dyn FrameDecoder>),
    Shared(Arc<Mutex<Box<dyn Generator>>>),
}

type Slot = Arc<Mutex<Option<ModelDecoders>>>;

/// Whether a latent came from the interim generator: its latents are vectors, a model's are
/// images ([channels, height, width], stacked: one more dimension).
fn from_interim(latent: &Tensor, stacked: bool) -> bool {
    latent.rank() == if stacked { 2 } else { 1 }
}

pub(crate) struct Handover {
    interim: CppnGenerator,
    /// The model's decoded frame size: interim frames are resized to it.
    frame_size: (u32, u32),
    loading: Option<Receiver<Loaded>>,
    model: Option<Arc<Mutex<Box<dyn Generator>>>>,
    decoders: Slot,
    /// The interim's decoder, handed to `split_decoder` once.
    interim_decoder: Option<CppnGenerator>,
    /// What the walk is saved and resumed under: the model's name.
    settled_name: String,
    name: String,
    note: Option<String>,
    /// How the load fared, as the loader thread knows it.
    watch: LoadWatch,
    /// The model's label of the last keyframe made (index, theme, prompt): the model itself
    /// sits behind its lock, so labels are copied out.
    label: Option<(u64, u64, String)>,
    /// Where keyframes are made: the interim's, then the model's.
    device: Device,
    /// Themes from a reload while the model loads, for the model once it is ready.
    pending_prompts: Option<crate::config::PromptsConfig>,
}

impl Handover {
    /// Starts `load` on its own thread; `interim` (and `interim_decoder`, the same generator
    /// again for the decoder thread) stands in meanwhile.
    pub(crate) fn start(
        interim: CppnGenerator,
        interim_decoder: CppnGenerator,
        frame_size: (u32, u32),
        kind: &str,
        settled_name: String,
        load: impl FnOnce() -> Loaded + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (sender, loading) = std::sync::mpsc::sync_channel(1);
        let watch = LoadWatch::default();
        let (loader_watch, loader_kind) = (watch.clone(), kind.to_string());
        std::thread::Builder::new()
            .name("model-loader".into())
            .spawn(move || {
                // A panic while loading is a failure to load, not the end of the display.
                let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the model loader panicked")));
                if let Err(error) = &loaded {
                    // Said now: the keyframe thread may not ask again for minutes.
                    let reason = format!("{error:#}");
                    log::warn!(
                        "{}",
                        events::ModelUnavailable {
                            kind: loader_kind,
                            fallback: "cppn".into(),
                            error: reason.clone(),
                        }
                    );
                    loader_watch.fail(reason);
                }
                let _ = sender.send(loaded);
            })
            .context("cannot start the model loader thread")?;
        Ok(Self {
            name: interim.name().to_string(),
            device: interim.device().clone(),
            interim,
            frame_size,
            loading: Some(loading),
            model: None,
            decoders: Arc::new(Mutex::new(None)),
            interim_decoder: Some(interim_decoder),
            settled_name,
            note: Some(format!("showing the built-in generator while {kind} loads")),
            watch,
            label: None,
            pending_prompts: None,
        })
    }

    /// Takes the model over if it has loaded (or gives up on it if it failed).
    fn poll(&mut self) {
        let Some(loading) = &self.loading else {
            return;
        };
        let loaded = match loading.try_recv() {
            Ok(loaded) => loaded,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => {
                // Never without a send, which comes after the failure was recorded.
                let reason = "the model loader ended".to_string();
                self.watch.fail(reason.clone());
                Err(anyhow::anyhow!(reason))
            }
        };
        self.loading = None;
        match loaded {
            Ok(mut model) => {
                let split = model.split_decoder();
                log::info!(
                    "{}",
                    events::ModelReady {
                        generator: model.name().to_string(),
                        after_s: crate::process_start().elapsed().as_secs_f64(),
                    }
                );
                if let Some(prompts) = self.pending_prompts.take() {
                    model.reconfigure(&prompts);
                }
                self.name = model.name().to_string();
                self.device = model.device().clone();
                // The model's own note, if it stands in for another (none does today).
                self.note = model.stand_in().and_then(|stand_in| stand_in.note);
                let model = Arc::new(Mutex::new(model));
                let decoders = match split {
                    Some(decoder) => ModelDecoders::Split(decoder),
                    None => ModelDecoders::Shared(Arc::clone(&model)),
                };
                self.model = Some(model);
                *self.decoders.lock().unwrap_or_else(|p| p.into_inner()) = Some(decoders);
            }
            // Logged by the loader thread when it failed.
            Err(error) => {
                self.note = Some(fallback_note(&format!("{error:#}")));
                self.settled_name = self.interim.name().to_string();
            }
        }
    }

    fn model(&self) -> Option<std::sync::MutexGuard<'_, Box<dyn Generator>>> {
        self.model
            .as_ref()
            .map(|model| model.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// status.json's note once a model has failed to load.
pub(crate) fn fallback_note(reason: &str) -> String {
    format!("fallback to cppn: {reason}")
}

impl Generator for Handover {
    fn name(&self) -> &str {
        &self.name
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn resolution(&self) -> (u32, u32) {
        self.frame_size
    }

    fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>> {
        self.poll();
        let Some(shared) = self.model.clone() else {
            return self.interim.keyframes(requests);
        };
        let mut model = shared.lock().unwrap_or_else(|p| p.into_inner());
        // The interim walk's latents mean nothing to the model: its first keyframe is fresh.
        let requests: Vec<KeyframeRequest> = requests
            .iter()
            .map(|request| KeyframeRequest {
                previous: request
                    .previous
                    .clone()
                    .filter(|previous| !from_interim(previous, false)),
                ..request.clone()
            })
            .collect();
        let latents = model.keyframes(&requests)?;
        // Latents are told apart by shape (the interim's are vectors): a model must make images.
        anyhow::ensure!(
            latents.iter().all(|latent| !from_interim(latent, false)),
            "{} made vector latents; only models with image latents can take over",
            model.name()
        );
        self.label = requests.last().and_then(|request| {
            let (theme, prompt) = model.keyframe_label(request.index)?;
            Some((request.index, theme, prompt.to_string()))
        });
        Ok(latents)
    }

    fn decode(&mut self, _latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        anyhow::bail!("the hand-over's decoders were split off to their own lock")
    }

    fn keyframe_label(&self, index: u64) -> Option<(u64, &str)> {
        match &self.label {
            Some((made, theme, prompt)) if *made == index => Some((*theme, prompt)),
            _ => None,
        }
    }

    fn next_theme(&mut self) {
        if let Some(mut model) = self.model() {
            model.next_theme();
        }
    }

    fn reconfigure(&mut self, prompts: &crate::config::PromptsConfig) {
        match self.model.clone() {
            Some(model) => model
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reconfigure(prompts),
            None => self.pending_prompts = Some(prompts.clone()),
        }
    }

    fn prepare(&mut self) {
        self.poll();
    }

    fn stand_in(&self) -> Option<StandIn> {
        Some(StandIn {
            settled_name: self.settled_name.clone(),
            warming_up: self.loading.is_some(),
            load: self.watch.clone(),
            note: self.note.clone(),
        })
    }

    /// The model's, once it has taken over; the interim's frames come at one size.
    fn knobs(&self) -> Knobs {
        match self.model() {
            Some(model) => model.knobs(),
            None => Knobs::fixed(self.frame_size),
        }
    }

    fn set_steps(&mut self, steps: usize) {
        if let Some(mut model) = self.model() {
            model.set_steps(steps);
        }
    }

    fn split_decoder(&mut self) -> Option<Box<dyn FrameDecoder>> {
        Some(Box::new(HandoverDecoder {
            interim: self.interim_decoder.take()?,
            frame_size: self.frame_size,
            decoders: Arc::clone(&self.decoders),
        }))
    }
}

/// Decodes interim latents (resized to the model's frame size) and, once it is ready, the
/// model's.
pub(crate) struct HandoverDecoder {
    interim: CppnGenerator,
    frame_size: (u32, u32),
    decoders: Slot,
}

impl HandoverDecoder {
    fn interim_frames(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let (width, height) = self.interim.resolution();
        self.interim
            .decode(latents)?
            .into_iter()
            .map(|frame| crate::frame::resized(&frame, (width, height), self.frame_size))
            .collect()
    }

    fn model_frames(&mut self, latents: &Tensor, keyframe: bool) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut slot = self.decoders.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_mut() {
            Some(ModelDecoders::Split(decoder)) if keyframe => decoder.decode_keyframe(latents),
            Some(ModelDecoders::Split(decoder)) => decoder.decode(latents),
            Some(ModelDecoders::Shared(model)) => {
                let mut model = model.lock().unwrap_or_else(|p| p.into_inner());
                if keyframe {
                    model.decode_keyframe(latents)
                } else {
                    model.decode(latents)
                }
            }
            None => anyhow::bail!("a model latent came before the model was ready"),
        }
    }
}

impl FrameDecoder for HandoverDecoder {
    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        if from_interim(latents, true) {
            self.interim_frames(latents)
        } else {
            self.model_frames(latents, false)
        }
    }

    fn decode_keyframe(&mut self, latent: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        if from_interim(latent, true) {
            self.interim_frames(latent)
        } else {
            self.model_frames(latent, true)
        }
    }

    /// For the model's decoders (the interim decodes at one size).
    fn set_decode_quality(&mut self, quality: DecodeQuality) {
        let mut slot = self.decoders.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_mut() {
            Some(ModelDecoders::Split(decoder)) => decoder.set_decode_quality(quality),
            Some(ModelDecoders::Shared(model)) => model
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_decode_quality(quality),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PromptsConfig};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A model with image latents that records what it was asked.
    struct ImageModel {
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Generator for ImageModel {
        fn name(&self) -> &str {
            "image-model"
        }
        fn device(&self) -> &Device {
            &Device::Cpu
        }
        fn resolution(&self) -> (u32, u32) {
            (4, 2)
        }
        fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>> {
            let mut seen = self.seen.lock().unwrap();
            requests
                .iter()
                .map(|r| {
                    seen.push(format!("keyframe previous={}", r.previous.is_some()));
                    Ok(Tensor::zeros(
                        (1, 2, 2),
                        candle_core::DType::F32,
                        &Device::Cpu,
                    )?)
                })
                .collect()
        }
        fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
            Ok(vec![vec![200; 4 * 2 * 3]; latents.dim(0)?])
        }
        fn reconfigure(&mut self, prompts: &PromptsConfig) {
            self.seen
                .lock()
                .unwrap()
                .push(format!("themes={}", prompts.themes.len()));
        }
    }

    fn request(index: u64, previous: Option<Tensor>) -> KeyframeRequest {
        KeyframeRequest {
            index,
            seed: index + 1,
            previous,
        }
    }

    #[test]
    fn the_interim_stands_in_until_the_model_is_ready_then_the_model_takes_over() {
        let config = Config::default();
        let cppn = || CppnGenerator::new(&config.cppn, 8, 4, 1, 0.45, Device::Cpu).unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut handover = {
            let (release, seen) = (Arc::clone(&release), Arc::clone(&seen));
            Handover::start(
                cppn(),
                cppn(),
                (4, 2),
                "image-model",
                "image-model".into(),
                move || {
                    while !release.load(Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Ok(Box::new(ImageModel { seen }) as Box<dyn Generator>)
                },
            )
            .unwrap()
        };
        let mut decoder = handover.split_decoder().expect("always split");
        let stand_in = handover.stand_in().expect("stands in");
        assert!(stand_in.warming_up);
        assert_eq!(
            (handover.name(), stand_in.settled_name.as_str()),
            ("cppn", "image-model")
        );
        let interim = handover.keyframes(&[request(0, None)]).unwrap().remove(0);
        assert_eq!(interim.rank(), 1);
        // Interim frames come at the model's frame size.
        let frames = decoder.decode(&interim.unsqueeze(0).unwrap()).unwrap();
        assert_eq!(frames[0].len(), 4 * 2 * 3);
        // Themes reloaded while loading reach the model when it is ready.
        let mut prompts = config.prompts.clone();
        prompts.themes.truncate(1);
        handover.reconfigure(&prompts);

        release.store(true, Ordering::Relaxed);
        let mut latest = interim.clone();
        while handover.stand_in().is_some_and(|s| s.warming_up) {
            std::thread::sleep(std::time::Duration::from_millis(5));
            latest = handover
                .keyframes(&[request(1, Some(latest))])
                .unwrap()
                .remove(0);
        }
        assert_eq!(handover.name(), "image-model");
        assert_eq!(
            latest.rank(),
            3,
            "the model made the keyframe that noticed it"
        );
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                "themes=1".to_string(),
                "keyframe previous=false".to_string()
            ],
            "the interim latent was not given to the model"
        );
        let model_frames = decoder
            .decode_keyframe(&latest.unsqueeze(0).unwrap())
            .unwrap();
        assert_eq!(model_frames, vec![vec![200; 4 * 2 * 3]]);
        // The interim's latents in flight still decode after the hand-over.
        assert_eq!(
            decoder
                .decode(&interim.unsqueeze(0).unwrap())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_failed_load_is_known_at_once_not_at_the_next_keyframe() {
        let config = Config::default();
        let cppn = || CppnGenerator::new(&config.cppn, 8, 4, 1, 0.45, Device::Cpu).unwrap();
        let handover = Handover::start(
            cppn(),
            cppn(),
            (4, 2),
            "image-model",
            "image-model".into(),
            || Err(anyhow::anyhow!("merges.txt is too big")),
        )
        .unwrap();
        let lock = crate::generator::ModelLock::new(Box::new(handover));
        // No keyframe is asked for (the queue is full): the failure must show all the same.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while lock.loading().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "status.json still says the model is loading"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            lock.note().as_deref(),
            Some("fallback to cppn: merges.txt is too big")
        );
        assert!(
            lock.warming_up(),
            "the walk hears of it at its next keyframe"
        );
    }
}
