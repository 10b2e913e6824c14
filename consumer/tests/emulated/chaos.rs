//! The live chaos test: a fleet behind per-worker fault proxies, against the emulators, while the
//! stream is resharded under a lagging fleet (a split, then a merge of a child that has no lease
//! row yet), two workers join at once (concurrent steals), a worker is paused for twice the
//! failover time, and a renewal hangs in the network. Asserted: nothing lost, per-key order, no
//! shard processed by two workers at once (the processor-level overlap detector), no child before
//! its parents.
//!
//! CI runs two rounds (under half a minute here). A soak: `SHARDCTL_CHAOS_ROUNDS=20 cargo test -p
//! shardctl-consumer --release --test emulated chaos -- --nocapture`
//! (or `consumer/scripts/soak.sh`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::producer::{Event, Producer};
use shardctl_consumer::{Worker, WorkerConfig};

use crate::common::*;
use crate::proxy::WorkerLink;

const FAILOVER: Duration = Duration::from_secs(3);
const KEYS: usize = 8;
/// The update expression of a renewal, exactly (the proxy hangs the next request carrying it).
const RENEWAL: &str = r#""SET #counter = :next""#;

/// The shard the fleet is held back on, if any.
type Lagging = Arc<Mutex<Option<String>>>;

/// A [`Recorder`] that stalls while its shard is the lagging one: the fleet falls behind the
/// stream on that shard while the rest moves on.
struct Slowed {
    inner: Recorder,
    lagging: Lagging,
}

impl Slowed {
    async fn wait_while_lagging(&self) {
        while self.lagging.lock().unwrap().as_deref() == Some(self.inner.shard.as_str()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl ShardProcessor for Slowed {
    async fn initialize(&mut self, input: InitInput) {
        self.wait_while_lagging().await;
        self.inner.initialize(input).await;
    }
    async fn process_records(&mut self, batch: RecordBatch, checkpointer: &Checkpointer) {
        self.wait_while_lagging().await;
        self.inner.process_records(batch, checkpointer).await;
    }
    async fn shard_ended(&mut self, checkpointer: &Checkpointer) {
        self.inner.shard_ended(checkpointer).await;
    }
}

struct Member {
    worker: Worker,
    link: WorkerLink,
}

async fn join(stream: &str, table: &str, name: &str, log: &Arc<Log>, lagging: &Lagging) -> Member {
    let link = WorkerLink::start().await;
    let clients = link.clients().await;
    let recorder = Recorder::factory(name, log, 5);
    let lagging = Arc::clone(lagging);
    let worker = Worker::start(
        WorkerConfig::new(stream, table)
            .with_worker_id(name)
            .with_failover(FAILOVER)
            .with_idle_poll_interval(Duration::from_millis(200))
            // Listings stay stale through a round's reshards.
            .with_shard_sync_interval(Duration::from_secs(20))
            .with_lease_cleanup_interval(Some(Duration::from_secs(5))),
        clients.kinesis,
        clients.dynamodb,
        move |shard: &str| Slowed {
            inner: recorder(shard),
            lagging: Arc::clone(&lagging),
        },
    )
    .await
    .expect("worker starts");
    Member { worker, link }
}

fn busiest(members: &[Member], except: Option<usize>) -> usize {
    (0..members.len())
        .filter(|&i| Some(i) != except)
        .max_by_key(|&i| members[i].worker.held_shards().len())
        .expect("members")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_loses_nothing_keeps_order_and_never_processes_a_shard_twice_at_once() {
    let Some(aws) = aws().await else { return };
    let rounds: usize = std::env::var("SHARDCTL_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let stream = unique("chaos");
    let table = unique("chaos-leases");
    create_stream(&aws.kinesis, &stream, 4).await;
    let log = Arc::new(Log::default());
    let lagging: Lagging = Arc::default();
    // One worker takes every shard; the others join two at a time, so that two thieves plan
    // steals from the same scans of the same victim.
    let mut members = vec![join(&stream, &table, "w0", &log, &lagging).await];

    // Production runs through the whole test: one event per key every 100 ms.
    let producing = Arc::new(AtomicBool::new(true));
    let produced = Arc::new(AtomicU64::new(0));
    let production = {
        let producer = Producer::new(aws.kinesis.clone(), &stream);
        let producing = Arc::clone(&producing);
        let produced = Arc::clone(&produced);
        tokio::spawn(async move {
            let keys: Vec<String> = (0..KEYS).map(|k| format!("org-{k}")).collect();
            let mut round = 0u64;
            while producing.load(Ordering::Relaxed) {
                let events = keys
                    .iter()
                    .map(|k| Event::new(k.clone(), payload(k, round)))
                    .collect();
                producer.send(events).await.expect("produce");
                round += 1;
                produced.store(round, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    eventually(
        "the fleet is processing",
        Duration::from_secs(30),
        || async { (log.delivered_ids().len() >= KEYS * 5).then_some(()) },
    )
    .await;
    let pair = |n: usize| {
        let (stream, table, log, lagging) = (&stream, &table, &log, &lagging);
        async move {
            let (first, second) = (format!("w{n}"), format!("w{}", n + 1));
            let (x, y) = tokio::join!(
                join(stream, table, &first, log, lagging),
                join(stream, table, &second, log, lagging)
            );
            [x, y]
        }
    };
    members.extend(pair(1).await);

    let (mut splits, mut merges, mut pauses, mut hangs) = (0, 0, 0, 0);
    let mut pauses_with_read = 0u32;
    for round in 0..rounds {
        // The fleet lags on one shard and the stream is resharded under it: the shard is split,
        // then its upper child (no lease row yet: its parent is far from its end) is merged with
        // its neighbour, which the fleet reads to its end meanwhile.
        let open = open_shards(&aws.kinesis, &stream).await;
        let a = open[round % (open.len() - 1)].clone();
        *lagging.lock().unwrap() = Some(a.shard_id.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        split(&aws.kinesis, &stream, &a).await;
        splits += 1;
        let open = open_shards(&aws.kinesis, &stream).await;
        let upper = open
            .iter()
            .rposition(|s| s.parents.contains(&a.shard_id))
            .expect("a's children");
        if upper + 1 < open.len() {
            merge(&aws.kinesis, &stream, &open[upper], &open[upper + 1]).await;
            merges += 1;
        }

        // Two more workers join at once, while leases are still moving.
        if round == 0 {
            members.extend(pair(3).await);
        }
        // Lease rounds in which the merge child could (wrongly) start; then the fleet catches up.
        tokio::time::sleep(Duration::from_secs(3)).await;
        *lagging.lock().unwrap() = None;
        tokio::time::sleep(Duration::from_secs(2)).await;

        // The worker that delivered last stops for twice the failover time (every request held,
        // its next read among them).
        let reading = log
            .deliveries
            .lock()
            .unwrap()
            .last()
            .map(|d| d.worker.clone());
        let paused = members
            .iter()
            .position(|m| Some(m.worker.worker_id()) == reading.as_deref())
            .unwrap_or_else(|| busiest(&members, None));
        let reads = members[paused].link.kinesis.held();
        members[paused].link.pause();
        let held_read = tokio::time::timeout(Duration::from_secs(3), async {
            while members[paused].link.kinesis.held() == reads {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .is_ok();
        pauses_with_read += u32::from(held_read);
        tokio::time::sleep(FAILOVER * 2).await;
        members[paused].link.resume();
        pauses += 1;

        // One renewal of another worker hangs in the network.
        let hung = busiest(&members, Some(paused));
        let before = members[hung].link.dynamodb.hung();
        members[hung].link.dynamodb.hang_next(RENEWAL);
        eventually("a renewal hangs", Duration::from_secs(15), || async {
            (members[hung].link.dynamodb.hung() > before).then_some(())
        })
        .await;
        hangs += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    producing.store(false, Ordering::Relaxed);
    production.await.expect("production");
    let rounds_produced = produced.load(Ordering::Relaxed);
    let total = KEYS * rounds_produced as usize;
    eventually(
        &format!("all {total} events delivered"),
        Duration::from_secs(120),
        || async { (log.delivered_ids().len() >= total).then_some(()) },
    )
    .await;

    let per_key: BTreeMap<String, u64> = (0..KEYS)
        .map(|k| (format!("org-{k}"), rounds_produced))
        .collect();
    let t = tally(&log, &per_key);
    let overlaps = overlapping_processing(&log);
    let instances = log.inits.lock().unwrap().len();
    println!(
        "chaos: {rounds} round(s), {} workers, {total} events, {splits} splits, {merges} merges, \
         {pauses} pauses of 2 x failover ({pauses_with_read} with a read in flight), {hangs} hung renewals, {instances} processor starts, \
         {} duplicates, {} lost, {} order violations, {} overlaps ({} process_records calls ran \
         past their tenure into another's)",
        members.len(),
        t.duplicates,
        t.lost,
        t.order_violations,
        overlaps.len(),
        overlapping_calls(&log),
    );
    assert!(overlaps.is_empty(), "{overlaps:#?}");
    assert_eq!(t.lost, 0, "events lost");
    assert_eq!(t.order_violations, 0, "per-key order violated");
    check_parents_before_children(&aws.kinesis, &stream, &log).await;
    for m in members {
        m.worker.shutdown().await;
    }
}
