//! How did each open shard, and each adjacent pair, look over the policy's windows? Metric
//! minutes are turned into utilisation, judged against the thresholds, and summed up as a
//! [`ShardAssessment`] (split window) or a [`PairHeat`] (merge window).

use super::decision::{MinuteWindow, ShardAssessment, ShardHeat};
use crate::duration::add_minutes_saturating;
use crate::observation::{Observation, SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND};
use crate::policy::StreamPolicy;
use crate::shard_map::Shard;
use chrono::{DateTime, Utc};

/// Per-minute utilisation of one shard, from its raw sums.
#[derive(Clone, Copy)]
struct Minute {
    bytes: Option<f64>,
    records: Option<f64>,
    throttled: Option<f64>,
}

const BYTES_PER_MINUTE: f64 = SHARD_BYTES_PER_SECOND * 60.0;
const RECORDS_PER_MINUTE: f64 = SHARD_RECORDS_PER_SECOND * 60.0;

/// A finite, non-negative datapoint; anything else (NaN, negative) is treated as unknown.
fn sane(v: Option<&Option<f64>>) -> Option<f64> {
    v.copied().flatten().filter(|x| x.is_finite() && *x >= 0.0)
}

fn minute(shard: &Shard, index: i64) -> Minute {
    if index < 0 {
        return Minute {
            bytes: None,
            records: None,
            throttled: None,
        };
    }
    let i = index as usize;
    let m = &shard.metrics;
    Minute {
        bytes: sane(m.incoming_bytes.get(i)).map(|b| b / BYTES_PER_MINUTE * 100.0),
        records: sane(m.incoming_records.get(i)).map(|r| r / RECORDS_PER_MINUTE * 100.0),
        throttled: sane(m.write_provisioned_throughput_exceeded.get(i)),
    }
}

/// A window of whole metric minutes, as indices into the observation's series:
/// `[start, end)`, where minute 0 starts at `metricsStart`.
pub(super) struct Window {
    start: i64,
    end: i64,
}

impl Window {
    /// The number of minutes in the window.
    pub(super) fn minutes(&self) -> u32 {
        u32::try_from(self.end.saturating_sub(self.start)).unwrap_or(u32::MAX)
    }

    /// The minutes of the window that series of `len` minutes can know: the others are unknown
    /// in every series, so skipping them changes nothing, and a window far from the data (an
    /// extreme `now`) costs nothing.
    fn with_data(&self, len: usize) -> std::ops::Range<i64> {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let start = self.start.clamp(0, len);
        start..self.end.clamp(start, len)
    }
}

/// The longest metric series of `shards`.
fn series_len<'a>(shards: impl IntoIterator<Item = &'a Shard>) -> usize {
    shards
        .into_iter()
        .map(|s| {
            let m = &s.metrics;
            m.incoming_bytes
                .len()
                .max(m.incoming_records.len())
                .max(m.write_provisioned_throughput_exceeded.len())
        })
        .max()
        .unwrap_or(0)
}

/// The larger of two optional values; unknown only if both are.
fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Every open shard's assessment over the split window, and every adjacent pair's heat over the
/// merge window (`pairs[i]` is `shards[i]` with `shards[i + 1]`).
pub(super) fn assess_open_shards(
    shards: &[&Shard],
    policy: &StreamPolicy,
    split_w: &Window,
    merge_w: &Window,
) -> (Vec<ShardAssessment>, Vec<PairHeat>) {
    // One pass in key order: each shard is assessed, and paired with its lower neighbour while
    // both are still in cache.
    let mut assessments = Vec::with_capacity(shards.len());
    let mut pair_heats = Vec::with_capacity(shards.len());
    for (i, s) in shards.iter().enumerate() {
        assessments.push(assess(s, policy, split_w));
        if i > 0 {
            pair_heats.push(pair_heat(shards[i - 1], s, policy, merge_w));
        }
    }
    (assessments, pair_heats)
}

/// A shard's own utilisation, for judging single keys and ranking shards: the higher of its two
/// peaks (throttling means it needed more than 100 %); `None` if both are unknown.
pub(super) fn peak_utilization(a: &ShardAssessment) -> Option<f64> {
    max_opt(a.bytes_peak, a.records_peak)
}

fn assess(shard: &Shard, policy: &StreamPolicy, w: &Window) -> ShardAssessment {
    let th = &policy.split.threshold;
    let (mut hot, mut cool, mut throttled_minutes) = (0u32, 0u32, 0u32);
    let (mut bytes_peak, mut records_peak) = (None, None);
    for i in w.with_data(series_len([shard])) {
        let m = minute(shard, i);
        bytes_peak = max_opt(bytes_peak, m.bytes);
        records_peak = max_opt(records_peak, m.records);
        let throttled = m.throttled.is_some_and(|t| t > 0.0);
        throttled_minutes += throttled as u32;
        let is_hot = m.bytes.is_some_and(|b| b >= th.incoming_bytes)
            || m.records.is_some_and(|r| r >= th.incoming_records)
            || (policy.split.throttling_is_hot && throttled);
        if is_hot {
            hot += 1;
        } else if m.bytes.is_some() && m.records.is_some() {
            cool += 1;
        }
    }
    let known = hot + cool;
    let state = if u64::from(known) * 2 < u64::from(w.minutes()) {
        ShardHeat::Unknown
    } else if cool == 0 {
        ShardHeat::Hot
    } else {
        ShardHeat::Normal
    };
    ShardAssessment {
        shard_id: shard.shard_id.clone(),
        hash_key_range: shard.hash_key_range,
        bytes_peak,
        records_peak,
        throttled_minutes,
        known_minutes: known,
        state,
    }
}

/// The combined peaks of a pair over the merge window, or how many minutes were fully known.
pub(super) enum PairHeat {
    Cold { bytes_peak: f64, records_peak: f64 },
    NotCold,
    Incomplete { known: u32 },
}

fn pair_heat(a: &Shard, b: &Shard, policy: &StreamPolicy, w: &Window) -> PairHeat {
    let th = &policy.merge.threshold;
    let (mut bytes_peak, mut records_peak) = (0.0f64, 0.0f64);
    let mut known = 0;
    for i in w.with_data(series_len([a, b])) {
        let (ma, mb) = (minute(a, i), minute(b, i));
        if ma.throttled.is_some_and(|t| t > 0.0) || mb.throttled.is_some_and(|t| t > 0.0) {
            return PairHeat::NotCold;
        }
        // A known value already above the threshold decides, whatever else is missing.
        let bytes = ma.bytes.zip(mb.bytes).map(|(x, y)| x + y);
        let records = ma.records.zip(mb.records).map(|(x, y)| x + y);
        if ma.bytes.is_some_and(|x| x > th.incoming_bytes)
            || mb.bytes.is_some_and(|x| x > th.incoming_bytes)
            || ma.records.is_some_and(|x| x > th.incoming_records)
            || mb.records.is_some_and(|x| x > th.incoming_records)
        {
            return PairHeat::NotCold;
        }
        if let (Some(bytes), Some(records)) = (bytes, records) {
            known += 1;
            bytes_peak = bytes_peak.max(bytes);
            records_peak = records_peak.max(records);
            if bytes > th.incoming_bytes || records > th.incoming_records {
                return PairHeat::NotCold;
            }
        }
    }
    if known < w.minutes() {
        PairHeat::Incomplete { known }
    } else {
        PairHeat::Cold {
            bytes_peak,
            records_peak,
        }
    }
}

/// The split and merge windows: each ends with the last complete minute, the one ending at or
/// before `now - metricsDelay`, and lasts its stabilisation window.
pub(super) fn windows(
    policy: &StreamPolicy,
    obs: &Observation,
    now: DateTime<Utc>,
) -> (Window, Window) {
    let evaluable_until = policy.metrics_delay.before(now);
    let end = (evaluable_until - obs.metrics_start).num_minutes();
    let split_w = window_ending(end, policy.split.stabilization_window.whole_minutes_ceil());
    let merge_w = window_ending(end, policy.merge.stabilization_window.whole_minutes_ceil());
    (split_w, merge_w)
}

fn window_ending(end: i64, length: usize) -> Window {
    Window {
        start: end.saturating_sub(i64::try_from(length).unwrap_or(i64::MAX)),
        end,
    }
}

/// The instants a window covers.
pub(super) fn minute_window(obs: &Observation, w: &Window) -> MinuteWindow {
    MinuteWindow {
        start: add_minutes_saturating(obs.metrics_start, w.start),
        end: add_minutes_saturating(obs.metrics_start, w.end),
    }
}
