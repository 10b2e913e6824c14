//! Three controller replicas against one simulated stream and one state table, in virtual time,
//! each wired exactly as `shardctl run` wires itself ([`Replica::serve`]: the loop driver of
//! `run`, leadership maintained beside it, the live executor with its fence), under random
//! SIGSTOP/SIGCONT pauses longer than the lease, SIGKILLs and SIGTERMs, for thousands of rounds.
//! A paused replica is frozen at its next backend call (its lease renewals too), as a stopped
//! process is; some pauses hit right between journalling an operation and calling Kinesis.
//!
//! Checks, from the world's own record of operations and the journal: no two operations
//! overlapped; no reshard call landed unless its fence was the current leader's when it landed;
//! no entry was journalled under a fence that was not current; every operation is journalled
//! exactly once as succeeded (the last may still be in flight at the end); at most one entry is
//! in flight; `maxShards` holds.
//!
//! `SHARDCTL_SIM_HA_ROUNDS` sets the rounds (default 8,640 rounds of 10 s, a simulated day),
//! `SHARDCTL_SIM_HA_SEED` the seed: `SHARDCTL_SIM_HA_ROUNDS=100000 cargo test --release -p shardctl
//! --test integration sim_leadership::` runs more.
//!
//! Longer than 500 lines by choice: one harness (replicas, pauses, the world's record) and the
//! checks that cross-examine it belong together; the sections below follow that order.

use chrono::{DateTime, Utc};
use shardctl_controller::backend::{
    BackendError, Backends, Clock, Fence, JournalEntry, Kinesis, LeaderRecord, LeaderToken,
    LeaseTables, Metrics, ShardMetric, StateStore, StreamDescription,
};
use shardctl_controller::daemon::{Leadership, Progress, Replica};
use shardctl_controller::leadership::LeaseSettings;
use shardctl_controller::reconcile::{Context, CycleSettings, LiveExecutor};
use shardctl_controller::telemetry::Telemetry;
use shardctl_lease::{StreamFilter, TableRows};
use shardctl_policies::history::OperationRecord;
use shardctl_policies::{HashKey, OperationOutcome, PolicyFile, Shard, ShardMetrics, StreamPolicy};
use shardctl_sim::SharedWorld;
use shardctl_sim::world::{
    MemoryStateStore, SimKinesis, SimLeases, SimMetrics, World, WorldConfig,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(30);
const ROUND: Duration = Duration::from_secs(10);

/// A tiny deterministic generator (xorshift64*), seeded from the environment or a constant.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// World time follows tokio's (paused) clock, so several replicas share one world: whoever
/// looks at the clock first runs the world forward to now.
#[derive(Clone)]
struct PacedClock {
    world: SharedWorld,
    start: Instant,
}

impl Clock for PacedClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.start.elapsed().as_secs();
        let mut w = self.world.lock();
        if w.elapsed() < elapsed {
            w.advance_to(elapsed);
        }
        w.now()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// What the checks collect, shared by every replica.
#[derive(Default)]
struct Evidence {
    anomalies: Mutex<Vec<String>>,
    stalls: AtomicU32,
    /// Failed cycles by reason (printed: a fault test whose cycles all fail proves nothing).
    failures: Mutex<std::collections::BTreeMap<&'static str, u32>>,
    passes: AtomicU32,
}

impl Evidence {
    fn anomaly(&self, what: String) {
        self.anomalies.lock().expect("lock").push(what);
    }
}

/// One process's view of a backend: every call first waits while the process is stopped
/// (SIGSTOP), and sees the world at the current time.
#[derive(Clone)]
struct Proc<T> {
    inner: T,
    running: watch::Receiver<bool>,
    clock: PacedClock,
    /// The process's own stop switch, for pauses that begin right before a reshard call.
    pause: Arc<watch::Sender<bool>>,
    store: MemoryStateStore,
    evidence: Arc<Evidence>,
    /// Pause before the next reshard call (set at random by the harness).
    stall_next: Arc<AtomicBool>,
}

impl<T> Proc<T> {
    async fn enter(&self) {
        let mut running = self.running.clone();
        // A closed channel means the process is gone: it never runs again.
        if running.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
        self.clock.now();
    }

    /// SIGSTOP right before a reshard call, for longer than the lease; SIGCONT after.
    async fn maybe_stall(&self) {
        if self.stall_next.swap(false, Ordering::Relaxed) {
            self.evidence.stalls.fetch_add(1, Ordering::Relaxed);
            self.pause.send_replace(false);
            let pause = self.pause.clone();
            tokio::spawn(async move {
                tokio::time::sleep(TTL + ROUND).await;
                pause.send_replace(true);
            });
            self.enter().await;
        }
    }

    /// After a reshard call landed: its fence must be the current leader's.
    async fn landed(&self, api: &str, fence: &Fence) {
        let current = self.store.leader_record().await.expect("leader record");
        let (owner, number) = fence.holder();
        if current
            .as_ref()
            .is_none_or(|c| c.owner != owner || c.fence != number)
        {
            self.evidence.anomaly(format!(
                "{api} under {owner} fence {number} landed while {current:?} led"
            ));
        }
    }
}

impl Kinesis for Proc<SimKinesis> {
    async fn describe_stream(&self, stream: &str) -> Result<StreamDescription, BackendError> {
        self.enter().await;
        self.inner.describe_stream(stream).await
    }

    async fn list_shards(&self, stream: &str) -> Result<Vec<Shard>, BackendError> {
        self.enter().await;
        self.inner.list_shards(stream).await
    }

    async fn split_shard(
        &self,
        stream: &str,
        shard_id: &str,
        key: HashKey,
        fence: &Fence,
    ) -> Result<(), BackendError> {
        self.maybe_stall().await;
        self.enter().await;
        self.inner.split_shard(stream, shard_id, key, fence).await?;
        self.landed("SplitShard", fence).await;
        Ok(())
    }

    async fn merge_shards(
        &self,
        stream: &str,
        shard_id: &str,
        adjacent: &str,
        fence: &Fence,
    ) -> Result<(), BackendError> {
        self.maybe_stall().await;
        self.enter().await;
        self.inner
            .merge_shards(stream, shard_id, adjacent, fence)
            .await?;
        self.landed("MergeShards", fence).await;
        Ok(())
    }

    async fn enable_shard_metrics(
        &self,
        stream: &str,
        metrics: &[ShardMetric],
    ) -> Result<(), BackendError> {
        self.enter().await;
        self.inner.enable_shard_metrics(stream, metrics).await
    }

    async fn sample_records(
        &self,
        stream: &str,
        shard_id: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, BackendError> {
        self.enter().await;
        self.inner
            .sample_records(stream, shard_id, since, limit)
            .await
    }
}

impl Metrics for Proc<SimMetrics> {
    async fn shard_metrics(
        &self,
        stream: &str,
        shard_ids: &[String],
        start: DateTime<Utc>,
        minutes: usize,
    ) -> Result<HashMap<String, ShardMetrics>, BackendError> {
        self.enter().await;
        self.inner
            .shard_metrics(stream, shard_ids, start, minutes)
            .await
    }
}

impl LeaseTables for Proc<SimLeases> {
    async fn rows(&self, table: &str, stream: &StreamFilter) -> Result<TableRows, BackendError> {
        self.enter().await;
        self.inner.rows(table, stream).await
    }
}

impl StateStore for Proc<MemoryStateStore> {
    async fn ensure(&self) -> Result<(), BackendError> {
        self.enter().await;
        self.inner.ensure().await
    }

    async fn leader_record(&self) -> Result<Option<LeaderRecord>, BackendError> {
        self.enter().await;
        self.inner.leader_record().await
    }

    async fn history(
        &self,
        stream: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<JournalEntry>, BackendError> {
        self.enter().await;
        self.inner.history(stream, since).await
    }

    async fn begin(
        &self,
        stream: &str,
        record: &OperationRecord,
        leader: &LeaderToken,
    ) -> Result<String, BackendError> {
        self.enter().await;
        let id = self.inner.begin(stream, record, leader).await?;
        let current = self.inner.leader_record().await?;
        if current
            .as_ref()
            .is_none_or(|c| c.owner != leader.owner || c.fence != leader.fence)
        {
            self.evidence.anomaly(format!(
                "entry {id} journalled under {} fence {} while {current:?} led",
                leader.owner, leader.fence
            ));
        }
        Ok(id)
    }

    async fn finish(
        &self,
        stream: &str,
        id: &str,
        outcome: OperationOutcome,
    ) -> Result<(), BackendError> {
        self.enter().await;
        self.inner.finish(stream, id, outcome).await
    }

    async fn acquire_leadership(
        &self,
        owner: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<LeaderToken>, BackendError> {
        self.enter().await;
        self.inner.acquire_leadership(owner, ttl, now).await
    }

    async fn renew_leadership(
        &self,
        token: &LeaderToken,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<LeaderToken>, BackendError> {
        self.enter().await;
        self.inner.renew_leadership(token, ttl, now).await
    }

    async fn release_leadership(&self, token: &LeaderToken) -> Result<(), BackendError> {
        self.enter().await;
        self.inner.release_leadership(token).await
    }
}

/// One simulated process's backends.
enum Process {}

impl Backends for Process {
    type Kinesis = Proc<SimKinesis>;
    type Metrics = Proc<SimMetrics>;
    type Leases = Proc<SimLeases>;
    type State = Proc<MemoryStateStore>;
    type Clock = PacedClock;
}

/// The shared world and state table, and how to start a process on them.
struct Cluster {
    world: SharedWorld,
    store: MemoryStateStore,
    clock: PacedClock,
    evidence: Arc<Evidence>,
    policy: Arc<PolicyFile>,
}

/// A running (or stopped) replica process.
struct Running {
    handle: JoinHandle<()>,
    /// SIGSTOP/SIGCONT; dropped on SIGKILL.
    running: Arc<watch::Sender<bool>>,
    /// SIGTERM.
    stop: watch::Sender<bool>,
    stop_flag: Arc<AtomicBool>,
    stall_next: Arc<AtomicBool>,
    paused_until: u64,
}

/// A process's switches: running (SIGSTOP/SIGCONT), its own pause, "stall before the next call".
type Parts = (
    watch::Receiver<bool>,
    Arc<watch::Sender<bool>>,
    Arc<AtomicBool>,
);

impl Cluster {
    fn proc<T>(&self, parts: &Parts, inner: T) -> Proc<T> {
        Proc {
            inner,
            running: parts.0.clone(),
            clock: self.clock.clone(),
            pause: parts.1.clone(),
            store: self.store.clone(),
            evidence: self.evidence.clone(),
            stall_next: parts.2.clone(),
        }
    }

    fn start(&self, identity: String) -> Running {
        let (running_tx, running_rx) = watch::channel(true);
        let running = Arc::new(running_tx);
        let stall_next = Arc::new(AtomicBool::new(false));
        let parts = (running_rx, running.clone(), stall_next.clone());
        let ctx: Context<Process> = Context {
            kinesis: self.proc(&parts, SimKinesis(self.world.clone())),
            metrics: self.proc(&parts, SimMetrics(self.world.clone())),
            leases: self.proc(&parts, SimLeases(self.world.clone())),
            state: self.proc(&parts, self.store.clone()),
            clock: self.clock.clone(),
            telemetry: Telemetry::new(),
        };
        let settings = CycleSettings::default();
        let stop_flag = settings.stop.clone();
        let (stop, stop_rx) = watch::channel(false);
        let (_policy_tx, policy_rx) = watch::channel(self.policy.clone());
        let replica = Replica {
            ctx: Arc::new(ctx),
            executor: LiveExecutor,
            leadership: Leadership::Maintained(LeaseSettings {
                owner: identity,
                ttl: TTL,
            }),
            settings,
            progress: Arc::new(Progress::default()),
            once: false,
        };
        let evidence = self.evidence.clone();
        let handle = tokio::spawn(async move {
            let _keep = _policy_tx;
            replica
                .serve(policy_rx, stop_rx, |pass| {
                    evidence.passes.fetch_add(1, Ordering::Relaxed);
                    for (_, result) in pass {
                        if let Err(e) = result {
                            *evidence
                                .failures
                                .lock()
                                .expect("lock")
                                .entry(e.label())
                                .or_default() += 1;
                        }
                    }
                })
                .await
                .expect("a replica starts");
        });
        Running {
            handle,
            running,
            stop,
            stop_flag,
            stall_next,
            paused_until: 0,
        }
    }
}

#[derive(Default, Debug)]
struct Counts {
    pauses: u32,
    kills: u32,
    terms: u32,
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn replicas_under_pauses_kills_and_terms_never_reshard_under_a_stale_fence() {
    let rounds: u64 = std::env::var("SHARDCTL_SIM_HA_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8_640);
    let seed: u64 = std::env::var("SHARDCTL_SIM_HA_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_5eed);
    let mut rng = Rng(seed | 1);

    let mut file = shardctl_policies::load_policy(
        include_str!("../../../policies/examples/telecom-org-events.yaml"),
        "telecom-org-events.yaml",
    )
    .expect("the example policy is valid");
    file.spec.streams.truncate(1);
    file.spec.streams[0].consumer_groups.clear();
    let policy: StreamPolicy = file.spec.streams[0].clone();
    let scenario = shardctl_sim::traffic::scenario("diurnal", 3).expect("scenario");
    let world = SharedWorld::new(World::new(
        WorldConfig::new(policy.name.clone()),
        &scenario,
        3,
    ));
    let cluster = Cluster {
        clock: PacedClock {
            world: world.clone(),
            start: Instant::now(),
        },
        world: world.clone(),
        store: MemoryStateStore::default(),
        evidence: Arc::new(Evidence::default()),
        policy: Arc::new(file),
    };
    let t0 = cluster.clock.now();
    let names = ["a", "b", "c"];
    let mut generation = [0u32; 3];
    let mut procs: Vec<Option<Running>> = names
        .iter()
        .map(|n| Some(cluster.start(format!("{n}-0"))))
        .collect();
    let mut down_until = [0u64; 3];
    let mut counts = Counts::default();

    for round in 0..rounds {
        tokio::time::sleep(ROUND).await;
        for (i, slot) in procs.iter_mut().enumerate() {
            // SIGCONT when a pause is over; restart a dead or terminated process when due.
            if let Some(p) = slot
                && p.paused_until == round
                && p.paused_until != 0
            {
                p.running.send_replace(true);
            }
            let exited = slot.as_ref().is_some_and(|p| p.handle.is_finished());
            if exited {
                *slot = None;
                down_until[i] = down_until[i].max(round + 1);
            }
            if slot.is_none() && down_until[i] <= round {
                generation[i] += 1;
                *slot = Some(cluster.start(format!("{}-{}", names[i], generation[i])));
            }
            // Now and then, a pause right between journalling and calling Kinesis.
            if let Some(p) = slot
                && rng.below(30) == 0
            {
                p.stall_next.store(true, Ordering::Relaxed);
            }
        }
        // A fault now and then (about one every 25 rounds).
        if rng.below(25) != 0 {
            continue;
        }
        let i = rng.below(names.len() as u64) as usize;
        let Some(p) = procs[i].as_mut() else {
            continue;
        };
        if p.paused_until > round || *p.stop.borrow() {
            continue;
        }
        match rng.below(3) {
            0 => {
                // SIGSTOP for longer than the lease, SIGCONT later.
                p.running.send_replace(false);
                p.paused_until = round + 4 + rng.below(6);
                counts.pauses += 1;
            }
            1 => {
                // SIGKILL: frozen for ever, then gone.
                p.running.send_replace(false);
                p.handle.abort();
                procs[i] = None;
                down_until[i] = round + 1 + rng.below(6);
                counts.kills += 1;
            }
            _ => {
                // SIGTERM: the loop stops, then the lease is released; restarted once exited.
                p.stop_flag.store(true, Ordering::Relaxed);
                p.stop.send_replace(true);
                counts.terms += 1;
            }
        }
    }
    // Everyone resumes, then terminates.
    for p in procs.iter().flatten() {
        p.running.send_replace(true);
        p.stop_flag.store(true, Ordering::Relaxed);
        p.stop.send_replace(true);
    }
    for p in procs.into_iter().flatten() {
        tokio::time::timeout(Duration::from_secs(20 * 60), p.handle)
            .await
            .expect("a terminated replica exits")
            .expect("a replica never panics");
    }

    // Ground truth: the world's operations against the journal.
    let history = cluster
        .store
        .history(&policy.name, t0)
        .await
        .expect("journal");
    let ops = world.lock().ops.clone();
    let mut anomalies = cluster.evidence.anomalies.lock().expect("lock").clone();
    for pair in ops.windows(2) {
        if pair[1].at < pair[0].done {
            anomalies.push(format!(
                "operations overlapped: {:?} and {:?}",
                pair[0], pair[1]
            ));
        }
    }
    let succeeded = history
        .iter()
        .filter(|e| e.record.outcome == OperationOutcome::Succeeded)
        .count();
    let in_flight = history
        .iter()
        .filter(|e| e.record.outcome == OperationOutcome::InFlight)
        .count();
    let max_open = world
        .lock()
        .stream_minutes
        .iter()
        .map(|m| m.open_shards)
        .max()
        .unwrap_or(0);
    let leaderships = cluster
        .store
        .leader_record()
        .await
        .expect("leader")
        .map_or(0, |r| r.fence);
    let stalls = cluster.evidence.stalls.load(Ordering::Relaxed);
    println!(
        "{rounds} rounds (seed {seed}): {} pauses, {} kills, {} terms, {stalls} pauses between \
         journal and call, {leaderships} leaderships; {} operations, {succeeded} journalled \
         succeeded, {in_flight} in flight, max {max_open} open shards; {} passes, failed \
         cycles {:?}; {} anomalies",
        counts.pauses,
        counts.kills,
        counts.terms,
        ops.len(),
        cluster.evidence.passes.load(Ordering::Relaxed),
        cluster.evidence.failures.lock().expect("lock"),
        anomalies.len()
    );
    assert!(anomalies.is_empty(), "seed {seed}: {anomalies:#?}");
    assert!(!ops.is_empty(), "the scenario must make the controller act");
    assert!(
        counts.pauses > 0 && counts.kills > 0 && counts.terms > 0,
        "{counts:?}"
    );
    assert!(
        stalls > 0,
        "no pause between journal and call was exercised"
    );
    assert!(
        leaderships > 3,
        "leadership never changed hands: {leaderships}"
    );
    // Every operation once: journalled succeeded, or still in flight at the very end.
    assert!(
        succeeded <= ops.len() && ops.len() <= succeeded + in_flight,
        "{} operations, {succeeded} succeeded + {in_flight} in flight in the journal",
        ops.len()
    );
    assert!(in_flight <= 1, "{in_flight} entries in flight");
    assert!(max_open <= policy.max_shards as usize);
}
