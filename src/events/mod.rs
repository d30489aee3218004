//! The log's events, typed: each is a struct whose `Display` is its log line (`event key=value
//! ...`, text values quoted and escaped where needed) and whose `read` parses the fields back from
//! such a line (`parse` splits a line into its fields). Every writer logs these structs, and the
//! analyzer (tools/dreamframe-analyze) reads them through the same definitions, so a renamed field
//! can't silently break it.
//!
//! Pure formatting and parsing; used on whichever thread logs (never the pacer's per-frame
//! path). `read` returns `None` for a line whose fields don't fit.

use std::collections::BTreeMap;
use std::fmt;

pub mod parse;

/// A value of a field: how it is written into a line and read back from one.
pub trait FieldValue: Sized {
    /// Writes ` key=value` (or nothing, for an absent optional value).
    fn write_to(&self, key: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// The value of `key` among a line's fields; `None` when it is missing or unreadable (an
    /// optional value reads as `Some(None)` when missing).
    fn read_from(fields: &BTreeMap<String, String>, key: &str) -> Option<Self>;
}

/// The largest magnitude a figure our logs and status.json can hold (frame counters over decades
/// at 240 fps stay below 1e12): anything beyond is a damaged or forged value.
pub const MAX_FIGURE: f64 = 1e12;

/// A figure a display could have written: finite and within `MAX_FIGURE`.
pub fn figure(value: f64) -> Option<f64> {
    (value.is_finite() && value.abs() <= MAX_FIGURE).then_some(value)
}

/// The most characters of a prompt a log line carries: more than a text encoder reads (77
/// tokens), so the logged prompt still reproduces the keyframe, and a 1 MB prompt no 1 MB line.
pub const MAX_LOGGED_PROMPT_CHARS: usize = 400;

/// `prompt` cut to `MAX_LOGGED_PROMPT_CHARS`, saying how long it was when cut.
pub fn logged_prompt(prompt: &str) -> String {
    let length = prompt.chars().count();
    if length <= MAX_LOGGED_PROMPT_CHARS {
        return prompt.to_string();
    }
    let kept: String = prompt.chars().take(MAX_LOGGED_PROMPT_CHARS).collect();
    format!("{kept}... ({length} characters in all)")
}

/// Text as it goes into a line: bare when it is one plain word, else quoted with `\"`, `\\`
/// and `\n` escaped, and every other control character but tab as `\u{1b}`: a file name with
/// an escape sequence in it must not reach a terminal reading the journal.
pub fn quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\'));
    if plain {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() && c != '\t' => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

macro_rules! plain_values {
    ($($ty:ty),*) => {$(
        impl FieldValue for $ty {
            fn write_to(&self, key: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(out, " {key}={self}")
            }
            fn read_from(fields: &BTreeMap<String, String>, key: &str) -> Option<Self> {
                fields.get(key)?.parse().ok()
            }
        }
        impl FieldValue for Option<$ty> {
            fn write_to(&self, key: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Some(value) => value.write_to(key, out),
                    None => Ok(()),
                }
            }
            fn read_from(fields: &BTreeMap<String, String>, key: &str) -> Option<Self> {
                Some(<$ty>::read_from(fields, key))
            }
        }
    )*};
}

plain_values!(u64, u32, usize, i64, bool);

impl FieldValue for f64 {
    /// Three decimals: microseconds for milliseconds, more than any figure here needs.
    fn write_to(&self, key: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, " {key}={self:.3}")
    }
    fn read_from(fields: &BTreeMap<String, String>, key: &str) -> Option<Self> {
        fields
            .get(key)?
            .parse()
            .ok()
            .filter(|value: &f64| value.is_finite())
    }
}

impl FieldValue for Option<f64> {
    fn write_to(&self, key: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Some(value) => value.write_to(key, out),
            None => Ok(()),
        }
    }
    fn read_from(fields: &BTreeMap<String, String>, key: &str) -> Option<Self> {
        Some(f64::read_from(fields, key))
    }
}

impl FieldValue for String {
    fn write_to(&self, key: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, " {key}={}", quoted(self))
    }
    fn read_from(fields: &BTreeMap<String, String>, key: &str) -> Option<Self> {
        fields.get(key).cloned()
    }
}

impl FieldValue for Option<String> {
    fn write_to(&self, key: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Some(value) => value.write_to(key, out),
            None => Ok(()),
        }
    }
    fn read_from(fields: &BTreeMap<String, String>, key: &str) -> Option<Self> {
        Some(fields.get(key).cloned())
    }
}

/// Values for the round-trip test of every event.
#[cfg(test)]
pub trait Sample {
    fn sample() -> Self;
}

#[cfg(test)]
mod samples {
    use super::Sample;
    macro_rules! sample {
        ($($ty:ty = $value:expr),*) => {$(
            impl Sample for $ty {
                fn sample() -> Self {
                    $value
                }
            }
        )*};
    }
    sample!(
        u64 = 18_446_744_073_709_551_615,
        u32 = 4_000_000_000,
        usize = 12345,
        i64 = -7,
        bool = true,
        f64 = 1234.5,
        String = "two words, a \"quote\", a=b, a \\ and an escape \x1b[31m\u{9b} too".into()
    );
    impl<T: Sample> Sample for Option<T> {
        fn sample() -> Self {
            Some(T::sample())
        }
    }
}

/// Defines the events: a struct per event with its fields, its line (`Display`), `NAME` and
/// `read`. A trailing text, after `=>`, is a fixed human note at the end of the line, in
/// parentheses (it holds no `=`, so parsers pass over it).
macro_rules! events {
    ($(
        $(#[$doc:meta])*
        $name:ident = $tag:literal { $( $(#[$fdoc:meta])* $field:ident : $ty:ty ),* $(,)? }
        $(=> $tail:literal)?;
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, PartialEq, Default)]
            pub struct $name {
                $( $(#[$fdoc])* pub $field: $ty, )*
            }

            impl $name {
                pub const NAME: &'static str = $tag;

                /// The event from a parsed line's fields.
                pub fn read(fields: &BTreeMap<String, String>) -> Option<Self> {
                    let _ = fields;
                    Some(Self { $( $field: <$ty as FieldValue>::read_from(fields, stringify!($field))?, )* })
                }
            }

            impl fmt::Display for $name {
                fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
                    out.write_str($tag)?;
                    $( FieldValue::write_to(&self.$field, stringify!($field), out)?; )*
                    $( out.write_str(" ")?; out.write_str($tail)?; )?
                    Ok(())
                }
            }
        )*

        /// Every event's name.
        pub const NAMES: &[&str] = &[$($tag),*];

        /// Each event with sample values, formatted, and whether reading its line back gives it
        /// again (for the round-trip test).
        #[cfg(test)]
        pub fn round_trips(read_line: impl Fn(&str) -> Option<(String, BTreeMap<String, String>)>) -> Vec<(String, bool)> {
            vec![$({
                let event = $name { $( $field: Sample::sample(), )* };
                let line = event.to_string();
                let back = read_line(&line)
                    .filter(|(name, _)| name == $tag)
                    .and_then(|(_, fields)| $name::read(&fields));
                (line, back.as_ref() == Some(&event))
            }),*]
        }
    };
}

events! {
    /// The display started.
    Start = "start" {
        version: String, generator: String, seed: u64, sink: String, width: u32, height: u32,
        stride: usize, format: String, internal_width: u32, internal_height: u32, fps: f64,
        frames_per_transition: usize, buffer_capacity_frames: usize, recent_frames: usize,
        decode_batch: usize, underrun_policy: String,
    };
    /// The first frame reached the screen, this long after the process started.
    FirstPicture = "first_picture" { after_s: f64 };
    /// systemd was told the display is up.
    Ready = "ready" { frames_shown: u64, notify: bool };
    /// A keyframe was made; `theme` and `prompt` when the generator has prompts.
    Keyframe = "keyframe" {
        index: u64, seed: u64, generator: String, ms: f64, lock_wait_ms: f64,
        theme: Option<u64>, prompt: Option<String>,
    };
    /// The walk's guard asked for a fresh keyframe: the check that failed (`reason`), its figure
    /// (under the metric's own name, the others absent) and the threshold it crossed, judged on
    /// keyframe `index`.
    Reanchor = "reanchor" {
        reason: String, novelty: Option<f64>, contrast: Option<f64>,
        colourfulness: Option<f64>, detail: Option<f64>, clipped: Option<f64>, threshold: f64,
        index: u64,
    };
    /// The model loaded behind the built-in generator is ready and takes over at the next
    /// keyframe, this long after the process started.
    ModelReady = "model_ready" { generator: String, after_s: f64 };
    /// A transition was decoded into the buffer.
    Transition = "transition" {
        from: u64, to: u64, frames: usize, slerp_ms: f64, decode_ms: f64,
        decode_ms_per_frame: f64, upscale_ms_per_frame: f64,
        /// The longest wait for the model lock among the transition's acquisitions.
        lock_wait_ms: f64, lock_acquisitions: u32, buffer_frames: usize, buffer_seconds: f64,
    };
    /// The periodic figures (names as in status.json); rates since the previous `stats` line.
    Stats = "stats" {
        state: String, achieved_fps: f64, target_fps: f64, frames_shown: u64, late_frames: u64,
        skipped_deadlines: u64, held_deadlines: u64, underruns: u64, underrun_frames: u64,
        buffer_frames: usize, buffer_seconds: f64, buffer_percentage: f64, jitter_p50_ms: f64,
        jitter_p99_ms: f64, jitter_max_ms: f64, presented_p99_ms: f64,
        model_lock_avg_wait_ms: f64, model_lock_max_wait_ms: f64, model_lock_contended: u64,
        /// Absent from logs written before the decoders had a lock of their own.
        decode_lock_wait_p99_ms: Option<f64>, decode_fps: f64, decode_ms_per_frame: f64, upscale_ms_per_frame: f64,
        generator_errors: u64,
        /// Absent from logs written before capacity-aware playback: the art's speed (a share of
        /// its configured pace) and the quality ladder's rung (absent without adaptation).
        animation_speed: Option<f64>, adapt_rung: Option<usize>,
    };
    /// The quality ladder moved (`pipeline::adapt`): from one rung to another (labels: frames
    /// per transition, decoded size, tiny decoder, keyframe steps), why ("capacity": the rung
    /// it left couldn't keep the configured pace; "headroom": the one it climbed to can), the
    /// decoded frames a second the rung it left sustains and needs, and the seconds of art
    /// decoded ahead of the screen.
    Adapt = "adapt" {
        from: String, to: String, rung: usize, rungs: usize, reason: String,
        capacity_fps: f64, need_fps: f64, buffer_s: f64,
    };
    /// Playback changed state (buffering, playing, underrun).
    Playback = "playback" { state: String, buffer_frames: usize, policy: String };
    /// The buffer ran dry while playing.
    Underrun = "underrun" { policy: String, buffer_frames: usize, recent_frames: usize };
    /// The generator failed; it is retried after `retry_in_s`.
    GeneratorError = "generator_error" {
        stage: String, index: Option<u64>, frames: Option<usize>, from: Option<u64>,
        to: Option<u64>, retry_in_s: Option<u64>, error: String,
    };
    /// A decode ran out of memory; the batch is halved.
    DecodeOutOfMemory = "decode_out_of_memory" {
        batch_size: usize, retry_batch_size: usize, error: String,
    };
    /// The pacer started, or its rate changed on a reload. On a sink that flips on the vertical
    /// blank: the screen's refresh, how many refreshes each frame stays up (`cadence`) and the
    /// frame rate that makes (`shown_fps`, refresh/cadence).
    Pacer = "pacer" {
        fps: f64, realtime: Option<bool>, reloaded: Option<bool>, refresh_hz: Option<f64>,
        cadence: Option<u32>, shown_fps: Option<f64>,
    };
    /// The drm sink's screen as opened (the card, connector, mode and buffers).
    Drm = "drm" {
        card: String, driver: String, connector: String, mode: String, refresh_hz: f64,
        format: String, buffers: usize, pitch: u32, dpms: bool,
    };
    /// A DRM card as probed (`dreamframe probe`), or why it could not be.
    DrmCard = "drm_card" {
        path: String, driver: Option<String>, connectors: Option<usize>, crtcs: Option<usize>,
        planes: Option<usize>, master: Option<String>, error: Option<String>,
    };
    /// A connector of a probed card, its status and modes (the preferred one marked).
    DrmConnector = "drm_connector" { card: String, connector: String, status: String, modes: String };
    /// A plane of a probed card and the pixel formats it takes.
    DrmPlane = "drm_plane" { card: String, plane: u32, kind: String, formats: String };
    /// The screen's cable was unplugged (`connected=false`) or plugged in again, with the mode
    /// then in use, or why the screen could not be set up again (tried again 2 s later).
    DrmHotplug = "drm_hotplug" {
        connector: String, connected: bool, mode: Option<String>, error: Option<String>,
    };
    /// A page flip did not complete in time; the sink stopped waiting for it.
    DrmFlipStuck = "drm_flip_stuck" { waited_ms: f64, recovery: String };
    /// The framebuffer as probed at start (also printed by `dreamframe probe`).
    Framebuffer = "framebuffer" {
        path: String, driver: String, width: u32, height: u32, virtual_width: u32,
        virtual_height: u32, bpp: u32, red: String, green: String, blue: String,
        transp: String, line_length: u32, memory_bytes: u32, shadow_buffer: bool,
        buffering: String, flush: String, pan: String, vsync: String,
    };
    /// A framebuffer that could not be opened (from `dreamframe probe`).
    FramebufferUnavailable = "framebuffer" { path: String, error: String };
    /// Waiting for vsync stopped working and was switched off.
    VsyncDisabled = "vsync_disabled" { reason: String } => "(frames go out without waiting)";
    /// Powering the screen up at start failed (only visible at debug level).
    UnblankFailed = "framebuffer_unblank_failed" { error: String };
    /// The console's mode: switched to graphics, restored, or as probed.
    Console = "console" {
        path: String, mode: String, previous_mode: Option<i64>, error: Option<String>,
    };
    /// The console could not be taken over.
    ConsoleUnavailable = "console_unavailable" { error: String }
        => "(the console cursor and text may show over the art)";
    /// The terminal sink's size.
    Terminal = "terminal" { columns: u32, rows: u32 };
    /// A reload was applied.
    /// Where this run's files go (status.json, snapshot, resume.json; the log file, or "off").
    Output = "output" { dir: String, log_file: String };
    Reload = "reload" {
        applied: bool, fps: f64, fit: String, rotation: u32, frames_per_transition: usize,
        easing: String, themes: usize, schedule_periods: usize, buffer_capacity_frames: usize,
        /// What the reload changed: "display.fps: 30.0 -> 12.0, prompts changed", or "nothing"
        /// (optional: older logs lack it and must still read).
        changed: Option<String>,
    };
    /// A reload changed keys that only a restart applies.
    ReloadNeedsRestart = "reload_needs_restart" { keys: String }
        => "(these keep their running values until a restart)";
    /// A reload could not be used.
    ReloadRejected = "reload_rejected" { error: String } => "(the running config stays)";
    /// A reloaded fit or rotation could not be rendered.
    ReloadRenderFailed = "reload_render_failed" { error: String };
    /// The schedule's period in force changed ("none" when no period is).
    Schedule = "schedule" { action: String };
    /// The screen was powered down or up by the schedule.
    Screen = "screen" { blanked: bool, sink: String };
    /// `display.sink = "auto"` chose a sink.
    SinkChosen = "sink_chosen" { sink: String, reason: String };
    /// Powering the screen down or up failed.
    ScreenBlankFailed = "screen_blank_failed" { blanked: bool, error: String };
    /// The pacer stopped reaching deadlines, so the watchdog was not fed.
    WatchdogWithheld = "watchdog_withheld" { deadlines: u64 } => "(the pacer is not presenting)";
    /// sd_notify could not be used.
    NotifyUnavailable = "notify_unavailable" { socket: String, error: String };
    NotifyFailed = "notify_failed" { message: String, error: String };
    /// The Stable Diffusion model loaded.
    Model = "model" {
        kind: String, preset: String, weights_dir: String, device: String, dtype: String,
        width: u32, height: u32, steps: usize, guidance: f64, tiny_decoder: bool,
    };
    /// The configured model could not be loaded; `fallback` runs instead.
    ModelUnavailable = "model_unavailable" { kind: String, fallback: String, error: String };
    /// A prompt longer than the text encoder's context was cut.
    PromptTruncated = "prompt_truncated" { tokens: usize, max: usize, prompt: String };
    /// The tiny decoder in the weights folder could not be loaded for the adapt ladder.
    TinyDecoderUnavailable = "tiny_decoder_unavailable" { error: String }
        => "(the adapt ladder keeps the full VAE)";
    /// The fused group norm's CUDA kernels failed to compile or to match candle-nn's group norm
    /// on their first use (stable_diffusion/group_norm.rs).
    FusedGroupNormUnavailable = "fused_group_norm_unavailable" { error: String }
        => "(candle-nn's group norm serves)";
    /// The walk continues from resume.json.
    Resume = "resume" { next_index: u64, seed: u64, generator: String };
    /// resume.json is from another run's generator or seed.
    ResumeIgnored = "resume_ignored" {
        path: String, saved_generator: String, saved_seed: u64, generator: String, seed: u64,
    } => "(starting fresh)";
    ResumeUnreadable = "resume_unreadable" { error: String } => "(starting fresh)";
    /// The saved latent does not fit the generator.
    ResumeUnusable = "resume_unusable" { index: Option<u64>, error: String } => "(starting fresh)";
    ResumeSaveFailed = "resume_save_failed" { error: String };
    /// The first of a run of failed status.json writes (a full disk): the rest are counted, and
    /// `output_write_recovered` says when one succeeds again.
    StatusWriteFailed = "status_write_failed" { path: String, error: String }
        => "(said once until it can be written again)";
    StatusEncodeFailed = "status_encode_failed" { error: String };
    /// The first of a run of failed snapshot.png writes, as `status_write_failed`.
    SnapshotWriteFailed = "snapshot_write_failed" { path: String, error: String }
        => "(said once until it can be written again)";
    /// A periodic file was written again after `failed_writes` failed writes in a row.
    OutputWriteRecovered = "output_write_recovered" { path: String, failed_writes: u64 };
    OutputDirUnavailable = "output_dir_unavailable" { path: String, error: String };
    LogFileUnavailable = "log_file_unavailable" { path: String, error: String };
    /// A stage thread ended with an error or a panic.
    StageFailed = "stage_failed" { stage: String, error: String };
    /// Stages that did not end within the grace period after shutdown.
    StagesStillRunning = "stages_still_running" { count: usize, after_s: u64 } => "(leaving them)";
    /// Shutdown was asked for (a signal, or `--duration`).
    Shutdown = "shutdown" { reason: String };
    ShutdownRequested = "shutdown_requested" {};
    /// The display stopped.
    Stopped = "stopped" { frames_shown: u64, uptime_s: f64 };
    /// The display ended with an error.
    Exit = "exit" { error: String };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_prompt_is_cut_in_the_log_and_says_so() {
        assert_eq!(logged_prompt("a red fox"), "a red fox");
        let long = "x".repeat(1_000_000);
        let logged = logged_prompt(&long);
        assert!(logged.len() < 500, "{}", logged.len());
        assert!(
            logged.ends_with("... (1000000 characters in all)"),
            "{logged}"
        );
    }

    #[test]
    fn every_event_reads_back_as_written() {
        let results = round_trips(|line| {
            let full = format!("2026-11-28T10:00:00.123456789Z [INFO] {line}");
            parse::parse_line(&full).map(|parsed| (parsed.event, parsed.fields))
        });
        assert_eq!(results.len(), NAMES.len());
        for (line, ok) in &results {
            assert!(ok, "does not read back: {line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn text_is_quoted_only_when_it_must_be() {
        assert_eq!(quoted("single"), "single");
        assert_eq!(quoted("16/8"), "16/8");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("a b"), "\"a b\"");
        assert_eq!(quoted("say \"hi\"\n\\"), "\"say \\\"hi\\\"\\n\\\\\"");
        assert_eq!(quoted("evil\x1b[31m"), "\"evil\\u{1b}[31m\"");
    }
}
