//! The controller's state table: the leader lease and the operation journal (layout in the
//! parent module's docs).

use super::*;
use crate::aws::retry::{Idempotency, Retrier};
use crate::aws::{build_error, malformed};
use crate::backend::{BackendError, JournalEntry, LeaderRecord, LeaderToken, StateStore};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TableStatus, TransactWriteItem};
use chrono::{DateTime, Utc};
use shardctl_lease::sdk::TableSpec;
use shardctl_policies::history::{OperationOutcome, OperationRecord};
use std::collections::HashMap;
use std::time::Duration;

use super::items::*;

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

    pub(super) fn journal_key(stream: &str, id: &str) -> Item {
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
        let spec = TableSpec {
            hash_key: PK,
            range_key: Some(SK),
        };
        self.retrier
            .call(CREATE_TABLE, Idempotency::Idempotent, || async {
                let request = spec
                    .create_request(&self.client, &self.table)
                    .map_err(|e| build_error(CREATE_TABLE, e))?;
                match request.send().await.map_err(|e| classify(CREATE_TABLE, e)) {
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
