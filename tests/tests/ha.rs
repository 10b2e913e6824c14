//! High availability of the act phase, against the emulators, with real `shardctl run` processes.
//!
//! 1. `leaders_under_random_kills_pauses_and_terms_never_reshard_at_once`: three replicas share
//!    the leader lease while every open shard is kept hot; for N rounds (`SHARDCTL_HA_ROUNDS`) a
//!    seeded RNG (`SHARDCTL_HA_SEED`) picks a replica and sends it SIGTERM (then restarts it),
//!    SIGKILL (then restarts it) or SIGSTOP for longer than the lease (then SIGCONT), either at a
//!    random moment or right when the leader logs that it planned, journalled or executed an
//!    operation. When a stream reaches `maxShards` the harness moves the policy to a fresh stream
//!    (hot reload), so operations keep coming however many rounds run. Afterwards the Kinesis
//!    shard lineage, the state table's journal, every replica's log and what a monitor sampled
//!    during the run are checked against each other (see [`analyse`] for what each check can and
//!    cannot prove).
//! 2. `rolling_update_keeps_one_actor_and_ready_pods`: the chart's rollout: leader A and standby
//!    B, a surged pod C, SIGTERM to A while an operation is in flight, then SIGTERM to B. Every
//!    pod's `/readyz`, `/healthz` and `shardctl_leader` gauge are sampled into a timeline.
//!
//! Shard-level metrics come from the harness (no emulator publishes them): every open shard gets
//! a hot `AWS/Kinesis` datapoint for the current and the previous minute, including shards
//! created seconds ago (backfilled), so the planner always wants to split and only `maxShards`,
//! the rate limit and leadership hold it back.
//!
//! The binary is `target/<profile>/shardctl` next to this test's directory, or `SHARDCTL_BIN`.
//! Each replica logs JSON (`--log-format json`) to its own file under the test's temporary
//! directory; every failure message names that directory.
//!
//! Longer than other files by choice: one harness (processes, pressure, monitor, log reader) and
//! one analysis that cross-checks all of its evidence; the sections below follow that order, and
//! the shared emulator helpers live in `shardctl-test-support`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use shardctl_test_support::{
    Clients, ShardMinute, clients, create_stream, free_port, http_get, is_active, is_open,
    leader_gauge, list_shards, put_shard_metrics, require_emulators, shardctl_binary, shardctl_run,
    temp_dir, unique,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The leader lease every replica runs with.
const LEASE: Duration = Duration::from_secs(3);
/// Rate limit of the policies: at most this many splits per `RATE_PERIOD`.
const RATE_VALUE: usize = 4;
const RATE_PERIOD_SECS: i64 = 60;
/// How long a replica may take to exit after SIGTERM before the test calls it hung. Not a
/// performance assertion: a wait deadline far above lease + one operation (about 5 s here).
const EXIT_DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

/// xorshift64*: a seeded, reproducible choice of faults without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo + 1))
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Sends `sig` (`TERM`, `STOP`, `CONT`) to one of our own children by pid.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {sig} {pid} failed");
}

fn rel(t: Instant, zero: Instant) -> f64 {
    t.saturating_duration_since(zero).as_secs_f64()
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Replicas
// ---------------------------------------------------------------------------------------------

/// One `shardctl run` process (an incarnation of a slot).
struct Replica {
    identity: String,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
    started: Instant,
    stopped: bool,
    exit: Option<ExitStatus>,
}

impl Replica {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// Every replica the test started; all of them are killed on drop (also on panic).
struct Fleet {
    bin: PathBuf,
    policy: PathBuf,
    table: String,
    dir: PathBuf,
    /// Every incarnation ever started, in start order.
    all: Vec<Replica>,
    /// For each slot, the index in `all` of its current incarnation.
    slots: Vec<usize>,
}

impl Fleet {
    fn new(bin: PathBuf, policy: PathBuf, table: &str, dir: PathBuf) -> Self {
        Fleet {
            bin,
            policy,
            table: table.to_string(),
            dir,
            all: Vec::new(),
            slots: Vec::new(),
        }
    }

    fn spawn(&mut self, identity: &str) -> usize {
        let log = self.dir.join(format!("{identity}.log"));
        let port = free_port();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = shardctl_run(&self.bin, &self.policy, &self.table, identity, LEASE, port)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.all.push(Replica {
            identity: identity.to_string(),
            log,
            port,
            child: Some(child),
            started: Instant::now(),
            stopped: false,
            exit: None,
        });
        self.all.len() - 1
    }

    fn add_slot(&mut self, identity: &str) -> usize {
        let i = self.spawn(identity);
        self.slots.push(i);
        self.slots.len() - 1
    }

    fn current(&mut self, slot: usize) -> &mut Replica {
        let i = self.slots[slot];
        &mut self.all[i]
    }

    /// Waits for the current incarnation of `slot` to exit (after a signal), up to `deadline`.
    /// `None` if it is still running then.
    fn wait_exit(&mut self, index: usize, deadline: Duration) -> Option<(ExitStatus, Duration)> {
        let started = Instant::now();
        let r = &mut self.all[index];
        let child = r.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                r.exit = Some(status);
                r.child = None;
                return Some((status, started.elapsed()));
            }
            if started.elapsed() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self, index: usize) {
        let r = &mut self.all[index];
        if let Some(mut child) = r.child.take() {
            if r.stopped {
                let _ = Command::new("kill")
                    .args(["-s", "CONT", &child.id().to_string()])
                    .status();
                r.stopped = false;
            }
            let _ = child.kill();
            r.exit = child.wait().ok();
        }
    }

    /// Which live, unpaused replicas report `shardctl_leader 1`.
    fn leaders(&self) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                let r = &self.all[**i];
                r.child.is_some() && !r.stopped
            })
            .filter(|(_, i)| {
                http_get(self.all[**i].port, "/metrics", Duration::from_millis(700))
                    .and_then(|(_, body)| leader_gauge(&body))
                    .unwrap_or(false)
            })
            .map(|(slot, _)| slot)
            .collect()
    }

    fn describe(&self) -> String {
        let mut s = format!("logs in {}:", self.dir.display());
        for r in &self.all {
            let _ = write!(s, "\n  {} -> {}", r.identity, r.log.display());
        }
        s
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for i in 0..self.all.len() {
            self.kill(i);
        }
    }
}

/// Reads what a log file gained since the last call.
struct LogTail {
    path: PathBuf,
    offset: u64,
}

impl LogTail {
    fn at_end(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogTail {
            path: path.to_path_buf(),
            offset,
        }
    }

    fn new_text(&mut self) -> String {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return String::new();
        };
        use std::io::Seek;
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return String::new();
        }
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        self.offset += s.len() as u64;
        s
    }
}

// ---------------------------------------------------------------------------------------------
// AWS: streams, lineage, journal, hot metrics
// ---------------------------------------------------------------------------------------------

/// The test's SDK clients, with the reads the checks need.
#[derive(Clone)]
struct Aws(Clients);

impl Aws {
    async fn new() -> Self {
        Aws(clients().await)
    }

    async fn create_stream(&self, name: &str, shards: i32) {
        create_stream(&self.0.kinesis, name, shards).await;
    }

    async fn stream_active(&self, name: &str) -> bool {
        is_active(&self.0.kinesis, name).await
    }

    /// Every shard, open and closed, with paging.
    async fn shards(&self, stream: &str) -> Result<Vec<aws_sdk_kinesis::types::Shard>, String> {
        list_shards(&self.0.kinesis, stream)
            .await
            .map_err(|e| format!("ListShards {stream}: {e:?}"))
    }

    /// The journal of `stream`, oldest first (sort keys are fixed-width timestamps).
    async fn journal(&self, table: &str, stream: &str) -> Result<Vec<Entry>, String> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .0
                .dynamodb
                .query()
                .table_name(table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_values(":pk", AttributeValue::S(format!("journal#{stream}")))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| format!("Query {table}: {e:?}"))?;
            for item in page.items() {
                out.push(Entry::from_item(item)?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// The leader item: (owner, fence, expiresAt ms).
    async fn leader_row(&self, table: &str) -> Option<(String, u64, i64)> {
        let out = self
            .0
            .dynamodb
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S("leader".into()))
            .key("sk", AttributeValue::S("leader".into()))
            .consistent_read(true)
            .send()
            .await
            .ok()?;
        let item = out.item()?;
        Some((
            item.get("owner")?.as_s().ok()?.clone(),
            item.get("fence")?.as_n().ok()?.parse().ok()?,
            item.get("expiresAt")?.as_n().ok()?.parse().ok()?,
        ))
    }

    /// A hot minute (100 % of both per-shard write limits) for each shard and minute.
    async fn publish_hot(&self, stream: &str, data: &[(String, i64)]) -> Result<(), String> {
        let minutes: Vec<ShardMinute> = data
            .iter()
            .map(|(shard, minute)| ShardMinute {
                shard: shard.clone(),
                minute: *minute,
                records: 60_000.0,
                bytes: 62_914_560.0,
            })
            .collect();
        put_shard_metrics(&self.0.cloudwatch, stream, &minutes)
            .await
            .map_err(|e| format!("PutMetricData: {e:?}"))
    }
}

/// kinesis-local (kinesis-mock) writes a shard's creation time, in whole seconds, into its
/// starting sequence number: hex `2` + 9 hex digits of Unix seconds + ... (kinesalite's layout).
/// That is the emulator's own record of when a split took effect. `None` for any other layout
/// (real Kinesis, another emulator): the checks that need it are then skipped and say so.
fn creation_secs(s: &aws_sdk_kinesis::types::Shard) -> Option<i64> {
    let seq = s.sequence_number_range()?.starting_sequence_number();
    let hex = decimal_to_hex(seq)?;
    if !hex.starts_with('2') || hex.len() < 12 {
        return None;
    }
    let secs = i64::from_str_radix(&hex[1..10], 16).ok()?;
    let now = Utc::now().timestamp();
    ((now - 7 * 86_400)..=(now + 86_400))
        .contains(&secs)
        .then_some(secs)
}

fn decimal_to_hex(dec: &str) -> Option<String> {
    let mut digits: Vec<u32> = dec.chars().map(|c| c.to_digit(10)).collect::<Option<_>>()?;
    if digits.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    while !(digits.is_empty() || digits.len() == 1 && digits[0] == 0) {
        let mut rem = 0;
        let mut next = Vec::with_capacity(digits.len());
        for d in &digits {
            let cur = rem * 10 + d;
            let q = cur / 16;
            rem = cur % 16;
            if !(next.is_empty() && q == 0) {
                next.push(q);
            }
        }
        out.push(std::char::from_digit(rem, 16)?);
        digits = next;
    }
    Some(out.iter().rev().collect())
}

/// One journal item.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    kind: String,
    shard_ids: Vec<String>,
    started_at: DateTime<Utc>,
    outcome: String,
    owner: Option<String>,
    fence: Option<u64>,
    finished_at: Option<DateTime<Utc>>,
}

impl Entry {
    fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, String> {
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let t = |k: &str| {
            s(k).and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let id = s("sk").ok_or_else(|| format!("journal item without sk: {item:?}"))?;
        Ok(Entry {
            kind: s("kind").unwrap_or_default(),
            shard_ids: item
                .get("shardIds")
                .and_then(|v| v.as_l().ok())
                .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
                .unwrap_or_default(),
            started_at: t("startedAt").ok_or_else(|| format!("entry {id}: no startedAt"))?,
            outcome: s("outcome").unwrap_or_default(),
            owner: s("owner"),
            fence: item
                .get("fence")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok()),
            finished_at: t("finishedAt"),
            id,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} {} [{}] outcome={} owner={} fence={} startedAt={}{}",
            self.id,
            self.kind,
            self.shard_ids.join(","),
            self.outcome,
            self.owner.as_deref().unwrap_or("?"),
            self.fence.map(|f| f.to_string()).unwrap_or("?".into()),
            self.started_at.format("%H:%M:%S%.3f"),
            self.finished_at
                .map(|t| format!(" finishedAt={}", t.format("%H:%M:%S%.3f")))
                .unwrap_or_default()
        )
    }
}

/// The stream the policy names now, and every stream the run used.
#[derive(Default)]
struct Streams {
    all: Vec<String>,
}

/// Policy of both tests: splits only, hot threshold 50 %, one-minute window, no metrics delay.
fn policy_yaml(stream: &str, max_shards: usize) -> String {
    format!(
        "apiVersion: shardctl.io/v1alpha1
kind: ScalingPolicy
spec:
  evaluationInterval: 10s
  streams:
    - name: {stream}
      maxShards: {max_shards}
      maxOperationsPerCycle: 1
      metricsDelay: 0s
      split:
        threshold: {{incomingBytes: 50, incomingRecords: 50}}
        stabilizationWindow: 1m
        splitPoint: midpoint
        selectPolicy: Max
        policies:
          - type: Shards
            value: {RATE_VALUE}
            period: {RATE_PERIOD_SECS}s
      merge:
        threshold: {{incomingBytes: 10, incomingRecords: 10}}
        selectPolicy: Disabled
"
    )
}

/// Keeps every open shard of the current stream hot (the current and previous minute, once per
/// shard and minute); with `rotate`, moves the policy to a fresh stream once the current one
/// reached `max_shards` and its journal (in `table`) has no operation in flight.
///
/// The journal condition is the operator's part, not the controller's: an operation whose stream
/// leaves the policy while it is in flight stays in flight in the journal until the stream
/// returns to a policy (the leader settles it on its first pass over that stream); removing a
/// stream in that window is what the analysis would then report as an entry left in flight.
struct Pressure {
    aws: Aws,
    table: String,
    streams: Arc<Mutex<Streams>>,
    policy: PathBuf,
    max_shards: usize,
    rotate: bool,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Pressure {
    async fn run(self, stop: Arc<AtomicBool>) {
        let mut published: HashSet<(String, String, i64)> = HashSet::new();
        while !stop.load(Ordering::Relaxed) {
            let stream = self.streams.lock().unwrap().all.last().cloned().unwrap();
            match self.aws.shards(&stream).await {
                Ok(shards) => {
                    let open: Vec<String> = shards
                        .iter()
                        .filter(|s| is_open(s))
                        .map(|s| s.shard_id().to_string())
                        .collect();
                    let minute = Utc::now().timestamp().div_euclid(60);
                    let mut data = Vec::new();
                    for id in &open {
                        for m in [minute - 1, minute] {
                            if published.insert((stream.clone(), id.clone(), m)) {
                                data.push((id.clone(), m));
                            }
                        }
                    }
                    if let Err(e) = self.aws.publish_hot(&stream, &data).await {
                        for (id, m) in &data {
                            published.remove(&(stream.clone(), id.clone(), *m));
                        }
                        self.errors.lock().unwrap().push(e);
                    }
                    if self.rotate
                        && open.len() >= self.max_shards
                        && self.aws.stream_active(&stream).await
                        && self
                            .aws
                            .journal(&self.table, &stream)
                            .await
                            .is_ok_and(|entries| entries.iter().all(|e| e.outcome != "inFlight"))
                    {
                        let next = unique("ha");
                        self.aws.create_stream(&next, 2).await;
                        self.streams.lock().unwrap().all.push(next.clone());
                        write_atomically(&self.policy, &policy_yaml(&next, self.max_shards));
                        println!(
                            "[ha] {stream} reached {} open shards: policy moved to {next}",
                            open.len()
                        );
                    }
                }
                Err(e) => self.errors.lock().unwrap().push(e),
            }
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
}

/// What the monitor saw while the test ran (sampled every ~300 ms).
#[derive(Default)]
struct Monitor {
    /// Instants at which two or more entries of one stream were in flight at once.
    double_in_flight: Vec<String>,
    /// The first instant each entry was seen settled, with its outcome; outcome changes.
    settled_seen: HashMap<String, (DateTime<Utc>, String)>,
    outcome_changes: Vec<String>,
    /// (observed at, owner, fence) whenever the leader item changed owner or fence.
    leader_changes: Vec<(DateTime<Utc>, String, u64)>,
    samples: u64,
    errors: u64,
}

async fn monitor(
    aws: Aws,
    table: String,
    streams: Arc<Mutex<Streams>>,
    out: Arc<Mutex<Monitor>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        // The current stream and the one before (a replica that has not reloaded the policy
        // yet may still act there); older ones are full and only checked at the end.
        let recent: Vec<String> = {
            let all = &streams.lock().unwrap().all;
            all[all.len().saturating_sub(2)..].to_vec()
        };
        for stream in &recent {
            let now = Utc::now();
            match aws.journal(&table, stream).await {
                Ok(entries) => {
                    let mut m = out.lock().unwrap();
                    m.samples += 1;
                    let in_flight: Vec<&Entry> =
                        entries.iter().filter(|e| e.outcome == "inFlight").collect();
                    if in_flight.len() > 1 {
                        let ids: Vec<String> = in_flight.iter().map(|e| e.describe()).collect();
                        m.double_in_flight.push(format!(
                            "{}: {stream}: {} entries in flight: {}",
                            now.format("%H:%M:%S%.3f"),
                            in_flight.len(),
                            ids.join(" | ")
                        ));
                    }
                    for e in entries.iter().filter(|e| e.outcome != "inFlight") {
                        match m.settled_seen.get(&e.id) {
                            None => {
                                m.settled_seen
                                    .insert(e.id.clone(), (now, e.outcome.clone()));
                            }
                            Some((_, o)) if *o != e.outcome => {
                                let change = format!(
                                    "{}: entry {} changed from {o} to {}",
                                    now.format("%H:%M:%S%.3f"),
                                    e.id,
                                    e.outcome
                                );
                                m.outcome_changes.push(change);
                                m.settled_seen
                                    .insert(e.id.clone(), (now, e.outcome.clone()));
                            }
                            Some(_) => {}
                        }
                    }
                }
                Err(_) => out.lock().unwrap().errors += 1,
            }
        }
        if let Some((owner, fence, _)) = aws.leader_row(&table).await {
            let mut m = out.lock().unwrap();
            if m.leader_changes
                .last()
                .is_none_or(|(_, o, f)| *o != owner || *f != fence)
            {
                m.leader_changes.push((Utc::now(), owner, fence));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// One JSON log line of a replica.
#[derive(Debug, Clone)]
struct LogEvent {
    at: DateTime<Utc>,
    /// The replica's `--identity`.
    who: String,
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl LogEvent {
    fn field(&self, name: &str) -> Option<String> {
        self.fields.get(name).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// Every JSON line of every log (other lines, e.g. `eprintln!` of failed passes, are skipped).
fn read_logs(replicas: &[(String, PathBuf)]) -> Vec<LogEvent> {
    let mut events = Vec::new();
    for (who, path) in replicas {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(at) = v
                .get("timestamp")
                .and_then(|t| t.as_str())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            else {
                continue;
            };
            let Some(fields) = v.get("fields").and_then(|f| f.as_object()) else {
                continue;
            };
            events.push(LogEvent {
                at: at.with_timezone(&Utc),
                who: who.clone(),
                message: fields
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_string(),
                fields: fields.clone(),
            });
        }
    }
    events.sort_by_key(|e| e.at);
    events
}

/// The identity part of a journal/lease owner (`<identity>/<pid>`).
fn identity_of(owner: &str) -> &str {
    owner.split('/').next().unwrap_or(owner)
}

// ---------------------------------------------------------------------------------------------
// The analysis
// ---------------------------------------------------------------------------------------------

/// One stream's ground truth after the run.
struct StreamFacts {
    name: String,
    shards: Vec<aws_sdk_kinesis::types::Shard>,
    entries: Vec<Entry>,
}

/// A split as Kinesis shows it: the parent and when (emulator seconds) its children appeared.
struct LineageSplit {
    parent: String,
    children: Vec<String>,
    created: Option<i64>,
}

#[derive(Default)]
struct Analysis {
    /// Violations of the properties under test, each with its evidence.
    anomalies: Vec<String>,
    /// Facts worth printing that are not violations, and checks that could not be made.
    notes: Vec<String>,
    lineage_splits: usize,
    succeeded: usize,
    failed: usize,
    in_flight: usize,
    max_open: usize,
}

fn fmt_t(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

fn secs_to_t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or_default()
}

/// Checks what the run left behind. Sources, all on this machine's one clock:
/// - Kinesis lineage (ListShards): every closed shard's children; kinesis-local also records
///   each child's creation second (see [`creation_secs`]), i.e. when the split took effect.
/// - The journal: one item per operation begun, with `startedAt`, `outcome`, `owner`, `fence`,
///   and `finishedAt` when the controller writes one (it did not before the fencing change).
/// - Each replica's JSON log: leadership acquired (owner, fence), operation journalled (id),
///   split requested / executed, operation finished (id, outcome), resolved (id, outcome),
///   reconcile failed (error).
/// - The monitor's samples of the journal every ~300 ms.
///
/// What this can prove and what it cannot:
/// - Exactly once with the true outcome: exact. Every split in the lineage must have exactly
///   one `succeeded` entry naming its parent, every `succeeded` entry a split in the lineage,
///   and no entry may stay `inFlight`.
/// - No two operations at once: with `finishedAt`, the `[startedAt, finishedAt]` windows of
///   one stream must be disjoint (exact, as far as the controller records when it is done).
///   Without it the journal alone only orders the starts (strictly increasing sort keys) and
///   cannot show how long an operation lasted, so the checks use independent evidence, each
///   sound but none complete: (a) a split that took effect (emulator second, floored) after the
///   next entry's `startedAt` was still being carried out when the next one began; (b) a replica
///   whose own entry had been resolved as `failed` by another replica and that afterwards
///   logged the split as requested issued it while the other one was acting; (c) Kinesis
///   rejecting a split the controller had revalidated just before (ACTIVE, shard open) means
///   another actor changed the stream in between (a lone leader never sees that; a split the
///   controller declined to send because its fence lapsed is not a rejection); (d) the
///   monitor seeing two entries of one stream `inFlight` at once. Overlaps shorter than a
///   monitor sample that leave no trace in the lineage, the logs or Kinesis' answers are not
///   seen.
/// - One actor: in each replica's own log (sound whatever the clocks or pauses), nothing is
///   journalled, resolved or sent to Kinesis between the end of a leadership ("leadership
///   lost", "leadership released") and the next "became leader"; an owner's late write of its
///   own outcome counts only if another replica had already written that entry's outcome.
///   What a deposed replica does before its own lease task notices the loss is not in its log
///   as such; the fence and lineage checks below cover the Kinesis side of that window.
/// - Fencing: fences must not decrease in `startedAt` order, no fence may be acquired by two
///   owners, and a split must not take effect after a higher fence was acquired (log time of
///   "leadership acquired" vs. the emulator's creation second). A call issued after the lease
///   merely expired, before anyone else took it, is not detected: nothing records expiry
///   moments except the leader item's `expiresAt`, which renewals overwrite.
/// - maxShards: splits only, so the final open count is the peak.
/// - Rate limit: at most `RATE_VALUE` non-failed splits with `startedAt` in any rolling
///   `RATE_PERIOD_SECS` (what the planner counts), and the same on the emulator's effect
///   seconds where that is certain despite their one-second resolution.
fn analyse(
    streams: &[StreamFacts],
    events: &[LogEvent],
    monitor: &Monitor,
    max_shards: usize,
) -> Analysis {
    let mut a = Analysis::default();

    // Leadership, from the logs.
    let acquisitions: Vec<(DateTime<Utc>, String, u64)> = events
        .iter()
        .filter(|e| e.message == "leadership acquired")
        .filter_map(|e| {
            Some((
                e.at,
                e.field("owner")?,
                e.field("fence")?.parse::<u64>().ok()?,
            ))
        })
        .collect();
    let mut fence_owner: HashMap<u64, String> = HashMap::new();
    for (at, owner, fence) in &acquisitions {
        if let Some(prev) = fence_owner.get(fence)
            && prev != owner
        {
            a.anomalies.push(format!(
                "fence {fence} acquired by two owners: {prev} and {owner} (at {})",
                fmt_t(*at)
            ));
        }
        fence_owner.entry(*fence).or_insert_with(|| owner.clone());
    }
    // The first moment a fence above `f` was acquired.
    let superseded_at = |f: u64| {
        acquisitions
            .iter()
            .filter(|(_, _, g)| *g > f)
            .map(|(t, o, g)| (*t, o.clone(), *g))
            .min_by_key(|(t, _, _)| *t)
    };

    for d in &monitor.double_in_flight {
        a.anomalies
            .push(format!("monitor saw concurrent in-flight entries: {d}"));
    }
    for c in &monitor.outcome_changes {
        a.anomalies
            .push(format!("monitor saw a settled outcome rewritten: {c}"));
    }

    // Each process acts only between "became leader" and the end of that leadership, in the
    // order of its own log (sound whatever the clocks or pauses: one process, one log). Starting
    // an operation, calling Kinesis or resolving an entry while not leading is an anomaly. An
    // owner recording the outcome of its own operation after losing leadership is one only if
    // another replica had already settled that entry (the late write overwrote it).
    let mut whos: Vec<&str> = events.iter().map(|e| e.who.as_str()).collect();
    whos.sort_unstable();
    whos.dedup();
    for who in whos {
        let mut leading: Option<&LogEvent> = None;
        let mut ended: Option<&LogEvent> = None;
        let mut own: HashSet<String> = HashSet::new();
        for e in events.iter().filter(|e| e.who == who) {
            let after = || {
                ended
                    .map(|x| format!("after '{}' at {}", x.message, fmt_t(x.at)))
                    .unwrap_or_else(|| "before it ever led".into())
            };
            match e.message.as_str() {
                "became leader" => {
                    leading = Some(e);
                    ended = None;
                }
                "leadership released"
                | "released leadership"
                | "lost leadership"
                | "leadership lost"
                | "leadership already lost" => {
                    if leading.is_some() {
                        ended = Some(e);
                    }
                    leading = None;
                }
                "operation journalled" => {
                    own.insert(e.field("id").unwrap_or_default());
                    if leading.is_none() {
                        a.anomalies.push(format!(
                            "{who} journalled {} at {} while not leading ({})",
                            e.field("id").unwrap_or_default(),
                            fmt_t(e.at),
                            after()
                        ));
                    }
                }
                "split requested" | "merge requested" | "executed" if leading.is_none() => {
                    a.anomalies.push(format!(
                        "{who} called Kinesis ('{}' {}) at {} while not leading ({})",
                        e.message,
                        e.field("shard")
                            .or_else(|| e.field("operation"))
                            .unwrap_or_default(),
                        fmt_t(e.at),
                        after()
                    ));
                }
                "resolved an operation left in flight" if leading.is_none() => {
                    a.anomalies.push(format!(
                        "{who} resolved entry {} as {} at {} while not leading ({})",
                        e.field("entry").unwrap_or_default(),
                        e.field("outcome").unwrap_or_default(),
                        fmt_t(e.at),
                        after()
                    ));
                }
                "operation finished" if leading.is_none() => {
                    let id = e.field("id").unwrap_or_default();
                    if !own.contains(&id) {
                        continue; // a resolution: its "resolved" line is judged above
                    }
                    let earlier = events.iter().find(|x| {
                        x.who != who
                            && x.message == "operation finished"
                            && x.field("id").as_deref() == Some(id.as_str())
                            && x.at < e.at
                    });
                    let line = format!(
                        "{who} wrote outcome {} of its own entry {id} at {} while not leading ({})",
                        e.field("outcome").unwrap_or_default(),
                        fmt_t(e.at),
                        after()
                    );
                    match earlier {
                        Some(x) => a.anomalies.push(format!(
                            "{line}, overwriting the outcome {} that {} had written at {}",
                            x.field("outcome").unwrap_or_default(),
                            x.who,
                            fmt_t(x.at)
                        )),
                        None => a.notes.push(line),
                    }
                }
                _ => {}
            }
        }
    }

    let mut have_creation_times = true;
    let mut have_finished_at = true;
    for s in streams {
        let stream = s.name.as_str();
        // Lineage.
        let open = s.shards.iter().filter(|x| is_open(x)).count();
        a.max_open = a.max_open.max(open);
        if open > max_shards {
            a.anomalies.push(format!(
                "{stream}: {open} open shards, maxShards is {max_shards}"
            ));
        }
        let mut splits: BTreeMap<String, LineageSplit> = BTreeMap::new();
        for x in &s.shards {
            if let Some(adjacent) = x.adjacent_parent_shard_id() {
                a.anomalies.push(format!(
                    "{stream}: {} is a merge of {} and {adjacent}; merges are disabled",
                    x.shard_id(),
                    x.parent_shard_id().unwrap_or("?")
                ));
                continue;
            }
            if let Some(parent) = x.parent_shard_id() {
                let created = creation_secs(x);
                have_creation_times &= created.is_some();
                let e = splits
                    .entry(parent.to_string())
                    .or_insert_with(|| LineageSplit {
                        parent: parent.to_string(),
                        children: Vec::new(),
                        created,
                    });
                e.children.push(x.shard_id().to_string());
                e.created = match (e.created, created) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        for sp in splits.values() {
            if sp.children.len() != 2 {
                a.anomalies.push(format!(
                    "{stream}: {} has {} children {:?}",
                    sp.parent,
                    sp.children.len(),
                    sp.children
                ));
            }
        }
        a.lineage_splits += splits.len();

        // Journal, on its own.
        let entries = &s.entries;
        for e in entries {
            match e.outcome.as_str() {
                "succeeded" => a.succeeded += 1,
                "failed" => a.failed += 1,
                "inFlight" => {
                    a.in_flight += 1;
                    a.anomalies.push(format!(
                        "{stream}: entry left in flight after every replica stopped: {}",
                        e.describe()
                    ));
                }
                other => a.anomalies.push(format!(
                    "{stream}: unknown outcome {other:?}: {}",
                    e.describe()
                )),
            }
            if e.kind != "split" {
                a.anomalies.push(format!(
                    "{stream}: a {} entry while merges are disabled: {}",
                    e.kind,
                    e.describe()
                ));
            }
            if e.shard_ids.len() != 1 {
                a.anomalies.push(format!(
                    "{stream}: split entry names {} shards: {}",
                    e.shard_ids.len(),
                    e.describe()
                ));
            }
            have_finished_at &= e.outcome == "inFlight" || e.finished_at.is_some();
        }
        for w in entries.windows(2) {
            if w[1].started_at <= w[0].started_at {
                a.anomalies.push(format!(
                    "{stream}: entries not strictly ordered by startedAt: {} then {}",
                    w[0].describe(),
                    w[1].describe()
                ));
            }
            if let (Some(f0), Some(f1)) = (w[0].fence, w[1].fence)
                && f1 < f0
            {
                a.anomalies.push(format!(
                    "{stream}: fence went back from {f0} to {f1}: {} then {}",
                    w[0].describe(),
                    w[1].describe()
                ));
            }
            if let Some(f0) = w[0].finished_at
                && f0 > w[1].started_at
            {
                a.anomalies.push(format!(
                    "{stream}: overlapping operations: {} finished at {} after {} started",
                    w[0].id,
                    fmt_t(f0),
                    w[1].describe()
                ));
            }
        }
        if entries.iter().any(|e| e.fence.is_none()) {
            a.notes.push(format!(
                "{stream}: some entries carry no fence; the fence order check skipped them"
            ));
        }

        // Journal against lineage: exactly once, true outcome.
        for sp in splits.values() {
            let claims: Vec<&Entry> = entries
                .iter()
                .filter(|e| e.outcome == "succeeded" && e.shard_ids == [sp.parent.clone()])
                .collect();
            if claims.len() != 1 {
                let all: Vec<String> = entries
                    .iter()
                    .filter(|e| e.shard_ids.contains(&sp.parent))
                    .map(|e| e.describe())
                    .collect();
                a.anomalies.push(format!(
                    "{stream}: the split of {} (children {:?}, created {}) is recorded as succeeded {} times; entries naming it: [{}]",
                    sp.parent,
                    sp.children,
                    sp.created.map(|c| fmt_t(secs_to_t(c))).unwrap_or("?".into()),
                    claims.len(),
                    all.join(" | ")
                ));
            }
        }
        for e in entries.iter().filter(|e| e.outcome == "succeeded") {
            if !e.shard_ids.iter().all(|p| splits.contains_key(p)) {
                a.anomalies.push(format!(
                    "{stream}: succeeded entry without a split in the lineage: {}",
                    e.describe()
                ));
            }
        }

        // Effect times against the journal: an effect before its entry, or after the next one
        // began.
        for (i, e) in entries.iter().enumerate() {
            if e.outcome != "succeeded" {
                continue;
            }
            let Some(created) = e
                .shard_ids
                .first()
                .and_then(|p| splits.get(p))
                .and_then(|sp| sp.created)
            else {
                continue;
            };
            if secs_to_t(created + 1) <= e.started_at {
                a.anomalies.push(format!(
                    "{stream}: the split of {:?} took effect in second {} before its entry began: {}",
                    e.shard_ids,
                    fmt_t(secs_to_t(created)),
                    e.describe()
                ));
            }
            if let Some(next) = entries.get(i + 1)
                && secs_to_t(created) > next.started_at
            {
                a.anomalies.push(format!(
                    "{stream}: overlapping operations: the split of {:?} took effect at {} or later, after the next operation began: {} then {}",
                    e.shard_ids,
                    fmt_t(secs_to_t(created)),
                    e.describe(),
                    next.describe()
                ));
            }
            if let Some(fence) = e.fence
                && let Some((t, owner, g)) = superseded_at(fence)
                && secs_to_t(created) > t
            {
                a.anomalies.push(format!(
                    "{stream}: split issued without a current fence: it took effect at {} or later, but {owner} had acquired fence {g} at {}: {}",
                    fmt_t(secs_to_t(created)),
                    fmt_t(t),
                    e.describe()
                ));
            }
        }

        // Rate limit on startedAt (what the planner counts) and on effect seconds.
        let effective: Vec<&Entry> = entries.iter().filter(|e| e.outcome != "failed").collect();
        for (i, e) in effective.iter().enumerate() {
            let window_start = e.started_at - chrono::Duration::seconds(RATE_PERIOD_SECS);
            let n = effective[..=i]
                .iter()
                .filter(|x| x.started_at > window_start)
                .count();
            if n > RATE_VALUE {
                a.anomalies.push(format!(
                    "{stream}: rate limit broken: {n} splits started within {RATE_PERIOD_SECS}s up to {}",
                    e.describe()
                ));
            }
        }
        let mut effects: Vec<i64> = splits.values().filter_map(|s| s.created).collect();
        effects.sort_unstable();
        for w in effects.windows(RATE_VALUE + 1) {
            if w[RATE_VALUE] + 1 - w[0] < RATE_PERIOD_SECS {
                a.anomalies.push(format!(
                    "{stream}: rate limit broken in Kinesis: {} splits took effect between {} and {}",
                    RATE_VALUE + 1,
                    fmt_t(secs_to_t(w[0])),
                    fmt_t(secs_to_t(w[RATE_VALUE] + 1))
                ));
            }
        }

        // Logs: who settled each entry, when the owner issued its call, and Kinesis' answer.
        for e in entries {
            let owner = e.owner.as_deref().map(identity_of).unwrap_or("");
            let journalled = events.iter().find(|x| {
                x.message == "operation journalled" && x.field("id").as_deref() == Some(&e.id)
            });
            // Journal writes of the outcome (a resolver logs "operation finished" too).
            let settles: Vec<&LogEvent> = events
                .iter()
                .filter(|x| {
                    x.message == "operation finished" && x.field("id").as_deref() == Some(&e.id)
                })
                .collect();
            let resolutions: Vec<&LogEvent> = events
                .iter()
                .filter(|x| {
                    x.message == "resolved an operation left in flight"
                        && x.field("entry").as_deref() == Some(&e.id)
                })
                .collect();
            let outcome_of =
                |x: &LogEvent| x.field("outcome").unwrap_or_default().to_ascii_lowercase();
            if settles.len() > 1 {
                let list: Vec<String> = settles
                    .iter()
                    .map(|x| format!("{} by {} at {}", outcome_of(x), x.who, fmt_t(x.at)))
                    .collect();
                let distinct: HashSet<String> = settles.iter().map(|x| outcome_of(x)).collect();
                let line = format!(
                    "{stream}: outcome of {} written {} times: {}",
                    e.id,
                    settles.len(),
                    list.join(", ")
                );
                if distinct.len() > 1 {
                    a.anomalies.push(format!("outcome rewritten: {line}"));
                } else {
                    a.notes.push(line);
                }
            }
            let Some(journalled) = journalled else {
                a.notes.push(format!(
                    "{stream}: no 'operation journalled' log line for {}",
                    e.describe()
                ));
                continue;
            };
            // The owner's lines after journalling it, up to its next journalled operation.
            let owner_lines: Vec<&LogEvent> = events
                .iter()
                .filter(|x| x.who == journalled.who && x.at >= journalled.at)
                .take_while(|x| {
                    !(x.message == "operation journalled"
                        && x.field("id").as_deref() != Some(&e.id))
                })
                .collect();
            let requested = owner_lines
                .iter()
                .find(|x| x.message == "split requested" || x.message == "executed");
            let resolved_failed_by_other = resolutions
                .iter()
                .find(|x| x.who != owner && outcome_of(x) == "failed");
            if let (Some(req), Some(res)) = (requested, resolved_failed_by_other)
                && req.at > res.at
            {
                a.anomalies.push(format!(
                    "{stream}: {} issued its split after {} had resolved the entry as failed ({} > {}): {}",
                    req.who,
                    res.who,
                    fmt_t(req.at),
                    fmt_t(res.at),
                    e.describe()
                ));
            }
            let owner_failed = owner_lines.iter().find(|x| {
                x.message == "operation finished"
                    && x.field("id").as_deref() == Some(&e.id)
                    && outcome_of(x) == "failed"
            });
            if let Some(f) = owner_failed {
                let failure = owner_lines
                    .iter()
                    .find(|x| x.message == "reconcile failed" && x.at >= f.at);
                let reason = failure.and_then(|x| x.field("reason")).unwrap_or_default();
                let why = failure
                    .and_then(|x| x.field("error"))
                    .unwrap_or_else(|| "no error logged".into());
                if reason == "fenced" || why.contains("not sent") {
                    // The controller declined to send it (its fence was no longer current).
                    a.notes.push(format!(
                        "{stream}: {} did not send its split, fence no longer current: {} ({why})",
                        f.who,
                        e.describe()
                    ));
                } else {
                    a.anomalies.push(format!(
                        "{stream}: Kinesis rejected a split that {} had revalidated just before, so another actor changed the stream in between: {} ({why})",
                        f.who,
                        e.describe()
                    ));
                }
            }
        }
    }
    if !have_creation_times {
        a.notes.push(
            "the shard lineage carries no creation times (not kinesis-local?): effect-time checks skipped"
                .into(),
        );
    }
    if !have_finished_at {
        a.notes.push(
            "the journal records no finishedAt: overlap judged from lineage effect times, logs and the monitor only"
                .into(),
        );
    }
    a
}

async fn collect_facts(aws: &Aws, table: &str, streams: &[String]) -> Vec<StreamFacts> {
    let mut out = Vec::new();
    for s in streams {
        out.push(StreamFacts {
            name: s.clone(),
            shards: aws.shards(s).await.unwrap(),
            entries: aws.journal(table, s).await.unwrap(),
        });
    }
    out
}

/// Waits until no stream's journal shows an entry in flight (a leader settles them).
async fn wait_settled(aws: &Aws, table: &str, streams: &[String], deadline: Duration) -> bool {
    let start = Instant::now();
    loop {
        let mut any = false;
        for s in streams {
            any |= aws
                .journal(table, s)
                .await
                .map(|j| j.iter().any(|e| e.outcome == "inFlight"))
                .unwrap_or(true);
        }
        if !any {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_analysis(title: &str, a: &Analysis) {
    println!("{title}");
    println!(
        "  operations: {} splits in the lineage; journal: {} succeeded, {} failed, {} in flight; peak open shards {}",
        a.lineage_splits, a.succeeded, a.failed, a.in_flight, a.max_open
    );
    println!("  anomalies: {}", a.anomalies.len());
    for x in &a.anomalies {
        println!("    ANOMALY {x}");
    }
    for x in &a.notes {
        println!("    note: {x}");
    }
}

/// Stops the background tasks (and sampler threads) when dropped, also on panic.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Test 1: random kills, pauses and terms
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Term,
    Kill,
    Stop,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn leaders_under_random_kills_pauses_and_terms_never_reshard_at_once() {
    require_emulators();
    let bin = shardctl_binary();
    let rounds = env_u64("SHARDCTL_HA_ROUNDS").unwrap_or(12) as usize;
    let seed = env_u64("SHARDCTL_HA_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let mut rng = Rng::new(seed);
    let max_shards = 8;
    let aws = Aws::new().await;
    let table = unique("ha-state");
    let first = unique("ha");
    let dir = temp_dir("ha-faults");
    println!(
        "[ha] seed {seed} (SHARDCTL_HA_SEED), {rounds} rounds (SHARDCTL_HA_ROUNDS), logs in {}",
        dir.display()
    );
    aws.create_stream(&first, 2).await;
    let policy = dir.join("policy.yaml");
    write_atomically(&policy, &policy_yaml(&first, max_shards));

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let streams = Arc::new(Mutex::new(Streams {
        all: vec![first.clone()],
    }));
    let pump_errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let pump = tokio::spawn(
        Pressure {
            aws: aws.clone(),
            table: table.clone(),
            streams: streams.clone(),
            policy: policy.clone(),
            max_shards,
            rotate: true,
            errors: pump_errors.clone(),
        }
        .run(stop.clone()),
    );
    let seen: Arc<Mutex<Monitor>> = Arc::default();
    let watcher = tokio::spawn(monitor(
        aws.clone(),
        table.clone(),
        streams.clone(),
        seen.clone(),
        stop.clone(),
    ));

    let mut fleet = Fleet::new(bin, policy.clone(), &table, dir.clone());
    for slot in 0..3 {
        fleet.add_slot(&format!("pod-{slot}"));
    }
    let context = |fleet: &Fleet| format!("seed {seed}; {}", fleet.describe());
    // Someone leads before the first fault.
    let started = Instant::now();
    while fleet.leaders().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no replica became leader within 60 s; {}",
            context(&fleet)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut restarts = [0usize; 3];
    let mut hung: Vec<String> = Vec::new();
    let mut exits: Vec<String> = Vec::new();
    let run_start = Instant::now();
    for round in 0..rounds {
        let fault = [Fault::Term, Fault::Kill, Fault::Stop][rng.below(3)];
        // Half the rounds aim at the leader right when it plans, journals or executes.
        let (slot, trigger) = if rng.below(2) == 0 {
            let leaders = fleet.leaders();
            let slot = leaders.first().copied().unwrap_or_else(|| rng.below(3));
            let trigger = ["planned", "operation journalled", "split requested"][rng.below(3)];
            (slot, Some(trigger))
        } else {
            (rng.below(3), None)
        };
        let mut hit = "random moment".to_string();
        if let Some(trigger) = trigger {
            let mut tail = LogTail::at_end(&fleet.current(slot).log.clone());
            let waited = Instant::now();
            hit = format!("timeout waiting for '{trigger}'");
            while waited.elapsed() < Duration::from_secs(25) {
                let text = tail.new_text();
                if text.contains(&format!("\"message\":\"{trigger}\"")) {
                    hit = format!("on '{trigger}'");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
        let (identity, pid, index) = {
            let i = fleet.slots[slot];
            let r = &fleet.all[i];
            (r.identity.clone(), r.pid().unwrap(), i)
        };
        *counts.entry(format!("{fault:?}")).or_default() += 1;
        if hit.starts_with("on ") {
            *counts.entry("aimed at an operation".into()).or_default() += 1;
        }
        println!(
            "[ha] round {round} at {:.1}s: {fault:?} {identity} (pid {pid}), {hit}",
            rel(Instant::now(), run_start)
        );
        match fault {
            Fault::Term => {
                signal(pid, "TERM");
                match fleet.wait_exit(index, EXIT_DEADLINE) {
                    Some((status, took)) => exits.push(format!(
                        "{identity}: {status} {:.1}s after SIGTERM",
                        took.as_secs_f64()
                    )),
                    None => {
                        hung.push(format!(
                            "{identity} did not exit within {EXIT_DEADLINE:?} of SIGTERM"
                        ));
                        fleet.kill(index);
                    }
                }
            }
            Fault::Kill => fleet.kill(index),
            Fault::Stop => {
                signal(pid, "STOP");
                fleet.all[index].stopped = true;
                tokio::time::sleep(rng.millis(4_000, 6_500)).await;
                signal(pid, "CONT");
                fleet.all[index].stopped = false;
            }
        }
        if fault != Fault::Stop {
            restarts[slot] += 1;
            let i = fleet.spawn(&format!("pod-{slot}-r{}", restarts[slot]));
            fleet.slots[slot] = i;
        }
        tokio::time::sleep(rng.millis(1_500, 4_500)).await;
    }
    let fault_phase = run_start.elapsed();

    // Quiesce: every replica runs, a leader settles whatever is in flight; then stop them all
    // with SIGTERM, as Kubernetes would.
    let all_streams = streams.lock().unwrap().all.clone();
    let settled = wait_settled(&aws, &table, &all_streams, Duration::from_secs(90)).await;
    for slot in 0..3 {
        let i = fleet.slots[slot];
        let (identity, pid) = (fleet.all[i].identity.clone(), fleet.all[i].pid());
        if let Some(pid) = pid {
            signal(pid, "TERM");
            match fleet.wait_exit(i, EXIT_DEADLINE) {
                Some((status, took)) => exits.push(format!(
                    "{identity}: {status} {:.1}s after the final SIGTERM",
                    took.as_secs_f64()
                )),
                None => {
                    hung.push(format!(
                        "{identity} did not exit within {EXIT_DEADLINE:?} of the final SIGTERM"
                    ));
                    fleet.kill(i);
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    pump.await.unwrap();
    watcher.await.unwrap();

    let all_streams = streams.lock().unwrap().all.clone();
    let facts = collect_facts(&aws, &table, &all_streams).await;
    let logs: Vec<(String, PathBuf)> = fleet
        .all
        .iter()
        .map(|r| (r.identity.clone(), r.log.clone()))
        .collect();
    let events = read_logs(&logs);
    let m = seen.lock().unwrap();
    let mut analysis = analyse(&facts, &events, &m, max_shards);
    if !settled {
        analysis.notes.push(
            "entries were still in flight 90 s after the last fault (see 'left in flight')".into(),
        );
    }
    for h in &hung {
        analysis.anomalies.push(h.clone());
    }

    println!(
        "\n[ha] fault test: seed {seed}, {rounds} rounds in {:.0}s, {} streams, {} replica processes",
        fault_phase.as_secs_f64(),
        all_streams.len(),
        fleet.all.len()
    );
    for (k, v) in &counts {
        println!("  {k}: {v}");
    }
    println!(
        "  leader changes seen by the monitor: {} (journal samples {}, failed samples {})",
        m.leader_changes.len().saturating_sub(1),
        m.samples,
        m.errors
    );
    let nonzero = exits
        .iter()
        .filter(|e| !e.contains("exit status: 0"))
        .count();
    println!(
        "  exits after SIGTERM: {} ({} non-zero)",
        exits.len(),
        nonzero
    );
    for e in &exits {
        println!("    {e}");
    }
    let pump_errors = pump_errors.lock().unwrap();
    if !pump_errors.is_empty() {
        println!(
            "  metric pump errors: {} (first: {})",
            pump_errors.len(),
            pump_errors[0]
        );
    }
    print_analysis("[ha] ground truth:", &analysis);
    for f in &facts {
        println!("  journal of {}:", f.name);
        for e in &f.entries {
            println!("    {}", e.describe());
        }
    }
    assert!(
        analysis.lineage_splits > 0,
        "no split happened at all: the test exercised nothing; {}",
        context(&fleet)
    );
    assert!(
        analysis.anomalies.is_empty(),
        "{} anomalies (listed above), first: {}; {}",
        analysis.anomalies.len(),
        analysis.anomalies[0],
        context(&fleet)
    );
}

// ---------------------------------------------------------------------------------------------
// Test 2: rolling update
// ---------------------------------------------------------------------------------------------

/// One probe of one replica.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    ready: Option<bool>,
    healthy: Option<bool>,
    leader: Option<bool>,
}

/// Polls a replica's probes every ~250 ms on a thread of its own until stopped.
fn sampler(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let t = Duration::from_millis(400);
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            let probe = |path: &str| http_get(port, path, t).map(|(status, _)| status == 200);
            let ready = probe("/readyz");
            let healthy = probe("/healthz");
            let leader = http_get(port, "/metrics", t).and_then(|(_, b)| leader_gauge(&b));
            out.push(Sample {
                at,
                ready,
                healthy,
                leader,
            });
            std::thread::sleep(Duration::from_millis(250));
        }
        out
    })
}

/// Intervals (relative seconds) in which consecutive samples said leader.
fn leader_intervals(samples: &[Sample], zero: Instant) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut open: Option<(f64, f64)> = None;
    for s in samples {
        let t = rel(s.at, zero);
        match (s.leader == Some(true), open.as_mut()) {
            (true, Some(iv)) => iv.1 = t,
            (true, None) => open = Some((t, t)),
            (false, Some(_)) => out.push(open.take().unwrap()),
            (false, None) => {}
        }
    }
    out.extend(open);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn rolling_update_keeps_one_actor_and_ready_pods() {
    require_emulators();
    let bin = shardctl_binary();
    // A pod is expected Ready this many probes (~250 ms apart plus probe time) after it starts:
    // the loop ticks at once and a standby needs only the state table (intended semantics).
    const READY_POLLS: usize = 80;
    let max_shards = 64;
    let aws = Aws::new().await;
    let table = unique("ha-roll-state");
    let stream = unique("ha-roll");
    let dir = temp_dir("ha-rollout");
    println!("[rollout] logs in {}", dir.display());
    aws.create_stream(&stream, 2).await;
    let policy = dir.join("policy.yaml");
    write_atomically(&policy, &policy_yaml(&stream, max_shards));

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let streams = Arc::new(Mutex::new(Streams {
        all: vec![stream.clone()],
    }));
    let pump = tokio::spawn(
        Pressure {
            aws: aws.clone(),
            table: table.clone(),
            streams: streams.clone(),
            policy: policy.clone(),
            max_shards,
            rotate: false,
            errors: Arc::default(),
        }
        .run(stop.clone()),
    );
    let seen: Arc<Mutex<Monitor>> = Arc::default();
    let watcher = tokio::spawn(monitor(
        aws.clone(),
        table.clone(),
        streams.clone(),
        seen.clone(),
        stop.clone(),
    ));

    let zero = Instant::now();
    let mut fleet = Fleet::new(bin, policy.clone(), &table, dir.clone());
    let mut samplers = Vec::new();
    let a = fleet.add_slot("pod-a");
    samplers.push(sampler(fleet.current(a).port, stop.clone()));
    let started = Instant::now();
    while fleet.leaders() != vec![a] {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "pod-a did not lead within 60 s; {}",
            fleet.describe()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let b = fleet.add_slot("pod-b");
    samplers.push(sampler(fleet.current(b).port, stop.clone()));
    // The rollout: a surged new pod first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = fleet.add_slot("pod-c");
    samplers.push(sampler(fleet.current(c).port, stop.clone()));
    let c_port = fleet.current(c).port;
    // Kubernetes waits for the new pod's readiness before terminating an old one; we wait the
    // same bounded number of probes, and go on either way (the check comes at the end).
    let mut c_ready_after = None;
    for poll in 1..=READY_POLLS {
        if http_get(c_port, "/readyz", Duration::from_millis(400)).is_some_and(|(s, _)| s == 200) {
            c_ready_after = Some(poll);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // SIGTERM to the leader in the middle of an operation.
    let a_log = fleet.current(a).log.clone();
    let mut tail = LogTail::at_end(&a_log);
    let waited = Instant::now();
    let mut mid_op = false;
    while waited.elapsed() < Duration::from_secs(120) {
        let text = tail.new_text();
        if text.contains("\"message\":\"operation journalled\"")
            || text.contains("\"message\":\"split requested\"")
        {
            mid_op = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert!(
        mid_op,
        "pod-a journalled no operation within 120 s under hot pressure; {}",
        fleet.describe()
    );
    let term_a = Instant::now();
    let a_index = fleet.slots[a];
    signal(fleet.all[a_index].pid().unwrap(), "TERM");
    let a_exit = fleet.wait_exit(a_index, EXIT_DEADLINE);
    let handover_a = {
        let start = Instant::now();
        loop {
            let l = fleet.leaders();
            if !l.is_empty() {
                break Some((l, term_a.elapsed()));
            }
            if start.elapsed() > Duration::from_secs(60) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    // Then SIGTERM to the old standby.
    let term_b = Instant::now();
    let b_index = fleet.slots[b];
    signal(fleet.all[b_index].pid().unwrap(), "TERM");
    let b_exit = fleet.wait_exit(b_index, EXIT_DEADLINE);
    let handover_b = {
        let start = Instant::now();
        loop {
            let l = fleet.leaders();
            if l == vec![c] {
                break Some(term_b.elapsed());
            }
            if start.elapsed() > Duration::from_secs(60) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Let C act for a few seconds as the only replica, then stop it and everything else.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled = wait_settled(
        &aws,
        &table,
        std::slice::from_ref(&stream),
        Duration::from_secs(60),
    )
    .await;
    let c_index = fleet.slots[c];
    signal(fleet.all[c_index].pid().unwrap(), "TERM");
    let c_exit = fleet.wait_exit(c_index, EXIT_DEADLINE);
    stop.store(true, Ordering::Relaxed);
    let timelines: Vec<Vec<Sample>> = samplers.into_iter().map(|h| h.join().unwrap()).collect();
    pump.await.unwrap();
    watcher.await.unwrap();

    // The evidence.
    let names = ["pod-a", "pod-b", "pod-c"];
    let starts = [
        fleet.all[a_index].started,
        fleet.all[b_index].started,
        fleet.all[c_index].started,
    ];
    let mut problems: Vec<String> = Vec::new();
    println!("\n[rollout] timeline (seconds since pod-a started):");
    for (i, samples) in timelines.iter().enumerate() {
        let first_ready = samples
            .iter()
            .position(|s| s.ready == Some(true))
            .map(|p| (p + 1, rel(samples[p].at, zero)));
        let healthy = samples.iter().filter(|s| s.healthy == Some(true)).count();
        let answered = samples.iter().filter(|s| s.ready.is_some()).count();
        println!(
            "  {}: started {:.1}s, {} probes ({} answered), healthy in {}, first ready {}, leader {:?}",
            names[i],
            rel(starts[i], zero),
            samples.len(),
            answered,
            healthy,
            first_ready
                .map(|(p, t)| format!("at probe {p} ({t:.1}s)"))
                .unwrap_or("never".into()),
            leader_intervals(samples, zero)
                .iter()
                .map(|(x, y)| format!("{x:.1}-{y:.1}s"))
                .collect::<Vec<_>>()
        );
        match first_ready {
            Some((p, _)) if p <= READY_POLLS => {}
            _ => problems.push(format!(
                "{} was not Ready within {READY_POLLS} probes of its start (a standby should be Ready once its loop runs and the state table answers): first ready {:?}",
                names[i],
                first_ready.map(|(p, t)| format!("probe {p} at {t:.1}s"))
            )),
        }
        // Once ready, a pod stays ready until it is told to stop.
        let term = [Some(term_a), Some(term_b), None][i];
        if let Some((p, _)) = first_ready {
            let flap = samples[p..]
                .iter()
                .filter(|s| term.is_none_or(|t| s.at < t))
                .find(|s| s.ready == Some(false));
            if let Some(s) = flap {
                problems.push(format!(
                    "{} turned not-ready at {:.1}s before it was told to stop",
                    names[i],
                    rel(s.at, zero)
                ));
            }
        }
    }
    if c_ready_after.is_none() {
        problems.push(format!(
            "the surged pod-c (standby) was not Ready within {READY_POLLS} probes: the rollout would have stalled here"
        ));
    }
    // At most one leader: a sample of one pod saying leader that falls strictly between two
    // consecutive leader samples of another pod (the gauge is set after each lease step, so
    // this is conservative: it never flags an ordinary handover).
    for (i, si) in timelines.iter().enumerate() {
        for w in si.windows(2) {
            if w[0].leader != Some(true) || w[1].leader != Some(true) {
                continue;
            }
            for (j, sj) in timelines.iter().enumerate() {
                if i == j {
                    continue;
                }
                if let Some(s) = sj
                    .iter()
                    .find(|s| s.leader == Some(true) && s.at > w[0].at && s.at < w[1].at)
                {
                    problems.push(format!(
                        "two leaders: {} said leader at {:.2}s between {}'s leader samples at {:.2}s and {:.2}s",
                        names[j],
                        rel(s.at, zero),
                        names[i],
                        rel(w[0].at, zero),
                        rel(w[1].at, zero)
                    ));
                }
            }
        }
    }
    for (name, exit, deadline_note) in [
        ("pod-a (leader, mid-operation)", a_exit, "SIGTERM"),
        ("pod-b (old standby)", b_exit, "SIGTERM"),
        ("pod-c (last pod)", c_exit, "SIGTERM"),
    ] {
        match exit {
            Some((status, took)) => {
                println!(
                    "  {name}: {status} {:.1}s after {deadline_note}",
                    took.as_secs_f64()
                );
                if !status.success() {
                    problems.push(format!("{name} exited with {status} after SIGTERM"));
                }
            }
            None => problems.push(format!(
                "{name} did not exit within {EXIT_DEADLINE:?} of SIGTERM"
            )),
        }
    }
    match &handover_a {
        Some((l, t)) => println!(
            "  handover after SIGTERM to pod-a: {:.1}s to {}",
            t.as_secs_f64(),
            l.iter().map(|s| names[*s]).collect::<Vec<_>>().join("+")
        ),
        None => problems.push("no leader within 60 s of SIGTERM to pod-a".into()),
    }
    match handover_b {
        Some(t) => println!(
            "  pod-c sole leader {:.1}s after SIGTERM to pod-b",
            t.as_secs_f64()
        ),
        None => problems.push("pod-c did not lead within 60 s of SIGTERM to pod-b".into()),
    }
    // Handover times from the logs (more precise than probes).
    let logs: Vec<(String, PathBuf)> = fleet
        .all
        .iter()
        .map(|r| (r.identity.clone(), r.log.clone()))
        .collect();
    let events = read_logs(&logs);
    for e in events.iter().filter(|e| {
        matches!(
            e.message.as_str(),
            "became leader"
                | "leadership released"
                | "shutdown requested: finishing the operation in flight, then releasing leadership"
        )
    }) {
        println!(
            "    {} {}: {}",
            e.at.format("%H:%M:%S%.3f"),
            e.who,
            e.message
        );
    }
    // SIGTERM means "finish the operation in flight, then release leadership" (the log says
    // so): a replica must not hand over while its own operation is still running.
    for r in events
        .iter()
        .filter(|e| e.message == "leadership released" || e.message == "released leadership")
    {
        let mut own = events
            .iter()
            .filter(|j| j.who == r.who && j.message == "operation journalled" && j.at <= r.at);
        let unfinished = own.find_map(|j| {
            let id = j.field("id")?;
            let done = events.iter().find(|f| {
                f.who == r.who
                    && f.message == "operation finished"
                    && f.field("id").as_deref() == Some(id.as_str())
                    && f.at <= r.at
            });
            done.is_none().then_some((id, j.at))
        });
        if let Some((id, at)) = unfinished {
            let finished = events
                .iter()
                .find(|f| {
                    f.who == r.who
                        && f.message == "operation finished"
                        && f.field("id").as_deref() == Some(id.as_str())
                })
                .map(|f| fmt_t(f.at))
                .unwrap_or("never".into());
            let problem = format!(
                "{} released leadership at {} while its operation {id} (journalled at {}) was still in flight; it wrote the outcome at {finished}",
                r.who,
                fmt_t(r.at),
                fmt_t(at)
            );
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
    }
    if !settled {
        problems.push("an entry stayed in flight 60 s after the rollout".into());
    }
    let facts = collect_facts(&aws, &table, std::slice::from_ref(&stream)).await;
    let m = seen.lock().unwrap();
    let analysis = analyse(&facts, &events, &m, max_shards);
    print_analysis("[rollout] ground truth:", &analysis);
    for f in &facts {
        for e in &f.entries {
            println!("    {}", e.describe());
        }
    }
    problems.extend(analysis.anomalies.iter().cloned());
    println!("  problems: {}", problems.len());
    for p in &problems {
        println!("    PROBLEM {p}");
    }
    assert!(
        problems.is_empty(),
        "{} problems (listed above), first: {}; {}",
        problems.len(),
        problems[0],
        fleet.describe()
    );
}
