//! The `shardctl` binary against the emulators: the live `plan`, `run --dry-run --once` and
//! `observe` print what they would do and change nothing.
#![allow(clippy::unwrap_used)]

use crate::support::*;
use shardctl_controller::backend::Kinesis;
use std::process::Command;

fn shardctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_plan_dry_run_and_observe_change_nothing() {
    let c = clients().await;
    let stream = unique("clilive");
    create_stream(&c.kinesis, &stream, 2).await;
    let table = unique("state");
    let (svc, _) = services(&table).await;
    let before = svc.kinesis.list_shards(&stream).await.unwrap();
    put_utilization(&c, &stream, &before[1].shard_id, 96.0, 20.0, 12, &[]).await;
    let dir = temp_dir("clilive");
    let policy = write_policy(
        &dir,
        &format!(
            "apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n  streams:\n    - name: {stream}\n      metricsDelay: 1m\n      split:\n        stabilizationWindow: 3m\n"
        ),
    );
    let p = policy.to_str().unwrap();

    let (code, out, err) = shardctl(&["plan", "--policy", p, "--state-table", &table]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SPLIT at 75.000% (50/50)"), "{out}");
    assert!(out.contains(&before[1].shard_id), "{out}");

    let (code, out, err) = shardctl(&[
        "plan",
        "--policy",
        p,
        "--state-table",
        &table,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["operations"][0]["action"], "split");

    let (code, out, err) = shardctl(&[
        "run",
        "--policy",
        p,
        "--state-table",
        &table,
        "--dry-run",
        "--once",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[dry-run]") && out.contains(&before[1].shard_id),
        "{out}"
    );

    let snapshot = dir.join("snapshot.json");
    let (code, _, err) = shardctl(&[
        "observe",
        "--stream",
        &stream,
        "--policy",
        p,
        "--state-table",
        &table,
        "--output",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = shardctl(&[
        "plan",
        "--policy",
        p,
        "--snapshot",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("SPLIT at 75.000% (50/50)"),
        "the snapshot replays the same plan: {out}"
    );

    assert_eq!(
        svc.kinesis.list_shards(&stream).await.unwrap(),
        before,
        "nothing changed"
    );
    assert!(
        !table_exists(&c, &table).await,
        "read-only commands never create the state table"
    );

    // A stream that does not exist is a clear error, and the exit code says so.
    let (code, _, err) = shardctl(&["observe", "--stream", &unique("nope")]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
}
