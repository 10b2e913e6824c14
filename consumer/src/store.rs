//! The lease table in DynamoDB: KCL attribute names and types, every ownership or progress change a
//! conditional write (take and steal: [`LeaseStore::acquire`], on the row exactly as scanned;
//! renew, checkpoint, release: on `leaseCounter` and owner; the handoff's last checkpoint: on
//! `checkpointOwner` and `leaseCounter`), every call bounded in time
//! ([`LeaseStore::with_call_timeout`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};
use tracing::{debug, info};

use crate::lease::{Checkpoint, Lease, attr};
use crate::ownership::{AcquireKind, Acquisition};
use shardctl_lease::{Row, sdk};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
        let definition = AttributeDefinition::builder()
            .attribute_name(attr::LEASE_KEY)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| build_error("CreateTable", e))?;
        let key = KeySchemaElement::builder()
            .attribute_name(attr::LEASE_KEY)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| build_error("CreateTable", e))?;
        match self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(definition)
            .key_schema(key)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
        {
            Ok(_) => info!(table = %self.table, "lease table created"),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
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

    /// Creates `lease` unless a row with its key exists. Returns whether it was created.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// store.create_if_absent(&Lease::new("shardId-000000000000", Checkpoint::TrimHorizon)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseStoreError> {
        let result = self
            .bounded(
                "PutItem",
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(lease_to_item(lease)))
                    .condition_expression("attribute_not_exists(#k)")
                    .expression_attribute_names("#k", attr::LEASE_KEY)
                    .send(),
            )
            .await?;
        applied("PutItem", result)
    }

    /// Carries out an [`Acquisition`] (take or steal): one conditional write, applied only if
    /// the row is still as the scan saw it (counter, owner and handoff marker; see
    /// [`Acquisition::applies_to`], the same rule in pure form). A take sets the owner, bumps the
    /// counter, clears a stale handoff marker and counts an owner switch; a steal is KCL 3's
    /// graceful handoff: owner to `me`, `checkpointOwner` to the victim, counter unchanged. The
    /// victim stays the real owner until it wrote its last checkpoint and cleared the marker.
    /// Returns the counter after the write.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// use shardctl_consumer::ownership::{AcquireKind, Acquisition};
    /// let scanned = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
    /// let counter = store.acquire(&Acquisition::of(&scanned, AcquireKind::Take), "worker-a").await?;
    /// assert_eq!(counter, 1);
    /// # Ok(()) }
    /// ```
    pub async fn acquire(&self, acq: &Acquisition, me: &str) -> Result<u64, LeaseStoreError> {
        let mut names = vec![
            ("#owner", attr::LEASE_OWNER),
            ("#counter", attr::LEASE_COUNTER),
            ("#cpowner", attr::CHECKPOINT_OWNER),
        ];
        let mut values = vec![
            (":me", AttributeValue::S(me.to_owned())),
            (":expected", n(acq.expected_counter)),
        ];
        let mut condition = String::from("#counter = :expected");
        match &acq.previous_owner {
            Some(owner) => {
                condition.push_str(" AND #owner = :previous");
                values.push((":previous", AttributeValue::S(owner.clone())));
            }
            None => condition.push_str(" AND attribute_not_exists(#owner)"),
        }
        match &acq.expected_checkpoint_owner {
            Some(marker) => {
                condition.push_str(" AND #cpowner = :marker");
                values.push((":marker", AttributeValue::S(marker.clone())));
            }
            None => condition.push_str(" AND attribute_not_exists(#cpowner)"),
        }
        let update = match acq.kind {
            AcquireKind::Take => {
                values.push((":next", n(acq.expected_counter + 1)));
                if acq.switches_owner(me) {
                    names.push(("#switches", attr::OWNER_SWITCHES_SINCE_CHECKPOINT));
                    values.push((":zero", n(0)));
                    values.push((":one", n(1)));
                    "SET #owner = :me, #counter = :next, #switches = if_not_exists(#switches, :zero) + :one REMOVE #cpowner"
                } else {
                    "SET #owner = :me, #counter = :next REMOVE #cpowner"
                }
            }
            AcquireKind::Steal => {
                let Some(victim) = &acq.previous_owner else {
                    // Nothing to steal from: the condition could never hold.
                    return Err(LeaseStoreError::ConditionFailed {
                        lease_key: acq.lease_key.clone(),
                    });
                };
                if acq.expected_checkpoint_owner.is_some() {
                    return Err(LeaseStoreError::ConditionFailed {
                        lease_key: acq.lease_key.clone(),
                    });
                }
                values.push((":victim", AttributeValue::S(victim.clone())));
                "SET #owner = :me, #cpowner = :victim"
            }
        };
        let op = match acq.kind {
            AcquireKind::Take => "take",
            AcquireKind::Steal => "steal",
        };
        self.update(op, &acq.lease_key, update, &condition, &names, values)
            .await?;
        Ok(acq.counter_after())
    }

    /// Takes a lease scanned with `expected_counter`, `previous_owner` and no handoff marker
    /// (an [`AcquireKind::Take`] through [`LeaseStore::acquire`]). Returns the new counter.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// let counter = store.take("shardId-000000000000", 0, None, "worker-a").await?;
    /// assert_eq!(counter, 1);
    /// # Ok(()) }
    /// ```
    pub async fn take(
        &self,
        lease_key: &str,
        expected_counter: u64,
        previous_owner: Option<&str>,
        me: &str,
    ) -> Result<u64, LeaseStoreError> {
        let acq = Acquisition {
            lease_key: lease_key.to_owned(),
            expected_counter,
            previous_owner: previous_owner.map(str::to_owned),
            expected_checkpoint_owner: None,
            kind: AcquireKind::Take,
        };
        self.acquire(&acq, me).await
    }

    /// Steals a lease from a live `victim` (an [`AcquireKind::Steal`] through
    /// [`LeaseStore::acquire`]); refused while another handoff is under way. Returns the
    /// (unchanged) counter.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// store.steal("shardId-000000000000", 7, "worker-b", "worker-a").await?;
    /// # Ok(()) }
    /// ```
    pub async fn steal(
        &self,
        lease_key: &str,
        expected_counter: u64,
        me: &str,
        victim: &str,
    ) -> Result<u64, LeaseStoreError> {
        let acq = Acquisition {
            lease_key: lease_key.to_owned(),
            expected_counter,
            previous_owner: Some(victim.to_owned()),
            expected_checkpoint_owner: None,
            kind: AcquireKind::Steal,
        };
        self.acquire(&acq, me).await
    }

    /// The handed-off checkpoint: the previous owner of a stolen lease records where it stopped.
    /// Conditional on `checkpointOwner = me` and on `leaseCounter` still being the counter it
    /// last wrote (a steal leaves the counter alone; any other change means its view is stale).
    /// Does not touch the counter.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// use shardctl_consumer::Checkpoint;
    /// store.handoff_checkpoint("shardId-000000000000", "worker-a", 7, &Checkpoint::Latest, &Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn handoff_checkpoint(
        &self,
        lease_key: &str,
        me: &str,
        expected_counter: u64,
        checkpoint: &Checkpoint,
        child_shard_ids: &BTreeSet<String>,
    ) -> Result<(), LeaseStoreError> {
        let mut names = vec![
            ("#cpowner", attr::CHECKPOINT_OWNER),
            ("#counter", attr::LEASE_COUNTER),
            ("#cp", attr::CHECKPOINT),
            ("#sub", attr::CHECKPOINT_SUB_SEQUENCE_NUMBER),
            ("#switches", attr::OWNER_SWITCHES_SINCE_CHECKPOINT),
        ];
        let mut values = vec![
            (":me", AttributeValue::S(me.to_owned())),
            (":expected", n(expected_counter)),
            (":cp", AttributeValue::S(checkpoint.as_str().to_owned())),
            (":sub", n(checkpoint.sub_sequence_number())),
            (":zero", n(0)),
        ];
        let mut update = String::from("SET #cp = :cp, #sub = :sub, #switches = :zero");
        if !child_shard_ids.is_empty() {
            update.push_str(", #children = :children");
            names.push(("#children", attr::CHILD_SHARD_IDS));
            values.push((
                ":children",
                AttributeValue::Ss(child_shard_ids.iter().cloned().collect()),
            ));
        }
        // A checkpoint commits: KCL's prepared (pending) checkpoint is gone with it.
        update.push_str(" REMOVE #pcp, #pcpsub, #pcpstate");
        names.extend([
            ("#pcp", attr::PENDING_CHECKPOINT),
            ("#pcpsub", attr::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER),
            ("#pcpstate", attr::PENDING_CHECKPOINT_STATE),
        ]);
        self.update(
            "handoff_checkpoint",
            lease_key,
            &update,
            "#cpowner = :me AND #counter = :expected",
            &names,
            values,
        )
        .await
    }

    /// Ends a handoff: removes `checkpointOwner` if it is `who` and `leaseCounter` is still
    /// `expected_counter`, and bumps the counter (KCL 3's lease transfer). The previous owner
    /// calls it when it stopped; the new owner calls it when the previous owner did not answer
    /// within the failover time, and the bump fences off a previous owner that still renews.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// store.end_handoff("shardId-000000000000", "worker-a", 7).await?;
    /// # Ok(()) }
    /// ```
    pub async fn end_handoff(
        &self,
        lease_key: &str,
        who: &str,
        expected_counter: u64,
    ) -> Result<(), LeaseStoreError> {
        self.update(
            "end_handoff",
            lease_key,
            "REMOVE #cpowner SET #counter = :next",
            "#cpowner = :who AND #counter = :expected",
            &[
                ("#cpowner", attr::CHECKPOINT_OWNER),
                ("#counter", attr::LEASE_COUNTER),
            ],
            vec![
                (":who", AttributeValue::S(who.to_owned())),
                (":expected", n(expected_counter)),
                (":next", n(expected_counter + 1)),
            ],
        )
        .await
    }

    /// Deletes a finished lease, only while its checkpoint is still `SHARD_END`. Returns whether
    /// it deleted a row. Callers decide with
    /// [`shardctl_lease::DrainView::may_delete`] (KCL's cleanup precondition).
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// store.delete_finished("shardId-000000000000").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_finished(&self, lease_key: &str) -> Result<bool, LeaseStoreError> {
        let result = self
            .bounded(
                "DeleteItem",
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key(attr::LEASE_KEY, AttributeValue::S(lease_key.to_owned()))
                    .condition_expression("#cp = :end")
                    .expression_attribute_names("#cp", attr::CHECKPOINT)
                    .expression_attribute_values(
                        ":end",
                        AttributeValue::S(Checkpoint::SHARD_END.into()),
                    )
                    .send(),
            )
            .await?;
        applied("DeleteItem", result)
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

    /// Renews a held lease: increments the counter if owner and counter are unchanged.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// let counter = store.renew("shardId-000000000000", 1, "worker-a").await?;
    /// assert_eq!(counter, 2);
    /// # Ok(()) }
    /// ```
    pub async fn renew(
        &self,
        lease_key: &str,
        counter: u64,
        me: &str,
    ) -> Result<u64, LeaseStoreError> {
        self.update(
            "renew",
            lease_key,
            "SET #counter = :next",
            "#counter = :expected AND #owner = :me",
            &[
                ("#owner", attr::LEASE_OWNER),
                ("#counter", attr::LEASE_COUNTER),
            ],
            vec![
                (":me", AttributeValue::S(me.to_owned())),
                (":next", n(counter + 1)),
                (":expected", n(counter)),
            ],
        )
        .await?;
        Ok(counter + 1)
    }

    /// Writes a checkpoint on a held lease (and the child shard ids when the shard ended).
    /// Resets `ownerSwitchesSinceCheckpoint`. Returns the new counter.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// use shardctl_consumer::Checkpoint;
    /// store.checkpoint("shardId-000000000000", 2, "worker-a", &Checkpoint::ShardEnd, &Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn checkpoint(
        &self,
        lease_key: &str,
        counter: u64,
        me: &str,
        checkpoint: &Checkpoint,
        child_shard_ids: &BTreeSet<String>,
    ) -> Result<u64, LeaseStoreError> {
        let mut names = vec![
            ("#owner", attr::LEASE_OWNER),
            ("#counter", attr::LEASE_COUNTER),
            ("#cp", attr::CHECKPOINT),
            ("#sub", attr::CHECKPOINT_SUB_SEQUENCE_NUMBER),
            ("#switches", attr::OWNER_SWITCHES_SINCE_CHECKPOINT),
        ];
        let mut values = vec![
            (":me", AttributeValue::S(me.to_owned())),
            (":next", n(counter + 1)),
            (":expected", n(counter)),
            (":cp", AttributeValue::S(checkpoint.as_str().to_owned())),
            (":sub", n(checkpoint.sub_sequence_number())),
            (":zero", n(0)),
        ];
        let mut update =
            String::from("SET #counter = :next, #cp = :cp, #sub = :sub, #switches = :zero");
        if !child_shard_ids.is_empty() {
            update.push_str(", #children = :children");
            names.push(("#children", attr::CHILD_SHARD_IDS));
            values.push((
                ":children",
                AttributeValue::Ss(child_shard_ids.iter().cloned().collect()),
            ));
        }
        // A checkpoint commits: KCL's prepared (pending) checkpoint is gone with it.
        update.push_str(" REMOVE #pcp, #pcpsub, #pcpstate");
        names.extend([
            ("#pcp", attr::PENDING_CHECKPOINT),
            ("#pcpsub", attr::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER),
            ("#pcpstate", attr::PENDING_CHECKPOINT_STATE),
        ]);
        self.update(
            "checkpoint",
            lease_key,
            &update,
            "#counter = :expected AND #owner = :me",
            &names,
            values,
        )
        .await?;
        Ok(counter + 1)
    }

    /// Releases a held lease (removes `leaseOwner`) so another worker can take it at once.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// store.release("shardId-000000000000", 3, "worker-a").await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(
        &self,
        lease_key: &str,
        counter: u64,
        me: &str,
    ) -> Result<u64, LeaseStoreError> {
        self.update(
            "release",
            lease_key,
            "REMOVE #owner SET #counter = :next",
            "#counter = :expected AND #owner = :me",
            &[
                ("#owner", attr::LEASE_OWNER),
                ("#counter", attr::LEASE_COUNTER),
            ],
            vec![
                (":me", AttributeValue::S(me.to_owned())),
                (":next", n(counter + 1)),
                (":expected", n(counter)),
            ],
        )
        .await?;
        Ok(counter + 1)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn row_without_checkpoint_is_unreadable_not_a_fresh_lease() {
        let row = item(&[
            ("leaseKey", AttributeValue::S("s".into())),
            ("leaseCounter", AttributeValue::N("1".into())),
        ]);
        assert_eq!(
            lease_from_item(&row),
            Err(LeaseRowError::Missing(attr::CHECKPOINT))
        );
    }

    #[test]
    fn wrongly_typed_counter_is_malformed() {
        let row = item(&[
            ("leaseKey", AttributeValue::S("s".into())),
            ("leaseCounter", AttributeValue::S("1".into())),
            ("checkpoint", AttributeValue::S("LATEST".into())),
        ]);
        assert!(matches!(
            lease_from_item(&row),
            Err(LeaseRowError::Malformed {
                name: "leaseCounter",
                ..
            })
        ));
    }

    #[test]
    fn kcl_row_with_every_attribute_round_trips() {
        let row = item(&[
            ("leaseKey", AttributeValue::S("shardId-000000000004".into())),
            ("leaseOwner", AttributeValue::S("w1".into())),
            ("leaseCounter", AttributeValue::N("42".into())),
            ("checkpoint", AttributeValue::S("4968".into())),
            ("checkpointSubSequenceNumber", AttributeValue::N("3".into())),
            (
                "ownerSwitchesSinceCheckpoint",
                AttributeValue::N("2".into()),
            ),
            (
                "parentShardId",
                AttributeValue::Ss(vec![
                    "shardId-000000000001".into(),
                    "shardId-000000000002".into(),
                ]),
            ),
            (
                "childShardIds",
                AttributeValue::Ss(vec!["shardId-000000000007".into()]),
            ),
            ("startingHashKey", AttributeValue::S("0".into())),
            (
                "endingHashKey",
                AttributeValue::S("170141183460469231731687303715884105727".into()),
            ),
        ]);
        let lease = lease_from_item(&row).unwrap();
        assert_eq!(
            lease.checkpoint,
            Checkpoint::Sequence {
                sequence_number: "4968".into(),
                sub_sequence_number: 3
            }
        );
        assert_eq!(lease.parent_shard_ids.len(), 2);
        assert_eq!(lease_to_item(&lease), row);
    }
}
