//! The simulator is deterministic and conserves records.

use shardctl_sim::run::{OnDemandConfig, Prices, SimConfig, Strategy, UniformConfig, compare};
use shardctl_sim::traffic::{SCENARIOS, scenario};
use shardctl_sim::{status_line, svg};
use std::time::Duration;

fn config(name: &str, minutes: u64, seed: u64) -> SimConfig {
    let file = shardctl_policies::load_policy(
        include_str!("../../../policies/examples/telecom-org-events.yaml"),
        "telecom-org-events.yaml",
    )
    .expect("the example policy is valid");
    let policy = file.spec.streams[0].clone();
    SimConfig {
        uniform: UniformConfig::for_policy(&policy),
        on_demand: OnDemandConfig::default(),
        prices: Prices::default(),
        evaluation_interval: Duration::from_secs(60),
        minutes,
        seed,
        scenario: scenario(name, seed).expect("built-in scenario"),
        policy,
    }
}

#[test]
fn same_seed_same_result() {
    // 00:00-02:30 of hot-org-surge: shardctl merges at night and splits for the 01:45 budget.
    let a = config("hot-org-surge", 150, 7);
    let run = |cfg: &SimConfig| {
        let outcomes = compare(cfg, &Strategy::ALL, &mut |_, _, _| {}).expect("runs");
        let summaries: Vec<_> = outcomes.iter().map(|o| o.summary.clone()).collect();
        (
            summaries,
            svg::render(&cfg.scenario, cfg.minutes, &outcomes),
        )
    };
    let (first, first_svg) = run(&a);
    let (second, second_svg) = run(&a);
    assert_eq!(first, second);
    assert_eq!(first_svg, second_svg);
    let b = config("hot-org-surge", 150, 8);
    let (other, _) = run(&b);
    assert_ne!(
        first[0].offered_records, other[0].offered_records,
        "another seed gives other traffic"
    );
}

#[test]
fn records_offered_are_accepted_or_throttled() {
    for name in SCENARIOS {
        let cfg = config(name, 90, 3);
        let mut offered = None;
        for o in compare(&cfg, &Strategy::ALL, &mut |_, _, _| {}).expect("runs") {
            let s = &o.summary;
            assert!(s.offered_records > 0, "{name} {:?}", s.strategy);
            // Bursts are drawn per bucket and key, not per shard: every strategy sees the same
            // records.
            assert_eq!(
                s.offered_records,
                offered.unwrap_or(s.offered_records),
                "{name}"
            );
            offered = Some(s.offered_records);
            assert_eq!(
                s.offered_records,
                s.accepted_records + s.throttled_records,
                "{name} {:?}",
                s.strategy
            );
            if let Some(w) = &o.world {
                // Per shard and minute as well as in total.
                let (mut offered, mut accepted, mut throttled) = (0, 0, 0);
                for m in w.shards().iter().flat_map(|s| s.minutes.iter()) {
                    assert_eq!(m.offered_records, m.accepted_records + m.throttled_records);
                    assert!(m.accepted_records <= 60 * 1000);
                    offered += m.offered_records;
                    accepted += m.accepted_records;
                    throttled += m.throttled_records;
                }
                assert_eq!(
                    (offered, accepted, throttled),
                    (s.offered_records, s.accepted_records, s.throttled_records)
                );
            }
        }
    }
}

#[test]
fn run_simulate_services_drive_the_real_cycle() {
    use shardctl_controller::backend::{Clock, StateStore};
    use shardctl_controller::reconcile::{CycleSettings, LiveExecutor};
    let (svc, world) =
        shardctl_sim::simulated_stream("single-hot-key", "org-events", 1).expect("scenario exists");
    let mut policy = shardctl_policies::StreamPolicy::with_defaults("org-events");
    policy.split.stabilization_window = shardctl_policies::HumanDuration::mins(2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let leader = svc
            .state
            .acquire_leadership("test", Duration::from_secs(86_400), svc.clock.now())
            .await
            .expect("state")
            .expect("leader");
        let executor = LiveExecutor;
        // Into the hot key's surge (09:00), then a cycle a minute for 20 minutes.
        svc.clock.sleep(Duration::from_secs(9 * 3600)).await;
        for _ in 0..20 {
            let _ = svc
                .cycle(&policy, &executor, Some(&leader), &CycleSettings::default())
                .await;
            svc.clock.sleep(Duration::from_secs(60)).await;
        }
    });
    let line = status_line(&world);
    assert!(!world.lock().ops.is_empty(), "{line}");
    assert!(line.contains("open shards"), "{line}");
}

#[test]
fn bad_names_are_errors() {
    assert!(scenario("no-such-scenario", 1).is_err());
    assert!(shardctl_sim::simulated_stream("nope", "s", 1).is_err());
}
