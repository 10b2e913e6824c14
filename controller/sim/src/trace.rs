//! Recorded traffic for `shardctl simulate --trace FILE`.
//!
//! `--trace FILE` replays recorded traffic. The file is CSV, one rate per line:
//!
//! ```text
//! # minute,target,records_per_second,bytes_per_second
//! minute,target,records_per_second,bytes_per_second
//! 0,bucket:0/16,420,430080
//! 0,bucket:1/16,380,389120
//! 0,hash:170141183460469231731687303715884105728,650,665600
//! 0,key:org-acme,120,245760
//! 1,bucket:0/16,440,450560
//! ```
//!
//! - `minute`: minutes from the start of the trace (0, 1, 2, ...), in any order.
//! - `target`: `bucket:I/N` is the `I`th of `N` equal slices of the hash key space (`N` between 1
//!   and 1024; traffic spread evenly inside the slice); `key:P` is one partition key `P`, placed
//!   at its MD5 as Kinesis does; `hash:K` is one partition key given by its hash key `K` (the MD5
//!   of the key as a 128-bit decimal number). A single key's traffic cannot be divided by any
//!   split.
//! - rates are per second, averaged over the minute; bytes include the partition key.
//!
//! A target keeps its last rate until a later minute gives it a new one (so a constant stream
//! needs one line per target). Lines starting with `#` and a header line starting with `minute`
//! are skipped. The trace lasts until the end of its last minute. Errors name the file and line.

use crate::scenarios::monday;
use crate::traffic::{BUCKETS, MinuteRates, Scenario, TrafficModel};
use anyhow::{Context, Result, bail};
use shardctl_policies::HashKey;
use shardctl_policies::key_sample::hash_key_of;
use std::path::Path;

/// A recorded trace: a step function of rates per target.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Hash keys of the `hash:` targets.
    pub keys: Vec<HashKey>,
    /// Per minute: the full rates (already carried forward).
    pub minutes: Vec<MinuteRates>,
}

/// Reads a trace file (format in the module docs) into a scenario on `initial_shards` shards.
pub fn read_trace(path: &Path, initial_shards: usize) -> Result<Scenario> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trace {}", path.display()))?;
    let trace = parse_trace(&text, &path.display().to_string())?;
    let minutes = trace.minutes.len() as u64;
    Ok(Scenario {
        name: path
            .file_stem()
            .map_or_else(|| "trace".to_string(), |s| s.to_string_lossy().into_owned()),
        description: format!("recorded traffic from {}", path.display()),
        initial_shards,
        start: monday(0),
        minutes,
        traffic: TrafficModel::Trace(trace),
        surge: None,
        producers: Default::default(),
        large_records: Default::default(),
        readers: Default::default(),
    })
}

enum Target {
    Buckets { index: usize, of: usize },
    Key(HashKey),
}

/// Parses trace text; `source` names the file in errors (`file:line: ...`).
pub fn parse_trace(text: &str, source: &str) -> Result<Trace> {
    /// Traces longer than this many minutes (about 31 days) are refused.
    const MAX_MINUTES: u64 = 31 * 24 * 60;
    let mut rows: Vec<(u64, Target, f64, f64)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{source}:{}", n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("minute") {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [minute, target, records, bytes] = fields[..] else {
            bail!(
                "{}: expected 4 fields `minute,target,records_per_second,bytes_per_second`, found {}",
                at(),
                fields.len()
            );
        };
        let minute: u64 = minute
            .parse()
            .with_context(|| format!("{}: minute `{minute}` is not a whole number", at()))?;
        if minute >= MAX_MINUTES {
            bail!("{}: minute {minute} is beyond 31 days", at());
        }
        let rate = |v: &str, what: &str| -> Result<f64> {
            let x: f64 = v
                .parse()
                .with_context(|| format!("{}: {what} `{v}` is not a number", at()))?;
            if !x.is_finite() || x < 0.0 {
                bail!("{}: {what} must be a finite number >= 0, got {v}", at());
            }
            Ok(x)
        };
        let (records, bytes) = (
            rate(records, "records_per_second")?,
            rate(bytes, "bytes_per_second")?,
        );
        let target = if let Some(b) = target.strip_prefix("bucket:") {
            let (i, of) = b.split_once('/').with_context(|| {
                format!("{}: bucket target `{target}` must be `bucket:I/N`", at())
            })?;
            let (index, of): (usize, usize) = (
                i.parse()
                    .with_context(|| format!("{}: bucket index `{i}` is not a number", at()))?,
                of.parse()
                    .with_context(|| format!("{}: bucket count `{of}` is not a number", at()))?,
            );
            if of == 0 || of > BUCKETS || index >= of {
                bail!(
                    "{}: bucket `{target}` needs 0 <= I < N and 1 <= N <= {BUCKETS}",
                    at()
                );
            }
            Target::Buckets { index, of }
        } else if let Some(k) = target.strip_prefix("key:") {
            if k.is_empty() {
                bail!("{}: `key:` needs a partition key", at());
            }
            Target::Key(hash_key_of(k))
        } else if let Some(k) = target.strip_prefix("hash:") {
            Target::Key(k.parse().with_context(|| {
                format!(
                    "{}: hash key `{k}` is not a decimal number in 0..=2^128-1",
                    at()
                )
            })?)
        } else {
            bail!(
                "{}: target `{target}` must be `bucket:I/N`, `key:PARTITIONKEY` or `hash:HASHKEY`",
                at()
            );
        };
        rows.push((minute, target, records, bytes));
    }
    if rows.is_empty() {
        bail!("{source}: the trace has no data lines");
    }
    rows.sort_by_key(|r| r.0);
    let mut keys: Vec<HashKey> = rows
        .iter()
        .filter_map(|r| match r.1 {
            Target::Key(k) => Some(k),
            Target::Buckets { .. } => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let last = rows.last().map_or(0, |r| r.0);
    // Current rate per (trace bucket) and per key, carried forward.
    let mut slices: std::collections::BTreeMap<(usize, usize), (f64, f64)> = Default::default();
    let mut key_rates = vec![(0.0, 0.0); keys.len()];
    let mut minutes = Vec::with_capacity(last as usize + 1);
    let mut i = 0;
    for m in 0..=last {
        while i < rows.len() && rows[i].0 == m {
            match rows[i].1 {
                Target::Buckets { index, of } => {
                    slices.insert((index, of), (rows[i].2, rows[i].3));
                }
                Target::Key(k) => {
                    if let Ok(pos) = keys.binary_search(&k) {
                        key_rates[pos] = (rows[i].2, rows[i].3);
                    }
                }
            }
            i += 1;
        }
        let mut r = MinuteRates {
            bucket_records: vec![0.0; BUCKETS],
            bucket_bytes: vec![0.0; BUCKETS],
            heavy_records: key_rates.iter().map(|k| k.0).collect(),
            heavy_bytes: key_rates.iter().map(|k| k.1).collect(),
        };
        for (&(index, of), &(rec, by)) in &slices {
            // Slice `index` of `of` covers [index/of, (index+1)/of) of the space.
            let (lo, hi) = (
                index as f64 / of as f64 * BUCKETS as f64,
                (index + 1) as f64 / of as f64 * BUCKETS as f64,
            );
            let width = hi - lo;
            let mut b = lo.floor() as usize;
            while b < BUCKETS && (b as f64) < hi {
                let overlap = (hi.min(b as f64 + 1.0) - lo.max(b as f64)).max(0.0) / width;
                r.bucket_records[b] += rec * overlap;
                r.bucket_bytes[b] += by * overlap;
                b += 1;
            }
        }
        minutes.push(r);
    }
    Ok(Trace { keys, minutes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::BUCKETS;

    #[test]
    fn trace_rates_carry_forward_and_spread_over_buckets() {
        let t = parse_trace(
            "minute,target,records_per_second,bytes_per_second\n0,bucket:0/2,100,1000\n0,hash:5,10,20\n2,bucket:0/2,50,500\n",
            "t.csv",
        )
        .expect("parses");
        assert_eq!(t.minutes.len(), 3);
        let total = |m: usize| t.minutes[m].bucket_records.iter().sum::<f64>();
        assert!((total(1) - 100.0).abs() < 1e-9);
        assert!((total(2) - 50.0).abs() < 1e-9);
        assert_eq!(t.minutes[1].bucket_records[BUCKETS - 1], 0.0);
        assert_eq!(t.minutes[2].heavy_records, vec![10.0]);
    }

    #[test]
    fn bad_trace_lines_name_file_and_line() {
        for (text, want) in [
            ("0,bucket:0/2,1\n", "t.csv:1:"),
            ("# c\n0,bucket:3/2,1,1\n", "t.csv:2:"),
            ("0,hash:x,1,1\n", "t.csv:1:"),
            ("0,bucket:0/2,-1,1\n", "t.csv:1:"),
            ("x,bucket:0/2,1,1\n", "t.csv:1:"),
            ("0,shard:1,1,1\n", "t.csv:1:"),
        ] {
            let e = format!("{:#}", parse_trace(text, "t.csv").expect_err(text));
            assert!(e.starts_with(want), "{e}");
        }
        assert!(parse_trace("", "t.csv").is_err());
    }
}
