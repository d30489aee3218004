//! `dreamframe bench-display`: on the machine's own screen, what the drm sink costs and how its
//! flips keep time. Two measurements, side by side in one process:
//! - per frame, the sink's share of putting a frame up (the renderer's upscale + convert is the
//!   same for every sink and measured by `bench`): drm = copy into a free dumb buffer + page-flip
//!   request; fbdev = copy into the framebuffer (+ msync on a DRM shadow). The wait for the
//!   flip's vertical blank is outside the timed part (the pacer never spends it either);
//! - for each `--fps`, the whole pipeline on the drm sink for `--seconds`: flip-to-deadline
//!   lateness p50/p99/max, flips, flips missed, frames shown, refreshes per frame.
//!
//! Runs on the main thread, with the pipeline's own threads for the paced runs. Needs the screen
//! to itself: a failure to open either sink is an error naming it.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::commands::cli::BenchDisplayArgs;
use crate::config::{Config, SinkKind};
use crate::sink::drm::DrmSink;
use crate::sink::fbdev::FbdevSink;
use crate::sink::Sink;

/// Two frames that differ everywhere, so every present really changes the screen.
fn frames(bytes: usize) -> [Vec<u8>; 2] {
    [
        (0..bytes).map(|i| (i % 251) as u8).collect(),
        (0..bytes).map(|i| (i % 241) as u8 ^ 0x5a).collect(),
    ]
}

/// Median and p90 of `present` over `count` frames, in ms. Between presents, a flip still
/// queued is waited for (untimed), as the pacer's deadlines would.
fn present_cost(sink: &mut dyn Sink, count: usize) -> anyhow::Result<(f64, f64)> {
    let pictures = frames(sink.geometry().frame_bytes());
    let mut times = Vec::with_capacity(count);
    for i in 0..count + 1 {
        let started = Instant::now();
        sink.present(&pictures[i % 2])?;
        let took = started.elapsed();
        if i > 0 {
            times.push(took.as_secs_f64() * 1e3); // the first warms the mappings
        }
        if sink.refresh().is_some() {
            let until = Instant::now() + Duration::from_millis(200);
            while sink.take_flip().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((
        times[times.len() / 2],
        times[(times.len() * 9 / 10).min(times.len() - 1)],
    ))
}

pub(crate) fn run(args: &BenchDisplayArgs, base: &Config) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut display = base.display.clone();
    display.sink = SinkKind::Drm;
    display.console = None;
    if let Some(card) = &args.card {
        display.card = Some(card.clone());
    }
    let (drm_line, screen) = {
        let mut sink = DrmSink::open(&display).context("bench-display: the drm sink")?;
        let (median, p90) = present_cost(&mut sink, args.frames as usize)?;
        let report = sink.report().clone();
        let geometry = sink.geometry();
        (
            format!(
                "  drm   {} {} {} {}x{} {}: copy + flip request median {median:.3} ms  p90 {p90:.3} ms ({} frames)",
                report.card, report.driver, report.connector, geometry.width, geometry.height,
                report.format, args.frames
            ),
            (report.mode, report.refresh_hz),
        )
    };
    writeln!(
        out,
        "dreamframe bench-display: screen {} ({:.3} Hz)",
        screen.0, screen.1
    )?;
    writeln!(out, "per frame, the sink's part (render = upscale + convert is the same for both; see `bench`):")?;
    writeln!(out, "{drm_line}")?;
    let framebuffer = args
        .framebuffer
        .clone()
        .unwrap_or(display.framebuffer.clone());
    match FbdevSink::open(&framebuffer, None) {
        Ok(mut sink) => {
            let (median, p90) = present_cost(&mut sink, args.frames as usize)?;
            let report = sink.report();
            writeln!(
                out,
                "  fbdev {} {} {}x{} {} bpp, flush {}: copy median {median:.3} ms  p90 {p90:.3} ms ({} frames)",
                report.path, report.driver, report.width, report.height, report.bits_per_pixel,
                report.flush, args.frames
            )?;
        }
        Err(error) => writeln!(
            out,
            "  fbdev {}: not measured ({error:#})",
            framebuffer.display()
        )?,
    }
    writeln!(
        out,
        "paced runs on the drm sink, {} s each (lateness: flip completion - deadline):",
        args.seconds
    )?;
    for &fps in &args.fps {
        let mut config = base.clone();
        config.display = display.clone();
        config.display.fps = fps;
        let dir =
            std::env::temp_dir().join(format!("dreamframe-bench-display-{}", std::process::id()));
        config.output.dir = Some(dir.clone());
        config.output.snapshot_interval = None;
        config.output.resume = false;
        let sink = crate::sink::open(&config.display, (16, 16))?;
        let generator = crate::generator::build(&config, 1)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let seconds = Duration::from_secs_f64(args.seconds);
        let s = runtime.block_on(crate::run(config, sink, generator, 1, async move {
            tokio::time::sleep(seconds).await
        }))?;
        let _ = std::fs::remove_dir_all(dir);
        writeln!(
            out,
            "  fps {fps:>5.1}: refreshes/frame {} | frames shown {} flips {} missed {} | lateness p50 {:.3} ms p99 {:.3} ms max {:.3} ms | held {} skipped {}",
            s.refreshes_per_frame.map_or("-".into(), |n| n.to_string()),
            s.frames_shown, s.flips, s.flips_missed, s.presented_p50_ms, s.presented_p99_ms,
            s.presented_max_ms, s.held_deadlines, s.skipped_deadlines
        )?;
    }
    Ok(out)
}
