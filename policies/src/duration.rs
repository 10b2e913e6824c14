//! Durations written with units (`30s`, `5m`, `2h`), as operators write them.

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

    /// The duration as a `chrono` duration, saturating far beyond any sensible policy value.
    pub fn to_chrono(self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.0).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// Whole minutes, rounded up (the metric resolution is one minute).
    pub fn whole_minutes_ceil(self) -> usize {
        self.0.as_secs().div_ceil(60) as usize
    }
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
}
