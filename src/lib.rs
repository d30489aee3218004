//! dreamframe: an always-on generative-art display.
//!
//! keyframes (generator, model lock) -> decoder (slerp + batched decode) -> frame_buffer
//! -> playback (underrun policy, renderer: upscale + convert) -> pacer thread -> sink.
//! `app::run` wires and supervises them; `main.rs` only parses, loads and maps exit codes.

pub mod analyze;
pub mod app;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
pub mod decoder;
pub mod files;
pub mod frame_buffer;
pub mod generator;
pub mod interpolation;
pub mod keyframes;
pub mod live;
pub mod logging;
pub mod notify;
pub mod pacer;
pub mod pixel_format;
pub mod playback;
pub mod renderer;
pub mod resume;
pub mod schedule;
pub mod signals;
pub mod sink;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod sys;

pub use app::run;

/// Exit status for an invalid config (EX_CONFIG from sysexits.h); the systemd unit does not
/// restart on it.
pub const EXIT_CONFIG: u8 = 78;

/// When this process started (the first call; `main` makes it first thing), for
/// time-to-first-picture.
pub fn process_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

/// A seed for a run whose config names none: the clock's nanoseconds and the process id.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    generator::keyframe_seed(nanos, std::process::id() as u64)
}
