//! Config diagnostics: turns serde's first-error-only behaviour into "every problem of the file",
//! and gives each problem a line, column, key and value.
//!
//! How: the text is parsed once into toml's spanned document. Deserialisation is retried after
//! removing each entry that serde rejected (unknown key, wrong type), so one run reports all of
//! them; range and choice checks then look their keys up in the same document for positions.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, Deserializer};
use toml::Spanned;

/// One thing wrong in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `display.fps`; empty for syntax errors.
    pub key: String,
    /// The value as written in the file (or the default, where the key is absent).
    pub value: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.origin, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{} = {}: ", self.key, self.value)?;
        }
        write!(f, "{}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", format_problems(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<ConfigProblem>,
    },
}

fn format_problems(origin: &str, problems: &[ConfigProblem]) -> String {
    let mut text = format!(
        "{} error{} in config {}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        origin
    );
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(&problem.to_string());
    }
    text
}

/// Collects problems while a raw config is checked.
pub struct Checker<'a> {
    origin: String,
    text: &'a str,
    document: Spanned<DeTable<'a>>,
    problems: Vec<ConfigProblem>,
}

/// Enough retries for every key of a generous file; each retry removes one entry.
const MAX_RECOVERIES: usize = 256;

impl<'a> Checker<'a> {
    /// Deserialises `text`, collecting every entry serde rejects. Fails outright only when the
    /// text is not TOML at all (nothing after a syntax error can be trusted).
    pub fn parse<T: DeserializeOwned>(
        text: &'a str,
        origin: &str,
    ) -> Result<(T, Checker<'a>), ConfigError> {
        let mut checker = Checker {
            origin: origin.to_string(),
            text,
            document: Spanned::new(0..0, DeTable::new()),
            problems: Vec::new(),
        };
        let document = match DeTable::parse(text) {
            Ok(document) => document,
            Err(error) => {
                let at = error.span().map_or(0, |s| s.start);
                let message = format!(
                    "not valid TOML: {} (text values need quotes)",
                    first_line(error.message())
                );
                checker.push(at, "", String::new(), message);
                return Err(checker.into_error());
            }
        };
        let mut pruned = document.clone();
        checker.document = document;
        for _ in 0..MAX_RECOVERIES {
            match T::deserialize(Deserializer::from(pruned.clone())) {
                Ok(raw) => return Ok((raw, checker)),
                Err(error) => {
                    let span = error.span();
                    let mut path = Vec::new();
                    let removed = span
                        .as_ref()
                        .and_then(|s| remove_entry_at(pruned.get_mut(), s, &mut path));
                    let at = span.as_ref().map_or(0, |s| s.start);
                    let value = match &removed {
                        Some((_, true)) => "(a table)".to_string(),
                        Some((span, false)) => checker.source_of(span.clone()),
                        None => String::new(),
                    };
                    checker.push(at, &path.join("."), value, explain(error.message()));
                    if removed.is_none() {
                        return Err(checker.finish().expect_err("a problem was just recorded"));
                    }
                }
            }
        }
        Err(checker.finish().expect_err("problems were recorded"))
    }

    pub fn finish(mut self) -> Result<(), ConfigError> {
        // Recovery and validation find problems out of order; people read files top-down.
        self.problems.sort_by_key(|p| (p.line, p.column));
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }

    fn into_error(self) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin,
            problems: self.problems,
        }
    }

    fn push(&mut self, at: usize, key: &str, value: String, message: String) {
        let (line, column) = line_column(self.text, at);
        self.problems.push(ConfigProblem {
            origin: self.origin.clone(),
            line,
            column,
            key: key.to_string(),
            value,
            message,
        });
    }

    fn source_of(&self, span: Range<usize>) -> String {
        let text = self.text.get(span).unwrap_or_default().trim();
        if text.chars().count() > 60 {
            format!("{}...", text.chars().take(57).collect::<String>())
        } else {
            text.to_string()
        }
    }

    /// The span of a key's value in the file, if the file sets it. A part may index an array
    /// of tables: "schedule.periods[1].from".
    fn locate(&self, key: &str) -> Option<Range<usize>> {
        let mut table = self.document.get_ref();
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let (name, index) = match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
                Some((name, index)) => (name, Some(index.parse::<usize>().ok()?)),
                None => (part, None),
            };
            let mut value = table.get(name)?;
            if let Some(index) = index {
                match value.get_ref() {
                    DeValue::Array(items) => value = items.get(index)?,
                    _ => return None,
                }
            }
            if parts.peek().is_none() {
                return Some(value.span());
            }
            match value.get_ref() {
                DeValue::Table(child) => table = child,
                _ => return None,
            }
        }
        None
    }

    /// Records a problem at `key`'s value (or at `fallback_key` when the file doesn't set `key`).
    fn report(
        &mut self,
        key: &str,
        fallback_key: Option<&str>,
        default_value: String,
        message: String,
    ) {
        if let Some(span) = self.locate(key) {
            let value = self.source_of(span.clone());
            self.push(span.start, key, value, message);
            return;
        }
        // The key is not in the file: point at the key it conflicts with, else the top.
        let at = fallback_key
            .and_then(|k| self.locate(k))
            .map_or(0, |span| span.start);
        self.push(at, key, format!("{default_value} (default)"), message);
    }

    pub fn range_f64(&mut self, key: &str, value: f64, low: f64, high: f64) -> f64 {
        self.checked_f64(key, value, low, high, None)
    }

    /// Like `range_f64`, where the upper bound is another key's value.
    pub fn range_f64_named(
        &mut self,
        key: &str,
        value: f64,
        low: f64,
        high: f64,
        high_key: &str,
    ) -> f64 {
        self.checked_f64(key, value, low, high, Some(high_key))
    }

    fn checked_f64(
        &mut self,
        key: &str,
        value: f64,
        low: f64,
        high: f64,
        high_key: Option<&str>,
    ) -> f64 {
        if value.is_finite() && (low..=high).contains(&value) {
            return value;
        }
        let bound = high_key.map(|k| format!(" ({k})")).unwrap_or_default();
        self.report(
            key,
            high_key,
            value.to_string(),
            format!("out of range, allowed {low} to {high}{bound}"),
        );
        value.clamp(low, high)
    }

    pub fn range_u32(&mut self, key: &str, value: u32, low: u32, high: u32) -> u32 {
        if (low..=high).contains(&value) {
            return value;
        }
        self.report(
            key,
            None,
            value.to_string(),
            format!("out of range, allowed {low} to {high}"),
        );
        value.clamp(low, high)
    }

    /// A range where 0 means "automatic".
    pub fn range_u32_or_zero(&mut self, key: &str, value: u32, low: u32, high: u32) -> u32 {
        if value == 0 || (low..=high).contains(&value) {
            return value;
        }
        self.report(
            key,
            None,
            value.to_string(),
            format!("out of range, allowed 0 (automatic) or {low} to {high}"),
        );
        0
    }

    pub fn choice<T: Copy>(
        &mut self,
        key: &str,
        value: &str,
        allowed: &[(&str, T)],
        default: T,
    ) -> T {
        if let Some((_, choice)) = allowed.iter().find(|(name, _)| *name == value) {
            return *choice;
        }
        let names: Vec<String> = allowed
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        self.report(
            key,
            None,
            format!("\"{value}\""),
            format!("allowed values are {}", names.join(", ")),
        );
        default
    }

    /// A problem at `key` that no range check covers.
    pub fn report_key(&mut self, key: &str, default_value: &str, message: &str) {
        self.report(key, None, default_value.to_string(), message.to_string());
    }

    pub fn multiple_of(&mut self, key: &str, value: u32, step: u32, what: &str) {
        if value % step != 0 {
            self.report(
                key,
                None,
                value.to_string(),
                format!("must be a multiple of {step} ({what})"),
            );
        }
    }

    /// "cpu", "cuda" or "cuda:N".
    pub fn device(&mut self, key: &str, value: &str) -> crate::config::ComputeDevice {
        use crate::config::ComputeDevice;
        match value {
            "cpu" => return ComputeDevice::Cpu,
            "cuda" => return ComputeDevice::Cuda(0),
            _ => {}
        }
        if let Some(index) = value
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            if index < 16 {
                return ComputeDevice::Cuda(index);
            }
        }
        self.report(
            key,
            None,
            format!("\"{value}\""),
            "allowed values are \"cpu\", \"cuda\" or \"cuda:N\" (N 0 to 15)".into(),
        );
        ComputeDevice::Cpu
    }

    pub fn non_empty_path(&mut self, key: &str, value: &str) -> PathBuf {
        if value.is_empty() {
            self.report(
                key,
                None,
                "\"\"".into(),
                "must not be empty: give a path".into(),
            );
        }
        PathBuf::from(value)
    }
}

/// Removes the (innermost) entry whose key or value covers `span`; returns the value's span and
/// whether it was a table, and leaves the entry's dotted path in `path`.
fn remove_entry_at(
    table: &mut DeTable<'_>,
    span: &Range<usize>,
    path: &mut Vec<String>,
) -> Option<(Range<usize>, bool)> {
    let covers = |r: Range<usize>| r.start <= span.start && span.end <= r.end;
    let mut hit = None;
    for (key, value) in table.iter_mut() {
        if let DeValue::Table(child) = value.get_mut() {
            path.push(key.get_ref().to_string());
            if let Some(removed) = remove_entry_at(child, span, path) {
                return Some(removed);
            }
            path.pop();
        }
        if covers(key.span()) || covers(value.span()) {
            hit = Some(key.clone());
            break;
        }
    }
    let key = hit?;
    path.push(key.get_ref().to_string());
    table
        .remove(&key)
        .map(|value| (value.span(), matches!(value.get_ref(), DeValue::Table(_))))
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

/// Rewords serde's messages for people editing a file: keys, not fields; numbers, not f64.
fn explain(message: &str) -> String {
    let message = first_line(message);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let allowed = rest
            .split_once("expected ")
            .map(|(_, list)| list.trim_start_matches("one of ").replace('`', ""))
            .unwrap_or_default();
        return format!("unknown key, allowed keys here: {allowed}");
    }
    for (prefix, what) in [
        ("invalid type: ", "wrong type"),
        ("invalid value: ", "wrong value"),
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
            let found = found.split_whitespace().next().unwrap_or(found);
            let expected = match expected {
                "f64" => "a number",
                "u32" | "u64" => "a whole number, 0 or more",
                "a string" => "a string in quotes",
                other if other.starts_with("struct ") => "a table",
                other => other,
            };
            return format!("{what}: expected {expected}, found {found}");
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn serde_messages_are_reworded() {
        assert_eq!(
            explain("invalid type: string \"x\", expected f64"),
            "wrong type: expected a number, found string"
        );
        assert_eq!(
            explain("unknown field `fsp`, expected one of `sink`, `fps`"),
            "unknown key, allowed keys here: sink, fps"
        );
    }
}
