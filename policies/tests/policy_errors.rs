//! Every kind of bad policy file gives a located, actionable error; good examples load.
//!
//! Longer than 500 lines by choice: one case per kind of bad input, each quoting the policy text
//! and the error an operator sees; the cases share the loader helper at the top.
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

/// `PROPTEST_CASES` when set (`scripts/fuzz.sh` sets it high), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: cases(2000),
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

/// Structured random policies. Half of them are sane (every value plausible, most of them
/// valid, so that planning with them is exercised too); the other half mix in extreme and
/// garbage values: durations of a million years, numbers beyond `u32`, NaN, unicode names.
mod structured {
    use proptest::prelude::*;
    use proptest::sample::select;

    type S = BoxedStrategy<String>;

    /// `sane`, or with `wild` also extreme and garbage values.
    fn or_wild(sane: S, wild: bool, extremes: S) -> S {
        if wild {
            prop_oneof![5 => sane, 3 => extremes, 1 => "\\PC{0,12}"].boxed()
        } else {
            sane
        }
    }

    fn in_units(range: std::ops::Range<u64>, units: &'static [&'static str]) -> S {
        (range, select(units))
            .prop_map(|(n, u)| format!("{n}{u}"))
            .boxed()
    }

    fn duration(sane: S, wild: bool) -> S {
        let extremes = prop_oneof![
            select(vec![
                "1000000y",
                "100000000y",
                "584942417355y",
                "18446744073709551615s",
                "18446744073709551616s",
                "99999999999999999999y",
                "9223372036854775807ms",
                "292277024626y",
                "262144y",
                "0s",
                "0ns",
                "1ns",
                "1h 30m",
                "367d",
                "366d",
                "24h 1s",
                "-5m",
                "5",
                "",
                "1e9s",
                "1.5h",
                "5 m",
                "\u{663}m",
            ])
            .prop_map(String::from),
            any::<u64>().prop_map(|n| format!("{n}s")),
            any::<u64>().prop_map(|n| format!("{n}y")),
            in_units(
                0..200,
                &["s", "m", "h", "d", "ms", "min", "sec", "w", "M", "y"]
            ),
        ];
        or_wild(sane, wild, extremes.boxed())
    }

    fn window(wild: bool) -> S {
        duration(in_units(1..24, &["m", "h"]), wild)
    }

    fn number(sane: std::ops::Range<u32>, wild: bool) -> S {
        let extremes = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            select(vec![
                "4294967296",
                "4294967295",
                "-1",
                "0",
                "1.5",
                "1e3",
                ".nan",
                "~",
                "\"4\"",
                "0x10"
            ])
            .prop_map(String::from),
        ];
        or_wild(
            sane.prop_map(|n| n.to_string()).boxed(),
            wild,
            extremes.boxed(),
        )
    }

    fn percent(sane: std::ops::Range<f64>, wild: bool) -> S {
        let extremes = prop_oneof![
            any::<f64>().prop_map(|f| f.to_string()),
            select(vec![
                ".nan", ".inf", "-.inf", "1e309", "-0", "1e-320", "NaN", "100", "0"
            ])
            .prop_map(String::from),
        ];
        or_wild(
            sane.prop_map(|f| format!("{f:.1}")).boxed(),
            wild,
            extremes.boxed(),
        )
    }

    fn word(sane: &'static str, wild: bool) -> S {
        let extremes = prop_oneof!["\\PC{0,40}", "[a-z]{129,300}", Just(String::new())];
        or_wild(sane.boxed(), wild, extremes.boxed())
            .prop_map(|n| q(&n))
            .boxed()
    }

    fn choice(sane: Vec<&'static str>, wild: bool) -> S {
        let extremes = select(vec!["Maybe", "pods", "", "MAX", "midPoint"]).prop_map(String::from);
        or_wild(
            select(sane).prop_map(String::from).boxed(),
            wild,
            extremes.boxed(),
        )
    }

    fn cron(wild: bool) -> S {
        let sane = select(vec![
            "0 22 * * *",
            "@daily",
            "@yearly",
            "*/5 * * * *",
            "0 0 29 2 *",
            "0 0 30 2 *",
            "0 8 * * MON-FRI",
            "0 0 0 * * *",
            "59 23 31 12 *",
            "0 0 1 1 *",
        ])
        .prop_map(String::from);
        let extremes = select(vec![
            "61 * * * *",
            "garbage",
            "",
            "* * *",
            "0 0 * * * * *",
            "@every",
        ])
        .prop_map(String::from);
        or_wild(sane.boxed(), wild, extremes.boxed())
            .prop_map(|c| q(&c))
            .boxed()
    }

    /// `text` as a YAML double-quoted scalar (JSON's escapes are YAML's).
    fn q(text: &str) -> String {
        serde_json::to_string(text).unwrap_or_default()
    }

    /// `key: value` lines, each present or not.
    fn fields(indent: usize, fields: Vec<(&'static str, Option<String>)>) -> String {
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{:indent$}{k}: {v}\n", "")))
            .collect()
    }

    fn rates(wild: bool) -> impl Strategy<Value = Option<String>> {
        proptest::option::weighted(
            0.6,
            proptest::collection::vec(
                (
                    choice(vec!["Shards", "Percent"], wild),
                    number(1..10, wild),
                    duration(in_units(1..24, &["m", "h"]), wild),
                ),
                usize::from(!wild)..3,
            ),
        )
        .prop_map(|list| {
            list.map(|l| {
                let mut out = String::from("\n");
                for (kind, value, period) in l {
                    out += &format!(
                        "          - type: {kind}\n            value: {value}\n            period: {}\n",
                        q(&period)
                    );
                }
                if out == "\n" { "[]".to_string() } else { out }
            })
        })
    }

    /// The `split:` or `merge:` block.
    fn direction(split: bool, wild: bool) -> impl Strategy<Value = String> {
        let threshold = if split { 50.0..100.0 } else { 1.0..40.0 };
        (
            proptest::option::weighted(
                0.6,
                (percent(threshold.clone(), wild), percent(threshold, wild)),
            ),
            proptest::option::weighted(0.6, window(wild)),
            proptest::option::weighted(0.6, duration(in_units(0..24, &["s", "m", "h"]), wild)),
            proptest::option::weighted(0.3, choice(vec!["Max", "Min", "Disabled"], wild)),
            proptest::option::weighted(0.3, choice(vec!["midpoint", "trafficWeighted"], wild)),
            rates(wild),
        )
            .prop_map(
                move |(threshold, window, cooldown, select_policy, split_point, policies)| {
                    fields(
                        8,
                        vec![
                            (
                                "threshold",
                                threshold.map(|(b, r)| {
                                    format!("{{incomingBytes: {b}, incomingRecords: {r}}}")
                                }),
                            ),
                            ("stabilizationWindow", window.map(|d| q(&d))),
                            ("cooldown", cooldown.map(|d| q(&d))),
                            ("selectPolicy", select_policy),
                            ("splitPoint", split_point.filter(|_| split)),
                            ("policies", policies),
                        ],
                    )
                },
            )
    }

    fn budget(wild: bool) -> impl Strategy<Value = String> {
        (
            proptest::option::of(word("[a-z][a-z0-9-]{0,12}", wild)),
            proptest::option::weighted(
                0.8,
                (
                    cron(wild),
                    duration(in_units(1..400, &["m", "h", "d"]), wild),
                ),
            ),
            proptest::option::of(number(0..3, wild)),
            proptest::option::of(number(0..3, wild)),
            proptest::option::of(number(1..20, wild)),
        )
            .prop_map(|(name, window, splits, merges, min)| {
                let (schedule, duration) = window.unzip();
                let body = fields(
                    10,
                    vec![
                        ("name", name),
                        ("schedule", schedule),
                        ("duration", duration.map(|d| q(&d))),
                        ("splits", splits),
                        ("merges", merges),
                        ("minShards", min),
                    ],
                );
                format!("        -{}", body.get(9..).unwrap_or(" {}\n"))
            })
    }

    fn stream(wild: bool) -> impl Strategy<Value = String> {
        (
            word("[a-z][a-z0-9_.-]{0,20}", wild),
            (
                proptest::option::of(number(1..20, wild)),
                proptest::option::of(number(20..300, wild)),
                proptest::option::weighted(0.3, number(1..10, wild)),
                proptest::option::weighted(0.4, duration(in_units(0..30, &["s", "m"]), wild)),
            ),
            proptest::option::weighted(0.8, direction(true, wild)),
            proptest::option::weighted(0.8, direction(false, wild)),
            proptest::collection::vec(budget(wild), 0..3),
            proptest::collection::vec(
                (
                    word("[a-z]{1,12}", wild),
                    word("[a-z][a-z0-9_.-]{2,20}", wild),
                ),
                0..2,
            ),
        )
            .prop_map(
                |(name, (min, max, ops, delay), split, merge, budgets, groups)| {
                    let mut out = format!("    - name: {name}\n");
                    out += &fields(
                        6,
                        vec![
                            ("minShards", min),
                            ("maxShards", max),
                            ("maxOperationsPerCycle", ops),
                            ("metricsDelay", delay.map(|d| q(&d))),
                        ],
                    );
                    if let Some(split) = split {
                        out += &format!("      split:\n{split}");
                    }
                    if let Some(merge) = merge {
                        out += &format!("      merge:\n{merge}");
                    }
                    if !budgets.is_empty() {
                        out += "      budgets:\n";
                        out += &budgets.concat();
                    }
                    if !groups.is_empty() {
                        out += "      consumerGroups:\n";
                        for (g, t) in groups {
                            out += &format!("        - name: {g}\n          leaseTable: {t}\n");
                        }
                    }
                    out
                },
            )
    }

    fn policy(wild: bool) -> impl Strategy<Value = String> {
        let interval = prop_oneof![
            in_units(10..3600, &["s"]),
            in_units(1..60, &["m"]),
            Just("1h".to_string()).boxed(),
        ];
        (
            proptest::option::weighted(0.7, duration(interval.boxed(), wild)),
            proptest::collection::vec(stream(wild), usize::from(!wild)..3),
        )
            .prop_map(|(interval, streams)| {
                let mut out =
                    String::from("apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n");
                if let Some(d) = interval {
                    out += &format!("  evaluationInterval: {}\n", q(&d));
                }
                out += "  streams:\n";
                if streams.is_empty() {
                    out += "    []\n";
                }
                out += &streams.concat();
                out
            })
    }

    /// A whole policy file as YAML text.
    pub fn policy_text() -> impl Strategy<Value = String> {
        any::<bool>().prop_flat_map(policy)
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: cases(1000),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Whatever the policy says, loading it never panics, and what loads can be planned with at
    /// any instant without panicking either.
    #[test]
    fn structured_policies_never_panic(text in structured::policy_text(),
                                       now in proptest::prelude::any::<i64>(),
                                       near in proptest::prelude::any::<bool>()) {
        use chrono::{DateTime, TimeDelta, Utc};
        use shardctl_policies::{Snapshot, budget, plan};
        let policy = match load_policy(&text, "fuzz.yaml") {
            Ok(p) => p,
            Err(e) => {
                if std::env::var_os("FUZZ_STATS").is_some() {
                    eprintln!("ERR {}", e.issues[0].message.chars().take(60).collect::<String>());
                }
                return Ok(());
            }
        };
        if std::env::var_os("FUZZ_STATS").is_some() {
            eprintln!("STATS valid");
        }
        let snapshot: Snapshot =
            serde_json::from_str(include_str!("../examples/snapshots/telecom-hot-org.json")).unwrap();
        let observed = snapshot.observation.observed_at;
        let now = if near {
            observed + TimeDelta::minutes(now % (60 * 24 * 400))
        } else {
            let (min, max) = (DateTime::<Utc>::MIN_UTC.timestamp(), DateTime::<Utc>::MAX_UTC.timestamp());
            DateTime::<Utc>::from_timestamp(min + now.rem_euclid(max - min), 0).unwrap_or(observed)
        };
        for stream in &policy.spec.streams {
            let _ = stream.lookback();
            let _ = budget::evaluate(&stream.budgets, now);
            let mut obs = snapshot.observation.clone();
            obs.stream_name = stream.name.clone();
            let decision = plan(stream, &obs, &snapshot.history, now).unwrap();
            for op in &decision.operations {
                let _ = op.to_string();
            }
            for held in &decision.held {
                let _ = held.to_string();
            }
            serde_json::to_string(&decision).unwrap();
        }
    }
}
