//! The pipeline on its own (no service around it), with the fake generator and the memory sink:
//! what a reload of the frame rate re-derives, and the quality ladder moving with the decoder's
//! capacity. Waits poll for the condition with a generous deadline, whatever this machine's
//! speed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::adapt::AdaptStatus;
use super::control::LiveSettings;
use super::Pipeline;
use crate::config::{Config, UnderrunPolicy};
use crate::frame::{Geometry, PixelFormat};
use crate::generator::fake::{FakeControls, FakeGenerator};
use crate::sink::memory::MemorySink;
use crate::testing::{poll, poll_until};

const FPS: f64 = 50.0;
/// Bounds the waits, so that a stuck pipeline fails instead of hanging.
const LONG: Duration = Duration::from_secs(120);

fn config(policy: UnderrunPolicy, dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.display.fps = FPS;
    config.display.realtime = false;
    config.buffer.seconds = 1.0;
    config.buffer.start_seconds = 0.2;
    config.buffer.resume_seconds = 0.2;
    config.buffer.underrun = policy;
    config.interpolation.frames_per_transition = 10;
    config.decode.batch_size = 5;
    config.output.dir = Some(dir.to_path_buf());
    config.output.snapshot_interval = None;
    config
}

fn memory_sink() -> MemorySink {
    MemorySink::new(Geometry::packed(32, 18, PixelFormat::XRGB8888)).0
}

fn fake() -> (FakeGenerator, Arc<FakeControls>) {
    let generator = FakeGenerator::new(16, 9);
    let controls = Arc::clone(&generator.controls);
    controls.decode_delay_us.store(1000, Ordering::Relaxed);
    (generator, controls)
}

/// Reloading fps 30 -> 10 -> 60 re-derives every count that follows from it: the buffer's
/// capacity (and so how far the decoder may run ahead), the start and resume thresholds, the
/// replay history and the pacer's period.
#[test]
fn a_reload_of_fps_resizes_the_buffer_thresholds_history_and_the_decoders_lead() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(UnderrunPolicy::Hold, dir.path());
    config.display.fps = 30.0;
    config.buffer.seconds = 1.0;
    config.buffer.start_seconds = 0.5;
    config.buffer.resume_seconds = 0.2;
    let (generator, controls) = fake();
    controls.decode_delay_us.store(100, Ordering::Relaxed);
    let sink = memory_sink();
    let pipeline = Pipeline::spawn(&config, Box::new(sink), Box::new(generator), 5, None)
        .expect("pipeline starts");

    // Waits (bounded, whatever this machine's speed) until the buffer's level satisfies `wanted`.
    let wait_until = |pipeline: &Pipeline, what: &str, wanted: &dyn Fn(usize) -> bool| {
        poll(LONG, || {
            wanted(pipeline.buffer.level().frames).then_some(())
        })
        .unwrap_or_else(|| panic!("never {what}: {:?}", pipeline.buffer.level()));
    };
    let check = |pipeline: &Pipeline, fps: f64| {
        let settings = pipeline.control.settings();
        assert_eq!(settings.live.fps, fps);
        let frames = |seconds: f64| (seconds * fps).ceil() as usize;
        assert_eq!(pipeline.buffer.level().capacity_frames, frames(1.0));
        assert_eq!(settings.start_frames, frames(0.5));
        assert_eq!(settings.resume_frames, frames(0.2));
        assert_eq!(settings.recent_frames, (fps as usize).max(8));
        assert_eq!(settings.period, Duration::from_secs_f64(1.0 / fps));
        assert!(
            pipeline.recent.len() <= settings.recent_frames,
            "history not shrunk"
        );
    };

    check(&pipeline, 30.0);
    // The decoder runs ahead until the buffer holds about a second.
    wait_until(&pipeline, "filled at 30 fps", &|frames| frames >= 25);

    let mut live = LiveSettings::from_config(&config);
    live.fps = 10.0;
    pipeline.reconfigure(&live);
    check(&pipeline, 10.0);
    // Frames already in stay, playback drains them, and from then on the decoder keeps no
    // more than one second of 10 fps ahead.
    wait_until(&pipeline, "drained to 10 fps' second", &|frames| {
        frames <= 10
    });
    // While the decoder makes 10 more (a second of 10 fps), however long that takes here.
    let decoded = controls.decoded_frames.load(Ordering::Relaxed);
    poll_until("10 more frames decoded at 10 fps", LONG, || {
        let frames = pipeline.buffer.level().frames;
        assert!(frames <= 10, "{frames} frames ahead at 10 fps");
        controls.decoded_frames.load(Ordering::Relaxed) >= decoded + 10
    });

    live.fps = 60.0;
    pipeline.reconfigure(&live);
    check(&pipeline, 60.0);
    wait_until(&pipeline, "filled at 60 fps", &|frames| frames > 30);
    shut_down(pipeline);
}

/// Starts the pipeline on `generator` (a fake with a half-size knob) for a ladder test.
fn ladder_pipeline(
    dir: &std::path::Path,
    bounds: impl FnOnce(&mut Config),
) -> (Pipeline, Arc<FakeControls>) {
    let generator = FakeGenerator::new(16, 9).with_sizes(&[0.5]);
    let controls = Arc::clone(&generator.controls);
    controls.decode_delay_us.store(1000, Ordering::Relaxed);
    let mut config = config(UnderrunPolicy::PingPong, dir);
    config.interpolation.frames_per_transition = 20;
    config.buffer.seconds = 2.0;
    config.buffer.start_seconds = 0.5;
    config.adapt.min_frames_per_transition = 5;
    config.adapt.settle = Duration::from_secs(1);
    bounds(&mut config);
    let sink = memory_sink();
    let pipeline = Pipeline::spawn(&config, Box::new(sink), Box::new(generator), 5, None)
        .expect("pipeline starts");
    (pipeline, controls)
}

/// Polls the ladder (at most `limit`, whatever this machine's speed) until `wanted` holds;
/// returns every rung seen meanwhile and the status then.
fn wait_for_rung(
    pipeline: &Pipeline,
    what: &str,
    limit: Duration,
    wanted: impl Fn(&AdaptStatus) -> bool,
) -> (Vec<usize>, AdaptStatus) {
    let mut seen = Vec::new();
    let mut last = None;
    let found = poll(limit, || {
        let status = pipeline.adapt.status()?;
        if seen.last() != Some(&status.rung) {
            seen.push(status.rung);
        }
        if wanted(&status) {
            return Some(status);
        }
        last = Some(status);
        None
    });
    match found {
        Some(status) => (seen, status),
        None => panic!("never {what}: {last:?} (rungs seen {seen:?})"),
    }
}

fn shut_down(mut pipeline: Pipeline) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    assert!(runtime
        .block_on(pipeline.shutdown(Duration::from_secs(5)))
        .is_none());
}

#[test]
fn with_adaptation_the_ladder_goes_down_when_capacity_drops_and_back_up_when_it_returns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pipeline, controls) = ladder_pipeline(dir.path(), |_| {});
    // Fast: the top rung, measured.
    let (_, top) = wait_for_rung(
        &pipeline,
        "measured at the top",
        Duration::from_secs(30),
        |s| s.capacity_fps.is_some() && s.rung == 0,
    );
    assert_eq!(top.frames_per_transition, 20, "{top:?}");
    // 60 ms a frame at full size: the top rung needs 50 decoded frames a second and gets 16.
    controls.decode_delay_us.store(60_000, Ordering::Relaxed);
    let (_, low) = wait_for_rung(&pipeline, "down", Duration::from_secs(60), |s| s.rung >= 2);
    assert_eq!((low.width, low.height), (8, 5), "half size: {low:?}");
    // Fast again: back to the top, one rung at a time.
    controls.decode_delay_us.store(1000, Ordering::Relaxed);
    let (climb, back) = wait_for_rung(&pipeline, "back up", Duration::from_secs(60), |s| {
        s.rung == 0
    });
    assert!(
        climb.windows(2).all(|w| w[1] + 1 == w[0]),
        "one rung at a time: {climb:?}"
    );
    assert_eq!(
        (back.width, back.height, back.frames_per_transition),
        (16, 9, 20)
    );
    shut_down(pipeline);
}

#[test]
fn with_adaptation_the_ladder_settles_at_steady_capacity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pipeline, controls) = ladder_pipeline(dir.path(), |_| {});
    // 40 ms a frame at full size: the top two rungs can't keep the pace, the third (half size)
    // has three times what it needs and the one above it three quarters: nothing to climb to.
    controls.decode_delay_us.store(40_000, Ordering::Relaxed);
    let (_, settled) = wait_for_rung(&pipeline, "settled", Duration::from_secs(60), |s| {
        s.rung >= 2
    });
    let moves = settled.changes;
    // Six settle periods later it is where it was, with no moves meanwhile. The wait is what is
    // tested: staying put can't be polled for.
    std::thread::sleep(Duration::from_secs(6));
    let later = pipeline.adapt.status().expect("a ladder");
    assert_eq!(
        (later.rung, later.changes),
        (settled.rung, moves),
        "{settled:?} then {later:?}"
    );
    shut_down(pipeline);
}

#[test]
fn with_adaptation_the_ladder_keeps_to_the_owners_bounds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pipeline, controls) = ladder_pipeline(dir.path(), |config| {
        config.adapt.min_frames_per_transition = 13;
        config.adapt.min_resolution_scale = 1.0;
    });
    controls.decode_delay_us.store(40_000, Ordering::Relaxed);
    let (seen, lowest) = wait_for_rung(&pipeline, "at its lowest", Duration::from_secs(60), |s| {
        s.rung + 1 == s.rungs
    });
    assert_eq!(
        lowest.rungs, 2,
        "20 and 13 frames, full size only: {lowest:?}"
    );
    assert_eq!(
        (lowest.frames_per_transition, lowest.width, lowest.height),
        (13, 16, 9),
        "{seen:?}"
    );
    // Too slow even there: the art moves slower than its pace rather than break the bounds.
    poll(LONG, || (pipeline.adapt.speed() < 0.95).then_some(()))
        .unwrap_or_else(|| panic!("never slower than its pace: {}", pipeline.adapt.speed()));
    assert!(pipeline.adapt.status().expect("a ladder").rung <= 1);
    shut_down(pipeline);
}
