//! dreamframe: an always-on generative-art display.
//!
//! `pipeline`: keyframes (generator, model lock) -> decoder (slerp + batched decode) ->
//! frame queue -> playback (underrun policy, `render`: upscale + convert) -> pacer thread ->
//! `sink`. `service` is the tokio side that starts, watches and stops it (status, snapshots,
//! schedule, reload, watchdog). `config` reads the file, `events` defines every log line,
//! `sys` holds every unsafe system call (the only module allowed `unsafe`). `commands` is the
//! command line (main.rs only calls `dreamframe::main`).

// `unsafe` lives in `sys` alone (which allows it, each block with its SAFETY comment); `pub` is
// for the API below, everything else `pub(crate)` (checked where the test doubles are built, as
// in CI: without them the items only tests use would read as unreachable).
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(feature = "test-doubles", warn(unreachable_pub))]

// The API: what the binaries, the analyzer, the tests and the benchmarks need.
pub mod checked_fs;
pub mod config;
pub mod events;
pub mod stdout;
#[cfg(feature = "test-doubles")]
pub mod testing;

pub use commands::main;
/// `run` and what it takes and gives: a sink, a generator, the final status.
pub use frame::{Frame, Geometry, PixelFormat};
pub use generator::{Generator, KeyframeRequest};
pub use service::run;
pub use service::status_file::Status;
pub use sink::{Flip, Sink};

mod commands;
mod console;
mod frame;
mod generator;
mod launch;
mod logging;
mod output_lock;
mod pipeline;
mod preflight;
mod render;
mod resume;
mod service;
mod signals;
mod sink;
mod sys;

/// The patched candle-core (tools/vendor/candle-core) must be the one built: with upstream's
/// this fails to compile, where cargo would only warn that the `[patch]` went unused.
const _: &str = candle_core::DREAMFRAME_PATCH;

/// Exit status for an invalid config (EX_CONFIG from sysexits.h); the systemd unit does not
/// restart on it.
pub(crate) const EXIT_CONFIG: u8 = 78;

/// When this process started (the first call; `main` makes it first thing), for
/// time-to-first-picture.
pub fn process_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

/// A seed for a run whose config names none: the clock's nanoseconds and the process id.
pub(crate) fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    generator::keyframe_seed(nanos, std::process::id() as u64)
}
