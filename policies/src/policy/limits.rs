//! The range validation allows for every duration of the policy file, in one place.
//!
//! Every duration has an upper bound: humantime reads `1000000y` as readily as `5m`, and an
//! instant that far away cannot be computed. The bounds are set by what the controller can honour
//! and what makes sense for a Kinesis stream, not by arithmetic; the defaults and the example
//! policies sit well inside them. Validation reports a value outside its range with its line and
//! column; the JSON Schema and the policy reference show each range in the field's description.

use super::*;

/// An inclusive range of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// The shortest allowed.
    pub min: HumanDuration,
    /// The longest allowed.
    pub max: HumanDuration,
}

impl DurationRange {
    /// Whether `d` lies in the range.
    pub fn contains(&self, d: HumanDuration) -> bool {
        self.min <= d && d <= self.max
    }
}

impl fmt::Display for DurationRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "between {} and {}", show(self.min), show(self.max))
    }
}

/// A bound in the one unit an operator would write it in (`24h`, `366d`), where humantime
/// would print `1day` or `1year 18h`.
///
/// ```
/// use shardctl_policies::policy::limits::{show, BUDGET_DURATION, COOLDOWN};
/// assert_eq!(show(COOLDOWN.max), "24h");
/// assert_eq!(show(BUDGET_DURATION.max), "366d");
/// ```
pub fn show(d: HumanDuration) -> String {
    let secs = d.0.as_secs();
    if d.0.subsec_nanos() != 0 {
        d.to_string()
    } else if secs >= 2 * 86_400 && secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

const fn range(min: HumanDuration, max: HumanDuration) -> DurationRange {
    DurationRange { min, max }
}

const fn hours(n: u64) -> HumanDuration {
    HumanDuration::secs(n * 3600)
}

/// `evaluationInterval`: 10s to 1h. Faster than 10s only spends API calls (metrics have
/// one-minute resolution). Slower than an hour leaves a hot shard throttling for an hour
/// before it is even looked at, and the liveness probe allows only a few intervals without
/// a pass; budgets wake the loop on time whatever the interval.
pub const EVALUATION_INTERVAL: DurationRange = range(HumanDuration::secs(10), hours(1));
/// `metricsDelay`: 0 to 30m. CloudWatch publishes shard metrics within minutes; a longer
/// delay only makes decisions late.
pub const METRICS_DELAY: DurationRange = range(HumanDuration::secs(0), HumanDuration::mins(30));
/// `stabilizationWindow` (split and merge): 1m to 24h. Metrics have one-minute resolution,
/// and a window is read from CloudWatch every evaluation, so its length is the cost of a cycle.
pub const STABILIZATION_WINDOW: DurationRange = range(HumanDuration::mins(1), hours(24));
/// `cooldown` (split and merge): 0 to 24h. The controller reads the last [`HISTORY`] of
/// operations; a longer cooldown could not be honoured.
pub const COOLDOWN: DurationRange = range(HumanDuration::secs(0), hours(24));
/// Rate policy `period`: 1m to 24h, for the same reason as [`COOLDOWN`].
pub const RATE_PERIOD: DurationRange = range(HumanDuration::mins(1), hours(24));
/// Budget `duration`: 1s to 366d. A window longer than a year outlasts the next firing of
/// even a `@yearly` schedule, so the budget would never end: write it without `schedule` and
/// `duration` instead, which is always active.
pub const BUDGET_DURATION: DurationRange = range(HumanDuration::secs(1), hours(366 * 24));

/// How much history the planner needs: the longest cooldown or rate period. The controller
/// reads this much of its journal every cycle.
pub const HISTORY: HumanDuration = if COOLDOWN.max.0.as_secs() > RATE_PERIOD.max.0.as_secs() {
    COOLDOWN.max
} else {
    RATE_PERIOD.max
};

/// Where each range applies: (schema definition, field, range). The schema generator adds
/// the range to each field's description.
pub const DURATION_FIELDS: [(&str, &str, DurationRange); 8] = [
    ("PolicySpec", "evaluationInterval", EVALUATION_INTERVAL),
    ("StreamPolicy", "metricsDelay", METRICS_DELAY),
    ("SplitRules", "stabilizationWindow", STABILIZATION_WINDOW),
    ("SplitRules", "cooldown", COOLDOWN),
    ("MergeRules", "stabilizationWindow", STABILIZATION_WINDOW),
    ("MergeRules", "cooldown", COOLDOWN),
    ("RatePolicy", "period", RATE_PERIOD),
    ("Budget", "duration", BUDGET_DURATION),
];
