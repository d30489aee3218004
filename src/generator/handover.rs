//! Art from the first second: while a model loads (Stable Diffusion: gigabytes of weights and
//! CUDA start-up, tens of seconds) the built-in generator makes the keyframes, at the model's
//! frame size; when the model is ready it takes over at the next keyframe, and the decoder walks
//! from the last built-in keyframe to the model's first by a cross-fade (their latents don't
//! mix). Logged `model_ready after_s=`; a model that fails to load leaves the built-in generator
//! on, as `model.fallback = "cppn"` says (`model_unavailable`).
//!
//! Inputs: the interim generator, the model's frame size and a loader run on its own thread
//! ("model-loader"). Outputs: keyframe latents (vectors from the interim, images from the
//! model) and, through the split-off `HandoverDecoder`, frames all of the model's size. Runs on
//! the keyframe thread (keyframes) and the decoder thread (decoding), like any generator.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use candle_core::{Device, Tensor};
use fast_image_resize as fr;

use super::cppn::CppnGenerator;
use super::{FrameDecoder, Generator, KeyframeRequest};
use crate::events;

/// A loaded model, or why it couldn't be.
pub type Loaded = anyhow::Result<Box<dyn Generator>>;

/// What decodes the model's latents once it is ready: its split-off decoders, or the model
/// itself (shared with the keyframe side) when it keeps them.
enum ModelDecoders {
    Split(Box<dyn FrameDecoder>),
    Shared,
}

type Slot = Arc<Mutex<Option<ModelDecoders>>>;

/// Whether a latent came from the interim generator: its latents are vectors, a model's are
/// images ([channels, height, width], stacked: one more dimension).
fn from_interim(latent: &Tensor, stacked: bool) -> bool {
    latent.rank() == if stacked { 2 } else { 1 }
}

pub struct Handover {
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
    /// The model's kind, for `model_unavailable`.
    kind: String,
    /// The model's label of the last keyframe made (index, theme, prompt): the model itself
    /// sits behind its lock, so labels are copied out.
    label: Option<(u64, u64, String)>,
    /// Where keyframes are made: the interim's, then the model's.
    device: Device,
}

impl Handover {
    /// Starts `load` on its own thread; `interim` (and `interim_decoder`, the same generator
    /// again for the decoder thread) stands in meanwhile.
    pub fn start(
        interim: CppnGenerator,
        interim_decoder: CppnGenerator,
        frame_size: (u32, u32),
        kind: &str,
        settled_name: String,
        load: impl FnOnce() -> Loaded + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (sender, loading) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("model-loader".into())
            .spawn(move || {
                // A panic while loading is a failure to load, not the end of the display.
                let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the model loader panicked")));
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
            kind: kind.to_string(),
            label: None,
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
            Err(TryRecvError::Disconnected) => Err(anyhow::anyhow!("the model loader ended")),
        };
        self.loading = None;
        match loaded {
            Ok(mut model) => {
                let decoders = match model.split_decoder() {
                    Some(decoder) => ModelDecoders::Split(decoder),
                    None => ModelDecoders::Shared,
                };
                log::info!(
                    "{}",
                    events::ModelReady {
                        generator: model.name().to_string(),
                        after_s: crate::process_start().elapsed().as_secs_f64(),
                    }
                );
                self.name = model.name().to_string();
                self.device = model.device().clone();
                self.note = model.note().map(str::to_string);
                self.model = Some(Arc::new(Mutex::new(model)));
                *self.decoders.lock().unwrap_or_else(|p| p.into_inner()) = Some(decoders);
            }
            Err(error) => {
                let reason = format!("{error:#}");
                log::warn!(
                    "{}",
                    events::ModelUnavailable {
                        kind: self.kind.clone(),
                        fallback: "cppn".into(),
                        error: reason.clone(),
                    }
                );
                self.note = Some(format!("fallback to cppn: {reason}"));
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
        if let Some(mut model) = self.model() {
            model.reconfigure(prompts);
        }
    }

    fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    fn warming_up(&self) -> bool {
        self.loading.is_some()
    }

    fn settled_name(&self) -> &str {
        &self.settled_name
    }

    fn split_decoder(&mut self) -> Option<Box<dyn FrameDecoder>> {
        Some(Box::new(HandoverDecoder {
            interim: self.interim_decoder.take()?,
            frame_size: self.frame_size,
            decoders: Arc::clone(&self.decoders),
            model: HandoverModel {
                handover: self.model.clone(),
            },
        }))
    }
}

/// The model as the decoder thread reaches it when it keeps its decoders (`ModelDecoders::Shared`).
struct HandoverModel {
    handover: Option<Arc<Mutex<Box<dyn Generator>>>>,
}

/// Decodes interim latents (resized to the model's frame size) and, once it is ready, the
/// model's.
pub struct HandoverDecoder {
    interim: CppnGenerator,
    frame_size: (u32, u32),
    decoders: Slot,
    model: HandoverModel,
}

impl HandoverDecoder {
    fn interim_frames(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let (width, height) = self.interim.resolution();
        self.interim
            .decode(latents)?
            .into_iter()
            .map(|frame| resize(&frame, (width, height), self.frame_size))
            .collect()
    }

    fn model_frames(&mut self, latents: &Tensor, keyframe: bool) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut slot = self.decoders.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_mut() {
            Some(ModelDecoders::Split(decoder)) if keyframe => decoder.decode_keyframe(latents),
            Some(ModelDecoders::Split(decoder)) => decoder.decode(latents),
            Some(ModelDecoders::Shared) => {
                let model = self
                    .model
                    .handover
                    .as_ref()
                    .context("the model keeps its decoders but is not shared")?;
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
}

/// Packed RGB8 `frame` of `from` pixels resized (bilinear) to `to`.
fn resize(frame: &[u8], from: (u32, u32), to: (u32, u32)) -> anyhow::Result<Vec<u8>> {
    if from == to {
        return Ok(frame.to_vec());
    }
    let source = fr::images::ImageRef::new(from.0, from.1, frame, fr::PixelType::U8x3)
        .context("interim frame of the wrong size")?;
    let mut target = fr::images::Image::new(to.0, to.1, fr::PixelType::U8x3);
    fr::Resizer::new()
        .resize(
            &source,
            &mut target,
            &fr::ResizeOptions::new()
                .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear)),
        )
        .context("cannot resize an interim frame")?;
    Ok(target.into_vec())
}
