//! The dreamframe binary: parse args, load config, init logging, run, map the result to an exit
//! status (2 for bad arguments, from clap; 78 for config errors; 1 for anything else).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dreamframe::cli::{Cli, Command};
use dreamframe::config::{Config, ConfigError};
use dreamframe::signals::Signals;
use dreamframe::{bench, console, generator, logging, sink, EXIT_CONFIG};

/// How long the blocking pool (status and snapshot writes, a reload's read) gets to finish
/// after the display stopped; a stuck disk must not keep the process alive.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);
/// A reload's read of the config file that takes longer than this is given up.
const RELOAD_READ_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    dreamframe::process_start();
    // Library errors (candle's) capture a backtrace under RUST_BACKTRACE=1 and print it as
    // part of their message: dozens of lines in what must be one log line, and slow to capture.
    // Panics keep theirs; an explicit RUST_LIB_BACKTRACE is respected.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = Cli::parse();
    let mut logging_started = false;
    match run(cli, &mut logging_started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if logging_started {
                log::error!("exit error=\"{error:#}\"");
            } else {
                eprintln!("dreamframe: {error:#}");
            }
            let config_error = error
                .chain()
                .any(|cause| cause.downcast_ref::<ConfigError>().is_some());
            ExitCode::from(if config_error { EXIT_CONFIG } else { 1 })
        }
    }
}

fn run(cli: Cli, logging_started: &mut bool) -> anyhow::Result<()> {
    if let Some(path) = &cli.check_config {
        Config::load(path)?;
        println!("{}: ok", path.display());
        return Ok(());
    }
    match &cli.command {
        Some(Command::Bench(args)) => {
            println!("{}", bench::run(args)?);
            Ok(())
        }
        Some(Command::BenchSd(args)) => {
            println!("{}", bench::run_sd(args)?);
            Ok(())
        }
        Some(Command::Probe(args)) => probe(&cli, args),
        None => display(cli, logging_started),
    }
}

/// Where the config comes from: the file named on the command line (else the built-in
/// defaults), with the command line's overrides applied, at start and at every reload alike.
#[derive(Debug, Clone)]
struct ConfigSource {
    path: Option<std::path::PathBuf>,
    sink: Option<dreamframe::cli::SinkArg>,
    output_dir: Option<std::path::PathBuf>,
}

impl ConfigSource {
    fn of(cli: &Cli) -> Self {
        Self {
            path: cli.config.clone(),
            sink: cli.sink,
            output_dir: cli.output_dir.clone(),
        }
    }

    fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(sink) = self.sink {
            config.display.sink = sink.into();
        }
        if let Some(dir) = &self.output_dir {
            config.output.dir = Some(dir.clone());
        }
        Ok(config)
    }
}

fn probe(cli: &Cli, args: &dreamframe::cli::ProbeArgs) -> anyhow::Result<()> {
    let config = ConfigSource::of(cli).load()?;
    let framebuffer = args
        .framebuffer
        .clone()
        .unwrap_or(config.display.framebuffer);
    let console_path = args.console.clone().or(config.display.console);
    // Each part is reported on its own: a box without a framebuffer still has a console.
    match sink::fbdev::FbdevSink::open_device(&framebuffer) {
        Ok(device) => println!("{}", device.report().log_line()),
        Err(error) => println!(
            "framebuffer path={} error=\"{error:#}\"",
            framebuffer.display()
        ),
    }
    if let Some(path) = console_path {
        match console::mode(&path) {
            Ok(mode) => println!(
                "console path={} mode={}",
                path.display(),
                if mode == console::KD_GRAPHICS {
                    "graphics"
                } else {
                    "text"
                }
            ),
            Err(error) => println!("console path={} error=\"{error:#}\"", path.display()),
        }
    }
    Ok(())
}

/// The display itself, until a stop signal, `--duration` or a failure.
fn display(cli: Cli, logging_started: &mut bool) -> anyhow::Result<()> {
    // Signals before anything else: from here a SIGTERM is a clean, logged stop.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let mut signals = {
        let _inside = runtime.enter();
        Signals::install()?
    };

    let source = ConfigSource::of(&cli);
    let config = source.load()?;
    let output = dreamframe::service::OutputPaths::for_config(&config);
    // One display per output folder: a second one would overwrite status.json and resume.json.
    let _output_lock = match std::fs::create_dir_all(&output.dir) {
        Ok(()) => match dreamframe::files::OutputLock::acquire(&output.dir) {
            Ok(lock) => Some(lock),
            Err(error @ dreamframe::files::LockError::Held { .. }) => return Err(error.into()),
            Err(error) => {
                eprintln!("dreamframe: warning: {:#}", anyhow::Error::from(error));
                None
            }
        },
        // Reported once the log is up (app::run); the display runs without its files.
        Err(_) => None,
    };
    // A saved walk keeps its seed across restarts, unless one is asked for.
    let saved_seed = output
        .resume
        .as_deref()
        .and_then(dreamframe::resume::ResumeState::saved_seed);
    let seed = cli
        .seed
        .or(config.seed)
        .or(saved_seed)
        .unwrap_or_else(dreamframe::fresh_seed);

    let log_dir = dreamframe::config::resolve_log_dir(&output.dir);
    let log_file = config.log.file.as_ref().map(|file| log_dir.join(file));
    let log_warning = logging::init(
        config.log.level,
        log_file.as_deref(),
        config.log.max_bytes,
        config.log.files,
    )?;
    *logging_started = true;
    if let Some(warning) = log_warning {
        log::warn!("{warning}");
    }
    // The console comes back however this function is left, unwinding included. Not from a
    // panic hook: a stage's panic is caught and the display may run on.
    let _console = console::RestoreAtExit;

    let sink = sink::open(&config.display, (1920, 1080))?;
    let generator = generator::build(&config, seed).context("cannot build the generator")?;
    let duration = cli.duration.map(Duration::from_secs_f64);
    let hangups = signals.take_hangup();
    let result = runtime.block_on(async move {
        let shutdown = async move {
            let reason = tokio::select! {
                reason = signals.wait() => reason,
                _ = async {
                    match duration {
                        Some(duration) => tokio::time::sleep(duration).await,
                        None => std::future::pending().await,
                    }
                } => "duration",
            };
            log::info!("shutdown reason={reason}");
        };
        let (reload_tx, reloads) = tokio::sync::mpsc::unbounded_channel();
        if let Some(mut hangups) = hangups {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    if let Some(config) = reload(&source).await {
                        let _ = reload_tx.send(config);
                    }
                }
            });
        }
        dreamframe::service::run_with_reloads(config, sink, generator, seed, shutdown, reloads)
            .await
    });
    // Writes still under way on the blocking pool get a moment, then are left behind.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    result.map(|_| ())
}

/// The config re-read for SIGHUP, or `None` (logged) when it can't be used.
async fn reload(source: &ConfigSource) -> Option<Config> {
    if source.path.is_none() {
        log::warn!("reload_rejected reason=\"no --config file: the built-in defaults have nothing to re-read\"");
        return None;
    }
    // Read on the blocking pool: a slow disk must not hold up the orchestrator.
    let reader = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || source.load())
    };
    match tokio::time::timeout(RELOAD_READ_TIMEOUT, reader).await {
        Ok(Ok(Ok(config))) => Some(config),
        // The same all-problems message as at start, on one line; the running config stays.
        Ok(Ok(Err(error))) => {
            let problems = format!("{:#}", anyhow::Error::from(error))
                .replace("\n  ", " | ")
                .replace('\n', " ");
            log::error!("reload_rejected error=\"{problems}\": the running config stays");
            None
        }
        Ok(Err(error)) => {
            log::error!("reload_rejected error=\"{error}\": the running config stays");
            None
        }
        Err(_) => {
            log::error!(
                "reload_rejected error=\"reading the config took over {} s\": the running config stays",
                RELOAD_READ_TIMEOUT.as_secs()
            );
            None
        }
    }
}
