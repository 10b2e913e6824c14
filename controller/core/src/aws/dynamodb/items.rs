//! How the state table's items read and write: the leader item, journal entries, time keys.

use super::*;
use crate::backend::{BackendError, JournalEntry};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use shardctl_policies::history::{OperationKind, OperationOutcome, OperationRecord};
use std::collections::HashMap;
use std::time::Duration;

/// The leader item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Leader {
    pub(super) owner: String,
    pub(super) fence: u64,
    pub(super) expires_at_ms: i64,
}

impl Leader {
    pub(super) fn from_item(item: &Item) -> Result<Self, String> {
        Ok(Leader {
            owner: string(item, OWNER)?.to_string(),
            fence: number(item, FENCE)?,
            expires_at_ms: number(item, EXPIRES_AT)?,
        })
    }
}

/// `now + ttl`, truncated to the milliseconds the table stores.
pub(super) fn expiry(now: DateTime<Utc>, ttl: Duration) -> Result<DateTime<Utc>, BackendError> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .and_then(|t| DateTime::from_timestamp_millis(t.timestamp_millis()))
        .ok_or_else(|| BackendError::Invalid {
            api: PUT_ITEM,
            message: format!("lease ttl {ttl:?} from {now} is out of range"),
        })
}

/// A fixed-width UTC timestamp: sorts as text in time order.
pub(super) fn time_key(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(super) fn outcome_text(outcome: OperationOutcome) -> &'static str {
    match outcome {
        OperationOutcome::InFlight => "inFlight",
        OperationOutcome::Succeeded => "succeeded",
        OperationOutcome::Failed => "failed",
    }
}

pub(super) fn kind_text(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Split => "split",
        OperationKind::Merge => "merge",
    }
}

/// The attributes of a new journal entry (outcome `inFlight`), without its key.
pub(super) fn entry_item(
    kind: &OperationKind,
    shard_ids: &[String],
    started_at: DateTime<Utc>,
) -> Item {
    HashMap::from([
        (KIND.to_string(), s(kind_text(*kind))),
        (
            SHARD_IDS.to_string(),
            AttributeValue::L(shard_ids.iter().map(s).collect()),
        ),
        (STARTED_AT.to_string(), s(time_key(started_at))),
        (
            OUTCOME.to_string(),
            s(outcome_text(OperationOutcome::InFlight)),
        ),
    ])
}

pub(super) fn entry_from_item(item: &Item) -> Result<JournalEntry, String> {
    let id = string(item, SK)?.to_string();
    let kind = match string(item, KIND)? {
        "split" => OperationKind::Split,
        "merge" => OperationKind::Merge,
        other => return Err(format!("entry {id}: unknown kind {other:?}")),
    };
    let shard_ids = match item.get(SHARD_IDS) {
        Some(AttributeValue::L(values)) => values
            .iter()
            .map(|v| v.as_s().cloned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("entry {id}: {SHARD_IDS} holds a non-string"))?,
        _ => return Err(format!("entry {id}: no {SHARD_IDS} list")),
    };
    let started_at = DateTime::parse_from_rfc3339(string(item, STARTED_AT)?)
        .map_err(|e| format!("entry {id}: {STARTED_AT}: {e}"))?
        .with_timezone(&Utc);
    let outcome = match string(item, OUTCOME)? {
        "inFlight" => OperationOutcome::InFlight,
        "succeeded" => OperationOutcome::Succeeded,
        "failed" => OperationOutcome::Failed,
        other => return Err(format!("entry {id}: unknown outcome {other:?}")),
    };
    let fence = match item.get(FENCE) {
        Some(AttributeValue::N(n)) => n.parse::<u64>().ok(),
        _ => None,
    };
    Ok(JournalEntry {
        id,
        record: OperationRecord {
            kind,
            shard_ids,
            started_at,
            outcome,
        },
        fence,
    })
}
