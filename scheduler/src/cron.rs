//! [`CronExpr`]: cron expressions and when they fire next, in a time zone.
//!
//! Built on `croner` rather than the `cron` crate: `cron` 0.17 rejects classic 5-field crontab
//! lines, fires a local time twice on the fall-back night and skips a local time that
//! spring-forward jumps over. `croner` takes 5 fields (minute first) or 6 (seconds first) and the
//! `@hourly`-style shorthands, and follows the rules Lepus promises: on the fall-back night a
//! local time fires once (at its first occurrence); a local time inside the spring-forward gap
//! fires once, at the first instant after the gap. Interval patterns (`*/5 * * * *`) keep their
//! real-time rhythm through both transitions. Day of week 0 and 7 are Sunday.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use std::fmt;

/// Why a cron expression was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// Neither 5 nor 6 fields, and not a shorthand.
    #[error("expected 5 fields (minute hour day month weekday) or 6 (seconds first), got {0}")]
    FieldCount(usize),
    /// A field is out of range or malformed (croner's explanation).
    #[error(transparent)]
    Invalid(#[from] croner::errors::CronError),
}

/// A parsed cron expression.
#[derive(Clone)]
pub struct CronExpr {
    source: String,
    cron: Cron,
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronExpr").field(&self.source).finish()
    }
}

impl CronExpr {
    /// Parses a 5-field crontab line, a 6-field line with seconds first, or a shorthand
    /// (`@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`).
    pub fn parse(expression: &str) -> Result<Self, CronError> {
        let fields = expression.split_whitespace().count();
        if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(CronError::FieldCount(fields));
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(expression)?;
        Ok(Self { source: expression.trim().to_owned(), cron })
    }

    /// The expression as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The last fire time at or before `until`, with the expression read in `zone`.
    #[must_use]
    pub fn last_until(&self, until: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let local = until.with_timezone(&zone);
        self.cron.find_previous_occurrence(&local, true).ok().map(|previous| previous.with_timezone(&Utc))
    }

    /// The first fire time strictly after `after`, with the expression read in `zone`.
    #[must_use]
    pub fn next_after(&self, after: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|next| next.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::America::New_York;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().expect("valid time")
    }

    /// Every fire time in `[from, until)`.
    fn fires(expr: &str, zone: Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let cron = CronExpr::parse(expr).expect("valid");
        let mut out = Vec::new();
        let mut at = from - chrono::TimeDelta::seconds(1);
        while let Some(next) = cron.next_after(at, zone).filter(|n| *n < until) {
            out.push(next);
            at = next;
        }
        out
    }

    #[test]
    fn five_and_six_fields_and_shorthands_parse() {
        for ok in ["30 2 * * *", "0 30 2 * * *", "*/2 * * * * *", "@hourly", "@daily", "0 9 * * MON-FRI", "0 0 1 1 *"] {
            assert!(CronExpr::parse(ok).is_ok(), "{ok} rejected");
        }
        for bad in ["", "* * * *", "0 0 0 1 1 * 2030", "61 * * * *", "* * 32 * *", "@sometimes", "a b c d e"] {
            assert!(CronExpr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn five_fields_are_minute_first_and_six_are_seconds_first() {
        let from = utc(2026, 1, 1, 0, 0, 0);
        assert_eq!(
            CronExpr::parse("30 2 * * *").ok().and_then(|c| c.next_after(from, Tz::UTC)),
            Some(utc(2026, 1, 1, 2, 30, 0))
        );
        assert_eq!(
            CronExpr::parse("15 30 2 * * *").ok().and_then(|c| c.next_after(from, Tz::UTC)),
            Some(utc(2026, 1, 1, 2, 30, 15))
        );
    }

    #[test]
    fn fall_back_2026_new_york_fires_a_local_time_once() {
        // 2026-11-01: 01:00–01:59 EDT (UTC-4), then again 01:00–01:59 EST (UTC-5).
        let night = fires("30 1 * * *", New_York, utc(2026, 11, 1, 0, 0, 0), utc(2026, 11, 2, 0, 0, 0));
        assert_eq!(night, [utc(2026, 11, 1, 5, 30, 0)], "01:30 EDT only");
        let with_seconds = fires("0 30 1 * * *", New_York, utc(2026, 11, 1, 0, 0, 0), utc(2026, 11, 2, 0, 0, 0));
        assert_eq!(with_seconds, [utc(2026, 11, 1, 5, 30, 0)]);
        // The day before and after are ordinary.
        assert_eq!(
            fires("30 1 * * *", New_York, utc(2026, 10, 31, 0, 0, 0), utc(2026, 11, 1, 0, 0, 0)),
            [utc(2026, 10, 31, 5, 30, 0)]
        );
        assert_eq!(
            fires("30 1 * * *", New_York, utc(2026, 11, 2, 0, 0, 0), utc(2026, 11, 3, 0, 0, 0)),
            [utc(2026, 11, 2, 6, 30, 0)]
        );
    }

    #[test]
    fn spring_forward_2026_new_york_fires_a_skipped_time_once_after_the_gap() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC); 02:30 does not exist.
        let day = fires("30 2 * * *", New_York, utc(2026, 3, 8, 0, 0, 0), utc(2026, 3, 9, 0, 0, 0));
        assert_eq!(day, [utc(2026, 3, 8, 7, 0, 0)], "once, at 03:00 EDT, the first instant after the gap");
        let next_day = fires("30 2 * * *", New_York, utc(2026, 3, 9, 0, 0, 0), utc(2026, 3, 10, 0, 0, 0));
        assert_eq!(next_day, [utc(2026, 3, 9, 6, 30, 0)]);
        // Times outside the gap are not moved.
        assert_eq!(
            fires("30 3 * * *", New_York, utc(2026, 3, 8, 0, 0, 0), utc(2026, 3, 9, 0, 0, 0)),
            [utc(2026, 3, 8, 7, 30, 0)]
        );
    }

    #[test]
    fn hourly_jobs_keep_real_time_through_both_transitions() {
        let spring = fires("@hourly", New_York, utc(2026, 3, 8, 5, 0, 0), utc(2026, 3, 8, 9, 0, 0));
        assert_eq!(spring.len(), 4, "{spring:?}");
        let fall = fires("0 * * * *", New_York, utc(2026, 11, 1, 4, 0, 0), utc(2026, 11, 1, 8, 0, 0));
        assert_eq!(fall.len(), 4, "one per real hour, both 01:00s included: {fall:?}");
    }
}
