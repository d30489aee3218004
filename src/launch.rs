//! Launching the display from the command line: signals first, then the config, the output
//! folder's lock, the seed (a saved walk keeps its own), logging, the sink and the generator,
//! then the service on a single-threaded tokio runtime, with SIGHUP re-reading the config.
//! Also `probe`: what the DRM cards (connectors, modes, planes, formats), the framebuffer and
//! the console support. Runs on the main thread; every
//! failure is returned with its context (a `ConfigError` among the causes means exit 78).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::commands::cli::{Cli, ProbeArgs, SinkArg};
use crate::config::{Config, ConfigError};
use crate::signals::Signals;
use crate::{console, events, generator, logging, sink};

/// How long the blocking pool (status and snapshot writes, a reload's read) gets to finish
/// after the display stopped; a stuck disk must not keep the process alive.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);
/// A reload's read of the config file that takes longer than this is given up.
const RELOAD_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the config comes from: the file named on the command line (else the built-in
/// defaults), with the command line's overrides applied, at start and at every reload alike.
#[derive(Debug, Clone)]
pub(crate) struct ConfigSource {
    path: Option<PathBuf>,
    sink: Option<SinkArg>,
    output_dir: Option<PathBuf>,
}

impl ConfigSource {
    pub(crate) fn of(cli: &Cli) -> Self {
        Self {
            path: cli.config.clone(),
            sink: cli.sink,
            output_dir: cli.output_dir.clone(),
        }
    }

    pub(crate) fn load(&self) -> Result<Config, ConfigError> {
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

/// `dreamframe probe`: the framebuffer's report line and the console's mode, each on its own
/// (a box without a framebuffer still has a console).
pub(crate) fn probe(cli: &Cli, args: &ProbeArgs) -> anyhow::Result<()> {
    let config = ConfigSource::of(cli).load()?;
    let framebuffer = args
        .framebuffer
        .clone()
        .unwrap_or(config.display.framebuffer);
    let console_path = args.console.clone().or(config.display.console);
    // Each part is reported on its own: a box without a framebuffer still has a console.
    let cards = match args.card.clone().or(config.display.card) {
        Some(card) => vec![card],
        None => sink::drm::card::card_paths(std::path::Path::new(sink::drm::card::CARDS_DIR)),
    };
    if cards.is_empty() {
        crate::stdout::line(events::DrmCard {
            path: sink::drm::card::CARDS_DIR.into(),
            error: Some("no DRM cards (no KMS driver loaded)".into()),
            ..Default::default()
        })?;
    }
    for card in cards {
        for line in sink::drm::card::probe_lines(&card) {
            crate::stdout::line(line)?;
        }
    }
    match sink::fbdev::FbdevSink::open_device(&framebuffer) {
        Ok(device) => crate::stdout::line(device.report().event())?,
        Err(error) => crate::stdout::line(events::FramebufferUnavailable {
            path: framebuffer.display().to_string(),
            error: format!("{error:#}"),
        })?,
    }
    if let Some(path) = console_path {
        let mode = console::mode(&path);
        crate::stdout::line(events::Console {
            path: path.display().to_string(),
            mode: match mode {
                Ok(console::KD_GRAPHICS) => "graphics".into(),
                Ok(_) => "text".into(),
                Err(_) => "unknown".into(),
            },
            previous_mode: None,
            error: mode.err().map(|error| format!("{error:#}")),
        })?;
    }
    Ok(())
}

/// The display itself, until a stop signal, `--duration` or a failure.
pub(crate) fn display(cli: Cli, logging_started: &mut bool) -> anyhow::Result<()> {
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
    let output = crate::service::OutputPaths::for_config(&config);
    // One display per output folder: a second one would overwrite status.json and resume.json.
    let _output_lock = match crate::checked_fs::create_folder(&output.dir) {
        Ok(()) => match crate::output_lock::OutputLock::acquire(&output.dir) {
            Ok(lock) => {
                if let Some(error) = &lock.pid_error {
                    eprintln!(
                        "dreamframe: warning: cannot write the PID into {} ({error}); the lock holds all the same",
                        lock.path.display()
                    );
                }
                Some(lock)
            }
            Err(
                error @ (crate::output_lock::LockError::Held { .. }
                | crate::output_lock::LockError::NotAFile { .. }),
            ) => return Err(error.into()),
            Err(error) => {
                eprintln!("dreamframe: warning: {:#}", anyhow::Error::from(error));
                None
            }
        },
        // Logged once the log is up (`service::run_with_reloads` tries the folder again); the
        // display runs without its files.
        Err(_) => None,
    };
    // A saved walk keeps its seed across restarts, unless one is asked for.
    let saved_seed = output
        .resume
        .as_deref()
        .and_then(crate::resume::ResumeState::saved_seed);
    let seed = cli
        .seed
        .or(config.seed)
        .or(saved_seed)
        .unwrap_or_else(crate::fresh_seed);

    let log_warning = logging::init(
        config.log.level,
        output.log.as_deref(),
        config.log.max_bytes,
        config.log.files,
    )?;
    *logging_started = true;
    // On stderr as well as in the file: where to look, for whoever started it by hand.
    log::info!(
        "{}",
        events::Output {
            dir: output.dir.display().to_string(),
            log_file: output
                .log
                .as_ref()
                .map_or("off".to_string(), |log| log.display().to_string()),
        }
    );
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
            log::info!(
                "{}",
                events::Shutdown {
                    reason: reason.into()
                }
            );
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
        crate::service::run_with_reloads(config, sink, generator, seed, shutdown, reloads).await
    });
    // Writes still under way on the blocking pool get a moment, then are left behind.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    result.map(|_| ())
}

/// The config re-read for SIGHUP, or `None` (logged) when it can't be used.
async fn reload(source: &ConfigSource) -> Option<Config> {
    let rejected = |error: String| {
        log::error!("{}", events::ReloadRejected { error });
        None
    };
    if source.path.is_none() {
        return rejected("no --config file: the built-in defaults have nothing to re-read".into());
    }
    // Read on the blocking pool: a slow disk must not hold up the orchestrator.
    let reader = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || source.load())
    };
    match tokio::time::timeout(RELOAD_READ_TIMEOUT, reader).await {
        Ok(Ok(Ok(config))) => Some(config),
        // The same all-problems message as at start, on one line; the running config stays.
        Ok(Ok(Err(error))) => rejected(
            format!("{:#}", anyhow::Error::from(error))
                .replace("\n  ", " | ")
                .replace('\n', " "),
        ),
        Ok(Err(error)) => rejected(error.to_string()),
        Err(_) => rejected(format!(
            "reading the config took over {} s",
            RELOAD_READ_TIMEOUT.as_secs()
        )),
    }
}
