//! The command line: `main` parses the arguments (`cli`), dispatches (the display, `status`,
//! probe, check-config, `bench`, `bench-display`, `bench-sd`, `gallery`) and maps the result to an exit
//! status: 2 for bad arguments (clap), 78 for config errors, 1 for anything else (`status` has its
//! own, see `status`). The binary's main.rs only calls it, so the commands (`bench` drives the
//! renderer, the sinks and the models directly) stay inside the library and out of its API.
//!
//! Runs on the main thread; the display itself is `launch::display`. Errors are printed once,
//! whole chain, on stderr or in the log once logging has started.

pub(crate) mod bench;
pub(crate) mod cli;
pub(crate) mod gallery;
pub(crate) mod status;

use std::process::ExitCode;

use clap::Parser;

use crate::config::{Config, ConfigError};
use crate::{events, launch, stdout, EXIT_CONFIG};
use cli::{Cli, Command};

/// The arguments, or the exit status once clap's answer (help, version, a usage error) is out.
/// clap prints help and version itself and drops a failed write, so `--help > /dev/full` would
/// end in silence and status 0: off a terminal they go through `stdout`, whose errors are ours.
fn parse_arguments() -> Result<Cli, ExitCode> {
    use std::io::IsTerminal as _;
    let error = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(error) => error,
    };
    let to_stdout = matches!(
        error.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    );
    if !to_stdout || std::io::stdout().is_terminal() {
        // Usage errors go to stderr, whose failure has nowhere to be told; on a terminal clap
        // colours the help.
        let _ = error.print();
        return Err(ExitCode::from(error.exit_code() as u8));
    }
    match stdout::write(&error.render().to_string()) {
        Ok(()) => Err(ExitCode::SUCCESS),
        Err(write_error) => {
            eprintln!("dreamframe: {write_error:#}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// The binary's `main`: parses the arguments, runs the command, maps the result to an exit
/// status.
pub fn main() -> ExitCode {
    crate::process_start();
    crate::sys::tune_allocator();
    // Library errors (candle's) capture a backtrace under RUST_BACKTRACE=1 and print it as
    // part of their message: dozens of lines in what must be one log line, and slow to capture.
    // Panics keep theirs; an explicit RUST_LIB_BACKTRACE is respected.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = match parse_arguments() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Some(Command::Status(args)) = &cli.command {
        // Its own exit statuses: 0 running, 3 not running, 1 stuck, 4 unknown (see `status`);
        // 1 must never mean that the report itself failed.
        return match status::run(&cli, args) {
            Ok(code) => ExitCode::from(code),
            Err(error) => {
                eprintln!("dreamframe: {error:#}");
                ExitCode::from(if is_config_error(&error) {
                    EXIT_CONFIG
                } else {
                    status::EXIT_UNKNOWN
                })
            }
        };
    }
    let mut logging_started = false;
    match run(cli, &mut logging_started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if logging_started {
                log::error!(
                    "{}",
                    events::Exit {
                        error: format!("{error:#}")
                    }
                );
            } else {
                eprintln!("dreamframe: {error:#}");
            }
            ExitCode::from(if is_config_error(&error) {
                EXIT_CONFIG
            } else {
                1
            })
        }
    }
}

fn is_config_error(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<ConfigError>().is_some())
}

fn run(cli: Cli, logging_started: &mut bool) -> anyhow::Result<()> {
    if let Some(path) = &cli.check_config {
        let config = Config::load(path)?;
        // Valid, but what will make the display fall back on this machine is worth knowing.
        for warning in crate::preflight::warnings(&config, path) {
            stdout::line(format_args!("warning: {warning}"))?;
        }
        return stdout::line(format_args!("{}: ok", path.display()));
    }
    match &cli.command {
        Some(Command::Bench(args)) => stdout::line(bench::run(args)?),
        Some(Command::BenchDisplay(args)) => {
            stdout::line(bench::display::run(args, &given_config(&cli)?)?)
        }
        Some(Command::BenchSd(args)) => bench::sd::run(args),
        Some(Command::Gallery(args)) => stdout::line(gallery::run(args, &given_config(&cli)?)?),
        Some(Command::Probe(args)) => launch::probe(&cli, args),
        Some(Command::Status(_)) => unreachable!("handled before logging starts"),
        None => launch::display(cli, logging_started),
    }
}

/// The config `--config` names, or the defaults.
fn given_config(cli: &Cli) -> anyhow::Result<Config> {
    match &cli.config {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}
