//! What one lease table says about one stream: its leases by shard id, the rows that could not
//! be read, and what was skipped (KCL 3.5 non-lease rows, other streams of a multi-stream table).

use std::collections::BTreeMap;

use crate::checkpoint::Checkpoint;
use crate::row::{Item, Lease, LeaseKey, Row};

/// The stream whose rows are wanted. Multi-stream rows (`account:stream:creationEpoch:shardId`)
/// count when the name matches and, where known, the account and creation epoch too; rows of a
/// single-stream table always count (such a table serves one stream).
///
/// ```
/// use shardctl_lease::StreamFilter;
/// let f = StreamFilter::named("orders").with_creation_epoch(Some(1_700_000_000));
/// assert_eq!(f.name, "orders");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamFilter {
    /// The stream name.
    pub name: String,
    /// The AWS account id, when known.
    pub account: Option<String>,
    /// The stream's creation time (Unix seconds), when known: tells a re-created stream's rows
    /// from those of the stream that had the same name before.
    pub creation_epoch: Option<u64>,
}

impl StreamFilter {
    /// A filter by name only.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets the account id.
    pub fn with_account(mut self, account: Option<String>) -> Self {
        self.account = account;
        self
    }

    /// Sets the creation epoch.
    pub fn with_creation_epoch(mut self, epoch: Option<u64>) -> Self {
        self.creation_epoch = epoch;
        self
    }

    fn matches(&self, key: &LeaseKey) -> bool {
        match &key.stream {
            None => true,
            Some(id) => {
                id.name == self.name
                    && self.account.as_ref().is_none_or(|a| *a == id.account)
                    && self.creation_epoch.is_none_or(|e| e == id.creation_epoch)
            }
        }
    }
}

/// The rows of one stream in one lease table, by shard id.
///
/// ```
/// use shardctl_lease::{Item, StreamFilter, TableRows, Value};
/// let row = |key: &str, checkpoint: &str| Item::from([
///     ("leaseKey".to_string(), Value::S(key.into())),
///     ("leaseCounter".to_string(), Value::N("1".into())),
///     ("checkpoint".to_string(), Value::S(checkpoint.into())),
/// ]);
/// let mut rows = TableRows::new(StreamFilter::named("orders"));
/// rows.push(&row("111122223333:orders:1700000000:shardId-000000000000", "SHARD_END"));
/// rows.push(&row("111122223333:billing:1700000000:shardId-000000000000", "TRIM_HORIZON"));
/// rows.push(&row("111122223333:orders:1700000000:shardId-000000000001", "5x"));
/// assert!(rows.leases["shardId-000000000000"].is_finished());
/// assert_eq!(rows.other_stream_rows, 1);
/// assert!(rows.malformed.contains_key("shardId-000000000001"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRows {
    /// Which rows count.
    pub filter: StreamFilter,
    /// Readable leases of the stream, by shard id.
    pub leases: BTreeMap<String, Lease>,
    /// Rows of the stream that could not be read, by shard id (or raw key): why.
    pub malformed: BTreeMap<String, String>,
    /// Keys of KCL 3.5+ rows that are not leases (`entityType` other than `LEASE`), skipped.
    pub non_lease_rows: Vec<String>,
    /// Rows of other streams in a multi-stream table, skipped.
    pub other_stream_rows: usize,
    /// Rows of this stream keyed in the multi-stream form.
    pub multi_stream_rows: usize,
}

impl TableRows {
    /// No rows yet.
    pub fn new(filter: StreamFilter) -> Self {
        Self {
            filter,
            ..Self::default()
        }
    }

    /// Reads every item.
    pub fn read<'a>(filter: StreamFilter, items: impl IntoIterator<Item = &'a Item>) -> Self {
        let mut rows = Self::new(filter);
        for item in items {
            rows.push(item);
        }
        rows
    }

    /// Reads one more item.
    pub fn push(&mut self, item: &Item) {
        match Row::read(item) {
            Row::NotALease { key, .. } => self.non_lease_rows.push(key),
            Row::Malformed { key, error } => {
                let key = key.map(|k| LeaseKey::parse(&k));
                match key {
                    Some(k) if !self.filter.matches(&k) => self.other_stream_rows += 1,
                    Some(k) => {
                        self.malformed.insert(k.shard_id, error.to_string());
                    }
                    None => {
                        self.malformed
                            .insert(String::from("(row without leaseKey)"), error.to_string());
                    }
                }
            }
            Row::Lease(lease) => {
                let key = LeaseKey::parse(&lease.lease_key);
                if !self.filter.matches(&key) {
                    self.other_stream_rows += 1;
                    return;
                }
                if key.stream.is_some() {
                    self.multi_stream_rows += 1;
                }
                if self.malformed.contains_key(&key.shard_id) {
                    return;
                }
                if let Some(first) = self.leases.remove(&key.shard_id) {
                    // Two rows for one shard: a re-created stream of the same name in a
                    // multi-stream table, or a table shared by two streams. Neither can be told
                    // apart from the other without the creation epoch: unknown.
                    self.malformed.insert(
                        key.shard_id,
                        format!(
                            "two lease rows for this shard ({} and {}); the table mixes streams",
                            first.lease_key, lease.lease_key
                        ),
                    );
                    return;
                }
                self.leases.insert(key.shard_id, *lease);
            }
        }
    }

    /// The checkpoint of every readable lease, by shard id.
    pub fn checkpoints(&self) -> BTreeMap<String, Checkpoint> {
        self.leases
            .iter()
            .map(|(id, l)| (id.clone(), l.checkpoint.clone()))
            .collect()
    }

    /// One line on what was read, for logs and reports: "12 leases, 1 unreadable, 2 non-lease
    /// rows skipped, multi-stream table: 30 rows of other streams skipped".
    pub fn summary(&self) -> String {
        let mut out = format!("{} leases", self.leases.len());
        if !self.malformed.is_empty() {
            out.push_str(&format!(", {} unreadable", self.malformed.len()));
        }
        if !self.non_lease_rows.is_empty() {
            out.push_str(&format!(
                ", {} non-lease rows skipped",
                self.non_lease_rows.len()
            ));
        }
        if self.multi_stream_rows > 0 || self.other_stream_rows > 0 {
            out.push_str(&format!(
                ", multi-stream table: rows of {} read, {} rows of other streams skipped",
                self.filter.name, self.other_stream_rows
            ));
        }
        out
    }
}
