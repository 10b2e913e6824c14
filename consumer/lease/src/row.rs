//! One row of a lease table, as KCL 2.x, 3.x and this library write it.
//!
//! Rows are read from a neutral [`Item`] (attribute name → [`Value`]) so that the rules here need
//! no SDK; the `dynamodb` feature converts the SDK's items (see [`crate::sdk`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::{Checkpoint, CheckpointError, shorten};

/// Attribute names of the KCL lease schema (single- and multi-stream), and of KCL 3.5's
/// non-lease rows.
pub mod attr {
    /// Hash key (`S`): the shard id, or `account:stream:creationEpoch:shardId` in multi-stream
    /// tables.
    pub const LEASE_KEY: &str = "leaseKey";
    /// Worker id of the current owner (`S`), absent when nobody owns the lease.
    pub const LEASE_OWNER: &str = "leaseOwner";
    /// Fencing counter (`N`): every take, renew, steal, checkpoint and release is conditional on
    /// it.
    pub const LEASE_COUNTER: &str = "leaseCounter";
    /// Sequence number or sentinel (`S`).
    pub const CHECKPOINT: &str = "checkpoint";
    /// Sub-sequence number of the checkpoint (`N`), 0 unless records are aggregated.
    pub const CHECKPOINT_SUB_SEQUENCE_NUMBER: &str = "checkpointSubSequenceNumber";
    /// KCL's two-phase checkpoint (`S`): prepared, not yet committed.
    pub const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
    /// Sub-sequence number of the pending checkpoint (`N`).
    pub const PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER: &str = "pendingCheckpointSubSequenceNumber";
    /// Application state saved with the pending checkpoint (`B`).
    pub const PENDING_CHECKPOINT_STATE: &str = "pendingCheckpointState";
    /// Number of owner changes since the last checkpoint (`N`).
    pub const OWNER_SWITCHES_SINCE_CHECKPOINT: &str = "ownerSwitchesSinceCheckpoint";
    /// Parent shard ids (`SS`; bare shard ids in multi-stream tables too).
    pub const PARENT_SHARD_ID: &str = "parentShardId";
    /// Child shard ids (`SS`), written when the shard reaches its end.
    pub const CHILD_SHARD_IDS: &str = "childShardIds";
    /// First hash key of the shard (`S`, decimal).
    pub const STARTING_HASH_KEY: &str = "startingHashKey";
    /// Last hash key of the shard (`S`, decimal).
    pub const ENDING_HASH_KEY: &str = "endingHashKey";
    /// KCL 3 graceful handoff (`S`): the previous owner, which may still checkpoint, while
    /// `leaseOwner` already names the next one.
    pub const CHECKPOINT_OWNER: &str = "checkpointOwner";
    /// KCL 3.5+: the kind of row (`S`); rows whose value is not `LEASE` are not leases.
    pub const ENTITY_TYPE: &str = "entityType";
    /// Multi-stream tables: the stream identifier (`S`, `account:stream:creationEpoch`).
    pub const STREAM_NAME: &str = "streamName";
    /// Multi-stream tables: the bare shard id (`S`).
    pub const SHARD_ID: &str = "shardId";
}

/// The `entityType` of lease rows (KCL 3.5+).
pub const ENTITY_TYPE_LEASE: &str = "LEASE";

/// One attribute value, as far as lease rows need to tell them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `S`.
    S(String),
    /// `N` (the decimal text).
    N(String),
    /// `SS`.
    Ss(Vec<String>),
    /// `NULL`.
    Null,
    /// Any other type, by its DynamoDB name (`B`, `BOOL`, `M`, ...).
    Other(&'static str),
}

/// A row: attribute name → value.
pub type Item = BTreeMap<String, Value>;

/// A row that is present but cannot be read as a lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// A required attribute is missing.
    #[error("attribute {0} is missing")]
    Missing(&'static str),
    /// An attribute has the wrong type or an unreadable value.
    #[error("attribute {name} is malformed: {why}")]
    Malformed {
        /// The attribute.
        name: &'static str,
        /// What is wrong, for the operator.
        why: String,
    },
    /// The checkpoint is neither a sentinel nor a sequence number.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// The stream a multi-stream lease key names: `account:stream:creationEpoch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamIdentifier {
    /// AWS account id.
    pub account: String,
    /// Stream name.
    pub name: String,
    /// Stream creation time, Unix seconds.
    pub creation_epoch: u64,
}

impl std::fmt::Display for StreamIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.account, self.name, self.creation_epoch)
    }
}

/// A parsed `leaseKey`.
///
/// ```
/// use shardctl_lease::LeaseKey;
/// let single = LeaseKey::parse("shardId-000000000003");
/// assert_eq!(single.shard_id, "shardId-000000000003");
/// assert!(single.stream.is_none());
/// let multi = LeaseKey::parse("123456789012:orders:1700000000:shardId-000000000003");
/// assert_eq!(multi.shard_id, "shardId-000000000003");
/// assert_eq!(multi.stream.unwrap().name, "orders");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseKey {
    /// The stream, in multi-stream tables; `None` in single-stream tables.
    pub stream: Option<StreamIdentifier>,
    /// The shard id.
    pub shard_id: String,
}

impl LeaseKey {
    /// Reads a key: `account:stream:creationEpoch:shardId` (digits for account and epoch) is
    /// multi-stream, anything else is a single-stream shard id.
    pub fn parse(key: &str) -> Self {
        let parts: Vec<&str> = key.split(':').collect();
        if let [account, name, epoch, shard] = parts[..]
            && !account.is_empty()
            && account.bytes().all(|b| b.is_ascii_digit())
            && !name.is_empty()
            && !shard.is_empty()
            && let Ok(creation_epoch) = epoch.parse::<u64>()
        {
            return Self {
                stream: Some(StreamIdentifier {
                    account: account.to_owned(),
                    name: name.to_owned(),
                    creation_epoch,
                }),
                shard_id: shard.to_owned(),
            };
        }
        Self {
            stream: None,
            shard_id: key.to_owned(),
        }
    }
}

/// One lease row.
///
/// ```
/// use shardctl_lease::{Checkpoint, Lease};
/// let lease = Lease::new("shardId-000000000002", Checkpoint::TrimHorizon)
///     .with_parents(["shardId-000000000000"]);
/// assert!(lease.lease_owner.is_none());
/// assert!(lease.parent_shard_ids.contains("shardId-000000000000"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `leaseKey`: the shard id (single-stream tables), or the multi-stream key.
    pub lease_key: String,
    /// `leaseOwner`: the worker that holds the lease, `None` when free.
    pub lease_owner: Option<String>,
    /// `leaseCounter`: fencing token.
    pub lease_counter: u64,
    /// `checkpoint` + `checkpointSubSequenceNumber`.
    pub checkpoint: Checkpoint,
    /// `pendingCheckpoint` + `pendingCheckpointSubSequenceNumber`, when KCL prepared one.
    pub pending_checkpoint: Option<Checkpoint>,
    /// `ownerSwitchesSinceCheckpoint`.
    pub owner_switches_since_checkpoint: u64,
    /// `parentShardId`: the shards this one was split or merged from.
    pub parent_shard_ids: BTreeSet<String>,
    /// `childShardIds`: the shards that follow this one, known once it ended.
    pub child_shard_ids: BTreeSet<String>,
    /// `startingHashKey`, decimal, when known.
    pub starting_hash_key: Option<String>,
    /// `endingHashKey`, decimal, when known.
    pub ending_hash_key: Option<String>,
    /// `checkpointOwner`: set during a graceful handoff.
    pub checkpoint_owner: Option<String>,
}

impl Lease {
    /// A fresh, unowned lease for `shard_id` starting at `checkpoint`.
    ///
    /// ```
    /// use shardctl_lease::{Checkpoint, Lease};
    /// assert_eq!(Lease::new("shardId-000000000000", Checkpoint::TrimHorizon).lease_counter, 0);
    /// ```
    pub fn new(shard_id: impl Into<String>, checkpoint: Checkpoint) -> Self {
        Self {
            lease_key: shard_id.into(),
            lease_owner: None,
            lease_counter: 0,
            checkpoint,
            pending_checkpoint: None,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: BTreeSet::new(),
            child_shard_ids: BTreeSet::new(),
            starting_hash_key: None,
            ending_hash_key: None,
            checkpoint_owner: None,
        }
    }

    /// Sets the parent shard ids.
    ///
    /// ```
    /// use shardctl_lease::{Checkpoint, Lease};
    /// let lease = Lease::new("c", Checkpoint::TrimHorizon).with_parents(["a", "b"]);
    /// assert_eq!(lease.parent_shard_ids.len(), 2);
    /// ```
    pub fn with_parents<I, S>(mut self, parents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.parent_shard_ids = parents.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the owner and counter (handy in tests and examples).
    ///
    /// ```
    /// use shardctl_lease::{Checkpoint, Lease};
    /// let lease = Lease::new("a", Checkpoint::TrimHorizon).owned_by("w1", 7);
    /// assert_eq!(lease.lease_owner.as_deref(), Some("w1"));
    /// ```
    pub fn owned_by(mut self, owner: impl Into<String>, counter: u64) -> Self {
        self.lease_owner = Some(owner.into());
        self.lease_counter = counter;
        self
    }

    /// True once the shard was processed to its end (`checkpoint = SHARD_END`).
    ///
    /// ```
    /// use shardctl_lease::{Checkpoint, Lease};
    /// assert!(Lease::new("a", Checkpoint::ShardEnd).is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        self.checkpoint.is_shard_end()
    }

    /// The shard id, also for multi-stream keys.
    ///
    /// ```
    /// use shardctl_lease::{Checkpoint, Lease};
    /// let lease = Lease::new("1:s:2:shardId-000000000001", Checkpoint::TrimHorizon);
    /// assert_eq!(lease.shard_id(), "shardId-000000000001");
    /// ```
    pub fn shard_id(&self) -> String {
        LeaseKey::parse(&self.lease_key).shard_id
    }
}

/// What a row of a lease table is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// A lease.
    Lease(Box<Lease>),
    /// A KCL 3.5+ row that is not a lease (coordinator state, worker metrics): skipped.
    NotALease {
        /// Its key.
        key: String,
        /// Its `entityType`.
        entity_type: String,
    },
    /// A lease row that cannot be read: unknown, never drained, never taken.
    Malformed {
        /// Its key, when readable.
        key: Option<String>,
        /// What is wrong.
        error: RowError,
    },
}

impl Row {
    /// Classifies and reads one row.
    ///
    /// ```
    /// use shardctl_lease::{Item, Row, Value};
    /// let item = Item::from([
    ///     ("leaseKey".to_string(), Value::S("Migration3.0".into())),
    ///     ("entityType".to_string(), Value::S("COORDINATOR_STATE".into())),
    /// ]);
    /// assert!(matches!(Row::read(&item), Row::NotALease { .. }));
    /// ```
    pub fn read(item: &Item) -> Row {
        let key = match item.get(attr::LEASE_KEY) {
            Some(Value::S(k)) => Some(k.clone()),
            _ => None,
        };
        if let Some(Value::S(kind)) = item.get(attr::ENTITY_TYPE)
            && kind != ENTITY_TYPE_LEASE
        {
            return Row::NotALease {
                key: key.unwrap_or_default(),
                entity_type: kind.clone(),
            };
        }
        match lease_from_item(item) {
            Ok(lease) => Row::Lease(Box::new(lease)),
            Err(error) => Row::Malformed { key, error },
        }
    }
}

fn string<'a>(item: &'a Item, name: &'static str) -> Result<Option<&'a String>, RowError> {
    match item.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::S(v)) => Ok(Some(v)),
        Some(other) => Err(wrong_type(name, "S", other)),
    }
}

fn number(item: &Item, name: &'static str) -> Result<Option<u64>, RowError> {
    match item.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::N(v)) => v.parse::<u64>().map(Some).map_err(|_| RowError::Malformed {
            name,
            why: format!("`{}` is not a whole number", shorten(v, 40)),
        }),
        Some(other) => Err(wrong_type(name, "N", other)),
    }
}

fn string_set(item: &Item, name: &'static str) -> Result<BTreeSet<String>, RowError> {
    match item.get(name) {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::Ss(v)) => Ok(v.iter().cloned().collect()),
        // Some writers store a single parent as a plain string.
        Some(Value::S(v)) => Ok(BTreeSet::from([v.clone()])),
        Some(other) => Err(wrong_type(name, "SS", other)),
    }
}

fn wrong_type(name: &'static str, want: &str, got: &Value) -> RowError {
    let got = match got {
        Value::S(_) => "S",
        Value::N(_) => "N",
        Value::Ss(_) => "SS",
        Value::Null => "NULL",
        Value::Other(t) => t,
    };
    RowError::Malformed {
        name,
        why: format!("type {got}, expected {want}"),
    }
}

/// Reads a lease row: `leaseKey`, `leaseCounter` and `checkpoint` are required; a row without a
/// checkpoint is unreadable, never a fresh lease. Unknown attributes are ignored.
///
/// ```
/// use shardctl_lease::{lease_from_item, Item, Value};
/// let item = Item::from([
///     ("leaseKey".to_string(), Value::S("shardId-000000000000".into())),
///     ("leaseCounter".to_string(), Value::N("3".into())),
///     ("checkpoint".to_string(), Value::S("TRIM_HORIZON".into())),
/// ]);
/// assert_eq!(lease_from_item(&item).unwrap().lease_counter, 3);
/// ```
pub fn lease_from_item(item: &Item) -> Result<Lease, RowError> {
    let lease_key = string(item, attr::LEASE_KEY)?
        .ok_or(RowError::Missing(attr::LEASE_KEY))?
        .clone();
    let lease_counter =
        number(item, attr::LEASE_COUNTER)?.ok_or(RowError::Missing(attr::LEASE_COUNTER))?;
    let checkpoint = string(item, attr::CHECKPOINT)?.ok_or(RowError::Missing(attr::CHECKPOINT))?;
    let sub = number(item, attr::CHECKPOINT_SUB_SEQUENCE_NUMBER)?.unwrap_or(0);
    let pending_checkpoint = match string(item, attr::PENDING_CHECKPOINT)? {
        Some(p) => {
            let sub = number(item, attr::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER)?.unwrap_or(0);
            Some(Checkpoint::parse(p, sub)?)
        }
        None => None,
    };
    Ok(Lease {
        lease_key,
        lease_owner: string(item, attr::LEASE_OWNER)?.cloned(),
        lease_counter,
        checkpoint: Checkpoint::parse(checkpoint, sub)?,
        pending_checkpoint,
        owner_switches_since_checkpoint: number(item, attr::OWNER_SWITCHES_SINCE_CHECKPOINT)?
            .unwrap_or(0),
        parent_shard_ids: string_set(item, attr::PARENT_SHARD_ID)?,
        child_shard_ids: string_set(item, attr::CHILD_SHARD_IDS)?,
        starting_hash_key: string(item, attr::STARTING_HASH_KEY)?.cloned(),
        ending_hash_key: string(item, attr::ENDING_HASH_KEY)?.cloned(),
        checkpoint_owner: string(item, attr::CHECKPOINT_OWNER)?.cloned(),
    })
}

/// Writes a lease row as KCL does (empty sets and absent values omitted, as DynamoDB requires).
///
/// ```
/// use shardctl_lease::{lease_from_item, lease_to_item, Checkpoint, Lease};
/// let lease = Lease::new("shardId-1", Checkpoint::TrimHorizon).with_parents(["shardId-0"]);
/// assert_eq!(lease_from_item(&lease_to_item(&lease)).unwrap(), lease);
/// ```
pub fn lease_to_item(lease: &Lease) -> Item {
    let mut item = Item::new();
    let mut put = |name: &str, value: Value| {
        item.insert(name.to_owned(), value);
    };
    put(attr::LEASE_KEY, Value::S(lease.lease_key.clone()));
    if let Some(owner) = &lease.lease_owner {
        put(attr::LEASE_OWNER, Value::S(owner.clone()));
    }
    put(
        attr::LEASE_COUNTER,
        Value::N(lease.lease_counter.to_string()),
    );
    put(
        attr::CHECKPOINT,
        Value::S(lease.checkpoint.as_str().to_owned()),
    );
    put(
        attr::CHECKPOINT_SUB_SEQUENCE_NUMBER,
        Value::N(lease.checkpoint.sub_sequence_number().to_string()),
    );
    if let Some(p) = &lease.pending_checkpoint {
        put(attr::PENDING_CHECKPOINT, Value::S(p.as_str().to_owned()));
        put(
            attr::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER,
            Value::N(p.sub_sequence_number().to_string()),
        );
    }
    put(
        attr::OWNER_SWITCHES_SINCE_CHECKPOINT,
        Value::N(lease.owner_switches_since_checkpoint.to_string()),
    );
    if !lease.parent_shard_ids.is_empty() {
        put(
            attr::PARENT_SHARD_ID,
            Value::Ss(lease.parent_shard_ids.iter().cloned().collect()),
        );
    }
    if !lease.child_shard_ids.is_empty() {
        put(
            attr::CHILD_SHARD_IDS,
            Value::Ss(lease.child_shard_ids.iter().cloned().collect()),
        );
    }
    if let Some(k) = &lease.starting_hash_key {
        put(attr::STARTING_HASH_KEY, Value::S(k.clone()));
    }
    if let Some(k) = &lease.ending_hash_key {
        put(attr::ENDING_HASH_KEY, Value::S(k.clone()));
    }
    if let Some(o) = &lease.checkpoint_owner {
        put(attr::CHECKPOINT_OWNER, Value::S(o.clone()));
    }
    item
}
