//! Live settings: what a reload (SIGHUP) or the night schedule changes while the display runs,
//! without reloading the model or blanking the screen.
//!
//! Written by the orchestrator (tokio) only; read by the stage threads at their natural points:
//! the pacer at every deadline (fps, blank), the playback thread at every frame (fit, rotation,
//! brightness), the decoder at every transition (frames per transition, easing) and the keyframe
//! thread at every keyframe (themes, blank). Readers compare a generation counter (one atomic
//! load) and copy the settings only when it moved. Nothing here fails.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::config::{Config, Easing, Fit, PromptsConfig, Rotation};

/// How often a paused stage looks again whether the screen is still blanked.
pub const PAUSE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The reloadable part of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    pub fps: f64,
    pub fit: Fit,
    pub rotation: Rotation,
    pub frames_per_transition: usize,
    pub easing: Easing,
    pub prompts: PromptsConfig,
    pub schedule: Vec<crate::service::schedule::Period>,
}

impl LiveSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            fps: config.display.fps,
            fit: config.display.fit,
            rotation: config.display.rotation,
            frames_per_transition: config.interpolation.frames_per_transition,
            easing: config.interpolation.easing,
            prompts: config.prompts.clone(),
            schedule: config.schedule.clone(),
        }
    }
}

pub struct Live {
    generation: AtomicU64,
    settings: Mutex<LiveSettings>,
    blanked: AtomicBool,
    /// Picture brightness in thousandths (1000: unchanged).
    brightness_permille: AtomicU32,
}

impl Live {
    pub fn new(settings: LiveSettings) -> Self {
        Self {
            generation: AtomicU64::new(0),
            settings: Mutex::new(settings),
            blanked: AtomicBool::new(false),
            brightness_permille: AtomicU32::new(1000),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn settings(&self) -> LiveSettings {
        self.settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Publishes new settings; every reader picks them up at its next check.
    pub fn update(&self, settings: LiveSettings) {
        *self
            .settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn blanked(&self) -> bool {
        self.blanked.load(Ordering::Relaxed)
    }

    pub fn set_blanked(&self, blanked: bool) {
        self.blanked.store(blanked, Ordering::Relaxed);
    }

    pub fn brightness(&self) -> f32 {
        self.brightness_permille.load(Ordering::Relaxed) as f32 / 1000.0
    }

    pub fn set_brightness(&self, factor: f64) {
        let permille = (factor.clamp(0.0, 1.0) * 1000.0).round() as u32;
        self.brightness_permille.store(permille, Ordering::Relaxed);
    }
}

/// A reader's view: `changed` is true once per update.
pub struct Watcher {
    seen: u64,
}

impl Watcher {
    pub fn new(live: &Live) -> Self {
        Self {
            seen: live.generation(),
        }
    }

    /// The new settings if they changed since the last call.
    pub fn changed(&mut self, live: &Live) -> Option<LiveSettings> {
        let now = live.generation();
        (now != self.seen).then(|| {
            self.seen = now;
            live.settings()
        })
    }
}

/// Config sections a reload can't change while running: their names, for the log.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let d = (&old.display, &new.display);
    if d.0.sink != d.1.sink
        || d.0.framebuffer != d.1.framebuffer
        || d.0.console != d.1.console
        || d.0.terminal_size != d.1.terminal_size
    {
        keys.push("display (sink, framebuffer, console, terminal size)");
    }
    if d.0.upscale_filter != d.1.upscale_filter {
        keys.push("display.upscale-filter");
    }
    if d.0.realtime != d.1.realtime {
        keys.push("display.realtime");
    }
    if old.seed != new.seed {
        keys.push("seed");
    }
    if old.model != new.model {
        keys.push("model");
    }
    if old.keyframe != new.keyframe {
        keys.push("keyframe");
    }
    if old.interpolation.resolution_divisor != new.interpolation.resolution_divisor {
        keys.push("interpolation.resolution-divisor");
    }
    if old.decode != new.decode {
        keys.push("decode");
    }
    if old.buffer != new.buffer {
        keys.push("buffer");
    }
    if old.output != new.output {
        keys.push("output");
    }
    if old.log != new.log {
        keys.push("log");
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_sees_each_update_once() {
        let config = Config::default();
        let live = Live::new(LiveSettings::from_config(&config));
        let mut watcher = Watcher::new(&live);
        assert!(watcher.changed(&live).is_none());
        let mut settings = live.settings();
        settings.fps = 12.0;
        live.update(settings);
        assert_eq!(watcher.changed(&live).map(|s| s.fps), Some(12.0));
        assert!(watcher.changed(&live).is_none());
        live.set_brightness(0.3);
        assert!((live.brightness() - 0.3).abs() < 1e-6);
    }

    #[test]
    fn restart_only_changes_are_named() {
        let old = Config::default();
        let mut new = old.clone();
        new.display.fps = 10.0;
        new.display.rotation = Rotation::Half;
        new.interpolation.frames_per_transition = 7;
        assert!(needs_restart(&old, &new).is_empty());
        new.decode.batch_size = 3;
        new.display.sink = crate::config::SinkKind::Null;
        assert_eq!(
            needs_restart(&old, &new),
            vec![
                "display (sink, framebuffer, console, terminal size)",
                "decode"
            ]
        );
    }
}
