//! The protobuf messages of the aggregated record format, written out by hand (no build script).
//!
//! `required` fields of the format are `optional` here, so that decoding can tell a missing one
//! (which KCL's parser refuses) from a zero; encoding always writes them.

use bytes::Bytes;

/// `AggregatedRecord`: the key tables and the user records.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub(crate) partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub(crate) explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) records: Vec<Record>,
}

/// `Record`: one user record, its keys as indexes into the tables.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Record {
    /// Required.
    #[prost(uint64, optional, tag = "1")]
    pub(crate) partition_key_index: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    pub(crate) explicit_hash_key_index: Option<u64>,
    /// Required.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub(crate) data: Option<Bytes>,
    #[prost(message, repeated, tag = "4")]
    pub(crate) tags: Vec<Tag>,
}

/// `Tag`: a key/value the KPL can attach to a user record (read past, not delivered).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Tag {
    /// Required.
    #[prost(string, optional, tag = "1")]
    pub(crate) key: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub(crate) value: Option<String>,
}

impl AggregatedRecord {
    /// Every field the format marks `required` is present (a protobuf 2 parser refuses the
    /// message otherwise).
    pub(crate) fn has_required_fields(&self) -> bool {
        self.records.iter().all(|r| {
            r.partition_key_index.is_some()
                && r.data.is_some()
                && r.tags.iter().all(|t| t.key.is_some())
        })
    }
}
