//! Who writes and who reads: the producers' retry behaviour and the consumer applications. Part of
//! a [`crate::traffic::Scenario`], so every strategy sees the same workload.

use serde::Serialize;

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
        if self.queue.len() < self.delay {
            self.queue.resize_with(self.delay, Vec::new);
        }
        self.queue[self.delay - 1].push(item(again));
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

impl Default for Readers {
    /// One polling application.
    fn default() -> Self {
        Readers {
            polling: 1,
            enhanced_fan_out: 0,
        }
    }
}
