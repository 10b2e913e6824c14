//! Packing user records into aggregates up to a size limit.
//!
//! Over 500 lines by choice: a third is tests (sizes computed ahead must match the encoded
//! bytes) and a fifth documentation.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use prost::encoding::encoded_len_varint;

use crate::message::{AggregatedRecord, Record};
use crate::{DEFAULT_MAX_AGGREGATE_BYTES, DIGEST_LEN, MAGIC, MAX_RECORD_BYTES, UserRecord, md5};

/// Longest partition key Kinesis accepts, in characters.
const MAX_PARTITION_KEY_CHARS: usize = 256;

/// A user record the [`Aggregator`] refuses; the aggregator is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    /// The record does not fit in an aggregate of the configured size even alone. It may still
    /// be sent as a plain Kinesis record if it is within 1 MiB.
    #[error("user record needs {size} bytes in an aggregate; aggregates are limited to {limit}")]
    TooLarge {
        /// Bytes an aggregate of this record alone takes (data and partition key).
        size: usize,
        /// The aggregator's limit.
        limit: usize,
    },
    /// Kinesis partition keys have 1 to 256 characters.
    #[error("partition key has {chars} characters; Kinesis takes 1 to 256")]
    InvalidPartitionKey {
        /// Characters in the key.
        chars: usize,
    },
    /// An explicit hash key is a decimal number from 0 to 2^128 - 1.
    #[error("explicit hash key `{shown}` is not a decimal number below 2^128")]
    InvalidExplicitHashKey {
        /// The key, shortened to 40 characters.
        shown: String,
    },
}

impl AggregateError {
    /// Fixed label for metrics.
    ///
    /// ```
    /// use shardctl_kpl::AggregateError;
    /// assert_eq!(AggregateError::TooLarge { size: 2, limit: 1 }.label(), "too_large");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::InvalidPartitionKey { .. } => "invalid_partition_key",
            Self::InvalidExplicitHashKey { .. } => "invalid_explicit_hash_key",
        }
    }
}

/// A finished aggregate, ready for `PutRecord(s)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// The partition key to put it with: its first user record's (as the KPL does).
    pub partition_key: String,
    /// The explicit hash key to put it with: its first user record's, if that had one.
    pub explicit_hash_key: Option<String>,
    /// The Kinesis record's data: magic, message, MD5.
    pub data: Bytes,
    /// User records in it.
    pub user_records: usize,
}

impl Aggregate {
    /// What Kinesis counts against its 1 MiB record limit: data and partition key.
    ///
    /// ```
    /// use shardctl_kpl::{Aggregator, UserRecord};
    /// let mut a = Aggregator::new();
    /// a.add(UserRecord::new("k", "x"))?;
    /// let agg = a.flush().unwrap();
    /// assert_eq!(agg.size(), agg.data.len() + 1);
    /// # Ok::<(), shardctl_kpl::AggregateError>(())
    /// ```
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Packs user records, in the order added, into aggregates of at most
/// [`max_bytes`](Aggregator::max_bytes) (data and partition key, as Kinesis counts a record).
/// A partition key or explicit hash key used by several records of one aggregate is stored once.
///
/// ```
/// use shardctl_kpl::{Aggregator, UserRecord};
/// let mut aggregator = Aggregator::with_max_bytes(200);
/// let mut full = Vec::new();
/// for i in 0..20 {
///     if let Some(aggregate) = aggregator.add(UserRecord::new("org-1", format!("event {i:02}")))? {
///         full.push(aggregate);
///     }
/// }
/// full.extend(aggregator.flush());
/// assert!(full.len() > 1 && full.iter().all(|a| a.size() <= 200));
/// assert_eq!(full.iter().map(|a| a.user_records).sum::<usize>(), 20);
/// # Ok::<(), shardctl_kpl::AggregateError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Aggregator {
    max_bytes: usize,
    message: AggregatedRecord,
    partition_keys: HashMap<String, u64>,
    explicit_hash_keys: HashMap<String, u64>,
    /// Encoded length of `message`, kept as records are added.
    message_len: usize,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::new()
    }
}

impl Aggregator {
    /// An aggregator closing aggregates at the KPL's default, [`DEFAULT_MAX_AGGREGATE_BYTES`].
    ///
    /// ```
    /// assert_eq!(shardctl_kpl::Aggregator::new().max_bytes(), 51_200);
    /// ```
    pub fn new() -> Self {
        Self::with_max_bytes(DEFAULT_MAX_AGGREGATE_BYTES)
    }

    /// An aggregator closing aggregates at `max_bytes` (at most 1 MiB, Kinesis' record limit).
    ///
    /// # Warning
    /// Larger aggregates mean fewer Kinesis records but more data replayed when a consumer
    /// resumes inside one (it reads the whole aggregate again and skips what was checkpointed).
    ///
    /// ```
    /// assert_eq!(shardctl_kpl::Aggregator::with_max_bytes(usize::MAX).max_bytes(), 1024 * 1024);
    /// ```
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        Self {
            max_bytes: max_bytes.min(MAX_RECORD_BYTES),
            message: AggregatedRecord::default(),
            partition_keys: HashMap::new(),
            explicit_hash_keys: HashMap::new(),
            message_len: 0,
        }
    }

    /// The limit of one aggregate: data plus partition key, in bytes.
    ///
    /// ```
    /// assert_eq!(shardctl_kpl::Aggregator::with_max_bytes(4096).max_bytes(), 4096);
    /// ```
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// User records in the aggregate being filled.
    ///
    /// ```
    /// let mut a = shardctl_kpl::Aggregator::new();
    /// a.add(shardctl_kpl::UserRecord::new("k", "x"))?;
    /// assert_eq!(a.len(), 1);
    /// # Ok::<(), shardctl_kpl::AggregateError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.message.records.len()
    }

    /// Whether no user record waits.
    ///
    /// ```
    /// assert!(shardctl_kpl::Aggregator::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.message.records.is_empty()
    }

    /// What the aggregate being filled would count against the limit if flushed now (0 when
    /// empty).
    ///
    /// ```
    /// let mut a = shardctl_kpl::Aggregator::new();
    /// a.add(shardctl_kpl::UserRecord::new("k", "x"))?;
    /// assert_eq!(a.size(), a.flush().unwrap().size());
    /// # Ok::<(), shardctl_kpl::AggregateError>(())
    /// ```
    pub fn size(&self) -> usize {
        match self.message.partition_key_table.first() {
            None => 0,
            Some(first) => framed_len(self.message_len) + first.len(),
        }
    }

    /// Adds `record`. When it does not fit in the aggregate being filled, that aggregate is
    /// finished and returned, and `record` starts the next one. A record that does not fit even
    /// alone is refused ([`AggregateError::TooLarge`]) and nothing changes.
    ///
    /// ```
    /// use shardctl_kpl::{AggregateError, Aggregator, UserRecord};
    /// let mut a = Aggregator::with_max_bytes(100);
    /// let big = UserRecord::new("k", vec![0u8; 100]);
    /// assert!(matches!(a.add(big), Err(AggregateError::TooLarge { limit: 100, .. })));
    /// assert!(a.is_empty());
    /// ```
    pub fn add(&mut self, record: UserRecord) -> Result<Option<Aggregate>, AggregateError> {
        validate(&record)?;
        let alone = framed_len(Growth::of(&record, None).bytes) + record.partition_key.len();
        if alone > self.max_bytes {
            return Err(AggregateError::TooLarge {
                size: alone,
                limit: self.max_bytes,
            });
        }
        let mut finished = None;
        let growth = Growth::of(&record, Some(self));
        if !self.is_empty() && self.size() + growth.bytes > self.max_bytes {
            finished = self.flush();
        }
        self.push(record);
        Ok(finished)
    }

    /// Finishes the aggregate being filled; `None` when no user record waits.
    ///
    /// ```
    /// let mut a = shardctl_kpl::Aggregator::new();
    /// assert!(a.flush().is_none());
    /// ```
    pub fn flush(&mut self) -> Option<Aggregate> {
        if self.is_empty() {
            return None;
        }
        let message = std::mem::take(&mut self.message);
        self.partition_keys.clear();
        self.explicit_hash_keys.clear();
        self.message_len = 0;
        let body = message.encode_to_vec();
        let mut data = Vec::with_capacity(framed_len(body.len()));
        data.extend_from_slice(&MAGIC);
        data.extend_from_slice(&body);
        data.extend_from_slice(&md5(&body));
        let first = message.records.first();
        let key = |table: &[String], index: Option<u64>| {
            index
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| table.get(i).cloned())
        };
        Some(Aggregate {
            partition_key: key(
                &message.partition_key_table,
                first.and_then(|r| r.partition_key_index),
            )
            .unwrap_or_default(),
            explicit_hash_key: key(
                &message.explicit_hash_key_table,
                first.and_then(|r| r.explicit_hash_key_index),
            ),
            data: data.into(),
            user_records: message.records.len(),
        })
    }

    fn push(&mut self, record: UserRecord) {
        let growth = Growth::of(&record, Some(self));
        let UserRecord {
            partition_key,
            explicit_hash_key,
            data,
        } = record;
        let partition_key_index = index_of(
            &mut self.partition_keys,
            &mut self.message.partition_key_table,
            partition_key,
        );
        let explicit_hash_key_index = explicit_hash_key.map(|k| {
            index_of(
                &mut self.explicit_hash_keys,
                &mut self.message.explicit_hash_key_table,
                k,
            )
        });
        self.message.records.push(Record {
            partition_key_index: Some(partition_key_index),
            explicit_hash_key_index,
            data: Some(data),
            tags: Vec::new(),
        });
        self.message_len += growth.bytes;
    }
}

/// The index of `key` in `table`, added if new.
fn index_of(lookup: &mut HashMap<String, u64>, table: &mut Vec<String>, key: String) -> u64 {
    if let Some(&i) = lookup.get(&key) {
        return i;
    }
    let i = table.len() as u64;
    table.push(key.clone());
    lookup.insert(key, i);
    i
}

/// Magic, message and MD5.
fn framed_len(message_len: usize) -> usize {
    MAGIC.len() + message_len + DIGEST_LEN
}

/// How many bytes a record adds to an aggregate's message.
struct Growth {
    bytes: usize,
}

impl Growth {
    /// Into `into` (`None`: an empty aggregate): new table entries, and the record itself.
    fn of(record: &UserRecord, into: Option<&Aggregator>) -> Self {
        let (pk_index, new_pk) = lookup(
            into.map(|a| (&a.partition_keys, a.message.partition_key_table.len())),
            &record.partition_key,
        );
        let mut bytes = 0;
        if new_pk {
            bytes += length_delimited(record.partition_key.len());
        }
        // Fields 1 and 3 (and 2): one tag byte each.
        let mut inner =
            1 + varint(pk_index) + 1 + varint(record.data.len() as u64) + record.data.len();
        if let Some(ehk) = &record.explicit_hash_key {
            let (ehk_index, new_ehk) = lookup(
                into.map(|a| {
                    (
                        &a.explicit_hash_keys,
                        a.message.explicit_hash_key_table.len(),
                    )
                }),
                ehk,
            );
            if new_ehk {
                bytes += length_delimited(ehk.len());
            }
            inner += 1 + varint(ehk_index);
        }
        bytes += length_delimited(inner);
        Self { bytes }
    }
}

/// The index `key` has or would get in a table, and whether it is new.
fn lookup(table: Option<(&HashMap<String, u64>, usize)>, key: &str) -> (u64, bool) {
    match table {
        None => (0, true),
        Some((lookup, len)) => match lookup.get(key) {
            Some(&i) => (i, false),
            None => (len as u64, true),
        },
    }
}

/// A length-delimited field of `len` bytes with a one-byte tag.
fn length_delimited(len: usize) -> usize {
    1 + varint(len as u64) + len
}

fn varint(value: u64) -> usize {
    encoded_len_varint(value)
}

fn validate(record: &UserRecord) -> Result<(), AggregateError> {
    let chars = record.partition_key.chars().count();
    if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
        return Err(AggregateError::InvalidPartitionKey { chars });
    }
    if let Some(ehk) = &record.explicit_hash_key {
        let decimal = !ehk.is_empty() && ehk.bytes().all(|b| b.is_ascii_digit());
        if !decimal || ehk.parse::<u128>().is_err() {
            return Err(AggregateError::InvalidExplicitHashKey {
                shown: ehk.chars().take(40).collect(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::deaggregate;
    use proptest::prelude::*;

    fn user_record() -> impl Strategy<Value = UserRecord> {
        (
            prop::sample::select(vec!["org-1", "org-2", "org-é", "k"]),
            prop::option::of(prop::sample::select(vec![
                "0",
                "42",
                "340282366920938463463374607431768211455",
            ])),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(pk, ehk, data)| UserRecord {
                partition_key: pk.to_owned(),
                explicit_hash_key: ehk.map(str::to_owned),
                data: data.into(),
            })
    }

    proptest! {
        /// Whatever the records and the limit: every aggregate is within the limit, its size is
        /// computed exactly, its key is its first record's, and de-aggregating all of them gives
        /// back every record in order.
        #[test]
        fn aggregate_then_deaggregate_round_trips(
            records in proptest::collection::vec(user_record(), 0..60),
            max_bytes in 64usize..2_000,
        ) {
            let mut aggregator = Aggregator::with_max_bytes(max_bytes);
            let mut aggregates = Vec::new();
            let mut accepted = Vec::new();
            for r in records {
                match aggregator.add(r.clone()) {
                    Ok(done) => {
                        aggregates.extend(done);
                        accepted.push(r);
                    }
                    Err(AggregateError::TooLarge { size, limit }) => {
                        prop_assert!(size > limit);
                        prop_assert_eq!(limit, max_bytes);
                    }
                    Err(e) => prop_assert!(false, "{e}"),
                }
                prop_assert_eq!(aggregator.size(), aggregator.message.encoded_len()
                    + if aggregator.is_empty() { 0 } else { 20 + aggregator.message.partition_key_table[0].len() });
            }
            aggregates.extend(aggregator.flush());
            prop_assert!(aggregator.is_empty());
            let mut back = Vec::new();
            for a in &aggregates {
                prop_assert!(a.size() <= max_bytes, "{} > {}", a.size(), max_bytes);
                let records = deaggregate(&a.data).unwrap().unwrap();
                prop_assert_eq!(records.len(), a.user_records);
                prop_assert_eq!(&a.partition_key, &records[0].partition_key);
                prop_assert_eq!(&a.explicit_hash_key, &records[0].explicit_hash_key);
                back.extend(records);
            }
            prop_assert_eq!(back, accepted);
        }

        /// Any one changed byte of an aggregate makes it a plain record (checksum, magic or
        /// framing fails), never an error or a different set of user records.
        #[test]
        fn a_changed_byte_makes_an_aggregate_plain(
            records in proptest::collection::vec(user_record(), 1..10),
            at in any::<prop::sample::Index>(),
            flip in 1u8..,
        ) {
            let mut aggregator = Aggregator::with_max_bytes(MAX_RECORD_BYTES);
            for r in records {
                prop_assert!(aggregator.add(r).unwrap().is_none());
            }
            let mut data = aggregator.flush().unwrap().data.to_vec();
            let i = at.index(data.len());
            data[i] ^= flip;
            prop_assert_eq!(deaggregate(&data.into()), Ok(None));
        }
    }

    #[test]
    fn keys_used_again_are_stored_once() {
        let mut a = Aggregator::new();
        for (pk, ehk) in [("a", None), ("b", Some("7")), ("a", Some("7")), ("b", None)] {
            let mut r = UserRecord::new(pk, "x");
            r.explicit_hash_key = ehk.map(str::to_owned);
            assert!(a.add(r).unwrap().is_none());
        }
        assert_eq!(a.message.partition_key_table, ["a", "b"]);
        assert_eq!(a.message.explicit_hash_key_table, ["7"]);
        let indexes: Vec<(Option<u64>, Option<u64>)> = a
            .message
            .records
            .iter()
            .map(|r| (r.partition_key_index, r.explicit_hash_key_index))
            .collect();
        assert_eq!(
            indexes,
            [
                (Some(0), None),
                (Some(1), Some(0)),
                (Some(0), Some(0)),
                (Some(1), None)
            ]
        );
    }

    #[test]
    fn the_aggregate_limit_includes_the_partition_key_and_is_reached_exactly() {
        // One record alone: magic 4 + message + md5 16 + key.
        let r = UserRecord::new("key", vec![7u8; 50]);
        let mut probe = Aggregator::new();
        probe.add(r.clone()).unwrap();
        let exact = probe.size();
        assert_eq!(exact, probe.flush().unwrap().size());
        let mut a = Aggregator::with_max_bytes(exact);
        assert!(a.add(r.clone()).unwrap().is_none());
        // The second does not fit: the first comes back finished, the second starts the next.
        let done = a.add(r.clone()).unwrap().unwrap();
        assert_eq!((done.user_records, done.size()), (1, exact));
        assert_eq!(a.len(), 1);
        let mut too_small = Aggregator::with_max_bytes(exact - 1);
        assert_eq!(
            too_small.add(r),
            Err(AggregateError::TooLarge {
                size: exact,
                limit: exact - 1
            })
        );
    }

    #[test]
    fn invalid_keys_are_refused() {
        let mut a = Aggregator::new();
        assert_eq!(
            a.add(UserRecord::new("", "x")).unwrap_err().label(),
            "invalid_partition_key"
        );
        assert_eq!(
            a.add(UserRecord::new("é".repeat(257), "x")).unwrap_err(),
            AggregateError::InvalidPartitionKey { chars: 257 }
        );
        assert!(a.add(UserRecord::new("é".repeat(256), "x")).is_ok());
        for ehk in [
            "",
            "-1",
            "+1",
            "1e3",
            "340282366920938463463374607431768211456",
        ] {
            let r = UserRecord::new("k", "x").with_explicit_hash_key(ehk);
            assert_eq!(a.add(r).unwrap_err().label(), "invalid_explicit_hash_key");
        }
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn a_full_size_aggregate_stays_within_the_kinesis_record_limit() {
        let mut a = Aggregator::with_max_bytes(MAX_RECORD_BYTES);
        let mut done = None;
        for i in 0..2_000 {
            if let Some(full) = a
                .add(UserRecord::new(format!("org-{}", i % 7), vec![1u8; 1_000]))
                .unwrap()
            {
                done = Some(full);
                break;
            }
        }
        let full = done.unwrap();
        assert!(full.size() <= MAX_RECORD_BYTES);
        assert!(full.size() > MAX_RECORD_BYTES - 1_100);
    }
}
