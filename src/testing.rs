//! What the tests and benchmarks (the integration tests, `cargo bench`, the analyzer's tests and
//! the library's own unit tests) need beyond the API, only with the `test-doubles` feature (never
//! in the shipped binary): the fakes, the parts of the display they drive or compare against
//! directly, `run_until`, and the generated documentation check. Helpers run on the caller's
//! thread and panic, as tests do.

use std::path::Path;

// The doubles.
pub use crate::generator::fake::{Decay, FakeControls, FakeGenerator, WalkingFake};
pub use crate::sink::memory::{MemorySink, Recording};

// Real parts that tests and benchmarks drive or compare against directly.
pub use crate::commands::bench::run as bench;
pub use crate::commands::cli::BenchArgs;
pub use crate::config::Style;
pub use crate::frame::pixel_format::Channel;
pub use crate::generator::builtin::cppn::CppnGenerator;
pub use crate::generator::interpolation::transition;
pub use crate::generator::test_pattern::{bars, TestPattern};
pub use crate::generator::{build as build_generator, keyframe_seed};
pub use crate::output_lock::OutputLock;
pub use crate::pipeline::guard::{walk, WalkReport};
pub use crate::render::Renderer;
pub use crate::service::run_with_reloads;
pub use crate::service::schedule::local_minute_of_day;
pub use crate::sink::terminal::{ENTER as TERMINAL_ENTER, RESTORE as TERMINAL_RESTORE};

/// The real `run` on a fresh single-threaded runtime until `script` ends (seed 9).
pub fn run_until<F: std::future::Future<Output = ()>>(
    config: crate::config::Config,
    sink: Box<dyn crate::Sink>,
    generator: Box<dyn crate::Generator>,
    script: F,
) -> anyhow::Result<crate::Status> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(crate::run(config, sink, generator, 9, script))
}

/// How often the `poll` helpers look again.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Calls `probe` every 20 ms until it gives a value, and returns that; `None` once `within` has
/// passed. Every wait on another thread or process goes through here (or the two below): a
/// condition with a generous deadline, never a fixed sleep, so a loaded machine only takes longer.
pub fn poll<T>(within: std::time::Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Waits until `done` holds; panics naming `what` if it does not within `within`.
pub fn poll_until(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    if poll(within, || done().then_some(())).is_none() {
        panic!("timed out after {within:?} waiting for {what}");
    }
}

/// Waits in a `run` script (the future whose end ends the run) until `done` holds, without
/// blocking the runtime: a condition with a generous deadline, never a fixed sleep, so a loaded
/// machine only takes longer. On timeout it says so on stderr and returns instead of panicking
/// (a panic there would leave the pipeline's threads running): the run then ends and the test's
/// assertions judge.
pub async fn poll_until_async(
    what: &str,
    within: std::time::Duration,
    mut done: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        if std::time::Instant::now() >= deadline {
            eprintln!("gave up after {within:?} waiting for {what}; ending the run");
            return;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// status.json as it is now, if it is there and whole.
pub fn status_json(path: &Path) -> Option<serde_json::Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
}

/// The man pages (one per command and subcommand) and shell completions (bash, zsh, fish) that
/// clap_mangen and clap_complete make for `command`, as (path under tools/debian, contents).
pub fn generated_docs(command: clap::Command) -> Vec<(String, Vec<u8>)> {
    let name = command.get_name().to_string();
    let mut files = vec![(format!("man/{name}.1"), man_page(command.clone()))];
    for subcommand in command.get_subcommands() {
        // clap names are &'static str (no "string" feature): a few bytes per test run.
        let page_name: &'static str =
            Box::leak(format!("{name}-{}", subcommand.get_name()).into_boxed_str());
        let page = subcommand.clone().name(page_name);
        files.push((
            format!("man/{name}-{}.1", subcommand.get_name()),
            man_page(page),
        ));
    }
    for (shell, file) in [
        (clap_complete::Shell::Bash, name.clone()),
        (clap_complete::Shell::Zsh, format!("_{name}")),
        (clap_complete::Shell::Fish, format!("{name}.fish")),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), &name, &mut script);
        files.push((format!("completions/{shell}/{file}"), script));
    }
    files
}

fn man_page(command: clap::Command) -> Vec<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .expect("render to memory");
    page
}

/// Fails unless the files under `root` (tools/debian) are what `generated_docs` makes for
/// `command` now; with DREAMFRAME_REGENERATE set, writes them instead. They are committed, so
/// `cargo deb` needs nothing but cargo.
pub fn check_generated_docs(command: clap::Command, root: &Path) {
    let regenerate = std::env::var_os("DREAMFRAME_REGENERATE").is_some();
    let mut stale = Vec::new();
    for (path, contents) in generated_docs(command) {
        let path = root.join(path);
        if regenerate {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &contents).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&contents[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date with the clap definitions (DREAMFRAME_REGENERATE=1 cargo test generated writes them): {stale:?}"
    );
}
