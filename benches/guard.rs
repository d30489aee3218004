//! `cargo bench --bench guard`: the walk's guard (`pipeline::guard`) on the built-in generator
//! (the shipped defaults, 1,000 keyframes per seed) and on the fakes that decay. Prints, per
//! walk: re-anchors and why, every figure's p1/p50/p99, and the check's time per keyframe.

#![deny(unsafe_code)]

use dreamframe::config::Config;
use dreamframe::testing::{walk, WalkReport};
use dreamframe::testing::{Decay, WalkingFake};

const KEYFRAMES: u64 = 1000;
const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

fn quantile(values: &mut [f32], q: f64) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    values.sort_by(f32::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn spread(name: &str, mut values: Vec<f32>) -> String {
    let p1 = quantile(&mut values, 0.01);
    let p50 = quantile(&mut values, 0.5);
    let p99 = quantile(&mut values, 0.99);
    format!("{name} p1 {p1:.4} p50 {p50:.4} p99 {p99:.4}")
}

fn describe(name: &str, report: &WalkReport) {
    let mut reasons = std::collections::BTreeMap::<&str, usize>::new();
    for reanchor in &report.reanchors {
        *reasons.entry(reanchor.reason).or_default() += 1;
    }
    let first = report.reanchors.first().map(|r| r.index);
    let mut ns: Vec<f32> = report.check_ns.iter().map(|&n| n as f32).collect();
    let figures = &report.figures;
    println!(
        "{name}: {} keyframes, {} re-anchors ({:.2}%) {reasons:?}, first at keyframe {first:?}; check p50 {:.1} us p99 {:.1} us",
        report.keyframes,
        report.reanchors.len(),
        100.0 * report.reanchors.len() as f64 / report.keyframes as f64,
        quantile(&mut ns, 0.5) / 1e3,
        quantile(&mut ns, 0.99) / 1e3,
    );
    println!(
        "    {} | {} | {} | {} | {}",
        spread("novelty", figures.iter().filter_map(|f| f.0).collect()),
        spread("contrast", figures.iter().map(|f| f.1.contrast).collect()),
        spread(
            "colourfulness",
            figures.iter().map(|f| f.1.colourfulness).collect()
        ),
        spread("detail", figures.iter().map(|f| f.1.detail).collect()),
        spread("clipped", figures.iter().map(|f| f.1.clipped).collect()),
    );
}

fn main() -> anyhow::Result<()> {
    let config = Config::default();
    let settings = &config.reanchor;
    let mut total = (0, 0);
    for seed in SEEDS {
        let mut generator = dreamframe::testing::build_generator(&config, seed)?;
        let (width, height) = generator.resolution();
        let report = walk(generator.as_mut(), KEYFRAMES, seed, settings)?;
        total.0 += report.reanchors.len();
        total.1 += report.keyframes;
        describe(&format!("cppn {width}x{height} seed {seed}"), &report);
    }
    println!(
        "cppn, all seeds: {} re-anchors in {} keyframes ({:.2}%)",
        total.0,
        total.1,
        100.0 * total.0 as f64 / total.1 as f64
    );
    for decay in [
        Decay::Healthy,
        Decay::Converge,
        Decay::Saturate,
        Decay::Fade,
    ] {
        let mut generator = WalkingFake::new(256, 144, decay);
        let report = walk(&mut generator, 100, 7, settings)?;
        describe(&format!("fake {decay:?} 256x144"), &report);
    }
    Ok(())
}
