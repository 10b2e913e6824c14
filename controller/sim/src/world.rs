//! The simulated provisioned stream, stepped one second at a time in virtual time. The backend
//! traits over it are in [`crate::backends`].
//!
//! Longer than most files here by choice: it is one state machine (offered load, per-second
//! limits, resharding, late datapoints, draining consumers) whose invariants hold across all of
//! it; its tests sit beside it.
//!
//! Per second each open shard takes at most 1,000 records and 1 MiB; the rest is throttled and
//! counted. Records above 1 MiB (up to 10 MiB) draw on the shard's write tank of burst capacity
//! ([`crate::workload::WriteTank`]), which ordinary writes share and 1 MiB a second refills. Per-minute sums of what was accepted and throttled become the shard's CloudWatch
//! datapoints, served only once they are older than the simulated CloudWatch delay. `SplitShard`,
//! `MergeShards` and `UpdateShardCount` put the stream in `UPDATING` for a while (calls meanwhile
//! fail with `ResourceInUse`); the new shards take traffic when it ends. A simulated consumer group
//! checkpoints `SHARD_END` on a closed shard a drain lag after it closed.

use crate::traffic::{
    BUCKETS, Burst, MinuteRates, Offered, Scenario, TrafficModel, bucket_of, bucket_start,
};
use crate::workload::{LargeDraws, WriteTank};
use chrono::{DateTime, TimeDelta, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use shardctl_controller::backend::BackendError;
use shardctl_policies::duration::add_saturating;
use shardctl_policies::shard_map::shard_id;
use shardctl_policies::{
    Checkpoint, HashKey, HashRange, MAX_HASH_KEY, Shard, ShardMetrics, ShardState, StreamStatus,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use crate::backends::{MemoryStateStore, SimClock, SimKinesis, SimLeases, SimMetrics};

/// Bytes per MiB.
pub const MIB: f64 = 1024.0 * 1024.0;
/// Records per second one shard takes.
pub const SHARD_RECORDS: u64 = 1000;

/// How the simulated AWS behaves. Defaults follow what AWS documents and what was measured on
/// emulators: reshards take tens of seconds, CloudWatch datapoints arrive minutes late.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldConfig {
    /// The stream name.
    pub stream: String,
    /// How long a `SplitShard` / `MergeShards` keeps the stream `UPDATING` (default 30 s).
    pub reshard_duration: Duration,
    /// Fixed part of an `UpdateShardCount` (default 30 s).
    pub resize_base: Duration,
    /// Added per shard opened or closed by an `UpdateShardCount` (default 3 s).
    pub resize_per_shard: Duration,
    /// How long after a minute ends its datapoint can be read (default 2 min).
    pub cloudwatch_delay: Duration,
    /// How long after a shard closes the consumer group checkpoints `SHARD_END` (default 60 s).
    pub drain_lag: Duration,
    /// `UpdateShardCount` calls allowed per rolling 24 h (10, as AWS).
    pub resize_calls_per_day: usize,
    /// Most open shards per stream (10,000, as AWS).
    pub max_open_shards: usize,
}

impl WorldConfig {
    /// The defaults for stream `stream`.
    pub fn new(stream: impl Into<String>) -> Self {
        WorldConfig {
            stream: stream.into(),
            reshard_duration: Duration::from_secs(30),
            resize_base: Duration::from_secs(30),
            resize_per_shard: Duration::from_secs(3),
            cloudwatch_delay: Duration::from_secs(120),
            drain_lag: Duration::from_secs(60),
            resize_calls_per_day: 10,
            max_open_shards: 10_000,
        }
    }
}

/// One shard of the simulated stream with its per-minute history.
#[derive(Debug, Clone, PartialEq)]
pub struct SimShard {
    /// The shard number (`shardId-%012d`).
    pub number: usize,
    /// Its range.
    pub range: HashRange,
    /// Parent (split) or lower parent (merge).
    pub parent: Option<usize>,
    /// Upper parent of a merge.
    pub adjacent_parent: Option<usize>,
    /// Second it opened.
    pub created: u64,
    /// Second it closed.
    pub closed: Option<u64>,
    /// The minute of `minutes[0]`.
    pub first_minute: u64,
    /// Per minute: the sums of what the shard saw.
    pub minutes: Vec<MinuteSums>,
    /// Its write tank for large records.
    tank: WriteTank,
}

/// Sums over one minute (of a shard, or of the stream).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MinuteSums {
    /// Records offered.
    pub offered_records: u64,
    /// Bytes offered.
    pub offered_bytes: f64,
    /// Records accepted (`IncomingRecords`).
    pub accepted_records: u64,
    /// Bytes accepted (`IncomingBytes`).
    pub accepted_bytes: f64,
    /// Records throttled (`WriteProvisionedThroughputExceeded`).
    pub throttled_records: u64,
    /// Open shards at the end of the minute (stream sums only).
    pub open_shards: usize,
}

impl MinuteSums {
    fn add(&mut self, o: &MinuteSums) {
        self.offered_records += o.offered_records;
        self.offered_bytes += o.offered_bytes;
        self.accepted_records += o.accepted_records;
        self.accepted_bytes += o.accepted_bytes;
        self.throttled_records += o.throttled_records;
    }

    /// Offered load as a share (1.0 = 100 %) of what `shards` shards take in a minute.
    pub fn offered_utilisation(&self, shards: usize) -> f64 {
        let s = shards.max(1) as f64;
        (self.offered_bytes / (60.0 * MIB * s))
            .max(self.offered_records as f64 / (60.0 * SHARD_RECORDS as f64 * s))
    }

    /// Accepted load as a share of what `shards` shards take in a minute.
    pub fn accepted_utilisation(&self, shards: usize) -> f64 {
        let s = shards.max(1) as f64;
        (self.accepted_bytes / (60.0 * MIB * s))
            .max(self.accepted_records as f64 / (60.0 * SHARD_RECORDS as f64 * s))
    }
}

/// A resharding operation, as performed.
#[derive(Debug, Clone, PartialEq)]
pub struct OpEvent {
    /// Second the call was accepted.
    pub at: u64,
    /// Second the stream became `ACTIVE` again.
    pub done: u64,
    /// What it was.
    pub kind: OpKind,
}

/// The kind of a resharding operation.
#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    /// `SplitShard` of the range at the key.
    Split {
        /// The parent's range.
        range: HashRange,
        /// `NewStartingHashKey`.
        key: HashKey,
    },
    /// `MergeShards` into the range.
    Merge {
        /// The merged range.
        range: HashRange,
    },
    /// `UpdateShardCount` from one count to another.
    Resize {
        /// Before.
        from: usize,
        /// After.
        to: usize,
    },
}

#[derive(Debug, Clone)]
enum Pending {
    Split(usize, HashKey),
    Merge(usize, usize),
    Resize(usize),
}

/// Running totals of a simulation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Records offered by producers.
    pub offered_records: u64,
    /// Records accepted.
    pub accepted_records: u64,
    /// Records throttled.
    pub throttled_records: u64,
    /// Bytes accepted.
    pub accepted_bytes: f64,
    /// PUT payload units (25 KiB chunks) of accepted records.
    pub payload_units: f64,
    /// Sum over seconds of open shards.
    pub shard_seconds: u64,
}

/// The simulated stream. Shared behind [`SharedWorld`] by the backend handles.
#[derive(Debug)]
pub struct World {
    cfg: WorldConfig,
    start: DateTime<Utc>,
    traffic: TrafficModel,
    heavy_keys: Vec<HashKey>,
    burst: Burst,
    offered: Offered,
    bucket_size: Vec<f64>,
    heavy_size: Vec<f64>,
    sample_rng: StdRng,
    now: u64,
    shards: Vec<SimShard>,
    pub(crate) open: Vec<usize>,
    pub(crate) status: StreamStatus,
    pending: Option<(u64, Pending)>,
    resize_calls: Vec<u64>,
    table: Vec<Vec<(usize, f64, f64)>>,
    heavy_pos: Vec<usize>,
    rates: MinuteRates,
    rates_minute: Option<u64>,
    /// Stream-level sums per minute.
    pub stream_minutes: Vec<MinuteSums>,
    /// Totals so far.
    pub totals: Totals,
    /// Resharding operations performed.
    pub ops: Vec<OpEvent>,
    /// Throttled records to be offered again: (shard index, records, mean size in bytes).
    retries: crate::workload::Retries<(usize, u64, f64)>,
    /// Records above 1 MiB, drawn per second.
    large: LargeDraws,
    /// Throttled large records to be offered again: (hash key, bytes).
    large_retries: crate::workload::Retries<(HashKey, f64)>,
}

impl World {
    /// A stream of `scenario.initial_shards` even shards at the scenario's start.
    pub fn new(cfg: WorldConfig, scenario: &Scenario, seed: u64) -> Self {
        let heavy_keys = scenario.traffic.heavy_keys();
        let mut w = World {
            cfg,
            start: scenario.start,
            traffic: scenario.traffic.clone(),
            heavy_keys,
            burst: Burst::new(seed),
            offered: Offered::default(),
            bucket_size: vec![0.0; BUCKETS],
            heavy_size: Vec::new(),
            sample_rng: StdRng::seed_from_u64(seed ^ 0x7361_6d70_6c65),
            now: 0,
            shards: Vec::new(),
            open: Vec::new(),
            status: StreamStatus::Active,
            pending: None,
            resize_calls: Vec::new(),
            table: Vec::new(),
            heavy_pos: Vec::new(),
            rates: MinuteRates::default(),
            rates_minute: None,
            stream_minutes: Vec::new(),
            totals: Totals::default(),
            ops: Vec::new(),
            retries: crate::workload::Retries::new(&scenario.producers),
            large: LargeDraws::new(&scenario.large_records, seed),
            large_retries: crate::workload::Retries::new(&scenario.producers),
        };
        for range in even_ranges(scenario.initial_shards.max(1)) {
            w.open_shard(range, None, None);
        }
        w.remap();
        w
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> u64 {
        self.now
    }

    /// The simulated wall clock.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = i64::try_from(self.now)
            .ok()
            .and_then(TimeDelta::try_seconds)
            .unwrap_or(TimeDelta::MAX);
        add_saturating(self.start, elapsed)
    }

    /// When the simulation started.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The stream status.
    pub fn status(&self) -> StreamStatus {
        self.status
    }

    /// Every shard, open and closed, by number.
    pub fn shards(&self) -> &[SimShard] {
        &self.shards
    }

    /// Open shards now.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The configuration.
    pub fn config(&self) -> &WorldConfig {
        &self.cfg
    }

    fn open_shard(&mut self, range: HashRange, parent: Option<usize>, adj: Option<usize>) {
        let number = self.shards.len();
        self.shards.push(SimShard {
            number,
            range,
            parent,
            adjacent_parent: adj,
            created: self.now,
            closed: None,
            first_minute: self.now / 60,
            minutes: Vec::new(),
            tank: WriteTank::FULL,
        });
        self.open.push(number);
    }

    fn close_shard(&mut self, n: usize) {
        self.shards[n].closed = Some(self.now);
        self.open.retain(|&o| o != n);
    }

    /// Rebuilds the bucket table and heavy key positions after the open shards changed.
    fn remap(&mut self) {
        let shards = &self.shards;
        self.open
            .sort_by_key(|&n| shards[n].range.starting_hash_key);
        self.table = self
            .open
            .iter()
            .map(|&n| {
                let r = shards[n].range;
                let bucket_width = (1u128 << 118) as f64;
                (bucket_of(r.starting_hash_key)..=bucket_of(r.ending_hash_key))
                    .map(|b| {
                        let (bs, be) = (
                            bucket_start(b),
                            if b + 1 == BUCKETS {
                                MAX_HASH_KEY
                            } else {
                                bucket_start(b + 1) - 1
                            },
                        );
                        let (lo, hi) = (bs.max(r.starting_hash_key), be.min(r.ending_hash_key));
                        // Where the shard starts and ends inside the bucket: neighbours compute
                        // the same boundary, so their shares of a bucket's records add up.
                        (
                            b,
                            (lo - bs) as f64 / bucket_width,
                            (hi - bs + 1) as f64 / bucket_width,
                        )
                    })
                    .collect()
            })
            .collect();
        self.heavy_pos = self
            .heavy_keys
            .iter()
            .map(|&k| {
                self.open
                    .partition_point(|&n| shards[n].range.ending_hash_key < k)
                    .min(self.open.len().saturating_sub(1))
            })
            .collect();
        self.rates_minute = None;
    }

    fn refresh_rates(&mut self, minute: u64) {
        self.traffic
            .rates(minute, self.start, true, &mut self.rates);
        let size = |b: f64, r: f64| if r > 0.0 { b / r } else { 0.0 };
        for (i, s) in self.bucket_size.iter_mut().enumerate() {
            *s = size(self.rates.bucket_bytes[i], self.rates.bucket_records[i]);
        }
        self.heavy_size = self
            .rates
            .heavy_records
            .iter()
            .zip(&self.rates.heavy_bytes)
            .map(|(&r, &b)| size(b, r))
            .collect();
        self.rates_minute = Some(minute);
    }

    /// Applies a finished reshard.
    fn settle(&mut self) {
        let Some((done, _)) = &self.pending else {
            return;
        };
        if *done > self.now {
            return;
        }
        let Some((_, op)) = self.pending.take() else {
            return;
        };
        match op {
            Pending::Split(n, key) => {
                if let Some((lo, hi)) = self.shards[n].range.split_at(key) {
                    self.close_shard(n);
                    self.open_shard(lo, Some(n), None);
                    self.open_shard(hi, Some(n), None);
                }
            }
            Pending::Merge(a, b) => {
                let (ra, rb) = (self.shards[a].range, self.shards[b].range);
                let (lo, hi) = if ra.starting_hash_key < rb.starting_hash_key {
                    (a, b)
                } else {
                    (b, a)
                };
                if let Some(m) = self.shards[lo].range.merge_with(&self.shards[hi].range) {
                    self.close_shard(lo);
                    self.close_shard(hi);
                    self.open_shard(m, Some(lo), Some(hi));
                }
            }
            Pending::Resize(target) => {
                let old: Vec<(usize, HashRange)> = self
                    .open
                    .iter()
                    .map(|&n| (n, self.shards[n].range))
                    .collect();
                for &(n, _) in &old {
                    self.close_shard(n);
                }
                // Kinesis reaches the new count by splits and merges; as lineage, each new shard
                // names the old shard that held its first key.
                for range in even_ranges(target) {
                    let parent = old
                        .iter()
                        .find(|(_, r)| r.contains(range.starting_hash_key))
                        .map(|&(n, _)| n);
                    self.open_shard(range, parent, None);
                }
            }
        }
        self.status = StreamStatus::Active;
        self.remap();
    }

    /// Runs the world forward to `elapsed` seconds since the start.
    pub fn advance_to(&mut self, elapsed: u64) {
        while self.now < elapsed {
            self.settle();
            self.step_second();
        }
        self.settle();
    }

    /// Runs the world forward by `d` (rounded up to whole seconds).
    pub fn advance(&mut self, d: Duration) {
        let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
        self.advance_to(self.now.saturating_add(secs));
    }

    fn step_second(&mut self) {
        let minute = self.now / 60;
        if self.rates_minute != Some(minute) {
            self.refresh_rates(minute);
        }
        if self.stream_minutes.len() <= minute as usize {
            self.stream_minutes
                .resize(minute as usize + 1, MinuteSums::default());
        }
        self.burst.second(&self.rates, &mut self.offered);
        // Records and bytes offered to each open shard: its share of every bucket it covers,
        // and the heavy keys it holds.
        let mut per_shard: Vec<(u64, f64)> = Vec::with_capacity(self.open.len());
        for cells in &self.table {
            let (mut n, mut bytes) = (0u64, 0.0);
            for &(b, from, to) in cells {
                let records = self.offered.bucket_records[b];
                if records == 0 {
                    continue;
                }
                let r = records as f64;
                let share = (r * to).round() as u64 - (r * from).round() as u64;
                n += share;
                bytes += share as f64 * self.bucket_size[b];
            }
            per_shard.push((n, bytes));
        }
        for (k, &p) in self.heavy_pos.iter().enumerate() {
            let n = self.offered.heavy_records.get(k).copied().unwrap_or(0);
            if let Some(s) = per_shard.get_mut(p) {
                s.0 += n;
                s.1 += n as f64 * self.heavy_size.get(k).copied().unwrap_or(0.0);
            }
        }
        // Records producers send again this second: to the shard they were throttled on, or,
        // if it closed since, to the open shard that holds the start of its range (a retry
        // comes a few seconds after the throttle; a reshard takes longer).
        for (shard, n, size) in self.retries.due() {
            let key = self.shards[shard].range.starting_hash_key;
            let p = self.open.iter().position(|&i| i == shard).or_else(|| {
                self.open
                    .iter()
                    .position(|&i| self.shards[i].range.contains(key))
            });
            if let Some(s) = p.and_then(|p| per_shard.get_mut(p)) {
                s.0 += n;
                s.1 += n as f64 * size;
            }
        }
        // Large records, new and retried, by the position of the open shard holding their key.
        let mut large: Vec<(usize, HashKey, f64)> = Vec::new();
        let shards = &self.shards;
        let open = &self.open;
        let position = |key: HashKey| {
            open.partition_point(|&n| shards[n].range.ending_hash_key < key)
                .min(open.len().saturating_sub(1))
        };
        for (key, bytes) in self
            .large_retries
            .due()
            .into_iter()
            .chain(self.large.second())
        {
            large.push((position(key), key, bytes));
        }
        let mut stream = MinuteSums::default();
        for (p, &(offered, bytes)) in per_shard.iter().enumerate() {
            let mut sums = MinuteSums::default();
            let n = self.open[p];
            // Large records first: each takes the tank's bytes and one of the second's records.
            let mut large_taken = 0u64;
            self.shards[n].tank.refill(MIB);
            for &(_, key, size) in large.iter().filter(|l| l.0 == p) {
                sums.offered_records += 1;
                sums.offered_bytes += size;
                if large_taken < SHARD_RECORDS && self.shards[n].tank.admit(size) {
                    large_taken += 1;
                    sums.accepted_records += 1;
                    sums.accepted_bytes += size;
                    self.totals.payload_units += (size / 25_600.0).ceil();
                } else {
                    sums.throttled_records += 1;
                    let draw = self.large.retry_draw();
                    self.large_retries.later_one(draw, (key, size));
                }
            }
            if offered > 0 {
                let size = bytes / offered as f64;
                let left = self.shards[n].tank.allowance(MIB);
                let cap = (SHARD_RECORDS - large_taken).min((left / size.max(1.0)).floor() as u64);
                let accepted = offered.min(cap);
                self.shards[n].tank.spend(accepted as f64 * size);
                sums.add(&MinuteSums {
                    offered_records: offered,
                    offered_bytes: bytes,
                    accepted_records: accepted,
                    accepted_bytes: accepted as f64 * size,
                    throttled_records: offered - accepted,
                    open_shards: 0,
                });
                self.totals.payload_units += accepted as f64 * (size / 25_600.0).ceil().max(1.0);
                self.retries
                    .later(offered - accepted, |again| (n, again, size));
            }
            let shard = &mut self.shards[n];
            let i = (minute - shard.first_minute) as usize;
            if shard.minutes.len() <= i {
                shard.minutes.resize(i + 1, MinuteSums::default());
            }
            shard.minutes[i].add(&sums);
            stream.add(&sums);
        }
        let m = &mut self.stream_minutes[minute as usize];
        m.add(&stream);
        m.open_shards = self.open.len();
        self.totals.offered_records += stream.offered_records;
        self.totals.accepted_records += stream.accepted_records;
        self.totals.throttled_records += stream.throttled_records;
        self.totals.accepted_bytes += stream.accepted_bytes;
        self.totals.shard_seconds += self.open.len() as u64;
        self.now += 1;
    }

    fn busy(&self, api: &'static str) -> Result<(), BackendError> {
        if self.status == StreamStatus::Active {
            Ok(())
        } else {
            Err(BackendError::ResourceInUse {
                api,
                message: format!("stream {} is {}", self.cfg.stream, self.status),
            })
        }
    }

    pub(crate) fn check_stream(&self, api: &'static str, stream: &str) -> Result<(), BackendError> {
        if stream == self.cfg.stream {
            Ok(())
        } else {
            Err(BackendError::NotFound {
                api,
                message: format!("stream {stream} not found"),
            })
        }
    }

    fn open_by_id(&self, api: &'static str, id: &str) -> Result<usize, BackendError> {
        let n = id
            .strip_prefix("shardId-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < self.shards.len())
            .ok_or_else(|| BackendError::NotFound {
                api,
                message: format!("shard {id} not found"),
            })?;
        if self.shards[n].closed.is_some() {
            return Err(BackendError::Invalid {
                api,
                message: format!("shard {id} is closed"),
            });
        }
        Ok(n)
    }

    fn begin(&mut self, api: &'static str, op: Pending, kind: OpKind, takes: Duration) {
        let done = self.now + takes.as_secs().max(1);
        tracing::debug!(api, at = self.now, done, "simulated reshard accepted");
        self.status = StreamStatus::Updating;
        self.pending = Some((done, op));
        self.ops.push(OpEvent {
            at: self.now,
            done,
            kind,
        });
    }

    /// `SplitShard`.
    pub fn split(&mut self, id: &str, key: HashKey) -> Result<(), BackendError> {
        const API: &str = "SplitShard";
        self.busy(API)?;
        let n = self.open_by_id(API, id)?;
        if self.open.len() >= self.cfg.max_open_shards {
            return Err(BackendError::LimitExceeded {
                api: API,
                message: format!(
                    "stream {} already has {} open shards",
                    self.cfg.stream, self.cfg.max_open_shards
                ),
            });
        }
        let range = self.shards[n].range;
        if !range.is_valid_split_key(key) {
            return Err(BackendError::Invalid {
                api: API,
                message: format!("NewStartingHashKey {key} is not inside shard {id}"),
            });
        }
        let takes = self.cfg.reshard_duration;
        self.begin(
            API,
            Pending::Split(n, key),
            OpKind::Split { range, key },
            takes,
        );
        Ok(())
    }

    /// `MergeShards`.
    pub fn merge(&mut self, a: &str, b: &str) -> Result<(), BackendError> {
        const API: &str = "MergeShards";
        self.busy(API)?;
        let (na, nb) = (self.open_by_id(API, a)?, self.open_by_id(API, b)?);
        let (ra, rb) = (self.shards[na].range, self.shards[nb].range);
        let Some(range) = ra.merge_with(&rb).or_else(|| rb.merge_with(&ra)) else {
            return Err(BackendError::Invalid {
                api: API,
                message: format!("shards {a} and {b} are not adjacent"),
            });
        };
        let takes = self.cfg.reshard_duration;
        self.begin(API, Pending::Merge(na, nb), OpKind::Merge { range }, takes);
        Ok(())
    }

    /// `UpdateShardCount` with `UNIFORM_SCALING`: target within 0.5x..2x of the open shards, at
    /// most `resize_calls_per_day` calls per rolling 24 h.
    pub fn update_shard_count(&mut self, target: usize) -> Result<(), BackendError> {
        const API: &str = "UpdateShardCount";
        self.busy(API)?;
        let n = self.open.len();
        if target == 0 || target > 2 * n || 2 * target < n {
            return Err(BackendError::Invalid {
                api: API,
                message: format!("target {target} is outside 0.5x..2x of {n} shards"),
            });
        }
        if target > self.cfg.max_open_shards {
            return Err(BackendError::LimitExceeded {
                api: API,
                message: format!(
                    "target {target} is above {} shards",
                    self.cfg.max_open_shards
                ),
            });
        }
        let day_ago = self.now.saturating_sub(24 * 3600);
        self.resize_calls.retain(|&t| t > day_ago);
        if self.resize_calls.len() >= self.cfg.resize_calls_per_day {
            return Err(BackendError::LimitExceeded {
                api: API,
                message: "UpdateShardCount called too often in the last 24 h".to_string(),
            });
        }
        self.resize_calls.push(self.now);
        let takes = self.cfg.resize_base + self.cfg.resize_per_shard * (n.abs_diff(target) as u32);
        self.begin(
            API,
            Pending::Resize(target),
            OpKind::Resize {
                from: n,
                to: target,
            },
            takes,
        );
        Ok(())
    }

    /// A sample of up to `limit` records written to open shard `id` now, as (partition key,
    /// size): what a consumer reading the shard's latest records would see.
    pub fn sample(&mut self, id: &str, limit: usize) -> Result<Vec<(String, u64)>, BackendError> {
        let n = self.open_by_id("GetRecords", id)?;
        let minute = self.now / 60;
        if self.rates_minute != Some(minute) {
            self.refresh_rates(minute);
        }
        let range = self.shards[n].range;
        Ok(self
            .traffic
            .sample(range, &self.rates, limit, &mut self.sample_rng))
    }

    /// `ListShards`: every shard, open and closed, with lineage and no metrics.
    pub fn list(&self) -> Vec<Shard> {
        self.shards
            .iter()
            .map(|s| {
                let mut shard = Shard::open(shard_id(s.number), s.range);
                shard.parent_shard_id = s.parent.map(shard_id);
                shard.adjacent_parent_shard_id = s.adjacent_parent.map(shard_id);
                if s.closed.is_some() {
                    shard.state = ShardState::Closed;
                }
                shard
            })
            .collect()
    }

    /// Whether minute `m` (from the start) can be read from CloudWatch now.
    pub fn minute_published(&self, m: u64) -> bool {
        (m + 1) * 60 + self.cfg.cloudwatch_delay.as_secs() <= self.now
    }

    /// Per-minute sums of shard `id` over `minutes` minutes from `start`, as CloudWatch serves
    /// them now: unpublished minutes and minutes the shard did not exist are `None`.
    pub fn shard_series(&self, id: &str, start: DateTime<Utc>, minutes: usize) -> ShardMetrics {
        let shard = id
            .strip_prefix("shardId-")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| self.shards.get(n));
        let first = (start - self.start).num_minutes();
        let mut out = ShardMetrics::default();
        for i in 0..minutes as i64 {
            let m = first + i;
            let v = shard
                .filter(|_| m >= 0 && self.minute_published(m as u64))
                .and_then(|s| {
                    let idx = (m as u64).checked_sub(s.first_minute)? as usize;
                    s.minutes.get(idx)
                });
            out.incoming_bytes.push(v.map(|v| v.accepted_bytes));
            out.incoming_records
                .push(v.map(|v| v.accepted_records as f64));
            out.write_provisioned_throughput_exceeded
                .push(v.map(|v| v.throttled_records as f64));
        }
        out
    }

    /// The consumer group's checkpoints: `SHARD_END` a drain lag after a shard closed; children
    /// wait at `TRIM_HORIZON` until every parent is drained.
    pub fn checkpoints(&self) -> BTreeMap<String, Checkpoint> {
        let lag = self.cfg.drain_lag.as_secs();
        let drained = |n: usize| self.shards[n].closed.is_some_and(|c| c + lag <= self.now);
        self.shards
            .iter()
            .map(|s| {
                let cp = if drained(s.number) {
                    Checkpoint::ShardEnd
                } else if s.parent.into_iter().chain(s.adjacent_parent).all(drained) {
                    Checkpoint::Sequence {
                        sequence_number: format!(
                            "{:020}{:06}",
                            s.number,
                            self.now.saturating_sub(s.created)
                        ),
                        sub_sequence_number: 0,
                    }
                } else {
                    Checkpoint::TrimHorizon
                };
                (shard_id(s.number), cp)
            })
            .collect()
    }
}

/// `n` even ranges over the key space.
pub fn even_ranges(n: usize) -> Vec<HashRange> {
    shardctl_policies::shard_map::even_shards(n.max(1))
        .into_iter()
        .map(|s| s.hash_key_range)
        .collect()
}

/// The world shared by the backend handles.
#[derive(Debug, Clone)]
pub struct SharedWorld(Arc<Mutex<World>>);

impl SharedWorld {
    /// Shares `world`.
    pub fn new(world: World) -> Self {
        SharedWorld(Arc::new(Mutex::new(world)))
    }

    /// Locks the world (a poisoned lock is taken over: the world has no invariants a panic in a
    /// reader could break).
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::scenario;

    fn world() -> World {
        let s = scenario("hot-org-surge", 1).expect("scenario");
        World::new(WorldConfig::new("org-events"), &s, 1)
    }

    #[test]
    fn split_keeps_the_stream_updating_then_opens_two_children() {
        let mut w = world();
        let id = shard_id(0);
        let key = w.shards[0].range.midpoint_split_key().expect("splittable");
        w.split(&id, key).expect("accepted");
        assert_eq!(w.status(), StreamStatus::Updating);
        assert!(matches!(
            w.split(&shard_id(1), key),
            Err(BackendError::ResourceInUse { .. })
        ));
        w.advance(Duration::from_secs(10));
        assert_eq!(w.open_count(), 16);
        w.advance(Duration::from_secs(30));
        assert_eq!(w.status(), StreamStatus::Active);
        assert_eq!(w.open_count(), 17);
        assert!(shardctl_policies::ShardMap::new(&w.list()).is_ok());
        // The consumer drains the parent a lag after it closed.
        assert_ne!(w.checkpoints()[&id], Checkpoint::ShardEnd);
        w.advance(Duration::from_secs(61));
        assert_eq!(w.checkpoints()[&id], Checkpoint::ShardEnd);
    }

    #[test]
    fn metrics_arrive_after_the_cloudwatch_delay() {
        let mut w = world();
        w.advance(Duration::from_secs(150));
        let s = w.shard_series(&shard_id(0), w.start(), 2);
        assert!(
            s.incoming_bytes[0].is_none(),
            "minute 0 ends at 60 s + 120 s delay"
        );
        w.advance(Duration::from_secs(30));
        let s = w.shard_series(&shard_id(0), w.start(), 2);
        assert!(s.incoming_bytes[0].is_some());
        assert!(s.incoming_bytes[1].is_none());
    }

    #[test]
    fn record_samples_come_from_the_shard_and_hash_like_kinesis() {
        let mut w = world();
        let id = shard_id(3);
        let range = w.shards[3].range;
        let sample = w.sample(&id, 500).expect("open shard");
        assert_eq!(sample.len(), 500);
        for (key, size) in &sample {
            let h = shardctl_policies::key_sample::hash_key_of(key);
            assert!(range.contains(h), "{key} hashes outside {range:?}");
            assert!(*size > 2048);
        }
        assert!(w.sample("shardId-000000000099", 5).is_err());
    }

    #[test]
    fn bad_calls_are_rejected_not_panics() {
        let mut w = world();
        assert!(matches!(
            w.split("shardId-999", 5),
            Err(BackendError::NotFound { .. })
        ));
        assert!(matches!(
            w.split("nonsense", 5),
            Err(BackendError::NotFound { .. })
        ));
        assert!(matches!(
            w.split(&shard_id(1), 0),
            Err(BackendError::Invalid { .. })
        ));
        assert!(matches!(
            w.merge(&shard_id(0), &shard_id(2)),
            Err(BackendError::Invalid { .. })
        ));
        assert!(matches!(
            w.update_shard_count(33),
            Err(BackendError::Invalid { .. })
        ));
    }
}
