//! Several controller replicas against one simulated stream and one state table, in virtual time,
//! with random pauses longer than the lease (a stalled process that resumes mid-pass with its
//! old token), kills and terminations, for thousands of rounds. Each replica runs the real
//! leadership step and the real reconcile cycle (with its fence); the simulated Kinesis accepts
//! what passes the fence. Checks: a replica whose fence is not the current one never reshards;
//! every operation the stream saw is journalled exactly once as succeeded, under the fence that
//! was current; at most one entry is ever in flight; `maxShards` holds.
//!
//! `SHARDCTL_SIM_HA_ROUNDS` sets the rounds (default a simulated day); `scripts/soak-ha.sh`
//! runs more.

use chrono::{DateTime, Utc};
use shardctl::backend::{BackendError, Fence};
use shardctl::backend::{Clock, LeaderToken, StateStore};
use shardctl::leadership::{self, LeaseSettings, Observed};
use shardctl::reconcile::{CycleSettings, Executor, LiveExecutor, Services};
use shardctl::sim::SharedWorld;
use shardctl::sim::world::{
    MemoryStateStore, SimClock, SimKinesis, SimLeases, SimMetrics, World, WorldConfig,
};
use shardctl::telemetry::Telemetry;
use shardctl_policies::OperationOutcome;
use shardctl_policies::plan::PlannedOperation;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::watch;

const TTL: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_secs(10);

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

struct Replica {
    name: String,
    generation: u32,
    token: Option<LeaderToken>,
    observed: Observed,
    leader_tx: watch::Sender<Option<LeaderToken>>,
    leader_rx: watch::Receiver<Option<LeaderToken>>,
    /// Stalled (SIGSTOP) until this round; it resumes mid-pass with the token it had.
    paused_until: u64,
    /// Dead (SIGKILL) until this round; it restarts with a new identity.
    down_until: u64,
}

impl Replica {
    fn new(name: &str) -> Self {
        let (leader_tx, leader_rx) = watch::channel(None);
        Replica {
            name: name.to_string(),
            generation: 0,
            token: None,
            observed: Observed::default(),
            leader_tx,
            leader_rx,
            paused_until: 0,
            down_until: 0,
        }
    }

    fn identity(&self) -> String {
        format!("{}-{}", self.name, self.generation)
    }

    fn restart(&mut self) {
        self.generation += 1;
        self.token = None;
        self.observed = Observed::default();
        self.leader_tx.send_replace(None);
    }
}

/// The live executor, but the replica stalls between journalling an operation and calling
/// Kinesis, for longer than the lease; meanwhile a standby takes the lease over. A stale call
/// that lands is counted.
struct Stalling<'a> {
    inner: &'a LiveExecutor<SimKinesis>,
    clock: &'a SimClock,
    store: &'a MemoryStateStore,
    owner: String,
    stall: Mutex<bool>,
    landed_stale: AtomicU32,
    usurpers: &'a AtomicU32,
}

impl Executor for Stalling<'_> {
    fn is_live(&self) -> bool {
        true
    }

    async fn perform(
        &self,
        stream: &str,
        op: &PlannedOperation,
        fence: Option<&Fence>,
    ) -> Result<(), BackendError> {
        let stall = std::mem::take(&mut *self.stall.lock().expect("lock"));
        if stall {
            let pause = TTL + TICK;
            self.clock.sleep(pause).await;
            tokio::time::advance(pause).await;
            let n = self.usurpers.fetch_add(1, Ordering::Relaxed);
            self.store
                .acquire_leadership(&format!("usurper-{n}"), TTL, self.clock.now())
                .await?;
        }
        let result = self.inner.perform(stream, op, fence).await;
        if result.is_ok() {
            let current = self.store.leader_record().await?;
            if current.as_ref().is_none_or(|c| c.owner != self.owner) {
                self.landed_stale.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }
}

#[derive(Default, Debug)]
struct Counts {
    stalls: u32,
    pauses: u32,
    kills: u32,
    terms: u32,
    stale_cycles: u32,
    leader_changes: u32,
    anomalies: Vec<String>,
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

    let file = shardctl_policies::load_policy(
        include_str!("../../policies/examples/telecom-org-events.yaml"),
        "telecom-org-events.yaml",
    )
    .expect("the example policy is valid");
    let mut policy = file.spec.streams[0].clone();
    policy.consumer_groups.clear();
    let scenario = shardctl::sim::traffic::scenario("diurnal", 3).expect("scenario");
    let world = SharedWorld::new(World::new(
        WorldConfig::new(policy.name.clone()),
        &scenario,
        3,
    ));
    let store = MemoryStateStore::default();
    let telemetry = Telemetry::new();
    let services = Services {
        kinesis: SimKinesis(world.clone()),
        metrics: SimMetrics(world.clone()),
        leases: SimLeases(world.clone()),
        state: store.clone(),
        clock: SimClock(world.clone()),
        telemetry,
    };
    let executor = LiveExecutor::new(services.kinesis.clone());
    let t0: DateTime<Utc> = services.clock.now();
    let mut replicas: Vec<Replica> = ["a", "b", "c"].iter().map(|n| Replica::new(n)).collect();
    let mut counts = Counts::default();
    let mut last_leader: Option<u64> = None;
    let usurpers = AtomicU32::new(0);

    for round in 0..rounds {
        // Time passes for everyone: the world, and every replica's monotonic clock.
        services.clock.sleep(TICK).await;
        tokio::time::advance(TICK).await;

        // A fault now and then (about one every 25 rounds).
        if rng.below(25) == 0 {
            let r = rng.below(replicas.len() as u64) as usize;
            let replica = &mut replicas[r];
            if replica.paused_until <= round && replica.down_until <= round {
                match rng.below(3) {
                    0 => {
                        // Stalled for longer than the lease.
                        replica.paused_until = round + 4 + rng.below(6);
                        counts.pauses += 1;
                    }
                    1 => {
                        replica.down_until = round + 1 + rng.below(6);
                        replica.restart();
                        counts.kills += 1;
                    }
                    _ => {
                        // SIGTERM: the loop stops, then the lease is released.
                        if let Some(token) = replica.token.take() {
                            store.release_leadership(&token).await.expect("release");
                        }
                        replica.restart();
                        counts.terms += 1;
                    }
                }
            }
        }

        for replica in replicas.iter_mut() {
            if replica.down_until > round || replica.paused_until > round {
                continue;
            }
            let resumed = replica.paused_until != 0 && replica.paused_until == round;
            if resumed && replica.token.is_some() {
                // Resumed mid-pass: it acts on the token it held when it stalled.
                counts.stale_cycles += 1;
                run_checked(
                    &services,
                    &executor,
                    &policy,
                    replica,
                    &world,
                    &store,
                    &mut counts,
                    round,
                    false,
                    &usurpers,
                )
                .await;
            }
            let settings = LeaseSettings {
                owner: replica.identity(),
                ttl: TTL,
            };
            replica.token = leadership::step(
                &store,
                &services.clock,
                &settings,
                replica.token.take(),
                &mut replica.observed,
            )
            .await;
            replica.leader_tx.send_replace(replica.token.clone());
            if let Some(t) = &replica.token {
                if last_leader != Some(t.fence) {
                    counts.leader_changes += 1;
                    last_leader = Some(t.fence);
                }
                let stall = rng.below(2) == 0;
                run_checked(
                    &services,
                    &executor,
                    &policy,
                    replica,
                    &world,
                    &store,
                    &mut counts,
                    round,
                    stall,
                    &usurpers,
                )
                .await;
            }
        }
    }

    // Ground truth: the stream's operations against the journal.
    let history = store.history(&policy.name, t0).await.expect("journal");
    let ops = world.lock().ops.len();
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
    println!(
        "{rounds} rounds (seed {seed}): {} pauses, {} kills, {} terms, {} stale resumed cycles, \
         {} stalls between journal and call, {} leaderships; {ops} operations, {succeeded} \
         journalled succeeded, {in_flight} in flight, max {max_open} open shards; {} anomalies",
        counts.pauses,
        counts.kills,
        counts.terms,
        counts.stale_cycles,
        counts.stalls,
        counts.leader_changes,
        counts.anomalies.len()
    );
    assert!(
        counts.anomalies.is_empty(),
        "seed {seed}: {:#?}",
        counts.anomalies
    );
    assert!(ops > 0, "the scenario must make the controller act");
    assert!(counts.pauses + counts.kills + counts.terms > 0);
    assert!(
        counts.stalls > 0,
        "no stall between journal and call was exercised"
    );
    // Every operation once: journalled succeeded, or still in flight at the very end.
    assert!(
        succeeded <= ops && ops <= succeeded + in_flight,
        "{ops} operations, {succeeded} succeeded + {in_flight} in flight in the journal"
    );
    assert!(in_flight <= 1, "{in_flight} entries in flight");
    assert!(max_open <= policy.max_shards as usize);
}

/// One cycle of `replica`, checking that it reshards only under the current fence.
#[allow(clippy::too_many_arguments)]
async fn run_checked(
    services: &Services<SimKinesis, SimMetrics, SimLeases, MemoryStateStore, SimClock>,
    executor: &LiveExecutor<SimKinesis>,
    policy: &shardctl_policies::StreamPolicy,
    replica: &Replica,
    world: &SharedWorld,
    store: &MemoryStateStore,
    counts: &mut Counts,
    round: u64,
    stall: bool,
    usurpers: &AtomicU32,
) {
    let Some(token) = &replica.token else {
        return;
    };
    let current = store.leader_record().await.expect("record");
    let before = world.lock().ops.len();
    let journal_before = store
        .history(&policy.name, DateTime::<Utc>::MIN_UTC)
        .await
        .expect("journal")
        .len();
    let settings = CycleSettings {
        active_timeout: Duration::from_secs(15 * 60),
        active_poll: Duration::from_secs(2),
        leader: Some(replica.leader_rx.clone()),
        ..CycleSettings::default()
    };
    let stalling = Stalling {
        inner: executor,
        clock: &services.clock,
        store,
        owner: token.owner.clone(),
        stall: Mutex::new(stall),
        landed_stale: AtomicU32::new(0),
        usurpers,
    };
    let _ = services
        .cycle(policy, &stalling, Some(token), &settings)
        .await;
    if stall && !*stalling.stall.lock().expect("lock") {
        counts.stalls += 1;
    }
    let landed = stalling.landed_stale.load(Ordering::Relaxed);
    if landed > 0 {
        counts.anomalies.push(format!(
            "round {round}: {} stalled past its lease and {landed} call(s) landed while another replica led",
            token.owner
        ));
        return;
    }
    let after = world.lock().ops.len();
    let journal = store
        .history(&policy.name, DateTime::<Utc>::MIN_UTC)
        .await
        .expect("journal");
    let is_current = current
        .as_ref()
        .is_some_and(|c| c.owner == token.owner && c.fence == token.fence);
    if after > before && !is_current {
        counts.anomalies.push(format!(
            "round {round}: {} resharded under fence {} while {:?} led",
            token.owner, token.fence, current
        ));
    }
    for entry in &journal[journal_before.min(journal.len())..] {
        if entry.fence != Some(token.fence) || !is_current {
            counts.anomalies.push(format!(
                "round {round}: entry {} journalled under fence {:?} by {} (current {:?})",
                entry.id, entry.fence, token.owner, current
            ));
        }
    }
}
