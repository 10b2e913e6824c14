//! Model-based property test: many workers racing over one table.
//!
//! Workers act on a model of the table's conditional writes with the ownership rules and the same
//! acquire rule as the store ([`Acquisition::applies_to`] / [`Acquisition::apply`]). Writes
//! can land late, after other workers acted (plans from old scans, two thieves after one
//! lease), renewals can hang (never land, or land with the answer lost), workers pause for
//! longer than the failover time, and a reader fetches, then dispatches after a re-check of
//! its tenure. Checked after every step: no two workers believe they hold one lease, and no
//! shard is processed by two workers at once (once another acquisition dispatched a lease's
//! records, an earlier one never dispatches again).
//!
//! `SHARDCTL_MODEL_CASES` sets the number of cases (default 2000).
//!
//! Longer than 500 lines by choice: the model (operations, the table's conditional writes, the
//! workers' beliefs) and its invariants are one unit; split, neither half reads on its own.

use super::*;

const MAX_WORKERS: usize = 4;
const MAX_KEYS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    /// A step longer than the failover time (with a paused worker: a long pause).
    LongAdvance(u64),
    /// Scan, plan and write at once (the write lands after `delay_ms`).
    Acquire {
        worker: usize,
        delay_ms: u64,
    },
    /// Scan and plan; the writes are sent now and land at a later `LandAcquire`.
    PlanAcquire {
        worker: usize,
    },
    LandAcquire {
        worker: usize,
    },
    /// Two workers plan from the same table, then both writes land (one after the other).
    DoubleSteal {
        a: usize,
        b: usize,
    },
    /// Renew every held lease at once (each write lands after `delay_ms`).
    Renew {
        worker: usize,
        delay_ms: u64,
    },
    /// One renewal sent; it lands (or not) at a later `RenewLand`.
    RenewSend {
        worker: usize,
        pick: usize,
    },
    /// The oldest renewal in flight: `apply` whether it reaches the table, `answered` whether
    /// the worker hears back (otherwise its bounded call timed out: a hung call).
    RenewLand {
        worker: usize,
        apply: bool,
        answered: bool,
    },
    Release {
        worker: usize,
    },
    Pause {
        worker: usize,
    },
    Resume {
        worker: usize,
    },
    Finish {
        key: usize,
    },
    /// A victim that learned of a steal writes its last checkpoint and clears the marker.
    HandOff {
        worker: usize,
    },
    /// A thief checks whether the handoff finished (or fences the victim off after failover).
    AwaitHandoff {
        worker: usize,
    },
    /// The readers check their tenure and send `GetRecords`, for every held lease.
    Fetch {
        worker: usize,
    },
    /// Answers arrive: each batch is dispatched if the tenure is still valid right now.
    Dispatch {
        worker: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..MAX_WORKERS;
    prop_oneof![
        3 => (1u64..2000).prop_map(Op::Advance),
        1 => (FAILOVER.as_millis() as u64..2 * FAILOVER.as_millis() as u64).prop_map(Op::LongAdvance),
        3 => (w.clone(), 0u64..500).prop_map(|(worker, delay_ms)| Op::Acquire { worker, delay_ms }),
        2 => w.clone().prop_map(|worker| Op::PlanAcquire { worker }),
        2 => w.clone().prop_map(|worker| Op::LandAcquire { worker }),
        1 => (w.clone(), w.clone()).prop_map(|(a, b)| Op::DoubleSteal { a, b }),
        3 => (w.clone(), 0u64..500).prop_map(|(worker, delay_ms)| Op::Renew { worker, delay_ms }),
        2 => (w.clone(), any::<usize>()).prop_map(|(worker, pick)| Op::RenewSend { worker, pick }),
        2 => (w.clone(), any::<bool>(), proptest::bool::weighted(0.7))
            .prop_map(|(worker, apply, answered)| Op::RenewLand { worker, apply, answered }),
        1 => w.clone().prop_map(|worker| Op::Release { worker }),
        1 => w.clone().prop_map(|worker| Op::Pause { worker }),
        1 => w.clone().prop_map(|worker| Op::Resume { worker }),
        1 => (0..MAX_KEYS).prop_map(|key| Op::Finish { key }),
        2 => w.clone().prop_map(|worker| Op::HandOff { worker }),
        3 => w.clone().prop_map(|worker| Op::AwaitHandoff { worker }),
        4 => w.clone().prop_map(|worker| Op::Fetch { worker }),
        4 => w.prop_map(|worker| Op::Dispatch { worker }),
    ]
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    cases: u64,
    ops: u64,
    takes: u64,
    steals: u64,
    /// Acquisitions whose condition no longer held when they landed.
    refused: u64,
    /// Second steals of one lease refused.
    second_steals_refused: u64,
    handoffs: u64,
    fences: u64,
    hung_renewals: u64,
    /// Renewals that timed out but had been applied, found and adopted later.
    adopted: u64,
    /// Steps longer than the failover time while a worker was paused.
    long_pauses: u64,
    dispatches: u64,
    /// Batches fetched but not dispatched because the tenure lapsed meanwhile.
    withheld: u64,
    overlaps: u64,
}

#[derive(Default)]
struct Worker {
    id: String,
    paused: bool,
    observer: LeaseObserver,
    tenures: HashMap<String, Tenure>,
    /// Leases stolen from us with a handoff marker naming us.
    handing_off: HashSet<String>,
    /// Leases we stole and whose previous owner has not handed off yet.
    awaiting: HashSet<String>,
    /// Leases whose previous owner we fenced off: not before this instant.
    fenced_until: HashMap<String, Instant>,
    /// Acquisitions sent, not landed: (write, sent).
    pending_acquisitions: Vec<(Acquisition, Instant)>,
    /// Renewals sent, not landed: (lease, counter, sent).
    pending_renewals: Vec<(String, u64, Instant)>,
    /// Reads in flight: (lease, acquisition epoch).
    fetching: Vec<(String, u64)>,
    /// Acquisition epoch of each held lease (a processor instance).
    epochs: HashMap<String, u64>,
}

impl Worker {
    fn held(&self) -> HashSet<String> {
        self.tenures.keys().cloned().collect()
    }
}

struct Model {
    now: Instant,
    table: Vec<Lease>,
    workers: Vec<Worker>,
    next_epoch: u64,
    /// Per lease: the acquisition that dispatched last, and those superseded by another.
    last_dispatch: HashMap<String, (usize, u64)>,
    superseded: HashSet<(String, usize, u64)>,
    stats: Stats,
}

fn row<'t>(table: &'t mut [Lease], key: &str) -> Option<&'t mut Lease> {
    table.iter_mut().find(|l| l.lease_key == key)
}

/// Conditional write on the model table (counter and owner), bumping the counter.
fn conditional(
    table: &mut [Lease],
    key: &str,
    expected_counter: u64,
    expected_owner: Option<Option<&str>>,
    new_owner: Option<Option<String>>,
) -> Option<u64> {
    let row = row(table, key)?;
    if row.lease_counter != expected_counter {
        return None;
    }
    if let Some(owner) = expected_owner
        && row.lease_owner.as_deref() != owner
    {
        return None;
    }
    if let Some(owner) = new_owner {
        row.lease_owner = owner;
    }
    row.lease_counter += 1;
    Some(row.lease_counter)
}

impl Model {
    fn new(n_workers: usize, n_keys: usize) -> Self {
        Self {
            now: Instant::now(),
            table: (0..n_keys)
                .map(|i| Lease::new(format!("shard-{i}"), Checkpoint::TrimHorizon))
                .collect(),
            workers: (0..n_workers)
                .map(|i| Worker {
                    id: format!("w{i}"),
                    ..Worker::default()
                })
                .collect(),
            next_epoch: 0,
            last_dispatch: HashMap::new(),
            superseded: HashSet::new(),
            stats: Stats::default(),
        }
    }

    fn check_single_believer(&self) -> Result<(), TestCaseError> {
        let mut believers: HashMap<&str, &str> = HashMap::new();
        for w in &self.workers {
            for (key, tenure) in &w.tenures {
                if tenure.is_valid(self.now)
                    && let Some(other) = believers.insert(key, &w.id)
                {
                    return Err(TestCaseError::fail(format!(
                        "{other} and {} both believe they hold {key}",
                        w.id
                    )));
                }
            }
        }
        Ok(())
    }

    fn plan(&mut self, i: usize) -> Vec<Acquisition> {
        let now = self.now;
        let w = &mut self.workers[i];
        w.tenures.retain(|_, t| !t.is_lapsed(now));
        w.observer.observe(&self.table, now);
        plan_acquisitions(&w.id, &self.table, &w.held(), &w.observer, now, &policy())
    }

    /// An acquisition lands: the store's condition and update, then the worker hears back.
    fn land(&mut self, i: usize, acq: &Acquisition, sent: Instant) -> bool {
        let me = self.workers[i].id.clone();
        let Some(r) = row(&mut self.table, &acq.lease_key) else {
            return false;
        };
        if !acq.applies_to(r) {
            self.stats.refused += 1;
            return false;
        }
        let counter = acq.apply(r, &me);
        let w = &mut self.workers[i];
        w.handing_off.remove(&acq.lease_key);
        w.fetching.retain(|(k, _)| *k != acq.lease_key);
        match acq.kind {
            AcquireKind::Take => {
                self.stats.takes += 1;
                w.awaiting.remove(&acq.lease_key);
            }
            AcquireKind::Steal => {
                self.stats.steals += 1;
                w.awaiting.insert(acq.lease_key.clone());
            }
        }
        w.tenures.insert(
            acq.lease_key.clone(),
            Tenure::acquired(counter, sent, FAILOVER, acq.kind),
        );
        self.next_epoch += 1;
        w.epochs.insert(acq.lease_key.clone(), self.next_epoch);
        true
    }

    /// What the worker does when a renewal was refused (the worker's `renew_one`).
    fn renewal_refused(&mut self, i: usize, key: &str) {
        let me = self.workers[i].id.clone();
        let Some(r) = self.table.iter().find(|l| l.lease_key == key).cloned() else {
            self.workers[i].tenures.remove(key);
            return;
        };
        let w = &mut self.workers[i];
        let Some(ours) = w.tenures.get(key).map(|t| t.counter) else {
            return;
        };
        if r.checkpoint_owner.as_deref() == Some(me.as_str()) {
            // Stolen with a handoff: keep processing until we hand off.
            w.handing_off.insert(key.to_owned());
        } else if r.lease_owner.as_deref() == Some(me.as_str())
            && r.checkpoint_owner.is_none()
            && r.lease_counter > ours
        {
            // A renewal that timed out had landed: adopt its counter and renew on it now.
            self.stats.adopted += 1;
            let sent = self.now;
            if let Some(t) = w.tenures.get_mut(key) {
                t.counter = r.lease_counter;
            }
            if let Some(c) =
                conditional(&mut self.table, key, r.lease_counter, Some(Some(&me)), None)
                && let Some(t) = self.workers[i].tenures.get_mut(key)
            {
                t.renewed(c, sent, FAILOVER);
            }
        } else {
            w.tenures.remove(key);
        }
    }

    fn dispatch(&mut self, i: usize, key: &str, epoch: u64) -> Result<(), TestCaseError> {
        self.stats.dispatches += 1;
        if self.superseded.contains(&(key.to_owned(), i, epoch)) {
            self.stats.overlaps += 1;
            return Err(TestCaseError::fail(format!(
                "{} dispatched {key} after another worker had processed it",
                self.workers[i].id
            )));
        }
        if let Some(prev) = self.last_dispatch.insert(key.to_owned(), (i, epoch))
            && prev != (i, epoch)
        {
            self.superseded.insert((key.to_owned(), prev.0, prev.1));
        }
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let n = self.workers.len();
        let active = |w: &Worker| !w.paused;
        match op {
            Op::Advance(ms) => self.now += Duration::from_millis(ms),
            Op::LongAdvance(ms) => {
                if self.workers.iter().any(|w| w.paused) {
                    self.stats.long_pauses += 1;
                }
                self.now += Duration::from_millis(ms);
            }
            Op::Acquire { worker, delay_ms } => {
                let i = worker % n;
                if !active(&self.workers[i]) {
                    return Ok(());
                }
                let plan = self.plan(i);
                let sent = self.now;
                self.now += Duration::from_millis(delay_ms);
                for acq in plan {
                    self.land(i, &acq, sent);
                }
            }
            Op::PlanAcquire { worker } => {
                let i = worker % n;
                if !active(&self.workers[i]) {
                    return Ok(());
                }
                let plan = self.plan(i);
                let sent = self.now;
                self.workers[i]
                    .pending_acquisitions
                    .extend(plan.into_iter().map(|a| (a, sent)));
            }
            Op::LandAcquire { worker } => {
                let i = worker % n;
                if !active(&self.workers[i]) {
                    return Ok(());
                }
                for (acq, sent) in std::mem::take(&mut self.workers[i].pending_acquisitions) {
                    if !self.workers[i].tenures.contains_key(&acq.lease_key) {
                        self.land(i, &acq, sent);
                    }
                }
            }
            Op::DoubleSteal { a, b } => {
                let (a, b) = (a % n, b % n);
                if a == b || !active(&self.workers[a]) || !active(&self.workers[b]) {
                    return Ok(());
                }
                let sent = self.now;
                let plan_a = self.plan(a);
                let plan_b = self.plan(b);
                let stolen: HashSet<String> = plan_a
                    .iter()
                    .filter(|x| x.kind == AcquireKind::Steal && self.land(a, x, sent))
                    .map(|x| x.lease_key.clone())
                    .collect();
                for acq in plan_b {
                    let again = acq.kind == AcquireKind::Steal && stolen.contains(&acq.lease_key);
                    if !self.land(b, &acq, sent) && again {
                        self.stats.second_steals_refused += 1;
                    }
                }
            }
            Op::Renew { worker, delay_ms } => {
                let i = worker % n;
                if !active(&self.workers[i]) {
                    return Ok(());
                }
                let sent = self.now;
                self.now += Duration::from_millis(delay_ms);
                let me = self.workers[i].id.clone();
                let keys: Vec<String> = self.workers[i].tenures.keys().cloned().collect();
                for key in keys {
                    let w = &mut self.workers[i];
                    let tenure = w.tenures[&key];
                    if w.handing_off.contains(&key) || w.awaiting.contains(&key) {
                        continue;
                    }
                    if tenure.is_lapsed(sent) {
                        w.tenures.remove(&key);
                        continue;
                    }
                    match conditional(&mut self.table, &key, tenure.counter, Some(Some(&me)), None)
                    {
                        Some(counter) => {
                            if let Some(t) = self.workers[i].tenures.get_mut(&key) {
                                t.renewed(counter, sent, FAILOVER);
                            }
                        }
                        None => self.renewal_refused(i, &key),
                    }
                }
            }
            Op::RenewSend { worker, pick } => {
                let i = worker % n;
                let w = &mut self.workers[i];
                if w.paused {
                    return Ok(());
                }
                let mut keys: Vec<&String> = w
                    .tenures
                    .keys()
                    .filter(|k| !w.handing_off.contains(*k) && !w.awaiting.contains(*k))
                    .collect();
                keys.sort();
                if keys.is_empty() {
                    return Ok(());
                }
                let key = keys[pick % keys.len()].clone();
                let t = w.tenures[&key];
                if !t.is_lapsed(self.now) {
                    w.pending_renewals.push((key, t.counter, self.now));
                }
            }
            Op::RenewLand {
                worker,
                apply,
                answered,
            } => {
                let i = worker % n;
                if self.workers[i].pending_renewals.is_empty() {
                    return Ok(());
                }
                let (key, counter, sent) = self.workers[i].pending_renewals.remove(0);
                let me = self.workers[i].id.clone();
                let result = if apply {
                    conditional(&mut self.table, &key, counter, Some(Some(&me)), None)
                } else {
                    None
                };
                if !answered || self.workers[i].paused {
                    // The bounded call gave up: the worker knows nothing, its other leases
                    // are renewed as usual.
                    self.stats.hung_renewals += 1;
                    return self.check_single_believer();
                }
                match result {
                    Some(c) => {
                        if let Some(t) = self.workers[i].tenures.get_mut(&key)
                            && t.counter == counter
                        {
                            t.renewed(c, sent, FAILOVER);
                        }
                    }
                    None if apply
                        && self.workers[i]
                            .tenures
                            .get(&key)
                            .is_some_and(|t| t.counter == counter) =>
                    {
                        self.renewal_refused(i, &key);
                    }
                    None => {}
                }
            }
            Op::Release { worker } => {
                let i = worker % n;
                if !active(&self.workers[i]) {
                    return Ok(());
                }
                let now = self.now;
                let me = self.workers[i].id.clone();
                let w = &mut self.workers[i];
                w.handing_off.clear();
                w.awaiting.clear();
                w.fetching.clear();
                for (key, tenure) in std::mem::take(&mut w.tenures) {
                    // A stolen lease whose tenure has not started must not be released: the
                    // victim may still believe it holds it. It is dropped and expires instead.
                    if tenure.may_release(now) {
                        conditional(
                            &mut self.table,
                            &key,
                            tenure.counter,
                            Some(Some(&me)),
                            Some(None),
                        );
                    }
                }
            }
            Op::HandOff { worker } => {
                let i = worker % n;
                if !active(&self.workers[i]) {
                    return Ok(());
                }
                let me = self.workers[i].id.clone();
                for key in std::mem::take(&mut self.workers[i].handing_off) {
                    // Stop first, then clear the marker and bump the counter, conditional on
                    // the marker naming us and the counter we last knew.
                    let ours = self.workers[i].tenures.remove(&key).map(|t| t.counter);
                    self.workers[i].fetching.retain(|(k, _)| *k != key);
                    if let Some(r) = row(&mut self.table, &key)
                        && r.checkpoint_owner.as_deref() == Some(me.as_str())
                        && Some(r.lease_counter) == ours
                    {
                        r.checkpoint_owner = None;
                        r.lease_counter += 1;
                        self.stats.handoffs += 1;
                    }
                }
            }
            Op::AwaitHandoff { worker } => {
                let i = worker % n;
                if !active(&self.workers[i]) {
                    return Ok(());
                }
                let now = self.now;
                let me = self.workers[i].id.clone();
                for key in self.workers[i].awaiting.clone() {
                    let w = &mut self.workers[i];
                    let Some(r) = self.table.iter_mut().find(|l| l.lease_key == key) else {
                        continue;
                    };
                    if r.lease_owner.as_deref() != Some(me.as_str()) {
                        w.awaiting.remove(&key);
                        w.tenures.remove(&key);
                        continue;
                    }
                    let Some(tenure) = w.tenures.get_mut(&key) else {
                        w.awaiting.remove(&key);
                        continue;
                    };
                    match &r.checkpoint_owner {
                        None if w.fenced_until.get(&key).is_some_and(|t| now < *t) => {}
                        None => {
                            // Our tenure starts with a renewal of the counter the handoff
                            // (or our fence) wrote: others time expiry from that write.
                            r.lease_counter += 1;
                            tenure.renewed(r.lease_counter, now, FAILOVER);
                            tenure.handed_over(now);
                            w.awaiting.remove(&key);
                        }
                        Some(_) if now >= tenure.valid_from() => {
                            r.checkpoint_owner = None;
                            r.lease_counter += 1;
                            w.fenced_until.insert(key.clone(), now + FAILOVER);
                            self.stats.fences += 1;
                        }
                        Some(_) => {}
                    }
                }
            }
            Op::Pause { worker } => self.workers[worker % n].paused = true,
            Op::Resume { worker } => self.workers[worker % n].paused = false,
            Op::Finish { key } => {
                // The holder checkpoints SHARD_END (conditional like any checkpoint).
                let key = format!("shard-{key}");
                let now = self.now;
                for i in 0..n {
                    let me = self.workers[i].id.clone();
                    let w = &self.workers[i];
                    if let Some(t) = w.tenures.get(&key).copied()
                        && !w.paused
                        && t.is_valid(now)
                        && conditional(&mut self.table, &key, t.counter, Some(Some(&me)), None)
                            .is_some()
                    {
                        if let Some(r) = row(&mut self.table, &key) {
                            r.checkpoint = Checkpoint::ShardEnd;
                        }
                        self.workers[i].tenures.remove(&key);
                    }
                }
            }
            Op::Fetch { worker } => {
                let i = worker % n;
                let now = self.now;
                let w = &mut self.workers[i];
                if w.paused {
                    return Ok(());
                }
                for (key, t) in &w.tenures {
                    let busy = w.fetching.iter().any(|(k, _)| k == key);
                    if t.is_valid(now) && !w.awaiting.contains(key) && !busy {
                        let epoch = w.epochs.get(key).copied().unwrap_or(0);
                        w.fetching.push((key.clone(), epoch));
                    }
                }
            }
            Op::Dispatch { worker } => {
                let i = worker % n;
                if self.workers[i].paused {
                    return Ok(());
                }
                let now = self.now;
                for (key, epoch) in std::mem::take(&mut self.workers[i].fetching) {
                    let w = &self.workers[i];
                    // The re-check right before dispatch.
                    let valid = w.tenures.get(&key).is_some_and(|t| t.is_valid(now))
                        && w.epochs.get(&key) == Some(&epoch)
                        && !w.awaiting.contains(&key)
                        && !w.handing_off.contains(&key);
                    if valid {
                        self.dispatch(i, &key, epoch)?;
                    } else {
                        self.stats.withheld += 1;
                    }
                }
            }
        }
        self.check_single_believer()
    }
}

fn cases() -> u32 {
    std::env::var("SHARDCTL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn racing_workers_never_both_believe_they_hold_a_lease_nor_process_it_together() {
    let total = std::sync::Mutex::new(Stats::default());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        2usize..=MAX_WORKERS,
        1usize..=MAX_KEYS,
        proptest::collection::vec(op(), 1..300),
    );
    let result = runner.run(&strategy, |(n_workers, n_keys, ops)| {
        let mut m = Model::new(n_workers, n_keys);
        let len = ops.len();
        for op in ops {
            if let Op::Finish { key } = op
                && key >= n_keys
            {
                continue;
            }
            m.step(op)?;
        }
        let mut t = total
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = m.stats;
        t.cases += 1;
        t.ops += len as u64;
        t.takes += s.takes;
        t.steals += s.steals;
        t.refused += s.refused;
        t.second_steals_refused += s.second_steals_refused;
        t.handoffs += s.handoffs;
        t.fences += s.fences;
        t.hung_renewals += s.hung_renewals;
        t.adopted += s.adopted;
        t.long_pauses += s.long_pauses;
        t.dispatches += s.dispatches;
        t.withheld += s.withheld;
        t.overlaps += s.overlaps;
        Ok(())
    });
    let t = *total
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    println!(
        "lease model: {} cases, {} ops, {} takes, {} steals, {} acquisitions refused as stale \
         ({} second steals), {} handoffs, {} fences, {} hung renewals ({} adopted later), \
         {} pauses longer than the failover time, {} dispatches ({} withheld after a lapse), \
         {} overlaps, 0 double believers",
        t.cases,
        t.ops,
        t.takes,
        t.steals,
        t.refused,
        t.second_steals_refused,
        t.handoffs,
        t.fences,
        t.hung_renewals,
        t.adopted,
        t.long_pauses,
        t.dispatches,
        t.withheld,
        t.overlaps
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
