//! Shard discovery and shard sync: which lease rows must exist for the shards a stream lists.
//!
//! [`plan_shard_sync`] is pure; [`list_shards`] is the one `ListShards` call site (all pages).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::DisplayErrorContext;

use crate::lease::{Checkpoint, Lease};

/// One shard as `ListShards` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Shard id.
    pub shard_id: String,
    /// `ParentShardId` and `AdjacentParentShardId`, when present.
    pub parents: BTreeSet<String>,
    /// First hash key (decimal), when reported.
    pub starting_hash_key: Option<String>,
    /// Last hash key (decimal), when reported.
    pub ending_hash_key: Option<String>,
    /// True when the shard reports an ending sequence number (closed).
    ///
    /// Informational only: the end of a shard is detected by reading it (null `NextShardIterator`
    /// with `ChildShards`), never by comparing sequence numbers.
    pub closed: bool,
}

pub use crate::worker::InitialPosition;

/// Error listing shards.
#[derive(Debug, thiserror::Error)]
#[error("ListShards on {stream} failed: {message}")]
pub struct ListShardsError {
    /// Stream name.
    pub stream: String,
    /// The SDK error with context.
    pub message: String,
    /// Whether the stream does not exist.
    pub not_found: bool,
}

/// Lists every shard of `stream` (all pages; `NextToken` calls carry no stream name, as the API
/// requires).
///
/// ```no_run
/// # async fn demo() -> Result<(), shardctl_consumer::shards::ListShardsError> {
/// let config = aws_config::load_from_env().await;
/// let shards = shardctl_consumer::shards::list_shards(&aws_sdk_kinesis::Client::new(&config), "events").await?;
/// println!("{} shards", shards.len());
/// # Ok(()) }
/// ```
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<ShardInfo>, ListShardsError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match token.take() {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let page = req.send().await.map_err(|e| ListShardsError {
            stream: stream.to_owned(),
            not_found: e
                .as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()),
            message: DisplayErrorContext(&e).to_string(),
        })?;
        for shard in page.shards() {
            let mut parents = BTreeSet::new();
            if let Some(p) = shard.parent_shard_id() {
                parents.insert(p.to_owned());
            }
            if let Some(p) = shard.adjacent_parent_shard_id() {
                parents.insert(p.to_owned());
            }
            out.push(ShardInfo {
                shard_id: shard.shard_id().to_owned(),
                parents,
                starting_hash_key: shard
                    .hash_key_range()
                    .map(|r| r.starting_hash_key().to_owned()),
                ending_hash_key: shard
                    .hash_key_range()
                    .map(|r| r.ending_hash_key().to_owned()),
                closed: shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some(),
            });
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    Ok(out)
}

/// The lease rows to create so that every shard with unread data has one.
///
/// * A shard gets a lease unless it has one or the drain rule reads it as drained (a
///   descendant's lease is past its start: its row was cleaned up after it was finished, and KCL
///   never recreates it either). No shard is ever skipped otherwise.
/// * Rows come back in lineage order (parents first).
/// * A lease records its parents (`parentShardId`) and hash range.
/// * A child of a tracked parent starts at `TRIM_HORIZON`, so nothing between the parent's end and
///   the child's start is skipped. Shards without tracked parents start at `initial`; with
///   [`InitialPosition::Latest`], closed ones are marked `SHARD_END` (skipped) so their children
///   are not blocked.
///
/// ```
/// use std::collections::BTreeSet;
/// use shardctl_consumer::shards::{plan_shard_sync, InitialPosition, ShardInfo};
/// let shard = |id: &str, parents: &[&str], closed| ShardInfo {
///     shard_id: id.into(),
///     parents: parents.iter().map(|p| p.to_string()).collect(),
///     starting_hash_key: None,
///     ending_hash_key: None,
///     closed,
/// };
/// let listed = [shard("s0", &[], true), shard("s1", &["s0"], false), shard("s2", &["s0"], false)];
/// let created = plan_shard_sync(&listed, &[], InitialPosition::TrimHorizon);
/// assert_eq!(created.len(), 3);
/// assert_eq!(created[1].parent_shard_ids, BTreeSet::from(["s0".to_string()]));
/// ```
pub fn plan_shard_sync(
    listed: &[ShardInfo],
    existing: &[Lease],
    initial: InitialPosition,
) -> Vec<Lease> {
    let have: HashMap<&str, &Lease> = existing.iter().map(|l| (l.lease_key.as_str(), l)).collect();
    let lineage = crate::drain::lineage_of(listed);
    let no_unreadable = BTreeSet::new();
    let rows = crate::drain::ScannedRows::new(existing, &no_unreadable);
    let view = shardctl_lease::DrainView::new(&lineage, &rows);
    let by_id: BTreeMap<&str, &ShardInfo> =
        listed.iter().map(|s| (s.shard_id.as_str(), s)).collect();

    // Decide in lineage order (parents first): shard ids grow monotonically, but do not rely on it.
    let mut planned: BTreeMap<&str, Lease> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    let mut decided: BTreeSet<&str> = BTreeSet::new();
    let mut progress = true;
    while progress {
        progress = false;
        for (id, shard) in &by_id {
            if decided.contains(id) {
                continue;
            }
            let listed_parents: Vec<&str> = shard
                .parents
                .iter()
                .map(String::as_str)
                .filter(|p| by_id.contains_key(p))
                .collect();
            if listed_parents.iter().any(|p| !decided.contains(p)) {
                continue;
            }
            decided.insert(id);
            progress = true;
            if have.contains_key(id) {
                continue;
            }
            // A shard without a row is left alone only when the drain rule reads it as drained:
            // a descendant's lease is past its start, KCL's evidence before its lease cleanup
            // deletes a finished lease (generation after generation). A descendant that merely
            // has a row (a merge child created when its other parent ended) is no such evidence;
            // as KCL's shard syncer does, the shard gets its row and nothing is skipped.
            if view.state(id).is_drained() {
                continue;
            }
            // A parent is tracked when it has a row, or a planned row that will really be read.
            let parent_tracked = shard.parents.iter().any(|p| {
                have.contains_key(p.as_str())
                    || planned
                        .get(p.as_str())
                        .is_some_and(|l| !l.checkpoint.is_shard_end())
            });
            let checkpoint = match (parent_tracked, initial, shard.closed) {
                (true, _, _) | (false, InitialPosition::TrimHorizon, _) => Checkpoint::TrimHorizon,
                (false, InitialPosition::Latest, false) => Checkpoint::Latest,
                (false, InitialPosition::Latest, true) => Checkpoint::ShardEnd,
                (false, InitialPosition::AtTimestamp(_), _) => Checkpoint::AtTimestamp,
            };
            let mut lease = Lease::new(shard.shard_id.clone(), checkpoint);
            lease.parent_shard_ids = shard.parents.clone();
            lease.starting_hash_key = shard.starting_hash_key.clone();
            lease.ending_hash_key = shard.ending_hash_key.clone();
            planned.insert(id, lease);
            order.push(id);
        }
    }
    // Parents before children, so a worker that stops part-way never leaves a child's row
    // without its parents' rows.
    order
        .into_iter()
        .filter_map(|id| planned.remove(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            starting_hash_key: Some("0".into()),
            ending_hash_key: Some("9".into()),
            closed,
        }
    }

    #[test]
    fn existing_leases_are_not_recreated_and_cleaned_parents_stay_away() {
        let listed = [
            shard("s0", &[], true),
            shard("s1", &["s0"], true),
            shard("s2", &["s0"], false),
            shard("s3", &["s1"], false),
        ];
        // s0's row was cleaned up after s1/s2 started: do not resurrect it.
        let existing = [
            Lease::new("s1", Checkpoint::ShardEnd),
            Lease::new("s2", Checkpoint::TrimHorizon),
        ];
        let planned = plan_shard_sync(&listed, &existing, InitialPosition::TrimHorizon);
        let ids: Vec<_> = planned.iter().map(|l| l.lease_key.as_str()).collect();
        assert_eq!(ids, ["s3"]);
        assert_eq!(planned[0].checkpoint, Checkpoint::TrimHorizon);
    }

    /// Regression: after KCL's lease cleanup removed two generations, shard sync recreated the
    /// finished ancestors at TRIM_HORIZON and re-read the whole lineage.
    #[test]
    fn kcl_cleanup_of_two_generations_never_recreates_the_lineage() {
        let listed = [
            shard("s0", &[], true),
            shard("s1", &["s0"], true),
            shard("s2", &["s0"], true),
            shard("s3", &["s1"], false),
            shard("s4", &["s1"], false),
            shard("s5", &["s2"], false),
        ];
        // s0 and s1 were deleted after their children progressed; s2 ended and was deleted too.
        let existing = [
            Lease::new("s3", Checkpoint::Latest),
            Lease::new("s4", Checkpoint::ShardEnd),
            Lease::new("s5", Checkpoint::Latest),
        ];
        let planned = plan_shard_sync(&listed, &existing, InitialPosition::TrimHorizon);
        assert!(planned.is_empty(), "{planned:?}");
    }

    /// Regression (issue 11): a merge child (d, of c and x) got its row when x ended, before c
    /// had one. "A descendant has a row" then kept shard sync from ever creating c's row, and
    /// c's records were lost when they left retention. A descendant's row counts only as the
    /// drain rule's evidence (past its start), like KCL's shard syncer.
    #[test]
    fn a_shard_whose_merge_child_has_a_row_but_has_not_started_is_still_created() {
        let listed = [
            shard("a", &[], true),
            shard("x", &[], true),
            shard("b", &["a"], false),
            shard("c", &["a"], true),
            shard("d", &["c", "x"], false),
        ];
        let existing = [
            Lease::new(
                "a",
                Checkpoint::Sequence {
                    sequence_number: "17".into(),
                    sub_sequence_number: 0,
                },
            ),
            Lease::new("x", Checkpoint::ShardEnd),
            Lease::new("d", Checkpoint::TrimHorizon).with_parents(["c", "x"]),
        ];
        let planned = plan_shard_sync(&listed, &existing, InitialPosition::TrimHorizon);
        let ids: Vec<_> = planned.iter().map(|l| l.lease_key.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(
            planned
                .iter()
                .all(|l| l.checkpoint == Checkpoint::TrimHorizon)
        );
    }

    #[test]
    fn latest_skips_closed_history_but_children_of_read_shards_start_at_trim_horizon() {
        let listed = [
            shard("s0", &[], true),
            shard("s1", &["s0"], false),
            shard("s2", &[], false),
            shard("s3", &["s2", "s1"], false),
        ];
        let planned = plan_shard_sync(&listed, &[], InitialPosition::Latest);
        let cp: BTreeMap<_, _> = planned
            .iter()
            .map(|l| (l.lease_key.as_str(), l.checkpoint.clone()))
            .collect();
        assert_eq!(cp["s0"], Checkpoint::ShardEnd);
        assert_eq!(cp["s1"], Checkpoint::Latest);
        assert_eq!(cp["s2"], Checkpoint::Latest);
        assert_eq!(cp["s3"], Checkpoint::TrimHorizon);
        assert_eq!(planned.len(), 4);
    }
}
