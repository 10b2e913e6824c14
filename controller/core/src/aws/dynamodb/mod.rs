//! DynamoDB: consumer lease tables ([`LeaseTables`]) and the controller's state table
//! ([`StateStore`]).
//!
//! # The state table
//! One table (name configurable, created on demand with `PAY_PER_REQUEST`), key `pk` (S) +
//! `sk` (S):
//!
//! | item | `pk` | `sk` | attributes |
//! |---|---|---|---|
//! | leader lease | `leader` | `leader` | `owner`, `fence` (N), `expiresAt` (N, Unix ms) |
//! | journal entry | `journal#<stream>` | `<startedAt RFC 3339, ns>#<uuid>` (the entry id) | `kind`, `shardIds` (L of S), `startedAt`, `outcome`, `owner`, `fence`, `finishedAt` (once settled) |
//!
//! The fence grows by one every time leadership changes owner and never goes back: releasing
//! leadership expires the lease instead of deleting it. `begin` is a transaction of a condition
//! check that the leader item still names this owner and fence plus the put of the entry, so a
//! deposed leader can never journal an operation. Sort keys are fixed-width timestamps, so a
//! `Query` returns entries oldest first.
//!
//! Every expression names attributes through `#name` placeholders: DynamoDB rejects reserved
//! words (`owner` is one) that emulators accept.

use crate::aws::{ErrorClass, classify_sdk};
use crate::backend::BackendError;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::collections::HashMap;
use std::time::Duration;

mod items;
mod lease_tables;
mod state;

pub use lease_tables::DynamoLeaseTables;
pub use state::DynamoStateStore;

const SCAN: &str = "Scan";
const QUERY: &str = "Query";
const GET_ITEM: &str = "GetItem";
const PUT_ITEM: &str = "PutItem";
const UPDATE_ITEM: &str = "UpdateItem";
const TRANSACT_WRITE_ITEMS: &str = "TransactWriteItems";
const DESCRIBE_TABLE: &str = "DescribeTable";
const CREATE_TABLE: &str = "CreateTable";

/// The partition key attribute of the state table.
pub const PK: &str = "pk";
/// The sort key attribute of the state table.
pub const SK: &str = "sk";
const LEADER_KEY: &str = "leader";
const JOURNAL_PREFIX: &str = "journal#";

const OWNER: &str = "owner";
const FENCE: &str = "fence";
const EXPIRES_AT: &str = "expiresAt";
const KIND: &str = "kind";
const SHARD_IDS: &str = "shardIds";
const STARTED_AT: &str = "startedAt";
const OUTCOME: &str = "outcome";
const FINISHED_AT: &str = "finishedAt";

/// How long `ensure` waits for a new table to become `ACTIVE`.
const TABLE_ACTIVE_DEADLINE: Duration = Duration::from_secs(120);
const TABLE_POLL_INTERVAL: Duration = Duration::from_millis(500);

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A string attribute; `Err` names it when missing or of another type.
pub(super) fn string<'a>(item: &'a Item, name: &str) -> Result<&'a str, String> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        Some(_) => Err(format!("attribute {name} is not a string")),
        None => Err(format!("attribute {name} is missing")),
    }
}

/// A number attribute; `Err` names it when missing, of another type or out of range.
pub(super) fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, String> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| format!("attribute {name} = {value} is out of range")),
        Some(_) => Err(format!("attribute {name} is not a number")),
        None => Err(format!("attribute {name} is missing")),
    }
}

/// Classifies a DynamoDB SDK error by its type.
pub(super) fn classify<E>(api: &'static str, error: SdkError<E>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    aws_sdk_dynamodb::Error: From<E>,
{
    classify_sdk(api, error, |e| {
        use aws_sdk_dynamodb::Error as D;
        match D::from(e) {
            D::ConditionalCheckFailedException(_) => Some(ErrorClass::ConditionFailed),
            D::TransactionCanceledException(e) => Some(cancellation_class(
                e.cancellation_reasons().iter().filter_map(|r| r.code()),
            )),
            D::ResourceNotFoundException(_) | D::TableNotFoundException(_) => {
                Some(ErrorClass::NotFound)
            }
            D::ProvisionedThroughputExceededException(_)
            | D::ThrottlingException(_)
            | D::RequestLimitExceeded(_) => Some(ErrorClass::Throttled),
            D::LimitExceededException(_) | D::ItemCollectionSizeLimitExceededException(_) => {
                Some(ErrorClass::LimitExceeded)
            }
            D::ResourceInUseException(_) | D::TableInUseException(_) => {
                Some(ErrorClass::ResourceInUse)
            }
            D::InternalServerError(_)
            | D::TransactionConflictException(_)
            | D::TransactionInProgressException(_)
            | D::ReplicatedWriteConflictException(_) => Some(ErrorClass::Transient),
            D::IdempotentParameterMismatchException(_) => Some(ErrorClass::Invalid),
            // Unmodelled codes (`ValidationException`, `AccessDeniedException`, 5xx, ...).
            _ => None,
        }
    })
}

/// What a cancelled transaction means, from its per-item reasons: a failed condition wins (it
/// will fail again), then throttling and conflicts (worth retrying).
pub(super) fn cancellation_class<'a>(codes: impl Iterator<Item = &'a str>) -> ErrorClass {
    let codes: Vec<&str> = codes.collect();
    if codes.contains(&"ConditionalCheckFailed") {
        ErrorClass::ConditionFailed
    } else if codes.iter().any(|c| {
        matches!(
            *c,
            "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded"
        )
    }) {
        ErrorClass::Throttled
    } else if codes.contains(&"TransactionConflict") {
        ErrorClass::Transient
    } else if codes.contains(&"ValidationError")
        || codes.contains(&"ItemCollectionSizeLimitExceeded")
    {
        ErrorClass::Invalid
    } else {
        ErrorClass::Other
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::items::*;
    use super::*;
    use chrono::TimeZone;
    use chrono::{DateTime, Utc};
    use shardctl_policies::history::{OperationKind, OperationOutcome, OperationRecord};

    #[test]
    fn time_keys_sort_in_time_order_and_round_trip() {
        let a = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
        let b = a + chrono::Duration::nanoseconds(1);
        let c = a + chrono::Duration::days(400);
        let keys = [time_key(a), time_key(b), time_key(c)];
        assert!(keys[0] < keys[1] && keys[1] < keys[2]);
        assert!(keys.iter().all(|k| k.len() == keys[0].len()));
        for (t, k) in [a, b, c].iter().zip(&keys) {
            assert_eq!(DateTime::parse_from_rfc3339(k).unwrap(), *t);
        }
        // An entry started exactly at `since` sorts after the bare `since` key.
        assert!(format!("{}#x", keys[0]).as_str() >= keys[0].as_str());
    }

    #[test]
    fn journal_entries_round_trip_through_items() {
        let started_at = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        let shard_ids = vec![
            "shardId-000000000002".to_string(),
            "shardId-000000000003".to_string(),
        ];
        let mut item = entry_item(&OperationKind::Merge, &shard_ids, started_at);
        item.extend(DynamoStateStore::journal_key("orders", "id-1"));
        let entry = entry_from_item(&item).unwrap();
        assert_eq!(entry.id, "id-1");
        assert_eq!(
            entry.record,
            OperationRecord {
                kind: OperationKind::Merge,
                shard_ids,
                started_at,
                outcome: OperationOutcome::InFlight,
            }
        );
        item.insert(OUTCOME.into(), s("exploded"));
        assert!(entry_from_item(&item).unwrap_err().contains("outcome"));
        item.remove(KIND);
        assert!(entry_from_item(&item).unwrap_err().contains("kind"));
    }

    #[test]
    fn malformed_leader_items_are_errors() {
        let mut item = HashMap::from([
            (OWNER.to_string(), s("a")),
            (FENCE.to_string(), n(3)),
            (EXPIRES_AT.to_string(), n(1_000)),
        ]);
        assert_eq!(
            Leader::from_item(&item).unwrap(),
            Leader {
                owner: "a".into(),
                fence: 3,
                expires_at_ms: 1_000
            }
        );
        item.insert(FENCE.into(), n(-1));
        assert!(Leader::from_item(&item).unwrap_err().contains("fence"));
        item.insert(FENCE.into(), s("3"));
        assert!(
            Leader::from_item(&item)
                .unwrap_err()
                .contains("not a number")
        );
        item.remove(OWNER);
        assert!(Leader::from_item(&item).unwrap_err().contains("owner"));
    }

    #[test]
    fn cancelled_transactions_are_classified_by_their_reasons() {
        let class = |codes: &[&str]| cancellation_class(codes.iter().copied());
        assert_eq!(
            class(&["ConditionalCheckFailed", "None"]),
            ErrorClass::ConditionFailed
        );
        assert_eq!(class(&["None", "ThrottlingError"]), ErrorClass::Throttled);
        assert_eq!(
            class(&["TransactionConflict", "None"]),
            ErrorClass::Transient
        );
        assert_eq!(class(&["ValidationError"]), ErrorClass::Invalid);
        assert_eq!(class(&[]), ErrorClass::Other);
    }

    #[test]
    fn expiry_is_truncated_to_milliseconds() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap()
            + chrono::Duration::nanoseconds(1_500_999);
        let t = expiry(now, Duration::from_secs(10)).unwrap();
        assert_eq!(t.timestamp_millis(), now.timestamp_millis() + 10_000);
        assert_eq!(t.timestamp_subsec_nanos() % 1_000_000, 0);
        assert!(expiry(now, Duration::MAX).is_err());
    }
}
