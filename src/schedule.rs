//! The night schedule: daily periods of local time that dim the picture (software brightness) or
//! blank the screen (FBIOBLANK), with generation paused while blank.
//!
//! Inputs: the configured periods and the local clock. Output: the action in force now, which the
//! orchestrator (tokio) puts into the live settings for the playback and pacer threads. Pure
//! functions apart from reading the clock; nothing here fails.

/// What a period does to the display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleAction {
    /// Picture brightness multiplied by this factor (0.05 to 1).
    Dim(f64),
    /// Screen powered down, generation paused.
    Blank,
}

/// A daily period; `to` before `from` runs over midnight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    /// Minutes after local midnight.
    pub from: u32,
    pub to: u32,
    pub action: ScheduleAction,
}

pub const MINUTES_PER_DAY: u32 = 24 * 60;

/// "HH:MM" (24-hour) as minutes after midnight.
pub fn parse_clock(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

pub fn format_clock(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

impl Period {
    pub fn contains(&self, minute: u32) -> bool {
        if self.from <= self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }

    /// For logs and status.json: "blank 23:00-07:00" or "dim 0.30 22:00-23:00".
    pub fn label(&self) -> String {
        let span = format!("{}-{}", format_clock(self.from), format_clock(self.to));
        match self.action {
            ScheduleAction::Blank => format!("blank {span}"),
            ScheduleAction::Dim(factor) => format!("dim {factor:.2} {span}"),
        }
    }
}

/// The first period that contains `minute`, if any.
pub fn active(periods: &[Period], minute: u32) -> Option<&Period> {
    periods.iter().find(|period| period.contains(minute))
}

/// Minutes after local midnight now (the system time zone, /etc/localtime or TZ).
pub fn local_minute_of_day() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r writes into the tm we own; both pointers live across the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return ((now / 60) as u32) % MINUTES_PER_DAY;
    }
    tm.tm_hour as u32 * 60 + tm.tm_min as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_parse_and_print() {
        assert_eq!(parse_clock("00:00"), Some(0));
        assert_eq!(parse_clock("07:30"), Some(450));
        assert_eq!(parse_clock("23:59"), Some(1439));
        for bad in ["24:00", "7:30", "07:60", "0730", "ab:cd", ""] {
            assert_eq!(parse_clock(bad), None, "{bad}");
        }
        assert_eq!(format_clock(450), "07:30");
    }

    #[test]
    fn periods_over_midnight_and_the_first_match_wins() {
        let night = Period {
            from: parse_clock("23:00").unwrap(),
            to: parse_clock("07:00").unwrap(),
            action: ScheduleAction::Blank,
        };
        let evening = Period {
            from: parse_clock("21:00").unwrap(),
            to: parse_clock("23:30").unwrap(),
            action: ScheduleAction::Dim(0.3),
        };
        let periods = [night, evening];
        assert_eq!(
            active(&periods, parse_clock("23:15").unwrap()),
            Some(&night)
        );
        assert_eq!(
            active(&periods, parse_clock("03:00").unwrap()),
            Some(&night)
        );
        assert_eq!(active(&periods, parse_clock("07:00").unwrap()), None);
        assert_eq!(
            active(&periods, parse_clock("22:00").unwrap()),
            Some(&evening)
        );
        assert_eq!(active(&periods, parse_clock("12:00").unwrap()), None);
        assert_eq!(night.label(), "blank 23:00-07:00");
        assert_eq!(evening.label(), "dim 0.30 21:00-23:30");
        assert!(local_minute_of_day() < MINUTES_PER_DAY);
    }
}
