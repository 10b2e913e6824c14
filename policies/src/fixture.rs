//! Builders for observations that read like specs, for tests, benchmarks, examples and the
//! simulator: `StreamFixture::new("orders", 4, 60, now).hot(1).cold(2)`.

use crate::hash::HashRange;
use crate::observation::{
    Checkpoint, ConsumerGroupState, KeyDistribution, Observation, SHARD_BYTES_PER_SECOND,
    SHARD_RECORDS_PER_SECOND, StreamStatus,
};
use crate::shard_map::{Shard, ShardState, even_shards, shard_id};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeMap;
use std::ops::Range;

/// Builds an [`Observation`] step by step. Shards are addressed by their index in the list of
/// shards (closed ones included), in the order they were created.
#[derive(Debug, Clone)]
pub struct StreamFixture {
    obs: Observation,
    minutes: usize,
}

impl StreamFixture {
    /// A stream of `shards` even, open shards with `minutes` of metrics ending at `now`, every
    /// shard at 50 % of both limits and no throttling.
    pub fn new(name: &str, shards: usize, minutes: usize, now: DateTime<Utc>) -> Self {
        let mut fixture = StreamFixture {
            obs: Observation {
                stream_name: name.to_string(),
                stream_status: StreamStatus::Active,
                observed_at: now,
                metrics_start: now - TimeDelta::minutes(minutes as i64),
                shards: even_shards(shards),
                consumer_groups: Vec::new(),
            },
            minutes,
        };
        for i in 0..shards {
            fixture = fixture.utilization(i, 50.0, 50.0);
        }
        fixture
    }

    /// Sets shard `i` to `bytes` % and `records` % of its limits in every minute.
    pub fn utilization(self, i: usize, bytes: f64, records: f64) -> Self {
        let minutes = 0..self.minutes;
        self.utilization_in(i, minutes, bytes, records)
    }

    /// Sets shard `i` to `bytes` % and `records` % of its limits in the given minutes.
    pub fn utilization_in(
        mut self,
        i: usize,
        minutes: Range<usize>,
        bytes: f64,
        records: f64,
    ) -> Self {
        let n = self.minutes;
        let m = &mut self.obs.shards[i].metrics;
        for series in [
            &mut m.incoming_bytes,
            &mut m.incoming_records,
            &mut m.write_provisioned_throughput_exceeded,
        ] {
            series.resize(n, Some(0.0));
        }
        for t in minutes.filter(|t| *t < n) {
            m.incoming_bytes[t] = Some(bytes / 100.0 * SHARD_BYTES_PER_SECOND * 60.0);
            m.incoming_records[t] = Some(records / 100.0 * SHARD_RECORDS_PER_SECOND * 60.0);
        }
        self
    }

    /// Shard `i` runs at 95 % of its byte limit.
    pub fn hot(self, i: usize) -> Self {
        self.utilization(i, 95.0, 40.0)
    }

    /// Shard `i` runs at 5 % of both limits.
    pub fn cold(self, i: usize) -> Self {
        self.utilization(i, 5.0, 5.0)
    }

    /// Shard `i` reports throttled records in the given minutes.
    pub fn throttled(mut self, i: usize, minutes: Range<usize>, records: f64) -> Self {
        let n = self.minutes;
        let s = &mut self.obs.shards[i]
            .metrics
            .write_provisioned_throughput_exceeded;
        s.resize(n, Some(0.0));
        for t in minutes.filter(|t| *t < n) {
            s[t] = Some(records);
        }
        self
    }

    /// Shard `i` has no datapoints in the given minutes (every metric).
    pub fn missing(mut self, i: usize, minutes: Range<usize>) -> Self {
        let m = &mut self.obs.shards[i].metrics;
        for series in [
            &mut m.incoming_bytes,
            &mut m.incoming_records,
            &mut m.write_provisioned_throughput_exceeded,
        ] {
            for t in minutes.clone() {
                if let Some(v) = series.get_mut(t) {
                    *v = None;
                }
            }
        }
        self
    }

    /// Shard `i` has no metrics at all.
    pub fn no_metrics(mut self, i: usize) -> Self {
        self.obs.shards[i].metrics = Default::default();
        self
    }

    /// Closes shard `i` by splitting it at its midpoint; the children are appended, open, with
    /// the parent's metrics halved.
    pub fn split_existing(mut self, i: usize) -> Self {
        let parent = self.obs.shards[i].clone();
        let key = parent
            .hash_key_range
            .midpoint_split_key()
            .expect("fixture shards are splittable");
        let (lo, hi) = parent.hash_key_range.split_at(key).expect("valid key");
        self.obs.shards[i].state = ShardState::Closed;
        self.obs.shards[i].metrics = Default::default();
        for range in [lo, hi] {
            let mut child = Shard::open(shard_id(self.obs.shards.len()), range);
            child.parent_shard_id = Some(parent.shard_id.clone());
            child.metrics = parent.metrics.clone();
            for series in [
                &mut child.metrics.incoming_bytes,
                &mut child.metrics.incoming_records,
            ] {
                for v in series.iter_mut().flatten() {
                    *v /= 2.0;
                }
            }
            self.obs.shards.push(child);
        }
        self
    }

    /// Attaches a key distribution to shard `i`.
    pub fn key_distribution(mut self, i: usize, dist: KeyDistribution) -> Self {
        self.obs.shards[i].key_distribution = Some(dist);
        self
    }

    /// Sets the stream status.
    pub fn status(mut self, status: StreamStatus) -> Self {
        self.obs.stream_status = status;
        self
    }

    /// Adds a consumer group whose leases have the given checkpoints (by shard index).
    pub fn group(mut self, name: &str, checkpoints: &[(usize, Checkpoint)]) -> Self {
        self.obs.consumer_groups.push(ConsumerGroupState {
            name: name.to_string(),
            lease_table: format!("{name}-leases"),
            error: None,
            checkpoints: checkpoints
                .iter()
                .map(|(i, c)| (self.obs.shards[*i].shard_id.clone(), c.clone()))
                .collect(),
            unreadable: BTreeMap::new(),
            note: None,
        });
        self
    }

    /// The hash key range of shard `i`.
    pub fn range(&self, i: usize) -> HashRange {
        self.obs.shards[i].hash_key_range
    }

    /// The id of shard `i`.
    pub fn id(&self, i: usize) -> String {
        self.obs.shards[i].shard_id.clone()
    }

    /// The finished observation.
    pub fn build(self) -> Observation {
        self.obs
    }
}
