//! `cargo bench --bench adapt`: capacity-aware playback against playback as it was before
//! (`adapt.enabled = false`), side by side in one run, with decode capacity throttled to 1/2,
//! 1/5, 1/10 and 1/20 of the display rate two ways:
//!
//! - `fake`: the fake generator (textured frames, 256x144) with a fixed decode time per frame of
//!   k / fps, so it decodes fps / k frames a second;
//! - `cppn`: the built-in generator under a CPU quota (a cgroup's cpu.cfs_quota_us on cgroup v1,
//!   cpu.max on v2; needs root), sized from its measured unthrottled speed so that it decodes
//!   about fps / k frames a second; the quota covers the whole process, the display too.
//!
//! and `shipped`: the shipped config at 1920x1080 into a counting sink, with both cores free and
//! with two `yes > /dev/null` beside it (the ladder's rung and the sustained fps).
//!
//! Each scenario runs in a child process of its own (so peak RSS is its own), 30 fps, the
//! shipped defaults otherwise, into a probe sink that notes each presented picture and whether
//! it differs from the one before (640x360, so comparing costs the pacer little). Per scenario:
//! time to first picture and to first motion (process start to the first picture that differs
//! from the one before), the share of pictures identical to the one before (after the first
//! motion), the longest still (after the first motion, in display periods: the time between two
//! pictures that differ), underruns, ladder moves a minute after the first 20 s, the art's
//! speed (walk progress a second over the configured pace, after 20 s) against capacity (decoded
//! frames a second over what the configured pace needs, from the run without adaptation), and
//! peak RSS.
//!
//! `cargo bench --bench adapt -- [--seconds 60] [--only fake|cppn|shipped] [--throttles 2,5,10,20]`

#![deny(unsafe_code)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dreamframe::config::Config;
use dreamframe::testing::FakeGenerator;
use dreamframe::Generator;
use dreamframe::Geometry;
use dreamframe::PixelFormat;
use dreamframe::Sink;

const FPS: f64 = 30.0;
/// Seconds before ladder moves and the art's speed count as steady.
const WARM_UP: f64 = 20.0;
/// The cgroup's accounting period: short, so a quota slows the process evenly rather than
/// freezing it for most of a long period.
const QUOTA_PERIOD_US: u64 = 10_000;

/// Notes each presented picture: when, and whether it differs from the one before.
struct ProbeSink {
    geometry: Geometry,
    compare: bool,
    previous: Vec<u8>,
    pictures: Arc<Mutex<Vec<(Instant, bool)>>>,
}

impl Sink for ProbeSink {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn present(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let changed = !self.compare || self.previous.as_slice() != frame;
        if self.compare && changed {
            self.previous.clear();
            self.previous.extend_from_slice(frame);
        }
        self.pictures
            .lock()
            .expect("pictures")
            .push((Instant::now(), changed));
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    source: String,
    throttle: u32,
    adapt: bool,
    /// `yes` processes beside it.
    load: u32,
    seconds: f64,
    /// CPU quota in cores (cppn).
    cores: Option<f64>,
}

impl Scenario {
    fn args(&self) -> Vec<String> {
        vec![
            "--child".into(),
            self.source.clone(),
            self.throttle.to_string(),
            self.adapt.to_string(),
            self.load.to_string(),
            self.seconds.to_string(),
            self.cores.map_or("-".into(), |c| c.to_string()),
        ]
    }

    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let [source, throttle, adapt, load, seconds, cores] = args else {
            bail!("--child takes six values, got {args:?}");
        };
        Ok(Self {
            source: source.clone(),
            throttle: throttle.parse()?,
            adapt: adapt.parse()?,
            load: load.parse()?,
            seconds: seconds.parse()?,
            cores: (cores != "-").then(|| cores.parse()).transpose()?,
        })
    }
}

/// One scenario's figures, as the child prints them (one line, space-separated key=value).
#[derive(Debug, Default, Clone)]
struct Figures {
    first_picture_s: f64,
    first_motion_s: Option<f64>,
    identical_share: f64,
    longest_still_periods: f64,
    underruns: u64,
    moves_per_minute: f64,
    art_rate: f64,
    decode_fps: f64,
    achieved_fps: f64,
    rung: String,
    peak_rss_mb: f64,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Moves this process into a new cgroup limited to `cores` CPUs; returns its folder.
fn join_quota(cores: f64) -> anyhow::Result<std::path::PathBuf> {
    let quota = (cores * QUOTA_PERIOD_US as f64).round().max(1000.0) as u64;
    let [v1_dir, v2_dir] = quota_dirs(std::process::id());
    let dir = if std::path::Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
        let dir = v1_dir;
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("cpu.cfs_period_us"), QUOTA_PERIOD_US.to_string())?;
        std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
        dir
    } else {
        let dir = v2_dir;
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("cpu.max"), format!("{quota} {QUOTA_PERIOD_US}"))?;
        dir
    };
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining {}", dir.display()))?;
    Ok(dir)
}

fn child(scenario: &Scenario) -> anyhow::Result<Figures> {
    let started = dreamframe::process_start();
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.display.realtime = false;
    config.display.fps = FPS;
    config.adapt.enabled = scenario.adapt;
    config.output.dir = Some(dir.path().to_path_buf());
    config.output.snapshot_interval = None;
    config.output.status_interval = Duration::from_millis(500);
    config.output.resume = false;
    config.log.file = None;
    let shipped = scenario.source == "shipped";
    let (size, compare) = if shipped {
        ((1920, 1080), false)
    } else {
        ((640, 360), true)
    };
    let generator: Box<dyn Generator> = match scenario.source.as_str() {
        "fake" => {
            let fake = FakeGenerator::new(256, 144).textured();
            let delay = scenario.throttle as f64 / FPS * 1e6;
            fake.controls
                .decode_delay_us
                .store(delay as u64, std::sync::atomic::Ordering::Relaxed);
            Box::new(fake)
        }
        _ => dreamframe::testing::build_generator(&config, 11)?,
    };
    let _quota = scenario.cores.map(join_quota).transpose()?;
    let loads: Vec<std::process::Child> = (0..scenario.load)
        .map(|_| {
            Command::new("yes")
                .stdout(Stdio::null())
                .spawn()
                .context("yes")
        })
        .collect::<anyhow::Result<_>>()?;
    let pictures = Arc::new(Mutex::new(Vec::new()));
    let sink = ProbeSink {
        geometry: Geometry::packed(size.0, size.1, PixelFormat::XRGB8888),
        compare,
        previous: Vec::new(),
        pictures: Arc::clone(&pictures),
    };
    // status.json twice a second: ladder moves and walk progress over time.
    let samples = Arc::new(Mutex::new(Vec::<(f64, u64, f64)>::new()));
    let script = {
        let samples = Arc::clone(&samples);
        let path = dir.path().join("status.json");
        let seconds = scenario.seconds;
        async move {
            let begun = Instant::now();
            while begun.elapsed().as_secs_f64() < seconds {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let status: Option<serde_json::Value> = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                if let Some(status) = status {
                    let changes = status
                        .pointer("/adapt/changes")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0);
                    let position = status["walk_position"].as_f64().unwrap_or(0.0);
                    samples.lock().expect("samples").push((
                        started.elapsed().as_secs_f64(),
                        changes,
                        position,
                    ));
                }
            }
        }
    };
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(dreamframe::run(
            config.clone(),
            Box::new(sink),
            generator,
            11,
            script,
        ))?;
    for mut load in loads {
        let _ = load.kill();
        let _ = load.wait();
    }
    let pictures = pictures.lock().expect("pictures").clone();
    let samples = samples.lock().expect("samples").clone();
    let since = |at: Instant| at.duration_since(started).as_secs_f64();
    let first_picture_s = pictures.first().map_or(f64::NAN, |(at, _)| since(*at));
    let motion = pictures.iter().skip(1).position(|(_, changed)| *changed);
    let first_motion_s = motion.map(|i| since(pictures[i + 1].0));
    let after: &[(Instant, bool)] = motion.map_or(&[], |i| &pictures[i + 1..]);
    let identical_share = if after.is_empty() {
        f64::NAN
    } else {
        after.iter().filter(|(_, changed)| !changed).count() as f64 / after.len() as f64
    };
    let changes: Vec<Instant> = after
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(at, _)| *at)
        .collect();
    let longest_still = changes
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        * FPS;
    let steady: Vec<&(f64, u64, f64)> = samples.iter().filter(|s| s.0 >= WARM_UP).collect();
    let (moves_per_minute, art_rate) = match (steady.first(), steady.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => {
            let minutes = (b.0 - a.0) / 60.0;
            let pace = FPS / config.interpolation.frames_per_transition as f64;
            (
                (b.1 - a.1) as f64 / minutes,
                (b.2 - a.2) / (b.0 - a.0) / pace,
            )
        }
        _ => (f64::NAN, f64::NAN),
    };
    Ok(Figures {
        first_picture_s,
        first_motion_s,
        identical_share,
        longest_still_periods: longest_still,
        underruns: status.underruns,
        moves_per_minute,
        art_rate,
        decode_fps: status.decoded_frames as f64 / status.uptime_s.max(1e-9),
        achieved_fps: status.achieved_fps,
        rung: status.adapt.as_ref().map_or("(off)".into(), |a| {
            format!("{}/{} {}", a.rung + 1, a.rungs, a.label)
        }),
        peak_rss_mb: peak_rss_mb(),
    })
}

impl Figures {
    fn line(&self) -> String {
        format!(
            "figures {} {} {} {} {} {} {} {} {} {} {}",
            self.first_picture_s,
            self.first_motion_s.unwrap_or(f64::NAN),
            self.identical_share,
            self.longest_still_periods,
            self.underruns,
            self.moves_per_minute,
            self.art_rate,
            self.decode_fps,
            self.achieved_fps,
            self.peak_rss_mb,
            self.rung.replace(' ', "_"),
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let mut parts = line.strip_prefix("figures ")?.split(' ');
        let mut next = || parts.next();
        let number = |text: Option<&str>| text.and_then(|t| t.parse::<f64>().ok());
        let first_picture_s = number(next())?;
        let motion = number(next())?;
        Some(Self {
            first_picture_s,
            first_motion_s: motion.is_finite().then_some(motion),
            identical_share: number(next())?,
            longest_still_periods: number(next())?,
            underruns: number(next())? as u64,
            moves_per_minute: number(next())?,
            art_rate: number(next())?,
            decode_fps: number(next())?,
            achieved_fps: number(next())?,
            peak_rss_mb: number(next())?,
            rung: next()?.replace('_', " "),
        })
    }
}

/// The cgroup folder a child of `pid` made for its quota (see `join_quota`).
fn quota_dirs(pid: u32) -> [std::path::PathBuf; 2] {
    let name = format!("dreamframe-bench-{pid}");
    [
        std::path::Path::new("/sys/fs/cgroup/cpu").join(&name),
        std::path::Path::new("/sys/fs/cgroup").join(&name),
    ]
}

fn run_child(scenario: &Scenario) -> anyhow::Result<Figures> {
    let child = Command::new(std::env::current_exe()?)
        .args(scenario.args())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running a scenario")?;
    let pid = child.id();
    let output = child.wait_with_output().context("running a scenario")?;
    // Its cgroup, empty now that it has ended.
    for dir in quota_dirs(pid) {
        let _ = std::fs::remove_dir(dir);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let figures = stdout.lines().find_map(Figures::parse);
    match figures {
        Some(figures) if output.status.success() => Ok(figures),
        _ => bail!("scenario {scenario:?} failed: {stdout}"),
    }
}

/// Frames a second the built-in generator decodes here with nothing else running (both cores).
fn cppn_speed() -> anyhow::Result<f64> {
    let config = Config::default();
    let mut generator = dreamframe::testing::build_generator(&config, 11)?;
    let requests: Vec<_> = (0..2)
        .map(|index| dreamframe::KeyframeRequest {
            index,
            seed: dreamframe::testing::keyframe_seed(11, index),
            previous: None,
        })
        .collect();
    let keys = generator.keyframes(&requests)?;
    let latents =
        dreamframe::testing::transition(&keys[0], &keys[1], 10, config.interpolation.easing)?;
    generator.decode(&latents)?;
    let started = Instant::now();
    let mut frames = 0;
    while started.elapsed() < Duration::from_secs(3) {
        frames += generator.decode(&latents)?.len();
    }
    Ok(frames as f64 / started.elapsed().as_secs_f64())
}

fn cell(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".into()
    }
}

fn row(
    out: &mut impl std::io::Write,
    label: &str,
    capacity: f64,
    f: &Figures,
) -> std::io::Result<()> {
    writeln!(
        out,
        "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        cell(f.first_picture_s, 2),
        f.first_motion_s.map_or("never".into(), |s| cell(s, 2)),
        cell(f.identical_share * 100.0, 1),
        cell(f.longest_still_periods, 1),
        f.underruns,
        cell(f.moves_per_minute, 2),
        cell(f.art_rate * 100.0, 0),
        cell(capacity * 100.0, 0),
        cell(f.peak_rss_mb, 0),
        f.rung,
    )
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        let scenario = Scenario::parse(&args[at + 1..])?;
        let figures = child(&scenario)?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{}", figures.line())?;
        return Ok(());
    }
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seconds: f64 = value("--seconds").map_or(Ok(60.0), |s| s.parse())?;
    let only = value("--only");
    let throttles: Vec<u32> = value("--throttles")
        .unwrap_or_else(|| "2,5,10,20".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let wanted = |source: &str| only.as_deref().is_none_or(|o| o == source);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "dreamframe adapt bench: {FPS} fps, {seconds} s a scenario, before (adapt off) and after (adapt on) side by side\n"
    )?;
    let header = "| throttle, mode | first picture s | first motion s | identical % | longest still (periods) | underruns | ladder moves/min after 20 s | art speed % of pace after 20 s | capacity % of need | peak RSS MB | rung at the end |\n|---|---|---|---|---|---|---|---|---|---|---|";
    let mut sources = Vec::new();
    if wanted("fake") {
        sources.push(("fake", None));
    }
    if wanted("cppn") {
        let speed = cppn_speed()?;
        writeln!(
            out,
            "built-in generator unthrottled: {speed:.1} frames/s (256x144, both cores)\n"
        )?;
        sources.push(("cppn", Some(speed)));
    }
    for (source, speed) in sources {
        writeln!(out, "{source}:\n{header}")?;
        for &k in &throttles {
            // A share of the CPUs that decodes fps / k frames a second, plus a little for the
            // display.
            let cores = speed.map(|speed| 2.0 * FPS / k as f64 / speed + 0.03);
            let mut capacity = f64::NAN;
            for adapt in [false, true] {
                let scenario = Scenario {
                    source: source.into(),
                    throttle: k,
                    adapt,
                    load: 0,
                    seconds,
                    cores,
                };
                let figures = run_child(&scenario)?;
                if !adapt {
                    // Without adaptation the decoder never waits at these throttles: what it
                    // decoded is what it can.
                    capacity = figures.decode_fps / FPS;
                }
                let label = format!(
                    "1/{k}{}, {}",
                    cores.map_or(String::new(), |c| format!(" ({c:.2} cores)")),
                    if adapt { "adapt" } else { "before" }
                );
                row(&mut out, &label, capacity, &figures)?;
                out.flush()?;
            }
        }
        writeln!(out)?;
    }
    if wanted("shipped") {
        writeln!(
            out,
            "shipped config, 1920x1080, counting sink:\n| load | sustained fps | art speed % of pace after 20 s | ladder moves/min after 20 s | underruns | rung at the end |\n|---|---|---|---|---|---|"
        )?;
        for load in [0, 2] {
            let figures = run_child(&Scenario {
                source: "shipped".into(),
                throttle: 1,
                adapt: true,
                load,
                seconds,
                cores: None,
            })?;
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                if load == 0 {
                    "both cores free".to_string()
                } else {
                    format!("{load} x yes > /dev/null")
                },
                cell(figures.achieved_fps, 1),
                cell(figures.art_rate * 100.0, 0),
                cell(figures.moves_per_minute, 2),
                figures.underruns,
                figures.rung,
            )?;
        }
    }
    Ok(())
}
