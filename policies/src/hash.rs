//! Hash key arithmetic over the Kinesis key space `0 ..= 2^128 - 1`.
//!
//! Kinesis maps every partition key to a 128-bit hash key (the MD5 of the key, read as an unsigned
//! integer). Shards own closed, inclusive ranges of that space. The API writes keys as decimal
//! strings, and so do our JSON and YAML formats.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A position in the Kinesis hash key space.
pub type HashKey = u128;

/// The largest hash key, `2^128 - 1`.
pub const MAX_HASH_KEY: HashKey = u128::MAX;

/// An inclusive range of hash keys owned by one shard.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct HashRange {
    /// First key of the range (inclusive), as a decimal string.
    #[serde(with = "decimal")]
    #[schemars(with = "decimal::Schema")]
    pub starting_hash_key: HashKey,
    /// Last key of the range (inclusive), as a decimal string.
    #[serde(with = "decimal")]
    #[schemars(with = "decimal::Schema")]
    pub ending_hash_key: HashKey,
}

impl HashRange {
    /// The whole key space, as owned by the single shard of a new one-shard stream.
    pub const FULL: HashRange = HashRange {
        starting_hash_key: 0,
        ending_hash_key: MAX_HASH_KEY,
    };

    /// Builds a range; `None` when `start > end`.
    pub fn new(start: HashKey, end: HashKey) -> Option<Self> {
        (start <= end).then_some(Self {
            starting_hash_key: start,
            ending_hash_key: end,
        })
    }

    /// The number of keys in the range minus one (the full space does not fit in a `u128`).
    pub fn width_minus_one(&self) -> u128 {
        self.ending_hash_key - self.starting_hash_key
    }

    /// The range's share of the whole key space, in `(0, 1]`.
    pub fn fraction_of_space(&self) -> f64 {
        (self.width_minus_one() as f64 + 1.0) / (MAX_HASH_KEY as f64 + 1.0)
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: HashKey) -> bool {
        self.starting_hash_key <= key && key <= self.ending_hash_key
    }

    /// Whether a split can happen at all: a range of one key cannot be divided.
    pub fn is_splittable(&self) -> bool {
        self.starting_hash_key < self.ending_hash_key
    }

    /// Whether `key` is a valid `NewStartingHashKey` for `SplitShard`: strictly above the start and
    /// at most the end, so that both children are non-empty.
    pub fn is_valid_split_key(&self, key: HashKey) -> bool {
        self.starting_hash_key < key && key <= self.ending_hash_key
    }

    /// The split key that halves the range, as AWS does for even splits: the children are
    /// `[start, key - 1]` and `[key, end]`. `None` for a single-key range.
    pub fn midpoint_split_key(&self) -> Option<HashKey> {
        self.is_splittable()
            .then(|| self.starting_hash_key + self.width_minus_one() / 2 + 1)
    }

    /// The two children a split at `key` produces, or `None` if `key` is not a valid split key.
    pub fn split_at(&self, key: HashKey) -> Option<(HashRange, HashRange)> {
        self.is_valid_split_key(key).then(|| {
            (
                HashRange {
                    starting_hash_key: self.starting_hash_key,
                    ending_hash_key: key - 1,
                },
                HashRange {
                    starting_hash_key: key,
                    ending_hash_key: self.ending_hash_key,
                },
            )
        })
    }

    /// Whether `next` starts right after `self` ends (the `MergeShards` adjacency rule).
    pub fn is_adjacent_to(&self, next: &HashRange) -> bool {
        self.ending_hash_key != MAX_HASH_KEY && self.ending_hash_key + 1 == next.starting_hash_key
    }

    /// The union of two adjacent ranges, lower one first; `None` if they are not adjacent.
    pub fn merge_with(&self, next: &HashRange) -> Option<HashRange> {
        self.is_adjacent_to(next).then_some(HashRange {
            starting_hash_key: self.starting_hash_key,
            ending_hash_key: next.ending_hash_key,
        })
    }

    /// The key at `fraction` (0.0 ..= 1.0) of the way through the range, rounded down.
    pub fn key_at_fraction(&self, fraction: f64) -> HashKey {
        let f = fraction.clamp(0.0, 1.0);
        // f64 has 53 bits of mantissa: enough for placing a split point, not for exact arithmetic.
        let offset = (self.width_minus_one() as f64 * f) as u128;
        self.starting_hash_key + offset.min(self.width_minus_one())
    }

    /// The fraction (0.0 ..= 1.0) of the range that lies below `key`.
    pub fn fraction_below(&self, key: HashKey) -> f64 {
        if key <= self.starting_hash_key {
            0.0
        } else if key > self.ending_hash_key {
            1.0
        } else {
            (key - self.starting_hash_key) as f64 / (self.width_minus_one() as f64 + 1.0)
        }
    }
}

impl fmt::Display for HashRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.starting_hash_key, self.ending_hash_key)
    }
}

/// A short, human-readable form of a hash key: its position in the key space as a percentage.
pub fn key_position_percent(key: HashKey) -> f64 {
    key as f64 / MAX_HASH_KEY as f64 * 100.0
}

/// Serde helpers that write `u128` keys as decimal strings, as the Kinesis API does.
pub mod decimal {
    use super::*;

    /// Serializes a key as a decimal string.
    pub fn serialize<S: Serializer>(key: &HashKey, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(key)
    }

    /// Deserializes a key from a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashKey, D::Error> {
        let text = String::deserialize(d)?;
        text.trim().parse::<u128>().map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not a hash key: expected a decimal integer from 0 to {MAX_HASH_KEY}"
            ))
        })
    }

    /// JSON Schema stand-in for a decimal hash key.
    #[derive(JsonSchema)]
    #[schemars(description = "A 128-bit hash key as a decimal string.")]
    #[allow(dead_code)]
    pub struct Schema(#[schemars(regex(pattern = r"^[0-9]{1,39}$"))] String);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midpoint_of_the_full_space_matches_aws_even_split() {
        let key = HashRange::FULL.midpoint_split_key().expect("splittable");
        assert_eq!(key, 1u128 << 127);
        let (a, b) = HashRange::FULL.split_at(key).expect("valid");
        assert_eq!(a.ending_hash_key, (1u128 << 127) - 1);
        assert_eq!(b.ending_hash_key, MAX_HASH_KEY);
        assert!(a.is_adjacent_to(&b));
        assert_eq!(a.merge_with(&b), Some(HashRange::FULL));
    }

    #[test]
    fn single_key_range_cannot_split() {
        let r = HashRange::new(7, 7).expect("range");
        assert!(!r.is_splittable());
        assert_eq!(r.midpoint_split_key(), None);
        assert_eq!(r.split_at(7), None);
    }

    #[test]
    fn two_key_range_splits_between_them() {
        let r = HashRange::new(7, 8).expect("range");
        assert_eq!(r.midpoint_split_key(), Some(8));
        assert!(!r.is_valid_split_key(7));
        assert!(r.is_valid_split_key(8));
        assert!(!r.is_valid_split_key(9));
    }

    #[test]
    fn the_last_range_is_adjacent_to_nothing() {
        let last = HashRange::new(10, MAX_HASH_KEY).expect("range");
        let first = HashRange::new(0, 9).expect("range");
        assert!(!last.is_adjacent_to(&first));
        assert!(first.is_adjacent_to(&last));
    }

    #[test]
    fn keys_round_trip_as_decimal_strings() {
        let r = HashRange::FULL;
        let json = serde_json::to_string(&r).expect("json");
        assert!(json.contains("\"340282366920938463463374607431768211455\""));
        let back: HashRange = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, r);
        let bad =
            serde_json::from_str::<HashRange>(r#"{"startingHashKey":"-1","endingHashKey":"3"}"#);
        assert!(
            bad.expect_err("negative")
                .to_string()
                .contains("not a hash key")
        );
    }

    proptest::proptest! {
        #[test]
        fn split_children_partition_the_parent(start in 0u128..u128::MAX, len in 1u128..u128::MAX, f in 0.0f64..=1.0) {
            let end = start.saturating_add(len);
            let r = HashRange::new(start, end).expect("range");
            let key = r.key_at_fraction(f).max(start + 1).min(end);
            let (a, b) = r.split_at(key).expect("valid split key");
            proptest::prop_assert!(a.is_adjacent_to(&b));
            proptest::prop_assert_eq!(a.merge_with(&b), Some(r));
            proptest::prop_assert!(r.is_valid_split_key(r.midpoint_split_key().expect("splittable")));
        }
    }
}
