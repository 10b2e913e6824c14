//! Parent-before-child: when is a closed shard drained, and when may a child start?
//!
//! Pure functions over lease rows and the shard ids the stream currently lists. The worker uses
//! them to hold a child back until every parent is done; the controller's drain gate can use the
//! same rules on any KCL-compatible lease table.
//!
//! The one rule that differs from KCL: a parent whose lease row is *missing* counts as drained only
//! when the stream no longer lists the parent (it expired past retention). A missing row of a shard
//! that still exists is unknown, not done.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::lease::Lease;

/// What the lease table says about one parent shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentState {
    /// Its lease has checkpoint `SHARD_END`.
    Drained,
    /// No lease row and the stream no longer lists the shard: nothing is left to read.
    Gone,
    /// Its lease exists and has not reached `SHARD_END`.
    InProgress,
    /// No lease row, but the stream still lists the shard: unknown, so not drained.
    MissingButListed,
}

impl ParentState {
    /// True when a child may proceed past this parent.
    ///
    /// ```
    /// use shardctl_consumer::drain::ParentState;
    /// assert!(ParentState::Gone.allows_child());
    /// assert!(!ParentState::MissingButListed.allows_child());
    /// ```
    pub fn allows_child(self) -> bool {
        matches!(self, Self::Drained | Self::Gone)
    }
}

/// A view of lease rows by shard id plus the shard ids the stream lists now.
///
/// ```
/// use std::collections::BTreeSet;
/// use shardctl_consumer::{Checkpoint, Lease};
/// use shardctl_consumer::drain::{DrainView, ParentState};
///
/// let leases = vec![
///     Lease::new("shardId-0", Checkpoint::ShardEnd),
///     Lease::new("shardId-1", Checkpoint::TrimHorizon).with_parents(["shardId-0"]),
///     Lease::new("shardId-3", Checkpoint::TrimHorizon).with_parents(["shardId-2"]),
/// ];
/// let listed: BTreeSet<String> =
///     ["shardId-0", "shardId-1", "shardId-2", "shardId-3"].map(String::from).into();
/// let view = DrainView::new(&leases, &listed);
/// assert_eq!(view.parent_state("shardId-0"), ParentState::Drained);
/// assert!(view.parents_drained(&leases[1]));
/// // shardId-2 has no lease but is still listed: unknown, so its child waits.
/// assert!(!view.parents_drained(&leases[2]));
/// ```
#[derive(Debug)]
pub struct DrainView<'a> {
    leases: HashMap<&'a str, &'a Lease>,
    listed: &'a BTreeSet<String>,
}

impl<'a> DrainView<'a> {
    /// Builds the view. `listed` is every shard id (open and closed) that `ListShards` returns.
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use shardctl_consumer::drain::DrainView;
    /// let listed = BTreeSet::new();
    /// let view = DrainView::new(&[], &listed);
    /// assert!(view.parent_state("gone").allows_child());
    /// ```
    pub fn new(leases: &'a [Lease], listed: &'a BTreeSet<String>) -> Self {
        Self {
            leases: leases.iter().map(|l| (l.lease_key.as_str(), l)).collect(),
            listed,
        }
    }

    /// The state of one parent shard.
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// use shardctl_consumer::drain::{DrainView, ParentState};
    /// let leases = [Lease::new("p", Checkpoint::TrimHorizon)];
    /// let listed = BTreeSet::from(["p".to_string()]);
    /// assert_eq!(DrainView::new(&leases, &listed).parent_state("p"), ParentState::InProgress);
    /// ```
    pub fn parent_state(&self, shard_id: &str) -> ParentState {
        match self.leases.get(shard_id) {
            Some(lease) if lease.is_finished() => ParentState::Drained,
            Some(_) => ParentState::InProgress,
            None if self.listed.contains(shard_id) => ParentState::MissingButListed,
            None => ParentState::Gone,
        }
    }

    /// True when every parent of `lease` allows the child to start.
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// use shardctl_consumer::drain::DrainView;
    /// let root = Lease::new("root", Checkpoint::TrimHorizon);
    /// let listed = BTreeSet::from(["root".to_string()]);
    /// assert!(DrainView::new(&[], &listed).parents_drained(&root));
    /// ```
    pub fn parents_drained(&self, lease: &Lease) -> bool {
        lease
            .parent_shard_ids
            .iter()
            .all(|p| self.parent_state(p).allows_child())
    }

    /// Every parent of `lease` with its state, for logs and the drain gate's reasons.
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// use shardctl_consumer::drain::{DrainView, ParentState};
    /// let child = Lease::new("c", Checkpoint::TrimHorizon).with_parents(["p"]);
    /// let listed = BTreeSet::from(["p".to_string()]);
    /// let states = DrainView::new(&[], &listed).parent_states(&child);
    /// assert_eq!(states["p"], ParentState::MissingButListed);
    /// ```
    pub fn parent_states(&self, lease: &Lease) -> BTreeMap<String, ParentState> {
        lease
            .parent_shard_ids
            .iter()
            .map(|p| (p.clone(), self.parent_state(p)))
            .collect()
    }

    /// The closed shards among `closed_shard_ids` that are drained (lease at `SHARD_END`, or no
    /// lease and no longer listed).
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// use shardctl_consumer::drain::DrainView;
    /// let leases = [Lease::new("a", Checkpoint::ShardEnd), Lease::new("b", Checkpoint::Latest)];
    /// let listed = BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()]);
    /// let drained = DrainView::new(&leases, &listed).drained(["a", "b", "c"]);
    /// assert_eq!(drained, BTreeSet::from(["a".to_string()]));
    /// ```
    pub fn drained<'s, I>(&self, closed_shard_ids: I) -> BTreeSet<String>
    where
        I: IntoIterator<Item = &'s str>,
    {
        closed_shard_ids
            .into_iter()
            .filter(|id| self.parent_state(id).allows_child())
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Checkpoint;

    fn listed(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn missing_parent_lease_of_listed_shard_blocks_child_unlike_kcl() {
        let leases = vec![Lease::new("c", Checkpoint::TrimHorizon).with_parents(["p"])];
        let listed = listed(&["p", "c"]);
        let view = DrainView::new(&leases, &listed);
        assert!(!view.parents_drained(&leases[0]));
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
        let listed = listed(&["a", "b", "c"]);
        let view = DrainView::new(&leases, &listed);
        assert!(!view.parents_drained(&leases[2]));
        let states = view.parent_states(&leases[2]);
        assert_eq!(states["a"], ParentState::Drained);
        assert_eq!(states["b"], ParentState::InProgress);
    }

    #[test]
    fn parent_past_retention_counts_as_gone() {
        let leases = vec![Lease::new("c", Checkpoint::TrimHorizon).with_parents(["p"])];
        let listed = listed(&["c"]);
        assert!(DrainView::new(&leases, &listed).parents_drained(&leases[0]));
    }
}
