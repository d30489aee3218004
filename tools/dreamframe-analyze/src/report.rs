//! The bottleneck report, in the manner of the earlier system's: per-stage timing
//! distributions, model lock contention, display rate, late frames, jitter, buffer health with
//! its depletion events, underruns and errors, the quality ladder's moves and the art's speed,
//! then concrete recommendations, generation judged in each period against its own target.
//!
//! Pure text from an `Analysis`, on the caller's thread; never fails.

use std::fmt::Write as _;

use crate::analysis::{capacity, distribution, Analysis, Distribution, Period};

fn row(out: &mut String, name: &str, unit: &str, values: &[f64]) {
    match distribution(values) {
        Some(d) => {
            let _ = writeln!(
                out,
                "  {name:<34} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>10.2}  {unit}",
                d.count, d.p50, d.p90, d.p99, d.max
            );
        }
        None => {
            let _ = writeln!(out, "  {name:<34} {:>7}  (no data)", 0);
        }
    }
}

fn values(series: &[(f64, f64)]) -> Vec<f64> {
    series.iter().map(|(_, v)| *v).collect()
}

/// The report: figures, then what to change.
pub fn report(analysis: &Analysis, sources: &[String]) -> String {
    let mut out = String::new();
    let a = analysis;
    let _ = writeln!(
        out,
        "dreamframe-analyze: {} file(s), {} lines ({} unreadable), {} run(s), {:.0} s of log, generator {}",
        sources.len(),
        a.lines,
        a.unreadable,
        a.runs,
        a.span_s,
        if a.generators.is_empty() { "?".to_string() } else { a.generators.join(", ") }
    );
    report_stages(&mut out, a);
    let target = a.target_fps.unwrap_or(0.0);
    report_display(&mut out, a, target);
    report_buffer(&mut out, a);
    report_adapt(&mut out, a);
    let _ = writeln!(
        out,
        "\nEvents: generator errors {}, out-of-memory retries {}, vsync disabled {}, watchdog withheld {}, reloads {}, warnings {}, errors {}",
        a.generator_errors, a.out_of_memory, a.vsync_disabled, a.watchdog_withheld, a.reloads, a.warnings, a.errors
    );

    let _ = writeln!(out, "\nRecommendations");
    let fps = distribution(&values(&a.fps));
    let decode_fps = distribution(&a.decode_fps);
    let buffer = distribution(&values(&a.buffer_percentage));
    let recommendations = recommend(a, target, fps, decode_fps, buffer);
    for (i, text) in recommendations.iter().enumerate() {
        let _ = writeln!(out, "  {}. {text}", i + 1);
    }
    out
}

/// Per-stage timings and the model lock's waits.
fn report_stages(out: &mut String, a: &Analysis) {
    let _ = writeln!(out, "\nStage timing                               count        p50        p90        p99        max");
    row(out, "keyframe", "ms per keyframe", &a.keyframe_ms);
    row(out, "slerp", "ms per transition", &a.slerp_ms);
    row(out, "decode", "ms per frame", &a.decode_ms_per_frame);
    row(
        out,
        "upscale + convert",
        "ms per frame",
        &a.upscale_ms_per_frame,
    );

    let _ = writeln!(out, "\nModel lock");
    row(
        out,
        "wait before a keyframe",
        "ms",
        &a.keyframe_lock_wait_ms,
    );
    row(
        out,
        "wait before a transition's decode",
        "ms",
        &a.transition_lock_wait_ms,
    );
    let avg = distribution(&a.lock_avg_wait_ms).map_or(0.0, |d| d.max);
    let _ = writeln!(
        out,
        "  average wait (worst stats line) {avg:.2} ms, max wait {:.2} ms, contended acquisitions {}",
        a.lock_max_wait_ms, a.lock_contended
    );
}

/// What the display achieved against its target.
fn report_display(out: &mut String, a: &Analysis, target: f64) {
    let _ = writeln!(out, "\nDisplay (target {target:.2} fps)");
    row(out, "achieved fps (per stats line)", "fps", &values(&a.fps));
    row(out, "generated frames per second", "fps", &a.decode_fps);
    if let Some(capacity) = generation_capacity(a) {
        let _ = writeln!(
            out,
            "  generator capacity {capacity:.1} frames/s (decoding without waiting, one keyframe per transition) for {target:.1} fps shown"
        );
    }
    if a.periods.len() > 1 {
        for p in &a.periods {
            let _ = writeln!(
                out,
                "  {:>7.0}s to {:>7.0}s at {:>5.1} fps: generator capacity {}",
                p.start_s,
                p.end_s,
                p.target_fps,
                p.capacity()
                    .map_or("not measured (no transition)".to_string(), |c| format!(
                        "{c:.1} frames/s"
                    ))
            );
        }
    }
    row(out, "jitter p99 (per stats line)", "ms", &a.jitter_p99_ms);
    row(
        out,
        "presented p99 (per stats line)",
        "ms",
        &a.presented_p99_ms,
    );
    let _ = writeln!(out, "  late frames {}", a.late_frames);
}

/// How full the buffer was and when it ran dry.
fn report_buffer(out: &mut String, a: &Analysis) {
    let _ = writeln!(out, "\nBuffer");
    let low = a
        .buffer_percentage
        .iter()
        .filter(|(_, p)| *p < 10.0)
        .count();
    row(
        out,
        "fill (per stats line)",
        "%",
        &values(&a.buffer_percentage),
    );
    row(
        out,
        "seconds buffered (per stats line)",
        "s",
        &values(&a.buffer_seconds),
    );
    let _ = writeln!(
        out,
        "  stats lines below 10% full: {low} of {}; underruns (buffer ran dry): {}{}",
        a.buffer_percentage.len(),
        a.underruns,
        if a.underrun_times.is_empty() {
            String::new()
        } else {
            let times: Vec<String> = a
                .underrun_times
                .iter()
                .take(10)
                .map(|t| format!("{t:.0}s"))
                .collect();
            format!(
                " at {}{}",
                times.join(", "),
                if a.underrun_times.len() > 10 {
                    ", ..."
                } else {
                    ""
                }
            )
        }
    );
}

/// The quality ladder's moves and the art's speed.
fn report_adapt(out: &mut String, a: &Analysis) {
    let _ = writeln!(out, "\nAdaptation");
    if a.adapt_moves.is_empty() && a.animation_speed.is_empty() {
        let _ = writeln!(
            out,
            "  no adapt or art-speed figures (adapt.enabled = false, or a log from before adaptation)"
        );
        return;
    }
    row(
        out,
        "art speed, % of its pace (per stats line)",
        "%",
        &values(&a.animation_speed)
            .iter()
            .map(|s| s * 100.0)
            .collect::<Vec<_>>(),
    );
    let minutes = (a.span_s / 60.0).max(1.0 / 60.0);
    let _ = writeln!(
        out,
        "  ladder moves: {} ({:.2} a minute){}",
        a.adapt_moves.len(),
        a.adapt_moves.len() as f64 / minutes,
        a.adapt_moves.last().map_or(String::new(), |(_, m)| format!(
            "; last at rung {} of {}: {}",
            m.rung + 1,
            m.rungs,
            m.to
        ))
    );
    for (t, m) in a.adapt_moves.iter().take(12) {
        let _ = writeln!(
            out,
            "  {t:>7.0}s  {} -> {} ({}: {:.1} decoded frames/s for {:.1} needed, {:.1} s ahead)",
            m.from, m.to, m.reason, m.capacity_fps, m.need_fps, m.buffer_s
        );
    }
    if a.adapt_moves.len() > 12 {
        let _ = writeln!(out, "  ... {} more", a.adapt_moves.len() - 12);
    }
}

/// Frames per second the generator can make when it never waits, over the whole log
/// (`Period::capacity`).
pub fn generation_capacity(a: &Analysis) -> Option<f64> {
    capacity(
        &a.frames_per_transition,
        &a.decode_ms_per_frame,
        &a.keyframe_ms,
    )
}

/// The period whose generation falls furthest short of its own target: (its capacity, its
/// target, the period). `None` where no period has both.
fn tightest_period(a: &Analysis) -> Option<(f64, f64, &Period)> {
    a.periods
        .iter()
        .filter_map(|p| Some((p.capacity()?, p.target_fps, p)))
        .filter(|(_, target, _)| *target > 0.0)
        .min_by(|x, y| (x.0 / x.1).total_cmp(&(y.0 / y.1)))
}

fn recommend(
    a: &Analysis,
    target: f64,
    fps: Option<Distribution>,
    decode_fps: Option<Distribution>,
    buffer: Option<Distribution>,
) -> Vec<String> {
    let mut out = Vec::new();
    let upscale = distribution(&a.upscale_ms_per_frame);
    let keyframe = distribution(&a.keyframe_ms);
    let _ = decode_fps;
    // Each stretch is judged against the target it had; the one furthest short speaks.
    let tightest = tightest_period(a);
    let (generated, needed) = tightest.map_or((0.0, 0.0), |(c, t, _)| (c, t));
    let judged = a.periods.iter().filter(|p| p.capacity().is_some()).count();
    let when = match tightest {
        Some((_, _, p)) if judged > 1 => format!(
            " (from {:.0} s to {:.0} s of the log, at {:.1} fps)",
            p.start_s, p.end_s, p.target_fps
        ),
        _ => String::new(),
    };
    let decode = tightest.and_then(|(_, _, p)| distribution(&p.decode_ms_per_frame));
    let keyframe_of_period = tightest.and_then(|(_, _, p)| distribution(&p.keyframe_ms));
    let sd = a.generators.iter().any(|g| g.contains("stable"));
    let art_speed = distribution(&values(&a.animation_speed));
    let ladder = a.adapt_moves.last().map(|(_, m)| m);
    if let (Some(m), Some(speed), true) = (ladder, art_speed, generated < needed * 0.98) {
        // With adaptation the shortfall is absorbed: say what it costs, not that it stalls.
        if speed.p50 >= 0.95 {
            out.push(format!(
                "Generation makes {generated:.1} frames/s against {needed:.1} fps shown{when}; the quality ladder keeps the art at its full pace at rung {} of {} ({}). For the configured richness, lower model.width/height or display.fps, or run it on a faster machine.",
                m.rung + 1,
                m.rungs,
                m.to
            ));
        }
    } else if needed > 0.0 && generated > 0.0 && generated < needed * 0.98 {
        let mut text = format!(
            "Generation is the bottleneck{when}: the generator can make {generated:.1} frames/s (decode p50 {:.1} ms/frame, keyframe p50 {:.0} ms) against {needed:.1} fps shown. ",
            decode.map_or(0.0, |d| d.p50),
            keyframe_of_period.map_or(0.0, |k| k.p50)
        );
        if sd {
            text.push_str("Enable decode.tiny-decoder (TAESD), raise interpolation.resolution-divisor to 2, raise decode.batch-size, ");
        } else {
            text.push_str(
                "Lower model.width/height (the built-in generator's cost grows with its pixels), ",
            );
        }
        text.push_str("or lower display.fps to what is generated.");
        out.push(text);
    }
    if a.underruns > 0.0 {
        out.push(format!(
            "The buffer ran dry {} time(s): raise buffer.seconds and buffer.start-seconds so a slow stretch is covered, and look at the generation rate above.",
            a.underruns
        ));
    } else if buffer.is_some_and(|b| b.p50 < 20.0) {
        out.push("The buffer runs low most of the time (median below 20% full): raise buffer.seconds or lower the generation cost.".into());
    }
    let lock_wait = distribution(&a.keyframe_lock_wait_ms)
        .into_iter()
        .chain(distribution(&a.transition_lock_wait_ms))
        .map(|d| d.p90)
        .fold(0.0, f64::max);
    if let Some(k) = keyframe.filter(|k| k.p50 > 200.0) {
        if lock_wait > 100.0 {
            out.push(format!(
                "Keyframes (p50 {:.0} ms) hold the model lock while the decoder waits (p90 wait {lock_wait:.0} ms): raise interpolation.frames-per-transition so keyframes are rarer, or lower model.steps.",
                k.p50
            ));
        }
    }
    if let (Some(u), true) = (upscale, target > 0.0) {
        let budget = 1000.0 / target;
        if u.p90 > budget * 0.5 {
            out.push(format!(
                "Upscale + convert takes {:.1} ms/frame (p90), over half the {budget:.1} ms frame period: use display.upscale-filter = \"bilinear\", or a lower screen mode.",
                u.p90
            ));
        }
    }
    if let Some(j) = distribution(&a.jitter_p99_ms).filter(|j| j.p90 > 1.0) {
        out.push(format!(
            "Pacing jitter p99 reaches {:.1} ms: keep display.realtime = true and grant the pacer real-time priority (LimitRTPRIO in the unit, or CAP_SYS_NICE).",
            j.p90
        ));
    }
    if fps.is_some_and(|f| target > 0.0 && f.p50 < target * 0.95) && a.underruns == 0.0 {
        out.push("Achieved fps is below target without underruns: the pacer is being delayed; check CPU load and display.realtime.".into());
    }
    let last_move = a.adapt_moves.last().map(|(_, m)| m);
    let slow_art = distribution(&values(&a.animation_speed)).filter(|s| s.p50 < 0.9);
    if let (Some(m), Some(speed)) = (last_move, slow_art) {
        if m.rung + 1 == m.rungs {
            out.push(format!(
                "The ladder reached its lowest rung ({}) and the art still moves at {:.0}% of its pace (median): lower the bounds in [adapt] (min-frames-per-transition, min-resolution-scale, min-steps), enable adapt.tiny-decoder, or lower display.fps.",
                m.to,
                speed.p50 * 100.0
            ));
        }
    }
    let minutes = a.span_s / 60.0;
    if minutes >= 5.0 && a.adapt_moves.len() as f64 / minutes > 1.0 {
        out.push(format!(
            "The quality ladder moved {:.1} times a minute: the machine's speed varies (other work?); raise adapt.settle-seconds to settle it.",
            a.adapt_moves.len() as f64 / minutes
        ));
    }
    if a.out_of_memory > 0 {
        out.push(format!(
            "{} out-of-memory retries: lower decode.batch-size.",
            a.out_of_memory
        ));
    }
    if a.generator_errors > 0.0 {
        out.push(format!(
            "{} generator errors: see the generator_error lines for the cause.",
            a.generator_errors
        ));
    }
    if out.is_empty() {
        out.push(match tightest {
            Some(_) => format!(
                "No bottleneck: generation keeps ahead of the display ({generated:.1} frames/s made for {needed:.1} fps{}) and the buffer never ran dry.",
                if judged > 1 { " where it was shortest" } else { "" }
            ),
            None => "Nothing to judge: the log has no transition line with a frame rate to hold it against (a run that ended before its first transition, or a log of only starts and reloads).".to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::analyze;
    use crate::chart::chart_svg;
    use dreamframe::events;

    #[test]
    fn counters_add_up_over_restarts_and_generation_below_target_is_named() {
        let at = |time: &str, event: &dyn std::fmt::Display| format!("{time} [INFO] {event}\n");
        let start = events::Start {
            generator: "cppn".into(),
            fps: 30.0,
            ..Default::default()
        };
        let stats =
            |achieved_fps, late_frames, underruns, decode_fps, buffer_percentage| events::Stats {
                achieved_fps,
                target_fps: 30.0,
                late_frames,
                underruns,
                decode_fps,
                buffer_percentage,
                buffer_seconds: buffer_percentage / 10.0,
                jitter_p99_ms: 0.1,
                ..Default::default()
            };
        let transition = events::Transition {
            frames: 30,
            decode_ms_per_frame: 80.0,
            upscale_ms_per_frame: 3.0,
            ..Default::default()
        };
        let underrun = events::Underrun {
            policy: "ping-pong".into(),
            buffer_frames: 0,
            recent_frames: 30,
        };
        let log = [
            at("2026-01-01T00:00:00Z", &start),
            at("2026-01-01T00:00:03Z", &format!("[TIMING] {transition}")),
            at("2026-01-01T00:00:10Z", &stats(20.0, 2, 1, 12.0, 5.0)),
            at("2026-01-01T00:00:11Z", &underrun),
            at("2026-01-01T00:01:00Z", &start),
            at("2026-01-01T00:01:10Z", &stats(25.0, 3, 2, 14.0, 4.0)),
        ]
        .concat();
        let analysis = analyze(&[log.to_string()]);
        assert_eq!(
            (analysis.runs, analysis.late_frames, analysis.underruns),
            (2, 5.0, 3.0)
        );
        assert_eq!(analysis.underrun_times, vec![11.0]);
        let text = report(&analysis, &["x".into()]);
        assert!(
            text.contains("Generation is the bottleneck: the generator can make 12.5 frames/s"),
            "{text}"
        );
        assert!(text.contains("model.width/height"), "{text}");
        assert!(text.contains("ran dry 3 time(s)"), "{text}");
        let svg = chart_svg(&analysis).expect("a chart");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("achieved fps") && svg.contains("underrun (1)"),
            "{svg}"
        );
    }

    #[test]
    fn each_stretch_is_judged_against_its_own_target_and_a_start_alone_is_not_judged() {
        let at = |time: &str, event: &dyn std::fmt::Display| format!("{time} [INFO] {event}\n");
        let start = events::Start {
            generator: "cppn".into(),
            fps: 30.0,
            ..Default::default()
        };
        let text = report(&analyze(&[at("2026-01-01T00:00:00Z", &start)]), &[]);
        assert!(text.contains("Nothing to judge"), "{text}");
        assert!(!text.contains("No bottleneck"), "{text}");

        // 41 ms a frame: 24.4 frames/s, short of 30 fps; then a reload to 12 fps, met.
        let transition = events::Transition {
            frames: 30,
            decode_ms_per_frame: 41.0,
            ..Default::default()
        };
        let reload = events::Reload {
            applied: true,
            fps: 12.0,
            ..Default::default()
        };
        let mut log = at("2026-01-01T00:00:00Z", &start);
        for second in (5..45).step_by(5) {
            log += &at(&format!("2026-01-01T00:00:{second:02}Z"), &transition);
        }
        log += &at("2026-01-01T00:00:45Z", &reload);
        for second in (50..60).step_by(5) {
            log += &at(&format!("2026-01-01T00:00:{second:02}Z"), &transition);
        }
        let analysis = analyze(&[log]);
        assert_eq!(analysis.periods.len(), 2);
        let text = report(&analysis, &[]);
        assert!(
            text.contains(
                "Generation is the bottleneck (from 0 s to 40 s of the log, at 30.0 fps): the generator can make 24.4 frames/s"
            ),
            "{text}"
        );
        assert!(!text.contains("No bottleneck"), "{text}");
    }
}
