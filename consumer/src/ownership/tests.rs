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

mod model;

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
