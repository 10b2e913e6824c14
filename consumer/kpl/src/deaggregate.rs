//! Splitting an aggregated record into its user records, by KCL's rules.

use bytes::Bytes;
use prost::Message;

use crate::message::AggregatedRecord;
use crate::{DIGEST_LEN, MAGIC, UserRecord, md5};

/// An aggregate whose checksum and message are valid but whose content is not: KCL logs these
/// and drops part of the aggregate; the caller chooses here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeaggregateError {
    /// A user record names a partition key the table does not have.
    #[error(
        "user record {record} of the aggregate names partition key {index}, but the table has {table_len}"
    )]
    PartitionKeyIndex {
        /// Position of the user record in the aggregate (its sub-sequence number).
        record: usize,
        /// The index it names.
        index: u64,
        /// Entries in the partition key table.
        table_len: usize,
    },
    /// A user record names an explicit hash key the table does not have.
    #[error(
        "user record {record} of the aggregate names explicit hash key {index}, but the table has {table_len}"
    )]
    ExplicitHashKeyIndex {
        /// Position of the user record in the aggregate (its sub-sequence number).
        record: usize,
        /// The index it names.
        index: u64,
        /// Entries in the explicit hash key table.
        table_len: usize,
    },
}

impl DeaggregateError {
    /// Fixed label for metrics.
    ///
    /// ```
    /// use shardctl_kpl::DeaggregateError;
    /// let e = DeaggregateError::PartitionKeyIndex { record: 0, index: 3, table_len: 1 };
    /// assert_eq!(e.label(), "partition_key_index");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Self::PartitionKeyIndex { .. } => "partition_key_index",
            Self::ExplicitHashKeyIndex { .. } => "explicit_hash_key_index",
        }
    }
}

/// Whether `data` is framed like an aggregate: the magic, then more than an MD5's worth of bytes.
/// KCL's first test; the checksum and the message are checked by [`deaggregate`].
///
/// ```
/// use shardctl_kpl::{MAGIC, has_aggregate_framing};
/// assert!(!has_aggregate_framing(b"plain data"));
/// assert!(!has_aggregate_framing(&[MAGIC.as_slice(), &[0; 16]].concat())); // too short
/// assert!(has_aggregate_framing(&[MAGIC.as_slice(), &[0; 17]].concat()));
/// ```
pub fn has_aggregate_framing(data: &[u8]) -> bool {
    data.len() > MAGIC.len() + DIGEST_LEN && data.starts_with(&MAGIC)
}

/// The user records of an aggregated record, in order (their index is their sub-sequence
/// number); `Ok(None)` when `data` is not an aggregate and must be delivered as it is.
///
/// Not an aggregate, as in KCL: no magic, too short, an MD5 that does not match, or a message
/// that does not decode or lacks a required field. An aggregate without user records gives
/// `Ok(Some(vec![]))` (KCL delivers nothing for it). The payloads share `data`'s buffer.
///
/// ```
/// use bytes::Bytes;
/// use shardctl_kpl::{Aggregator, UserRecord, deaggregate};
/// let mut agg = Aggregator::new();
/// agg.add(UserRecord::new("a", "1"))?;
/// agg.add(UserRecord::new("b", "2").with_explicit_hash_key("7"))?;
/// let data = agg.flush().unwrap().data;
/// let records = deaggregate(&data)?.unwrap();
/// assert_eq!(records[1].partition_key, "b");
/// assert_eq!(records[1].explicit_hash_key.as_deref(), Some("7"));
///
/// // One changed byte: the checksum fails, and the record is not an aggregate any more.
/// let mut bad = data.to_vec();
/// bad[10] ^= 1;
/// assert_eq!(deaggregate(&Bytes::from(bad))?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn deaggregate(data: &Bytes) -> Result<Option<Vec<UserRecord>>, DeaggregateError> {
    if !has_aggregate_framing(data) {
        return Ok(None);
    }
    let body_end = data.len() - DIGEST_LEN;
    let body = data.slice(MAGIC.len()..body_end);
    if md5(&body) != data[body_end..] {
        return Ok(None);
    }
    let Ok(message) = AggregatedRecord::decode(body) else {
        return Ok(None);
    };
    if !message.has_required_fields() {
        return Ok(None);
    }
    let AggregatedRecord {
        partition_key_table: keys,
        explicit_hash_key_table: hash_keys,
        records,
    } = message;
    let mut out = Vec::with_capacity(records.len());
    for (position, record) in records.into_iter().enumerate() {
        let index = record.partition_key_index.unwrap_or_default();
        let partition_key = entry(&keys, index).ok_or(DeaggregateError::PartitionKeyIndex {
            record: position,
            index,
            table_len: keys.len(),
        })?;
        let explicit_hash_key = match record.explicit_hash_key_index {
            None => None,
            Some(index) => Some(entry(&hash_keys, index).ok_or(
                DeaggregateError::ExplicitHashKeyIndex {
                    record: position,
                    index,
                    table_len: hash_keys.len(),
                },
            )?),
        };
        out.push(UserRecord {
            partition_key: partition_key.clone(),
            explicit_hash_key: explicit_hash_key.cloned(),
            data: record.data.unwrap_or_default(),
        });
    }
    Ok(Some(out))
}

fn entry(table: &[String], index: u64) -> Option<&String> {
    usize::try_from(index).ok().and_then(|i| table.get(i))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::message::{Record, Tag};
    use proptest::prelude::*;

    /// Frames `message` as an aggregate (magic, message, MD5), whatever its content.
    fn framed(message: &AggregatedRecord) -> Bytes {
        let body = message.encode_to_vec();
        [MAGIC.as_slice(), &body, &md5(&body)].concat().into()
    }

    fn record(pk: u64, data: &'static str) -> Record {
        Record {
            partition_key_index: Some(pk),
            explicit_hash_key_index: None,
            data: Some(Bytes::from_static(data.as_bytes())),
            tags: Vec::new(),
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// An aggregate written by AWS's Python library `aws-kinesis-agg` 1.2.3 (PyPI, with
    /// protobuf 7.36.2), the version `scripts/emulators.sh` pins. Made with:
    ///
    /// ```text
    /// from aws_kinesis_agg.aggregator import RecordAggregator
    /// a = RecordAggregator()
    /// a.add_user_record("org-1", b"signup")
    /// a.add_user_record("org-2", b"")
    /// a.add_user_record("org-1", b"\x00\x01\xff", "170141183460469231731687303715884105728")
    /// a.add_user_record("org-\u00e9", "unicode \u2713".encode())
    /// a.add_user_record("org-2", b"last")
    /// pk, ehk, data = a.clear_and_get().get_contents()   # ("org-1", None, <these bytes>)
    /// print(data.hex())
    /// ```
    const AWS_KINESIS_AGG_1_2_3: &str = "f3899ac20a056f72672d310a056f72672d320a066f72672dc3a912273137\
        303134313138333436303436393233313733313638373330333731353838343130353732381a0a08001a067369\
        676e75701a0408011a001a09080010001a030001ff1a0f08021a0b756e69636f646520e29c931a0808011a046c\
        617374b4f886b17fc2cdc893d5f72065099bee";

    #[test]
    fn an_aggregate_written_by_aws_kinesis_agg_decodes() {
        let data = Bytes::from(hex(AWS_KINESIS_AGG_1_2_3));
        assert_eq!(data.len(), 139);
        let records = deaggregate(&data).unwrap().unwrap();
        let ehk = "170141183460469231731687303715884105728";
        assert_eq!(
            records,
            [
                UserRecord::new("org-1", &b"signup"[..]),
                UserRecord::new("org-2", &b""[..]),
                UserRecord::new("org-1", &b"\x00\x01\xff"[..]).with_explicit_hash_key(ehk),
                UserRecord::new("org-\u{e9}", "unicode \u{2713}"),
                UserRecord::new("org-2", &b"last"[..]),
            ]
        );
    }

    #[test]
    fn plain_and_short_records_pass_through() {
        for data in [
            &b""[..],
            b"plain",
            &MAGIC,
            &[MAGIC.as_slice(), &[0; DIGEST_LEN]].concat(),
        ] {
            assert_eq!(deaggregate(&Bytes::copy_from_slice(data)), Ok(None));
        }
    }

    #[test]
    fn a_wrong_checksum_is_a_plain_record_not_an_error() {
        let mut data = framed(&AggregatedRecord {
            partition_key_table: vec!["k".into()],
            explicit_hash_key_table: vec![],
            records: vec![record(0, "x")],
        })
        .to_vec();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        assert_eq!(deaggregate(&data.into()), Ok(None));
    }

    #[test]
    fn a_message_that_does_not_decode_is_a_plain_record() {
        // Valid framing and checksum around bytes that are no protobuf message (field 0).
        let body = [0u8, 1, 2];
        let data: Bytes = [MAGIC.as_slice(), &body, &md5(&body)].concat().into();
        assert_eq!(deaggregate(&data), Ok(None));
    }

    #[test]
    fn a_missing_required_field_is_a_plain_record() {
        let mut no_data = record(0, "x");
        no_data.data = None;
        let mut no_key = record(0, "x");
        no_key.partition_key_index = None;
        let mut tag_without_key = record(0, "x");
        tag_without_key.tags.push(Tag {
            key: None,
            value: Some("v".into()),
        });
        for r in [no_data, no_key, tag_without_key] {
            let data = framed(&AggregatedRecord {
                partition_key_table: vec!["k".into()],
                explicit_hash_key_table: vec![],
                records: vec![r],
            });
            assert_eq!(deaggregate(&data), Ok(None));
        }
    }

    #[test]
    fn tags_are_read_past() {
        let mut tagged = record(0, "x");
        tagged.tags.push(Tag {
            key: Some("k".into()),
            value: None,
        });
        let data = framed(&AggregatedRecord {
            partition_key_table: vec!["k".into()],
            explicit_hash_key_table: vec![],
            records: vec![tagged],
        });
        assert_eq!(
            deaggregate(&data).unwrap().unwrap(),
            [UserRecord::new("k", "x")]
        );
    }

    #[test]
    fn an_out_of_range_key_index_is_an_error_naming_the_record() {
        let data = framed(&AggregatedRecord {
            partition_key_table: vec!["a".into(), "b".into()],
            explicit_hash_key_table: vec![],
            records: vec![record(1, "ok"), record(2, "bad")],
        });
        let err = deaggregate(&data).unwrap_err();
        assert_eq!(
            err,
            DeaggregateError::PartitionKeyIndex {
                record: 1,
                index: 2,
                table_len: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "user record 1 of the aggregate names partition key 2, but the table has 2"
        );
        let mut bad_hash_key = record(0, "x");
        bad_hash_key.explicit_hash_key_index = Some(u64::MAX);
        let data = framed(&AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec![],
            records: vec![bad_hash_key],
        });
        assert_eq!(
            deaggregate(&data).unwrap_err().label(),
            "explicit_hash_key_index"
        );
    }

    #[test]
    fn an_aggregate_without_records_has_no_user_records() {
        let data = framed(&AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec![],
            records: vec![],
        });
        assert_eq!(deaggregate(&data), Ok(Some(vec![])));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = deaggregate(&data.into());
        }

        /// Past the framing and the checksum, so the message decoder sees arbitrary bytes.
        #[test]
        fn arbitrary_framed_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 1..300)) {
            let data: Bytes = [MAGIC.as_slice(), &body, &md5(&body)].concat().into();
            let _ = deaggregate(&data);
        }
    }
}
