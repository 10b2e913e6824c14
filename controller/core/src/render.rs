//! Renderings of a [`Decision`] for people (a table) and machines (JSON).

use comfy_table::{Cell, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use shardctl_policies::hash::key_position_percent;
use shardctl_policies::plan::{Decision, PlannedOperation, ShardHeat};
use std::collections::HashMap;
use std::fmt::Write as _;

/// How much of the shard list the table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// Only shards with a planned or held operation.
    Involved,
    /// Every open shard.
    All,
}

/// `shardId-000000000005` -> `…05`-style short ids keep the table narrow.
fn short(id: &str) -> &str {
    id.strip_prefix("shardId-")
        .map(|n| n.trim_start_matches('0'))
        .filter(|n| !n.is_empty())
        .unwrap_or(id)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("?".to_string(), |v| format!("{v:.0}%"))
}

/// The decision as a table a person reads at a glance, followed by the full reasons.
pub fn table(d: &Decision, rows: Rows) -> String {
    let mut action: HashMap<&str, String> = HashMap::new();
    let mut reason: HashMap<&str, String> = HashMap::new();
    for op in &d.operations {
        match op {
            PlannedOperation::Split {
                shard_id,
                new_starting_hash_key,
                lower_child_share,
                reason: why,
                ..
            } => {
                // The exact key is in the list below the table.
                action.insert(
                    shard_id,
                    format!(
                        "SPLIT at {:.3}% ({:.0}/{:.0})",
                        key_position_percent(*new_starting_hash_key),
                        lower_child_share * 100.0,
                        (1.0 - lower_child_share) * 100.0
                    ),
                );
                reason.insert(shard_id, why.to_string());
            }
            PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                reason: why,
                ..
            } => {
                action.insert(shard_id, format!("MERGE with {}", short(adjacent_shard_id)));
                action.insert(adjacent_shard_id, format!("MERGE with {}", short(shard_id)));
                reason.insert(shard_id, why.to_string());
                reason.insert(adjacent_shard_id, why.to_string());
            }
        }
    }
    for h in &d.held {
        for id in &h.shard_ids {
            action
                .entry(id)
                .or_insert_with(|| format!("held {}", h.action));
            reason.entry(id).or_insert_with(|| h.limit.to_string());
        }
    }

    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(140)
        .set_header(vec![
            "SHARD",
            "HASH RANGE",
            "BYTES",
            "RECORDS",
            "THROTTLED",
            "STATE",
            "ACTION",
            "REASON",
        ]);
    let planned: std::collections::HashSet<&str> =
        d.operations.iter().flat_map(|op| op.shard_ids()).collect();
    let mut shown = 0;
    let mut held_rows = 0;
    let mut held_not_shown = 0;
    for s in &d.shards {
        let id = s.shard_id.as_str();
        if rows == Rows::Involved && !action.contains_key(id) {
            continue;
        }
        // Shards only held back: the first few, so a 500-shard stream stays readable.
        if rows == Rows::Involved && !planned.contains(id) {
            if held_rows >= MAX_HELD_ROWS {
                held_not_shown += 1;
                continue;
            }
            held_rows += 1;
        }
        shown += 1;
        let r = &s.hash_key_range;
        t.add_row(vec![
            Cell::new(id),
            Cell::new(format!(
                "{:.3}–{:.3}%",
                key_position_percent(r.starting_hash_key),
                key_position_percent(r.ending_hash_key)
            )),
            Cell::new(pct(s.bytes_peak)),
            Cell::new(pct(s.records_peak)),
            Cell::new(format!("{}m", s.throttled_minutes)),
            Cell::new(match s.state {
                ShardHeat::Hot => "hot",
                ShardHeat::Normal => "ok",
                ShardHeat::Unknown => "unknown",
            }),
            Cell::new(action.get(id).map_or("-", String::as_str)),
            Cell::new(reason.get(id).map_or("", String::as_str)),
        ]);
    }

    let hot = d
        .shards
        .iter()
        .filter(|s| s.state == ShardHeat::Hot)
        .count();
    let unknown = d
        .shards
        .iter()
        .filter(|s| s.state == ShardHeat::Unknown)
        .count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "stream {} ({}) at {} — {} open shards (min {}, max {}); {hot} hot, {unknown} unknown",
        d.stream_name,
        d.stream_status,
        d.evaluated_at.format("%Y-%m-%d %H:%M:%S UTC"),
        d.open_shards,
        d.min_shards,
        d.max_shards,
    );
    let _ = writeln!(
        out,
        "judged minutes: split {}–{}, merge {}–{}; peaks are over the split window",
        d.split_window.start.format("%H:%M"),
        d.split_window.end.format("%H:%M"),
        d.merge_window.start.format("%H:%M"),
        d.merge_window.end.format("%H:%M"),
    );
    if shown > 0 {
        let _ = writeln!(out, "{t}");
    }
    if rows == Rows::Involved && shown < d.shards.len() {
        let idle = d.shards.len() - shown - held_not_shown;
        let _ = writeln!(
            out,
            "({idle} shards with nothing to do and {held_not_shown} more held back not shown; --all-shards lists them)",
        );
    }
    let _ = writeln!(out, "\nplanned operations ({}):", d.operations.len());
    if d.operations.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for (i, op) in d.operations.iter().enumerate() {
        let _ = writeln!(out, "  {}. {op}", i + 1);
    }
    if !d.held.is_empty() {
        let _ = writeln!(out, "\nheld back ({}):", d.held.len());
        // Grouped by action and limit, in the order first seen; a large group shows its first
        // few (every one with --all-shards; the JSON output is always complete).
        let mut groups: Vec<(
            (String, &'static str),
            Vec<&shardctl_policies::HeldCandidate>,
        )> = Vec::new();
        for h in &d.held {
            let key = (h.action.to_string(), h.limit.label());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(h),
                None => groups.push((key, vec![h])),
            }
        }
        for ((action, label), members) in groups {
            if rows == Rows::All || members.len() <= HELD_EXAMPLES {
                for h in members {
                    let _ = writeln!(out, "  - {h}");
                }
                continue;
            }
            let _ = writeln!(
                out,
                "  - {} {action} candidates held ({label}), for example:",
                members.len()
            );
            for h in members.iter().take(HELD_EXAMPLES) {
                let _ = writeln!(out, "      {h}");
            }
            let _ = writeln!(
                out,
                "    ({} more; --all-shards lists every one)",
                members.len() - HELD_EXAMPLES
            );
        }
    }
    out
}

/// Shards only held back that the table shows without `--all-shards`.
const MAX_HELD_ROWS: usize = 20;
/// Examples shown of a large group of held candidates.
const HELD_EXAMPLES: usize = 3;

/// The decision as pretty JSON.
pub fn json(d: &Decision) -> String {
    serde_json::to_string_pretty(d).unwrap_or_default()
}

#[cfg(test)]
mod scale_tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use shardctl_policies::fixture::StreamFixture;

    /// Regression: on a 500-shard stream with no metrics yet, `shardctl plan` printed 499
    /// separate "merge ... held" lines.
    #[test]
    fn held_candidates_are_grouped_and_counted_and_all_shards_lists_every_one() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 2, 3, 0, 0)
            .single()
            .expect("a time");
        let mut f = StreamFixture::new("big", 500, 40, now);
        for i in 0..500 {
            f = f.no_metrics(i);
        }
        let policy = shardctl_policies::StreamPolicy::with_defaults("big");
        let d = shardctl_policies::plan(&policy, &f.build(), &Default::default(), now)
            .expect("a decision");
        assert!(d.held.len() > 100, "{}", d.held.len());
        let short = table(&d, Rows::Involved);
        assert!(
            short.lines().count() < 80,
            "{} lines",
            short.lines().count()
        );
        assert!(
            short.contains(&format!("{} merge candidates held", d.held.len())),
            "{short}"
        );
        assert!(short.contains("--all-shards lists every one"));
        let all = table(&d, Rows::All);
        assert!(all.lines().count() > d.held.len());
        assert_eq!(json(&d).matches("\"limit\"").count(), d.held.len());
    }
}
