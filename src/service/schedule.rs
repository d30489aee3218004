//! The night schedule: daily periods of local time that dim the picture (software brightness) or
//! blank the screen (the sink powers it down: FBIOBLANK, DPMS), with generation paused while blank.
//!
//! Inputs: the configured periods and the local clock. Output: the action in force now, which the
//! orchestrator (tokio) puts into the pipeline's control (brightness, blank) for the playback
//! and pacer threads. Pure functions apart from reading the clock; nothing here fails.

pub(crate) use crate::config::{Period, MINUTES_PER_DAY};

/// The first period that contains `minute`, if any.
pub(crate) fn active(periods: &[Period], minute: u32) -> Option<&Period> {
    periods.iter().find(|period| period.contains(minute))
}

/// Minutes after local midnight now (the system time zone, /etc/localtime or TZ); UTC if the
/// C library can't tell.
pub fn local_minute_of_day() -> u32 {
    crate::sys::local_minute_of_day().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ((now / 60) % MINUTES_PER_DAY as u64) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{format_clock, parse_clock, ScheduleAction};

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
