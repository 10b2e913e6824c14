//! Which adjacent pairs should be merged? Pairs cold together for the whole merge window,
//! coldest first (relative to the merge thresholds), no shard in two merges and none that is
//! being split. A pair cold in every known minute but missing some is held, never merged.

use super::assess::PairHeat;
use super::context::Context;
use super::decision::{HeldCandidate, PlannedOperation, Reason};
use super::limits::Limit;
use crate::history::OperationKind;

/// Proposes a merge of every cold adjacent pair, coldest first, each passed through the gates.
pub(super) fn cold_merges(cx: &mut Context<'_>) {
    let merge_minutes = cx.merge_window.minutes();
    let mut pairs = Vec::new();
    for (w, heat) in std::mem::take(&mut cx.pair_heats).into_iter().enumerate() {
        let (a, b) = (cx.shards[w], cx.shards[w + 1]);
        if cx.splitting.contains(a.shard_id.as_str()) || cx.splitting.contains(b.shard_id.as_str())
        {
            continue;
        }
        match heat {
            PairHeat::Cold {
                bytes_peak,
                records_peak,
            } => pairs.push((w, bytes_peak, records_peak)),
            PairHeat::Incomplete { known } => cx.decision.held.push(HeldCandidate {
                action: OperationKind::Merge,
                shard_ids: vec![a.shard_id.clone(), b.shard_id.clone()],
                wanted: Reason::ColdWhereKnown {
                    window_minutes: merge_minutes,
                },
                limit: Limit::IncompleteData {
                    known_minutes: known,
                    window_minutes: merge_minutes,
                },
            }),
            PairHeat::NotCold => {}
        }
    }
    let mth = &cx.policy.merge.threshold;
    let coldness =
        |(_, b, r): &(usize, f64, f64)| (b / mth.incoming_bytes).max(r / mth.incoming_records);
    pairs.sort_by(|x, y| coldness(x).total_cmp(&coldness(y)).then(x.0.cmp(&y.0)));
    let mut used = vec![false; cx.shards.len()];
    for (w, bytes_peak, records_peak) in pairs {
        if used[w] || used[w + 1] {
            continue;
        }
        let (a, b) = (cx.shards[w], cx.shards[w + 1]);
        let reason = Reason::Cold {
            bytes_peak,
            records_peak,
            bytes_threshold: mth.incoming_bytes,
            records_threshold: mth.incoming_records,
            window_minutes: merge_minutes,
        };
        let gates = &mut cx.gates;
        let verdict = gates
            .common(OperationKind::Merge)
            .and_then(|_| gates.drain(&a.shard_id))
            .and_then(|_| gates.drain(&b.shard_id))
            .and_then(|_| gates.rest(OperationKind::Merge));
        match verdict {
            Ok(()) => {
                used[w] = true;
                used[w + 1] = true;
                gates.merges += 1;
                let range = a
                    .hash_key_range
                    .merge_with(&b.hash_key_range)
                    .unwrap_or(a.hash_key_range);
                cx.decision.operations.push(PlannedOperation::Merge {
                    shard_id: a.shard_id.clone(),
                    adjacent_shard_id: b.shard_id.clone(),
                    hash_key_range: range,
                    reason,
                });
            }
            Err(limit) => cx.decision.held.push(HeldCandidate {
                action: OperationKind::Merge,
                shard_ids: vec![a.shard_id.clone(), b.shard_id.clone()],
                wanted: reason,
                limit,
            }),
        }
    }
}
