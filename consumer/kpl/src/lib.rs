//! The KPL aggregated record format: many user records in one Kinesis record.
//!
//! ```
//! use shardctl_kpl::{Aggregator, UserRecord, deaggregate};
//!
//! let mut aggregator = Aggregator::new();
//! for i in 0..3 {
//!     // `add` hands back a finished aggregate when the next record does not fit any more.
//!     assert!(aggregator.add(UserRecord::new("org-1", format!("event {i}")))?.is_none());
//! }
//! let aggregate = aggregator.flush().expect("three records");
//! assert_eq!(aggregate.partition_key, "org-1"); // put it to Kinesis with this key
//!
//! let records = deaggregate(&aggregate.data)?.expect("an aggregate");
//! assert_eq!(records.len(), 3);
//! assert_eq!(records[2].data, "event 2");
//! // Anything else passes through: `None` means "deliver the record as it is".
//! assert_eq!(deaggregate(&bytes::Bytes::from_static(b"plain"))?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Format
//!
//! A Kinesis record is an aggregate when its data is the 4-byte magic `F3 89 9A C2`, then a
//! protobuf `AggregatedRecord`, then the 16-byte MD5 of the protobuf bytes:
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! message Tag { required string key = 1; optional string value = 2; }
//! ```
//!
//! Each user record's partition key (and explicit hash key) is an index into the tables, so a key
//! used by many records is stored once. A consumer numbers the user records of one aggregate
//! 0, 1, 2, ... (the *sub-sequence number*); all of them share the aggregate's sequence number.
//!
//! # What counts as an aggregate (KCL's rules)
//!
//! [`deaggregate`] follows `AggregatorUtil.deaggregate` of the Java KCL:
//!
//! * data without the magic, or not longer than magic + MD5 (20 bytes), is not an aggregate;
//! * data with the magic whose MD5 does not match, or whose message does not decode (including a
//!   missing required field), is not an aggregate either: it is delivered as a normal record,
//!   never dropped;
//! * a message that decodes but names a partition key or explicit hash key index outside its
//!   table is an error ([`DeaggregateError`]). KCL logs it, keeps the user records before the
//!   bad one and drops the rest; here the caller decides, and `shardctl-consumer` delivers the
//!   record as it is, so nothing is lost.
//!
//! KCL also drops every user record of an aggregate when one of them hashes outside the shard's
//! hash range (the KPL sends such an aggregate again after it learns the new shard map). This
//! crate has no shard range; see `shardctl-consumer` for what it does.

mod aggregate;
mod deaggregate;
mod message;

pub use aggregate::{Aggregate, AggregateError, Aggregator};
pub use deaggregate::{DeaggregateError, deaggregate, has_aggregate_framing};

use bytes::Bytes;

/// The first four bytes of every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 digest that ends an aggregated record.
pub const DIGEST_LEN: usize = 16;

/// The largest Kinesis record: data plus partition key, 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The KPL's default `AggregationMaxSize`: aggregates are closed at 51,200 bytes.
pub const DEFAULT_MAX_AGGREGATE_BYTES: usize = 51_200;

/// One user record: what a producer sends and a consumer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The record's own partition key (an aggregate may hold many keys).
    pub partition_key: String,
    /// Explicit hash key (a decimal number below 2^128), if the producer set one.
    pub explicit_hash_key: Option<String>,
    /// Payload.
    pub data: Bytes,
}

impl UserRecord {
    /// A user record without an explicit hash key.
    ///
    /// ```
    /// let r = shardctl_kpl::UserRecord::new("org-1", "signup");
    /// assert_eq!(r.explicit_hash_key, None);
    /// ```
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// Sets the explicit hash key.
    ///
    /// ```
    /// let r = shardctl_kpl::UserRecord::new("org-1", "x").with_explicit_hash_key("42");
    /// assert_eq!(r.explicit_hash_key.as_deref(), Some("42"));
    /// ```
    pub fn with_explicit_hash_key(mut self, explicit_hash_key: impl Into<String>) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key.into());
        self
    }
}

/// MD5 of `bytes`, the checksum that ends an aggregate.
fn md5(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    use md5::{Digest, Md5};
    Md5::digest(bytes).into()
}
