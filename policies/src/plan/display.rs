//! How does a decision read to an operator? The `Display` of limits, reasons, planned
//! operations and held candidates: one line each, for logs and `shardctl plan`.

use super::decision::{HeldCandidate, PlannedOperation, Reason};
use super::limits::Limit;
use chrono::{DateTime, Utc};
use std::fmt;

fn hm(t: &DateTime<Utc>) -> String {
    t.format("%H:%M").to_string()
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::StreamNotActive { status } => {
                write!(f, "stream is {status}; waiting for ACTIVE")
            }
            Limit::OperationInFlight {
                kind,
                shard_ids,
                since,
            } => write!(
                f,
                "{kind} of {} in flight since {}",
                shard_ids.join("+"),
                since.format("%H:%M:%S")
            ),
            Limit::Disabled { kind } => write!(f, "{kind}s disabled (selectPolicy: Disabled)"),
            Limit::UnsplittableHotKey {
                hash_key,
                partition_key,
                utilization,
            } => {
                match partition_key {
                    Some(k) => write!(f, "hot key `{k}`")?,
                    None => write!(f, "hot hash key {hash_key}")?,
                }
                write!(
                    f,
                    " alone needs {utilization:.0}% of a shard; splitting cannot relieve it"
                )
            }
            Limit::SingleKeyRange => write!(f, "the shard owns a single hash key"),
            Limit::DrainPending {
                group,
                shard_id,
                detail,
            } => write!(
                f,
                "waiting for group {group} to drain {shard_id} ({detail})"
            ),
            Limit::Budget {
                budget,
                allowed,
                until,
            } => {
                write!(f, "budget {budget} allows {allowed} per cycle")?;
                match until {
                    Some(t) => write!(f, " until {}", hm(t)),
                    None => Ok(()),
                }
            }
            Limit::Cooldown { until, after } => {
                write!(f, "cooldown until {} (after the last {after})", hm(until))
            }
            Limit::MaxShards { max } => write!(f, "at maxShards ({max})"),
            Limit::MinShards { min, source } => write!(f, "at minShards ({min}, {source})"),
            Limit::RateLimit {
                next_at,
                select_policy,
            } => {
                write!(f, "rate limit reached (selectPolicy {select_policy:?})")?;
                match next_at {
                    Some(t) => write!(f, "; next at {}", hm(t)),
                    None => Ok(()),
                }
            }
            Limit::MaxOperationsPerCycle { max } => {
                write!(f, "maxOperationsPerCycle ({max}) reached; next cycle")
            }
            Limit::IncompleteData {
                known_minutes,
                window_minutes,
            } => write!(
                f,
                "only {known_minutes} of {window_minutes} minutes known for both shards; never merging on missing data"
            ),
        }
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("unknown".to_string(), |v| format!("{v:.0}%"))
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Hot {
                bytes_peak,
                records_peak,
                bytes_threshold,
                records_threshold,
                throttled_minutes,
                known_minutes,
                window_minutes,
            } => {
                write!(
                    f,
                    "hot {known_minutes}/{window_minutes}m: bytes peak {} (split at {bytes_threshold:.0}%), records peak {} (split at {records_threshold:.0}%)",
                    pct(*bytes_peak),
                    pct(*records_peak)
                )?;
                if *throttled_minutes > 0 {
                    write!(f, ", throttled in {throttled_minutes}m")?;
                }
                Ok(())
            }
            Reason::BelowMinimum {
                min_shards,
                source,
                open_shards,
            } => write!(
                f,
                "{open_shards} open shards below minShards {min_shards} ({source})"
            ),
            Reason::Cold {
                bytes_peak,
                records_peak,
                bytes_threshold,
                records_threshold,
                window_minutes,
            } => write!(
                f,
                "cold together {window_minutes}m: bytes peak {bytes_peak:.0}% (merge at {bytes_threshold:.0}%), records peak {records_peak:.0}% (merge at {records_threshold:.0}%)"
            ),
            Reason::ColdWhereKnown { window_minutes } => {
                write!(f, "every known minute of {window_minutes}m cold together")
            }
        }
    }
}

impl fmt::Display for PlannedOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlannedOperation::Split {
                shard_id,
                new_starting_hash_key,
                lower_child_share,
                reason,
                ..
            } => write!(
                f,
                "split {shard_id} at {new_starting_hash_key} ({:.0}/{:.0}): {reason}",
                lower_child_share * 100.0,
                (1.0 - lower_child_share) * 100.0
            ),
            PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                reason,
                ..
            } => write!(f, "merge {shard_id} + {adjacent_shard_id}: {reason}"),
        }
    }
}

impl fmt::Display for HeldCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} held: {} (wanted: {})",
            self.action,
            self.shard_ids.join(" + "),
            self.limit,
            self.wanted
        )
    }
}
