//! The shards of a stream, their lineage, the check that open shards tile the key space, and
//! [`apply`]: what the map looks like after planned operations have run.

use crate::hash::{HashKey, HashRange, MAX_HASH_KEY};
use crate::observation::{KeyDistribution, ShardMetrics};
use crate::plan::PlannedOperation;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One shard as `ListShards` reports it, plus what was observed of its traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shard {
    /// The shard id, e.g. `shardId-000000000003`.
    pub shard_id: String,
    /// The shard this one was split from, or the lower parent of a merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_shard_id: Option<String>,
    /// The second parent of a merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjacent_parent_shard_id: Option<String>,
    /// The hash keys the shard owns.
    pub hash_key_range: HashRange,
    /// Open shards take writes; closed ones stay readable until retention expires.
    pub state: ShardState,
    /// Per-minute metrics over the observation window (open shards; empty when unknown).
    #[serde(default, skip_serializing_if = "ShardMetrics::is_empty")]
    pub metrics: ShardMetrics,
    /// Sampled key distribution, used for traffic-weighted split points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_distribution: Option<KeyDistribution>,
}

/// Whether a shard takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ShardState {
    /// No ending sequence number: the shard takes writes.
    Open,
    /// The shard was split or merged away; it keeps its data until retention expires.
    Closed,
}

impl Shard {
    /// An open shard with no lineage and no metrics.
    pub fn open(id: impl Into<String>, range: HashRange) -> Self {
        Shard {
            shard_id: id.into(),
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            hash_key_range: range,
            state: ShardState::Open,
            metrics: ShardMetrics::default(),
            key_distribution: None,
        }
    }

    /// Whether the shard takes writes.
    pub fn is_open(&self) -> bool {
        self.state == ShardState::Open
    }

    /// The shard's parents (zero, one or two).
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent_shard_id
            .iter()
            .chain(self.adjacent_parent_shard_id.iter())
            .map(String::as_str)
    }
}

/// Why a list of shards is not a usable map. A broken map is never planned on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardMapError {
    /// The stream has no open shard.
    #[error("the stream has no open shards")]
    NoOpenShards,
    /// Two shards share an id.
    #[error("shard id {0} appears more than once")]
    DuplicateShard(String),
    /// A range with its start above its end.
    #[error("shard {shard} has an empty hash key range")]
    EmptyRange {
        /// The offending shard.
        shard: String,
    },
    /// Keys owned by no open shard.
    #[error("no open shard owns hash keys {from}..={to}")]
    Gap {
        /// First uncovered key.
        from: HashKey,
        /// Last uncovered key.
        to: HashKey,
    },
    /// Keys owned by two open shards.
    #[error("open shards {first} and {second} both own hash key {key}")]
    Overlap {
        /// Lower shard.
        first: String,
        /// Upper shard.
        second: String,
        /// First key owned twice.
        key: HashKey,
    },
}

/// A validated view of a stream's shards: open shards sorted by hash key, tiling the key space
/// with no gap and no overlap, and every listed shard indexed by id for lineage walks.
#[derive(Debug, Clone)]
pub struct ShardMap<'a> {
    shards: &'a [Shard],
    by_id: HashMap<&'a str, usize>,
    open: Vec<usize>,
}

impl<'a> ShardMap<'a> {
    /// Validates `shards` (open and closed, as `ListShards` returns them).
    pub fn new(shards: &'a [Shard]) -> Result<Self, ShardMapError> {
        let mut by_id = HashMap::with_capacity(shards.len());
        for (i, s) in shards.iter().enumerate() {
            if by_id.insert(s.shard_id.as_str(), i).is_some() {
                return Err(ShardMapError::DuplicateShard(s.shard_id.clone()));
            }
            if s.hash_key_range.starting_hash_key > s.hash_key_range.ending_hash_key {
                return Err(ShardMapError::EmptyRange {
                    shard: s.shard_id.clone(),
                });
            }
        }
        let mut open: Vec<usize> = (0..shards.len()).filter(|&i| shards[i].is_open()).collect();
        if open.is_empty() {
            return Err(ShardMapError::NoOpenShards);
        }
        open.sort_unstable_by_key(|&i| shards[i].hash_key_range.starting_hash_key);
        check_partition(shards, &open)?;
        Ok(ShardMap {
            shards,
            by_id,
            open,
        })
    }

    /// Open shards in hash key order.
    pub fn open_shards(&self) -> impl ExactSizeIterator<Item = &'a Shard> + '_ {
        self.open.iter().map(|&i| &self.shards[i])
    }

    /// The number of open shards.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// A listed shard by id.
    pub fn get(&self, id: &str) -> Option<&'a Shard> {
        self.by_id.get(id).map(|&i| &self.shards[i])
    }

    /// Adjacent open pairs, lower shard first, in key order.
    pub fn adjacent_pairs(&self) -> impl Iterator<Item = (&'a Shard, &'a Shard)> + '_ {
        self.open
            .windows(2)
            .map(|w| (&self.shards[w[0]], &self.shards[w[1]]))
    }

    /// Every listed ancestor of `id` (parents, their parents, ...), nearest first. Ancestors
    /// that have aged out of the listing are not returned: they are gone.
    pub fn ancestors(&self, id: &str) -> Vec<&'a Shard> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<&str> = self
            .get(id)
            .map(|s| s.parents().collect())
            .unwrap_or_default();
        while let Some(p) = stack.pop() {
            if !seen.insert(p) {
                continue;
            }
            if let Some(shard) = self.get(p) {
                out.push(shard);
                stack.extend(shard.parents());
            }
        }
        out
    }
}

fn check_partition(shards: &[Shard], open: &[usize]) -> Result<(), ShardMapError> {
    let first = &shards[open[0]].hash_key_range;
    if first.starting_hash_key != 0 {
        return Err(ShardMapError::Gap {
            from: 0,
            to: first.starting_hash_key - 1,
        });
    }
    for w in open.windows(2) {
        let (a, b) = (&shards[w[0]], &shards[w[1]]);
        let (ra, rb) = (&a.hash_key_range, &b.hash_key_range);
        if rb.starting_hash_key <= ra.ending_hash_key {
            return Err(ShardMapError::Overlap {
                first: a.shard_id.clone(),
                second: b.shard_id.clone(),
                key: rb.starting_hash_key,
            });
        }
        if !ra.is_adjacent_to(rb) {
            return Err(ShardMapError::Gap {
                from: ra.ending_hash_key + 1,
                to: rb.starting_hash_key - 1,
            });
        }
    }
    let last = &shards[open[open.len() - 1]].hash_key_range;
    if last.ending_hash_key != MAX_HASH_KEY {
        return Err(ShardMapError::Gap {
            from: last.ending_hash_key + 1,
            to: MAX_HASH_KEY,
        });
    }
    Ok(())
}

/// Builds `n` open shards that split the key space evenly, named `shardId-000000000000` onwards.
/// Handy for examples, tests and the simulator.
pub fn even_shards(n: usize) -> Vec<Shard> {
    assert!(n > 0, "a stream has at least one shard");
    // 2^128 = step * n + rem + 1: the first `rem + 1` shards get one key more.
    let (step, rem) = (MAX_HASH_KEY / n as u128, MAX_HASH_KEY % n as u128);
    let start = |i: u128| step * i + i.min(rem + 1);
    (0..n as u128)
        .map(|i| {
            let end = if i + 1 == n as u128 {
                MAX_HASH_KEY
            } else {
                start(i + 1) - 1
            };
            let range = HashRange::new(start(i), end).expect("starts increase with i");
            Shard::open(shard_id(i as usize), range)
        })
        .collect()
}

/// The id Kinesis gives the `n`th shard of a stream.
pub fn shard_id(n: usize) -> String {
    format!("shardId-{n:012}")
}

/// Why a planned operation cannot be applied to a list of shards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The shard is not listed.
    #[error("shard {0} does not exist")]
    UnknownShard(String),
    /// The shard is closed.
    #[error("shard {0} is closed")]
    ClosedShard(String),
    /// The split key is outside the shard.
    #[error("split key {key} is not strictly inside shard {shard}")]
    BadSplitKey {
        /// The shard.
        shard: String,
        /// The key.
        key: HashKey,
    },
    /// The two shards are not adjacent.
    #[error("shards {0} and {1} are not adjacent")]
    NotAdjacent(String, String),
}

/// Applies `ops` to `shards` the way Kinesis would: a split closes its shard and opens two
/// children, a merge closes both shards and opens one child. New shards are named after the
/// highest existing shard number, as Kinesis does.
pub fn apply(shards: &[Shard], ops: &[PlannedOperation]) -> Result<Vec<Shard>, ApplyError> {
    let mut out = shards.to_vec();
    let mut next = out
        .iter()
        .filter_map(|s| s.shard_id.rsplit('-').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |n| n.saturating_add(1));
    let find_open = |out: &[Shard], id: &str| -> Result<usize, ApplyError> {
        let i = out
            .iter()
            .position(|s| s.shard_id == id)
            .ok_or_else(|| ApplyError::UnknownShard(id.to_string()))?;
        if out[i].is_open() {
            Ok(i)
        } else {
            Err(ApplyError::ClosedShard(id.to_string()))
        }
    };
    for op in ops {
        match op {
            PlannedOperation::Split {
                shard_id,
                new_starting_hash_key,
                ..
            } => {
                let i = find_open(&out, shard_id)?;
                let (lo, hi) = out[i]
                    .hash_key_range
                    .split_at(*new_starting_hash_key)
                    .ok_or_else(|| ApplyError::BadSplitKey {
                        shard: shard_id.clone(),
                        key: *new_starting_hash_key,
                    })?;
                out[i].state = ShardState::Closed;
                for range in [lo, hi] {
                    let mut child = Shard::open(self::shard_id(next), range);
                    child.parent_shard_id = Some(shard_id.clone());
                    out.push(child);
                    next = next.saturating_add(1);
                }
            }
            PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                ..
            } => {
                let (a, b) = (
                    find_open(&out, shard_id)?,
                    find_open(&out, adjacent_shard_id)?,
                );
                let (ra, rb) = (out[a].hash_key_range, out[b].hash_key_range);
                let merged = ra
                    .merge_with(&rb)
                    .or_else(|| rb.merge_with(&ra))
                    .ok_or_else(|| {
                        ApplyError::NotAdjacent(shard_id.clone(), adjacent_shard_id.clone())
                    })?;
                out[a].state = ShardState::Closed;
                out[b].state = ShardState::Closed;
                let mut child = Shard::open(self::shard_id(next), merged);
                child.parent_shard_id = Some(shard_id.clone());
                child.adjacent_parent_shard_id = Some(adjacent_shard_id.clone());
                out.push(child);
                next = next.saturating_add(1);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_shards_tile_the_space() {
        for n in [1, 2, 3, 7, 64, 1000] {
            let shards = even_shards(n);
            let map = ShardMap::new(&shards).expect("valid map");
            assert_eq!(map.open_count(), n);
            assert_eq!(map.adjacent_pairs().count(), n - 1);
        }
    }

    #[test]
    fn a_gap_is_an_error_naming_the_keys() {
        let mut shards = even_shards(3);
        shards[1].hash_key_range.ending_hash_key -= 5;
        let err = ShardMap::new(&shards).expect_err("gap");
        assert!(matches!(err, ShardMapError::Gap { .. }), "{err}");
    }

    #[test]
    fn an_overlap_is_an_error() {
        let mut shards = even_shards(3);
        shards[2].hash_key_range.starting_hash_key -= 1;
        assert!(matches!(
            ShardMap::new(&shards),
            Err(ShardMapError::Overlap { .. })
        ));
    }

    #[test]
    fn missing_edges_are_gaps() {
        let mut shards = even_shards(2);
        shards[0].hash_key_range.starting_hash_key = 1;
        assert_eq!(
            ShardMap::new(&shards).expect_err("gap").to_string(),
            "no open shard owns hash keys 0..=0"
        );
        let mut shards = even_shards(2);
        shards[1].hash_key_range.ending_hash_key -= 1;
        assert!(matches!(
            ShardMap::new(&shards),
            Err(ShardMapError::Gap {
                to: MAX_HASH_KEY,
                ..
            })
        ));
    }

    #[test]
    fn duplicates_and_no_open_shards_are_errors() {
        let mut shards = even_shards(2);
        shards[1].shard_id = shards[0].shard_id.clone();
        assert!(matches!(
            ShardMap::new(&shards),
            Err(ShardMapError::DuplicateShard(_))
        ));
        let mut shards = even_shards(1);
        shards[0].state = ShardState::Closed;
        assert_eq!(
            ShardMap::new(&shards).expect_err("closed").to_string(),
            "the stream has no open shards"
        );
    }

    #[test]
    fn closed_shards_may_overlap_open_ones_and_are_walked_as_ancestors() {
        let mut parent = Shard::open("p", HashRange::FULL);
        parent.state = ShardState::Closed;
        parent.parent_shard_id = Some("grandparent-aged-out".into());
        let key = HashRange::FULL.midpoint_split_key().expect("split");
        let (a, b) = HashRange::FULL.split_at(key).expect("split");
        let mut left = Shard::open("a", a);
        left.parent_shard_id = Some("p".into());
        let mut right = Shard::open("b", b);
        right.parent_shard_id = Some("p".into());
        let shards = vec![parent, left, right];
        let map = ShardMap::new(&shards).expect("valid");
        let ancestors: Vec<_> = map
            .ancestors("a")
            .iter()
            .map(|s| s.shard_id.clone())
            .collect();
        assert_eq!(ancestors, vec!["p".to_string()]);
    }

    #[test]
    fn apply_opens_children_named_after_the_highest_shard_and_refuses_closed_shards() {
        use crate::plan::{PlannedOperation, Reason};
        let shards = even_shards(2);
        let reason = Reason::ColdWhereKnown { window_minutes: 0 };
        let range = shards[0].hash_key_range;
        let split = PlannedOperation::Split {
            shard_id: shard_id(0),
            hash_key_range: range,
            new_starting_hash_key: range.midpoint_split_key().expect("splittable"),
            split_point: crate::plan::SplitPointUsed::Midpoint,
            lower_child_share: 0.5,
            reason: reason.clone(),
        };
        let after = apply(&shards, std::slice::from_ref(&split)).expect("applies");
        let opened: Vec<_> = after
            .iter()
            .filter(|s| s.is_open())
            .map(|s| s.shard_id.as_str())
            .collect();
        assert_eq!(opened, vec![shard_id(1), shard_id(2), shard_id(3)]);
        assert_eq!(
            after[2].parent_shard_id.as_deref(),
            Some(shard_id(0).as_str())
        );
        ShardMap::new(&after).expect("still tiles the key space");
        assert_eq!(
            apply(&after, &[split]).expect_err("closed"),
            ApplyError::ClosedShard(shard_id(0))
        );
        let merge = PlannedOperation::Merge {
            shard_id: shard_id(2),
            adjacent_shard_id: shard_id(1),
            hash_key_range: HashRange::FULL,
            reason,
        };
        assert!(matches!(
            apply(&after, &[merge]),
            Err(ApplyError::NotAdjacent(..))
        ));
    }
}
