//! Lease rules as a pure state machine: expiry, taking, stealing, balancing, and how long a worker
//! may believe it holds a lease.
//!
//! Nothing here performs I/O or reads a clock: every function takes `now`. The worker feeds it
//! lease rows scanned from the table and carries out the returned [`Acquisition`]s as conditional
//! writes on `leaseCounter` (see [`crate::store`]).
//!
//! # Why two workers never both believe they hold a lease
//!
//! * A lease is *expired* for an observer when its `leaseCounter` has not changed for the failover
//!   time since the observer first saw that value ([`LeaseObserver`]). Clocks are never compared
//!   across machines, only durations on one machine.
//! * A holder believes it holds a lease until *the moment it sent its last successful renewal* plus
//!   the failover time ([`Tenure`]). Because the observer saw the counter that renewal wrote, the
//!   renewal was sent before the observer's clock started: the holder's belief ends before the
//!   observer may take the lease.
//! * A steal takes a lease that is not expired, so the thief's tenure starts only one failover time
//!   after the steal was sent; by then the victim's belief has lapsed (its last renewal could not
//!   have been sent after the steal).
//! * Every take, steal, renew, checkpoint and release is conditional on the counter the writer
//!   last knew, so only one of two racing writers succeeds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::lease::Lease;

/// How a worker tracks the counters of leases it does not hold, to tell when they expired.
///
/// ```
/// use std::time::{Duration, Instant};
/// use shardctl_consumer::{Checkpoint, Lease};
/// use shardctl_consumer::ownership::LeaseObserver;
///
/// let failover = Duration::from_secs(10);
/// let t0 = Instant::now();
/// let leases = vec![Lease::new("s1", Checkpoint::TrimHorizon).owned_by("w1", 4)];
/// let mut observer = LeaseObserver::default();
/// observer.observe(&leases, t0);
/// assert!(!observer.is_expired(&leases[0], t0 + Duration::from_secs(9), failover));
/// observer.observe(&leases, t0 + Duration::from_secs(10));
/// assert!(observer.is_expired(&leases[0], t0 + Duration::from_secs(10), failover));
/// ```
#[derive(Debug, Default, Clone)]
pub struct LeaseObserver {
    seen: HashMap<String, Seen>,
}

#[derive(Debug, Clone)]
struct Seen {
    counter: u64,
    owner: Option<String>,
    since: Instant,
}

impl LeaseObserver {
    /// Records a scan of the table. `now` must be taken *after* the scan returned.
    /// Leases absent from `leases` are forgotten.
    ///
    /// ```
    /// use std::time::Instant;
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// use shardctl_consumer::ownership::LeaseObserver;
    /// let mut observer = LeaseObserver::default();
    /// observer.observe(&[Lease::new("s1", Checkpoint::TrimHorizon)], Instant::now());
    /// ```
    pub fn observe(&mut self, leases: &[Lease], now: Instant) {
        let mut next = HashMap::with_capacity(leases.len());
        for lease in leases {
            let seen = match self.seen.remove(&lease.lease_key) {
                Some(old)
                    if old.counter == lease.lease_counter && old.owner == lease.lease_owner =>
                {
                    old
                }
                _ => Seen {
                    counter: lease.lease_counter,
                    owner: lease.lease_owner.clone(),
                    since: now,
                },
            };
            next.insert(lease.lease_key.clone(), seen);
        }
        self.seen = next;
    }

    /// True when `lease` is owned and its counter has not changed for `failover` since this
    /// observer first saw it. An unobserved lease is not expired (unknown is not expired).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// use shardctl_consumer::ownership::LeaseObserver;
    /// let lease = Lease::new("s1", Checkpoint::TrimHorizon).owned_by("w1", 1);
    /// let observer = LeaseObserver::default();
    /// assert!(!observer.is_expired(&lease, Instant::now(), Duration::ZERO));
    /// ```
    pub fn is_expired(&self, lease: &Lease, now: Instant, failover: Duration) -> bool {
        if lease.lease_owner.is_none() {
            return false;
        }
        match self.seen.get(&lease.lease_key) {
            Some(seen)
                if seen.counter == lease.lease_counter && seen.owner == lease.lease_owner =>
            {
                now.saturating_duration_since(seen.since) >= failover
            }
            _ => false,
        }
    }

    /// True when `lease` may be taken without stealing: unowned, or expired.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// use shardctl_consumer::ownership::LeaseObserver;
    /// let observer = LeaseObserver::default();
    /// let free = Lease::new("s1", Checkpoint::TrimHorizon);
    /// assert!(observer.is_available(&free, Instant::now(), Duration::from_secs(10)));
    /// ```
    pub fn is_available(&self, lease: &Lease, now: Instant, failover: Duration) -> bool {
        lease.lease_owner.is_none() || self.is_expired(lease, now, failover)
    }
}

/// `t + d`, or the latest instant the platform can represent on the way there: a failover of
/// centuries means "forever", and must not panic (`Instant + Duration` does on overflow).
///
/// ```
/// use std::time::{Duration, Instant};
/// use shardctl_consumer::ownership::saturating_after;
/// let t0 = Instant::now();
/// assert_eq!(saturating_after(t0, Duration::from_secs(3)), t0 + Duration::from_secs(3));
/// assert!(saturating_after(t0, Duration::MAX) > t0 + Duration::from_secs(100 * 365 * 86_400));
/// ```
pub fn saturating_after(t: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(later) = t.checked_add(d) {
            return later;
        }
        // Terminates: `t + 0` is `t`.
        d /= 2;
    }
}

/// Knobs of the balancing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalancePolicy {
    /// Failover time: a lease whose counter did not move for this long is expired.
    pub failover: Duration,
    /// At most this many leases are stolen per round.
    ///
    /// # Warning
    /// Large values make leases bounce between workers when workers come and go.
    pub max_steal_at_once: usize,
    /// Upper bound of leases one worker holds.
    pub max_leases_per_worker: usize,
}

impl Default for BalancePolicy {
    fn default() -> Self {
        Self {
            failover: Duration::from_secs(10),
            max_steal_at_once: 1,
            max_leases_per_worker: usize::MAX,
        }
    }
}

/// How a lease is acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireKind {
    /// The lease was unowned or expired.
    Take,
    /// The lease was held by a live worker with more than its share.
    Steal,
}

/// One conditional write the worker should attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquisition {
    /// Shard id.
    pub lease_key: String,
    /// The write is conditional on this `leaseCounter`.
    pub expected_counter: u64,
    /// Owner in the scanned row, if any.
    pub previous_owner: Option<String>,
    /// Take or steal.
    pub kind: AcquireKind,
}

/// Decides which leases `me` should take or steal this round.
///
/// `held` are the leases `me` currently holds (its tenure is valid). Leases at `SHARD_END` do not
/// count. Each worker aims at `ceil(active leases / live workers)`; it first takes unowned leases
/// (new shards), then expired ones; only when none is available does it steal, from the most
/// loaded worker, at most [`BalancePolicy::max_steal_at_once`].
///
/// ```
/// use std::collections::HashSet;
/// use std::time::Instant;
/// use shardctl_consumer::{Checkpoint, Lease};
/// use shardctl_consumer::ownership::{plan_acquisitions, AcquireKind, BalancePolicy, LeaseObserver};
///
/// let leases: Vec<Lease> = (0..4)
///     .map(|i| Lease::new(format!("s{i}"), Checkpoint::TrimHorizon).owned_by("w1", 1))
///     .collect();
/// let now = Instant::now();
/// let mut observer = LeaseObserver::default();
/// observer.observe(&leases, now);
/// let plan = plan_acquisitions("w2", &leases, &HashSet::new(), &observer, now, &BalancePolicy::default());
/// assert_eq!(plan.len(), 1);
/// assert_eq!(plan[0].kind, AcquireKind::Steal);
/// ```
pub fn plan_acquisitions(
    me: &str,
    leases: &[Lease],
    held: &HashSet<String>,
    observer: &LeaseObserver,
    now: Instant,
    policy: &BalancePolicy,
) -> Vec<Acquisition> {
    let active: Vec<&Lease> = leases.iter().filter(|l| !l.is_finished()).collect();
    if active.is_empty() {
        return Vec::new();
    }

    // Live load per worker: owned, not expired. `me` counts what it actually holds.
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    let mut available: Vec<&Lease> = Vec::new();
    for lease in &active {
        if held.contains(&lease.lease_key) {
            continue;
        }
        if observer.is_available(lease, now, policy.failover) {
            available.push(lease);
            continue;
        }
        // A lease the table says is ours but that we do not hold (e.g. after a restart with the
        // same worker id) waits until it expires like any other.
        if let Some(owner) = lease.lease_owner.as_deref()
            && owner != me
        {
            *load.entry(owner).or_default() += 1;
        }
    }
    let my_load = active
        .iter()
        .filter(|l| held.contains(&l.lease_key))
        .count();
    load.insert(me, my_load);

    let workers = load.len().max(1);
    let target = active
        .len()
        .div_ceil(workers)
        .min(policy.max_leases_per_worker);
    if my_load >= target {
        return Vec::new();
    }
    let need = target - my_load;

    if !available.is_empty() {
        // New shards (never owned) first, then expired ones; stable by key.
        available.sort_by(|a, b| {
            (a.lease_owner.is_some(), &a.lease_key).cmp(&(b.lease_owner.is_some(), &b.lease_key))
        });
        return available
            .into_iter()
            .take(need)
            .map(|l| Acquisition {
                lease_key: l.lease_key.clone(),
                expected_counter: l.lease_counter,
                previous_owner: l.lease_owner.clone(),
                kind: AcquireKind::Take,
            })
            .collect();
    }

    // Steal from the most loaded other worker (ties: smallest id, deterministic).
    let Some((victim, victim_load)) = load
        .iter()
        .filter(|(w, _)| **w != me)
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(w, n)| (*w, *n))
    else {
        return Vec::new();
    };
    let count = if victim_load > target {
        (victim_load - target).min(need)
    } else if victim_load == target && need >= 2 {
        1
    } else {
        0
    }
    .min(policy.max_steal_at_once);
    if count == 0 {
        return Vec::new();
    }
    let mut victims: Vec<&Lease> = active
        .iter()
        .copied()
        .filter(|l| l.lease_owner.as_deref() == Some(victim) && !held.contains(&l.lease_key))
        .collect();
    // Prefer stealing leases whose work is not blocked on parents, then by key from the end so
    // that two thieves in one round rarely pick the same one as takers of free leases.
    victims.sort_by(|a, b| {
        (a.parent_shard_ids.is_empty(), &a.lease_key)
            .cmp(&(b.parent_shard_ids.is_empty(), &b.lease_key))
            .reverse()
    });
    victims
        .into_iter()
        .take(count)
        .map(|l| Acquisition {
            lease_key: l.lease_key.clone(),
            expected_counter: l.lease_counter,
            previous_owner: l.lease_owner.clone(),
            kind: AcquireKind::Steal,
        })
        .collect()
}

/// How long a worker may believe it holds a lease, and the counter its next write is conditional on.
///
/// ```
/// use std::time::{Duration, Instant};
/// use shardctl_consumer::ownership::{AcquireKind, Tenure};
/// let failover = Duration::from_secs(9);
/// let t0 = Instant::now();
/// let mut tenure = Tenure::acquired(5, t0, failover, AcquireKind::Take);
/// assert!(tenure.is_valid(t0));
/// tenure.renewed(6, t0 + Duration::from_secs(3), failover);
/// assert!(tenure.is_valid(t0 + Duration::from_secs(11)));
/// assert!(!tenure.is_valid(t0 + Duration::from_secs(12)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenure {
    /// `leaseCounter` after our last successful write.
    pub counter: u64,
    valid_from: Instant,
    valid_until: Instant,
}

impl Tenure {
    /// Tenure after a successful take or steal that was *sent* at `sent` and wrote `counter`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let stolen = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Steal);
    /// assert!(!stolen.is_valid(t0));
    /// ```
    pub fn acquired(counter: u64, sent: Instant, failover: Duration, kind: AcquireKind) -> Self {
        let valid_until = saturating_after(sent, failover);
        let valid_from = match kind {
            AcquireKind::Take => sent,
            AcquireKind::Steal => valid_until,
        };
        Self {
            counter,
            valid_from,
            valid_until,
        }
    }

    /// Records a successful renewal (or checkpoint) sent at `sent` that wrote `counter`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let mut t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Take);
    /// t.renewed(2, t0 + Duration::from_secs(1), Duration::from_secs(3));
    /// assert_eq!(t.counter, 2);
    /// ```
    pub fn renewed(&mut self, counter: u64, sent: Instant, failover: Duration) {
        self.counter = counter;
        self.valid_until = self.valid_until.max(saturating_after(sent, failover));
    }

    /// True while the worker may act on the lease (process records, checkpoint).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Take);
    /// assert!(!t.is_valid(t0 + Duration::from_secs(3)));
    /// ```
    pub fn is_valid(&self, now: Instant) -> bool {
        self.valid_from <= now && now < self.valid_until
    }

    /// True once the tenure can no longer become valid without a renewal.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Take);
    /// assert!(t.is_lapsed(t0 + Duration::from_secs(3)));
    /// ```
    pub fn is_lapsed(&self, now: Instant) -> bool {
        now >= self.valid_until
    }

    /// The previous owner of a stolen lease confirmed it stopped (graceful handoff), so the tenure
    /// may start now instead of one failover time after the steal.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let mut t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Steal);
    /// t.handed_over(t0 + Duration::from_millis(500));
    /// assert!(t.is_valid(t0 + Duration::from_millis(500)));
    /// ```
    pub fn handed_over(&mut self, now: Instant) {
        self.valid_from = self.valid_from.min(now);
    }

    /// True when releasing the lease (removing `leaseOwner`) is safe: the tenure has started, so no
    /// previous owner can still believe it holds the lease. A stolen lease released earlier would
    /// look free to everyone while its victim may still be processing.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Steal);
    /// assert!(!t.may_release(t0));
    /// assert!(t.may_release(t0 + Duration::from_secs(3)));
    /// ```
    pub fn may_release(&self, now: Instant) -> bool {
        now >= self.valid_from
    }

    /// When processing may start (later than the acquisition for a steal).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Steal);
    /// assert_eq!(t.valid_from(), t0 + Duration::from_secs(3));
    /// ```
    pub fn valid_from(&self) -> Instant {
        self.valid_from
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lease::Checkpoint;
    use proptest::prelude::*;

    const FAILOVER: Duration = Duration::from_millis(3000);

    #[test]
    fn a_failover_of_centuries_saturates_instead_of_panicking() {
        let t0 = Instant::now();
        let mut take = Tenure::acquired(1, t0, Duration::MAX, AcquireKind::Take);
        assert!(take.is_valid(t0 + Duration::from_secs(3600)));
        take.renewed(2, t0 + Duration::from_secs(1), Duration::MAX);
        assert!(!take.is_lapsed(t0 + Duration::from_secs(86_400)));
        let steal = Tenure::acquired(1, t0, Duration::MAX, AcquireKind::Steal);
        assert!(!steal.is_valid(t0 + Duration::from_secs(86_400)));
        let pacer = crate::reader::ReadPacer {
            idle_interval: Duration::MAX,
        };
        assert!(pacer.next_call(t0, u64::MAX, true) > t0 + Duration::from_secs(86_400));
    }

    fn policy() -> BalancePolicy {
        BalancePolicy {
            failover: FAILOVER,
            max_steal_at_once: 1,
            max_leases_per_worker: usize::MAX,
        }
    }

    #[test]
    fn unowned_leases_are_taken_before_expired_ones() {
        let t0 = Instant::now();
        let mut leases = vec![
            Lease::new("a", Checkpoint::TrimHorizon).owned_by("dead", 3),
            Lease::new("b", Checkpoint::TrimHorizon),
        ];
        leases.push(Lease::new("c", Checkpoint::ShardEnd));
        let mut obs = LeaseObserver::default();
        obs.observe(&leases, t0);
        let later = t0 + FAILOVER;
        obs.observe(&leases, later);
        let plan = plan_acquisitions("me", &leases, &HashSet::new(), &obs, later, &policy());
        let keys: Vec<_> = plan.iter().map(|a| a.lease_key.as_str()).collect();
        // 2 active leases, the dead worker's lease is expired so only "me" is live: take both,
        // the new one first; the finished lease is ignored.
        assert_eq!(keys, ["b", "a"]);
        assert!(plan.iter().all(|a| a.kind == AcquireKind::Take));
    }

    #[test]
    fn no_steal_when_balanced() {
        let t0 = Instant::now();
        let leases = vec![
            Lease::new("a", Checkpoint::TrimHorizon).owned_by("w1", 1),
            Lease::new("b", Checkpoint::TrimHorizon).owned_by("w1", 1),
            Lease::new("c", Checkpoint::TrimHorizon).owned_by("me", 1),
        ];
        let mut obs = LeaseObserver::default();
        obs.observe(&leases, t0);
        let held = HashSet::from(["c".to_string()]);
        assert!(plan_acquisitions("me", &leases, &held, &obs, t0, &policy()).is_empty());
    }

    #[test]
    fn counter_change_restarts_expiry_clock() {
        let t0 = Instant::now();
        let mut lease = Lease::new("a", Checkpoint::TrimHorizon).owned_by("w1", 1);
        let mut obs = LeaseObserver::default();
        obs.observe(std::slice::from_ref(&lease), t0);
        lease.lease_counter = 2;
        let t1 = t0 + FAILOVER;
        obs.observe(std::slice::from_ref(&lease), t1);
        assert!(!obs.is_expired(&lease, t1, FAILOVER));
        assert!(obs.is_expired(&lease, t1 + FAILOVER, FAILOVER));
    }

    // ---- model-based property test: many workers racing over one table ----

    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Acquire {
            worker: usize,
            delay_ms: u64,
        },
        Renew {
            worker: usize,
            delay_ms: u64,
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
    }

    fn op(workers: usize, keys: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1u64..2000).prop_map(Op::Advance),
            4 => (0..workers, 0u64..500).prop_map(|(worker, delay_ms)| Op::Acquire { worker, delay_ms }),
            4 => (0..workers, 0u64..500).prop_map(|(worker, delay_ms)| Op::Renew { worker, delay_ms }),
            1 => (0..workers).prop_map(|worker| Op::Release { worker }),
            1 => (0..workers).prop_map(|worker| Op::Pause { worker }),
            1 => (0..workers).prop_map(|worker| Op::Resume { worker }),
            1 => (0..keys).prop_map(|key| Op::Finish { key }),
            2 => (0..workers).prop_map(|worker| Op::HandOff { worker }),
            3 => (0..workers).prop_map(|worker| Op::AwaitHandoff { worker }),
        ]
    }

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
    }

    impl Worker {
        fn held(&self) -> HashSet<String> {
            self.tenures.keys().cloned().collect()
        }
    }

    /// Conditional write on the model table, like the DynamoDB condition expression.
    fn conditional(
        table: &mut [Lease],
        key: &str,
        expected_counter: u64,
        expected_owner: Option<Option<&str>>,
        new_owner: Option<Option<String>>,
    ) -> Option<u64> {
        let row = table.iter_mut().find(|l| l.lease_key == key)?;
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

    fn check_single_believer(workers: &[Worker], now: Instant) -> Result<(), TestCaseError> {
        let mut believers: HashMap<&str, &str> = HashMap::new();
        for w in workers {
            for (key, tenure) in &w.tenures {
                if tenure.is_valid(now)
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

    fn run(n_workers: usize, n_keys: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut now = Instant::now();
        let mut table: Vec<Lease> = (0..n_keys)
            .map(|i| Lease::new(format!("shard-{i}"), Checkpoint::TrimHorizon))
            .collect();
        let mut workers: Vec<Worker> = (0..n_workers)
            .map(|i| Worker {
                id: format!("w{i}"),
                paused: false,
                observer: LeaseObserver::default(),
                tenures: HashMap::new(),
                handing_off: HashSet::new(),
                awaiting: HashSet::new(),
                fenced_until: HashMap::new(),
            })
            .collect();
        for op in ops {
            match op {
                Op::Advance(ms) => now += Duration::from_millis(ms),
                Op::Acquire { worker, delay_ms } => {
                    let w = &mut workers[worker];
                    if w.paused {
                        continue;
                    }
                    w.tenures.retain(|_, t| !t.is_lapsed(now));
                    w.observer.observe(&table, now);
                    let plan =
                        plan_acquisitions(&w.id, &table, &w.held(), &w.observer, now, &policy());
                    let sent = now;
                    now += Duration::from_millis(delay_ms);
                    for acq in plan {
                        let me = w.id.clone();
                        match acq.kind {
                            AcquireKind::Take => {
                                if let Some(counter) = conditional(
                                    &mut table,
                                    &acq.lease_key,
                                    acq.expected_counter,
                                    None,
                                    Some(Some(me)),
                                ) {
                                    if let Some(row) =
                                        table.iter_mut().find(|l| l.lease_key == acq.lease_key)
                                    {
                                        row.checkpoint_owner = None;
                                    }
                                    w.handing_off.remove(&acq.lease_key);
                                    w.awaiting.remove(&acq.lease_key);
                                    w.tenures.insert(
                                        acq.lease_key,
                                        Tenure::acquired(counter, sent, FAILOVER, acq.kind),
                                    );
                                }
                            }
                            // KCL 3's graceful handoff: owner and marker change, the counter
                            // does not; refused while another handoff is under way.
                            AcquireKind::Steal => {
                                let Some(row) =
                                    table.iter_mut().find(|l| l.lease_key == acq.lease_key)
                                else {
                                    continue;
                                };
                                if row.lease_counter != acq.expected_counter
                                    || row.lease_owner != acq.previous_owner
                                    || row.checkpoint_owner.is_some()
                                {
                                    continue;
                                }
                                row.lease_owner = Some(me);
                                row.checkpoint_owner = acq.previous_owner.clone();
                                w.handing_off.remove(&acq.lease_key);
                                w.awaiting.insert(acq.lease_key.clone());
                                w.tenures.insert(
                                    acq.lease_key,
                                    Tenure::acquired(
                                        acq.expected_counter,
                                        sent,
                                        FAILOVER,
                                        acq.kind,
                                    ),
                                );
                            }
                        }
                    }
                }
                Op::Renew { worker, delay_ms } => {
                    let w = &mut workers[worker];
                    if w.paused {
                        continue;
                    }
                    let sent = now;
                    now += Duration::from_millis(delay_ms);
                    let keys: Vec<String> = w.tenures.keys().cloned().collect();
                    for key in keys {
                        let tenure = w.tenures[&key];
                        if w.handing_off.contains(&key) || w.awaiting.contains(&key) {
                            continue;
                        }
                        if tenure.is_lapsed(sent) {
                            w.tenures.remove(&key);
                            w.handing_off.remove(&key);
                            continue;
                        }
                        match conditional(&mut table, &key, tenure.counter, Some(Some(&w.id)), None)
                        {
                            Some(counter) => {
                                if let Some(t) = w.tenures.get_mut(&key) {
                                    t.renewed(counter, sent, FAILOVER);
                                }
                            }
                            None => {
                                let marker = table
                                    .iter()
                                    .find(|l| l.lease_key == key)
                                    .and_then(|l| l.checkpoint_owner.clone());
                                if marker.as_deref() == Some(w.id.as_str()) {
                                    // Stolen with a handoff: keep processing until we hand off.
                                    w.handing_off.insert(key);
                                } else {
                                    w.tenures.remove(&key);
                                }
                            }
                        }
                    }
                }
                Op::Release { worker } => {
                    let w = &mut workers[worker];
                    if w.paused {
                        continue;
                    }
                    w.handing_off.clear();
                    w.awaiting.clear();
                    for (key, tenure) in std::mem::take(&mut w.tenures) {
                        // A stolen lease whose tenure has not started must not be released: the
                        // victim may still believe it holds it. It is dropped and expires instead.
                        if tenure.may_release(now) {
                            conditional(
                                &mut table,
                                &key,
                                tenure.counter,
                                Some(Some(&w.id)),
                                Some(None),
                            );
                        }
                    }
                }
                Op::HandOff { worker } => {
                    let w = &mut workers[worker];
                    if w.paused {
                        continue;
                    }
                    for key in std::mem::take(&mut w.handing_off) {
                        // Stop first, then clear the marker and bump the counter (conditional
                        // on the marker naming us).
                        w.tenures.remove(&key);
                        if let Some(row) = table.iter_mut().find(|l| l.lease_key == key)
                            && row.checkpoint_owner.as_deref() == Some(w.id.as_str())
                        {
                            row.checkpoint_owner = None;
                            row.lease_counter += 1;
                        }
                    }
                }
                Op::AwaitHandoff { worker } => {
                    let w = &mut workers[worker];
                    if w.paused {
                        continue;
                    }
                    let me = w.id.clone();
                    for key in w.awaiting.clone() {
                        let Some(row) = table.iter_mut().find(|l| l.lease_key == key) else {
                            continue;
                        };
                        if row.lease_owner.as_deref() != Some(me.as_str()) {
                            w.awaiting.remove(&key);
                            w.tenures.remove(&key);
                            continue;
                        }
                        let Some(tenure) = w.tenures.get_mut(&key) else {
                            w.awaiting.remove(&key);
                            continue;
                        };
                        match &row.checkpoint_owner {
                            None if w.fenced_until.get(&key).is_some_and(|t| now < *t) => {}
                            None => {
                                // Our tenure starts with a renewal of the counter the handoff
                                // (or our fence) wrote: others time expiry from that write.
                                row.lease_counter += 1;
                                tenure.renewed(row.lease_counter, now, FAILOVER);
                                tenure.handed_over(now);
                                w.awaiting.remove(&key);
                            }
                            Some(_) if now >= tenure.valid_from() => {
                                row.checkpoint_owner = None;
                                row.lease_counter += 1;
                                w.fenced_until.insert(key.clone(), now + FAILOVER);
                            }
                            Some(_) => {}
                        }
                    }
                }
                Op::Pause { worker } => workers[worker].paused = true,
                Op::Resume { worker } => workers[worker].paused = false,
                Op::Finish { key } => {
                    // The holder checkpoints SHARD_END (conditional like any checkpoint).
                    let key = format!("shard-{key}");
                    for w in &mut workers {
                        if let Some(t) = w.tenures.get(&key).copied()
                            && !w.paused
                            && t.is_valid(now)
                            && let Some(counter) =
                                conditional(&mut table, &key, t.counter, Some(Some(&w.id)), None)
                        {
                            if let Some(row) = table.iter_mut().find(|l| l.lease_key == key) {
                                row.checkpoint = Checkpoint::ShardEnd;
                            }
                            w.tenures.remove(&key);
                            let _ = counter;
                        }
                    }
                }
            }
            check_single_believer(&workers, now)?;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn racing_workers_never_both_believe_they_hold_a_lease(
            n_workers in 2usize..6,
            n_keys in 1usize..8,
            ops in proptest::collection::vec(op(6, 8), 1..200),
        ) {
            let ops = ops.into_iter().filter(|o| match o {
                Op::Acquire { worker, .. } | Op::Renew { worker, .. } | Op::Release { worker }
                | Op::Pause { worker } | Op::Resume { worker } | Op::HandOff { worker }
                | Op::AwaitHandoff { worker } => *worker < n_workers,
                Op::Finish { key } => *key < n_keys,
                Op::Advance(_) => true,
            }).collect();
            run(n_workers, n_keys, ops)?;
        }

        /// With everyone alive and renewing, repeated rounds end balanced: loads differ by at most one
        /// and every active lease is held.
        #[test]
        fn rounds_converge_to_balance(
            n_workers in 1usize..6,
            n_keys in 0usize..24,
            initial_owner in proptest::collection::vec(0usize..6, 24),
        ) {
            let mut now = Instant::now();
            let ids: Vec<String> = (0..n_workers).map(|i| format!("w{i}")).collect();
            let mut table: Vec<Lease> = (0..n_keys).map(|i| Lease::new(format!("s{i:02}"), Checkpoint::TrimHorizon)).collect();
            let mut held: Vec<HashSet<String>> = vec![HashSet::new(); n_workers];
            for (i, lease) in table.iter_mut().enumerate() {
                let w = initial_owner[i] % n_workers;
                lease.lease_owner = Some(ids[w].clone());
                held[w].insert(lease.lease_key.clone());
            }
            let mut observers = vec![LeaseObserver::default(); n_workers];
            for _round in 0..(n_keys * 2 + 4) {
                for mine in &held {
                    // Everyone renews: counters move, nothing expires.
                    for lease in table.iter_mut().filter(|l| mine.contains(&l.lease_key)) {
                        lease.lease_counter += 1;
                    }
                }
                for w in 0..n_workers {
                    observers[w].observe(&table, now);
                    let plan = plan_acquisitions(&ids[w], &table, &held[w], &observers[w], now, &policy());
                    for acq in plan {
                        let row = table.iter_mut().find(|l| l.lease_key == acq.lease_key).unwrap();
                        if row.lease_counter == acq.expected_counter {
                            if let Some(prev) = row.lease_owner.as_deref()
                                && let Some(p) = ids.iter().position(|i| i == prev)
                            {
                                held[p].remove(&acq.lease_key);
                            }
                            row.lease_owner = Some(ids[w].clone());
                            row.lease_counter += 1;
                            held[w].insert(acq.lease_key.clone());
                        }
                    }
                }
                now += Duration::from_millis(100);
            }
            let loads: Vec<usize> = held.iter().map(HashSet::len).collect();
            let max = loads.iter().copied().max().unwrap_or(0);
            let min = loads.iter().copied().min().unwrap_or(0);
            prop_assert!(max - min <= 1, "loads {:?}", loads);
            prop_assert_eq!(loads.iter().sum::<usize>(), n_keys);
        }
    }
}
