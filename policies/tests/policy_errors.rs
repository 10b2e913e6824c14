//! Every kind of bad policy file gives a located, actionable error; good examples load.
#![allow(clippy::unwrap_used)]

use shardctl_policies::load_policy;

fn err(yaml: &str) -> String {
    load_policy(yaml, "p.yaml").unwrap_err().to_string()
}

const HEAD: &str = "apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n  streams:\n    - name: orders\n";

#[test]
fn examples_load() {
    for (name, text) in [
        (
            "telecom",
            include_str!("../examples/telecom-org-events.yaml"),
        ),
        ("night", include_str!("../examples/night-merge-only.yaml")),
    ] {
        let p = load_policy(text, name).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.spec.streams.is_empty());
    }
}

#[test]
fn unknown_key_names_line_column_and_the_expected_keys() {
    let e = err(&format!("{HEAD}      maxShard: 4\n"));
    println!("{e}");
    assert!(e.starts_with("p.yaml:6:7:"), "{e}");
    assert!(e.contains("maxShard"), "{e}");
    assert!(e.contains("maxShards"), "{e}");
}

#[test]
fn wrong_type_is_located() {
    let e = err(&format!("{HEAD}      minShards: lots\n"));
    println!("{e}");
    assert!(e.starts_with("p.yaml:6:"), "{e}");
    assert!(e.contains("expected a whole number"), "{e}");
}

#[test]
fn bad_duration_is_located_and_explains_units() {
    let e = err(&format!(
        "{HEAD}      split:\n        stabilizationWindow: 300\n"
    ));
    println!("{e}");
    assert!(e.starts_with("p.yaml:7:"), "{e}");
    assert!(e.contains("`5m`"), "{e}");
}

#[test]
fn bad_cron_is_located() {
    let e = err(&format!(
        "{HEAD}      budgets:\n        - schedule: \"61 * * * *\"\n          duration: 1h\n          merges: 0\n"
    ));
    println!("{e}");
    assert!(e.starts_with("p.yaml:7:"), "{e}");
    assert!(e.contains("cron"), "{e}");
}

#[test]
fn min_above_max_is_located_at_max_shards() {
    let e = err(&format!("{HEAD}      minShards: 8\n      maxShards: 4\n"));
    println!("{e}");
    assert!(e.starts_with("p.yaml:7:"), "{e}");
    assert!(e.contains("spec.streams[0].maxShards"), "{e}");
    assert!(e.contains("raise maxShards or lower minShards"), "{e}");
}

#[test]
fn unknown_metric_is_an_error() {
    let e = err(&format!(
        "{HEAD}      split:\n        threshold:\n          outgoingBytes: 50\n"
    ));
    println!("{e}");
    assert!(e.starts_with("p.yaml:8:"), "{e}");
    assert!(e.contains("incomingBytes"), "{e}");
}

#[test]
fn merge_threshold_at_or_above_split_threshold_is_rejected() {
    let e = err(&format!(
        "{HEAD}      split:\n        threshold: {{incomingBytes: 60, incomingRecords: 80}}\n      merge:\n        threshold:\n          incomingBytes: 60\n          incomingRecords: 30\n"
    ));
    println!("{e}");
    assert!(e.contains("merge.threshold.incomingBytes"), "{e}");
    assert!(e.contains("would be split again"), "{e}");
    assert!(e.starts_with("p.yaml:10:"), "{e}");
}

#[test]
fn several_semantic_errors_are_all_reported() {
    let e = err(&format!(
        "{HEAD}      minShards: 0\n      maxOperationsPerCycle: 0\n      budgets:\n        - schedule: \"0 1 * * *\"\n"
    ));
    println!("{e}");
    assert!(e.lines().count() >= 4, "{e}");
    assert!(e.contains("needs a `duration`"), "{e}");
    assert!(e.contains("must limit something"), "{e}");
}

#[test]
fn wrong_api_version_and_missing_streams() {
    let e = err("apiVersion: v1\nkind: ScalingPolicy\nspec:\n  streams: []\n");
    println!("{e}");
    assert!(e.starts_with("p.yaml:1:"), "{e}");
    let e = err("apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n  streams: []\n");
    assert!(e.contains("no streams listed"), "{e}");
}

#[test]
fn duplicate_keys_and_multiple_documents_are_rejected() {
    let e = err(&format!("{HEAD}      minShards: 1\n      minShards: 2\n"));
    println!("{e}");
    assert!(e.starts_with("p.yaml:7:7:"), "{e}");
    assert!(e.contains("`minShards` is set twice"), "{e}");
    let e = err(&format!("{HEAD}---\n{HEAD}"));
    assert!(e.contains("more than one YAML document"), "{e}");
}

#[test]
fn evaluation_interval_of_a_million_years_is_rejected_with_line_and_column() {
    // It used to validate, and the controller then panicked computing its next wake-up
    // (`DateTime + TimeDelta overflowed`).
    let e = err(
        "apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n  evaluationInterval: 1000000y\n  streams:\n    - name: orders\n",
    );
    println!("{e}");
    assert!(e.starts_with("p.yaml:4:23:"), "{e}");
    assert!(e.contains("spec.evaluationInterval"), "{e}");
    assert!(e.contains("too long; use at most 1h"), "{e}");
}

#[test]
fn cooldown_overflow_is_rejected() {
    // A cooldown past the end of chrono's calendar panicked the planner (`last + cooldown`).
    let e = err(&format!(
        "{HEAD}      split:\n        cooldown: 100000000y\n      merge:\n        cooldown: 25h\n"
    ));
    println!("{e}");
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(
        lines[0].starts_with("p.yaml:7:19: spec.streams[0].split.cooldown"),
        "{e}"
    );
    assert!(
        lines[1].starts_with("p.yaml:9:19: spec.streams[0].merge.cooldown"),
        "{e}"
    );
    assert!(
        e.contains("use at most 24h (the controller keeps 24h of history)"),
        "{e}"
    );
}

#[test]
fn every_duration_has_an_upper_bound() {
    for (yaml, path, line) in [
        ("      metricsDelay: 31m\n", "metricsDelay", 6),
        (
            "      split:\n        stabilizationWindow: 1000000y\n",
            "split.stabilizationWindow",
            7,
        ),
        (
            "      merge:\n        policies:\n          - type: Shards\n            value: 1\n            period: 1000000y\n",
            "merge.policies[0].period",
            10,
        ),
        (
            "      budgets:\n        - schedule: \"@yearly\"\n          duration: 367d\n          merges: 0\n",
            "budgets[0].duration",
            8,
        ),
    ] {
        let e = err(&format!("{HEAD}{yaml}"));
        println!("{e}");
        assert!(e.starts_with(&format!("p.yaml:{line}:")), "{e}");
        assert!(e.contains(&format!("spec.streams[0].{path}")), "{e}");
        assert!(e.contains("too long; use at most"), "{e}");
    }
}

#[test]
fn durations_beyond_u64_seconds_are_parse_errors() {
    let e = err(&format!(
        "{HEAD}      split:\n        cooldown: 99999999999999999999y\n"
    ));
    println!("{e}");
    assert!(e.starts_with("p.yaml:7:"), "{e}");
    assert!(e.contains("invalid duration"), "{e}");
}

#[test]
fn the_defaults_lie_inside_the_bounds() {
    use shardctl_policies::policy::{defaults, limits};
    assert!(limits::EVALUATION_INTERVAL.contains(defaults::EVALUATION_INTERVAL));
    assert!(limits::METRICS_DELAY.contains(defaults::METRICS_DELAY));
    assert!(limits::STABILIZATION_WINDOW.contains(defaults::SPLIT_WINDOW));
    assert!(limits::STABILIZATION_WINDOW.contains(defaults::MERGE_WINDOW));
    assert!(limits::COOLDOWN.contains(defaults::SPLIT_COOLDOWN));
    assert!(limits::COOLDOWN.contains(defaults::MERGE_COOLDOWN));
    for p in defaults::split_rate().iter().chain(&defaults::merge_rate()) {
        assert!(limits::RATE_PERIOD.contains(p.period));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = load_policy(&text, "fuzz.yaml");
    }

    #[test]
    fn mutated_examples_never_panic(pos in 0usize..2000, byte in proptest::prelude::any::<u8>(), cut in 0usize..2500) {
        let mut bytes = include_str!("../examples/telecom-org-events.yaml").as_bytes().to_vec();
        let pos = pos % bytes.len();
        bytes[pos] = byte;
        bytes.truncate(cut.max(1));
        let text = String::from_utf8_lossy(&bytes);
        let _ = load_policy(&text, "fuzz.yaml");
    }
}
