//! Who writes and who reads: the producers' retry behaviour, occasional large records and the
//! consumer applications. Part of a [`crate::traffic::Scenario`], so every strategy sees the same
//! workload.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use shardctl_policies::HashKey;

/// Bytes per MiB.
const MIB: f64 = 1024.0 * 1024.0;

/// How producers treat throttled records.
///
/// With `retry_share` above 0, that share of the records throttled in a second is offered again
/// `retry_delay_secs` later (the KPL and the SDKs retry `ProvisionedThroughputExceeded` with
/// backoff), on top of the traffic of that second: extra load exactly where a shard is hot. A
/// retried record that is throttled again is retried again with the same probability, so a record
/// is retried about `retry_share / (1 - retry_share)` times on average while its shard stays hot.
/// Throttled counts then include every throttled attempt, and offered records include retries.
///
/// In the provisioned world a retried record goes back to the shard it was throttled on (or, if
/// that shard closed meanwhile, to the open shard holding the start of its range); in on-demand,
/// to the stream. The built-in scenarios use the default, no retries; `shardctl simulate
/// --retry-share S --retry-delay D` sets them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Producers {
    /// Share (0..1) of throttled records that producers send again.
    pub retry_share: f64,
    /// Seconds before a throttled record is sent again.
    pub retry_delay_secs: u64,
}

impl Default for Producers {
    /// No retries: every throttled record is dropped (the comparison of record counts is then the
    /// same for every strategy).
    fn default() -> Self {
        Producers {
            retry_share: 0.0,
            retry_delay_secs: 1,
        }
    }
}

impl Producers {
    /// Checks the bounds: a share in 0..=0.95 and a delay of 1 s to 10 min.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=0.95).contains(&self.retry_share) {
            return Err(format!(
                "the retry share must be between 0 and 0.95, not {}",
                self.retry_share
            ));
        }
        if !(1..=600).contains(&self.retry_delay_secs) {
            return Err(format!(
                "the retry delay must be between 1s and 10m, not {}s",
                self.retry_delay_secs
            ));
        }
        Ok(())
    }
}

/// Throttled records waiting for the second producers send them again: the one retry rule of
/// the provisioned world and of on-demand.
#[derive(Debug)]
pub(crate) struct Retries<T> {
    share: f64,
    delay: usize,
    /// By second from now: index 0 is due at the next [`Retries::due`].
    queue: std::collections::VecDeque<Vec<T>>,
}

impl<T> Retries<T> {
    pub(crate) fn new(producers: &Producers) -> Self {
        Retries {
            share: producers.retry_share,
            delay: producers.retry_delay_secs.max(1) as usize,
            queue: std::collections::VecDeque::new(),
        }
    }

    /// What is sent again this second. Call once per simulated second, before [`Retries::later`].
    pub(crate) fn due(&mut self) -> Vec<T> {
        self.queue.pop_front().unwrap_or_default()
    }

    /// Of `throttled` records this second, the share producers send again, `delay` seconds on,
    /// as `item(count)`; nothing when that share rounds to 0.
    pub(crate) fn later(&mut self, throttled: u64, item: impl FnOnce(u64) -> T) {
        let again = (throttled as f64 * self.share).round() as u64;
        if again == 0 {
            return;
        }
        self.push(item(again));
    }

    /// One throttled record, sent again `delay` seconds on if `draw` (uniform in 0..1) falls
    /// within the share: the rule for records counted one by one.
    pub(crate) fn later_one(&mut self, draw: f64, item: T) {
        if draw < self.share {
            self.push(item);
        }
    }

    fn push(&mut self, item: T) {
        if self.queue.len() < self.delay {
            self.queue.resize_with(self.delay, Vec::new);
        }
        self.queue[self.delay - 1].push(item);
    }
}

/// Occasional records larger than 1 MiB, up to the 10 MiB a stream accepts once its
/// `MaxRecordSizeInKiB` is raised (`UpdateMaxRecordSize`).
///
/// AWS documents them as intermittent payloads beside a baseline of records of at most 1 MiB
/// ("keep large records below 2 % of your total traffic"), with each shard's 1 MB/s write limit
/// unchanged: "your stream accommodates large records by temporarily bursting beyond its
/// sustained write throughput, then returning to its baseline rate over time", and "sending large
/// records too frequently reduces available capacity for baseline traffic"
/// (<https://docs.aws.amazon.com/streams/latest/dev/large-records.html>, read 2026-12-04). The
/// simulator models that with a [`WriteTank`] per shard. Large records land on uniformly random
/// hash keys (AWS's advice: spread them with well-distributed partition keys), at a steady
/// average rate with sizes uniform between 1 MiB and `max_mib`; the draws depend only on the
/// seed, so every strategy sees the same large records. The built-in scenarios have none;
/// `shardctl simulate --large-records-per-hour N [--large-record-max-mib M]` adds them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LargeRecords {
    /// Large records per hour across the stream (0 = none).
    pub per_hour: f64,
    /// The largest size in MiB (above 1, at most 10).
    pub max_mib: f64,
}

impl Default for LargeRecords {
    /// None.
    fn default() -> Self {
        LargeRecords {
            per_hour: 0.0,
            max_mib: 10.0,
        }
    }
}

impl LargeRecords {
    /// Checks the bounds: at most one a second on average, sizes above 1 MiB and at most 10 MiB.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=3600.0).contains(&self.per_hour) {
            return Err(format!(
                "large records per hour must be between 0 and 3600, not {}",
                self.per_hour
            ));
        }
        if !(self.max_mib > 1.0 && self.max_mib <= 10.0) {
            return Err(format!(
                "the largest record must be above 1 MiB and at most 10 MiB (Kinesis' limit), not {} MiB",
                self.max_mib
            ));
        }
        Ok(())
    }
}

/// The large records of each second, drawn from their own seeded generator.
#[derive(Debug)]
pub(crate) struct LargeDraws {
    rng: StdRng,
    /// For retry decisions, apart so that what one strategy throttles never changes the draws.
    retry_rng: StdRng,
    chance: f64,
    max_bytes: f64,
}

impl LargeDraws {
    pub(crate) fn new(large: &LargeRecords, seed: u64) -> Self {
        LargeDraws {
            rng: StdRng::seed_from_u64(seed ^ 0x6c61_7267_6530),
            retry_rng: StdRng::seed_from_u64(seed ^ 0x6c61_7267_6531),
            chance: large.per_hour / 3600.0,
            max_bytes: large.max_mib * MIB,
        }
    }

    /// The large records of one second as (hash key, bytes): at most one, with probability
    /// `per_hour / 3600` (a Bernoulli process with the configured mean). Call once per second.
    pub(crate) fn second(&mut self) -> Option<(HashKey, f64)> {
        if self.chance <= 0.0 || self.rng.random::<f64>() >= self.chance {
            return None;
        }
        let key: HashKey = self.rng.random();
        let bytes = MIB + self.rng.random::<f64>() * (self.max_bytes - MIB);
        Some((key, bytes.ceil()))
    }

    /// A uniform draw in 0..1 for deciding whether a throttled large record is sent again.
    pub(crate) fn retry_draw(&mut self) -> f64 {
        self.retry_rng.random()
    }
}

/// A shard's write capacity with large records: the documented "tank" of burst capacity.
///
/// AWS: "think of your stream's write capacity as a tank that refills at a steady rate. When you
/// send a large record, such as a 10 MiB record, the tank is temporarily depleted"; its launch
/// post: "each shard temporarily bursts up to 10MiB/s, eventually averaging out to 1MiB per
/// second", a "capacity tank that refills at 1MiB per second"
/// (<https://aws.amazon.com/blogs/big-data/amazon-kinesis-data-streams-now-supports-10x-larger-record-sizes-simplifying-real-time-data-processing/>).
/// So: the tank holds 10 MiB and gains 1 MiB at the start of every second; a large record is
/// accepted if the tank holds its size and takes it; ordinary records keep the per-second limit
/// of 1 MiB and also take what they write from the tank, so they are throttled only while a large
/// record has left it below a second's worth. A large record on an idle shard costs nothing; on a
/// shard already writing near 1 MiB/s the tank barely refills, and the next large record is
/// throttled. Whether ordinary records may burst beyond 1 MiB/s from a full tank is not
/// documented; the model says no, keeping their limits as before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WriteTank {
    /// Bytes in the tank.
    level: f64,
}

impl WriteTank {
    /// What a full tank holds: the largest record (10 MiB).
    pub(crate) const CAPACITY: f64 = 10.0 * MIB;
    /// A full tank.
    pub(crate) const FULL: WriteTank = WriteTank {
        level: Self::CAPACITY,
    };

    /// Starts a second: the tank gains the shard's `per_second` bytes, up to full.
    pub(crate) fn refill(&mut self, per_second: f64) {
        self.level = (self.level + per_second).min(Self::CAPACITY);
    }

    /// Takes a large record of `bytes` if the tank holds it.
    pub(crate) fn admit(&mut self, bytes: f64) -> bool {
        if bytes <= self.level {
            self.level -= bytes;
            true
        } else {
            false
        }
    }

    /// Bytes ordinary records may write this second: the per-second limit, or less while the
    /// tank is low.
    pub(crate) fn allowance(&self, per_second: f64) -> f64 {
        self.level.min(per_second)
    }

    /// Records that ordinary records wrote `bytes`.
    pub(crate) fn spend(&mut self, bytes: f64) {
        self.level = (self.level - bytes).max(0.0);
    }
}

/// The consumer applications reading the stream: each reads every accepted record once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readers {
    /// Applications with shared throughput (`GetRecords`, 2 MiB/s per shard shared by all).
    pub polling: u32,
    /// Applications with enhanced fan-out (`SubscribeToShard`, 2 MiB/s per shard each).
    pub enhanced_fan_out: u32,
}

impl Readers {
    /// Checks the bounds: at most 5 polling applications (a shard serves 5 `GetRecords` calls a
    /// second across all of them) and 20 enhanced fan-out consumers (the registered consumers a
    /// provisioned or On-demand Standard stream allows; Advantage allows 50, which the comparison
    /// does not use so that every strategy reads alike).
    pub fn validate(&self) -> Result<(), String> {
        if self.polling > 5 {
            return Err(format!(
                "at most 5 polling applications share a shard's 5 GetRecords calls a second, not {}; use enhanced fan-out for more",
                self.polling
            ));
        }
        if self.enhanced_fan_out > 20 {
            return Err(format!(
                "a stream registers at most 20 enhanced fan-out consumers, not {}",
                self.enhanced_fan_out
            ));
        }
        Ok(())
    }
}

impl Default for Readers {
    /// One polling application.
    fn default() -> Self {
        Readers {
            polling: 1,
            enhanced_fan_out: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One second of a shard: refill, the large records, then ordinary bytes; returns what
    /// ordinary records wrote and which large records were taken.
    fn second(tank: &mut WriteTank, large: &[f64], ordinary: f64) -> (f64, Vec<bool>) {
        tank.refill(MIB);
        let taken = large.iter().map(|&b| tank.admit(b)).collect();
        let wrote = ordinary.min(tank.allowance(MIB));
        tank.spend(wrote);
        (wrote, taken)
    }

    #[test]
    fn a_full_size_record_on_a_quiet_shard_costs_one_second_of_ordinary_writes() {
        let mut tank = WriteTank::FULL;
        let half = MIB / 2.0;
        assert_eq!(second(&mut tank, &[], half), (half, vec![]));
        assert_eq!(second(&mut tank, &[10.0 * MIB], half), (0.0, vec![true]));
        // Then the tank refills by the unused half MiB a second, ordinary writes go on.
        for _ in 0..3 {
            assert_eq!(second(&mut tank, &[], half).0, half);
        }
        // 1.5 MiB left, 2.5 MiB after the next refill: a 3 MiB record is throttled; a second
        // later 3.5 MiB, and a 3.2 MiB record fits.
        assert_eq!(second(&mut tank, &[3.0 * MIB], 0.0), (0.0, vec![false]));
        assert!(second(&mut tank, &[3.2 * MIB], 0.0).1[0]);
    }

    #[test]
    fn a_shard_writing_its_full_rate_never_refills_for_a_second_large_record() {
        let mut tank = WriteTank::FULL;
        assert_eq!(second(&mut tank, &[6.0 * MIB], MIB), (MIB, vec![true]));
        for _ in 0..100 {
            assert_eq!(second(&mut tank, &[], MIB).0, MIB);
        }
        assert_eq!(second(&mut tank, &[5.0 * MIB], MIB).1, vec![false]);
        // Ordinary records never write more than the per-second limit from a full tank.
        let mut full = WriteTank::FULL;
        assert_eq!(second(&mut full, &[], 3.0 * MIB).0, MIB);
    }

    #[test]
    fn draws_follow_the_rate_and_the_size_bounds_and_repeat_for_a_seed() {
        let large = LargeRecords {
            per_hour: 360.0,
            max_mib: 4.0,
        };
        let draw = |seed| {
            let mut d = LargeDraws::new(&large, seed);
            (0..36_000).filter_map(|_| d.second()).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        // 10 hours at 360 an hour: 3,600 expected, sd 58.
        assert!((3_300..3_900).contains(&a.len()), "{}", a.len());
        assert!(a.iter().all(|&(_, b)| b > MIB && b <= 4.0 * MIB));
        assert!(
            LargeRecords {
                per_hour: 1.0,
                max_mib: 10.5
            }
            .validate()
            .is_err()
        );
        assert!(
            LargeRecords {
                per_hour: 1.0,
                max_mib: 1.0
            }
            .validate()
            .is_err()
        );
        assert!(
            LargeRecords {
                per_hour: -1.0,
                max_mib: 2.0
            }
            .validate()
            .is_err()
        );
        assert!(large.validate().is_ok());
    }
}
