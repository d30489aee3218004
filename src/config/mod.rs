//! Configuration: one TOML file, read into `raw::RawConfig` by serde, then checked
//! (`validate`, with `diagnostics` for positions and messages) into the typed `Config`
//! (`types`) the rest of the program uses. Imports no stage, sink or generator module.
//!
//! Inputs: the file's text and its origin (a path, or a name in tests). Output: a `Config`, or a
//! `ConfigError` that lists *every* problem of the file, each with `origin:line:column`, the key,
//! the value and what is allowed. Runs on whichever thread loads the config; it has no side
//! effects, so a failed load leaves the caller's running config untouched.

mod budget;
mod diagnostics;
mod raw;
mod types;
mod validate;

use std::path::{Path, PathBuf};

pub use budget::FrameBudget;
use diagnostics::Checker;
pub use diagnostics::{ConfigError, ConfigProblem};
use raw::RawConfig;
pub use types::*;
use validate::validate;

impl Default for Config {
    fn default() -> Self {
        Config::from_str("", "<built-in defaults>").expect("built-in defaults must be valid")
    }
}

/// The largest config file read: a real one is a few KiB; this leaves room for thousands of
/// themes while a runaway file (or /dev/zero behind a symlink) costs at most this much.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl Config {
    /// Reads and checks a config file: a regular file of at most `MAX_CONFIG_BYTES` in UTF-8.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = crate::checked_fs::read_regular(path, MAX_CONFIG_BYTES).map_err(|source| {
            ConfigError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let origin = path.display().to_string();
        match String::from_utf8(bytes) {
            Ok(text) => Config::from_str(&text, &origin),
            Err(error) => Err(diagnostics::not_utf8(
                &origin,
                error.as_bytes(),
                error.utf8_error(),
            )),
        }
    }

    /// Checks config text; `origin` names it in messages (a path, or a test's name).
    #[allow(clippy::should_implement_trait)] // needs the origin, so it can't be `FromStr`
    pub fn from_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let (raw, mut checker) = Checker::parse::<RawConfig>(text, origin)?;
        let config = validate(&raw, &mut checker);
        checker.finish()?;
        Ok(config)
    }
}

/// Warnings about a valid config's keys, each (dotted key, the value in force, what will
/// happen), placed at the key's line and column in `text` (the first line where the file leaves
/// the key to its default, whose value then reads "(default)").
pub fn place_warnings(
    text: &str,
    origin: &str,
    warnings: &[(&str, String, String)],
) -> Vec<ConfigProblem> {
    let Ok((_, mut checker)) = Checker::parse::<RawConfig>(text, origin) else {
        // Not this config's text after all (changed since it was checked): no positions.
        return warnings
            .iter()
            .map(|(key, value, message)| ConfigProblem {
                origin: origin.to_string(),
                line: 1,
                column: 1,
                key: key.to_string(),
                value: value.clone(),
                message: message.clone(),
            })
            .collect();
    };
    for (key, value, message) in warnings {
        checker.report_key(key, value, message);
    }
    checker.into_problems()
}

/// Folder for the log file: systemd's `$LOGS_DIRECTORY` when set, else the output folder.
pub fn resolve_log_dir(output_dir: &Path) -> PathBuf {
    match std::env::var_os("LOGS_DIRECTORY").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir.to_string_lossy().split(':').next().unwrap_or_default()),
        None => output_dir.to_path_buf(),
    }
}

/// Folder for status.json, the snapshot and the log: the configured one, else systemd's
/// `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/dreamframe`, else `~/.local/state/dreamframe`.
pub fn resolve_output_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_path_buf();
    }
    let env_dir = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env_dir("STATE_DIRECTORY") {
        // systemd may pass several colon-separated folders; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        return PathBuf::from(first);
    }
    if let Some(dir) = env_dir("XDG_STATE_HOME") {
        return dir.join("dreamframe");
    }
    if let Some(home) = env_dir("HOME") {
        return home.join(".local/state/dreamframe");
    }
    PathBuf::from("/tmp/dreamframe")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn problems(text: &str) -> Vec<String> {
        match Config::from_str(text, "test.toml") {
            Ok(_) => panic!("expected errors for {text:?}"),
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn empty_text_gives_the_documented_defaults() {
        let c = Config::from_str("", "empty").expect("empty config is valid");
        assert_eq!(c.display.sink, SinkKind::Auto);
        assert_eq!(c.display.fps, 30.0);
        assert_eq!(c.buffer.seconds, 30.0);
        assert_eq!(c.buffer.start_seconds, 10.0);
        assert_eq!(c.buffer.underrun, UnderrunPolicy::PingPong);
        assert_eq!(c.interpolation.frames_per_transition, 90);
        assert_eq!(c.seed, None);
        assert_eq!(c.output.snapshot_interval, Some(Duration::from_secs(60)));
    }

    #[test]
    fn shipped_config_file_is_valid_and_equals_the_defaults() {
        let text = include_str!("../../config/dreamframe.toml");
        let shipped =
            Config::from_str(text, "config/dreamframe.toml").expect("shipped config is valid");
        assert_eq!(
            shipped,
            Config::default(),
            "config/dreamframe.toml documents the defaults"
        );
    }

    #[test]
    fn every_problem_of_a_file_is_reported_with_line_and_column() {
        let text = "[display]\nfps = 0\nfsp = 3\nfit = \"zoom\"\n[buffer]\nseconds = \"long\"\n";
        let p = problems(text);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(
            p.iter()
                .any(|m| m
                    .starts_with("test.toml:2:7: display.fps = 0: out of range, allowed 1 to 240")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("test.toml:3:1: display.fsp = 3: unknown key")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m.contains(
                "display.fit = \"zoom\": allowed values are \"fit\", \"fill\", \"stretch\""
            )),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("test.toml:6:11: buffer.seconds = \"long\": wrong type")),
            "{p:#?}"
        );
    }

    #[test]
    fn cross_field_bounds_name_the_other_key() {
        let p = problems("[buffer]\nseconds = 5.0\nstart-seconds = 8.0\n");
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].contains(
                "buffer.start-seconds = 8.0: out of range, allowed 0 to 5 (buffer.seconds)"
            ),
            "{p:#?}"
        );
    }

    #[test]
    fn syntax_error_is_reported_with_position() {
        let p = problems("[display]\nfps = = 3\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("test.toml:2:"), "{p:#?}");
    }
}
