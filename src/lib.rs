//! dreamframe: an always-on generative-art display.
//!
//! `pipeline`: keyframes (generator, model lock) -> decoder (slerp + batched decode) ->
//! frame buffer -> playback (underrun policy, `render`: upscale + convert) -> pacer thread ->
//! `sink`. `service` is the tokio side that starts, watches and stops it (status, snapshots,
//! schedule, reload, watchdog). `config` reads the file, `events` defines every log line,
//! `sys` holds every unsafe system call. `main.rs` only parses, loads and maps exit codes.

pub mod analyze;
pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
pub mod events;
pub mod files;
pub mod frame;
pub mod generator;
pub mod launch;
pub mod logging;
pub mod monitor;
pub mod pipeline;
pub mod preflight;
pub mod render;
pub mod resume;
pub mod service;
pub mod signals;
pub mod sink;
pub mod stdout;
pub mod sys;

pub use service::run;

/// The patched candle-core (tools/candle-core) must be the one built: with upstream's this fails
/// to compile, where cargo would only warn that the `[patch]` went unused.
const _: &str = candle_core::DREAMFRAME_PATCH;

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
