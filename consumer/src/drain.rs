//! Parent-before-child: the one "drained" rule of [`shardctl_lease`] (shared with shardctl's
//! drain gate), applied to the rows a worker scanned.
//!
//! A parent is drained when its lease is at `SHARD_END`, when it has no row and the stream no
//! longer lists it, or when it has no row and a descendant's lease is past its start (KCL's own
//! precondition before its lease cleanup deletes a finished lease). A missing row with no such
//! evidence is unknown, and unknown is not drained (KCL counts any missing row as drained).

use std::collections::{BTreeSet, HashMap};

pub use shardctl_lease::{DrainState, Lineage};
use shardctl_lease::{DrainView, LeaseRows, RowState};

use crate::lease::Lease;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Checkpoint;

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
