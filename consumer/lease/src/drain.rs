//! The one rule for "drained": when a closed shard's records have all been processed by a
//! consumer group, so that its children may start (the consumer) and the stream may be resharded
//! past it (the controller's drain gate).
//!
//! A shard is drained for a group when
//! * its lease is at `SHARD_END`; or
//! * it has no lease row and the stream no longer lists it while it lists one of its children:
//!   the listing is newer than the shard's end, so the shard left retention (a listing that
//!   misses the shard *and* its children may simply be older than the shard: no evidence); or
//! * it has no lease row and one of its descendants has a lease past its start (a sequence
//!   number, `SHARD_END` or `LATEST`: see [`Checkpoint::is_past_start`]). That is the evidence KCL
//!   itself requires before its lease cleanup deletes a finished lease, and apps that start at
//!   `LATEST` never write rows for the shards before their start.
//!
//! Anything else is not drained: a lease not at `SHARD_END` is in progress, a missing row with no
//! such evidence is unknown (KCL counts it as drained, which can break order: KCL issue #150),
//! and an unreadable row is unknown too.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::checkpoint::Checkpoint;
use crate::table::TableRows;

/// The parent/child links of every shard the stream lists (open and closed).
///
/// ```
/// use shardctl_lease::Lineage;
/// let lineage = Lineage::new([("s0", vec![]), ("s1", vec!["s0"]), ("s2", vec!["s1"])]);
/// assert_eq!(lineage.descendants("s0"), ["s1", "s2"]);
/// assert!(lineage.is_listed("s2"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    parents: HashMap<String, Vec<String>>,
    children: HashMap<String, Vec<String>>,
}

impl Lineage {
    /// Builds the lineage from `(shard id, parent ids)` pairs, as `ListShards` returns them.
    pub fn new<'a, I, P>(listed: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, P)>,
        P: IntoIterator<Item = &'a str>,
    {
        let mut lineage = Self::default();
        for (id, parents) in listed {
            let parents: Vec<String> = parents.into_iter().map(str::to_owned).collect();
            for p in &parents {
                lineage
                    .children
                    .entry(p.clone())
                    .or_default()
                    .push(id.to_owned());
            }
            lineage.parents.insert(id.to_owned(), parents);
        }
        for kids in lineage.children.values_mut() {
            kids.sort();
            kids.dedup();
        }
        lineage
    }

    /// Whether the stream lists `id`.
    pub fn is_listed(&self, id: &str) -> bool {
        self.parents.contains_key(id)
    }

    /// The parents of `id` (empty when unlisted).
    pub fn parents(&self, id: &str) -> &[String] {
        self.parents.get(id).map_or(&[], Vec::as_slice)
    }

    /// The listed children of `id`.
    pub fn children(&self, id: &str) -> &[String] {
        self.children.get(id).map_or(&[], Vec::as_slice)
    }

    /// Every listed descendant of `id`, nearest first.
    pub fn descendants(&self, id: &str) -> Vec<&str> {
        self.walk(id, Self::children)
    }

    /// Every listed ancestor of `id`, nearest first.
    pub fn ancestors(&self, id: &str) -> Vec<&str> {
        self.walk(id, Self::parents)
            .into_iter()
            .filter(|a| self.is_listed(a))
            .collect()
    }

    /// Breadth-first over `next` from `id` (excluded), each shard once.
    fn walk<'s>(&'s self, id: &str, next: fn(&'s Self, &str) -> &'s [String]) -> Vec<&'s str> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut queue: std::collections::VecDeque<&str> =
            next(self, id).iter().map(String::as_str).collect();
        while let Some(shard) = queue.pop_front() {
            if !seen.insert(shard) {
                continue;
            }
            out.push(shard);
            queue.extend(next(self, shard).iter().map(String::as_str));
        }
        out
    }
}

/// What a lease table holds for one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState<'a> {
    /// A readable lease with this checkpoint.
    Lease(&'a Checkpoint),
    /// A row that could not be read, and why.
    Unreadable(&'a str),
    /// No row.
    Absent,
}

/// Lease rows by shard id, however they are stored.
pub trait LeaseRows {
    /// The row of `shard_id`.
    fn row(&self, shard_id: &str) -> RowState<'_>;
}

impl LeaseRows for TableRows {
    fn row(&self, shard_id: &str) -> RowState<'_> {
        if let Some(why) = self.malformed.get(shard_id) {
            return RowState::Unreadable(why);
        }
        match self.leases.get(shard_id) {
            Some(l) => RowState::Lease(&l.checkpoint),
            None => RowState::Absent,
        }
    }
}

/// Checkpoints and unreadable rows by shard id (the controller's observation stores these).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointRows<'a> {
    /// Checkpoints of readable leases.
    pub checkpoints: &'a BTreeMap<String, Checkpoint>,
    /// Unreadable rows: why.
    pub unreadable: &'a BTreeMap<String, String>,
}

impl LeaseRows for CheckpointRows<'_> {
    fn row(&self, shard_id: &str) -> RowState<'_> {
        if let Some(why) = self.unreadable.get(shard_id) {
            return RowState::Unreadable(why);
        }
        match self.checkpoints.get(shard_id) {
            Some(c) => RowState::Lease(c),
            None => RowState::Absent,
        }
    }
}

/// Whether a shard is drained for a group, and why (or why not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainState {
    /// Its lease is at `SHARD_END`.
    Drained,
    /// No row, and the stream no longer lists it while it lists one of its children: it left
    /// retention, nothing is left to read.
    Gone,
    /// No row, and a descendant's lease is past its start: the row was cleaned up after the
    /// shard was finished (or the application started after it).
    CleanedUp {
        /// The descendant whose checkpoint is the evidence.
        descendant: String,
        /// Its checkpoint.
        checkpoint: Checkpoint,
    },
    /// Its lease has not reached `SHARD_END`.
    InProgress(Checkpoint),
    /// No row, and no evidence that it was drained (still listed with no descendant started,
    /// or missing from a listing that may predate it): unknown, so not drained.
    Unknown,
    /// Its row cannot be read: unknown, so not drained.
    Unreadable(String),
}

impl DrainState {
    /// True when the shard's children may start, and the stream may be resharded past it.
    ///
    /// ```
    /// use shardctl_lease::DrainState;
    /// assert!(DrainState::Gone.is_drained());
    /// assert!(!DrainState::Unknown.is_drained());
    /// ```
    pub fn is_drained(&self) -> bool {
        matches!(self, Self::Drained | Self::Gone | Self::CleanedUp { .. })
    }

    /// A fixed label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Drained => "drained",
            Self::Gone => "gone",
            Self::CleanedUp { .. } => "cleaned_up",
            Self::InProgress(_) => "in_progress",
            Self::Unknown => "unknown",
            Self::Unreadable(_) => "unreadable",
        }
    }
}

impl std::fmt::Display for DrainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Drained => f.write_str("checkpoint SHARD_END"),
            Self::Gone => f.write_str("no lease, no longer listed"),
            Self::CleanedUp {
                descendant,
                checkpoint,
            } => write!(
                f,
                "lease cleaned up; descendant {descendant} at {}",
                checkpoint.short()
            ),
            Self::InProgress(c) => write!(f, "checkpoint {}", c.short()),
            Self::Unknown => f.write_str(
                "no lease for it, and no evidence that it was drained (no descendant has started): unknown, so not drained",
            ),
            Self::Unreadable(why) => write!(f, "lease row unreadable: {why}"),
        }
    }
}

/// The drain rule over one group's rows and the stream's lineage.
///
/// ```
/// use shardctl_lease::{Checkpoint, DrainState, DrainView, Lineage, StreamFilter, TableRows, Lease};
/// // s0 split into s1 and s2; KCL's cleanup deleted s0's row once both children progressed.
/// let lineage = Lineage::new([("s0", vec![]), ("s1", vec!["s0"]), ("s2", vec!["s0"])]);
/// let mut rows = TableRows::new(StreamFilter::named("orders"));
/// let seq = Checkpoint::parse("4959", 0).unwrap();
/// rows.leases.insert("s1".into(), Lease::new("s1", seq.clone()));
/// rows.leases.insert("s2".into(), Lease::new("s2", Checkpoint::TrimHorizon));
/// let view = DrainView::new(&lineage, &rows);
/// assert!(view.state("s0").is_drained());
/// assert_eq!(view.state("s2"), DrainState::InProgress(Checkpoint::TrimHorizon));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DrainView<'a, R> {
    lineage: &'a Lineage,
    rows: &'a R,
}

impl<'a, R: LeaseRows> DrainView<'a, R> {
    /// The view.
    pub fn new(lineage: &'a Lineage, rows: &'a R) -> Self {
        Self { lineage, rows }
    }

    /// Whether `shard_id` is drained, and why.
    pub fn state(&self, shard_id: &str) -> DrainState {
        match self.rows.row(shard_id) {
            RowState::Lease(c) if c.is_shard_end() => DrainState::Drained,
            RowState::Lease(c) => DrainState::InProgress(c.clone()),
            RowState::Unreadable(why) => DrainState::Unreadable(why.to_owned()),
            // Unlisted: gone only when the listing shows a child of it, so the listing is newer
            // than the shard's end and the shard left retention. A listing older than the shard
            // (a consumer's listing can be a minute old) misses it too: no evidence.
            RowState::Absent
                if !self.lineage.is_listed(shard_id)
                    && !self.lineage.children(shard_id).is_empty() =>
            {
                DrainState::Gone
            }
            RowState::Absent if !self.lineage.is_listed(shard_id) => DrainState::Unknown,
            RowState::Absent => self
                .lineage
                .descendants(shard_id)
                .into_iter()
                .find_map(|d| match self.rows.row(d) {
                    RowState::Lease(c) if c.is_past_start() => Some(DrainState::CleanedUp {
                        descendant: d.to_owned(),
                        checkpoint: c.clone(),
                    }),
                    _ => None,
                })
                .unwrap_or(DrainState::Unknown),
        }
    }

    /// The state of each of `parents`.
    pub fn states<'p>(
        &self,
        parents: impl IntoIterator<Item = &'p str>,
    ) -> BTreeMap<String, DrainState> {
        parents
            .into_iter()
            .map(|p| (p.to_owned(), self.state(p)))
            .collect()
    }

    /// True when every one of `parents` is drained.
    pub fn all_drained<'p>(&self, parents: impl IntoIterator<Item = &'p str>) -> bool {
        parents.into_iter().all(|p| self.state(p).is_drained())
    }

    /// KCL's precondition before its lease cleanup deletes a finished lease, and so this
    /// library's: the lease is at `SHARD_END`, every child (from `childShardIds`, else the
    /// lineage) has a lease past its start, and no parent still has a row. After the deletion
    /// [`DrainView::state`] reads the shard as [`DrainState::CleanedUp`]: the two rules are one.
    ///
    /// ```
    /// use shardctl_lease::{Checkpoint, DrainView, Lease, Lineage, StreamFilter, TableRows};
    /// let lineage = Lineage::new([("p", vec![]), ("c1", vec!["p"]), ("c2", vec!["p"])]);
    /// let mut rows = TableRows::new(StreamFilter::named("s"));
    /// for (id, cp) in [("p", "SHARD_END"), ("c1", "7"), ("c2", "TRIM_HORIZON")] {
    ///     rows.leases.insert(id.into(), Lease::new(id, Checkpoint::parse(cp, 0).unwrap()));
    /// }
    /// let view = DrainView::new(&lineage, &rows);
    /// assert!(!view.may_delete(&rows.leases["p"])); // c2 has not started
    /// ```
    pub fn may_delete(&self, lease: &crate::row::Lease) -> bool {
        let shard_id = lease.shard_id();
        if !lease.is_finished() {
            return false;
        }
        let children: Vec<&str> = if lease.child_shard_ids.is_empty() {
            self.lineage
                .children(&shard_id)
                .iter()
                .map(String::as_str)
                .collect()
        } else {
            lease.child_shard_ids.iter().map(String::as_str).collect()
        };
        !children.is_empty()
            && children
                .iter()
                .all(|c| matches!(self.rows.row(c), RowState::Lease(cp) if cp.is_past_start()))
            && lease
                .parent_shard_ids
                .iter()
                .all(|p| self.rows.row(p) == RowState::Absent)
    }

    /// The first listed ancestor of `shard_id` (nearest first) that is not drained, with its state.
    pub fn first_undrained_ancestor(&self, shard_id: &str) -> Option<(String, DrainState)> {
        self.lineage.ancestors(shard_id).into_iter().find_map(|a| {
            let state = self.state(a);
            (!state.is_drained()).then(|| (a.to_owned(), state))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::row::Lease;
    use crate::table::StreamFilter;

    fn seq(n: u32) -> Checkpoint {
        Checkpoint::parse(&n.to_string(), 0).unwrap()
    }

    fn rows(leases: &[(&str, Checkpoint)]) -> TableRows {
        let mut rows = TableRows::new(StreamFilter::named("s"));
        for (id, c) in leases {
            rows.leases
                .insert((*id).to_owned(), Lease::new(*id, c.clone()));
        }
        rows
    }

    /// s0 → (s1, s2); s1 → (s3, s4); s3 + s4 → s5.
    fn lineage() -> Lineage {
        Lineage::new([
            ("s0", vec![]),
            ("s1", vec!["s0"]),
            ("s2", vec!["s0"]),
            ("s3", vec!["s1"]),
            ("s4", vec!["s1"]),
            ("s5", vec!["s3", "s4"]),
        ])
    }

    #[test]
    fn missing_listed_parent_with_unstarted_children_is_unknown_unlike_kcl() {
        let l = lineage();
        let r = rows(&[
            ("s1", Checkpoint::TrimHorizon),
            ("s2", Checkpoint::TrimHorizon),
        ]);
        assert_eq!(DrainView::new(&l, &r).state("s0"), DrainState::Unknown);
    }

    #[test]
    fn kcl_cleanup_of_two_generations_counts_as_drained() {
        // KCL deleted s0 and s1 once their children progressed; s3 and s4 are under way.
        let l = lineage();
        let r = rows(&[
            ("s2", seq(9)),
            ("s3", seq(7)),
            ("s4", Checkpoint::TrimHorizon),
        ]);
        let view = DrainView::new(&l, &r);
        assert!(view.state("s0").is_drained());
        assert!(view.state("s1").is_drained());
        // s3 is the nearest ancestor of s5 and not finished.
        let (first, state) = view.first_undrained_ancestor("s5").unwrap();
        assert_eq!(
            (first.as_str(), state),
            ("s3", DrainState::InProgress(seq(7)))
        );
    }

    #[test]
    fn unreadable_rows_hold_and_say_why() {
        let l = lineage();
        let mut r = rows(&[("s1", Checkpoint::ShardEnd)]);
        r.malformed
            .insert("s0".into(), "attribute checkpoint is missing".into());
        let state = DrainView::new(&l, &r).state("s0");
        assert!(!state.is_drained());
        assert!(state.to_string().contains("checkpoint is missing"));
    }

    #[test]
    fn a_lease_deleted_under_the_cleanup_rule_still_reads_as_drained() {
        let l = lineage();
        let mut r = rows(&[
            ("s0", Checkpoint::ShardEnd),
            ("s1", Checkpoint::ShardEnd),
            ("s2", seq(4)),
            ("s3", seq(1)),
            ("s4", Checkpoint::TrimHorizon),
        ]);
        let view = DrainView::new(&l, &r);
        assert!(view.may_delete(&r.leases["s0"]));
        // s1 still has a parent row, and s4 has not started.
        assert!(!view.may_delete(&r.leases["s1"]));
        r.leases.remove("s0");
        let view = DrainView::new(&l, &r);
        assert!(!view.may_delete(&r.leases["s1"]), "s4 has not started");
        assert!(matches!(view.state("s0"), DrainState::CleanedUp { .. }));
    }

    #[test]
    fn unlisted_shard_without_row_is_gone() {
        let l = Lineage::new([("s1", vec!["s0"])]);
        let r = rows(&[]);
        assert_eq!(DrainView::new(&l, &r).state("s0"), DrainState::Gone);
    }

    /// Regression (issue 11): a consumer's listing can be a minute old. A parent missing from it
    /// may be a shard created after the listing (a merge's other parent), not one that left
    /// retention: without a listed child to prove the listing is newer than the parent, its
    /// absence is no evidence, and a row-less parent is unknown.
    #[test]
    fn a_parent_missing_from_a_listing_older_than_its_child_is_unknown() {
        // Listed a minute ago: a (since split into b, c) and x. c + x were merged into d since.
        let stale = Lineage::new([("a", vec![]), ("x", vec![])]);
        let r = rows(&[
            ("a", seq(3)),
            ("x", Checkpoint::ShardEnd),
            ("d", Checkpoint::TrimHorizon),
        ]);
        let view = DrainView::new(&stale, &r);
        assert_eq!(view.state("c"), DrainState::Unknown);
        assert!(!view.all_drained(["c", "x"]));
        // A listing that shows a child of c without c itself is newer than c's end: c left
        // retention, nothing of it is left to read.
        let fresh = Lineage::new([("d", vec!["c", "x"]), ("x", vec![])]);
        assert_eq!(DrainView::new(&fresh, &r).state("c"), DrainState::Gone);
    }

    #[test]
    fn latest_child_is_evidence_for_parents_never_read() {
        let l = lineage();
        let r = rows(&[("s1", Checkpoint::Latest)]);
        assert!(DrainView::new(&l, &r).state("s0").is_drained());
    }
}
