//! shardctl against a real KCL v3 fleet: kcl-rs (PyPI, a Rust port of the Java KCL 3.x with the
//! same DynamoDB lease schema and algorithms), run by `tests/kcl/fleet.py` with the interpreter
//! `scripts/emulators.sh` installs (`$SHARDCTL_PYTHON`).
//!
//! The fleet consumes a stream that the real `shardctl run` splits; the test then waits for the
//! fleet's own lease cleanup (KCL's LeaseCleanupManager) to delete the finished parent's lease,
//! and checks that `shardctl plan` still splits a hot child instead of holding it forever
//! ("waiting for group ... to drain ... (no lease for it yet)" froze every lineage before).
//!
//! Needs the emulators (`scripts/test.sh` starts them). Takes about as long as kcl-rs's lease
//! cleanup (about 5-6 minutes with its defaults).
//!
//! Longer than 500 lines by choice: driving a foreign fleet (its process, its table, its cleanup)
//! takes set-up no other test needs; the shared emulator helpers live in `shardctl-test-support`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use shardctl_test_support::{
    Clients, ShardMinute, clients, create_stream, eventually_every, is_open, list_shards,
    peer_python, put_shard_metrics, repo_root, shardctl_binary, shardctl_run, temp_dir, unique,
    unix_minute, wait_active, write_policy,
};

/// How often the test polls.
const POLL: Duration = Duration::from_millis(500);

/// One kcl-rs worker; killed when dropped.
struct KclWorker(Child);

impl Drop for KclWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kcl_worker(stream: &str, app: &str, id: &str, out: &Path, log: &Path) -> KclWorker {
    let child = Command::new(peer_python())
        .arg(repo_root().join("tests/kcl/fleet.py"))
        .args(["--stream", stream, "--app", app, "--worker-id", id])
        .arg("--out")
        .arg(out)
        .args([
            "--initial-position",
            "TRIM_HORIZON",
            "--retrieval",
            "POLLING",
        ])
        .args(["--shard-sync-interval-millis", "2000"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    KclWorker(child)
}

/// Two kcl-rs workers on `app`, once one of them took a lease (kcl-rs waits up to 30 s while
/// the table is empty, then one shard sync).
async fn start_fleet(stream: &str, app: &str, out: &Path, dir: &Path) -> [KclWorker; 2] {
    let fleet = [
        kcl_worker(stream, app, "kcl-1", out, &dir.join("kcl-1.log")),
        kcl_worker(stream, app, "kcl-2", out, &dir.join("kcl-2.log")),
    ];
    eventually_every(
        "the KCL fleet to take a lease",
        Duration::from_secs(120),
        POLL,
        async || {
            fleet_lines(out)
                .iter()
                .any(|l| l["event"] == "initialized")
                .then_some(())
        },
    )
    .await;
    fleet
}

/// The fleet's output lines.
fn fleet_lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn open_shards(
    k: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<aws_sdk_kinesis::types::Shard> {
    let shards = list_shards(k, stream).await.unwrap();
    shards.into_iter().filter(is_open).collect()
}

/// Publishes a hot shard's metrics (92 % of the record limit) over the last `minutes` minutes.
async fn publish_hot(cw: &aws_sdk_cloudwatch::Client, stream: &str, shard: &str, minutes: i64) {
    publish(cw, stream, shard, minutes, 55_000.0).await;
}

/// Publishes `records` IncomingRecords (and 100 bytes each) per minute for `shard` over the last
/// `minutes` minutes and the current one (the emulators publish no shard-level metrics; only the
/// test harness writes `AWS/Kinesis`).
async fn publish(
    cw: &aws_sdk_cloudwatch::Client,
    stream: &str,
    shard: &str,
    minutes: i64,
    records: f64,
) {
    let now = unix_minute(chrono::Utc::now());
    let data: Vec<ShardMinute> = (now - minutes..=now)
        .map(|minute| ShardMinute {
            shard: shard.to_string(),
            minute,
            records,
            bytes: records * 100.0,
        })
        .collect();
    put_shard_metrics(cw, stream, &data).await.unwrap();
}

async fn produce(k: &aws_sdk_kinesis::Client, stream: &str, round: u64, keys: usize) {
    let entries = (0..keys)
        .map(|i| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key(format!("org-{i}"))
                .data(Blob::new(format!("org-{i}:{round}")))
                .build()
                .unwrap()
        })
        .collect();
    let out = k
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
}

/// Per key, the rounds the fleet processed, in processing order (replays after a lease move
/// repeat a round and are dropped here: the first delivery counts).
fn per_key_rounds(lines: &[serde_json::Value]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for l in lines.iter().filter(|l| l.get("data").is_some()) {
        let seq = l["seq"].as_str().unwrap_or_default().to_string();
        if !seen.insert(seq) {
            continue;
        }
        let data = l["data"].as_str().unwrap_or_default();
        let (key, round) = data.split_once(':').unwrap();
        out.entry(key.to_string())
            .or_default()
            .push(round.parse().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kcl_fleet_s_lease_cleanup_does_not_freeze_resharding() {
    let Clients {
        kinesis,
        cloudwatch,
        dynamodb,
    } = clients().await;
    let stream = unique("kclfleet");
    let app = unique("kclapp");
    let state = unique("state");
    let dir = temp_dir("kcl-fleet");
    create_stream(&kinesis, &stream, 1).await;

    // A real KCL fleet of two workers, started before the first reshard (kcl-rs cannot initialise
    // on a stream with closed shards against kinesis-local).
    let out = dir.join("fleet.jsonl");
    let _fleet = start_fleet(&stream, &app, &out, &dir).await;
    const KEYS: usize = 8;
    let mut round = 0;
    for _ in 0..5 {
        produce(&kinesis, &stream, round, KEYS).await;
        round += 1;
    }

    // shardctl splits the hot shard (the real binary, once).
    let parent = open_shards(&kinesis, &stream).await.remove(0);
    let parent_id = parent.shard_id().to_string();
    publish_hot(&cloudwatch, &stream, &parent_id, 4).await;
    let policy = write_policy(
        &dir,
        &format!(
            "apiVersion: shardctl.io/v1alpha1
kind: ScalingPolicy
spec:
  evaluationInterval: 10s
  streams:
    - name: {stream}
      maxShards: 8
      metricsDelay: 0s
      split:
        stabilizationWindow: 2m
      merge:
        selectPolicy: Disabled
      consumerGroups:
        - name: kclapp
          leaseTable: {app}
"
        ),
    );
    let run = Command::new(shardctl_binary())
        .args(["run", "--once", "--policy"])
        .arg(&policy)
        .args(["--state-table", &state, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let children = eventually_every("the split", Duration::from_secs(60), POLL, async || {
        let open = open_shards(&kinesis, &stream).await;
        (open.len() == 2).then_some(open)
    })
    .await;
    for _ in 0..5 {
        produce(&kinesis, &stream, round, KEYS).await;
        round += 1;
    }

    // KCL reads the parent to its end, the children after it, and its lease cleanup deletes
    // the parent's lease once both children progressed.
    let started = Instant::now();
    eventually_every(
        "kcl-rs's lease cleanup to delete the finished parent",
        Duration::from_secs(600),
        POLL,
        async || {
            let row = dynamodb
                .get_item()
                .table_name(&app)
                .key("leaseKey", AttributeValue::S(parent_id.clone()))
                .consistent_read(true)
                .send()
                .await
                .ok()?;
            row.item().is_none().then_some(())
        },
    )
    .await;
    println!(
        "kcl-rs deleted the finished parent's lease {:.0} s after the split",
        started.elapsed().as_secs_f64()
    );

    // Every record processed, in order per key.
    let rounds = per_key_rounds(&fleet_lines(&out));
    for i in 0..KEYS {
        let got = rounds.get(&format!("org-{i}")).cloned().unwrap_or_default();
        assert_eq!(got, (0..round).collect::<Vec<_>>(), "org-{i}: {got:?}");
    }

    // A hot child: `shardctl plan` splits it (before the fix: held for the parent's retention).
    let hot = children[0].shard_id().to_string();
    publish_hot(&cloudwatch, &stream, &hot, 4).await;
    let plan = Command::new(shardctl_binary())
        .args(["plan", "--output", "json", "--policy"])
        .arg(&policy)
        .args(["--stream", &stream, "--state-table", &state])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let decision: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("plan output is not one JSON decision ({e}): {stdout}"));
    let operations = decision["operations"].to_string();
    assert!(
        operations.contains(&hot),
        "the hot child {hot} is not split: {stdout}"
    );
}

/// What the shardctl-consumer phase processed: (key, round) in processing order per shard.
#[derive(Default)]
struct Ours(std::sync::Mutex<Vec<(String, u64)>>);

struct OursProcessor(std::sync::Arc<Ours>);

impl shardctl_consumer::processor::ShardProcessor for OursProcessor {
    async fn initialize(&mut self, _: shardctl_consumer::processor::InitInput) {}

    async fn process_records(
        &mut self,
        batch: shardctl_consumer::processor::RecordBatch,
        checkpointer: &shardctl_consumer::processor::Checkpointer,
    ) {
        {
            let mut log = self.0.0.lock().unwrap();
            for r in &batch.records {
                let text = String::from_utf8_lossy(&r.data).into_owned();
                let (key, round) = text.split_once(':').unwrap();
                log.push((key.to_string(), round.parse().unwrap()));
            }
        }
        checkpointer.checkpoint().await.unwrap();
    }

    async fn shard_ended(&mut self, checkpointer: &shardctl_consumer::processor::Checkpointer) {
        checkpointer.checkpoint_shard_end().await.unwrap();
    }
}

fn terminate(worker: &mut KclWorker) {
    let _ = Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = worker.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("kcl-rs worker did not stop within 60 s of SIGTERM");
}

/// Migration and rollback on one lease table, across a split: a kcl-rs fleet consumes, stops;
/// shardctl-consumer resumes at every KCL checkpoint (through the split KCL never saw the end
/// of), stops; kcl-rs resumes from the table shardctl-consumer wrote. Nothing lost, nothing
/// before a checkpoint replayed, per-key order kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcl_and_shardctl_consumer_take_over_from_each_other_on_one_table() {
    let Clients {
        kinesis, dynamodb, ..
    } = clients().await;
    let stream = unique("migrate");
    let app = unique("migrate-app");
    let dir = temp_dir("kcl-migrate");
    create_stream(&kinesis, &stream, 1).await;
    const KEYS: usize = 6;
    let kcl_rounds = |out: &Path| -> usize {
        per_key_rounds(&fleet_lines(out))
            .values()
            .map(Vec::len)
            .min()
            .unwrap_or(0)
    };

    // 1. KCL consumes rounds 0..5, then stops.
    let out1 = dir.join("kcl-before.jsonl");
    let mut kcl = kcl_worker(&stream, &app, "kcl-1", &out1, &dir.join("kcl-1.log"));
    for round in 0..5 {
        produce(&kinesis, &stream, round, KEYS).await;
    }
    eventually_every(
        "KCL to process rounds 0..5",
        Duration::from_secs(180),
        POLL,
        async || {
            (per_key_rounds(&fleet_lines(&out1)).len() == KEYS && kcl_rounds(&out1) >= 5)
                .then_some(())
        },
    )
    .await;
    terminate(&mut kcl);

    // 2. The shard is split while nobody consumes; shardctl-consumer takes over the table.
    let parent = open_shards(&kinesis, &stream).await.remove(0);
    let start: u128 = parent
        .hash_key_range()
        .unwrap()
        .starting_hash_key()
        .parse()
        .unwrap();
    let end: u128 = parent
        .hash_key_range()
        .unwrap()
        .ending_hash_key()
        .parse()
        .unwrap();
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(parent.shard_id())
        .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, &stream).await;
    for round in 5..10 {
        produce(&kinesis, &stream, round, KEYS).await;
    }
    let ours = std::sync::Arc::new(Ours::default());
    let worker = {
        let ours = ours.clone();
        shardctl_consumer::Worker::start(
            shardctl_consumer::WorkerConfig::new(&stream, &app)
                .with_worker_id("shardctl-1")
                .with_failover(Duration::from_secs(10))
                .with_idle_poll_interval(Duration::from_millis(200))
                .with_shard_sync_interval(Duration::from_secs(2)),
            kinesis.clone(),
            dynamodb.clone(),
            move |_: &str| OursProcessor(ours.clone()),
        )
        .await
        .unwrap()
    };
    for round in 10..15 {
        produce(&kinesis, &stream, round, KEYS).await;
    }
    eventually_every(
        "shardctl-consumer to process rounds 5..15",
        Duration::from_secs(120),
        POLL,
        async || {
            let n = ours.0.lock().unwrap().len();
            (n >= 10 * KEYS).then_some(())
        },
    )
    .await;
    worker.shutdown().await;

    // 3. Rollback: KCL resumes from the table shardctl-consumer wrote.
    let out2 = dir.join("kcl-after.jsonl");
    let _kcl = kcl_worker(&stream, &app, "kcl-2", &out2, &dir.join("kcl-2.log"));
    for round in 15..20 {
        produce(&kinesis, &stream, round, KEYS).await;
    }
    eventually_every(
        "KCL to process rounds 15..20 again",
        Duration::from_secs(240),
        POLL,
        async || {
            (per_key_rounds(&fleet_lines(&out2)).len() == KEYS && kcl_rounds(&out2) >= 5)
                .then_some(())
        },
    )
    .await;

    // Every key: KCL's rounds, then ours, then KCL's again, exactly 0..20, nothing twice.
    let before = per_key_rounds(&fleet_lines(&out1));
    let after = per_key_rounds(&fleet_lines(&out2));
    let mut middle: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (k, r) in ours.0.lock().unwrap().iter() {
        middle.entry(k.clone()).or_default().push(*r);
    }
    for i in 0..KEYS {
        let key = format!("org-{i}");
        let phases = [&before, &middle, &after].map(|p| p.get(&key).cloned().unwrap_or_default());
        let all: Vec<u64> = phases.iter().flatten().copied().collect();
        assert_eq!(
            all,
            (0..20).collect::<Vec<_>>(),
            "{key}: KCL {:?}, shardctl-consumer {:?}, KCL again {:?}",
            phases[0],
            phases[1],
            phases[2]
        );
    }
}

/// `shardctl run` (the real daemon, two replicas sharing the leader lease) splits a hot shard and
/// merges the cold children back while a kcl-rs fleet consumes under steady production: the gate
/// reads the KCL fleet's table, and nothing is lost or reordered per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shardctl_run_splits_and_merges_under_a_kcl_fleet_without_losing_order() {
    let Clients {
        kinesis,
        cloudwatch,
        ..
    } = clients().await;
    let stream = unique("kclrun");
    let app = unique("kclrun-app");
    let state = unique("state");
    let dir = temp_dir("kcl-run");
    create_stream(&kinesis, &stream, 1).await;
    let out = dir.join("fleet.jsonl");
    let _fleet = start_fleet(&stream, &app, &out, &dir).await;

    // Steady production: a round of one record per key every 300 ms.
    const KEYS: usize = 8;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (kinesis, stream, stop) = (kinesis.clone(), stream.clone(), stop.clone());
        tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                produce(&kinesis, &stream, round, KEYS).await;
                round += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            round
        })
    };

    let policy = write_policy(
        &dir,
        &format!(
            "apiVersion: shardctl.io/v1alpha1
kind: ScalingPolicy
spec:
  evaluationInterval: 10s
  streams:
    - name: {stream}
      minShards: 1
      maxShards: 4
      metricsDelay: 0s
      split:
        stabilizationWindow: 2m
        cooldown: 0s
      merge:
        threshold: {{incomingBytes: 30, incomingRecords: 30}}
        stabilizationWindow: 2m
        cooldown: 0s
      consumerGroups:
        - name: kclapp
          leaseTable: {app}
"
        ),
    );
    let daemons: Vec<KclWorker> = ["a", "b"]
        .iter()
        .map(|id| {
            KclWorker(
                shardctl_run(
                    &shardctl_binary(),
                    &policy,
                    &state,
                    id,
                    Duration::from_secs(3),
                    0,
                )
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("shardctl-{id}.log"))).unwrap())
                .spawn()
                .unwrap(),
            )
        })
        .collect();
    let mut daemons = daemons;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (d, id) in daemons.iter_mut().zip(["a", "b"]) {
        if let Ok(Some(status)) = d.0.try_wait() {
            let log =
                std::fs::read_to_string(dir.join(format!("shardctl-{id}.log"))).unwrap_or_default();
            panic!("shardctl run {id} exited ({status}): {log}");
        }
    }

    // Hot: split.
    let parent = open_shards(&kinesis, &stream).await.remove(0);
    publish_hot(&cloudwatch, &stream, parent.shard_id(), 4).await;
    let children = eventually_every(
        "shardctl run to split the hot shard",
        Duration::from_secs(90),
        POLL,
        async || {
            let open = open_shards(&kinesis, &stream).await;
            (open.len() == 2).then_some(open)
        },
    )
    .await;
    // Cold children: merged back once KCL has read the parent to its end.
    for c in &children {
        publish(&cloudwatch, &stream, c.shard_id(), 4, 10.0).await;
    }
    let merged = eventually_every(
        "shardctl run to merge the cold children",
        Duration::from_secs(120),
        POLL,
        async || {
            let open = open_shards(&kinesis, &stream).await;
            (open.len() == 1 && open[0].adjacent_parent_shard_id().is_some()).then_some(open)
        },
    )
    .await;
    // A few more rounds go to the merged child.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = producer.await.unwrap();
    drop(daemons);

    eventually_every(
        "KCL to process every record",
        Duration::from_secs(180),
        POLL,
        async || {
            let got = per_key_rounds(&fleet_lines(&out));
            (got.len() == KEYS && got.values().all(|r| r.len() as u64 >= rounds)).then_some(())
        },
    )
    .await;
    let got = per_key_rounds(&fleet_lines(&out));
    for (key, r) in &got {
        assert_eq!(r, &(0..rounds).collect::<Vec<_>>(), "{key}");
    }
    // The merged child was read only after both parents ended.
    let lines = fleet_lines(&out);
    let first = |shard: &str, event: &str| {
        lines
            .iter()
            .filter(|l| {
                l["shard"] == shard
                    && (event.is_empty() && l.get("data").is_some() || l["event"] == event)
            })
            .filter_map(|l| l["t"].as_f64())
            .fold(f64::INFINITY, f64::min)
    };
    let merged_first = first(merged[0].shard_id(), "");
    assert!(
        merged_first.is_finite(),
        "nothing was read from the merged child"
    );
    for c in &children {
        let ended = first(c.shard_id(), "shard_ended");
        assert!(
            ended <= merged_first,
            "{} ended at {ended}, merged child read from {merged_first}",
            c.shard_id()
        );
    }
    println!("{rounds} rounds x {KEYS} keys through a split and a merge, in order");
}
