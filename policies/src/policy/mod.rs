//! The policy file operators edit: which streams to scale, when to split and merge, how fast, and
//! which consumer groups must drain first.
//!
//! The format is versioned (`apiVersion`, `kind`) and strict: unknown keys are errors. Names are
//! camelCase, durations carry units (`5m`), and the rate-limit block reuses the Kubernetes HPA
//! `behavior` vocabulary (`stabilizationWindow`, `selectPolicy`, `policies` of type
//! `Shards`/`Percent` per `period`). Every default lives in [`defaults`], every bound on a duration
//! in [`limits`].

use crate::duration::HumanDuration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub mod defaults;
pub mod limits;

/// A shardctl policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "shardctl ScalingPolicy")]
pub struct PolicyFile {
    /// Format version: `shardctl.io/v1alpha1`.
    pub api_version: ApiVersion,
    /// Always `ScalingPolicy`.
    pub kind: PolicyKind,
    /// An optional name, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// The policy itself.
    pub spec: PolicySpec,
}

/// The supported format versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first version.
    #[serde(rename = "shardctl.io/v1alpha1")]
    V1Alpha1,
}

/// The document kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PolicyKind {
    /// A scaling policy.
    ScalingPolicy,
}

/// Descriptive metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// A name for the policy.
    pub name: String,
}

/// Controller-wide settings and the streams to manage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// How often each stream is evaluated.
    #[serde(default = "eval_interval")]
    pub evaluation_interval: HumanDuration,
    /// The streams shardctl manages.
    pub streams: Vec<StreamPolicy>,
}

fn eval_interval() -> HumanDuration {
    defaults::EVALUATION_INTERVAL
}

/// How one stream is scaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamPolicy {
    /// The Kinesis stream name.
    pub name: String,
    /// The fewest open shards; merges stop here.
    #[serde(default = "min_shards")]
    pub min_shards: u32,
    /// The most open shards; splits stop here.
    #[serde(default = "max_shards")]
    pub max_shards: u32,
    /// Operations started per evaluation at most (they run one after another).
    #[serde(default = "max_ops")]
    pub max_operations_per_cycle: u32,
    /// How far behind real time shard metrics are taken as complete; minutes closer to now are
    /// not evaluated.
    #[serde(default = "metrics_delay")]
    pub metrics_delay: HumanDuration,
    /// Turn on shard-level metrics (`EnableEnhancedMonitoring`) if they are off. Each shard-level
    /// metric is billed as a CloudWatch custom metric.
    #[serde(default)]
    pub enable_shard_metrics: bool,
    /// When and how hot shards are split.
    #[serde(default)]
    pub split: SplitRules,
    /// When and how cold adjacent shards are merged.
    #[serde(default)]
    pub merge: MergeRules,
    /// Scheduled limits: freeze windows and scheduled minimum shard counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<Budget>,
    /// Consumer groups whose lease tables gate resharding: no shard is split or merged while one
    /// of its ancestors is not drained (`SHARD_END`) by every group listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumer_groups: Vec<ConsumerGroup>,
}

fn min_shards() -> u32 {
    defaults::MIN_SHARDS
}
fn max_shards() -> u32 {
    defaults::MAX_SHARDS
}
fn max_ops() -> u32 {
    defaults::MAX_OPERATIONS_PER_CYCLE
}
fn metrics_delay() -> HumanDuration {
    defaults::METRICS_DELAY
}

/// Per-metric utilisation thresholds, in percent of the per-shard write limit (1 MiB/s for
/// `incomingBytes`, 1,000 records/s for `incomingRecords`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Thresholds {
    /// `IncomingBytes` as a percentage of 1 MiB/s.
    pub incoming_bytes: f64,
    /// `IncomingRecords` as a percentage of 1,000 records/s.
    pub incoming_records: f64,
}

/// When a shard is hot and how it is split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SplitRules {
    /// A minute is hot when either metric reaches its threshold.
    #[serde(default = "split_thresholds")]
    pub threshold: Thresholds,
    /// A minute with throttled writes (`WriteProvisionedThroughputExceeded` > 0) counts as hot:
    /// per-minute sums hide sub-minute bursts.
    #[serde(default = "yes")]
    pub throttling_is_hot: bool,
    /// How long a shard must stay hot before it is split (every known minute of the window hot,
    /// at least half of the window known).
    #[serde(default = "split_window")]
    pub stabilization_window: HumanDuration,
    /// Time after the stream's last merge before a split may start.
    #[serde(default = "split_cooldown")]
    pub cooldown: HumanDuration,
    /// Where to split: `trafficWeighted` halves the observed traffic when a key distribution is
    /// known (else the midpoint); `midpoint` halves the hash range.
    #[serde(default)]
    pub split_point: SplitPoint,
    /// How the rate `policies` combine: `Max` (most permissive), `Min`, or `Disabled` (no splits).
    #[serde(default = "select_max")]
    pub select_policy: SelectPolicy,
    /// Rate limits on splits.
    #[serde(default = "defaults::split_rate")]
    pub policies: Vec<RatePolicy>,
}

fn split_thresholds() -> Thresholds {
    Thresholds {
        incoming_bytes: defaults::SPLIT_UTILIZATION,
        incoming_records: defaults::SPLIT_UTILIZATION,
    }
}
fn yes() -> bool {
    true
}
fn split_window() -> HumanDuration {
    defaults::SPLIT_WINDOW
}
fn split_cooldown() -> HumanDuration {
    defaults::SPLIT_COOLDOWN
}
fn select_max() -> SelectPolicy {
    SelectPolicy::Max
}

impl Default for SplitRules {
    fn default() -> Self {
        SplitRules {
            threshold: split_thresholds(),
            throttling_is_hot: true,
            stabilization_window: split_window(),
            cooldown: split_cooldown(),
            split_point: SplitPoint::default(),
            select_policy: SelectPolicy::Max,
            policies: defaults::split_rate(),
        }
    }
}

/// When an adjacent pair is cold enough to merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MergeRules {
    /// A pair is cold when the two shards together stay at or below these thresholds in every
    /// minute of the window (utilisation of the one merged shard). Must be below the split
    /// threshold, so that a merged shard is not split again.
    #[serde(default = "merge_thresholds")]
    pub threshold: Thresholds,
    /// How long a pair must stay cold, with every minute known for both shards.
    #[serde(default = "merge_window")]
    pub stabilization_window: HumanDuration,
    /// Time after the stream's last split before a merge may start.
    #[serde(default = "merge_cooldown")]
    pub cooldown: HumanDuration,
    /// How the rate `policies` combine: `Max`, `Min`, or `Disabled` (no merges).
    #[serde(default = "select_max")]
    pub select_policy: SelectPolicy,
    /// Rate limits on merges.
    #[serde(default = "defaults::merge_rate")]
    pub policies: Vec<RatePolicy>,
}

fn merge_thresholds() -> Thresholds {
    Thresholds {
        incoming_bytes: defaults::MERGE_UTILIZATION,
        incoming_records: defaults::MERGE_UTILIZATION,
    }
}
fn merge_window() -> HumanDuration {
    defaults::MERGE_WINDOW
}
fn merge_cooldown() -> HumanDuration {
    defaults::MERGE_COOLDOWN
}

impl Default for MergeRules {
    fn default() -> Self {
        MergeRules {
            threshold: merge_thresholds(),
            stabilization_window: merge_window(),
            cooldown: merge_cooldown(),
            select_policy: SelectPolicy::Max,
            policies: defaults::merge_rate(),
        }
    }
}

/// Where a hot shard is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SplitPoint {
    /// Halve the hash key range.
    Midpoint,
    /// Halve the observed traffic (midpoint when no key distribution is known).
    #[default]
    TrafficWeighted,
}

/// How several rate policies combine, as in the HPA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectPolicy {
    /// The policy that allows the most changes.
    Max,
    /// The policy that allows the fewest changes.
    Min,
    /// No changes in this direction at all.
    Disabled,
}

/// A rate limit: at most `value` shards (or `value` percent of the shard count at the start of
/// the period) added by splits, or removed by merges, per `period`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RatePolicy {
    /// `Shards` or `Percent`.
    #[serde(rename = "type")]
    pub kind: RatePolicyKind,
    /// The number of shards, or the percentage.
    pub value: u32,
    /// The rolling period.
    pub period: HumanDuration,
}

/// The unit of a rate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RatePolicyKind {
    /// An absolute number of shards.
    Shards,
    /// A percentage of the open shards at the start of the period (rounded up).
    Percent,
}

/// A scheduled limit, in the style of Karpenter's disruption budgets: active from each time the
/// cron `schedule` fires (UTC) for `duration`, or always when both are omitted. When several are
/// active the strictest wins: the lowest `splits` and `merges`, the highest `minShards`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    /// A name used in reasons, e.g. `business-hours-freeze`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Standard 5-field cron (optionally with seconds first), evaluated in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<CronSchedule>,
    /// How long the budget stays active after each firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// At most this many splits per evaluation while active (0 freezes splits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<u32>,
    /// At most this many merges per evaluation while active (0 freezes merges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merges: Option<u32>,
    /// Keep at least this many open shards while active: the hottest shards are split to reach
    /// it (scheduled pre-scaling), at the pace the split rate policies allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_shards: Option<u32>,
}

impl Budget {
    /// A label for reasons: the name, or the schedule.
    pub fn label(&self) -> String {
        match (&self.name, &self.schedule) {
            (Some(n), _) => n.clone(),
            (None, Some(s)) => format!("'{s}'"),
            (None, None) => "always".to_string(),
        }
    }
}

/// A consumer group whose lease table gates resharding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumerGroup {
    /// The group's name, used in reasons.
    pub name: String,
    /// The DynamoDB lease table (KCL: the application name).
    pub lease_table: String,
}

/// A parsed cron expression, kept with its text.
#[derive(Clone)]
pub struct CronSchedule {
    text: String,
    cron: croner::Cron,
}

impl CronSchedule {
    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed expression.
    pub fn cron(&self) -> &croner::Cron {
        &self.cron
    }
}

impl FromStr for CronSchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let fields = text.split_whitespace().count();
        if !text.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid cron schedule `{text}`: expected 5 fields (minute hour day-of-month month day-of-week), e.g. `0 22 * * *`"
            ));
        }
        croner::Cron::from_str(text.trim())
            .map(|cron| CronSchedule {
                text: text.trim().to_string(),
                cron,
            })
            .map_err(|e| {
                format!(
                    "invalid cron schedule `{text}`: {e}; expected 5 fields (minute hour day-of-month month day-of-week), e.g. `0 22 * * *`"
                )
            })
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.text)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for CronSchedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for CronSchedule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CronSchedule".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A cron expression in UTC: `minute hour day-of-month month day-of-week` (an optional seconds field may come first), or @hourly/@daily/@weekly/@monthly/@yearly.",
            "examples": ["0 22 * * *", "0 8 * * MON-FRI", "@daily"]
        })
    }
}

impl StreamPolicy {
    /// A policy for `name` with every default.
    pub fn with_defaults(name: impl Into<String>) -> Self {
        StreamPolicy {
            name: name.into(),
            min_shards: defaults::MIN_SHARDS,
            max_shards: defaults::MAX_SHARDS,
            max_operations_per_cycle: defaults::MAX_OPERATIONS_PER_CYCLE,
            metrics_delay: defaults::METRICS_DELAY,
            enable_shard_metrics: false,
            split: SplitRules::default(),
            merge: MergeRules::default(),
            budgets: Vec::new(),
            consumer_groups: Vec::new(),
        }
    }

    /// How many minutes of metrics the planner reads: the longer window plus the delay.
    pub fn lookback(&self) -> HumanDuration {
        let window = self
            .split
            .stabilization_window
            .max(self.merge.stabilization_window);
        HumanDuration(window.0.saturating_add(self.metrics_delay.0))
    }
}

impl PolicyFile {
    /// The policy of stream `name`, if the file manages it.
    pub fn stream(&self, name: &str) -> Option<&StreamPolicy> {
        self.spec.streams.iter().find(|s| s.name == name)
    }
}
