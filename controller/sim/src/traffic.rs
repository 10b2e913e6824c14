//! Traffic offered to the simulated stream: many organisations with Zipf-like popularity, diurnal
//! cycles, surges of one organisation, flash crowds, single keys hotter than a shard, or a recorded
//! trace.
//!
//! Traffic is described per minute as rates per hash key bucket (the many light keys, spread
//! evenly inside each of [`BUCKETS`] equal slices of the key space) plus a few heavy keys (single
//! hash keys whose traffic cannot be divided). The world maps both onto shards with a table that
//! changes only on reshard, so the per-second work is a handful of operations per shard.
//!
//! # Trace files
//!
//! `--trace FILE` replays recorded traffic. The file is CSV, one rate per line:
//!
//! ```text
//! # minute,target,records_per_second,bytes_per_second
//! minute,target,records_per_second,bytes_per_second
//! 0,bucket:0/16,420,430080
//! 0,bucket:1/16,380,389120
//! 0,hash:170141183460469231731687303715884105728,650,665600
//! 0,key:org-acme,120,245760
//! 1,bucket:0/16,440,450560
//! ```
//!
//! - `minute`: minutes from the start of the trace (0, 1, 2, ...), in any order.
//! - `target`: `bucket:I/N` is the `I`th of `N` equal slices of the hash key space (`N` between 1
//!   and 1024; traffic spread evenly inside the slice); `key:P` is one partition key `P`, placed
//!   at its MD5 as Kinesis does; `hash:K` is one partition key given by its hash key `K` (the MD5
//!   of the key as a 128-bit decimal number). A single key's traffic cannot be divided by any
//!   split.
//! - rates are per second, averaged over the minute; bytes include the partition key.
//!
//! A target keeps its last rate until a later minute gives it a new one (so a constant stream
//! needs one line per target). Lines starting with `#` and a header line starting with `minute`
//! are skipped. The trace lasts until the end of its last minute. Errors name the file and line.

use anyhow::{Context, Result, bail};
use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardctl_policies::key_sample::hash_key_of;
use shardctl_policies::{HashKey, HashRange};
use std::path::Path;

/// Equal slices of the hash key space that carry the traffic of light keys.
pub const BUCKETS: usize = 1024;

/// Bytes per MiB.
const MIB: f64 = 1024.0 * 1024.0;

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

/// A recorded trace: a step function of rates per target.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Hash keys of the `hash:` targets.
    pub keys: Vec<HashKey>,
    /// Per minute: the full rates (already carried forward).
    pub minutes: Vec<MinuteRates>,
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
}

/// The names of the built-in scenarios.
pub const SCENARIOS: [&str; 5] = [
    "hot-org-surge",
    "diurnal",
    "flash-crowd",
    "night-merge",
    "single-hot-key",
];

fn monday(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, hour, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Records per second that load `shards` shards to `utilisation` (0..1) of their byte limit with
/// records of `record_bytes`.
fn rps_for(shards: usize, utilisation: f64, record_bytes: f64) -> f64 {
    shards as f64 * utilisation * MIB / record_bytes
}

/// A built-in scenario. `seed` places the organisations' keys. Unknown names are an error that
/// lists the known ones.
///
/// Every scenario starts on Monday 2026-11-02 (UTC) and uses organisations as partition keys
/// (20,000 organisations, Zipf exponent 0.8, 2 KiB records, the 32 largest tracked as heavy keys):
///
/// - `hot-org-surge`: 16 shards, a daily cycle peaking near 55 % of the byte limit at 14:00, the
///   nightly billing export doubling traffic 01:45–03:45, and one mid-sized organisation surging
///   by 650 records/s of 1 KiB (about 63 % of a shard) from 10:00 to 14:00.
/// - `diurnal`: 16 shards, a strong daily cycle from 15 % to 90 % of the byte limit (peak 15:00).
/// - `flash-crowd`: 16 shards at a steady 40 %, then the whole stream ×2.5 from 12:00 for 45
///   minutes (3-minute ramp).
/// - `night-merge`: 32 shards provisioned for a daytime peak, starting Monday 18:00; traffic falls
///   to about 5 % per shard at night and comes back in the morning.
/// - `single-hot-key`: 16 shards at 35 %, and one key of 8 KiB records at 1.4 MiB/s (more than a
///   whole shard can take) from 09:00 to 13:00.
pub fn scenario(name: &str, seed: u64) -> Result<Scenario> {
    const RECORD: f64 = 2048.0;
    let orgs = |seed| Synthetic::organisations(20_000, 0.8, 32, RECORD, seed);
    let (initial_shards, start, minutes, surge, description, traffic) = match name {
        "hot-org-surge" => {
            let mut t = orgs(seed);
            t.records_per_second = rps_for(16, 0.55, RECORD);
            t.diurnal = Some(Diurnal {
                low: 0.3,
                high: 1.0,
                peak_hour: 14.0,
            });
            t.events.push(TrafficEvent::StreamFactor {
                start: 105,
                end: 225,
                factor: 2.0,
                ramp: 5,
            });
            // A mid-sized organisation (rank 20) surges; its records are 1 KiB.
            t.heavy[19].record_bytes = 1024.0;
            t.events.push(TrafficEvent::KeySurge {
                key: 19,
                start: 600,
                end: 840,
                records_per_second: 650.0,
                ramp: 2,
            });
            (
                16,
                monday(0),
                24 * 60,
                Some((600, 840)),
                "one organisation surges to ~63% of a shard for 4 h on a 16-shard stream",
                t,
            )
        }
        "diurnal" => {
            let mut t = orgs(seed);
            t.records_per_second = rps_for(16, 0.9, RECORD);
            t.diurnal = Some(Diurnal {
                low: 0.17,
                high: 1.0,
                peak_hour: 15.0,
            });
            (
                16,
                monday(0),
                24 * 60,
                None,
                "a daily cycle from 15% to 90% of capacity on a 16-shard stream",
                t,
            )
        }
        "flash-crowd" => {
            let mut t = orgs(seed);
            t.records_per_second = rps_for(16, 0.4, RECORD);
            t.events.push(TrafficEvent::StreamFactor {
                start: 720,
                end: 765,
                factor: 2.5,
                ramp: 3,
            });
            (
                16,
                monday(0),
                24 * 60,
                Some((720, 765)),
                "the whole stream jumps to 2.5x for 45 minutes at noon",
                t,
            )
        }
        "night-merge" => {
            let mut t = orgs(seed);
            t.records_per_second = rps_for(32, 0.6, RECORD);
            t.diurnal = Some(Diurnal {
                low: 0.08,
                high: 1.0,
                peak_hour: 14.0,
            });
            (
                32,
                monday(18),
                24 * 60,
                None,
                "32 shards sized for the day peak; quiet night from Monday 18:00",
                t,
            )
        }
        "single-hot-key" => {
            let mut t = orgs(seed);
            t.records_per_second = rps_for(16, 0.35, RECORD);
            t.heavy[4].record_bytes = 8192.0;
            t.events.push(TrafficEvent::KeySurge {
                key: 4,
                start: 540,
                end: 780,
                records_per_second: 1.4 * MIB / 8192.0,
                ramp: 2,
            });
            (
                16,
                monday(0),
                24 * 60,
                Some((540, 780)),
                "one key at 1.4 MiB/s, more than any shard can take, for 4 h",
                t,
            )
        }
        other => bail!(
            "unknown scenario `{other}`; built-in scenarios: {}",
            SCENARIOS.join(", ")
        ),
    };
    Ok(Scenario {
        name: name.to_string(),
        description: description.to_string(),
        initial_shards,
        start,
        minutes,
        traffic: TrafficModel::Synthetic(traffic),
        surge,
    })
}

/// Reads a trace file (format in the module docs) into a scenario on `initial_shards` shards.
pub fn read_trace(path: &Path, initial_shards: usize) -> Result<Scenario> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trace {}", path.display()))?;
    let trace = parse_trace(&text, &path.display().to_string())?;
    let minutes = trace.minutes.len() as u64;
    Ok(Scenario {
        name: path
            .file_stem()
            .map_or_else(|| "trace".to_string(), |s| s.to_string_lossy().into_owned()),
        description: format!("recorded traffic from {}", path.display()),
        initial_shards,
        start: monday(0),
        minutes,
        traffic: TrafficModel::Trace(trace),
        surge: None,
    })
}

enum Target {
    Buckets { index: usize, of: usize },
    Key(HashKey),
}

/// Parses trace text; `source` names the file in errors (`file:line: ...`).
pub fn parse_trace(text: &str, source: &str) -> Result<Trace> {
    /// Traces longer than this many minutes (about 31 days) are refused.
    const MAX_MINUTES: u64 = 31 * 24 * 60;
    let mut rows: Vec<(u64, Target, f64, f64)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{source}:{}", n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("minute") {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [minute, target, records, bytes] = fields[..] else {
            bail!(
                "{}: expected 4 fields `minute,target,records_per_second,bytes_per_second`, found {}",
                at(),
                fields.len()
            );
        };
        let minute: u64 = minute
            .parse()
            .with_context(|| format!("{}: minute `{minute}` is not a whole number", at()))?;
        if minute >= MAX_MINUTES {
            bail!("{}: minute {minute} is beyond 31 days", at());
        }
        let rate = |v: &str, what: &str| -> Result<f64> {
            let x: f64 = v
                .parse()
                .with_context(|| format!("{}: {what} `{v}` is not a number", at()))?;
            if !x.is_finite() || x < 0.0 {
                bail!("{}: {what} must be a finite number >= 0, got {v}", at());
            }
            Ok(x)
        };
        let (records, bytes) = (
            rate(records, "records_per_second")?,
            rate(bytes, "bytes_per_second")?,
        );
        let target = if let Some(b) = target.strip_prefix("bucket:") {
            let (i, of) = b.split_once('/').with_context(|| {
                format!("{}: bucket target `{target}` must be `bucket:I/N`", at())
            })?;
            let (index, of): (usize, usize) = (
                i.parse()
                    .with_context(|| format!("{}: bucket index `{i}` is not a number", at()))?,
                of.parse()
                    .with_context(|| format!("{}: bucket count `{of}` is not a number", at()))?,
            );
            if of == 0 || of > BUCKETS || index >= of {
                bail!(
                    "{}: bucket `{target}` needs 0 <= I < N and 1 <= N <= {BUCKETS}",
                    at()
                );
            }
            Target::Buckets { index, of }
        } else if let Some(k) = target.strip_prefix("key:") {
            if k.is_empty() {
                bail!("{}: `key:` needs a partition key", at());
            }
            Target::Key(hash_key_of(k))
        } else if let Some(k) = target.strip_prefix("hash:") {
            Target::Key(k.parse().with_context(|| {
                format!(
                    "{}: hash key `{k}` is not a decimal number in 0..=2^128-1",
                    at()
                )
            })?)
        } else {
            bail!(
                "{}: target `{target}` must be `bucket:I/N`, `key:PARTITIONKEY` or `hash:HASHKEY`",
                at()
            );
        };
        rows.push((minute, target, records, bytes));
    }
    if rows.is_empty() {
        bail!("{source}: the trace has no data lines");
    }
    rows.sort_by_key(|r| r.0);
    let mut keys: Vec<HashKey> = rows
        .iter()
        .filter_map(|r| match r.1 {
            Target::Key(k) => Some(k),
            Target::Buckets { .. } => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let last = rows.last().map_or(0, |r| r.0);
    // Current rate per (trace bucket) and per key, carried forward.
    let mut slices: std::collections::BTreeMap<(usize, usize), (f64, f64)> = Default::default();
    let mut key_rates = vec![(0.0, 0.0); keys.len()];
    let mut minutes = Vec::with_capacity(last as usize + 1);
    let mut i = 0;
    for m in 0..=last {
        while i < rows.len() && rows[i].0 == m {
            match rows[i].1 {
                Target::Buckets { index, of } => {
                    slices.insert((index, of), (rows[i].2, rows[i].3));
                }
                Target::Key(k) => {
                    if let Ok(pos) = keys.binary_search(&k) {
                        key_rates[pos] = (rows[i].2, rows[i].3);
                    }
                }
            }
            i += 1;
        }
        let mut r = MinuteRates {
            bucket_records: vec![0.0; BUCKETS],
            bucket_bytes: vec![0.0; BUCKETS],
            heavy_records: key_rates.iter().map(|k| k.0).collect(),
            heavy_bytes: key_rates.iter().map(|k| k.1).collect(),
        };
        for (&(index, of), &(rec, by)) in &slices {
            // Slice `index` of `of` covers [index/of, (index+1)/of) of the space.
            let (lo, hi) = (
                index as f64 / of as f64 * BUCKETS as f64,
                (index + 1) as f64 / of as f64 * BUCKETS as f64,
            );
            let width = hi - lo;
            let mut b = lo.floor() as usize;
            while b < BUCKETS && (b as f64) < hi {
                let overlap = (hi.min(b as f64 + 1.0) - lo.max(b as f64)).max(0.0) / width;
                r.bucket_records[b] += rec * overlap;
                r.bucket_bytes[b] += by * overlap;
                b += 1;
            }
        }
        minutes.push(r);
    }
    Ok(Trace { keys, minutes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_scenario_builds() {
        for name in SCENARIOS {
            let s = scenario(name, 7).expect("builds");
            let mut r = MinuteRates::default();
            s.traffic.rates(0, s.start, true, &mut r);
            assert!(r.total_records() > 0.0, "{name}");
        }
        assert!(scenario("nope", 1).is_err());
    }

    #[test]
    fn trace_rates_carry_forward_and_spread_over_buckets() {
        let t = parse_trace(
            "minute,target,records_per_second,bytes_per_second\n0,bucket:0/2,100,1000\n0,hash:5,10,20\n2,bucket:0/2,50,500\n",
            "t.csv",
        )
        .expect("parses");
        assert_eq!(t.minutes.len(), 3);
        let total = |m: usize| t.minutes[m].bucket_records.iter().sum::<f64>();
        assert!((total(1) - 100.0).abs() < 1e-9);
        assert!((total(2) - 50.0).abs() < 1e-9);
        assert_eq!(t.minutes[1].bucket_records[BUCKETS - 1], 0.0);
        assert_eq!(t.minutes[2].heavy_records, vec![10.0]);
    }

    #[test]
    fn bad_trace_lines_name_file_and_line() {
        for (text, want) in [
            ("0,bucket:0/2,1\n", "t.csv:1:"),
            ("# c\n0,bucket:3/2,1,1\n", "t.csv:2:"),
            ("0,hash:x,1,1\n", "t.csv:1:"),
            ("0,bucket:0/2,-1,1\n", "t.csv:1:"),
            ("x,bucket:0/2,1,1\n", "t.csv:1:"),
            ("0,shard:1,1,1\n", "t.csv:1:"),
        ] {
            let e = format!("{:#}", parse_trace(text, "t.csv").expect_err(text));
            assert!(e.starts_with(want), "{e}");
        }
        assert!(parse_trace("", "t.csv").is_err());
    }
}
