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

mod tenure;
pub use tenure::Tenure;

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

#[cfg(test)]
mod tests;
