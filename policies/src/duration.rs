//! Durations written with units (`30s`, `5m`, `2h`), as operators write them, and instant
//! arithmetic that never panics.
//!
//! `DateTime + TimeDelta` panics when the sum leaves chrono's range (about ±262,000 years), and
//! humantime happily parses `1000000y`. Every instant computed from input (a policy, a snapshot,
//! an AWS response, the clock) goes through [`add_saturating`] / [`sub_saturating`] or
//! [`HumanDuration::after`] / [`HumanDuration::before`] instead.

use chrono::{DateTime, TimeDelta, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration read and written in humantime form (`90s`, `5m`, `1h 30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// `n` seconds.
    pub const fn secs(n: u64) -> Self {
        HumanDuration(Duration::from_secs(n))
    }

    /// `n` minutes.
    pub const fn mins(n: u64) -> Self {
        HumanDuration(Duration::from_secs(n * 60))
    }

    /// The duration as a `chrono` duration, saturating at [`TimeDelta::MAX`] (about 292 million
    /// years). Do not add the result to an instant with `+`, which panics beyond chrono's range:
    /// use [`HumanDuration::after`] / [`HumanDuration::before`].
    pub fn to_chrono(self) -> TimeDelta {
        TimeDelta::from_std(self.0).unwrap_or(TimeDelta::MAX)
    }

    /// The instant `self` after `t`, saturating at the last instant chrono represents.
    ///
    /// ```
    /// use chrono::{DateTime, Utc};
    /// use shardctl_policies::HumanDuration;
    /// let t: DateTime<Utc> = "2026-11-02T14:00:00Z".parse().unwrap();
    /// assert_eq!(HumanDuration::mins(5).after(t), "2026-11-02T14:05:00Z".parse::<DateTime<Utc>>().unwrap());
    /// let forever = HumanDuration(std::time::Duration::MAX);
    /// assert_eq!(forever.after(t), DateTime::<Utc>::MAX_UTC);
    /// ```
    pub fn after(self, t: DateTime<Utc>) -> DateTime<Utc> {
        add_saturating(t, self.to_chrono())
    }

    /// The instant `self` before `t`, saturating at the first instant chrono represents.
    pub fn before(self, t: DateTime<Utc>) -> DateTime<Utc> {
        sub_saturating(t, self.to_chrono())
    }

    /// Whole minutes, rounded up (the metric resolution is one minute).
    pub fn whole_minutes_ceil(self) -> usize {
        self.0.as_secs().div_ceil(60) as usize
    }
}

/// `t + d`, or the last (first, for a negative `d`) instant chrono represents when the sum lies
/// beyond its range. Time past the year 262,000 is as good as never.
pub fn add_saturating(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(if d < TimeDelta::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// `t - d`, or the first (last, for a negative `d`) instant chrono represents when the difference
/// lies beyond its range.
pub fn sub_saturating(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_sub_signed(d).unwrap_or(if d < TimeDelta::zero() {
        DateTime::<Utc>::MAX_UTC
    } else {
        DateTime::<Utc>::MIN_UTC
    })
}

/// `t + n` minutes, saturating like [`add_saturating`] (also when `n` minutes exceed
/// [`TimeDelta`]'s range).
pub fn add_minutes_saturating(t: DateTime<Utc>, n: i64) -> DateTime<Utc> {
    let d = TimeDelta::try_minutes(n).unwrap_or(if n < 0 {
        TimeDelta::MIN
    } else {
        TimeDelta::MAX
    });
    add_saturating(t, d)
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration `{text}`: {e}; write a number with a unit, e.g. `30s`, `5m`, `2h`"
                ))
            })
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with units, e.g. `30s`, `5m`, `2h`, `1h 30m`.",
            "pattern": "^\\s*([0-9]+\\s*[a-zµ]+\\s*)+$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_bare_numbers() {
        let d: HumanDuration = serde_json::from_str("\"1h 30m\"").expect("duration");
        assert_eq!(d.0, Duration::from_secs(5400));
        let err = serde_json::from_str::<HumanDuration>("\"300\"").expect_err("no unit");
        assert!(err.to_string().contains("e.g. `30s`"), "{err}");
        assert_eq!(HumanDuration::mins(5).to_string(), "5m");
        assert_eq!(HumanDuration::secs(61).whole_minutes_ceil(), 2);
    }

    #[test]
    fn instant_arithmetic_saturates_instead_of_panicking() {
        let (min, max) = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
        let huge = HumanDuration(Duration::MAX);
        assert_eq!(huge.after(min), max);
        assert_eq!(huge.before(max), min);
        assert_eq!(HumanDuration::secs(1).after(max), max);
        assert_eq!(HumanDuration::secs(1).before(min), min);
        assert_eq!(add_saturating(max, TimeDelta::MAX), max);
        assert_eq!(add_saturating(min, TimeDelta::MIN), min);
        assert_eq!(sub_saturating(min, TimeDelta::MAX), min);
        assert_eq!(sub_saturating(max, TimeDelta::MIN), max);
        assert_eq!(add_minutes_saturating(min, i64::MAX), max);
        assert_eq!(add_minutes_saturating(max, i64::MIN), min);
        let t: DateTime<Utc> = "2026-11-02T14:00:00Z".parse().expect("time");
        assert_eq!(
            add_minutes_saturating(t, -60),
            "2026-11-02T13:00:00Z"
                .parse::<DateTime<Utc>>()
                .expect("time")
        );
        assert_eq!(
            HumanDuration::mins(60).before(t),
            add_minutes_saturating(t, -60)
        );
    }
}
