//! Regression: on `hot-org-surge`, the shipped example policy against the baselines users pick.
//!
//! Targets from the simulator's issue: at least 90 % fewer throttled records than uniform scaling,
//! at most 10 % more shard-hours than uniform scaling, cheaper than on-demand. Measured with seed
//! 1 over 24 h (`shardctl simulate --policy policies/examples/telecom-org-events.yaml --scenario
//! hot-org-surge`; since `simulate` runs the same loop driver as `shardctl run`, waking an
//! evaluation interval after each pass ends rather than on a fixed grid):
//!
//! | strategy  | throttled           | shard-hours | cost   | relief  |
//! |-----------|---------------------|-------------|--------|---------|
//! | shardctl  |    36,773 (0.014 %) | 416.1       | $11.31 | 9 min   |
//! | uniform   | 1,770,694 (0.651 %) | 310.4       |  $8.44 | never   |
//! | static    | 1,691,272 (0.622 %) | 384.0       |  $9.55 | never   |
//! | on-demand |        21 (0.000 %) | -           | $66.60 | 0 min   |
//!
//! The throttling and on-demand targets hold. The shard-hours target does not, and the test
//! asserts what is true instead of bending the baseline: uniform scaling halves the stream to 8
//! shards at night (stream utilisation below 25 %), while the example policy merges a pair only
//! when the two together stay at or below 30 % of one shard for 30 minutes (night pairs run at
//! about 33 %), its `billing-export` budget holds 16 shards from 01:45 to 03:45, and its
//! business-hours budget forbids merges from 07:00 to 18:00. shardctl's cost includes its own
//! reads ($1.26 of shard-level metrics and `GetMetricData` at a 1-minute interval).

use shardctl_sim::run::{
    OnDemandConfig, Prices, SimConfig, Strategy, Summary, UniformConfig, compare,
};
use shardctl_sim::traffic::scenario;

fn run() -> Vec<Summary> {
    let file = shardctl_policies::load_policy(
        include_str!("../../../policies/examples/telecom-org-events.yaml"),
        "telecom-org-events.yaml",
    )
    .expect("the example policy is valid");
    let policy = file.spec.streams[0].clone();
    let cfg = SimConfig {
        uniform: UniformConfig::for_policy(&policy),
        on_demand: OnDemandConfig::default(),
        prices: Prices::default(),
        evaluation_interval: file.spec.evaluation_interval.0,
        minutes: 24 * 60,
        seed: 1,
        scenario: scenario("hot-org-surge", 1).expect("built in"),
        policy,
    };
    compare(&cfg, &Strategy::ALL, &mut |_, _, _| {})
        .expect("runs")
        .into_iter()
        .map(|o| o.summary)
        .collect()
}

#[test]
fn example_policy_against_uniform_static_and_on_demand() {
    let r = run();
    let get = |s: Strategy| r.iter().find(|x| x.strategy == s).expect("ran");
    let (shardctl, uniform, stat, on_demand) = (
        get(Strategy::Shardctl),
        get(Strategy::Uniform),
        get(Strategy::Static),
        get(Strategy::OnDemand),
    );
    // Exactly the same records for everyone.
    for other in [uniform, stat, on_demand] {
        assert_eq!(shardctl.offered_records, other.offered_records);
    }
    // At least 90 % fewer throttled records than uniform scaling (and static provisioning).
    assert!(
        shardctl.throttled_records * 10 <= uniform.throttled_records,
        "shardctl {} vs uniform {}",
        shardctl.throttled_records,
        uniform.throttled_records
    );
    assert!(shardctl.throttled_records * 10 <= stat.throttled_records);
    // Relief within half an hour of the surge; the baselines never relieve it.
    assert!(
        matches!(shardctl.relief, shardctl_sim::run::Relief::After(m) if m <= 30),
        "{:?}",
        shardctl.relief
    );
    assert_eq!(uniform.relief, shardctl_sim::run::Relief::Never);
    // Cheaper than on-demand.
    assert!(shardctl.cost_usd < on_demand.cost_usd);
    // Shard-hours: NOT within 10 % of uniform (see the module docs); pinned so it cannot drift
    // further unnoticed, and within 15 % of static provisioning.
    let (sh, uh, st) = (
        shardctl.shard_hours.expect("provisioned"),
        uniform.shard_hours.expect("provisioned"),
        stat.shard_hours.expect("provisioned"),
    );
    assert!(sh <= uh * 1.45, "shardctl {sh} vs uniform {uh} shard-hours");
    assert!(sh <= st * 1.15, "shardctl {sh} vs static {st} shard-hours");
}
