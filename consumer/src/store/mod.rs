//! The lease table in DynamoDB: KCL attribute names and types, every ownership or progress change a
//! conditional write (take and steal: [`LeaseStore::acquire`], on the row exactly as scanned;
//! renew, checkpoint, release: on `leaseCounter` and owner; the handoff's last checkpoint: on
//! `checkpointOwner` and `leaseCounter`), every call bounded in time
//! ([`LeaseStore::with_call_timeout`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, TableStatus};
use tracing::{debug, info};

use crate::lease::{Checkpoint, Lease, attr};
use crate::ownership::{AcquireKind, Acquisition};
use shardctl_lease::sdk::TableSpec;
use shardctl_lease::{Row, sdk};

mod progress;
#[cfg(test)]
mod tests;
mod transfer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The lease table's shape, as KCL creates it: `leaseKey` (string) only, on demand.
const LEASE_TABLE: TableSpec<'static> = TableSpec {
    hash_key: attr::LEASE_KEY,
    range_key: None,
};

/// A lease row that could not be read (the shared model's error). The row is kept out of
/// decisions, never treated as absent.
pub use shardctl_lease::RowError as LeaseRowError;

/// Errors of [`LeaseStore`] operations.
#[derive(Debug, thiserror::Error)]
pub enum LeaseStoreError {
    /// The conditional write failed: the lease changed (another worker took it or we lost it).
    #[error("lease {lease_key} changed concurrently (conditional check failed)")]
    ConditionFailed {
        /// Shard id of the lease.
        lease_key: String,
    },
    /// DynamoDB answered with an error or could not be reached.
    #[error("DynamoDB {operation} failed: {message}")]
    Dynamo {
        /// The API operation.
        operation: &'static str,
        /// The error with its context.
        message: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The table did not become `ACTIVE` in time.
    #[error("lease table {table} is not ACTIVE after {waited:?}")]
    TableNotReady {
        /// Table name.
        table: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The call did not answer within the store's bound (see [`LeaseStore::with_call_timeout`]).
    /// A write may or may not have been applied; it is conditional, so retrying is safe.
    #[error("DynamoDB {operation} on the lease table did not answer within {after:?}")]
    Timeout {
        /// The API operation.
        operation: &'static str,
        /// The bound.
        after: Duration,
    },
    /// A row returned by a write could not be read back.
    #[error("lease row {lease_key} unreadable: {source}")]
    Row {
        /// Shard id of the lease.
        lease_key: String,
        /// What is wrong with it.
        #[source]
        source: LeaseRowError,
    },
}

impl LeaseStoreError {
    /// Fixed label for metrics.
    ///
    /// ```
    /// use shardctl_consumer::store::LeaseStoreError;
    /// let e = LeaseStoreError::ConditionFailed { lease_key: "s".into() };
    /// assert_eq!(e.label(), "condition_failed");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Self::ConditionFailed { .. } => "condition_failed",
            Self::Dynamo { .. } => "dynamodb",
            Self::TableNotReady { .. } => "table_not_ready",
            Self::Timeout { .. } => "timeout",
            Self::Row { .. } => "row",
        }
    }

    /// True when the write lost a race (the lease is not ours, or no longer).
    ///
    /// ```
    /// use shardctl_consumer::store::LeaseStoreError;
    /// assert!(LeaseStoreError::ConditionFailed { lease_key: "s".into() }.is_condition_failed());
    /// ```
    pub fn is_condition_failed(&self) -> bool {
        matches!(self, Self::ConditionFailed { .. })
    }
}

fn dynamo_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> LeaseStoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    LeaseStoreError::Dynamo {
        operation,
        message: DisplayErrorContext(&err).to_string(),
        source: Box::new(err),
    }
}

/// Result of scanning the table.
#[derive(Debug, Clone, Default)]
pub struct LeaseScan {
    /// Readable rows.
    pub leases: Vec<Lease>,
    /// Rows that could not be read, by `leaseKey` when it was readable. They are unknown, so the
    /// worker neither takes them nor counts them as drained.
    pub unreadable: Vec<(Option<String>, LeaseRowError)>,
    /// KCL 3.5+ rows that are not leases (coordinator state, worker metrics), skipped.
    pub non_lease_rows: usize,
}

/// Reads a KCL lease row (by the shared model, [`shardctl_lease::lease_from_item`]).
///
/// ```
/// use std::collections::HashMap;
/// use aws_sdk_dynamodb::types::AttributeValue;
/// use shardctl_consumer::store::lease_from_item;
/// let item = HashMap::from([
///     ("leaseKey".to_string(), AttributeValue::S("shardId-000000000000".into())),
///     ("leaseCounter".to_string(), AttributeValue::N("3".into())),
///     ("checkpoint".to_string(), AttributeValue::S("TRIM_HORIZON".into())),
/// ]);
/// let lease = lease_from_item(&item).unwrap();
/// assert_eq!(lease.lease_counter, 3);
/// ```
pub fn lease_from_item(item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseRowError> {
    shardctl_lease::lease_from_item(&sdk::from_sdk(item))
}

/// Writes a KCL lease row (empty sets and absent values are omitted, as DynamoDB requires).
///
/// ```
/// use shardctl_consumer::{Checkpoint, Lease};
/// use shardctl_consumer::store::{lease_from_item, lease_to_item};
/// let lease = Lease::new("shardId-1", Checkpoint::TrimHorizon).with_parents(["shardId-0"]);
/// assert_eq!(lease_from_item(&lease_to_item(&lease)).unwrap(), lease);
/// ```
pub fn lease_to_item(lease: &Lease) -> HashMap<String, AttributeValue> {
    sdk::to_sdk(&shardctl_lease::lease_to_item(lease))
}

/// A conditional write's result: `Ok(true)` when it was applied, `Ok(false)` when its condition
/// did not hold.
fn applied<O, E, R>(
    operation: &'static str,
    result: Result<O, SdkError<E, R>>,
) -> Result<bool, LeaseStoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(err)
            if err.as_service_error().and_then(ProvideErrorMetadata::code)
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(err) => Err(dynamo_error(operation, err)),
    }
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The lease table of one consumer application.
///
/// ```no_run
/// # async fn demo() -> Result<(), shardctl_consumer::store::LeaseStoreError> {
/// use aws_config::BehaviorVersion;
/// use shardctl_consumer::store::LeaseStore;
/// let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
/// let store = LeaseStore::new(aws_sdk_dynamodb::Client::new(&config), "billing-consumer");
/// store.ensure_table().await?;
/// let scan = store.scan().await?;
/// println!("{} leases", scan.leases.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LeaseStore {
    client: Client,
    table: String,
    call_timeout: Option<Duration>,
}

impl LeaseStore {
    /// A store over `table` (not created until [`LeaseStore::ensure_table`]).
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use shardctl_consumer::store::LeaseStore;
    /// let config = aws_config::load_from_env().await;
    /// let store = LeaseStore::new(aws_sdk_dynamodb::Client::new(&config), "my-app");
    /// assert_eq!(store.table_name(), "my-app");
    /// # }
    /// ```
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            call_timeout: None,
        }
    }

    /// Bounds every lease-table call (each page of a scan, each read and write; not table
    /// creation): one that does not answer in time fails with [`LeaseStoreError::Timeout`]
    /// instead of holding up its caller. The worker sets a quarter of the failover time, so a
    /// hung call costs at most one renewal attempt.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use std::time::Duration;
    /// use shardctl_consumer::store::LeaseStore;
    /// let config = aws_config::load_from_env().await;
    /// let store = LeaseStore::new(aws_sdk_dynamodb::Client::new(&config), "my-app")
    ///     .with_call_timeout(Some(Duration::from_millis(2500)));
    /// # }
    /// ```
    pub fn with_call_timeout(mut self, bound: Option<Duration>) -> Self {
        self.call_timeout = bound;
        self
    }

    /// Runs one call within the bound.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, LeaseStoreError> {
        match self.call_timeout {
            None => Ok(call.await),
            Some(after) => tokio::time::timeout(after, call)
                .await
                .map_err(|_| LeaseStoreError::Timeout { operation, after }),
        }
    }

    /// The table name.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) {
    /// println!("{}", store.table_name());
    /// # }
    /// ```
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Creates the table (hash key `leaseKey`, on-demand billing) if it does not exist and waits
    /// until it is `ACTIVE`.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// store.ensure_table().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ensure_table(&self) -> Result<(), LeaseStoreError> {
        let request = LEASE_TABLE
            .create_request(&self.client, &self.table)
            .map_err(|e| build_error("CreateTable", e))?;
        match request.send().await {
            Ok(_) => info!(table = %self.table, "lease table created"),
            Err(err) if TableSpec::already_exists(&err) => {
                debug!(table = %self.table, "lease table exists");
            }
            Err(err) => return Err(dynamo_error("CreateTable", err)),
        }
        wait_table_active(&self.client, &self.table).await
    }

    /// Reads every row (strongly consistent, all pages).
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// for lease in store.scan().await?.leases {
    ///     println!("{} owned by {:?} at {}", lease.lease_key, lease.lease_owner, lease.checkpoint);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn scan(&self) -> Result<LeaseScan, LeaseStoreError> {
        let mut out = LeaseScan::default();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .bounded(
                    "Scan",
                    self.client
                        .scan()
                        .table_name(&self.table)
                        .consistent_read(true)
                        .set_exclusive_start_key(start.take())
                        .send(),
                )
                .await?
                .map_err(|e| dynamo_error("Scan", e))?;
            for item in page.items() {
                match Row::read(&sdk::from_sdk(item)) {
                    Row::Lease(lease) => out.leases.push(*lease),
                    // KCL 3.5+ coordinator state and worker metrics share the table.
                    Row::NotALease { .. } => out.non_lease_rows += 1,
                    Row::Malformed { key, error } => out.unreadable.push((key, error)),
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.leases.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
        Ok(out)
    }

    /// Reads one row (strongly consistent). `Ok(None)` when absent.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// if let Some(lease) = store.get("shardId-000000000000").await? {
    ///     println!("{}", lease.checkpoint);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, lease_key: &str) -> Result<Option<Lease>, LeaseStoreError> {
        let out = self
            .bounded(
                "GetItem",
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .key(attr::LEASE_KEY, AttributeValue::S(lease_key.to_owned()))
                    .consistent_read(true)
                    .send(),
            )
            .await?
            .map_err(|e| dynamo_error("GetItem", e))?;
        match out.item {
            None => Ok(None),
            Some(item) => lease_from_item(&item)
                .map(Some)
                .map_err(|source| LeaseStoreError::Row {
                    lease_key: lease_key.to_owned(),
                    source,
                }),
        }
    }

    async fn update(
        &self,
        op: &'static str,
        lease_key: &str,
        update: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<(), LeaseStoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, AttributeValue::S(lease_key.to_owned()))
            .update_expression(update)
            .condition_expression(condition);
        for (placeholder, name) in names {
            req = req.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            req = req.expression_attribute_values(placeholder, value);
        }
        match self.bounded("UpdateItem", req.send()).await? {
            Ok(_) => {
                debug!(table = %self.table, lease = %lease_key, op, "lease write ok");
                Ok(())
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                debug!(table = %self.table, lease = %lease_key, op, "lease write lost the race");
                Err(LeaseStoreError::ConditionFailed {
                    lease_key: lease_key.to_owned(),
                })
            }
            Err(err) => Err(dynamo_error("UpdateItem", err)),
        }
    }
}

fn build_error(
    operation: &'static str,
    err: aws_sdk_dynamodb::error::BuildError,
) -> LeaseStoreError {
    LeaseStoreError::Dynamo {
        operation,
        message: err.to_string(),
        source: Box::new(err),
    }
}

/// Polls `DescribeTable` until the table is `ACTIVE` (deadline 60 s).
pub(crate) async fn wait_table_active(client: &Client, table: &str) -> Result<(), LeaseStoreError> {
    let deadline = Duration::from_secs(60);
    let started = tokio::time::Instant::now();
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| dynamo_error("DescribeTable", e))?;
        if out
            .table()
            .and_then(|t| t.table_status())
            .is_some_and(|s| *s == TableStatus::Active)
        {
            return Ok(());
        }
        if started.elapsed() > deadline {
            return Err(LeaseStoreError::TableNotReady {
                table: table.to_owned(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
