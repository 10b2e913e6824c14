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

use super::retry::{Idempotency, Retrier};
use super::{ErrorClass, build_error, classify_sdk, malformed};
use crate::backend::{
    BackendError, JournalEntry, LeaderRecord, LeaderToken, LeaseTables, StateStore,
};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, KeySchemaElement, KeyType,
    Put, ScalarAttributeType, TableStatus, TransactWriteItem,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, SecondsFormat, Utc};
use shardctl_lease::{StreamFilter, TableRows};
use shardctl_policies::history::{OperationKind, OperationOutcome, OperationRecord};
use std::collections::HashMap;
use std::time::Duration;

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

type Item = HashMap<String, AttributeValue>;

/// Reads KCL lease tables.
#[derive(Debug, Clone)]
pub struct DynamoLeaseTables {
    client: Client,
    retrier: Retrier,
    page_size: Option<i32>,
}

impl DynamoLeaseTables {
    /// An adapter over `config` (whose SDK retries should be disabled). `page_size` is the
    /// `Limit` of each `Scan` page (`None`: DynamoDB's 1 MB pages).
    pub fn new(config: &SdkConfig, retrier: Retrier, page_size: Option<i32>) -> Self {
        DynamoLeaseTables {
            client: Client::new(config),
            retrier,
            page_size,
        }
    }
}

impl LeaseTables for DynamoLeaseTables {
    async fn rows(&self, table: &str, stream: &StreamFilter) -> Result<TableRows, BackendError> {
        let mut rows = TableRows::new(stream.clone());
        let mut start_key: Option<Item> = None;
        loop {
            let start = start_key.take();
            let output = self
                .retrier
                .call(SCAN, Idempotency::Idempotent, || async {
                    self.client
                        .scan()
                        .table_name(table)
                        .consistent_read(true)
                        .set_limit(self.page_size)
                        .set_exclusive_start_key(start.clone())
                        .send()
                        .await
                        .map_err(|e| classify(SCAN, e))
                })
                .await
                .map_err(|error| match error {
                    BackendError::NotFound { api, message } => BackendError::NotFound {
                        api,
                        message: format!("lease table {table} does not exist: {message}"),
                    },
                    other => other,
                })?;
            for item in output.items() {
                rows.push(&shardctl_lease::sdk::from_sdk(item));
            }
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start_key = Some(key.clone()),
                _ => break,
            }
        }
        tracing::debug!(table, stream = %stream.name, summary = %rows.summary(), "read lease table");
        Ok(rows)
    }
}

/// The controller's state in one DynamoDB table: leader lease and operation journal.
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    retrier: Retrier,
    table: String,
    page_size: Option<i32>,
}

impl DynamoStateStore {
    /// A store in `table` over `config` (whose SDK retries should be disabled). `page_size` is
    /// the `Limit` of each `Query` page of [`StateStore::history`].
    pub fn new(
        config: &SdkConfig,
        retrier: Retrier,
        table: impl Into<String>,
        page_size: Option<i32>,
    ) -> Self {
        DynamoStateStore {
            client: Client::new(config),
            retrier,
            table: table.into(),
            page_size,
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn leader_key() -> Item {
        HashMap::from([
            (PK.to_string(), s(LEADER_KEY)),
            (SK.to_string(), s(LEADER_KEY)),
        ])
    }

    fn journal_key(stream: &str, id: &str) -> Item {
        HashMap::from([
            (PK.to_string(), s(format!("{JOURNAL_PREFIX}{stream}"))),
            (SK.to_string(), s(id)),
        ])
    }

    /// `None` when the table does not exist.
    async fn describe(
        &self,
    ) -> Result<Option<aws_sdk_dynamodb::types::TableDescription>, BackendError> {
        let described = self
            .retrier
            .call(DESCRIBE_TABLE, Idempotency::Idempotent, || async {
                self.client
                    .describe_table()
                    .table_name(&self.table)
                    .send()
                    .await
                    .map_err(|e| classify(DESCRIBE_TABLE, e))
            })
            .await;
        match described {
            Ok(output) => output
                .table
                .map(Some)
                .ok_or_else(|| malformed(DESCRIBE_TABLE, "no Table")),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn create(&self) -> Result<(), BackendError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| build_error(CREATE_TABLE, e))
        };
        let key = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(|e| build_error(CREATE_TABLE, e))
        };
        let attributes = vec![attribute(PK)?, attribute(SK)?];
        let keys = vec![key(PK, KeyType::Hash)?, key(SK, KeyType::Range)?];
        self.retrier
            .call(CREATE_TABLE, Idempotency::Idempotent, || async {
                let created = self
                    .client
                    .create_table()
                    .table_name(&self.table)
                    .set_attribute_definitions(Some(attributes.clone()))
                    .set_key_schema(Some(keys.clone()))
                    .billing_mode(BillingMode::PayPerRequest)
                    .send()
                    .await
                    .map_err(|e| classify(CREATE_TABLE, e));
                match created {
                    // Another replica created it first: fine, `ensure` waits for ACTIVE.
                    Ok(_) | Err(BackendError::ResourceInUse { .. }) => Ok(()),
                    Err(error) => Err(error),
                }
            })
            .await?;
        tracing::info!(table = %self.table, "created state table");
        Ok(())
    }

    fn check_key_schema(
        &self,
        table: &aws_sdk_dynamodb::types::TableDescription,
    ) -> Result<(), BackendError> {
        let mut keys: Vec<(String, String)> = table
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_string(),
                    k.key_type().as_str().to_string(),
                )
            })
            .collect();
        keys.sort();
        let expected = [
            (PK.to_string(), "HASH".to_string()),
            (SK.to_string(), "RANGE".to_string()),
        ];
        if keys != expected {
            return Err(BackendError::Invalid {
                api: DESCRIBE_TABLE,
                message: format!(
                    "state table {} has key schema {keys:?}; shardctl needs {PK} (HASH, S) + {SK} \
                     (RANGE, S): point the controller at another table",
                    self.table
                ),
            });
        }
        Ok(())
    }

    /// The leader item, read consistently.
    async fn read_leader(&self) -> Result<Option<Leader>, BackendError> {
        let output = self
            .retrier
            .call(GET_ITEM, Idempotency::Idempotent, || async {
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::leader_key()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| classify(GET_ITEM, e))
            })
            .await?;
        output
            .item()
            .map(|item| {
                Leader::from_item(item)
                    .map_err(|what| malformed(GET_ITEM, format!("leader item: {what}")))
            })
            .transpose()
    }

    /// Sets the leader item's expiry, conditional on `token` being current. `Ok(false)` when
    /// leadership was lost.
    async fn set_expiry(
        &self,
        token: &LeaderToken,
        expires_at_ms: i64,
    ) -> Result<bool, BackendError> {
        let updated = self
            .retrier
            .call(UPDATE_ITEM, Idempotency::Idempotent, || async {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::leader_key()))
                    .update_expression("SET #expiresAt = :expiresAt")
                    .condition_expression("#owner = :owner AND #fence = :fence")
                    .expression_attribute_names("#expiresAt", EXPIRES_AT)
                    .expression_attribute_names("#owner", OWNER)
                    .expression_attribute_names("#fence", FENCE)
                    .expression_attribute_values(":expiresAt", n(expires_at_ms))
                    .expression_attribute_values(":owner", s(&token.owner))
                    .expression_attribute_values(":fence", n(token.fence))
                    .send()
                    .await
                    .map_err(|e| classify(UPDATE_ITEM, e))
            })
            .await;
        match updated {
            Ok(_) => Ok(true),
            Err(BackendError::ConditionFailed { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// The leader item.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leader {
    owner: String,
    fence: u64,
    expires_at_ms: i64,
}

impl Leader {
    fn from_item(item: &Item) -> Result<Self, String> {
        Ok(Leader {
            owner: string(item, OWNER)?.to_string(),
            fence: number(item, FENCE)?,
            expires_at_ms: number(item, EXPIRES_AT)?,
        })
    }
}

impl StateStore for DynamoStateStore {
    async fn leader_record(&self) -> Result<Option<LeaderRecord>, BackendError> {
        Ok(self.read_leader().await?.map(|l| LeaderRecord {
            owner: l.owner,
            fence: l.fence,
            expires_at: DateTime::from_timestamp_millis(l.expires_at_ms).unwrap_or_default(),
        }))
    }

    async fn ensure(&self) -> Result<(), BackendError> {
        let started = tokio::time::Instant::now();
        if self.describe().await?.is_none() {
            self.create().await?;
        }
        loop {
            let table = self.describe().await?;
            if let Some(table) = &table {
                self.check_key_schema(table)?;
                if table.table_status() == Some(&TableStatus::Active) {
                    return Ok(());
                }
            }
            if started.elapsed() > TABLE_ACTIVE_DEADLINE {
                return Err(BackendError::Transient {
                    api: DESCRIBE_TABLE,
                    message: format!(
                        "state table {} not ACTIVE after {}s",
                        self.table,
                        TABLE_ACTIVE_DEADLINE.as_secs()
                    ),
                });
            }
            tokio::time::sleep(TABLE_POLL_INTERVAL).await;
        }
    }

    async fn history(
        &self,
        stream: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<JournalEntry>, BackendError> {
        let pk = format!("{JOURNAL_PREFIX}{stream}");
        let since = time_key(since);
        let mut entries = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let start = start_key.take();
            let output = self
                .retrier
                .call(QUERY, Idempotency::Idempotent, || async {
                    self.client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("#pk = :pk AND #sk >= :since")
                        .expression_attribute_names("#pk", PK)
                        .expression_attribute_names("#sk", SK)
                        .expression_attribute_values(":pk", s(&pk))
                        .expression_attribute_values(":since", s(&since))
                        .scan_index_forward(true)
                        .consistent_read(true)
                        .set_limit(self.page_size)
                        .set_exclusive_start_key(start.clone())
                        .send()
                        .await
                        .map_err(|e| classify(QUERY, e))
                })
                .await?;
            for item in output.items() {
                entries.push(entry_from_item(item).map_err(|what| {
                    malformed(
                        QUERY,
                        format!("journal of {stream} in {}: {what}", self.table),
                    )
                })?);
            }
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start_key = Some(key.clone()),
                _ => return Ok(entries),
            }
        }
    }

    async fn begin(
        &self,
        stream: &str,
        record: &OperationRecord,
        leader: &LeaderToken,
    ) -> Result<String, BackendError> {
        let id = format!("{}#{}", time_key(record.started_at), uuid::Uuid::new_v4());
        let mut item = entry_item(&record.kind, &record.shard_ids, record.started_at);
        item.extend(Self::journal_key(stream, &id));
        item.insert(OWNER.into(), s(&leader.owner));
        item.insert(FENCE.into(), n(leader.fence));
        let fenced = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(Self::leader_key()))
            .condition_expression("#owner = :owner AND #fence = :fence")
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_names("#fence", FENCE)
            .expression_attribute_values(":owner", s(&leader.owner))
            .expression_attribute_values(":fence", n(leader.fence))
            .build()
            .map_err(|e| build_error(TRANSACT_WRITE_ITEMS, e))?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| build_error(TRANSACT_WRITE_ITEMS, e))?;
        let items = vec![
            TransactWriteItem::builder().condition_check(fenced).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        // The same token on every attempt makes a retry after an unknown outcome idempotent.
        let request_token = uuid::Uuid::new_v4().to_string();
        self.retrier
            .call(TRANSACT_WRITE_ITEMS, Idempotency::Idempotent, || async {
                self.client
                    .transact_write_items()
                    .set_transact_items(Some(items.clone()))
                    .client_request_token(&request_token)
                    .send()
                    .await
                    .map_err(|e| classify(TRANSACT_WRITE_ITEMS, e))
            })
            .await
            .map_err(|error| match error {
                BackendError::ConditionFailed { api, message } => BackendError::ConditionFailed {
                    api,
                    message: format!(
                        "not journalled: {} no longer leads with fence {} ({message})",
                        leader.owner, leader.fence
                    ),
                },
                other => other,
            })?;
        tracing::info!(stream, id = %id, kind = %record.kind, "operation journalled");
        Ok(id)
    }

    async fn finish(
        &self,
        stream: &str,
        id: &str,
        outcome: OperationOutcome,
    ) -> Result<(), BackendError> {
        self.retrier
            .call(UPDATE_ITEM, Idempotency::Idempotent, || async {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::journal_key(stream, id)))
                    .update_expression("SET #outcome = :outcome, #finishedAt = :finishedAt")
                    .condition_expression("attribute_exists(#pk) AND #outcome = :inFlight")
                    .expression_attribute_names("#outcome", OUTCOME)
                    .expression_attribute_names("#finishedAt", FINISHED_AT)
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_values(":outcome", s(outcome_text(outcome)))
                    .expression_attribute_values(
                        ":inFlight",
                        s(outcome_text(OperationOutcome::InFlight)),
                    )
                    .expression_attribute_values(":finishedAt", s(time_key(Utc::now())))
                    .send()
                    .await
                    .map_err(|e| classify(UPDATE_ITEM, e))
            })
            .await
            .map_err(|error| match error {
                BackendError::ConditionFailed { api, .. } => BackendError::ConditionFailed {
                    api,
                    message: format!(
                        "journal entry {id} of stream {stream} in {} is missing or no longer in flight",
                        self.table
                    ),
                },
                other => other,
            })?;
        tracing::info!(
            stream,
            id,
            outcome = outcome_text(outcome),
            "operation finished"
        );
        Ok(())
    }

    async fn acquire_leadership(
        &self,
        owner: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<LeaderToken>, BackendError> {
        let sent = tokio::time::Instant::now();
        let expires_at = expiry(now, ttl)?;
        let now_ms = now.timestamp_millis();
        let current = self.read_leader().await?;
        let fence = match &current {
            None => 1,
            Some(c) if c.owner != owner && c.expires_at_ms > now_ms => {
                tracing::debug!(owner, leader = %c.owner, fence = c.fence, "another replica leads");
                return Ok(None);
            }
            Some(c) if c.owner == owner => c.fence,
            Some(c) => c.fence.checked_add(1).ok_or_else(|| BackendError::Other {
                api: PUT_ITEM,
                message: "leader fence overflowed".into(),
            })?,
        };
        let item = HashMap::from_iter(Self::leader_key().into_iter().chain([
            (OWNER.to_string(), s(owner)),
            (FENCE.to_string(), n(fence)),
            (EXPIRES_AT.to_string(), n(expires_at.timestamp_millis())),
        ]));
        let put = self
            .retrier
            .call(PUT_ITEM, Idempotency::Idempotent, || async {
                let request = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item.clone()));
                let request = match &current {
                    None => request
                        .condition_expression("attribute_not_exists(#pk)")
                        .expression_attribute_names("#pk", PK),
                    // Unchanged since read, and expired or ours.
                    Some(c) => request
                        .condition_expression(
                            "#owner = :current AND #fence = :fence \
                             AND (#expiresAt <= :now OR #owner = :owner)",
                        )
                        .expression_attribute_names("#owner", OWNER)
                        .expression_attribute_names("#fence", FENCE)
                        .expression_attribute_names("#expiresAt", EXPIRES_AT)
                        .expression_attribute_values(":current", s(&c.owner))
                        .expression_attribute_values(":fence", n(c.fence))
                        .expression_attribute_values(":now", n(now_ms))
                        .expression_attribute_values(":owner", s(owner)),
                };
                request.send().await.map_err(|e| classify(PUT_ITEM, e))
            })
            .await;
        let token = LeaderToken::new(owner, fence, expires_at, ttl, sent);
        match put {
            Ok(_) => {
                tracing::info!(owner, fence, "leadership acquired");
                Ok(Some(token))
            }
            Err(BackendError::ConditionFailed { .. }) => {
                // A retry after an attempt whose outcome was unknown fails its own condition when
                // that attempt did land: the item then holds exactly what we wrote.
                let ours = Leader {
                    owner: owner.to_string(),
                    fence,
                    expires_at_ms: expires_at.timestamp_millis(),
                };
                if self.read_leader().await?.as_ref() == Some(&ours) {
                    tracing::info!(owner, fence, "leadership acquired");
                    return Ok(Some(token));
                }
                tracing::debug!(owner, "lost the race for leadership");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    async fn renew_leadership(
        &self,
        token: &LeaderToken,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<LeaderToken>, BackendError> {
        let sent = tokio::time::Instant::now();
        let expires_at = expiry(now, ttl)?;
        if self
            .set_expiry(token, expires_at.timestamp_millis())
            .await?
        {
            Ok(Some(LeaderToken {
                expires_at,
                ttl,
                local_deadline: sent.checked_add(ttl).unwrap_or(sent),
                ..token.clone()
            }))
        } else {
            tracing::warn!(owner = %token.owner, fence = token.fence, "leadership lost");
            Ok(None)
        }
    }

    /// Expires the lease rather than deleting it, so the fence keeps growing.
    async fn release_leadership(&self, token: &LeaderToken) -> Result<(), BackendError> {
        if self.set_expiry(token, 0).await? {
            tracing::info!(owner = %token.owner, fence = token.fence, "leadership released");
        } else {
            tracing::info!(owner = %token.owner, fence = token.fence, "leadership already lost");
        }
        Ok(())
    }
}

/// `now + ttl`, truncated to the milliseconds the table stores.
fn expiry(now: DateTime<Utc>, ttl: Duration) -> Result<DateTime<Utc>, BackendError> {
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
fn time_key(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn outcome_text(outcome: OperationOutcome) -> &'static str {
    match outcome {
        OperationOutcome::InFlight => "inFlight",
        OperationOutcome::Succeeded => "succeeded",
        OperationOutcome::Failed => "failed",
    }
}

fn kind_text(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Split => "split",
        OperationKind::Merge => "merge",
    }
}

/// The attributes of a new journal entry (outcome `inFlight`), without its key.
fn entry_item(kind: &OperationKind, shard_ids: &[String], started_at: DateTime<Utc>) -> Item {
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

fn entry_from_item(item: &Item) -> Result<JournalEntry, String> {
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

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A string attribute; `Err` names it when missing or of another type.
fn string<'a>(item: &'a Item, name: &str) -> Result<&'a str, String> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        Some(_) => Err(format!("attribute {name} is not a string")),
        None => Err(format!("attribute {name} is missing")),
    }
}

/// A number attribute; `Err` names it when missing, of another type or out of range.
fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, String> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| format!("attribute {name} = {value} is out of range")),
        Some(_) => Err(format!("attribute {name} is not a number")),
        None => Err(format!("attribute {name} is missing")),
    }
}

/// Classifies a DynamoDB SDK error by its type.
fn classify<E>(api: &'static str, error: SdkError<E>) -> BackendError
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
fn cancellation_class<'a>(codes: impl Iterator<Item = &'a str>) -> ErrorClass {
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

    use super::*;
    use chrono::TimeZone;

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
