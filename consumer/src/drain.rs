//! Parent-before-child: the one "drained" rule of [`shardctl_lease`] (shared with shardctl's
//! drain gate), applied to the rows a worker scanned, and the rows a worker creates when a shard
//! ends.
//!
//! A parent is drained when its lease is at `SHARD_END`; when it has no row and a descendant's
//! lease is past its start (KCL's own precondition before its lease cleanup deletes a finished
//! lease); or when it has no row and the listing shows a child of it but not the parent (it left
//! retention). A worker's listing can be a shard-sync interval old, so a parent missing from it
//! is no evidence by itself: unknown, and unknown is not drained (KCL counts any missing row as
//! drained). When a child's parent is unknown and the listing predates the child, the worker
//! asks for a shard sync at once.

use std::collections::{BTreeSet, HashMap};

pub use shardctl_lease::{DrainState, Lineage};
use shardctl_lease::{DrainView, LeaseRows, RowState};

use crate::lease::{Checkpoint, Lease};
use crate::reader::ChildShardInfo;
use crate::shards::ShardInfo;

/// The lineage of the shards `ListShards` returned.
///
/// ```
/// use shardctl_consumer::drain::lineage_of;
/// use shardctl_consumer::shards::ShardInfo;
/// let shard = |id: &str, parents: &[&str]| ShardInfo {
///     shard_id: id.into(),
///     parents: parents.iter().map(|p| p.to_string()).collect(),
///     starting_hash_key: None,
///     ending_hash_key: None,
///     closed: false,
/// };
/// let lineage = lineage_of(&[shard("s0", &[]), shard("s1", &["s0"])]);
/// assert_eq!(lineage.descendants("s0"), ["s1"]);
/// ```
pub fn lineage_of(listed: &[ShardInfo]) -> Lineage {
    Lineage::new(
        listed
            .iter()
            .map(|s| (s.shard_id.as_str(), s.parents.iter().map(String::as_str))),
    )
}

/// Scanned lease rows by shard id, with the keys of unreadable rows.
#[derive(Debug)]
pub(crate) struct ScannedRows<'a> {
    leases: HashMap<&'a str, &'a Lease>,
    unreadable: &'a BTreeSet<String>,
}

impl<'a> ScannedRows<'a> {
    pub(crate) fn new(leases: &'a [Lease], unreadable: &'a BTreeSet<String>) -> Self {
        Self {
            leases: leases.iter().map(|l| (l.lease_key.as_str(), l)).collect(),
            unreadable,
        }
    }
}

impl LeaseRows for ScannedRows<'_> {
    fn row(&self, shard_id: &str) -> RowState<'_> {
        if self.unreadable.contains(shard_id) {
            return RowState::Unreadable("the lease row cannot be read");
        }
        match self.leases.get(shard_id) {
            Some(l) => RowState::Lease(&l.checkpoint),
            None => RowState::Absent,
        }
    }
}

/// The state of each parent of `lease`.
pub(crate) fn parent_states(
    lease: &Lease,
    rows: &ScannedRows<'_>,
    lineage: &Lineage,
) -> Vec<(String, DrainState)> {
    let view = DrainView::new(lineage, rows);
    lease
        .parent_shard_ids
        .iter()
        .map(|p| (p.clone(), view.state(p)))
        .collect()
}

/// Whether a shard's processing may start: every parent drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every parent is drained (or the shard has none).
    Ready,
    /// Not yet: the shard has no row, no shard list was read yet, a parent's row cannot be read,
    /// or a parent is in progress.
    Waiting,
    /// Parents without a lease row and without evidence that they were drained.
    Unknown {
        /// Those parents.
        parents: Vec<String>,
        /// Whether the listing the rule used lists the shard itself; when it does not, the
        /// listing predates the shard and a fresh one may settle the question.
        shard_listed: bool,
    },
}

/// Whether `shard_id` may start, from scanned rows and the stream's lineage, by the drain rule of
/// [`shardctl_lease::DrainView`]. Unknown (no row for the shard yet, unreadable parent rows, no
/// listing yet) is not ready.
///
/// ```
/// use std::collections::BTreeSet;
/// use shardctl_consumer::drain::{readiness, Lineage, Readiness};
/// use shardctl_consumer::{Checkpoint, Lease};
/// let lineage = Lineage::new([("p", vec![]), ("c", vec!["p"])]);
/// let leases = [
///     Lease::new("p", Checkpoint::ShardEnd),
///     Lease::new("c", Checkpoint::TrimHorizon).with_parents(["p"]),
/// ];
/// assert_eq!(readiness("c", &leases, &BTreeSet::new(), Some(&lineage)), Readiness::Ready);
/// ```
pub fn readiness(
    shard_id: &str,
    leases: &[Lease],
    unreadable: &BTreeSet<String>,
    lineage: Option<&Lineage>,
) -> Readiness {
    let Some(lease) = leases.iter().find(|l| l.lease_key == shard_id) else {
        return Readiness::Waiting;
    };
    if lease.parent_shard_ids.is_empty() {
        return Readiness::Ready;
    }
    if lease
        .parent_shard_ids
        .iter()
        .any(|p| unreadable.contains(p))
    {
        return Readiness::Waiting;
    }
    let Some(lineage) = lineage else {
        return Readiness::Waiting;
    };
    let rows = ScannedRows::new(leases, unreadable);
    let states = parent_states(lease, &rows, lineage);
    if states.iter().all(|(_, s)| s.is_drained()) {
        return Readiness::Ready;
    }
    let parents: Vec<String> = states
        .into_iter()
        .filter(|(_, s)| *s == DrainState::Unknown)
        .map(|(p, _)| p)
        .collect();
    if parents.is_empty() {
        Readiness::Waiting
    } else {
        Readiness::Unknown {
            parents,
            shard_listed: lineage.is_listed(shard_id),
        }
    }
}

/// What a worker does about the children of a shard it read to the end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChildRows {
    /// Rows to create now.
    pub create: Vec<Lease>,
    /// Children left to shard sync.
    pub deferred: Vec<String>,
}

/// The lease rows to create for the children of `ended` (from `ChildShards`), given which
/// shards have a row. Rows are created in lineage order: a merge child whose other parent has no
/// row yet (that parent's own parent is still being read, and nobody created its row) is left to
/// shard sync, which creates the other parent's row first. Creating the child first would let
/// "a descendant has a row" pass for evidence about the other parent.
///
/// ```
/// use std::collections::BTreeSet;
/// use shardctl_consumer::drain::child_rows;
/// use shardctl_consumer::reader::ChildShardInfo;
/// let child = ChildShardInfo {
///     shard_id: "c".into(),
///     parents: BTreeSet::from(["p".to_string()]),
///     hash_range: None,
/// };
/// let merged = ChildShardInfo {
///     shard_id: "m".into(),
///     parents: BTreeSet::from(["p".to_string(), "q".to_string()]),
///     hash_range: None,
/// };
/// // q has no row yet: m is left to shard sync.
/// let rows = child_rows("p", &[child, merged], |s| s == "p");
/// assert_eq!(rows.create.len(), 1);
/// assert_eq!(rows.deferred, ["m"]);
/// ```
pub fn child_rows(
    ended: &str,
    children: &[ChildShardInfo],
    has_row: impl Fn(&str) -> bool,
) -> ChildRows {
    let mut out = ChildRows::default();
    for child in children {
        if child.parents.iter().any(|p| p != ended && !has_row(p)) {
            out.deferred.push(child.shard_id.clone());
            continue;
        }
        let mut lease = Lease::new(child.shard_id.clone(), Checkpoint::TrimHorizon)
            .with_parents(child.parents.iter().cloned());
        if let Some((start, end)) = &child.hash_range {
            lease.starting_hash_key = Some(start.clone());
            lease.ending_hash_key = Some(end.clone());
        }
        out.create.push(lease);
    }
    out
}

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str]) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            starting_hash_key: None,
            ending_hash_key: None,
            closed: false,
        }
    }

    #[test]
    fn merge_child_waits_for_both_parents() {
        let leases = vec![
            Lease::new("a", Checkpoint::ShardEnd),
            Lease::new(
                "b",
                Checkpoint::Sequence {
                    sequence_number: "5".into(),
                    sub_sequence_number: 0,
                },
            ),
            Lease::new("c", Checkpoint::TrimHorizon).with_parents(["a", "b"]),
        ];
        let lineage = lineage_of(&[shard("a", &[]), shard("b", &[]), shard("c", &["a", "b"])]);
        let none = BTreeSet::new();
        let rows = ScannedRows::new(&leases, &none);
        let states = parent_states(&leases[2], &rows, &lineage);
        assert_eq!(states[0], ("a".to_string(), DrainState::Drained));
        assert!(matches!(states[1].1, DrainState::InProgress(_)));
    }

    #[test]
    fn missing_parent_row_with_an_unstarted_child_is_unknown_unlike_kcl() {
        let leases = vec![Lease::new("c", Checkpoint::TrimHorizon).with_parents(["p"])];
        let lineage = lineage_of(&[shard("p", &[]), shard("c", &["p"])]);
        let none = BTreeSet::new();
        let rows = ScannedRows::new(&leases, &none);
        assert_eq!(
            parent_states(&leases[0], &rows, &lineage)[0].1,
            DrainState::Unknown
        );
    }
}
