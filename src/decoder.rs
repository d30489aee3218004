//! The decode stage: for each pair of consecutive keyframes, slerps the in-between latents and
//! decodes the whole transition under ONE acquisition of the model lock (in chunks of
//! `decode.batch-size`), then pushes the frames into the frame buffer.
//!
//! Inputs: `Keyframe`s from the keyframe stage. Outputs: `Frame`s into the frame buffer, which
//! blocks this thread while full. Runs on the "decoder" thread. A decode error is logged and the
//! same transition retried with backoff, so the picture never jumps; playback meanwhile follows
//! the underrun policy. Ends when the buffer is closed or the keyframe stage has gone.
//! Logs one `[TIMING]` line per transition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::config::Easing;
use crate::frame_buffer::{Frame, FrameBuffer};
use crate::generator::ModelLock;
use crate::interpolation::transition;
use crate::keyframes::Keyframe;
use crate::stats::PipelineStats;

pub struct DecodeStage {
    pub model: Arc<ModelLock>,
    pub input: Receiver<Keyframe>,
    pub buffer: Arc<FrameBuffer>,
    pub frames_per_transition: usize,
    pub easing: Easing,
    pub batch_size: usize,
    pub fps: f64,
    pub stats: Arc<PipelineStats>,
    pub stop: Arc<AtomicBool>,
    /// Transition length and easing from reloads; decoding pauses while the screen is blanked.
    pub live: Arc<crate::live::Live>,
    pub watcher: crate::live::Watcher,
}

/// Whether a decode failed for want of (GPU) memory, which a smaller batch may avoid.
fn is_out_of_memory(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let text = cause.to_string().to_ascii_lowercase();
        text.contains("out of memory") || text.contains("out_of_memory")
    })
}

/// Shutdown arrived in the middle of a transition.
#[derive(Debug, thiserror::Error)]
#[error("stopped")]
struct Stopped;

struct Decoded {
    frames: Vec<Vec<u8>>,
    slerp: Duration,
    decode: Duration,
    lock_wait: f64,
}

impl DecodeStage {
    fn decode_transition(&mut self, from: &Keyframe, to: &Keyframe) -> anyhow::Result<Decoded> {
        let started = Instant::now();
        let latents = transition(
            &from.latent,
            &to.latent,
            self.frames_per_transition,
            self.easing,
        )?;
        let slerp = started.elapsed();

        let (mut model, lock_wait) = self.model.lock();
        let started = Instant::now();
        let mut frames = Vec::with_capacity(self.frames_per_transition);
        // The keyframe itself through the generator's best decoder, the rest in batches.
        frames.extend(model.decode_keyframe(&latents.narrow(0, 0, 1)?)?);
        let mut start = 1;
        while start < self.frames_per_transition {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Stopped.into());
            }
            let count = self.batch_size.min(self.frames_per_transition - start);
            match model.decode(&latents.narrow(0, start, count)?) {
                Ok(decoded) => {
                    frames.extend(decoded);
                    start += count;
                }
                Err(error) if self.batch_size > 1 && is_out_of_memory(&error) => {
                    let halved = self.batch_size / 2;
                    log::warn!("decode_out_of_memory batch_size={} retry_batch_size={halved} error=\"{error:#}\"", self.batch_size);
                    self.batch_size = halved;
                }
                Err(error) => return Err(error),
            }
        }
        let decode = started.elapsed();
        drop(model);
        anyhow::ensure!(
            frames.len() == self.frames_per_transition,
            "generator decoded {} frames for {} latents",
            frames.len(),
            self.frames_per_transition
        );
        Ok(Decoded {
            frames,
            slerp,
            decode,
            lock_wait,
        })
    }

    pub fn run(mut self) -> anyhow::Result<()> {
        let Ok(mut from) = self.input.recv() else {
            return Ok(());
        };
        let (width, height) = self.model.resolution();
        let mut seq = 0u64;
        let mut backoff = Backoff::default();
        let mut upscale_mark = self.stats.upscale.snapshot();
        loop {
            let Ok(to) = self.input.recv() else {
                return Ok(());
            };
            while self.live.blanked() && !self.stop.load(Ordering::Relaxed) {
                std::thread::sleep(crate::live::PAUSE_POLL);
            }
            if let Some(settings) = self.watcher.changed(&self.live) {
                self.frames_per_transition = settings.frames_per_transition;
                self.easing = settings.easing;
            }
            let decoded = loop {
                match self.decode_transition(&from, &to) {
                    Ok(decoded) => break decoded,
                    Err(error) if error.is::<Stopped>() => return Ok(()),
                    Err(error) => {
                        self.stats.generator_errors.fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "generator_error stage=decode from={} to={} retry_in_s={} error=\"{error:#}\"",
                            from.index,
                            to.index,
                            backoff.next_delay().as_secs()
                        );
                        if !backoff.sleep(&self.stop) {
                            return Ok(());
                        }
                    }
                }
            };
            backoff.reset();
            let count = decoded.frames.len() as u64;
            self.stats
                .decoded_frames
                .fetch_add(count, Ordering::Relaxed);
            self.stats.decode_time.record_many(decoded.decode, count);
            let upscale_now = self.stats.upscale.snapshot();
            let level = self.buffer.level();
            log::info!(
                "[TIMING] transition from={} to={} frames={count} slerp_ms={:.3} decode_ms={:.2} decode_ms_per_frame={:.3} upscale_ms_per_frame={:.3} lock_wait_ms={:.3} buffer_frames={} buffer_seconds={:.2}",
                from.index,
                to.index,
                decoded.slerp.as_secs_f64() * 1e3,
                decoded.decode.as_secs_f64() * 1e3,
                decoded.decode.as_secs_f64() * 1e3 / count as f64,
                upscale_now.mean_ms_since(upscale_mark),
                decoded.lock_wait * 1e3,
                level.frames,
                level.frames as f64 / self.fps
            );
            upscale_mark = upscale_now;
            for rgb in decoded.frames {
                let frame = Arc::new(Frame {
                    seq,
                    width,
                    height,
                    rgb,
                });
                seq += 1;
                if self.buffer.push(frame).is_err() {
                    return Ok(()); // closed: shutting down
                }
            }
            from = to;
        }
    }
}
