//! Dropping events that were already processed, by event id.
//!
//! [`Dedup`] wraps a [`ShardProcessor`]. For each batch it drops records whose event id was seen
//! before, hands the rest to the inner processor, and then records their ids: first in an
//! in-memory set shared by all shards of the worker, then in a DynamoDB table (`eventId` S, with a
//! TTL attribute `expiresAt` N) with a conditional put, so other workers see them too.
//!
//! # What it removes
//!
//! * **Producer retries**: a `PutRecords` call that failed as a whole but was partly written is
//!   sent again with the same event ids ([`crate::producer`]); the second copy is dropped.
//! * **Replays after a lease moves**: a worker that dies (or loses its lease) after processing
//!   records but before checkpointing them; the next owner starts at the last checkpoint and gets
//!   those records again. They were recorded after processing, so they are dropped.
//!
//! # What it does not remove, and what a sink must still do
//!
//! Ids are recorded **after** the inner processor returns, never before: recording first would
//! lose the event if the worker died in between. So a worker that dies *between* processing a
//! batch and recording its ids (one DynamoDB round trip) lets those events through again. Events
//! without an id (the extractor returns `None`) are always delivered, and ids older than the TTL
//! are forgotten. For effectively-once results the sink must still be idempotent on the event id
//! (an upsert keyed by it, or a transactional write of the effect with the id).
//!
//! If the dedup table cannot be read, records are delivered (unknown is not a duplicate).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, TimeToLiveSpecification};
use futures::StreamExt;
use shardctl_lease::sdk::TableSpec;
use tracing::{debug, info, warn};

use crate::processor::{Checkpointer, InitInput, Record, RecordBatch, ShardProcessor};
use crate::store::{LeaseStoreError, wait_table_active};

/// Hash key attribute of the dedup table.
pub const EVENT_ID: &str = "eventId";
/// TTL attribute of the dedup table (epoch seconds).
pub const EXPIRES_AT: &str = "expiresAt";

/// Errors setting up the dedup table.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// DynamoDB failed.
    #[error("DynamoDB {operation} on the dedup table failed: {message}")]
    Dynamo {
        /// API operation.
        operation: &'static str,
        /// The error with context.
        message: String,
    },
    /// Waiting for the table failed.
    #[error(transparent)]
    Table(#[from] LeaseStoreError),
}

impl DedupError {
    /// Fixed label for metrics.
    ///
    /// ```
    /// use shardctl_consumer::dedup::DedupError;
    /// let e = DedupError::Dynamo { operation: "PutItem", message: String::new() };
    /// assert_eq!(e.label(), "dynamodb");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Self::Dynamo { .. } => "dynamodb",
            Self::Table(e) => e.label(),
        }
    }
}

/// Counters of a [`DedupStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Records dropped because their id was in the in-memory set (or earlier in the batch).
    pub dropped_in_memory: u64,
    /// Records dropped because their id was in the table.
    pub dropped_in_table: u64,
    /// Records delivered whose id could not be checked (table error): delivered, unknown.
    pub unchecked: u64,
    /// Ids recorded.
    pub recorded: u64,
    /// Ids another worker recorded concurrently (a duplicate that raced through).
    pub raced: u64,
}

#[derive(Debug, Default)]
struct Counters {
    dropped_in_memory: AtomicU64,
    dropped_in_table: AtomicU64,
    unchecked: AtomicU64,
    recorded: AtomicU64,
    raced: AtomicU64,
}

/// Bounded set of recent ids (oldest evicted first).
#[derive(Debug)]
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RecentIds {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }
    fn insert(&mut self, id: String) {
        if self.capacity == 0 || !self.set.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// The shared dedup state of one worker: the DynamoDB table and the in-memory front.
///
/// ```no_run
/// # async fn demo() -> Result<(), shardctl_consumer::dedup::DedupError> {
/// use std::time::Duration;
/// use shardctl_consumer::dedup::DedupStore;
/// let config = aws_config::load_from_env().await;
/// let dedup = DedupStore::new(aws_sdk_dynamodb::Client::new(&config), "billing-dedup")
///     .with_ttl(Duration::from_secs(24 * 3600));
/// dedup.ensure_table().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DedupStore {
    client: Client,
    table: String,
    ttl: Duration,
    recent: Arc<Mutex<RecentIds>>,
    counters: Arc<Counters>,
}

impl DedupStore {
    /// A store over `table` with a 24 h TTL and 100,000 ids in memory.
    ///
    /// ```no_run
    /// # async fn demo(client: aws_sdk_dynamodb::Client) {
    /// let dedup = shardctl_consumer::dedup::DedupStore::new(client, "app-dedup");
    /// # }
    /// ```
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            ttl: Duration::from_secs(24 * 3600),
            recent: Arc::new(Mutex::new(RecentIds {
                set: HashSet::new(),
                order: VecDeque::new(),
                capacity: 100_000,
            })),
            counters: Arc::default(),
        }
    }

    /// How long ids are remembered. Must exceed the longest replay you expect (retention).
    ///
    /// ```no_run
    /// # fn demo(d: shardctl_consumer::dedup::DedupStore) {
    /// let d = d.with_ttl(std::time::Duration::from_secs(7 * 24 * 3600));
    /// # }
    /// ```
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many ids the in-memory front keeps (0 disables it).
    ///
    /// ```no_run
    /// # fn demo(d: shardctl_consumer::dedup::DedupStore) {
    /// let d = d.with_memory_capacity(10_000);
    /// # }
    /// ```
    pub fn with_memory_capacity(self, capacity: usize) -> Self {
        if let Ok(mut recent) = self.recent.lock() {
            recent.capacity = capacity;
        }
        self
    }

    /// Creates the table (on-demand, TTL on `expiresAt`) if missing.
    ///
    /// ```no_run
    /// # async fn demo(d: shardctl_consumer::dedup::DedupStore) -> Result<(), shardctl_consumer::dedup::DedupError> {
    /// d.ensure_table().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ensure_table(&self) -> Result<(), DedupError> {
        let dynamo =
            |operation: &'static str, message: String| DedupError::Dynamo { operation, message };
        let request = TableSpec {
            hash_key: EVENT_ID,
            range_key: None,
        }
        .create_request(&self.client, &self.table)
        .map_err(|e| dynamo("CreateTable", e.to_string()))?;
        match request.send().await {
            Ok(_) => info!(table = %self.table, "dedup table created"),
            Err(e) if TableSpec::already_exists(&e) => {}
            Err(e) => return Err(dynamo("CreateTable", DisplayErrorContext(&e).to_string())),
        }
        wait_table_active(&self.client, &self.table).await?;
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(EXPIRES_AT)
            .enabled(true)
            .build()
            .map_err(|e| dynamo("UpdateTimeToLive", e.to_string()))?;
        if let Err(e) = self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(spec)
            .send()
            .await
        {
            // Already enabled is reported as a validation error; expiry is also checked on read.
            debug!(table = %self.table, error = %DisplayErrorContext(&e), "UpdateTimeToLive not applied");
        }
        Ok(())
    }

    /// Wraps `inner`, reading each record's event id with `extract`.
    ///
    /// ```no_run
    /// # use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
    /// # struct Sink;
    /// # impl ShardProcessor for Sink {
    /// #     async fn initialize(&mut self, _: InitInput) {}
    /// #     async fn process_records(&mut self, _: RecordBatch, _: &Checkpointer) {}
    /// #     async fn shard_ended(&mut self, c: &Checkpointer) { let _ = c.checkpoint_shard_end().await; }
    /// # }
    /// # fn demo(dedup: shardctl_consumer::dedup::DedupStore) {
    /// use shardctl_consumer::producer::event_id;
    /// let factory = move |_shard: &str| {
    ///     dedup.wrap(Sink, |r: &shardctl_consumer::processor::Record| event_id(&r.data).map(|u| u.to_string()))
    /// };
    /// # }
    /// ```
    pub fn wrap<P, X>(&self, inner: P, extract: X) -> Dedup<P, X>
    where
        P: ShardProcessor,
        X: Fn(&Record) -> Option<String> + Send + Sync + 'static,
    {
        Dedup {
            store: self.clone(),
            inner,
            extract,
        }
    }

    /// Counters so far (shared by every clone).
    ///
    /// ```no_run
    /// # fn demo(d: shardctl_consumer::dedup::DedupStore) {
    /// println!("{:?}", d.stats());
    /// # }
    /// ```
    pub fn stats(&self) -> DedupStats {
        let c = &self.counters;
        DedupStats {
            dropped_in_memory: c.dropped_in_memory.load(Ordering::Relaxed),
            dropped_in_table: c.dropped_in_table.load(Ordering::Relaxed),
            unchecked: c.unchecked.load(Ordering::Relaxed),
            recorded: c.recorded.load(Ordering::Relaxed),
            raced: c.raced.load(Ordering::Relaxed),
        }
    }

    fn in_memory(&self, id: &str) -> bool {
        self.recent.lock().is_ok_and(|r| r.contains(id))
    }

    fn now_epoch() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Which of `ids` the table knows (unexpired). `Err` ids could not be checked.
    async fn known_in_table(&self, ids: &[String]) -> (HashSet<String>, usize) {
        let mut known = HashSet::new();
        let mut unchecked = 0;
        let now = Self::now_epoch();
        for chunk in ids.chunks(100) {
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|id| HashMap::from([(EVENT_ID.to_owned(), AttributeValue::S(id.clone()))]))
                .collect();
            for attempt in 0..5u32 {
                if keys.is_empty() {
                    break;
                }
                let Ok(request) = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                else {
                    break;
                };
                match self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                {
                    Ok(out) => {
                        for item in out
                            .responses()
                            .and_then(|r| r.get(&self.table))
                            .into_iter()
                            .flatten()
                        {
                            let expired = match item.get(EXPIRES_AT) {
                                Some(AttributeValue::N(n)) => {
                                    n.parse::<u64>().is_ok_and(|t| t < now)
                                }
                                _ => false,
                            };
                            if let (Some(AttributeValue::S(id)), false) =
                                (item.get(EVENT_ID), expired)
                            {
                                known.insert(id.clone());
                            }
                        }
                        keys = out
                            .unprocessed_keys()
                            .and_then(|u| u.get(&self.table))
                            .map(|k| k.keys().to_vec())
                            .unwrap_or_default();
                    }
                    Err(e) => {
                        warn!(table = %self.table, error = %DisplayErrorContext(&e), attempt, "dedup lookup failed");
                        keys = chunk
                            .iter()
                            .filter(|id| !known.contains(*id))
                            .map(|id| {
                                HashMap::from([(
                                    EVENT_ID.to_owned(),
                                    AttributeValue::S(id.clone()),
                                )])
                            })
                            .collect();
                    }
                }
                if !keys.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
            unchecked += keys.len();
        }
        (known, unchecked)
    }

    /// Records `ids` as processed: conditional put (new, or the old entry expired).
    async fn record(&self, ids: Vec<String>) {
        let expires = Self::now_epoch().saturating_add(self.ttl.as_secs());
        let now = Self::now_epoch();
        let results = futures::stream::iter(ids)
            .map(|id| {
                let client = self.client.clone();
                let table = self.table.clone();
                async move {
                    let result = client
                        .put_item()
                        .table_name(&table)
                        .item(EVENT_ID, AttributeValue::S(id.clone()))
                        .item(EXPIRES_AT, AttributeValue::N(expires.to_string()))
                        .condition_expression("attribute_not_exists(#id) OR #exp < :now")
                        .expression_attribute_names("#id", EVENT_ID)
                        .expression_attribute_names("#exp", EXPIRES_AT)
                        .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                        .send()
                        .await;
                    (id, result)
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        for (id, result) in results {
            match result {
                Ok(_) => {
                    self.counters.recorded.fetch_add(1, Ordering::Relaxed);
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    self.counters.raced.fetch_add(1, Ordering::Relaxed);
                    warn!(table = %self.table, event = %id, "event id was recorded concurrently by another worker");
                }
                Err(e) => {
                    warn!(table = %self.table, event = %id, error = %DisplayErrorContext(&e), "recording event id failed");
                }
            }
            if let Ok(mut recent) = self.recent.lock() {
                recent.insert(id);
            }
        }
    }
}

/// A processor wrapped with duplicate removal; see the [module docs](self).
#[derive(Debug)]
pub struct Dedup<P, X> {
    store: DedupStore,
    inner: P,
    extract: X,
}

impl<P, X> ShardProcessor for Dedup<P, X>
where
    P: ShardProcessor,
    X: Fn(&Record) -> Option<String> + Send + Sync + 'static,
{
    async fn initialize(&mut self, input: InitInput) {
        self.inner.initialize(input).await;
    }

    async fn process_records(&mut self, batch: RecordBatch, checkpointer: &Checkpointer) {
        let counters = &self.store.counters;
        let mut in_batch = HashSet::new();
        let mut candidates: Vec<(Record, Option<String>)> = Vec::with_capacity(batch.records.len());
        for record in batch.records {
            let id = (self.extract)(&record);
            if let Some(id) = &id
                && (self.store.in_memory(id) || !in_batch.insert(id.clone()))
            {
                counters.dropped_in_memory.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            candidates.push((record, id));
        }
        let to_check: Vec<String> = candidates.iter().filter_map(|(_, id)| id.clone()).collect();
        let (known, unchecked) = if to_check.is_empty() {
            (HashSet::new(), 0)
        } else {
            self.store.known_in_table(&to_check).await
        };
        counters
            .unchecked
            .fetch_add(unchecked as u64, Ordering::Relaxed);
        let mut fresh_ids = Vec::new();
        let mut records = Vec::with_capacity(candidates.len());
        for (record, id) in candidates {
            match id {
                Some(id) if known.contains(&id) => {
                    counters.dropped_in_table.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut recent) = self.store.recent.lock() {
                        recent.insert(id);
                    }
                }
                Some(id) => {
                    fresh_ids.push(id);
                    records.push(record);
                }
                None => records.push(record),
            }
        }
        if records.is_empty() {
            return;
        }
        self.inner
            .process_records(
                RecordBatch {
                    shard_id: batch.shard_id,
                    records,
                    millis_behind_latest: batch.millis_behind_latest,
                },
                checkpointer,
            )
            .await;
        self.store.record(fresh_ids).await;
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) {
        self.inner.shard_ended(checkpointer).await;
    }

    async fn lease_lost(&mut self) {
        self.inner.lease_lost().await;
    }

    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) {
        self.inner.shutdown_requested(checkpointer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_evict_oldest_first() {
        let mut recent = RecentIds {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: 2,
        };
        recent.insert("a".into());
        recent.insert("b".into());
        recent.insert("a".into());
        recent.insert("c".into());
        assert!(!recent.contains("a"));
        assert!(recent.contains("b") && recent.contains("c"));
    }
}
