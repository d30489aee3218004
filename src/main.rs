//! The dreamframe binary: parse args, load config, init logging, run, map the result to an exit
//! status (78 for config errors, 1 for anything else).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dreamframe::app::ShutdownSignals;
use dreamframe::cli::{Cli, Command};
use dreamframe::config::{Config, ConfigError};
use dreamframe::{bench, console, generator, logging, sink, EXIT_CONFIG};

fn main() -> ExitCode {
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
            return Ok(());
        }
        Some(Command::BenchSd(args)) => {
            println!("{}", bench::run_sd(args)?);
            return Ok(());
        }
        Some(Command::Probe(args)) => {
            let config = match &cli.config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
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
            return Ok(());
        }
        None => {}
    }

    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(sink) = cli.sink {
        config.display.sink = sink.into();
    }
    if let Some(dir) = &cli.output_dir {
        config.output.dir = Some(dir.clone());
    }
    // A saved walk keeps its seed across restarts, unless one is asked for.
    let saved_seed = dreamframe::app::OutputPaths::for_config(&config)
        .resume
        .and_then(|path| dreamframe::resume::ResumeState::saved_seed(&path));
    let seed = cli
        .seed
        .or(config.seed)
        .or(saved_seed)
        .unwrap_or_else(dreamframe::fresh_seed);

    let output_dir = dreamframe::config::resolve_output_dir(config.output.dir.as_deref());
    let log_dir = dreamframe::config::resolve_log_dir(&output_dir);
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
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        console::restore_after_panic();
        default_hook(info);
    }));

    let sink = sink::open(&config.display, (1920, 1080))?;
    let generator = generator::build(&config, seed).context("cannot build the generator")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let duration = cli.duration.map(Duration::from_secs_f64);
    runtime.block_on(async move {
        let mut signals = ShutdownSignals::install()?;
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
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install the SIGHUP handler")?;
        let config_path = cli.config.clone();
        let overrides = (cli.sink, cli.output_dir.clone());
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(path) = &config_path else {
                    log::warn!("reload_rejected reason=\"no --config file: the built-in defaults have nothing to re-read\"");
                    continue;
                };
                // Read on the blocking pool: a slow disk must not hold up the orchestrator.
                let path = path.clone();
                let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
                match loaded {
                    Ok(Ok(mut new)) => {
                        if let Some(sink) = overrides.0 {
                            new.display.sink = sink.into();
                        }
                        if let Some(dir) = &overrides.1 {
                            new.output.dir = Some(dir.clone());
                        }
                        let _ = reload_tx.send(new);
                    }
                    // The same all-problems message as at start; the running config stays.
                    Ok(Err(error)) => {
                        // One log line (tools parse lines): the problems joined by " | ".
                        let problems = format!("{error:#}").replace("\n  ", " | ").replace('\n', " ");
                        log::error!("reload_rejected error=\"{problems}\": the running config stays");
                    }
                    Err(error) => log::error!("reload_rejected error=\"{error}\""),
                }
            }
        });
        dreamframe::app::run_with_reloads(config, sink, generator, seed, shutdown, reloads).await
    })?;
    Ok(())
}
