//! Producer helper: batched `PutRecords` with event ids, retrying only failed records, never
//! reordering the events of one partition key.
//!
//! # Event envelope
//!
//! Each record's data is `b"SCE1"` + the event's 16-byte UUID + the payload. [`event_id`] reads
//! it back; pass it to [`crate::dedup`] as the id extractor.
//!
//! # Ordering
//!
//! `PutRecords` does not order the records of one request: a failed record may be retried after
//! later records of the same key were written. So each request carries **at most one record per
//! partition key**, and a key's next event is sent only after the previous one was acknowledged.
//! Many keys per request give the throughput; one key alone is sent one record per call.
//!
//! # Aggregation
//!
//! [`Producer::with_aggregation`] lifts the one-record-per-round-trip cap of a single key: the
//! one record a key has in flight becomes a KPL aggregate of its queued events, in order (up to
//! 51,200 bytes, the KPL's default), so a surging key sends a whole aggregate per round trip.
//! Order holds for the same reason as above: a key still has one Kinesis record in flight. The
//! consumers must split aggregates: this library does by default
//! ([`WorkerConfig::deaggregate`](crate::WorkerConfig::deaggregate)), and so does every KCL.
//! A key with one event queued sends it as a plain record.
//!
//! # Large records
//!
//! A stream takes records of up to 1 MiB unless its maximum record size was raised
//! (`UpdateMaxRecordSize`, up to 10 MiB); [`Producer::with_max_record_size_kib`] tells the
//! producer the stream's limit, and an event above it is refused before anything is sent
//! ([`ProduceError::TooLarge`]). A record above 5 MiB goes in a request of its own. Large records
//! draw on the shard's burst capacity; AWS advises keeping them to a small share of the traffic.
//!
//! # Duplicates
//!
//! When a whole call fails (time-out, connection reset), Kinesis may still have written some of
//! its records; they are sent again with the same event ids. That is the producer-retry duplicate
//! that [`crate::dedup`] removes.
//!
//! Over 500 lines by choice: a fifth is the property test of the ordering rule, a quarter
//! documentation; the send queue and the producer are one rule (one record per key in flight).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::{BufMut, Bytes, BytesMut};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::reader::backoff;
use shardctl_kpl::{Aggregator, DEFAULT_MAX_AGGREGATE_BYTES, UserRecord};

const MAGIC: &[u8; 4] = b"SCE1";
const MAX_RECORDS_PER_CALL: usize = 500;
const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
/// The record size every stream takes, in KiB (1 MiB).
const DEFAULT_MAX_RECORD_KIB: u32 = 1024;
/// The largest record size a stream can be raised to, in KiB (10 MiB).
const LARGEST_MAX_RECORD_KIB: u32 = 10 * 1024;

/// Wraps `payload` with `id` in the event envelope.
///
/// ```
/// use shardctl_consumer::producer::{encode_event, event_id};
/// let id = uuid::Uuid::new_v4();
/// let data = encode_event(id, b"hello");
/// assert_eq!(event_id(&data), Some(id));
/// ```
pub fn encode_event(id: Uuid, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(20 + payload.len());
    buf.put_slice(MAGIC);
    buf.put_slice(id.as_bytes());
    buf.put_slice(payload);
    buf.freeze()
}

/// The event id of an enveloped record, `None` if `data` is not an envelope.
///
/// ```
/// use shardctl_consumer::producer::event_id;
/// assert_eq!(event_id(b"plain data"), None);
/// ```
pub fn event_id(data: &[u8]) -> Option<Uuid> {
    let rest = data.strip_prefix(MAGIC)?;
    let bytes: [u8; 16] = rest.get(..16)?.try_into().ok()?;
    Some(Uuid::from_bytes(bytes))
}

/// The payload of an enveloped record (the whole data if it is not an envelope).
///
/// ```
/// use shardctl_consumer::producer::{encode_event, event_payload};
/// let data = encode_event(uuid::Uuid::new_v4(), b"hello");
/// assert_eq!(event_payload(&data), b"hello");
/// ```
pub fn event_payload(data: &[u8]) -> &[u8] {
    match data.strip_prefix(MAGIC) {
        Some(rest) if rest.len() >= 16 => &rest[16..],
        _ => data,
    }
}

/// One event to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Partition key (e.g. the organisation id). Events of one key keep their order.
    pub partition_key: String,
    /// Event id carried in the envelope; stays the same across retries.
    pub id: Uuid,
    /// Application payload.
    pub payload: Bytes,
}

impl Event {
    /// A new event with a random id.
    ///
    /// ```
    /// use shardctl_consumer::producer::Event;
    /// let e = Event::new("org-1", "signup");
    /// assert_eq!(e.partition_key, "org-1");
    /// ```
    pub fn new(partition_key: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            partition_key: partition_key.into(),
            id: Uuid::new_v4(),
            payload: payload.into(),
        }
    }
}

/// Errors of [`Producer::send`].
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// An event is larger than the stream's records may be (1 MiB with its key unless set with
    /// [`Producer::with_max_record_size_kib`]).
    #[error(
        "event {id} is {size} bytes with its key; the stream's records may be {limit} bytes (raise it with UpdateMaxRecordSize and Producer::with_max_record_size_kib, up to 10 MiB)"
    )]
    TooLarge {
        /// Event id.
        id: Uuid,
        /// Size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A maximum record size outside what Kinesis allows (1,024 to 10,240 KiB).
    #[error("a maximum record size of {kib} KiB is outside Kinesis' 1024 to 10240 KiB")]
    MaxRecordSize {
        /// The size asked for, in KiB.
        kib: u32,
    },
    /// The request could not be built (a bug, not a service answer).
    #[error("PutRecords request invalid: {message}")]
    Request {
        /// What is wrong.
        message: String,
    },
    /// Retries were exhausted; `unsent` events (the first of their keys onwards) were not
    /// acknowledged.
    #[error(
        "gave up after {attempts} attempts without progress; {unsent} events unsent: {last_error}"
    )]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Events not acknowledged.
        unsent: usize,
        /// The last failure.
        last_error: String,
    },
}

impl ProduceError {
    /// Fixed label for metrics.
    ///
    /// ```
    /// use shardctl_consumer::producer::ProduceError;
    /// let e = ProduceError::TooLarge { id: uuid::Uuid::nil(), size: 2, limit: 1 };
    /// assert_eq!(e.label(), "too_large");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::MaxRecordSize { .. } => "max_record_size",
            Self::Request { .. } => "request",
            Self::GaveUp { .. } => "gave_up",
        }
    }
}

/// Per-key queues of enveloped events; the pure core of [`Producer::send`].
#[derive(Debug)]
struct SendQueue {
    queues: Vec<VecDeque<(Event, Bytes)>>,
    cursor: usize,
}

impl SendQueue {
    /// One queue per partition key, in order of first appearance.
    fn new(events: Vec<Event>, max_record_bytes: usize) -> Result<Self, ProduceError> {
        let mut queues: Vec<VecDeque<(Event, Bytes)>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for event in events {
            let data = encode_event(event.id, &event.payload);
            let size = data.len() + event.partition_key.len();
            if size > max_record_bytes {
                return Err(ProduceError::TooLarge {
                    id: event.id,
                    size,
                    limit: max_record_bytes,
                });
            }
            let slot = *index.entry(event.partition_key.clone()).or_insert_with(|| {
                queues.push(VecDeque::new());
                queues.len() - 1
            });
            queues[slot].push_back((event, data));
        }
        Ok(Self { queues, cursor: 0 })
    }

    fn pending(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// The next request: one record for each of distinct keys (never two of one key), starting
    /// after the key where the previous request stopped, so no key starves. A record is the
    /// key's head event, or with `aggregate` (an aggregate's byte limit) as many of its queued
    /// events as fit one aggregate.
    fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        aggregate: Option<usize>,
    ) -> Vec<Unit> {
        let n = self.queues.len();
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut last = None;
        for step in 0..n {
            let q = (self.cursor + step) % n;
            let Some(unit) = self.unit(q, aggregate) else {
                continue;
            };
            let size = unit.data.len() + unit.partition_key.len();
            if batch.len() == max_records || (!batch.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            batch.push(unit);
            last = Some(q);
        }
        if let Some(last) = last {
            self.cursor = (last + 1) % n;
        }
        batch
    }

    /// The record queue `q` sends next (see [`SendQueue::next_batch`]).
    fn unit(&self, q: usize, aggregate: Option<usize>) -> Option<Unit> {
        let queue = self.queues.get(q)?;
        let (head, head_data) = queue.front()?;
        let plain = || Unit {
            queue: q,
            count: 1,
            partition_key: head.partition_key.clone(),
            data: head_data.clone(),
        };
        let Some(limit) = aggregate.filter(|_| queue.len() > 1) else {
            return Some(plain());
        };
        let mut aggregator = Aggregator::with_max_bytes(limit);
        let mut count = 0;
        let mut full = None;
        for (event, data) in queue {
            match aggregator.add(UserRecord::new(event.partition_key.clone(), data.clone())) {
                Ok(None) => count += 1,
                // Full: it holds the first `count` events; the event that did not fit waits.
                Ok(Some(finished)) => {
                    full = Some(finished);
                    break;
                }
                // Too large for an aggregate of `limit`: it goes as a record of its own.
                Err(_) => break,
            }
        }
        match full.or_else(|| aggregator.flush()) {
            Some(full) if count > 1 => Some(Unit {
                queue: q,
                count,
                partition_key: full.partition_key,
                data: full.data,
            }),
            _ => Some(plain()),
        }
    }

    /// The record made of the first `count` events of queue `q` was written.
    fn acknowledge(&mut self, q: usize, count: usize) -> Vec<Event> {
        match self.queues.get_mut(q) {
            Some(queue) => queue
                .drain(..count.min(queue.len()))
                .map(|(e, _)| e)
                .collect(),
            None => Vec::new(),
        }
    }
}

/// One Kinesis record of a request: the first `count` events of queue `queue`, as one plain
/// record (`count` 1) or one KPL aggregate.
#[derive(Debug, Clone)]
struct Unit {
    queue: usize,
    count: usize,
    partition_key: String,
    data: Bytes,
}

/// What one [`Producer::send`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    /// `PutRecords` calls made.
    pub calls: u64,
    /// Events acknowledged.
    pub acknowledged: u64,
    /// Kinesis records sent: events, or aggregates of them.
    pub records: u64,
    /// Record sends that failed and were retried.
    pub retried: u64,
}

/// Sends events to a stream.
///
/// ```no_run
/// # async fn demo() -> Result<(), shardctl_consumer::producer::ProduceError> {
/// use shardctl_consumer::producer::{Event, Producer};
/// let config = aws_config::load_from_env().await;
/// let producer = Producer::new(aws_sdk_kinesis::Client::new(&config), "events");
/// let report = producer
///     .send(vec![Event::new("org-1", "a"), Event::new("org-2", "b"), Event::new("org-1", "c")])
///     .await?;
/// assert_eq!(report.acknowledged, 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    client: Client,
    stream: String,
    max_attempts: u32,
    aggregate: Option<usize>,
    max_record_kib: u32,
}

impl Producer {
    /// A producer for `stream`.
    ///
    /// ```no_run
    /// # async fn demo(client: aws_sdk_kinesis::Client) {
    /// let producer = shardctl_consumer::producer::Producer::new(client, "events");
    /// # }
    /// ```
    pub fn new(client: Client, stream: impl Into<String>) -> Self {
        Self {
            client,
            stream: stream.into(),
            max_attempts: 12,
            aggregate: None,
            max_record_kib: DEFAULT_MAX_RECORD_KIB,
        }
    }

    /// Sets the stream's maximum record size in KiB (1,024, the default, to 10,240), as raised
    /// with `UpdateMaxRecordSize`; events up to it (with their keys) are sent, larger ones are
    /// refused. See [Large records](self#large-records).
    ///
    /// ```no_run
    /// # fn demo(p: shardctl_consumer::producer::Producer) -> Result<(), shardctl_consumer::producer::ProduceError> {
    /// let p = p.with_max_record_size_kib(4096)?;
    /// # Ok(()) }
    /// ```
    pub fn with_max_record_size_kib(mut self, kib: u32) -> Result<Self, ProduceError> {
        if !(DEFAULT_MAX_RECORD_KIB..=LARGEST_MAX_RECORD_KIB).contains(&kib) {
            return Err(ProduceError::MaxRecordSize { kib });
        }
        self.max_record_kib = kib;
        Ok(self)
    }

    /// Sends each key's queued events as one KPL aggregate (see [Aggregation](self#aggregation)),
    /// or one record per event (`false`, the default).
    ///
    /// ```no_run
    /// # fn demo(p: shardctl_consumer::producer::Producer) {
    /// let p = p.with_aggregation(true);
    /// # }
    /// ```
    pub fn with_aggregation(mut self, aggregate: bool) -> Self {
        self.aggregate = aggregate.then_some(DEFAULT_MAX_AGGREGATE_BYTES);
        self
    }

    /// Sets how many consecutive attempts without progress are made before giving up.
    ///
    /// ```no_run
    /// # fn demo(p: shardctl_consumer::producer::Producer) {
    /// let p = p.with_max_attempts(3);
    /// # }
    /// ```
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sends `events`; per partition key, in the order given. Returns when every event is
    /// acknowledged.
    ///
    /// ```no_run
    /// # async fn demo(p: shardctl_consumer::producer::Producer) -> Result<(), shardctl_consumer::producer::ProduceError> {
    /// use shardctl_consumer::producer::Event;
    /// p.send((0..10).map(|i| Event::new("org-7", format!("event {i}"))).collect()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, events: Vec<Event>) -> Result<SendReport, ProduceError> {
        let mut queue = SendQueue::new(events, self.max_record_kib as usize * 1024)?;
        let mut report = SendReport::default();
        let mut stalled = 0u32;
        let mut last_error = String::new();
        loop {
            if queue.pending() == 0 {
                return Ok(report);
            }
            let batch = queue.next_batch(MAX_RECORDS_PER_CALL, MAX_BYTES_PER_CALL, self.aggregate);
            // `batch[i]` and `entries[i]` must stay aligned: results come back by position.
            let mut entries: Vec<PutRecordsRequestEntry> = Vec::with_capacity(batch.len());
            for unit in &batch {
                let entry = PutRecordsRequestEntry::builder()
                    .partition_key(unit.partition_key.clone())
                    .data(Blob::new(unit.data.to_vec()))
                    .build()
                    .map_err(|e| ProduceError::Request {
                        message: e.to_string(),
                    })?;
                entries.push(entry);
            }
            report.calls += 1;
            let progress = match self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    let mut acked = 0;
                    let mut failed = 0;
                    for (unit, result) in batch.iter().zip(out.records()) {
                        match result.error_code() {
                            None => {
                                acked += queue.acknowledge(unit.queue, unit.count).len() as u64;
                                report.records += 1;
                            }
                            Some(code) => {
                                failed += 1;
                                report.retried += 1;
                                last_error = format!(
                                    "{code}: {}",
                                    result.error_message().unwrap_or_default()
                                );
                            }
                        }
                    }
                    report.acknowledged += acked;
                    debug!(stream = %self.stream, sent = batch.len(), acked, "PutRecords done");
                    if acked > 0 && failed > 0 {
                        // Partial failures are usually throttling: give the shards a moment.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    acked > 0
                }
                Err(e) => {
                    report.retried += batch.len() as u64;
                    last_error = DisplayErrorContext(&e).to_string();
                    warn!(stream = %self.stream, error = %last_error, "PutRecords failed; retrying the batch");
                    false
                }
            };
            if progress {
                stalled = 0;
            } else {
                stalled += 1;
                if stalled >= self.max_attempts {
                    return Err(ProduceError::GaveUp {
                        attempts: stalled,
                        unsent: queue.pending(),
                        last_error,
                    });
                }
                tokio::time::sleep(backoff(
                    stalled,
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                ))
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    proptest! {
        #[test]
        fn envelope_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..256), id in any::<u128>()) {
            let id = Uuid::from_u128(id);
            let data = encode_event(id, &payload);
            prop_assert_eq!(event_id(&data), Some(id));
            prop_assert_eq!(event_payload(&data), &payload[..]);
        }
    }

    proptest! {
        /// Whatever records fail, each request holds at most one record per key, only failed
        /// records are sent again, every key's events are written in their original order, and
        /// an aggregate holds its key's next events in order.
        #[test]
        fn retries_only_failed_records_and_keeps_per_key_order(
            per_key in proptest::collection::vec(0usize..15, 1..6),
            failures in proptest::collection::vec(any::<bool>(), 0..300),
            max_records in 1usize..8,
            aggregate in proptest::option::of(60usize..400),
        ) {
            let mut events = Vec::new();
            let mut round = 0;
            // Interleave keys like a real producer would.
            while events.len() < per_key.iter().sum::<usize>() {
                for (k, n) in per_key.iter().enumerate() {
                    if round < *n {
                        events.push(Event::new(format!("k{k}"), format!("{round}")));
                    }
                }
                round += 1;
            }
            let original = events.clone();
            let mut queue = SendQueue::new(events, 1 << 20).unwrap();
            let mut failures = failures.into_iter();
            let mut sends: HashMap<Uuid, usize> = HashMap::new();
            let mut failed: HashMap<Uuid, usize> = HashMap::new();
            let mut written: Vec<Event> = Vec::new();
            let mut requests = 0;
            while queue.pending() > 0 {
                requests += 1;
                prop_assert!(requests < 10_000, "no progress");
                let batch = queue.next_batch(max_records, usize::MAX, aggregate);
                prop_assert!(!batch.is_empty());
                let keys: HashSet<&str> = batch.iter().map(|u| u.partition_key.as_str()).collect();
                prop_assert_eq!(keys.len(), batch.len(), "two records of one key in a request");
                for unit in batch {
                    let events: Vec<(Event, Bytes)> =
                        queue.queues[unit.queue].iter().take(unit.count).cloned().collect();
                    prop_assert_eq!(events.len(), unit.count);
                    let data: Vec<Bytes> = match shardctl_kpl::deaggregate(&unit.data).unwrap() {
                        Some(users) => {
                            prop_assert!(aggregate.is_some_and(|limit| unit.data.len() + unit.partition_key.len() <= limit));
                            users.into_iter().map(|u| u.data).collect()
                        }
                        None => vec![unit.data.clone()],
                    };
                    prop_assert_eq!(data, events.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>());
                    for (event, _) in &events {
                        *sends.entry(event.id).or_default() += 1;
                    }
                    if failures.next().unwrap_or(false) {
                        for (event, _) in &events {
                            *failed.entry(event.id).or_default() += 1;
                        }
                    } else {
                        written.extend(queue.acknowledge(unit.queue, unit.count));
                    }
                }
            }
            prop_assert_eq!(written.len(), original.len());
            for key in original.iter().map(|e| &e.partition_key).collect::<HashSet<_>>() {
                let want: Vec<Uuid> = original.iter().filter(|e| &e.partition_key == key).map(|e| e.id).collect();
                let got: Vec<Uuid> = written.iter().filter(|e| &e.partition_key == key).map(|e| e.id).collect();
                prop_assert_eq!(want, got, "order of {} changed", key);
            }
            for e in &original {
                prop_assert_eq!(sends[&e.id], 1 + failed.get(&e.id).copied().unwrap_or(0));
            }
        }
    }

    /// One key with many events queued: aggregated, a request carries many of them in one record.
    #[test]
    fn aggregation_sends_one_keys_queue_in_one_record() {
        let events: Vec<Event> = (0..100)
            .map(|i| Event::new("org-1", format!("{i}")))
            .collect();
        let mut plain = SendQueue::new(events.clone(), 1 << 20).unwrap();
        assert_eq!(plain.next_batch(500, usize::MAX, None)[0].count, 1);
        let mut aggregated = SendQueue::new(events, 1 << 20).unwrap();
        let batch = aggregated.next_batch(500, usize::MAX, Some(DEFAULT_MAX_AGGREGATE_BYTES));
        assert_eq!((batch.len(), batch[0].count), (1, 100));
    }

    #[test]
    fn short_or_foreign_data_has_no_id() {
        assert_eq!(event_id(b"SCE1short"), None);
        assert_eq!(event_payload(b"SCE1short"), b"SCE1short");
    }
}
