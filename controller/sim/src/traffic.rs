//! Traffic offered to the simulated stream: many organisations with Zipf-like popularity, diurnal
//! cycles, surges of one organisation, flash crowds, single keys hotter than a shard, or a recorded
//! trace.
//!
//! Traffic is described per minute as rates per hash key bucket (the many light keys, spread
//! evenly inside each of [`BUCKETS`] equal slices of the key space) plus a few heavy keys (single
//! hash keys whose traffic cannot be divided). The world maps both onto shards with a table that
//! changes only on reshard, so the per-second work is a handful of operations per shard.
//!
//! Recorded traffic (`--trace FILE`) is read by [`crate::trace`].

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardctl_policies::key_sample::hash_key_of;
use shardctl_policies::{HashKey, HashRange};

pub use crate::scenarios::{SCENARIOS, scenario};
pub use crate::trace::{Trace, parse_trace, read_trace};
pub use crate::workload::{LargeRecords, Producers, Readers};

/// Equal slices of the hash key space that carry the traffic of light keys.
pub const BUCKETS: usize = 1024;

/// Bytes per MiB.
pub(crate) const MIB: f64 = 1024.0 * 1024.0;

/// The first hash key of bucket `i`.
pub fn bucket_start(i: usize) -> HashKey {
    (i as u128) << 118
}

/// The bucket a hash key falls in.
pub fn bucket_of(key: HashKey) -> usize {
    (key >> 118) as usize
}

/// Traffic of one minute: records and bytes per second per bucket and per heavy key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinuteRates {
    /// Records per second of light keys, per bucket ([`BUCKETS`] entries).
    pub bucket_records: Vec<f64>,
    /// Bytes per second of light keys, per bucket.
    pub bucket_bytes: Vec<f64>,
    /// Records per second of each heavy key (same order as [`TrafficModel::heavy_keys`]).
    pub heavy_records: Vec<f64>,
    /// Bytes per second of each heavy key.
    pub heavy_bytes: Vec<f64>,
}

impl MinuteRates {
    /// Total records per second.
    pub fn total_records(&self) -> f64 {
        self.bucket_records.iter().sum::<f64>() + self.heavy_records.iter().sum::<f64>()
    }

    /// Total bytes per second.
    pub fn total_bytes(&self) -> f64 {
        self.bucket_bytes.iter().sum::<f64>() + self.heavy_bytes.iter().sum::<f64>()
    }
}

/// A heavy key of a synthetic model: one organisation big enough to track on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct HeavyKey {
    /// The partition key, for reports.
    pub name: String,
    /// Its hash key.
    pub hash_key: HashKey,
    /// Its share of the base traffic.
    pub weight: f64,
    /// Average record size in bytes.
    pub record_bytes: f64,
}

/// One of the many light partition keys of a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct LightKey {
    /// The partition key.
    pub name: String,
    /// Its hash key (MD5 of the name).
    pub hash_key: HashKey,
    /// Its share of the base traffic.
    pub weight: f64,
}

/// A change to the base traffic during part of the run.
#[derive(Debug, Clone, PartialEq)]
pub enum TrafficEvent {
    /// One heavy key gains extra traffic (an organisation's surge, or a single hot key).
    KeySurge {
        /// Index into the heavy keys.
        key: usize,
        /// First minute.
        start: u64,
        /// End minute (exclusive).
        end: u64,
        /// Extra records per second at full strength.
        records_per_second: f64,
        /// Minutes to ramp up to full strength.
        ramp: u64,
    },
    /// The whole stream's traffic is multiplied (flash crowd, nightly export).
    StreamFactor {
        /// First minute.
        start: u64,
        /// End minute (exclusive).
        end: u64,
        /// Multiplier at full strength.
        factor: f64,
        /// Minutes to ramp up (and down) to full strength.
        ramp: u64,
    },
}

impl TrafficEvent {
    /// The event's window in minutes.
    pub fn window(&self) -> (u64, u64) {
        match *self {
            TrafficEvent::KeySurge { start, end, .. }
            | TrafficEvent::StreamFactor { start, end, .. } => (start, end),
        }
    }

    fn strength(&self, minute: u64) -> f64 {
        let (start, end, ramp) = match *self {
            TrafficEvent::KeySurge {
                start, end, ramp, ..
            }
            | TrafficEvent::StreamFactor {
                start, end, ramp, ..
            } => (start, end, ramp),
        };
        if minute < start || minute >= end {
            return 0.0;
        }
        let up = ((minute - start + 1) as f64 / (ramp.max(1)) as f64).min(1.0);
        let down = ((end - minute) as f64 / (ramp.max(1)) as f64).min(1.0);
        up.min(down)
    }
}

/// A daily cycle: the base traffic times a factor between `low` and `high`, highest at
/// `peak_hour` (UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diurnal {
    /// Factor at the trough.
    pub low: f64,
    /// Factor at the peak.
    pub high: f64,
    /// Hour of the peak (UTC, fractional).
    pub peak_hour: f64,
}

impl Diurnal {
    fn factor(&self, at: DateTime<Utc>) -> f64 {
        use chrono::Timelike;
        let h = at.hour() as f64 + at.minute() as f64 / 60.0;
        let phase = (h - self.peak_hour) / 24.0 * std::f64::consts::TAU;
        self.low + (self.high - self.low) * (1.0 + phase.cos()) / 2.0
    }
}

/// Organisations as partition keys: `orgs` keys with Zipf popularity (`weight ∝ 1 / rank^s`),
/// the `heavy` most popular tracked individually, the rest spread over buckets by their hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    /// Records per second of the whole stream at factor 1.
    pub records_per_second: f64,
    /// Average record size of the light keys.
    pub record_bytes: f64,
    /// Bucket weights (sum 1 together with heavy key weights).
    pub bucket_weight: Vec<f64>,
    /// The light keys behind the buckets, by hash key (for record samples).
    pub light: Vec<LightKey>,
    /// Heavy keys.
    pub heavy: Vec<HeavyKey>,
    /// The daily cycle, if any.
    pub diurnal: Option<Diurnal>,
    /// Surges and crowds.
    pub events: Vec<TrafficEvent>,
}

impl Synthetic {
    /// `orgs` organisations with Zipf exponent `s`, hashed with a seeded generator (as MD5 would
    /// scatter them), the top `heavy` tracked as heavy keys.
    pub fn organisations(orgs: usize, s: f64, heavy: usize, record_bytes: f64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6f72_6773);
        let weights: Vec<f64> = (1..=orgs.max(1)).map(|r| (r as f64).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        let mut bucket_weight = vec![0.0; BUCKETS];
        let mut heavy_keys = Vec::new();
        let mut light = Vec::with_capacity(orgs.saturating_sub(heavy));
        for (rank, w) in weights.iter().enumerate() {
            // The partition key; Kinesis places it at the MD5 of the key.
            let name = format!("org-{:08x}", rng.random::<u32>());
            let key = hash_key_of(&name);
            let w = w / total;
            if rank < heavy {
                heavy_keys.push(HeavyKey {
                    name,
                    hash_key: key,
                    weight: w,
                    record_bytes,
                });
            } else {
                bucket_weight[bucket_of(key)] += w;
                light.push(LightKey {
                    name,
                    hash_key: key,
                    weight: w,
                });
            }
        }
        light.sort_by_key(|k| k.hash_key);
        Synthetic {
            records_per_second: 0.0,
            record_bytes,
            bucket_weight,
            light,
            heavy: heavy_keys,
            diurnal: None,
            events: Vec::new(),
        }
    }
}

/// Where the traffic comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TrafficModel {
    /// A generated model.
    Synthetic(Synthetic),
    /// A recorded trace.
    Trace(Trace),
}

impl TrafficModel {
    /// The hash keys of the heavy keys, in the order of [`MinuteRates::heavy_records`].
    pub fn heavy_keys(&self) -> Vec<HashKey> {
        match self {
            TrafficModel::Synthetic(s) => s.heavy.iter().map(|k| k.hash_key).collect(),
            TrafficModel::Trace(t) => t.keys.clone(),
        }
    }

    /// Fills `out` with the rates of minute `minute` (from the start, at `start`). `events`
    /// false leaves surges and crowds out (the on-demand model's "yesterday").
    pub fn rates(&self, minute: u64, start: DateTime<Utc>, events: bool, out: &mut MinuteRates) {
        out.bucket_records.resize(BUCKETS, 0.0);
        out.bucket_bytes.resize(BUCKETS, 0.0);
        match self {
            TrafficModel::Trace(t) => {
                let m = t
                    .minutes
                    .get(minute as usize)
                    .or(t.minutes.last())
                    .cloned()
                    .unwrap_or_default();
                out.bucket_records.copy_from_slice(&pad(&m.bucket_records));
                out.bucket_bytes.copy_from_slice(&pad(&m.bucket_bytes));
                out.heavy_records.clone_from(&m.heavy_records);
                out.heavy_bytes.clone_from(&m.heavy_bytes);
                out.heavy_records.resize(t.keys.len(), 0.0);
                out.heavy_bytes.resize(t.keys.len(), 0.0);
            }
            TrafficModel::Synthetic(s) => {
                let at = start + chrono::TimeDelta::minutes(minute as i64);
                let mut factor = s.diurnal.map_or(1.0, |d| d.factor(at));
                if events {
                    for e in &s.events {
                        if let TrafficEvent::StreamFactor { factor: f, .. } = e {
                            factor *= 1.0 + (f - 1.0) * e.strength(minute);
                        }
                    }
                }
                let rps = s.records_per_second * factor;
                for (i, w) in s.bucket_weight.iter().enumerate() {
                    out.bucket_records[i] = rps * w;
                    out.bucket_bytes[i] = rps * w * s.record_bytes;
                }
                out.heavy_records.clear();
                out.heavy_bytes.clear();
                for k in &s.heavy {
                    out.heavy_records.push(rps * k.weight);
                    out.heavy_bytes.push(rps * k.weight * k.record_bytes);
                }
                if events {
                    for e in &s.events {
                        if let TrafficEvent::KeySurge {
                            key,
                            records_per_second,
                            ..
                        } = *e
                        {
                            let extra = records_per_second * e.strength(minute);
                            if let (Some(r), Some(b), Some(k)) = (
                                out.heavy_records.get_mut(key),
                                out.heavy_bytes.get_mut(key),
                                s.heavy.get(key),
                            ) {
                                *r += extra;
                                *b += extra * k.record_bytes;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl TrafficModel {
    /// `limit` records drawn from the traffic of `range` at the given minute `rates`, as
    /// (partition key, size in bytes including the key). Traces name hash keys, not partition
    /// keys, so they cannot be sampled (empty: the split falls back to the midpoint).
    pub fn sample(
        &self,
        range: HashRange,
        rates: &MinuteRates,
        limit: usize,
        rng: &mut StdRng,
    ) -> Vec<(String, u64)> {
        let TrafficModel::Synthetic(s) = self else {
            return Vec::new();
        };
        let light_weight: f64 = s.bucket_weight.iter().sum();
        let light_now: f64 = rates.bucket_records.iter().sum();
        let scale = if light_weight > 0.0 {
            light_now / light_weight
        } else {
            0.0
        };
        let lo = s
            .light
            .partition_point(|k| k.hash_key < range.starting_hash_key);
        let hi = s
            .light
            .partition_point(|k| k.hash_key <= range.ending_hash_key);
        let mut keys: Vec<(&str, f64)> = s.light[lo..hi.max(lo)]
            .iter()
            .map(|k| (k.name.as_str(), s.record_bytes))
            .collect();
        let mut cumulative: Vec<f64> = Vec::with_capacity(keys.len() + s.heavy.len());
        let mut total = 0.0;
        for k in &s.light[lo..hi.max(lo)] {
            total += k.weight * scale;
            cumulative.push(total);
        }
        for (i, k) in s.heavy.iter().enumerate() {
            if range.contains(k.hash_key) {
                total += rates.heavy_records.get(i).copied().unwrap_or(0.0);
                cumulative.push(total);
                keys.push((k.name.as_str(), k.record_bytes));
            }
        }
        if total.is_nan() || total <= 0.0 || keys.is_empty() {
            return Vec::new();
        }
        (0..limit)
            .map(|_| {
                let x = rng.random::<f64>() * total;
                let i = cumulative.partition_point(|&c| c <= x).min(keys.len() - 1);
                let (name, size) = keys[i];
                (name.to_string(), (size + name.len() as f64) as u64)
            })
            .collect()
    }
}

/// Records offered in one second: per bucket and per heavy key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Offered {
    /// Records per bucket.
    pub bucket_records: Vec<u64>,
    /// Records per heavy key.
    pub heavy_records: Vec<u64>,
}

/// Turns a minute's rates into each second's records: a stream-wide burst factor (coefficient
/// of variation `common_cv`), times an independent factor per bucket (`bucket_cv`) and per heavy
/// key (`key_cv`), rounded stochastically to whole records.
///
/// The draws depend only on the seed and the rates, never on the shards, so every strategy sees
/// exactly the same records. A shard of 64 buckets sees bursts of about 7 % around its minute
/// rate, narrower shards more: sub-minute bursts that per-minute sums hide.
#[derive(Debug, Clone)]
pub struct Burst {
    state: u64,
    /// Stream-wide per-second variation (default 0.05).
    pub common_cv: f64,
    /// Per-bucket per-second variation (default 0.4).
    pub bucket_cv: f64,
    /// Per-heavy-key per-second variation (default 0.15).
    pub key_cv: f64,
}

impl Burst {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Burst {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            common_cv: 0.05,
            bucket_cv: 0.4,
            key_cv: 0.15,
        }
    }

    /// SplitMix64: fast, and the same on every platform.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A factor with mean 1 and coefficient of variation `cv` (Irwin–Hall of three 21-bit
    /// uniforms: bounded, cheap), and a uniform in [0, 1) for rounding.
    fn factor(&mut self, cv: f64) -> (f64, f64) {
        let r = self.next();
        const M: f64 = (1u64 << 21) as f64;
        let u = |shift: u32| ((r >> shift) & ((1 << 21) - 1)) as f64 / M;
        let z = (u(0) + u(21) + u(42) - 1.5) * 2.0;
        (
            (1.0 + cv * z).max(0.0),
            (self.next() >> 11) as f64 / (1u64 << 53) as f64,
        )
    }

    /// Fills `out` with one second of records at `rates`.
    pub fn second(&mut self, rates: &MinuteRates, out: &mut Offered) {
        let (common, _) = self.factor(self.common_cv);
        out.bucket_records.resize(rates.bucket_records.len(), 0);
        for (o, &r) in out.bucket_records.iter_mut().zip(&rates.bucket_records) {
            *o = if r > 0.0 {
                let (f, u) = self.factor(self.bucket_cv);
                let x = r * common * f;
                x.floor() as u64 + u64::from(u < x.fract())
            } else {
                0
            };
        }
        out.heavy_records.resize(rates.heavy_records.len(), 0);
        for (o, &r) in out.heavy_records.iter_mut().zip(&rates.heavy_records) {
            *o = if r > 0.0 {
                let (f, u) = self.factor(self.key_cv);
                let x = r * common * f;
                x.floor() as u64 + u64::from(u < x.fract())
            } else {
                0
            };
        }
    }
}

fn pad(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.resize(BUCKETS, 0.0);
    v
}

/// A named situation to simulate: the stream as provisioned and the traffic it sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The name (`hot-org-surge`, ...).
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Shards at the start (also what static provisioning keeps).
    pub initial_shards: usize,
    /// Simulated start time.
    pub start: DateTime<Utc>,
    /// How long it runs by default, in minutes.
    pub minutes: u64,
    /// The traffic.
    pub traffic: TrafficModel,
    /// The window (minutes) whose relief time is reported, if the scenario has a surge.
    pub surge: Option<(u64, u64)>,
    /// How producers retry throttled records.
    pub producers: Producers,
    /// Records above 1 MiB.
    pub large_records: LargeRecords,
    /// The consumer applications.
    pub readers: Readers,
}
