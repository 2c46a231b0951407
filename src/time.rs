//! Timestamps as the contract defines them: UTC, RFC 3339, microsecond precision.
//!
//! Truncating to microseconds when a timestamp is taken (not when it is printed) makes the value
//! round-trip exactly through the audit log's text form, which the hash chain depends on.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now().trunc_subsecs(6))
    }

    pub fn from_datetime(time: DateTime<Utc>) -> Self {
        Timestamp(time.trunc_subsecs(6))
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// This time plus `by`; a span past the end of the calendar ends at its last instant.
    pub fn after(&self, by: std::time::Duration) -> Timestamp {
        let later = chrono::Duration::from_std(by)
            .ok()
            .and_then(|by| self.0.checked_add_signed(by))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Timestamp::from_datetime(later)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
}

/// Whether `text` is a time in the one spelling killswitch writes,
/// `2026-11-27T09:40:05.123456Z`: exactly that layout, of a date and time that exist (years
/// 0001 to 9999, no leap second). The audit export promises this form for every time it holds.
pub fn is_canonical_text(text: &str) -> bool {
    let b = text.as_bytes();
    let layout = b.len() == 27
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            26 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    let field = |range: std::ops::Range<usize>| text.get(range).and_then(|t| t.parse::<u32>().ok());
    let parts = (
        field(0..4),
        field(5..7),
        field(8..10),
        field(11..13),
        field(14..16),
        field(17..19),
    );
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = parts else {
        return false;
    };
    layout
        && year >= 1
        && i32::try_from(year)
            .ok()
            .and_then(|y| chrono::NaiveDate::from_ymd_opt(y, month, day))
            .is_some()
        && chrono::NaiveTime::from_hms_opt(hour, minute, second).is_some()
}

/// Text that is not an RFC 3339 time; the message quotes it and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an RFC 3339 time: {cause}")]
pub struct NotRfc3339 {
    text: String,
    cause: chrono::ParseError,
}

impl FromStr for Timestamp {
    type Err = NotRfc3339;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp::from_datetime(t.with_timezone(&Utc)))
            .map_err(|cause| NotRfc3339 {
                text: s.to_owned(),
                cause,
            })
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the service reads the time. The system clock in production; tests move a
/// [`ManualClock`] instead of sleeping until a lease or a deadline has passed.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The system's time moved forward by what a test adds, so a lease or a lockout runs out
/// without waiting for it; clones share one shift.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(std::sync::Arc<std::sync::Mutex<std::time::Duration>>);

impl ManualClock {
    /// A clock showing the system's time, until it is moved.
    pub fn starting_now() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let mut shift = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *shift = shift.saturating_add(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let shift = *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Timestamp::now().after(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_adds_and_saturates_at_the_end_of_the_calendar() {
        let t: Timestamp = "2026-11-27T09:00:00.000000Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.after(std::time::Duration::from_millis(1500)).to_string(),
            "2026-11-27T09:00:01.500000Z"
        );
        assert_eq!(
            t.after(std::time::Duration::MAX).as_datetime(),
            DateTime::<Utc>::MAX_UTC.trunc_subsecs(6)
        );
    }

    #[test]
    fn prints_utc_with_six_fractional_digits_and_round_trips() {
        let t = Timestamp::now();
        let text = t.to_string();
        assert!(text.ends_with('Z'), "{text}");
        assert_eq!(text.len(), "2026-11-27T14:42:33.123456Z".len(), "{text}");
        assert_eq!(text.parse::<Timestamp>(), Ok(t));
    }

    #[test]
    fn a_manual_clock_runs_ahead_by_what_its_clones_add() {
        let clock = ManualClock::starting_now();
        let shared = clock.clone();
        let system = Timestamp::now();
        shared.advance(std::time::Duration::from_secs(3600));
        let ahead = clock.now().as_datetime() - system.as_datetime();
        assert!(
            ahead >= chrono::Duration::seconds(3600) && ahead < chrono::Duration::seconds(3660),
            "{ahead}"
        );
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t: Timestamp = "2026-11-27T15:00:00.5+01:00"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.to_string(), "2026-11-27T14:00:00.500000Z");
    }

    #[test]
    fn only_the_one_spelling_of_a_time_that_exists() {
        assert!(is_canonical_text("2026-11-27T09:40:05.123456Z"));
        assert!(is_canonical_text("2028-02-29T23:59:59.999999Z"));
        assert!(is_canonical_text(&super::Timestamp::now().to_string()));
        for other in [
            "2026-11-27T09:40:05Z",
            "2026-11-27T09:40:05.123Z",
            "2026-11-27T09:40:05.123456+00:00",
            "2026-11-27t09:40:05.123456z",
            "2026-11-27 09:40:05.123456Z",
            "2026-02-30T09:40:05.123456Z",
            "2026-12-31T23:59:60.000000Z",
            "0000-01-01T00:00:00.000000Z",
            "2026-11-27T24:00:00.000000Z",
            "+026-11-27T09:40:05.123456Z",
        ] {
            assert!(!is_canonical_text(other), "{other}");
        }
    }
}
