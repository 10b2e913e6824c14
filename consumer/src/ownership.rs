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
//!   last knew, so only one of two racing writers succeeds. Takes and steals are conditional on
//!   the whole row as scanned ([`Acquisition::applies_to`]): a steal leaves the counter alone, and
//!   a plan from an older scan must not land on top of it.
//! * A worker acts on its belief only while it holds: the reader checks the tenure right before
//!   each dispatch, after the wait and the fetch, not only before them.

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

/// One conditional write the worker should attempt: a take or a steal, conditional on the row
/// being exactly as the scan saw it (counter, owner and handoff marker), so that a plan made from
/// an old scan can never overwrite what happened since. A steal leaves `leaseCounter` alone, so
/// the counter alone would not notice one.
///
/// ```
/// use shardctl_consumer::{Checkpoint, Lease};
/// use shardctl_consumer::ownership::{AcquireKind, Acquisition};
/// let mut row = Lease::new("s1", Checkpoint::TrimHorizon).owned_by("w1", 4);
/// let steal = Acquisition::of(&row, AcquireKind::Steal);
/// assert!(steal.applies_to(&row));
/// steal.apply(&mut row, "w2");
/// assert_eq!(row.checkpoint_owner.as_deref(), Some("w1"));
/// // A second steal, or a take planned from the scan before the first: refused.
/// assert!(!steal.applies_to(&row));
/// assert!(!Acquisition::of(&Lease::new("s1", Checkpoint::TrimHorizon).owned_by("w1", 4), AcquireKind::Take).applies_to(&row));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquisition {
    /// Shard id.
    pub lease_key: String,
    /// The write is conditional on this `leaseCounter`.
    pub expected_counter: u64,
    /// Owner in the scanned row, if any (the write is conditional on it).
    pub previous_owner: Option<String>,
    /// `checkpointOwner` in the scanned row, if any (the write is conditional on it). A steal is
    /// never planned while one is set: another handoff is under way.
    pub expected_checkpoint_owner: Option<String>,
    /// Take or steal.
    pub kind: AcquireKind,
}

impl Acquisition {
    /// An acquisition of `row` as scanned.
    pub fn of(row: &Lease, kind: AcquireKind) -> Self {
        Self {
            lease_key: row.lease_key.clone(),
            expected_counter: row.lease_counter,
            previous_owner: row.lease_owner.clone(),
            expected_checkpoint_owner: row.checkpoint_owner.clone(),
            kind,
        }
    }

    /// The condition of the write: the row is still as scanned (and, for a steal, no handoff is
    /// under way and the victim still owns it).
    pub fn applies_to(&self, row: &Lease) -> bool {
        row.lease_counter == self.expected_counter
            && row.lease_owner == self.previous_owner
            && row.checkpoint_owner == self.expected_checkpoint_owner
            && match self.kind {
                AcquireKind::Take => true,
                AcquireKind::Steal => {
                    self.previous_owner.is_some() && self.expected_checkpoint_owner.is_none()
                }
            }
    }

    /// The write, once its condition held: a take makes `me` the owner, bumps the counter,
    /// clears any handoff marker and counts an owner switch (KCL's rule: only when the owner
    /// changes); a steal (KCL 3's graceful handoff) makes `me` the owner and the victim the
    /// `checkpointOwner`, counter unchanged. Returns the new counter.
    pub fn apply(&self, row: &mut Lease, me: &str) -> u64 {
        match self.kind {
            AcquireKind::Take => {
                if self.switches_owner(me) {
                    row.owner_switches_since_checkpoint += 1;
                }
                row.lease_owner = Some(me.to_owned());
                row.lease_counter = self.expected_counter + 1;
                row.checkpoint_owner = None;
            }
            AcquireKind::Steal => {
                row.lease_owner = Some(me.to_owned());
                row.checkpoint_owner = self.previous_owner.clone();
            }
        }
        row.lease_counter
    }

    /// Whether the write changes the owner (another worker held it).
    pub fn switches_owner(&self, me: &str) -> bool {
        self.previous_owner.as_deref().is_some_and(|p| p != me)
    }

    /// The counter after the write.
    pub fn counter_after(&self) -> u64 {
        match self.kind {
            AcquireKind::Take => self.expected_counter + 1,
            AcquireKind::Steal => self.expected_counter,
        }
    }
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
            .map(|l| Acquisition::of(l, AcquireKind::Take))
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
        // A lease whose handoff is under way is not stolen again.
        .filter(|l| {
            l.lease_owner.as_deref() == Some(victim)
                && l.checkpoint_owner.is_none()
                && !held.contains(&l.lease_key)
        })
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
        .map(|l| Acquisition::of(l, AcquireKind::Steal))
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

    /// When the belief ends unless a renewal extends it.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Take);
    /// assert_eq!(t.valid_until(), t0 + Duration::from_secs(3));
    /// ```
    pub fn valid_until(&self) -> Instant {
        self.valid_until
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
    //
    // Workers act on a model of the table's conditional writes with the rules above and the same
    // acquire rule as the store ([`Acquisition::applies_to`] / [`Acquisition::apply`]). Writes
    // can land late, after other workers acted (plans from old scans, two thieves after one
    // lease), renewals can hang (never land, or land with the answer lost), workers pause for
    // longer than the failover time, and a reader fetches, then dispatches after a re-check of
    // its tenure. Checked after every step: no two workers believe they hold one lease, and no
    // shard is processed by two workers at once (once another acquisition dispatched a lease's
    // records, an earlier one never dispatches again).
    //
    // `SHARDCTL_MODEL_CASES` sets the number of cases (default 2000).

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
                        let again =
                            acq.kind == AcquireKind::Steal && stolen.contains(&acq.lease_key);
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
                        match conditional(
                            &mut self.table,
                            &key,
                            tenure.counter,
                            Some(Some(&me)),
                            None,
                        ) {
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

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
