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

use super::raw::{Number, TABLE_SECTIONS};

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
        if !self.key.is_empty() && self.value.is_empty() {
            write!(f, "{}: ", self.key)?;
        } else if !self.key.is_empty() {
            write!(f, "{} = {}: ", self.key, self.value)?;
        }
        write!(f, "{}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", format_problems(origin, problems, *gave_up))]
    Invalid {
        origin: String,
        problems: Vec<ConfigProblem>,
        /// Checking stopped early (too many problems): there may be more.
        gave_up: bool,
    },
}

fn format_problems(origin: &str, problems: &[ConfigProblem], gave_up: bool) -> String {
    let mut text = format!(
        "{}{} error{} in config {}:",
        problems.len(),
        if gave_up { " or more" } else { "" },
        if problems.len() == 1 { "" } else { "s" },
        origin
    );
    for problem in problems.iter().take(MAX_PRINTED) {
        text.push_str("\n  ");
        text.push_str(&problem.to_string());
    }
    if problems.len() > MAX_PRINTED {
        text.push_str(&format!(
            "\n  ... and {} more (fix these first)",
            problems.len() - MAX_PRINTED
        ));
    }
    if gave_up {
        text.push_str("\n  (checking stopped here: fix these and check again)");
    }
    text
}

/// Collects problems while a raw config is checked.
pub(crate) struct Checker<'a> {
    origin: String,
    text: &'a str,
    document: Spanned<DeTable<'a>>,
    problems: Vec<ConfigProblem>,
    /// Set when checking stopped early (see `MAX_RECOVERIES`).
    gave_up: bool,
    /// Byte offset of each line's start, made at the first problem (positions of thousands of
    /// problems must not each rescan the text).
    line_starts: Vec<usize>,
}

/// Deserialisation retries before checking stops. Unknown keys of a table are removed together,
/// so each retry is one wrong type; a hand-edited file has a handful, and a hostile 1 MiB one
/// costs at most this many passes (about 2 s).
const MAX_RECOVERIES: usize = 50;
/// Problems printed in full; past this the message says how many more there are.
const MAX_PRINTED: usize = 50;
/// Keys and values are shown at most this long in messages.
const MAX_SHOWN_CHARS: usize = 60;

/// `text` cut to `MAX_SHOWN_CHARS` characters, with "..." when cut.
fn shortened(text: &str) -> String {
    if text.chars().count() > MAX_SHOWN_CHARS {
        format!(
            "{}...",
            text.chars().take(MAX_SHOWN_CHARS - 3).collect::<String>()
        )
    } else {
        text.to_string()
    }
}

/// One step of a key path: a key, and an index when the key holds an array of tables.
#[derive(Debug, Clone)]
struct Step {
    key: String,
    index: Option<usize>,
}

fn dotted(path: &[Step]) -> String {
    path.iter()
        .map(|step| match step.index {
            Some(index) => format!("{}[{index}]", shortened(&step.key)),
            None => shortened(&step.key),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// What an entry removed from the document was, for the message.
fn describe_value(value: &Spanned<DeValue<'_>>) -> Option<&'static str> {
    match value.get_ref() {
        DeValue::Table(_) => Some("(a table)"),
        DeValue::Array(items)
            if !items.is_empty()
                && items
                    .iter()
                    .all(|item| matches!(item.get_ref(), DeValue::Table(_))) =>
        {
            Some("(an array of tables)")
        }
        _ => None,
    }
}

impl<'a> Checker<'a> {
    /// Deserialises `text`, collecting every entry serde rejects. Fails outright only when the
    /// text is not TOML at all (nothing after a syntax error can be trusted).
    pub(crate) fn parse<T: DeserializeOwned>(
        text: &'a str,
        origin: &str,
    ) -> Result<(T, Checker<'a>), ConfigError> {
        let mut checker = Checker {
            origin: origin.to_string(),
            text,
            document: Spanned::new(0..0, DeTable::new()),
            problems: Vec::new(),
            gave_up: false,
            line_starts: Vec::new(),
        };
        let document = match DeTable::parse(text) {
            Ok(document) => document,
            Err(error) => {
                let span = error.span().unwrap_or(0..0);
                let mut message = format!("not valid TOML: {}", first_line(error.message()));
                if error.message().starts_with("duplicate key") {
                    message = format!(
                        "not valid TOML: duplicate key `{}`: each key may be set once",
                        shortened(text.get(span.clone()).unwrap_or_default().trim())
                    );
                }
                checker.push(span.start, "", String::new(), message);
                return Err(checker.into_error());
            }
        };
        let mut pruned = document.clone();
        checker.document = document;
        for _ in 0..MAX_RECOVERIES {
            let error = match T::deserialize(Deserializer::from(pruned.clone())) {
                Ok(raw) => return Ok((raw, checker)),
                Err(error) => error,
            };
            let message = first_line(error.message());
            let Some(span) = error.span() else {
                checker.push(0, "", String::new(), explain(&message, None));
                return Err(checker.into_error());
            };
            let Some(path) = entry_path(pruned.get_ref(), &span, &mut Vec::new()) else {
                checker.push(span.start, "", String::new(), explain(&message, None));
                return Err(checker.into_error());
            };
            if let Some(allowed) = unknown_key_allowed(&message) {
                // Every unknown key of that table at once: one retry, however many there are.
                let (parent, _) = path.split_at(path.len() - 1);
                let table = table_at_mut(pruned.get_mut(), parent)
                    .expect("the path was found in this document");
                // Rebuilt rather than removed from one by one: removal shifts the rest.
                let mut unknown = Vec::new();
                for (key, value) in std::mem::replace(table, DeTable::new()) {
                    if allowed.iter().any(|a| a == key.get_ref().as_ref()) {
                        table.insert(key, value);
                    } else {
                        unknown.push((key, value));
                    }
                }
                for (key, value) in unknown {
                    let mut key_path = parent.to_vec();
                    key_path.push(Step {
                        key: key.get_ref().to_string(),
                        index: None,
                    });
                    let value = describe_value(&value)
                        .map(str::to_string)
                        .unwrap_or_else(|| checker.source_of(value.span()));
                    let message = format!("unknown key, allowed keys here: {}", allowed.join(", "));
                    checker.push(key.span().start, &dotted(&key_path), value, message);
                }
                continue;
            }
            let removed =
                remove_at(pruned.get_mut(), &path).expect("the path was found in this document");
            let value = describe_value(&removed)
                .map(str::to_string)
                .unwrap_or_else(|| checker.source_of(removed.span()));
            let top_level_table = path.len() == 1
                && TABLE_SECTIONS.contains(&path[0].key.as_str())
                && describe_value(&removed) != Some("(a table)");
            let message = if top_level_table {
                format!(
                    "wrong type: expected a table [{0}], found {1}; write [{0}] (one pair of brackets)",
                    path[0].key,
                    describe_value(&removed)
                        .map_or("a value", |d| d.trim_matches(|c| c == '(' || c == ')'))
                )
            } else {
                explain(&message, describe_value(&removed))
            };
            checker.push(span.start, &dotted(&path), value, message);
        }
        checker.gave_up = true;
        Err(checker.finish().expect_err("problems were recorded"))
    }

    pub(crate) fn finish(mut self) -> Result<(), ConfigError> {
        // Recovery and validation find problems out of order; people read files top-down.
        self.problems.sort_by_key(|p| (p.line, p.column));
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }

    /// The problems recorded so far, in file order, as they are (for warnings).
    pub(crate) fn into_problems(mut self) -> Vec<ConfigProblem> {
        self.problems.sort_by_key(|p| (p.line, p.column));
        self.problems
    }

    fn into_error(self) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin,
            problems: self.problems,
            gave_up: self.gave_up,
        }
    }

    fn push(&mut self, at: usize, key: &str, value: String, message: String) {
        if self.line_starts.is_empty() {
            self.line_starts = std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect();
        }
        let at = at.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= at);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..at)
            .map_or(1, |t| t.chars().count() + 1);
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
        shortened(self.text.get(span).unwrap_or_default().trim())
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
        // One problem per key: a value serde already rejected is not judged again.
        if self.problems.iter().any(|p| p.key == key) {
            return;
        }
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

    pub(crate) fn range_f64(&mut self, key: &str, value: Number, low: f64, high: f64) -> f64 {
        self.checked_f64(key, value, low, high, None)
    }

    /// Like `range_f64`, where the upper bound is another key's value.
    pub(crate) fn range_f64_named(
        &mut self,
        key: &str,
        value: Number,
        low: f64,
        high: f64,
        high_key: &str,
    ) -> f64 {
        self.checked_f64(key, value, low, high, Some(high_key))
    }

    fn checked_f64(
        &mut self,
        key: &str,
        value: Number,
        low: f64,
        high: f64,
        high_key: Option<&str>,
    ) -> f64 {
        let number = match value {
            Number::Whole(n) => n as f64,
            Number::Real(x) => x,
        };
        if number.is_finite() && (low..=high).contains(&number) {
            return number;
        }
        let bound = high_key.map(|k| format!(" ({k})")).unwrap_or_default();
        self.report(
            key,
            high_key,
            number.to_string(),
            format!("out of range, allowed {low} to {high}{bound}"),
        );
        if number.is_nan() {
            low
        } else {
            number.clamp(low, high)
        }
    }

    /// A whole number within `low..=high`.
    pub(crate) fn whole(&mut self, key: &str, value: Number, low: u64, high: u64) -> u64 {
        match value {
            Number::Whole(n) if (low as i128..=high as i128).contains(&n) => n as u64,
            Number::Whole(n) => {
                self.report(
                    key,
                    None,
                    n.to_string(),
                    format!("out of range, allowed {low} to {high}"),
                );
                n.clamp(low as i128, high as i128) as u64
            }
            Number::Real(x) => {
                self.report(
                    key,
                    None,
                    x.to_string(),
                    format!("wrong type: expected a whole number, {low} to {high}"),
                );
                low
            }
        }
    }

    pub(crate) fn range_u32(&mut self, key: &str, value: Number, low: u32, high: u32) -> u32 {
        self.whole(key, value, low.into(), high.into()) as u32
    }

    /// A range where 0 means "automatic".
    pub(crate) fn range_u32_or_zero(
        &mut self,
        key: &str,
        value: Number,
        low: u32,
        high: u32,
    ) -> u32 {
        if value.is_zero() {
            return 0;
        }
        if let Number::Whole(n) = value {
            if (low as i128..=high as i128).contains(&n) {
                return n as u32;
            }
        }
        self.report(
            key,
            None,
            String::new(),
            format!("out of range, allowed 0 (automatic) or {low} to {high}"),
        );
        0
    }

    pub(crate) fn choice<T: Copy>(
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
            format!("\"{}\"", shortened(value)),
            format!("allowed values are {}", names.join(", ")),
        );
        default
    }

    /// A problem at `key` that no range check covers.
    pub(crate) fn report_key(&mut self, key: &str, default_value: &str, message: &str) {
        self.report(key, None, shortened(default_value), message.to_string());
    }

    pub(crate) fn multiple_of(&mut self, key: &str, value: u32, step: u32, what: &str) {
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
    pub(crate) fn device(&mut self, key: &str, value: &str) -> crate::config::ComputeDevice {
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
            format!("\"{}\"", shortened(value)),
            "allowed values are \"cpu\", \"cuda\" or \"cuda:N\" (N 0 to 15)".into(),
        );
        ComputeDevice::Cpu
    }

    /// A path; empty means `None` when `may_be_empty`. A NUL byte can't be in a Unix path.
    pub(crate) fn path(&mut self, key: &str, value: &str, may_be_empty: bool) -> Option<PathBuf> {
        if value.contains('\0') {
            self.report(
                key,
                None,
                format!("{value:?}"),
                "a path cannot contain a NUL character (\\u0000)".into(),
            );
            return None;
        }
        if value.is_empty() {
            if !may_be_empty {
                self.report(
                    key,
                    None,
                    "\"\"".into(),
                    "must not be empty: give a path".into(),
                );
            }
            return None;
        }
        Some(PathBuf::from(value))
    }

    /// A path that must be given.
    pub(crate) fn non_empty_path(&mut self, key: &str, value: &str) -> PathBuf {
        self.path(key, value, false).unwrap_or_default()
    }
}

/// The problem for a file that is not UTF-8, at the first bad byte.
pub(crate) fn not_utf8(origin: &str, bytes: &[u8], error: std::str::Utf8Error) -> ConfigError {
    let valid = &bytes[..error.valid_up_to()];
    let text = std::str::from_utf8(valid).expect("valid up to this byte");
    let (line, column) = line_column(text, text.len());
    ConfigError::Invalid {
        origin: origin.to_string(),
        problems: vec![ConfigProblem {
            origin: origin.to_string(),
            line,
            column,
            key: String::new(),
            value: String::new(),
            message: format!(
                "not valid UTF-8 (byte 0x{:02x}): save the file as UTF-8 text",
                bytes[error.valid_up_to()]
            ),
        }],
        gave_up: false,
    }
}

/// The allowed keys, when serde rejected an unknown one ("unknown field `x`, expected `a` or
/// `b`", "... expected one of `a`, `b`, `c`").
fn unknown_key_allowed(message: &str) -> Option<Vec<String>> {
    let rest = message.strip_prefix("unknown field ")?;
    let list = rest.split_once("expected ")?.1;
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// The path to the innermost entry whose key or value covers `span`.
fn entry_path(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<Step>) -> Option<Vec<Step>> {
    let covers = |r: Range<usize>| r.start <= span.start && span.end <= r.end;
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        match value.get_ref() {
            DeValue::Table(child) => {
                path.push(Step {
                    key: name.clone(),
                    index: None,
                });
                if let Some(found) = entry_path(child, span, path) {
                    return Some(found);
                }
                path.pop();
            }
            DeValue::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let DeValue::Table(child) = item.get_ref() {
                        path.push(Step {
                            key: name.clone(),
                            index: Some(index),
                        });
                        if let Some(found) = entry_path(child, span, path) {
                            return Some(found);
                        }
                        path.pop();
                    }
                }
            }
            _ => {}
        }
        if covers(key.span()) || covers(value.span()) {
            let mut found = path.clone();
            found.push(Step {
                key: name,
                index: None,
            });
            return Some(found);
        }
    }
    None
}

/// The table that `path` (steps to a table, possibly through arrays of tables) names.
fn table_at_mut<'t, 'a>(table: &'t mut DeTable<'a>, path: &[Step]) -> Option<&'t mut DeTable<'a>> {
    let Some((step, rest)) = path.split_first() else {
        return Some(table);
    };
    let value = table.get_mut(step.key.as_str())?;
    let value = match (step.index, value.get_mut()) {
        (Some(index), DeValue::Array(items)) => items.get_mut(index)?.get_mut(),
        (None, value) => value,
        _ => return None,
    };
    match value {
        DeValue::Table(child) => table_at_mut(child, rest),
        _ => None,
    }
}

/// Removes the entry at `path`; returns its value.
fn remove_at<'a>(table: &mut DeTable<'a>, path: &[Step]) -> Option<Spanned<DeValue<'a>>> {
    let (last, parent) = path.split_last()?;
    table_at_mut(table, parent)?.remove(last.key.as_str())
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
/// `removed` describes the rejected value when it was a table or an array of tables.
fn explain(message: &str, removed: Option<&str>) -> String {
    let message = first_line(message);
    if message.ends_with("number overflowed") {
        return "out of range: the number is too large".to_string();
    }
    for (prefix, what) in [
        ("invalid type: ", "wrong type"),
        ("invalid value: ", "wrong value"),
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
            let found = match removed {
                Some(description) => description.trim_matches(|c| c == '(' || c == ')'),
                None => found.split_whitespace().next().unwrap_or(found),
            };
            let expected = match expected {
                "f64" | "a number" => "a number",
                "u32" | "u64" => "a whole number, 0 or more",
                "a string" => "a string in quotes",
                "a boolean" => "true or false",
                "a sequence" => "an array (of tables: [[...]] headers)",
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
            explain("invalid type: string \"x\", expected f64", None),
            "wrong type: expected a number, found string"
        );
        assert_eq!(
            unknown_key_allowed("unknown field `fsp`, expected one of `sink`, `fps`"),
            Some(vec!["sink".to_string(), "fps".to_string()])
        );
        assert_eq!(
            unknown_key_allowed("unknown field `x`, expected `rotation-interval` or `themes`"),
            Some(vec!["rotation-interval".to_string(), "themes".to_string()])
        );
    }
}
