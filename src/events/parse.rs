//! Reading a log line back: `TIME [LEVEL] EVENT key=value ...` into its time (seconds since the
//! epoch), level, event name and fields, unquoting what `quoted` escaped. The inverse of the
//! events' `Display`; the analyzer, `status` and the tests read lines through it.
//!
//! Pure parsing on the caller's thread; `None` for a line that is not ours.

use std::collections::BTreeMap;

/// One log line: seconds since the Unix epoch, level, event, fields.
#[derive(Debug, Clone)]
pub struct Line {
    pub time: f64,
    pub level: String,
    pub event: String,
    pub fields: BTreeMap<String, String>,
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// "2026-11-27T06:32:54.820553336Z" as seconds since the epoch.
pub fn parse_time(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut time = time.splitn(3, ':');
    let hours: f64 = time.next()?.parse().ok()?;
    let minutes: f64 = time.next()?.parse().ok()?;
    let seconds: f64 = time.next()?.parse().ok()?;
    if !(0.0..24.0).contains(&hours)
        || !(0.0..60.0).contains(&minutes)
        || !(0.0..61.0).contains(&seconds)
    {
        return None;
    }
    Some(
        days_from_civil(year, month, day) as f64 * 86_400.0
            + hours * 3600.0
            + minutes * 60.0
            + seconds,
    )
}

/// `key=value` and `key="quoted value"` pairs of a log line (after the event name; the probe's
/// line parses the same way).
pub fn parse_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq]
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        let after = &rest[eq + 1..];
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted),
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            }
        };
        if !key.is_empty() {
            fields.insert(key, value);
        }
        rest = next;
    }
    fields
}

/// A quoted value (after its opening quote) with `\"`, `\\`, `\n` and `\u{1b}` unescaped,
/// and the text after its closing quote (see `events::quoted`).
fn unquote(text: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return (value, &text[at + 1..]),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((after_u, 'u')) => {
                    let code = text[after_u + 1..]
                        .strip_prefix('{')
                        .and_then(|rest| rest.split_once('}'))
                        .and_then(|(hex, _)| Some((hex.len(), u32::from_str_radix(hex, 16).ok()?)))
                        .and_then(|(len, code)| Some((len, char::from_u32(code)?)));
                    match code {
                        Some((len, c)) => {
                            value.push(c);
                            // Past "{hex}".
                            for _ in 0..len + 2 {
                                chars.next();
                            }
                        }
                        None => value.push('u'),
                    }
                }
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            c => value.push(c),
        }
    }
    (value, "")
}

/// One line of the log format, `TIME [LEVEL] EVENT key=value ...`; `None` for anything else.
pub fn parse_line(text: &str) -> Option<Line> {
    let (time, rest) = text.split_once(' ')?;
    let time = parse_time(time)?;
    let rest = rest.strip_prefix('[')?;
    let (level, rest) = rest.split_once("] ")?;
    // "[TIMING] transition ..." carries a tag before its event name.
    let rest = rest.strip_prefix("[TIMING] ").unwrap_or(rest);
    let (event, fields) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Line {
        time,
        level: level.to_string(),
        event: event.to_string(),
        fields: parse_fields(fields),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_times_and_fields_parse() {
        let line = parse_line(
            "2026-11-27T06:32:56.596500462Z [INFO] [TIMING] transition from=0 to=1 frames=90 decode_ms_per_frame=19.723 note=\"a \\\"b\\\"\"",
        )
        .expect("a log line");
        assert_eq!(line.event, "transition");
        assert_eq!(line.fields["decode_ms_per_frame"], "19.723");
        assert_eq!(line.fields["note"], "a \"b\"");
        assert_eq!(parse_time("1970-01-02T00:00:01Z"), Some(86_401.0));
        assert_eq!(parse_time("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert!(parse_line("not a log line").is_none());
    }
}
