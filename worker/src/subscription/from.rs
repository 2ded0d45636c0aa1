//! [`ReplayFrom`]: where a new service's replay of the event stream starts.

use chrono::{DateTime, Utc};
use std::fmt;
use std::str::FromStr;

/// Where a new service starts reading the event stream `lepus.events.log` before it goes live
/// (see [`crate::Subscription::replay`]). Parses from `first` or an RFC 3339 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The oldest event the stream still keeps (its retention decides how old).
    First,
    /// The events that happened at or after this time (by their `occurred_at`); a time older
    /// than the stream's oldest event starts at the oldest.
    Time(DateTime<Utc>),
}

impl fmt::Display for ReplayFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::First => f.write_str("first"),
            Self::Time(at) => f.write_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }
    }
}

impl FromStr for ReplayFrom {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim() == "first" {
            return Ok(Self::First);
        }
        DateTime::parse_from_rfc3339(text.trim())
            .map(|at| Self::Time(at.with_timezone(&Utc)))
            .map_err(|e| format!("replay from {text:?}: `first` or an RFC 3339 time ({e})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn it_reads_and_writes_first_or_a_time() {
        assert_eq!("first".parse::<ReplayFrom>(), Ok(ReplayFrom::First));
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().expect("a time");
        let parsed: ReplayFrom = "2026-03-01T13:00:00+01:00".parse().expect("a time");
        assert_eq!(parsed, ReplayFrom::Time(at));
        assert_eq!(parsed.to_string().parse::<ReplayFrom>(), Ok(parsed));
        assert_eq!(ReplayFrom::First.to_string(), "first");
        assert!("yesterday".parse::<ReplayFrom>().is_err());
    }
}
