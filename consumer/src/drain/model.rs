//! A consumer group following a stream through splits and merges while it lags behind them,
//! checked against the rules the worker runs: [`readiness`] (parent before child),
//! [`child_rows`] (rows created when a shard ends), [`plan_shard_sync`] (rows created from a
//! listing) and [`shardctl_lease::DrainView::may_delete`] (lease cleanup).
//!
//! Each worker decides from its own listing, which is only as fresh as its last shard sync (the
//! real one can be a minute old), and its own scan of the table. Shards are read in random
//! order and pace, so some lag far behind reshards that produced merges of shards without a row.
//! After the random part, every worker syncs and reads until nothing moves. Checked: every
//! record is processed exactly once (0 lost, 0 replayed), each key's records in the order they
//! were written, and no shard before all its parents were read to their end.
//!
//! `SHARDCTL_MODEL_CASES` sets the number of cases (default 1000; a soak runs many more).
//!
//! Longer than 500 lines by choice: the model (a lagging group, its listings and its table) and
//! the checks of the rules it runs are one unit; split, neither half reads on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::{Readiness, ScannedRows, child_rows, lineage_of, readiness};
use crate::lease::{Checkpoint, Lease};
use crate::reader::ChildShardInfo;
use crate::shards::{InitialPosition, ShardInfo, plan_shard_sync};
use shardctl_lease::DrainView;

/// Hash space of the model stream.
const SPACE: u32 = 1 << 12;
/// The keys' hashes (spread over the space).
const KEYS: [u32; 6] = [17, 700, 1400, 2100, 2900, 4000];
const WORKERS: usize = 3;

#[derive(Debug, Clone)]
struct Shard {
    id: String,
    parents: BTreeSet<String>,
    lo: u32,
    hi: u32,
    open: bool,
    /// (key, sequence of the key).
    records: Vec<(usize, u64)>,
}

#[derive(Debug, Clone)]
enum Op {
    Produce(usize),
    Split(usize),
    Merge(usize),
    /// Shard sync: a fresh listing, then create the planned rows (only the first `upto`, as if
    /// the worker died part-way).
    Sync {
        worker: usize,
        upto: Option<usize>,
    },
    /// A lease scan: the worker's view of the table.
    Scan {
        worker: usize,
    },
    /// The worker reads up to `n` records of one of the shards it can see. At a shard's end,
    /// with `creates_fail` its writes of the children's rows fail (left to shard sync).
    Step {
        worker: usize,
        pick: usize,
        n: usize,
        creates_fail: bool,
    },
    Cleanup {
        worker: usize,
    },
    /// A KCL worker sharing the table (a mixed fleet, or a migration) reached the end of a shard
    /// and created every child's row at once, whatever their other parents.
    KclChildRows(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WORKERS;
    prop_oneof![
        6 => (0..KEYS.len()).prop_map(Op::Produce),
        2 => any::<usize>().prop_map(Op::Split),
        2 => any::<usize>().prop_map(Op::Merge),
        2 => (w.clone(), proptest::option::weighted(0.2, 0usize..4))
            .prop_map(|(worker, upto)| Op::Sync { worker, upto }),
        3 => w.clone().prop_map(|worker| Op::Scan { worker }),
        8 => (w.clone(), any::<usize>(), 1usize..4, proptest::bool::weighted(0.15))
            .prop_map(|(worker, pick, n, creates_fail)| Op::Step { worker, pick, n, creates_fail }),
        1 => w.prop_map(|worker| Op::Cleanup { worker }),
        1 => any::<usize>().prop_map(Op::KclChildRows),
    ]
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    cases: u64,
    ops: u64,
    splits: u64,
    merges: u64,
    /// Merges where a merged shard had no lease row yet.
    merges_of_rowless: u64,
    /// Times a worker decided with a listing that missed a shard the stream had.
    stale_decisions: u64,
    records: u64,
    lost: u64,
    replayed: u64,
    order_violations: u64,
    parent_violations: u64,
    out_of_order_rows: u64,
}

struct Model {
    shards: Vec<Shard>,
    next_seq: [u64; KEYS.len()],
    rows: BTreeMap<String, Lease>,
    listings: Vec<Vec<ShardInfo>>,
    scans: Vec<Vec<Lease>>,
    /// Records processed per shard.
    done: BTreeMap<String, usize>,
    /// Shards whose processing started (parents checked once, as the worker does).
    started: BTreeSet<String>,
    /// Last sequence processed per key.
    last: [Option<u64>; KEYS.len()],
    /// Every (key, sequence) processed.
    processed: BTreeSet<(usize, u64)>,
    stats: Stats,
    violations: Vec<String>,
}

impl Model {
    fn new() -> Self {
        let mut m = Self {
            shards: vec![
                Shard {
                    id: "s000".into(),
                    parents: BTreeSet::new(),
                    lo: 0,
                    hi: SPACE / 2 - 1,
                    open: true,
                    records: Vec::new(),
                },
                Shard {
                    id: "s001".into(),
                    parents: BTreeSet::new(),
                    lo: SPACE / 2,
                    hi: SPACE - 1,
                    open: true,
                    records: Vec::new(),
                },
            ],
            next_seq: [0; KEYS.len()],
            rows: BTreeMap::new(),
            listings: vec![Vec::new(); WORKERS],
            scans: vec![Vec::new(); WORKERS],
            done: BTreeMap::new(),
            started: BTreeSet::new(),
            last: [None; KEYS.len()],
            processed: BTreeSet::new(),
            stats: Stats::default(),
            violations: Vec::new(),
        };
        // Every worker starts with a shard sync, as `Worker::start` does.
        for w in 0..WORKERS {
            m.sync(w, None);
            m.scan(w);
        }
        m
    }

    fn shard(&self, id: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id == id)
    }

    fn listing(&self) -> Vec<ShardInfo> {
        self.shards
            .iter()
            .map(|s| ShardInfo {
                shard_id: s.id.clone(),
                parents: s.parents.clone(),
                starting_hash_key: Some(s.lo.to_string()),
                ending_hash_key: Some(s.hi.to_string()),
                closed: !s.open,
            })
            .collect()
    }

    fn open_sorted(&self) -> Vec<usize> {
        let mut open: Vec<usize> = (0..self.shards.len())
            .filter(|&i| self.shards[i].open)
            .collect();
        open.sort_by_key(|&i| self.shards[i].lo);
        open
    }

    fn new_shard(&mut self, parents: &[usize], lo: u32, hi: u32) {
        let id = format!("s{:03}", self.shards.len());
        let parents = parents.iter().map(|&p| self.shards[p].id.clone()).collect();
        self.shards.push(Shard {
            id,
            parents,
            lo,
            hi,
            open: true,
            records: Vec::new(),
        });
    }

    fn produce(&mut self, key: usize) {
        let hash = KEYS[key];
        if let Some(s) = self
            .shards
            .iter_mut()
            .find(|s| s.open && s.lo <= hash && hash <= s.hi)
        {
            s.records.push((key, self.next_seq[key]));
            self.next_seq[key] += 1;
            self.stats.records += 1;
        }
    }

    fn split(&mut self, pick: usize) {
        let open = self.open_sorted();
        let i = open[pick % open.len()];
        let (lo, hi) = (self.shards[i].lo, self.shards[i].hi);
        if hi - lo < 2 || self.shards.len() > 40 {
            return;
        }
        let mid = lo + (hi - lo) / 2 + 1;
        self.shards[i].open = false;
        self.new_shard(&[i], lo, mid - 1);
        self.new_shard(&[i], mid, hi);
        self.stats.splits += 1;
    }

    fn merge(&mut self, pick: usize) {
        let open = self.open_sorted();
        if open.len() < 2 || self.shards.len() > 40 {
            return;
        }
        let k = pick % (open.len() - 1);
        let (a, b) = (open[k], open[k + 1]);
        if [a, b]
            .iter()
            .any(|&i| !self.rows.contains_key(&self.shards[i].id))
        {
            self.stats.merges_of_rowless += 1;
        }
        self.shards[a].open = false;
        self.shards[b].open = false;
        let (lo, hi) = (self.shards[a].lo, self.shards[b].hi);
        self.new_shard(&[a, b], lo, hi);
        self.stats.merges += 1;
    }

    /// What `GetRecords` reports at the end of a closed shard: its children, with all their
    /// parents.
    fn child_shards(&self, id: &str) -> Vec<ChildShardInfo> {
        self.shards
            .iter()
            .filter(|s| s.parents.contains(id))
            .map(|s| ChildShardInfo {
                shard_id: s.id.clone(),
                parents: s.parents.clone(),
                hash_range: Some((s.lo.to_string(), s.hi.to_string())),
            })
            .collect()
    }

    fn create(&mut self, lease: Lease) {
        self.rows.entry(lease.lease_key.clone()).or_insert(lease);
    }

    /// A row this library's worker creates: in lineage order, so every parent has a row already
    /// or is drained by evidence (the truth, not a worker's view).
    fn create_ours(&mut self, lease: Lease) {
        if !self.rows.contains_key(&lease.lease_key) {
            let lineage = lineage_of(&self.listing());
            let leases: Vec<Lease> = self.rows.values().cloned().collect();
            let none = BTreeSet::new();
            let rows = ScannedRows::new(&leases, &none);
            let view = DrainView::new(&lineage, &rows);
            for p in &lease.parent_shard_ids {
                if !self.rows.contains_key(p) && !view.state(p).is_drained() {
                    self.stats.out_of_order_rows += 1;
                    self.violations.push(format!(
                        "row for {} created before its parent {p} had one",
                        lease.lease_key
                    ));
                }
            }
        }
        self.create(lease);
    }

    fn sync(&mut self, w: usize, upto: Option<usize>) {
        let listing = self.listing();
        let existing: Vec<Lease> = self.rows.values().cloned().collect();
        let planned = plan_shard_sync(&listing, &existing, InitialPosition::TrimHorizon);
        let n = upto.unwrap_or(usize::MAX);
        for lease in planned.into_iter().take(n) {
            self.create_ours(lease);
        }
        self.listings[w] = listing;
    }

    fn scan(&mut self, w: usize) {
        self.scans[w] = self.rows.values().cloned().collect();
    }

    fn cleanup(&mut self, w: usize) {
        let lineage = lineage_of(&self.listings[w]);
        let leases: Vec<Lease> = self.rows.values().cloned().collect();
        let none = BTreeSet::new();
        let rows = ScannedRows::new(&leases, &none);
        let view = DrainView::new(&lineage, &rows);
        for lease in leases.iter().filter(|l| view.may_delete(l)) {
            self.rows.remove(&lease.lease_key);
        }
    }

    /// Worker `w` reads up to `n` records of a shard it sees in its scan.
    fn step(&mut self, w: usize, pick: usize, n: usize, creates_fail: bool) {
        let candidates: Vec<String> = self.scans[w]
            .iter()
            .filter(|l| !l.checkpoint.is_shard_end())
            .map(|l| l.lease_key.clone())
            .collect();
        if candidates.is_empty() {
            return;
        }
        let id = candidates[pick % candidates.len()].clone();
        // The lease as the table has it now (taking it is a conditional write on the current row).
        let Some(row) = self.rows.get(&id).cloned() else {
            return;
        };
        if row.checkpoint.is_shard_end() {
            return;
        }
        if !self.started.contains(&id) {
            if self
                .shards
                .iter()
                .any(|s| !self.listings[w].iter().any(|l| l.shard_id == s.id))
            {
                self.stats.stale_decisions += 1;
            }
            let lineage = lineage_of(&self.listings[w]);
            let ready = readiness(&id, &self.scans[w], &BTreeSet::new(), Some(&lineage));
            if ready != Readiness::Ready {
                return;
            }
            self.started.insert(id.clone());
            let Some(shard) = self.shard(&id).cloned() else {
                return;
            };
            for p in &shard.parents {
                let parent = self.shard(p);
                let read = self.done.get(p).copied().unwrap_or(0);
                if parent.is_some_and(|p| p.open || read < p.records.len()) {
                    self.stats.parent_violations += 1;
                    self.violations.push(format!(
                        "{id} started before its parent {p} was read to its end"
                    ));
                }
            }
        }
        let Some(shard) = self.shard(&id).cloned() else {
            return;
        };
        let from = self.done.get(&id).copied().unwrap_or(0);
        let upto = from.saturating_add(n).min(shard.records.len());
        for &(key, seq) in &shard.records[from..upto] {
            if !self.processed.insert((key, seq)) {
                self.stats.replayed += 1;
                self.violations
                    .push(format!("key {key} seq {seq} processed again in {id}"));
            } else if seq != self.last[key].map_or(0, |l| l + 1) {
                self.stats.order_violations += 1;
                self.violations.push(format!(
                    "key {key} seq {seq} processed in {id} after seq {:?}",
                    self.last[key]
                ));
            }
            self.last[key] = Some(self.last[key].map_or(seq, |l| l.max(seq)));
        }
        self.done.insert(id.clone(), upto);
        let checkpoint = if upto > 0 {
            Checkpoint::Sequence {
                sequence_number: upto.to_string(),
                sub_sequence_number: 0,
            }
        } else {
            row.checkpoint.clone()
        };
        if let Some(r) = self.rows.get_mut(&id) {
            r.checkpoint = checkpoint;
        }
        if !shard.open && upto == shard.records.len() {
            // The end of a closed shard: children's rows (as the worker creates them), then
            // SHARD_END.
            let children = self.child_shards(&id);
            let plan = child_rows(&id, &children, |p| p == id || self.rows.contains_key(p));
            if !creates_fail {
                for lease in plan.create {
                    self.create_ours(lease);
                }
            }
            if let Some(r) = self.rows.get_mut(&id) {
                r.checkpoint = Checkpoint::ShardEnd;
            }
        }
    }

    fn kcl_child_rows(&mut self, pick: usize) {
        let ended: Vec<String> = self
            .rows
            .values()
            .filter(|l| l.checkpoint.is_shard_end())
            .map(|l| l.lease_key.clone())
            .collect();
        if ended.is_empty() {
            return;
        }
        let id = &ended[pick % ended.len()];
        for child in self.child_shards(id) {
            self.create(
                Lease::new(child.shard_id, Checkpoint::TrimHorizon).with_parents(child.parents),
            );
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Produce(k) => self.produce(k),
            Op::Split(p) => self.split(p),
            Op::Merge(p) => self.merge(p),
            Op::Sync { worker, upto } => self.sync(worker, upto),
            Op::Scan { worker } => self.scan(worker),
            Op::Step {
                worker,
                pick,
                n,
                creates_fail,
            } => self.step(worker, pick, n, creates_fail),
            Op::Cleanup { worker } => self.cleanup(worker),
            Op::KclChildRows(pick) => self.kcl_child_rows(pick),
        }
    }

    /// Every worker syncs, scans and reads until nothing moves.
    fn settle(&mut self) {
        let state = |m: &Self| {
            let rows: Vec<(String, String)> = m
                .rows
                .iter()
                .map(|(k, l)| (k.clone(), l.checkpoint.to_string()))
                .collect();
            (rows, m.done.clone())
        };
        for _ in 0..200 {
            let before = state(self);
            for w in 0..WORKERS {
                self.sync(w, None);
                self.scan(w);
                for pick in 0..self.scans[w].len() {
                    self.step(w, pick, usize::MAX, false);
                }
                self.cleanup(w);
            }
            if state(self) == before {
                break;
            }
        }
        self.stats.lost = self
            .shards
            .iter()
            .map(|s| (s.records.len() - self.done.get(&s.id).copied().unwrap_or(0)) as u64)
            .sum();
    }
}

fn cases() -> u32 {
    std::env::var("SHARDCTL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn a_lagging_group_keeps_order_and_loses_nothing_across_reshards() {
    let total = Mutex::new(Stats::default());
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..150), |ops| {
        let mut m = Model::new();
        for op in &ops {
            m.apply(op);
        }
        m.settle();
        m.stats.cases = 1;
        m.stats.ops = ops.len() as u64;
        if let Some(v) = m.violations.first() {
            return Err(TestCaseError::fail(format!(
                "{v} ({} violations)",
                m.violations.len()
            )));
        }
        if m.stats.lost > 0 {
            let lost: Vec<String> = m
                .shards
                .iter()
                .filter(|s| m.done.get(&s.id).copied().unwrap_or(0) < s.records.len())
                .map(|s| s.id.clone())
                .collect();
            return Err(TestCaseError::fail(format!(
                "{} records never processed, in {lost:?}",
                m.stats.lost
            )));
        }
        let mut t = total
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = m.stats;
        t.cases += 1;
        t.ops += s.ops;
        t.splits += s.splits;
        t.merges += s.merges;
        t.merges_of_rowless += s.merges_of_rowless;
        t.stale_decisions += s.stale_decisions;
        t.records += s.records;
        t.lost += s.lost;
        t.replayed += s.replayed;
        t.order_violations += s.order_violations;
        t.parent_violations += s.parent_violations;
        t.out_of_order_rows += s.out_of_order_rows;
        Ok(())
    });
    let t = *total
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    println!(
        "reshard model: {} cases, {} ops, {} splits, {} merges ({} of a shard without a row), \
         {} decisions on a stale listing, {} records, {} lost, {} replayed, \
         {} order violations, {} children before parents, {} rows out of lineage order",
        t.cases,
        t.ops,
        t.splits,
        t.merges,
        t.merges_of_rowless,
        t.stale_decisions,
        t.records,
        t.lost,
        t.replayed,
        t.order_violations,
        t.parent_violations,
        t.out_of_order_rows
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
