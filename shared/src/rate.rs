//! [`Rate`]: how many jobs of a type (or of a key) may start per period across every worker, its
//! text form (`"100/s"`, `"10/m"`, `"5/h"`, `"100/s;burst=20"`), and the task-message headers
//! that carry a limit (`x-lepus-rate-limit`, `x-lepus-rate-key`), which Python Celery clients set
//! with `apply_async(headers=...)`.

use crate::protocol::TaskMessage;
use crate::protocol::headers::header_str;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Header: the rate limit of the job, as text (`"100/s"`; see [`Rate`]'s `FromStr`).
pub const RATE_LIMIT_HEADER: &str = "x-lepus-rate-limit";
/// Header: the key the limit counts by (default: the task name).
pub const RATE_KEY_HEADER: &str = "x-lepus-rate-key";

/// Largest count a rate may have (per period).
const MAX_COUNT: u32 = 1_000_000;

/// Most token messages a second an issuer publishes: above it, one token is worth several starts.
const MAX_TOKENS_PER_SECOND: f64 = 500.0;

/// A rate limit: at most `count` job starts per `period` across all workers, with tokens banked
/// up to a burst (`capacity`) while nobody uses them.
///
/// ```
/// let rate: lepus::Rate = "100/s".parse().unwrap();
/// assert_eq!(rate.per_second(), 100.0);
/// assert_eq!(rate.capacity(), 10); // a tenth of a second's worth by default
/// let bursty: lepus::Rate = "10/m;burst=5".parse().unwrap();
/// assert_eq!(bursty.capacity(), 5);
/// assert!("abc/s".parse::<lepus::Rate>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: u32,
    unit: Unit,
    burst: Option<u32>,
}

/// The period of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Unit {
    Second,
    Minute,
    Hour,
}

impl Unit {
    fn seconds(self) -> u32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
        }
    }

    fn letter(self) -> &'static str {
        match self {
            Unit::Second => "s",
            Unit::Minute => "m",
            Unit::Hour => "h",
        }
    }
}

impl Rate {
    /// `count` starts per second (at least 1).
    #[must_use]
    pub fn per_sec(count: u32) -> Self {
        Self { count: count.clamp(1, MAX_COUNT), unit: Unit::Second, burst: None }
    }

    /// `count` starts per minute (at least 1).
    #[must_use]
    pub fn per_minute(count: u32) -> Self {
        Self { count: count.clamp(1, MAX_COUNT), unit: Unit::Minute, burst: None }
    }

    /// `count` starts per hour (at least 1).
    #[must_use]
    pub fn per_hour(count: u32) -> Self {
        Self { count: count.clamp(1, MAX_COUNT), unit: Unit::Hour, burst: None }
    }

    /// Banks at most `burst` unused tokens (at least 1): how many jobs may start at once after an
    /// idle time. Default: a tenth of a second's worth, at least 1.
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst.clamp(1, MAX_COUNT));
        self
    }

    /// Starts per second, on average.
    #[must_use]
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / f64::from(self.unit.seconds())
    }

    /// The time between two tokens.
    #[must_use]
    pub fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.unit.seconds())) / self.count
    }

    /// How many unused tokens the bucket holds at most (the token queue's `x-max-length`).
    #[must_use]
    pub fn capacity(&self) -> u32 {
        self.burst.unwrap_or_else(|| {
            // A tenth of a second's worth: enough that one issuing tick never overflows it.
            let tenth = (self.per_second() / 10.0).ceil();
            if tenth >= f64::from(MAX_COUNT) { MAX_COUNT } else { (tenth as u32).max(1) }
        })
    }
}

impl Rate {
    /// How many job starts one token message is worth: 1 up to 500 starts a second, then as
    /// many as keep the issuer at 500 messages a second (`ceil(rate / 500)`), so that a high
    /// limit costs the broker and the workers a message per several jobs, not one per job.
    #[must_use]
    pub fn token_weight(&self) -> u32 {
        let weight = (self.per_second() / MAX_TOKENS_PER_SECOND).ceil();
        if weight >= f64::from(MAX_COUNT) { MAX_COUNT } else { (weight as u32).max(1) }
    }

    /// How many token messages the bucket holds at most: the capacity in tokens of
    /// [`Rate::token_weight`] starts, rounded up.
    #[must_use]
    pub fn bucket_length(&self) -> u32 {
        self.capacity().div_ceil(self.token_weight())
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit.letter())?;
        if let Some(burst) = self.burst {
            write!(f, ";burst={burst}")?;
        }
        Ok(())
    }
}

/// Why a rate's text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate limit {text:?}: {reason} (expected `<count>/<s|m|h>`, e.g. \"100/s\", optionally `;burst=<n>`)")]
pub struct InvalidRate {
    text: String,
    reason: &'static str,
}

impl FromStr for Rate {
    type Err = InvalidRate;

    /// `<count>/<unit>` with unit `s`, `m` or `h` (also `sec`, `min`, `hour`, as Celery's
    /// `rate_limit`), optionally followed by `;burst=<n>`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidRate { text: text.to_owned(), reason };
        let (rate, burst) = match text.split_once(';') {
            Some((rate, burst)) => (rate, Some(burst.trim())),
            None => (text, None),
        };
        let (count, unit) = rate.trim().split_once('/').ok_or_else(|| invalid("no `/` between count and unit"))?;
        let count: u32 = count.trim().parse().map_err(|_| invalid("the count is not a whole number"))?;
        if count == 0 || count > MAX_COUNT {
            return Err(invalid("the count must be between 1 and 1000000"));
        }
        let unit = match unit.trim() {
            "s" | "sec" | "second" => Unit::Second,
            "m" | "min" | "minute" => Unit::Minute,
            "h" | "hour" => Unit::Hour,
            _ => return Err(invalid("the unit is not `s`, `m` or `h`")),
        };
        let burst = match burst {
            None => None,
            Some(burst) => {
                let value = burst.strip_prefix("burst=").ok_or_else(|| invalid("after `;` only `burst=<n>`"))?;
                let value: u32 = value.trim().parse().map_err(|_| invalid("the burst is not a whole number"))?;
                if value == 0 || value > MAX_COUNT {
                    return Err(invalid("the burst must be between 1 and 1000000"));
                }
                Some(value)
            }
        };
        Ok(Self { count, unit, burst })
    }
}

/// The rate limit a task message asks for in its `x-lepus-rate-limit` header, if any. The error
/// names the header and its bad value.
pub fn requested(message: &TaskMessage) -> Result<Option<Rate>, String> {
    match message.extra_headers.inner().get(RATE_LIMIT_HEADER) {
        None | Some(lapin::types::AMQPValue::Void) => Ok(None),
        Some(_) => {
            let Some(text) = header_str(&message.extra_headers, RATE_LIMIT_HEADER) else {
                return Err(format!("header {RATE_LIMIT_HEADER} is not a string"));
            };
            text.parse::<Rate>().map(Some).map_err(|e| format!("header {RATE_LIMIT_HEADER}: {e}"))
        }
    }
}

/// The key a message's rate limit counts by, as sent (`x-lepus-rate-key`), if any.
pub fn requested_key(message: &TaskMessage) -> Option<String> {
    header_str(&message.extra_headers, RATE_KEY_HEADER).map(|key| key.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let rate: Rate = "20/s".parse().expect("valid");
        assert_eq!(rate, Rate::per_sec(20));
        assert_eq!(rate.interval(), Duration::from_millis(50));
        assert_eq!(rate.capacity(), 2);
        assert_eq!(rate.to_string(), "20/s");
        let minute: Rate = " 10 / min ".parse().expect("valid");
        assert_eq!(minute, Rate::per_minute(10));
        assert_eq!(minute.interval(), Duration::from_secs(6));
        assert_eq!(minute.capacity(), 1);
        let bursty: Rate = "5/h;burst=3".parse().expect("valid");
        assert_eq!(bursty, Rate::per_hour(5).with_burst(3));
        assert_eq!(bursty.to_string().parse::<Rate>(), Ok(bursty));
        assert_eq!((rate.token_weight(), rate.bucket_length()), (1, 2));
        let high = Rate::per_sec(20_000);
        assert_eq!((high.token_weight(), high.capacity(), high.bucket_length()), (40, 2000, 50));
    }

    #[test]
    fn bad_rates_say_why() {
        for (bad, why) in [
            ("abc/s", "not a whole number"),
            ("100", "no `/`"),
            ("0/s", "between 1"),
            ("10/d", "unit"),
            ("10/s;burst=x", "burst is not"),
            ("10/s;max=3", "only `burst"),
        ] {
            let error = bad.parse::<Rate>().expect_err(bad).to_string();
            assert!(error.contains(why) && error.contains(bad), "{bad}: {error}");
        }
    }
}
