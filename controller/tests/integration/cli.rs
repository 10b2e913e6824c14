//! The `shardctl` binary's offline commands, run as a user would.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn shardctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const POLICY: &str = "policies/examples/telecom-org-events.yaml";
const SNAPSHOT: &str = "policies/examples/snapshots/telecom-hot-org.json";

#[test]
fn validate_accepts_the_examples() {
    let out = shardctl(&[
        "validate",
        POLICY,
        "policies/examples/night-merge-only.yaml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (1 streams: org-events)"));
}

#[test]
fn validate_reports_every_bad_file_with_a_location_and_fails() {
    let dir = std::env::temp_dir().join(format!("shardctl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n  streams:\n    - name: a\n      minShards: 9\n      maxShards: 3\n",
    )
    .unwrap();
    let missing = dir.join("missing.yaml");
    let out = shardctl(&[
        "validate",
        bad.to_str().unwrap(),
        missing.to_str().unwrap(),
        POLICY,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.yaml:7:18: spec.streams[0].maxShards"),
        "{err}"
    );
    assert!(err.contains("cannot read policy file"), "{err}");
    assert!(
        text(&out.stdout).contains("org-events"),
        "good files are still checked"
    );
}

#[test]
fn plan_prints_a_table_with_operations_and_reasons() {
    let out = shardctl(&["plan", "--policy", POLICY, "--snapshot", SNAPSHOT]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("SPLIT at 65.500% (34/66)"), "{table}");
    assert!(
        table.contains("waiting for group billing to drain shardId-000000000003"),
        "{table}"
    );
    assert!(
        table.contains("budget business-hours allows 0 per cycle until 18:00"),
        "{table}"
    );
    assert!(table.contains("planned operations (1)"), "{table}");
}

#[test]
fn plan_json_is_machine_readable_and_now_moves_the_budget() {
    let out = shardctl(&[
        "plan",
        "--policy",
        POLICY,
        "--snapshot",
        SNAPSHOT,
        "--output",
        "json",
        "--now",
        "2026-11-02T19:00:00Z",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let d: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(d["evaluatedAt"], "2026-11-02T19:00:00Z");
    // Five hours later the metrics are stale: nothing is known, so nothing is planned.
    assert_eq!(d["operations"].as_array().unwrap().len(), 0);
    assert!(
        d["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "unknown")
    );
}

#[test]
fn schema_matches_the_committed_file() {
    let out = shardctl(&["schema"]);
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(repo().join("policies/schema/policy.schema.json")).unwrap();
    assert_eq!(text(&out.stdout), committed);
}

#[test]
fn plan_errors_are_clear() {
    let dir = std::env::temp_dir().join(format!("shardctl-cli-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.json");
    std::fs::write(
        &broken,
        "{\n  \"apiVersion\": \"shardctl.io/v1alpha1\",\n  \"kind\": \"StreamSnapshot\"\n}\n",
    )
    .unwrap();
    let out = shardctl(&[
        "plan",
        "--policy",
        POLICY,
        "--snapshot",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("broken.json:4:1: not a valid snapshot: missing field `observation`"),
        "{err}"
    );

    let out = shardctl(&[
        "plan",
        "--policy",
        "policies/examples/night-merge-only.yaml",
        "--snapshot",
        SNAPSHOT,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has no policy for stream `org-events` (it manages: audit-log)")
    );

    let out = shardctl(&[
        "plan",
        "--policy",
        POLICY,
        "--snapshot",
        SNAPSHOT,
        "--now",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    assert!(text(&out.stderr).contains("--now"));
}

#[test]
fn extreme_durations_and_instants_are_errors_or_plans_never_panics() {
    // `evaluationInterval: 1000000y` used to validate and then panic the controller.
    let dir = std::env::temp_dir().join(format!("shardctl-cli-extreme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let eons = dir.join("eons.yaml");
    std::fs::write(
        &eons,
        "apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n  evaluationInterval: 1000000y\n  streams:\n    - name: a\n",
    )
    .unwrap();
    let out = shardctl(&["validate", eons.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("eons.yaml:4:23: spec.evaluationInterval"),
        "{}",
        text(&out.stderr)
    );

    for now in ["+262142-12-31T23:59:59Z", "-262143-01-01T00:00:00Z"] {
        let out = shardctl(&[
            "plan",
            "--policy",
            POLICY,
            "--snapshot",
            SNAPSHOT,
            &format!("--now={now}"),
            "--output",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{now}: {}", text(&out.stderr));
    }

    let out = shardctl(&["run", "--simulate", "--duration", "1000000y"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("reaches past the end of the calendar"),
        "{}",
        text(&out.stderr)
    );
}
