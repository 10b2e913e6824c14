//! Regression: on `hot-org-surge`, the shipped example policy against the baselines users pick.
//!
//! Targets from the simulator's issue: at least 90 % fewer throttled records than stream-level
//! scaling, at most 10 % more shard-hours than it, cheaper than on-demand. Measured with seed 1
//! over 24 h (`shardctl simulate --policy policies/examples/telecom-org-events.yaml --scenario
//! hot-org-surge`; since `simulate` runs the same loop driver as `shardctl run`, waking an
//! evaluation interval after each pass ends rather than on a fixed grid). The stream-level
//! baselines run with the settings their own documentation gives (see `shardctl_sim::baselines`):
//!
//! | strategy            | throttled           | shard-hours | cost   | relief  |
//! |---------------------|---------------------|-------------|--------|---------|
//! | shardctl            |    36,773 (0.014 %) | 416.1       | $11.31 | 9 min   |
//! | scaling-utils       | 1,463,886 (0.538 %) | 389.9       |  $9.64 | 239 min |
//! | lambda-sample       | 2,688,082 (0.988 %) | 306.0       |  $8.36 | never   |
//! | static              | 1,691,272 (0.622 %) | 384.0       |  $9.55 | never   |
//! | on-demand           |        21 (0.000 %) | -           | $66.60 | 0 min   |
//! | on-demand-advantage |        21 (0.000 %) | -           | $81.23 | 0 min   |
//!
//! The throttling and on-demand targets hold. The shard-hours target holds against scaling-utils
//! (7 % more) but not against the Lambda sample, and the test asserts what is true instead of
//! bending the baseline: the sample halves the stream at night (stream utilisation below 25 %
//! for 285 of 300 minutes) and never scales up for a single hot shard, while the example policy merges a pair only
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
fn example_policy_against_stream_level_static_and_on_demand() {
    let r = run();
    let get = |s: Strategy| r.iter().find(|x| x.strategy == s).expect("ran");
    let (shardctl, scaling_utils, lambda, stat, on_demand, advantage) = (
        get(Strategy::Shardctl),
        get(Strategy::ScalingUtils),
        get(Strategy::LambdaSample),
        get(Strategy::Static),
        get(Strategy::OnDemand),
        get(Strategy::OnDemandAdvantage),
    );
    // Exactly the same records for everyone.
    for other in [scaling_utils, lambda, stat, on_demand, advantage] {
        assert_eq!(shardctl.offered_records, other.offered_records);
    }
    // At least 90 % fewer throttled records than stream-level scaling and static provisioning.
    for other in [scaling_utils, lambda, stat] {
        assert!(
            shardctl.throttled_records * 10 <= other.throttled_records,
            "shardctl {} vs {} {}",
            shardctl.throttled_records,
            other.strategy.name(),
            other.throttled_records
        );
    }
    // Relief within half an hour of the surge; the baselines take hours or never relieve it.
    assert!(
        matches!(shardctl.relief, shardctl_sim::run::Relief::After(m) if m <= 30),
        "{:?}",
        shardctl.relief
    );
    assert!(
        !matches!(scaling_utils.relief, shardctl_sim::run::Relief::After(m) if m <= 30),
        "{:?}",
        scaling_utils.relief
    );
    assert_eq!(lambda.relief, shardctl_sim::run::Relief::Never);
    // Cheaper than on-demand, Standard and Advantage.
    assert!(shardctl.cost_usd < on_demand.cost_usd);
    assert!(shardctl.cost_usd < advantage.cost_usd);
    // Shard-hours: within 10 % of scaling-utils, NOT of the Lambda sample (see the module docs;
    // pinned so it cannot drift further unnoticed), within 15 % of static provisioning.
    let (sh, uh, lh, st) = (
        shardctl.shard_hours.expect("provisioned"),
        scaling_utils.shard_hours.expect("provisioned"),
        lambda.shard_hours.expect("provisioned"),
        stat.shard_hours.expect("provisioned"),
    );
    assert!(
        sh <= uh * 1.10,
        "shardctl {sh} vs scaling-utils {uh} shard-hours"
    );
    assert!(
        sh <= lh * 1.45,
        "shardctl {sh} vs lambda-sample {lh} shard-hours"
    );
    assert!(sh <= st * 1.15, "shardctl {sh} vs static {st} shard-hours");
}
