//! The whole system against the emulators: a producer writes org-keyed events and one
//! organisation surges; two `shardctl run` processes (the real binary, a real policy file) share
//! the leader lease; a fleet of `shardctl-consumer` workers processes everything in order per
//! organisation. The consumers are paused during the surge, so the drain gate must hold the
//! second split until they have read the parent to its end; the leading controller is killed
//! and the standby finishes the job.
//!
//! Prints: records lost, order violations, time from surge to split, time from split to child
//! processing, controller failover. Shard-level metrics are published by the harness from what
//! the producer wrote (no emulator publishes them), per minute, as CloudWatch would.
//!
//! Longer than 500 lines by choice: one scenario, from producer to controller failover, with the
//! harness that publishes the metrics and the analysis of what the consumers saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Timelike, Utc};
use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::producer::{Event, Producer, event_payload};
use shardctl_consumer::{Worker, WorkerConfig};
use shardctl_policies::key_sample::hash_key_of;
use shardctl_test_support::{
    Clients, ShardMinute, create_stream, eventually_every, is_open, list_shards, put_shard_metrics,
    require_emulators, sdk_config, shardctl_binary, shardctl_run, temp_dir, unique, unix_minute,
    write_policy,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ORGS: usize = 20;
const SURGE_PER_SECOND: usize = 60;

/// How often the test polls.
const POLL: Duration = Duration::from_millis(250);

/// What the consumer fleet processed, in order.
#[derive(Default)]
struct Processed {
    /// (organisation, sequence) in the order each shard's processor saw them, with the shard.
    log: Mutex<Vec<(String, u64, String)>>,
    /// When each shard delivered its first record.
    first_record: Mutex<HashMap<String, Instant>>,
}

struct OrgProcessor {
    shard: String,
    processed: Arc<Processed>,
}

impl ShardProcessor for OrgProcessor {
    async fn initialize(&mut self, _: InitInput) {}

    async fn process_records(&mut self, batch: RecordBatch, checkpointer: &Checkpointer) {
        {
            let mut log = self.processed.log.lock().unwrap();
            for r in &batch.records {
                let seq: u64 = String::from_utf8_lossy(event_payload(&r.data))
                    .parse()
                    .unwrap();
                log.push((r.partition_key.clone(), seq, self.shard.clone()));
            }
        }
        if !batch.records.is_empty() {
            self.processed
                .first_record
                .lock()
                .unwrap()
                .entry(self.shard.clone())
                .or_insert_with(Instant::now);
        }
        let _ = checkpointer.checkpoint().await;
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) {
        checkpointer
            .checkpoint_shard_end()
            .await
            .expect("SHARD_END checkpoint");
    }
}

/// Open shards as (id, start, end), refreshed by a task.
type ShardRanges = Arc<Mutex<Vec<(String, u128, u128)>>>;

async fn open_ranges(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, u128, u128)> {
    list_shards(kinesis, stream)
        .await
        .unwrap()
        .iter()
        .filter(|s| is_open(s))
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (
                s.shard_id().to_string(),
                r.starting_hash_key().parse().unwrap(),
                r.ending_hash_key().parse().unwrap(),
            )
        })
        .collect()
}

async fn all_shards(aws: &Clients, stream: &str) -> Vec<aws_sdk_kinesis::types::Shard> {
    list_shards(&aws.kinesis, stream).await.unwrap()
}

/// Per-minute, per-shard (records, bytes) of what the producer wrote.
type Traffic = Arc<Mutex<BTreeMap<(i64, String), (f64, f64)>>>;

async fn publish_minute(
    aws: &Clients,
    stream: &str,
    minute: i64,
    traffic: &Traffic,
    ranges: &ShardRanges,
) {
    let open: Vec<String> = ranges.lock().unwrap().iter().map(|r| r.0.clone()).collect();
    let data: Vec<ShardMinute> = {
        let t = traffic.lock().unwrap();
        let mut ids: BTreeSet<String> = open.into_iter().collect();
        ids.extend(
            t.keys()
                .filter(|(m, _)| *m == minute)
                .map(|(_, s)| s.clone()),
        );
        ids.into_iter()
            .map(|shard| {
                let (records, bytes) = t
                    .get(&(minute, shard.clone()))
                    .copied()
                    .unwrap_or((0.0, 0.0));
                ShardMinute {
                    shard,
                    minute,
                    records,
                    bytes,
                }
            })
            .collect()
    };
    put_shard_metrics(&aws.cloudwatch, stream, &data)
        .await
        .unwrap();
}

fn controller(bin: &Path, policy: &Path, table: &str, identity: &str, log: &Path) -> Child {
    shardctl_run(bin, policy, table, identity, Duration::from_secs(3), 0)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn start_fleet(
    aws: &Clients,
    stream: &str,
    leases: &str,
    processed: &Arc<Processed>,
    round: usize,
) -> Vec<Worker> {
    let mut fleet = Vec::new();
    for i in 0..3 {
        let config = WorkerConfig::new(stream, leases)
            .with_worker_id(format!("worker-{round}-{i}"))
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(200))
            .with_shard_sync_interval(Duration::from_secs(1));
        let p = processed.clone();
        let factory = move |shard: &str| OrgProcessor {
            shard: shard.to_string(),
            processed: p.clone(),
        };
        fleet.push(
            Worker::start(config, aws.kinesis.clone(), aws.dynamodb.clone(), factory)
                .await
                .expect("worker starts"),
        );
    }
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_surging_organisation_is_split_out_while_every_organisation_stays_in_order() {
    require_emulators();
    let bin = shardctl_binary();
    let config = sdk_config().await;
    let aws = Clients::new(&config);
    let stream = unique("orgs");
    let leases = unique("billing");
    let state = unique("state");
    create_stream(&aws.kinesis, &stream, 2).await;

    // The policy: records are the hot metric here (3 % of 1,000/s); the surging organisation
    // writes 6 %, everyone else together 2 % spread over the shards.
    let dir = temp_dir("whole-system");
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
      maxOperationsPerCycle: 1
      metricsDelay: 0s
      split:
        threshold: {{incomingBytes: 90, incomingRecords: 3}}
        stabilizationWindow: 1m
        splitPoint: trafficWeighted
      merge:
        threshold: {{incomingBytes: 1, incomingRecords: 1}}
        selectPolicy: Disabled
      consumerGroups:
        - name: billing
          leaseTable: {leases}
"
        ),
    );

    let processed = Arc::new(Processed::default());
    let mut fleet = start_fleet(&aws, &stream, &leases, &processed, 0).await;

    // Routing of the harness' metrics follows the live shard map.
    let ranges: ShardRanges = Arc::new(Mutex::new(open_ranges(&aws.kinesis, &stream).await));
    let traffic: Traffic = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let surge = Arc::new(AtomicBool::new(false));
    let produced: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();

    let refresher = {
        let (kinesis, stream, ranges, stop) = (
            aws.kinesis.clone(),
            stream.clone(),
            ranges.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = open_ranges(&kinesis, &stream).await;
                *ranges.lock().unwrap() = r;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let producer_task = {
        let producer = Producer::new(aws.kinesis.clone(), stream.clone());
        let (traffic, ranges, stop, surge, produced) = (
            traffic.clone(),
            ranges.clone(),
            stop.clone(),
            surge.clone(),
            produced.clone(),
        );
        tokio::spawn(async move {
            let mut seq: HashMap<String, u64> = HashMap::new();
            // Rate-based: however long a `PutRecords` takes, each organisation writes one event per
            // second and `acme` SURGE_PER_SECOND during the surge.
            let started = Instant::now();
            let (mut org_sent, mut surge_sent, mut surge_started) = (0u64, 0u64, None::<Instant>);
            while !stop.load(Ordering::Relaxed) {
                let mut keys: Vec<String> = Vec::new();
                let org_due = started.elapsed().as_secs_f64() as u64 * ORGS as u64;
                while org_sent < org_due {
                    keys.push(format!("org-{:02}", org_sent % ORGS as u64));
                    org_sent += 1;
                }
                if surge.load(Ordering::Relaxed) {
                    let since = *surge_started.get_or_insert_with(Instant::now);
                    let due = (since.elapsed().as_secs_f64() * SURGE_PER_SECOND as f64) as u64;
                    while surge_sent < due {
                        keys.push("acme".to_string());
                        surge_sent += 1;
                    }
                }
                let now = Utc::now();
                let mut events = Vec::new();
                for k in keys {
                    let n = seq.entry(k.clone()).or_insert(0);
                    *n += 1;
                    let payload = n.to_string();
                    let hash = hash_key_of(&k);
                    let shard = ranges
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|r| r.1 <= hash && hash <= r.2)
                        .map(|r| r.0.clone());
                    if let Some(shard) = shard {
                        let mut t = traffic.lock().unwrap();
                        let e = t.entry((unix_minute(now), shard)).or_default();
                        e.0 += 1.0;
                        e.1 += (k.len() + payload.len() + 16) as f64;
                    }
                    produced.lock().unwrap().push((k.clone(), *n));
                    events.push(Event::new(k, payload));
                }
                if !events.is_empty() {
                    producer.send(events).await.expect("produce");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let publisher = {
        let (stream, traffic, ranges, stop) = (
            stream.clone(),
            traffic.clone(),
            ranges.clone(),
            stop.clone(),
        );
        let cfg = config.clone();
        tokio::spawn(async move {
            let aws = Clients::new(&cfg);
            let mut last = unix_minute(Utc::now());
            while !stop.load(Ordering::Relaxed) {
                let current = unix_minute(Utc::now());
                if current > last {
                    // The minute that just ended, one second after it ended.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    publish_minute(&aws, &stream, current - 1, &traffic, &ranges).await;
                    last = current;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let (log_a, log_b) = (dir.join("a.log"), dir.join("b.log"));
    let mut a = controller(&bin, &policy, &state, "replica-a", &log_a);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut b = controller(&bin, &policy, &state, "replica-b", &log_b);

    // The surge starts on a minute boundary, and the consumers stop (they lag).
    let boundary = 60 - Utc::now().second() as u64;
    tokio::time::sleep(Duration::from_secs(boundary)).await;
    surge.store(true, Ordering::Relaxed);
    let surge_at = Instant::now();
    for w in fleet.drain(..) {
        w.shutdown().await;
    }
    let hot_parent = {
        let h = hash_key_of("acme");
        ranges
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.1 <= h && h <= r.2)
            .unwrap()
            .0
            .clone()
    };

    // First split: the hot shard has no ancestors, so nothing holds it.
    let first_split = eventually_every(
        "the first split",
        Duration::from_secs(180),
        POLL,
        async || {
            let shards = all_shards(&aws, &stream).await;
            shards
                .iter()
                .any(|s| s.parent_shard_id() == Some(hot_parent.as_str()))
                .then(Instant::now)
        },
    )
    .await;
    let surge_to_split = first_split - surge_at;
    let acme_child = eventually_every(
        "acme's child shard",
        Duration::from_secs(10),
        POLL,
        async || {
            let h = hash_key_of("acme");
            let r = open_ranges(&aws.kinesis, &stream).await;
            r.iter().find(|r| r.1 <= h && h <= r.2).map(|r| r.0.clone())
        },
    )
    .await;

    // The child is hot too, but billing has not read the parent to its end: the gate holds.
    let held = eventually_every(
        "the drain gate to hold the child",
        Duration::from_secs(150),
        POLL,
        async || {
            let out = Command::new(&bin)
                .args(["plan", "--policy"])
                .arg(&policy)
                .args(["--state-table", &state])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains(&format!("waiting for group billing to drain {hot_parent}"))
                .then_some(text)
        },
    )
    .await;
    assert!(held.contains(&acme_child), "{held}");
    assert!(
        !all_shards(&aws, &stream)
            .await
            .iter()
            .any(|s| s.parent_shard_id() == Some(acme_child.as_str())),
        "the child must not be split while its parent is undrained"
    );

    // Kill the leading controller; the standby takes over.
    let leader_log = |p: &PathBuf| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .contains("became leader")
    };
    let (leader, standby_log) = if leader_log(&log_a) {
        (&mut a, &log_b)
    } else {
        (&mut b, &log_a)
    };
    leader.kill().unwrap();
    leader.wait().unwrap();
    let killed_at = Instant::now();
    let failover = eventually_every(
        "the standby to lead",
        Duration::from_secs(20),
        POLL,
        async || leader_log(standby_log).then(|| killed_at.elapsed()),
    )
    .await;

    // The consumers come back, drain the parent, and the standby splits the child.
    let resumed_at = Instant::now();
    let fleet = start_fleet(&aws, &stream, &leases, &processed, 1).await;
    let second_split = eventually_every(
        "the second split",
        Duration::from_secs(120),
        POLL,
        async || {
            let shards = all_shards(&aws, &stream).await;
            shards
                .iter()
                .any(|s| s.parent_shard_id() == Some(acme_child.as_str()))
                .then(Instant::now)
        },
    )
    .await;
    let grandchildren: Vec<String> = all_shards(&aws, &stream)
        .await
        .iter()
        .filter(|s| s.parent_shard_id() == Some(acme_child.as_str()))
        .map(|s| s.shard_id().to_string())
        .collect();
    let child_processing = eventually_every(
        "records from the new children",
        Duration::from_secs(60),
        POLL,
        async || {
            let first = processed.first_record.lock().unwrap();
            grandchildren
                .iter()
                .filter_map(|g| first.get(g))
                .min()
                .copied()
        },
    )
    .await;

    // Stop producing; everything produced must be processed.
    stop.store(true, Ordering::Relaxed);
    producer_task.await.unwrap();
    publisher.await.unwrap();
    refresher.await.unwrap();
    let expected: BTreeSet<(String, u64)> = produced.lock().unwrap().iter().cloned().collect();
    eventually_every(
        "every event to be processed",
        Duration::from_secs(90),
        POLL,
        async || {
            let seen: BTreeSet<(String, u64)> = processed
                .log
                .lock()
                .unwrap()
                .iter()
                .map(|(k, s, _)| (k.clone(), *s))
                .collect();
            expected.is_subset(&seen).then_some(())
        },
    )
    .await;
    for w in fleet {
        w.shutdown().await;
    }
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();

    let log = processed.log.lock().unwrap().clone();
    let seen: BTreeSet<(String, u64)> = log.iter().map(|(k, s, _)| (k.clone(), *s)).collect();
    let lost = expected.difference(&seen).count();
    // Per organisation, in processing order: an event older than one already processed is a
    // duplicate if it was processed before, and an order violation if it was not.
    let mut max: HashMap<&str, u64> = HashMap::new();
    let mut done: BTreeSet<(&str, u64)> = BTreeSet::new();
    let (mut violations, mut duplicates) = (0, 0);
    for (k, s, _) in &log {
        let first_time = done.insert((k.as_str(), *s));
        let m = max.entry(k.as_str()).or_insert(0);
        if !first_time {
            duplicates += 1;
        } else if *s < *m {
            violations += 1;
        }
        *m = (*m).max(*s);
    }
    println!(
        "whole system: {} events from {} organisations",
        expected.len(),
        ORGS + 1
    );
    println!("  records lost:                  {lost}");
    println!("  order violations:              {violations}");
    println!("  redelivered duplicates:        {duplicates}");
    println!(
        "  surge -> first split:          {:.1}s",
        surge_to_split.as_secs_f64()
    );
    println!(
        "  consumers resumed -> 2nd split: {:.1}s",
        (second_split - resumed_at).as_secs_f64()
    );
    println!(
        "  2nd split -> child processing: {:.1}s",
        (child_processing.saturating_duration_since(second_split)).as_secs_f64()
    );
    println!(
        "  controller failover:           {:.1}s",
        failover.as_secs_f64()
    );
    assert_eq!(lost, 0, "records lost");
    assert_eq!(violations, 0, "order violations");
}
