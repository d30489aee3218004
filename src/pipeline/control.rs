//! The pipeline's control: one `Control` shared by every stage thread and the orchestrator. It
//! carries the stop flag, the schedule's blank and brightness, and the current `Settings`: the
//! reloadable part of the config (`LiveSettings`, each key listed once, below) together with
//! every count derived from it and the frame budget (`Settings::derive`, the one place where
//! fps turns into frame counts). A reload publishes new `Settings`; readers compare a
//! generation counter (one atomic load) at their natural points (the pacer every deadline,
//! playback every frame, the decoder every transition, the keyframe stage every keyframe) and
//! copy the settings only when it moved.
//!
//! Written by the orchestrator (tokio); read by the stage threads. Nothing here fails: a
//! poisoned lock (a panic while holding it) still holds consistent settings and is used.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{
    Config, Easing, Fit, FrameBudget, Period, PromptsConfig, ReanchorConfig, Rotation,
};

/// How often a paused or backing-off stage looks whether it must stop.
pub(crate) const POLL: Duration = Duration::from_millis(50);
/// How often a stage paused by the blank schedule looks whether the screen is back.
pub(crate) const PAUSE_POLL: Duration = Duration::from_millis(200);
/// Fewer recent frames than this make ping-pong a two-frame flicker: playback holds instead.
pub(crate) const MIN_PING_PONG_FRAMES: usize = 8;

/// Declares the reloadable settings once: each field and the config field it comes from.
macro_rules! live_settings {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty = $($path:ident).+ ),* $(,)?) => {
        /// The part of the config a reload applies while the display runs.
        #[derive(Debug, Clone, PartialEq)]
        pub(crate) struct LiveSettings {
            $( $(#[$doc])* pub(crate) $name: $ty, )*
        }

        impl LiveSettings {
            pub(crate) fn from_config(config: &Config) -> Self {
                Self { $( $name: config.$($path).+.clone(), )* }
            }

            /// Writes these values into `config`.
            pub(crate) fn apply_to(&self, config: &mut Config) {
                $( config.$($path).+ = self.$name.clone(); )*
            }

            /// What `new` changes, as the config file's keys with old -> new (long values,
            /// such as the themes, only named).
            pub(crate) fn changes(&self, new: &Self) -> Vec<String> {
                let mut out = Vec::new();
                $(
                    if self.$name != new.$name {
                        let key = stringify!($($path).+).replace(' ', "").replace('_', "-");
                        out.push(change(&key, &self.$name, &new.$name));
                    }
                )*
                out
            }
        }
    };
}

/// "key: old -> new", or "key changed" where a value is too long for a log line.
fn change(key: &str, old: &dyn std::fmt::Debug, new: &dyn std::fmt::Debug) -> String {
    let (old, new) = (format!("{old:?}"), format!("{new:?}"));
    if old.len() + new.len() > 60 {
        format!("{key} changed")
    } else {
        format!("{key}: {old} -> {new}")
    }
}

live_settings! {
    fps: f64 = display.fps,
    fit: Fit = display.fit,
    rotation: Rotation = display.rotation,
    frames_per_transition: usize = interpolation.frames_per_transition,
    easing: Easing = interpolation.easing,
    prompts: PromptsConfig = prompts,
    reanchor: ReanchorConfig = reanchor,
    schedule: Vec<Period> = schedule,
}

/// What the stages run by: the live settings and every count derived from them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub live: LiveSettings,
    /// One display period, 1/fps.
    pub period: Duration,
    /// Frames the buffer may hold by time: `buffer.seconds` of them (bytes bound it too).
    pub buffer_frames: usize,
    /// Frames buffered before playback starts (`buffer.start-seconds`; without adaptation).
    pub start_frames: usize,
    /// Frames buffered before playback resumes after an underrun (`buffer.resume-seconds`;
    /// without adaptation).
    pub resume_frames: usize,
    /// With adaptation: seconds of art ahead at which it plays at full speed
    /// (`buffer.start-seconds`), and seconds of playback buffered before it resumes after an
    /// underrun (`buffer.resume-seconds`).
    pub start_seconds: f64,
    pub resume_seconds: f64,
    /// Frames of replay history: one second, at least `MIN_PING_PONG_FRAMES`, at most what the
    /// budget keeps for it.
    pub recent_frames: usize,
}

impl Settings {
    /// The settings for `config` (its live part and its restart-only buffer seconds) within
    /// `budget`.
    pub(crate) fn derive(config: &Config, budget: &FrameBudget) -> Self {
        let live = LiveSettings::from_config(config);
        let fps = live.fps;
        let frames = |seconds: f64| (seconds * fps).ceil() as usize;
        Self {
            period: Duration::from_secs_f64(1.0 / fps),
            buffer_frames: frames(config.buffer.seconds).max(1),
            start_frames: frames(config.buffer.start_seconds).max(1),
            resume_frames: frames(config.buffer.resume_seconds).max(1),
            start_seconds: config.buffer.start_seconds,
            resume_seconds: config.buffer.resume_seconds,
            recent_frames: (fps.ceil() as usize)
                .max(MIN_PING_PONG_FRAMES)
                .min(budget.history_frames),
            live,
        }
    }
}

/// Config keys that differ between `old` and `new` outside the live settings: what a reload
/// can't apply until a restart (dotted, e.g. "display.upscale-filter").
pub(crate) fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut merged = new.clone();
    LiveSettings::from_config(old).apply_to(&mut merged);
    let (Ok(old), Ok(merged)) = (serde_json::to_value(old), serde_json::to_value(&merged)) else {
        return vec!["(the config could not be compared)".into()];
    };
    let mut fields = Vec::new();
    differing_keys(&old, &merged, "", &mut fields);
    let mut keys: Vec<String> = Vec::new();
    for key in fields.iter().flat_map(|field| config_keys(field)) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The config file's keys for a field of the typed config (dotted, as `differing_keys` gives
/// it): most are the same; these are stored in other units or shapes.
fn config_keys(field: &str) -> Vec<String> {
    // A Duration serializes as {secs, nanos}.
    let field = field
        .strip_suffix(".secs")
        .or_else(|| field.strip_suffix(".nanos"))
        .unwrap_or(field);
    let keys: &[&str] = match field {
        "buffer.max-bytes" => &["buffer.max-megabytes"],
        "log.max-bytes" => &["log.max-kilobytes"],
        "adapt.settle" => &["adapt.settle-seconds"],
        "output.status-interval" => &["output.status-seconds"],
        "output.snapshot-interval" => &["output.snapshot-seconds"],
        "model.size" => &["model.width", "model.height"],
        "display.terminal-size" => &["display.terminal-columns", "display.terminal-rows"],
        "schedule" => &["schedule.periods"],
        other => return vec![other.to_string()],
    };
    keys.iter().map(|key| key.to_string()).collect()
}

fn differing_keys(a: &serde_json::Value, b: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (key, value) in a {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match b.get(key) {
                    Some(other) => differing_keys(value, other, &path, out),
                    None => out.push(path),
                }
            }
        }
        (a, b) if a != b => out.push(at.to_string()),
        _ => {}
    }
}

/// Stop, blank, brightness and the settings, shared by the stages.
pub(crate) struct Control {
    stop: AtomicBool,
    blanked: AtomicBool,
    /// The walk's guard asked for a fresh keyframe (taken by the keyframe stage).
    reanchor: AtomicBool,
    /// Picture brightness in thousandths (1000: unchanged).
    brightness_permille: AtomicU32,
    generation: AtomicU64,
    settings: Mutex<Arc<Settings>>,
}

impl Control {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            stop: AtomicBool::new(false),
            blanked: AtomicBool::new(false),
            reanchor: AtomicBool::new(false),
            brightness_permille: AtomicU32::new(1000),
            generation: AtomicU64::new(0),
            settings: Mutex::new(Arc::new(settings)),
        }
    }

    pub(crate) fn settings(&self) -> Arc<Settings> {
        Arc::clone(
            &self
                .settings
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Publishes new settings; every reader picks them up at its next check.
    pub(crate) fn update(&self, settings: Settings) {
        *self
            .settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(settings);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Asks the keyframe stage to make its next keyframe a fresh one (the guard's re-anchor).
    pub(crate) fn request_reanchor(&self) {
        self.reanchor.store(true, Ordering::Release);
    }

    /// Whether a re-anchor was asked for since the last call (clears the request).
    pub(crate) fn take_reanchor(&self) -> bool {
        self.reanchor.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn blanked(&self) -> bool {
        self.blanked.load(Ordering::Relaxed)
    }

    pub(crate) fn set_blanked(&self, blanked: bool) {
        self.blanked.store(blanked, Ordering::Relaxed);
    }

    pub(crate) fn brightness(&self) -> f32 {
        self.brightness_permille.load(Ordering::Relaxed) as f32 / 1000.0
    }

    pub(crate) fn set_brightness(&self, factor: f64) {
        let permille = (factor.clamp(0.0, 1.0) * 1000.0).round() as u32;
        self.brightness_permille.store(permille, Ordering::Relaxed);
    }

    /// Sleeps `duration` in short slices; false when told to stop meanwhile.
    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        let mut left = duration;
        while !left.is_zero() {
            if self.stopping() {
                return false;
            }
            let step = left.min(POLL);
            std::thread::sleep(step);
            left -= step;
        }
        !self.stopping()
    }

    /// Waits while the schedule has the screen blanked (generation pauses then); false when
    /// told to stop.
    pub(crate) fn wait_while_blanked(&self) -> bool {
        while self.blanked() {
            if !self.sleep(PAUSE_POLL) {
                return false;
            }
        }
        !self.stopping()
    }
}

/// A reader's view of the settings: `changed` returns them once per update.
pub(crate) struct Watcher {
    seen: u64,
}

impl Watcher {
    pub(crate) fn new(control: &Control) -> Self {
        Self {
            seen: control.generation.load(Ordering::Acquire),
        }
    }

    /// The new settings if they changed since the last call.
    pub(crate) fn changed(&mut self, control: &Control) -> Option<Arc<Settings>> {
        let now = control.generation.load(Ordering::Acquire);
        (now != self.seen).then(|| {
            self.seen = now;
            control.settings()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> FrameBudget {
        FrameBudget::plan(512 * 1024 * 1024, 110_592, 10).expect("fits")
    }

    #[test]
    fn a_watcher_sees_each_update_once() {
        let config = Config::default();
        let control = Control::new(Settings::derive(&config, &budget()));
        let mut watcher = Watcher::new(&control);
        assert!(watcher.changed(&control).is_none());
        let mut faster = config.clone();
        faster.display.fps = 12.0;
        control.update(Settings::derive(&faster, &budget()));
        assert_eq!(watcher.changed(&control).map(|s| s.live.fps), Some(12.0));
        assert!(watcher.changed(&control).is_none());
        control.set_brightness(0.3);
        assert!((control.brightness() - 0.3).abs() < 1e-6);
    }

    #[test]
    fn every_count_follows_the_fps() {
        let mut config = Config::default(); // 30 s buffer, start 10 s, resume 2 s
        for (fps, buffer, start, resume, recent) in [
            (30.0, 900, 300, 60, 30),
            (10.0, 300, 100, 20, MIN_PING_PONG_FRAMES.max(10)),
            (60.0, 1800, 600, 120, 60),
            (2.0, 60, 20, 4, MIN_PING_PONG_FRAMES),
        ] {
            config.display.fps = fps;
            let s = Settings::derive(&config, &budget());
            assert_eq!(
                (
                    s.buffer_frames,
                    s.start_frames,
                    s.resume_frames,
                    s.recent_frames
                ),
                (buffer, start, resume, recent),
                "{fps} fps"
            );
            assert_eq!(s.period, Duration::from_secs_f64(1.0 / fps));
        }
    }

    #[test]
    fn a_reload_names_what_it_changed_old_to_new() {
        let old = Config::default();
        let mut new = old.clone();
        new.display.fps = 12.0;
        new.interpolation.frames_per_transition = 45;
        new.prompts.themes.truncate(1);
        let changes = LiveSettings::from_config(&old).changes(&LiveSettings::from_config(&new));
        assert_eq!(
            changes,
            vec![
                "display.fps: 30.0 -> 12.0".to_string(),
                "interpolation.frames-per-transition: 90 -> 45".to_string(),
                "prompts changed".to_string(),
            ]
        );
        let same = LiveSettings::from_config(&old);
        assert!(same.changes(&same).is_empty());
    }

    #[test]
    fn restart_only_changes_are_named_and_live_ones_are_not() {
        let old = Config::default();
        let mut new = old.clone();
        new.display.fps = 10.0;
        new.display.rotation = Rotation::Half;
        new.interpolation.frames_per_transition = 7;
        new.prompts.rotation_interval = 3;
        assert!(needs_restart(&old, &new).is_empty());
        new.decode.batch_size = 3;
        new.display.sink = crate::config::SinkKind::Null;
        new.cppn.zoom = 2.0;
        assert_eq!(
            needs_restart(&old, &new),
            vec!["cppn.zoom", "decode.batch-size", "display.sink"]
        );
        // Fields stored in other units or shapes are named by the file's keys.
        let mut new = old.clone();
        new.buffer.max_bytes /= 2;
        new.output.status_interval = Duration::from_millis(1500);
        new.output.snapshot_interval = None;
        new.log.max_bytes *= 2;
        assert_eq!(
            needs_restart(&old, &new),
            vec![
                "buffer.max-megabytes",
                "log.max-kilobytes",
                "output.snapshot-seconds",
                "output.status-seconds"
            ]
        );
    }

    /// Every field of the typed config that a reload can name is a key of the reference config
    /// (config/dreamframe.toml documents every key, commented-out ones included).
    #[test]
    fn every_field_is_named_by_a_key_of_the_reference_config() {
        let reference = include_str!("../../config/dreamframe.toml");
        let mut documented = Vec::new();
        let mut section = String::new();
        for line in reference.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some(name) = line.strip_prefix('[') {
                section = name.trim_matches(['[', ']']).to_string();
                documented.push(section.clone());
            } else if let Some((key, _)) = line.split_once(" = ") {
                if key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    documented.push(if section.is_empty() {
                        key.to_string()
                    } else {
                        format!("{section}.{key}")
                    });
                }
            }
        }
        let mut fields = Vec::new();
        let config = serde_json::to_value(Config::default()).unwrap();
        leaf_fields(&config, "", &mut fields);
        assert!(fields.len() > 50, "{fields:?}");
        for field in fields {
            for key in config_keys(&field) {
                assert!(
                    documented.contains(&key),
                    "{field} is named {key}, which config/dreamframe.toml lacks"
                );
            }
        }
    }

    fn leaf_fields(value: &serde_json::Value, at: &str, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) if !map.contains_key("secs") => {
                for (key, value) in map {
                    let path = if at.is_empty() {
                        key.clone()
                    } else {
                        format!("{at}.{key}")
                    };
                    leaf_fields(value, &path, out);
                }
            }
            _ => out.push(at.to_string()),
        }
    }
}
