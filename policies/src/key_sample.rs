//! Key distributions from sampled records, for traffic-weighted split points.
//!
//! Kinesis routes a record by the MD5 of its partition key, read as a 128-bit big-endian integer.
//! Given a sample of a shard's recent records, the heaviest partition keys become point masses
//! and the rest is spread over even buckets of the shard's range.

use crate::hash::{HashKey, HashRange};
use crate::observation::{HeavyKey, KeyBucket, KeyDistribution};
use md5::{Digest, Md5};
use std::collections::BTreeMap;

/// The hash key Kinesis assigns to `partition_key`.
pub fn hash_key_of(partition_key: &str) -> HashKey {
    let digest = Md5::digest(partition_key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    u128::from_be_bytes(bytes)
}

/// Builds a distribution over `range` from sampled `(partition key, weight)` pairs (weight:
/// record size in bytes, or 1 per record). Keys outside the range are ignored. The `heavy`
/// heaviest keys holding at least `1 / buckets` of the sample each become heavy keys; the rest is
/// counted in `buckets` even buckets.
pub fn distribution_from_samples<'a>(
    range: HashRange,
    samples: impl IntoIterator<Item = (&'a str, f64)>,
    buckets: usize,
    heavy: usize,
) -> KeyDistribution {
    let buckets = buckets.max(1);
    let mut per_key: BTreeMap<&str, f64> = BTreeMap::new();
    for (key, weight) in samples {
        if weight.is_finite() && weight > 0.0 {
            *per_key.entry(key).or_default() += weight;
        }
    }
    let keyed: Vec<(&str, HashKey, f64)> = per_key
        .into_iter()
        .map(|(k, w)| (k, hash_key_of(k), w))
        .filter(|(_, h, _)| range.contains(*h))
        .collect();
    let total: f64 = keyed.iter().map(|k| k.2).sum();
    let mut by_weight: Vec<&(&str, HashKey, f64)> = keyed.iter().collect();
    by_weight.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(b.0)));
    let heavy_keys: Vec<HeavyKey> = by_weight
        .iter()
        .take(heavy)
        .filter(|k| k.2 >= total / buckets as f64)
        .map(|&&(k, h, w)| HeavyKey {
            hash_key: h,
            partition_key: Some(k.to_string()),
            weight: w,
        })
        .collect();
    let bounds: Vec<HashKey> = (0..=buckets)
        .map(|i| {
            if i == buckets {
                range.ending_hash_key
            } else {
                range.key_at_fraction(i as f64 / buckets as f64)
            }
        })
        .collect();
    let mut weights = vec![0.0; buckets];
    for &(k, h, w) in &keyed {
        if heavy_keys
            .iter()
            .any(|hk| hk.partition_key.as_deref() == Some(k))
        {
            continue;
        }
        let i = bounds[1..].partition_point(|b| *b < h).min(buckets - 1);
        weights[i] += w;
    }
    let mut out = Vec::new();
    for i in 0..buckets {
        let start = if i == 0 { bounds[0] } else { bounds[i] + 1 };
        let end = bounds[i + 1];
        if start <= end && weights[i] > 0.0 {
            out.push(KeyBucket {
                starting_hash_key: start,
                ending_hash_key: end,
                weight: weights[i],
            });
        }
    }
    KeyDistribution {
        buckets: out,
        heavy_keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_are_md5_big_endian() {
        // md5("org-42") = 0xdf5e...; checked against an independent MD5 implementation.
        assert_eq!(
            hash_key_of("org-42"),
            296902931212375866167759146288920266741
        );
    }

    #[test]
    fn a_dominant_key_becomes_a_heavy_key_and_the_rest_fills_buckets() {
        let mut samples: Vec<(String, f64)> =
            (0..2000).map(|i| (format!("org-{i}"), 1.0)).collect();
        samples.push(("org-acme".to_string(), 3000.0));
        let d = distribution_from_samples(
            HashRange::FULL,
            samples.iter().map(|(k, w)| (k.as_str(), *w)),
            16,
            4,
        );
        assert_eq!(d.heavy_keys.len(), 1);
        assert_eq!(d.heavy_keys[0].partition_key.as_deref(), Some("org-acme"));
        let bucketed: f64 = d.buckets.iter().map(|b| b.weight).sum();
        assert_eq!(bucketed, 2000.0);
        for w in d.buckets.windows(2) {
            assert_eq!(w[0].ending_hash_key + 1, w[1].starting_hash_key);
        }
    }

    #[test]
    fn keys_outside_the_range_are_ignored() {
        let range = HashRange::new(0, 1 << 100).expect("range");
        let d = distribution_from_samples(range, [("org-42", 5.0)], 4, 2);
        assert!(d.buckets.is_empty() && d.heavy_keys.is_empty());
    }
}
