//! The real `run` with a fake generator and the memory sink: backpressure, underrun policies,
//! generator failures and sink failures; capacity-aware playback (blending from the second
//! frame, the quality ladder down and up, settling, the owner's bounds, a stalled generator).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dreamframe::config::{Config, UnderrunPolicy};
use dreamframe::testing::{FakeControls, FakeGenerator};
use dreamframe::testing::{MemorySink, Recording};
use dreamframe::Geometry;
use dreamframe::PixelFormat;
use dreamframe::Status;

use crate::util::poll_until_async;

const FPS: f64 = 50.0;

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

struct Outcome {
    result: anyhow::Result<Status>,
    recording: Arc<Mutex<Recording>>,
}

fn run_with<F: Future<Output = ()>>(
    config: Config,
    sink: MemorySink,
    recording: Arc<Mutex<Recording>>,
    generator: FakeGenerator,
    script: F,
) -> Outcome {
    let _pacing = crate::util::pacing_test();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(dreamframe::run(
        config,
        Box::new(sink),
        Box::new(generator),
        5,
        script,
    ));
    Outcome { result, recording }
}

fn memory_sink() -> (MemorySink, Arc<Mutex<Recording>>) {
    MemorySink::new(Geometry::packed(32, 18, PixelFormat::XRGB8888))
}

fn fake() -> (FakeGenerator, Arc<FakeControls>) {
    let generator = FakeGenerator::new(16, 9);
    let controls = Arc::clone(&generator.controls);
    controls.decode_delay_us.store(1000, Ordering::Relaxed);
    (generator, controls)
}

/// However slow this machine is, waits end on a condition; this only bounds them, so that a
/// stuck pipeline fails instead of hanging.
const LONG: Duration = Duration::from_secs(120);
/// status.json this often, for the scripts that wait on it.
const STATUS_INTERVAL: Duration = Duration::from_millis(100);

/// Frames presented after `from` (all of them with `None`).
fn shown_after(recording: &Mutex<Recording>, from: Option<Instant>) -> usize {
    let recording = recording.lock().expect("recording lock");
    recording
        .frames
        .iter()
        .filter(|frame| from.is_none_or(|from| frame.at > from))
        .count()
}

/// Whether status.json at `path` is there and `check` holds for it.
fn status_holds(path: &std::path::Path, check: impl Fn(&serde_json::Value) -> bool) -> bool {
    crate::util::status_json(path).is_some_and(|status| check(&status))
}

/// Whether status.json at `path` says "playing" in a status collected once `decoded` frames
/// were (so after whatever came before them).
fn playing_after(path: &std::path::Path, decoded: u64) -> bool {
    status_holds(path, |s| {
        s["state"] == "playing" && s["decoded_frames"].as_u64() >= Some(decoded)
    })
}

/// Plays a second's worth of frames, stalls the generator for `stall`, then plays until normal
/// playback is back with a second's worth of frames shown since; with adaptation or as before it
/// existed. Returns when the stall ended too.
fn run_with_stall(
    policy: UnderrunPolicy,
    stall: Duration,
    adapt: bool,
) -> (Status, Recording, Duration, Instant) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (generator, controls) = fake();
    let (sink, recording) = memory_sink();
    let mut config = config(policy, dir.path());
    config.adapt.enabled = adapt;
    config.output.status_interval = STATUS_INTERVAL;
    let status_path = dir.path().join("status.json");
    let watched = Arc::clone(&recording);
    let stall_ended = Arc::new(Mutex::new(None));
    let script = {
        let stall_ended = Arc::clone(&stall_ended);
        async move {
            poll_until_async("a second of playback", LONG, || {
                shown_after(&watched, None) >= 50
            })
            .await;
            controls.stalled.store(true, Ordering::Relaxed);
            // The stall's length is what is tested: longer than the 1 s buffer.
            tokio::time::sleep(stall).await;
            controls.stalled.store(false, Ordering::Relaxed);
            let ended = Instant::now();
            *stall_ended.lock().expect("stall end") = Some(ended);
            let decoded = controls.decoded_frames.load(Ordering::Relaxed);
            poll_until_async("playback to resume after the stall", LONG, || {
                shown_after(&watched, Some(ended)) >= 50
                    && playing_after(&status_path, decoded + 50)
            })
            .await;
        }
    };
    let outcome = run_with(config, sink, recording, generator, script);
    let status = outcome.result.expect("run succeeds");
    let recording = std::mem::take(&mut *outcome.recording.lock().expect("recording lock"));
    let stall_ended = stall_ended
        .lock()
        .expect("stall end")
        .expect("the script got to the stall");
    (status, recording, stall, stall_ended)
}

fn max_gap(recording: &Recording) -> Duration {
    recording
        .frames
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default()
}

fn assert_never_black(recording: &Recording) {
    assert!(!recording.frames.is_empty(), "nothing presented");
    for (index, frame) in recording.frames.iter().enumerate() {
        let lit = frame.pixels.chunks_exact(4).any(|p| p[..3] != [0, 0, 0]);
        assert!(lit, "frame {index} is black");
    }
}

#[test]
fn without_adaptation_ping_pong_keeps_frames_moving_through_a_stalled_generator() {
    let (status, recording, stall, _) =
        run_with_stall(UnderrunPolicy::PingPong, Duration::from_secs(2), false);
    assert_ping_pong_carried_the_stall(&status, &recording, stall);
}

/// The buffer ran dry, ping-pong showed frames all through the stall (no gap near its length,
/// never black) and normal playback resumed after it.
fn assert_ping_pong_carried_the_stall(status: &Status, recording: &Recording, stall: Duration) {
    assert!(
        status.underruns >= 1,
        "the 1 s buffer must run dry in a {stall:?} stall: {status:?}"
    );
    assert!(status.underrun_frames >= 10, "{status:?}");
    let gap = max_gap(recording);
    assert!(
        gap < Duration::from_millis(250),
        "presentation gap {gap:?} during a {stall:?} stall"
    );
    assert_never_black(recording);
    assert_eq!(status.state, "playing", "{status:?}");
}

#[test]
fn without_adaptation_hold_keeps_the_last_frame_and_the_pacer_keeps_its_deadlines() {
    let (status, recording, _, stall_ended) =
        run_with_stall(UnderrunPolicy::Hold, Duration::from_secs(2), false);
    assert!(status.underruns >= 1, "{status:?}");
    assert!(
        status.held_deadlines >= 20,
        "about 1 s of held deadlines expected: {status:?}"
    );
    // The pacer kept its grid through the stall: every deadline since playback began (50 a
    // second) presented a frame, held the last one or was skipped after a stall. This holds at
    // any speed; a pacer that stopped or drifted while holding would be off by far more.
    let playing_for = status.uptime_s - status.playing_since_s.expect("playing");
    let deadlines =
        (status.frames_shown_playing + status.held_deadlines + status.skipped_deadlines) as f64;
    let rate = deadlines / playing_for;
    assert!(
        (45.0..=55.0).contains(&rate),
        "{rate:.2} deadlines a second over {playing_for:.1} s, wanted 50: {status:?}"
    );
    assert_never_black(&recording);
    // Hold presents nothing while the buffer is dry: frames after the stall are new ones.
    let resumed = recording
        .frames
        .iter()
        .filter(|frame| frame.at > stall_ended)
        .count();
    assert!(
        resumed >= 50,
        "playback must resume after the stall: {resumed} frames since"
    );
}

#[test]
fn without_adaptation_slow_down_stretches_frames_before_the_buffer_runs_dry() {
    let (status, recording, _, _) =
        run_with_stall(UnderrunPolicy::SlowDown, Duration::from_secs(2), false);
    assert!(status.underrun_frames > 0, "{status:?}");
    assert_never_black(&recording);
}

#[test]
fn a_fast_generator_is_held_back_by_the_full_buffer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (generator, controls) = fake();
    controls.decode_delay_us.store(0, Ordering::Relaxed);
    let (sink, recording) = memory_sink();
    let mut config = config(UnderrunPolicy::Hold, dir.path());
    config.output.status_interval = STATUS_INTERVAL;
    let capacity = (config.buffer.seconds * FPS) as u64;
    let status_path = dir.path().join("status.json");
    // Until the buffer is (nearly) full after a second of frames shown, the decoder free to run
    // ahead all the while.
    let script = async move {
        poll_until_async("a full buffer after a second of playback", LONG, || {
            status_holds(&status_path, |s| {
                s["frames_shown"].as_u64() >= Some(50)
                    && s["buffer_frames"].as_u64() >= Some(capacity - 10)
            })
        })
        .await
    };
    let outcome = run_with(config, sink, recording, generator, script);
    let status = outcome.result.expect("run succeeds");
    assert_eq!(status.buffer_capacity_frames as u64, capacity);
    assert!(
        status.buffer_frames as u64 >= capacity - 10,
        "buffer should be (nearly) full: {status:?}"
    );
    // Decoded = shown + buffered + at most one transition waiting + a few in flight.
    let ahead = status.decoded_frames - status.frames_shown;
    assert!(
        ahead <= capacity + 10 + 5,
        "producer ran {ahead} frames ahead of a {capacity}-frame buffer"
    );
    assert_eq!(status.underruns, 0, "{status:?}");
}

#[test]
fn generator_failures_are_retried_and_the_display_carries_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (generator, controls) = fake();
    let (sink, recording) = memory_sink();
    let mut config = config(UnderrunPolicy::PingPong, dir.path());
    config.output.status_interval = STATUS_INTERVAL;
    let status_path = dir.path().join("status.json");
    let watched = Arc::clone(&recording);
    let recovered = Arc::new(Mutex::new(None));
    let script = {
        let recovered = Arc::clone(&recovered);
        async move {
            poll_until_async("playback", LONG, || shown_after(&watched, None) >= 25).await;
            controls.failing.store(true, Ordering::Relaxed);
            // The outage's length is part of what is tested: longer than the 1 s buffer.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            poll_until_async("a generator error counted", LONG, || {
                status_holds(&status_path, |s| s["generator_errors"].as_u64() >= Some(1))
            })
            .await;
            controls.failing.store(false, Ordering::Relaxed);
            let at = Instant::now();
            *recovered.lock().expect("recovery") = Some(at);
            // 150 frames shown since (as many as 3 s at 50 fps), and playing again.
            let decoded = controls.decoded_frames.load(Ordering::Relaxed);
            poll_until_async("playback after recovery", LONG, || {
                shown_after(&watched, Some(at)) >= 150 && playing_after(&status_path, decoded + 50)
            })
            .await;
        }
    };
    let outcome = run_with(config, sink, recording, generator, script);
    let status = outcome
        .result
        .expect("generator errors must not end the run");
    assert!(status.generator_errors >= 1, "{status:?}");
    assert_eq!(status.state, "playing", "{status:?}");
    let recording = outcome.recording.lock().expect("recording lock");
    assert_never_black(&recording);
    let recovered = recovered
        .lock()
        .expect("recovery")
        .expect("the script got to the recovery");
    let since = recording.frames.iter().filter(|f| f.at > recovered).count();
    assert!(
        since >= 150,
        "frames must keep coming after recovery: {since} since"
    );
}

#[test]
fn decode_out_of_memory_halves_the_batch_and_carries_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (generator, controls) = fake();
    controls.memory_limit_frames.store(2, Ordering::Relaxed);
    let (sink, recording) = memory_sink();
    let mut config = config(UnderrunPolicy::Hold, dir.path());
    config.decode.batch_size = 8;
    config.output.status_interval = STATUS_INTERVAL;
    let status_path = dir.path().join("status.json");
    let script = async move {
        poll_until_async("20 frames decoded and 10 shown", LONG, || {
            status_holds(&status_path, |s| {
                s["decoded_frames"].as_u64() >= Some(20) && s["frames_shown"].as_u64() > Some(10)
            })
        })
        .await
    };
    let outcome = run_with(config, sink, recording, generator, script);
    let status = outcome.result.expect("run succeeds");
    assert_eq!(
        status.generator_errors, 0,
        "halving is not a generator error: {status:?}"
    );
    assert!(status.decoded_frames >= 20, "{status:?}");
    assert!(status.frames_shown > 10, "{status:?}");
}

#[test]
fn a_failing_or_panicking_sink_ends_the_run_and_releases_the_display() {
    for panic in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (generator, _) = fake();
        let (sink, recording) = memory_sink();
        let sink = sink.failing_at(5, panic);
        let outcome = run_with(
            config(UnderrunPolicy::Hold, dir.path()),
            sink,
            recording,
            generator,
            std::future::pending(),
        );
        let error = outcome.result.expect_err("the run must fail");
        let text = format!("{error:#}");
        assert!(text.contains("pacer"), "{text}");
        assert!(
            text.contains(if panic { "panicked" } else { "told to fail" }),
            "{text}"
        );
        assert!(
            outcome.recording.lock().expect("recording lock").released,
            "sink not dropped (panic={panic})"
        );
    }
}

/// A schedule period that covers now (local time) for `action`.
fn period_now(action: dreamframe::config::ScheduleAction) -> dreamframe::config::Period {
    use dreamframe::config::MINUTES_PER_DAY;
    use dreamframe::testing::local_minute_of_day;
    let now = local_minute_of_day();
    dreamframe::config::Period {
        from: (now + MINUTES_PER_DAY - 60) % MINUTES_PER_DAY,
        to: (now + 60) % MINUTES_PER_DAY,
        action,
    }
}

#[test]
fn a_reload_changes_fps_and_rotation_without_a_gap_and_the_schedule_blanks_and_pauses() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Fixed colour bars: white on the left, black on the right, so a turn shows.
    let generator = dreamframe::testing::TestPattern::new(16, 9);
    let (sink, recording) = memory_sink();
    let mut config = config(UnderrunPolicy::Hold, dir.path());
    config.display.fps = 25.0;
    config.display.upscale_filter = dreamframe::config::UpscaleFilter::Nearest;
    let (reload_tx, reloads) = tokio::sync::mpsc::unbounded_channel();
    let mut slower = config.clone();
    slower.display.fps = 10.0;
    slower.display.rotation = dreamframe::config::Rotation::Half;
    slower.decode.batch_size = 2; // needs a restart: logged, not applied
    let mut night = slower.clone();
    night.schedule = vec![period_now(dreamframe::config::ScheduleAction::Blank)];
    let morning = slower.clone();
    let marks = Arc::new(Mutex::new(Vec::new()));
    let script_marks = Arc::clone(&marks);
    let watched = Arc::clone(&recording);
    let script = async move {
        let mark = |name: &'static str| {
            let now = Instant::now();
            script_marks.lock().expect("marks").push((name, now));
            now
        };
        // A second of 25 fps to take the median before the reload over.
        poll_until_async("a second of playback at 25 fps", LONG, || {
            let recording = watched.lock().expect("recording lock");
            recording.frames.len() >= 20
                && recording.frames[0].at.elapsed() >= Duration::from_secs(1)
        })
        .await;
        let slower_at = mark("slower");
        reload_tx.send(slower).expect("reload");
        poll_until_async("10 frames at 10 fps", LONG, || {
            shown_after(&watched, Some(slower_at + Duration::from_millis(300))) >= 10
        })
        .await;
        mark("night");
        reload_tx.send(night).expect("reload");
        poll_until_async("the night's blank", LONG, || {
            !watched.lock().expect("recording lock").blanks.is_empty()
        })
        .await;
        // How long the screen stays blank is what is tested: ten periods at 10 fps, long enough
        // that a frame presented while blank would be caught.
        tokio::time::sleep(Duration::from_secs(1)).await;
        mark("morning");
        reload_tx.send(morning).expect("reload");
        poll_until_async("5 frames after the unblank", LONG, || {
            let recording = watched.lock().expect("recording lock");
            recording.blanks.get(1).is_some_and(|&(unblanked, _)| {
                recording.frames.iter().filter(|f| f.at > unblanked).count() >= 5
            })
        })
        .await;
    };
    let _pacing = crate::util::pacing_test();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let status = runtime
        .block_on(dreamframe::testing::run_with_reloads(
            config,
            Box::new(sink),
            Box::new(generator),
            5,
            script,
            reloads,
        ))
        .expect("run");
    let recording = recording.lock().expect("recording");
    let marks = marks.lock().expect("marks");
    let at = |name: &str| marks.iter().find(|(n, _)| *n == name).expect("mark").1;
    let intervals = |from: std::time::Instant, to: std::time::Instant| -> Vec<f64> {
        let times: Vec<_> = recording
            .frames
            .iter()
            .map(|f| f.at)
            .filter(|t| *t > from && *t < to)
            .collect();
        times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .collect()
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let before = intervals(at("slower") - Duration::from_millis(800), at("slower"));
    let after = intervals(at("slower") + Duration::from_millis(300), at("night"));
    assert!(
        (median(before.clone()) - 40.0).abs() < 10.0,
        "25 fps before: {before:?}"
    );
    assert!(
        (median(after.clone()) - 100.0).abs() < 20.0,
        "10 fps after: {after:?}"
    );
    // No gap around the reload: the picture stays up.
    let around = intervals(
        at("slower") - Duration::from_millis(300),
        at("slower") + Duration::from_millis(500),
    );
    assert!(
        around.iter().all(|&ms| ms < 150.0),
        "gap at the reload: {around:?}"
    );
    // Turned half way round: the top-left pixel goes from white to black.
    let top_left = |from: std::time::Instant| {
        let frame = recording
            .frames
            .iter()
            .find(|f| f.at > from)
            .expect("a frame");
        frame.pixels[..3].to_vec()
    };
    assert_eq!(
        top_left(at("slower") - Duration::from_millis(300)),
        vec![255, 255, 255]
    );
    assert_eq!(
        top_left(at("slower") + Duration::from_millis(300)),
        vec![0, 0, 0]
    );

    // The night period blanked the screen, nothing was presented meanwhile, and it came back.
    assert_eq!(
        recording.blanks.iter().map(|(_, b)| *b).collect::<Vec<_>>(),
        vec![true, false],
        "blank then unblank"
    );
    let (blanked_at, unblanked_at) = (recording.blanks[0].0, recording.blanks[1].0);
    assert!(blanked_at > at("night") && blanked_at < at("night") + Duration::from_millis(500));
    let shown_while_blank = recording
        .frames
        .iter()
        .filter(|f| f.at > blanked_at && f.at < unblanked_at)
        .count();
    assert_eq!(shown_while_blank, 0, "frames presented on a blanked screen");
    let after_morning = recording
        .frames
        .iter()
        .filter(|f| f.at > unblanked_at)
        .count();
    assert!(
        after_morning >= 5,
        "display resumed: {after_morning} frames"
    );
    assert_eq!(status.schedule, None, "{status:?}");
}

#[test]
fn a_walk_that_settles_is_reanchored_through_the_running_pipeline() {
    use dreamframe::testing::{Decay, WalkingFake};
    let dir = tempfile::tempdir().expect("temp dir");
    let (sink, recording) = memory_sink();
    let _pacing = crate::util::pacing_test();
    let mut config = config(UnderrunPolicy::Hold, dir.path());
    config.interpolation.frames_per_transition = 5;
    config.output.status_interval = Duration::from_millis(100);
    // Until status.json counts two re-anchors, however slow this machine is; bounded.
    let status_path = dir.path().join("status.json");
    let two_reanchors = async move {
        poll_until_async("two re-anchors", LONG, || {
            status_holds(&status_path, |s| s["reanchors"].as_u64() >= Some(2))
        })
        .await
    };
    let walk = WalkingFake::new(48, 27, Decay::Converge);
    let status = crate::util::run_until(config, Box::new(sink), Box::new(walk), two_reanchors)
        .expect("run succeeds");
    // A second re-anchor needs the fresh keyframe the first asked for: the loop closed.
    assert!(
        status.reanchors >= 2,
        "{} re-anchors in {} keyframes",
        status.reanchors,
        status.keyframes
    );
    assert_never_black(&recording.lock().expect("recording lock"));
}

/// On a page-flipping screen (refresh 10 ms, fps 50) every frame stays up two refreshes, every
/// frame shown is one flip, flips are reported in order and once each, and each flip's lateness
/// is measured from its own vertical blank: what must hold at any speed.
#[test]
fn on_a_page_flipping_screen_each_frame_is_one_flip_of_a_whole_number_of_refreshes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (generator, _controls) = fake();
    let (sink, recording) = memory_sink();
    let sink = sink.with_vblank(Duration::from_millis(10));
    let mut config = config(UnderrunPolicy::Hold, dir.path());
    config.output.status_interval = STATUS_INTERVAL;
    let status_path = dir.path().join("status.json");
    let script = async move {
        poll_until_async("50 flips", LONG, || {
            status_holds(&status_path, |s| s["flips"].as_u64() >= Some(50))
        })
        .await
    };
    let outcome = run_with(config, sink, recording, generator, script);
    let status = outcome.result.expect("run");
    let recording = outcome.recording.lock().expect("recording");
    assert_eq!(status.refreshes_per_frame, Some(2), "100 Hz at 50 fps");
    let shown = recording.frames.len() as u64;
    assert!(shown >= 5, "frames shown: {shown}");
    // The last frame's flip may still have been on its way when the pacer stopped.
    let taken = recording.flips_taken.len() as u64;
    assert!(
        taken + 1 >= shown && taken <= shown,
        "{taken} flips for {shown} frames"
    );
    // The status is the one from when shutdown was asked for; the pacer ran a moment longer.
    assert!(
        status.flips > 0 && status.flips <= taken,
        "{} of {taken}",
        status.flips
    );
    assert!(status.flips_missed <= status.flips);
    for (expected, flip) in recording.flips_taken.iter().enumerate() {
        assert_eq!(flip.number, expected as u64, "flips in order, each once");
        assert!(
            flip.at >= recording.frames[expected].at,
            "a flip goes up after its present"
        );
    }
}

/// A stall longer than adaptation can absorb: the art slows as the buffer drains, then the
/// ping-pong policy keeps the picture moving until the generator is back, then the art moves on.
#[test]
fn with_adaptation_a_stalled_generator_slows_the_art_then_ping_pong_takes_over() {
    let (status, recording, stall, _) =
        run_with_stall(UnderrunPolicy::PingPong, Duration::from_secs(4), true);
    assert_ping_pong_carried_the_stall(&status, &recording, stall);
    assert!(status.animation_speed > 0.0, "{status:?}");
}

/// The textured fake decoding at a fifth of the display rate: motion from the second decoded
/// frame, and every picture after the first differs from the one before it (display-time
/// blending), with the screen fed a new picture in most periods.
#[test]
fn with_adaptation_every_picture_differs_from_the_last_at_a_fifth_of_the_display_rate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let generator = FakeGenerator::new(16, 9).textured();
    let controls = Arc::clone(&generator.controls);
    // 10 frames a second decoded for a 50 fps display.
    controls.decode_delay_us.store(100_000, Ordering::Relaxed);
    let (sink, recording) = memory_sink();
    let mut config = config(UnderrunPolicy::PingPong, dir.path());
    config.output.status_interval = STATUS_INTERVAL;
    let status_path = dir.path().join("status.json");
    let watched = Arc::clone(&recording);
    // Until 150 pictures (3 s of 50 fps) are up, the art has moved and is half a keyframe
    // interval on.
    let script = async move {
        poll_until_async("150 pictures and half a keyframe interval", LONG, || {
            shown_after(&watched, None) >= 150
                && status_holds(&status_path, |s| {
                    s["first_motion_s"].is_number() && s["walk_position"].as_f64() > Some(0.5)
                })
        })
        .await
    };
    let outcome = run_with(config, sink, recording, generator, script);
    let status = outcome.result.expect("run succeeds");
    let recording = outcome.recording.lock().expect("recording");
    assert_eq!(status.underruns, 0, "{status:?}");
    let frames = &recording.frames;
    assert!(frames.len() >= 10, "{} pictures", frames.len());
    for (index, pair) in frames.windows(2).enumerate() {
        assert_ne!(
            pair[0].pixels,
            pair[1].pixels,
            "pictures {index} and {} are the same",
            index + 1
        );
    }
    // A new picture in most display periods from the first motion on, whatever this machine's
    // speed (a playback that idled for want of motion would show far fewer).
    let moving = frames.last().expect("frames").at - frames[1].at;
    let periods = moving.as_secs_f64() * FPS;
    assert!(
        (frames.len() - 1) as f64 >= 0.5 * periods,
        "{} pictures in {periods:.0} periods",
        frames.len() - 1
    );
    let first_motion = status.first_motion_s.expect("moved");
    let first_picture = status.first_picture_s.expect("shown");
    assert!(first_motion >= first_picture, "{status:?}");
    assert!(status.walk_position > 0.5, "{status:?}");
}
