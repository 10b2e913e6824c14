//! Side by side on the same emulators, in one run: a real KCL worker (kcl-rs 0.1.4, the Rust
//! port of the Java KCL 3.x, driven from Python by `tests/kcl/bench_processor.py`) and a
//! shardctl-consumer [`Worker`], each in POLLING and in enhanced fan-out (FANOUT) retrieval, each
//! with a no-op processor that checkpoints after every batch.
//!
//! ```text
//! scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"
//! cargo bench -p shardctl-consumer --bench kcl_side_by_side
//! BENCH_RUN=shardctl-polling,kcl-polling BENCH_RECORDS=50000 cargo bench -p shardctl-consumer --bench kcl_side_by_side
//! ```
//!
//! Every consumer runs as its own child process: kcl-rs under `$SHARDCTL_PYTHON`, the
//! shardctl-consumer side as this bench binary re-executed with `SHARDCTL_BENCH_CONSUMER_CHILD`
//! set. The children report `initialize`, every non-empty batch and `shard_ended` as JSON lines
//! on stdout. The rows run one after the other; each row uses two fresh streams, each with its
//! own consumer and lease table (`<stream>-app`; for FANOUT also the stream consumer's name):
//!
//! 1. **CPU s / 100k records** (drain stream, `BENCH_SHARDS` shards): a backlog of
//!    `BENCH_RECORDS` records is produced first (not measured), then the consumer starts; its
//!    user+sys CPU time from `/proc/<pid>/stat` (read the same way for both) from its first
//!    `initialize` to the last backlog record processed, scaled to 100,000 records.
//!    Start-up (Python interpreter, SDK set-up, lease table creation, kcl-rs's random 0-30 s
//!    wait before its first lease) is reported apart, as is the CPU rate while idle and caught
//!    up afterwards (`BENCH_IDLE_WINDOW_SECS`), and a nanosecond cross-check summed from
//!    `/proc/<pid>/task/*/schedstat` (the ticks are 10 ms). The kcl-rs figures include the
//!    Python callbacks (record objects built by PyO3, the GIL). kinesis-local's and moto's own
//!    CPU is not counted.
//! 2. **put-to-process latency p50/p99** (live stream, 1 shard, caught up): probes are put one
//!    per `PutRecords` call at `BENCH_RATE`/s for `BENCH_LATENCY_SECS` s; each payload carries
//!    its put time (unix µs, taken right before the call) and the processor records
//!    `now - put time` when the batch reaches it.
//! 3. **reshard transition** (the same live stream): with records flowing
//!    (`BENCH_RESHARD_RATE`/s over 64 keys), the shard being read is split `BENCH_RESHARDS`
//!    times in a row (each time one that the consumer read); each transition is the time from
//!    the parent's `SHARD_END` checkpoint (when `checkpoint_shard_end()`, or kcl-rs's
//!    `checkpoint()` in `shard_ended`, returned) to the first batch of one of its children
//!    reaching the processor.
//!
//! The live consumer starts first, so that its start-up overlaps the backlog production; it
//! idles beside the drain consumer, whose CPU alone is measured. The backlog goes to several
//! shards because kinesis-local's `PutRecords` slows down as a shard grows (10,000 records into
//! one shard took 38 s here, into four 11 s).
//!
//! Both consumers get the same settings: polling pause `BENCH_IDLE_MS` (kcl-rs's
//! `idle_time_between_reads_millis`, shardctl's idle poll interval), shard sync every 2 s,
//! `TRIM_HORIZON`, failover 10 s (kcl-rs does not expose it; its default is 10 s).
//! kinesis-local appears to push `SubscribeToShard` events about once a second: FANOUT latencies
//! there spread evenly over 0-1 s for both consumers and say nothing about AWS.
//!
//! Knobs (environment): `BENCH_RECORDS` (20000), `BENCH_SHARDS` (4), `BENCH_PAYLOAD` bytes
//! (100), `BENCH_RATE` (50 probes/s), `BENCH_LATENCY_SECS` (20), `BENCH_IDLE_WINDOW_SECS` (5),
//! `BENCH_RESHARDS` (3), `BENCH_RESHARD_RATE` (20 records/s), `BENCH_RESHARD_TIMEOUT_SECS` (45,
//! per wait), `BENCH_START_TIMEOUT_SECS` (120, until a consumer's first `initialize`),
//! `BENCH_IDLE_MS` (200), `BENCH_RUN` (`kcl-polling,kcl-fanout,shardctl-polling,shardctl-fanout`:
//! which rows, in order). With the defaults a run takes about 6-7 minutes on 2 cores (plus the
//! build): mostly kinesis-local accepting the four backlogs (20-30 s each), kcl-rs's start-up
//! (10-35 s per consumer, partly overlapped), its POLLING reshards (about 20 s each) and the
//! `BENCH_RESHARD_TIMEOUT_SECS` spent waiting for a kcl-rs FANOUT `SHARD_END` that does not come
//! on kinesis-local 0.6.2 (see `tests/kcl/fleet.py`).
//! Child logs (stderr) go to a `kcl-side-by-side-*` folder under the temp dir; set `RUST_LOG`
//! for shardctl-consumer's, `RUST_LOG=kcl=info` for kcl-rs's.
//!
//! Over 500 lines by choice: one harness (child processes for both consumers, their JSON
//! reports, three measurements, the table) that only makes sense read together.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::producer::{Event, Producer, event_payload};
use shardctl_consumer::{Worker, WorkerConfig};
use shardctl_test_support::{
    create_stream, is_open, knob, list_shards, peer_python, repo_root, require_endpoints,
    sdk_config, wait_active,
};
use tokio::sync::mpsc;

/// Set (with the `BENCH_CHILD_*` variables) when this binary runs as the shardctl-consumer child.
const CHILD_ENV: &str = "SHARDCTL_BENCH_CONSUMER_CHILD";
/// Shard sync period of both consumers.
const SHARD_SYNC_MS: u64 = 2000;
/// Keys of the backlog.
const BACKLOG_KEYS: u64 = 400;
/// Keys of the records flowing during the reshards (spread over every child).
const RESHARD_KEYS: u64 = 64;
/// What a latency probe's payload starts with; the rest is the put time in unix µs.
const PROBE: &[u8] = b"lat:";

fn unix_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child::main();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probe
    }
    require_endpoints(&["KINESIS", "DYNAMODB"]);
    peer_python();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

// ---------------------------------------------------------------------------------------------
// The shardctl-consumer child: a Worker with a no-op processor, reporting on stdout.
// ---------------------------------------------------------------------------------------------

mod child {
    use super::*;

    /// One JSON line on stdout, written and flushed at once.
    fn emit(v: Value) {
        let mut line = v.to_string();
        line.push('\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }

    struct NoOp {
        shard: String,
    }

    impl ShardProcessor for NoOp {
        async fn initialize(&mut self, input: InitInput) {
            self.shard = input.shard_id;
            emit(json!({"ev": "initialized", "shard": self.shard, "t": unix_secs()}));
        }

        async fn process_records(&mut self, batch: RecordBatch, checkpointer: &Checkpointer) {
            let t = unix_secs();
            let now_us = unix_micros();
            if batch.records.is_empty() {
                return;
            }
            let mut line =
                json!({"ev": "batch", "shard": self.shard, "n": batch.records.len(), "t": t});
            // Only probe batches are looked into (the backlog's are not: a no-op).
            if event_payload(&batch.records[0].data).starts_with(PROBE) {
                let lat: Vec<i64> = batch
                    .records
                    .iter()
                    .filter_map(|r| {
                        let p = event_payload(&r.data).strip_prefix(PROBE)?;
                        let put: i64 = std::str::from_utf8(p).ok()?.parse().ok()?;
                        Some(now_us - put)
                    })
                    .collect();
                line["lat_us"] = json!(lat);
            }
            emit(line);
            if let Err(e) = checkpointer.checkpoint().await {
                emit(json!({"ev": "checkpoint_failed", "shard": self.shard,
                            "where": "process_records", "error": e.to_string(), "t": unix_secs()}));
            }
        }

        async fn shard_ended(&mut self, checkpointer: &Checkpointer) {
            let ok = match checkpointer.checkpoint_shard_end().await {
                Ok(()) => true,
                Err(e) => {
                    emit(json!({"ev": "checkpoint_failed", "shard": self.shard,
                                "where": "shard_ended", "error": e.to_string(), "t": unix_secs()}));
                    false
                }
            };
            emit(json!({"ev": "shard_ended", "shard": self.shard, "t": unix_secs(), "ok": ok}));
        }

        async fn lease_lost(&mut self) {
            emit(json!({"ev": "lease_lost", "shard": self.shard, "t": unix_secs()}));
        }
    }

    fn var(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset"))
    }

    pub(super) fn main() {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let aws = sdk_config().await;
            let mut config = WorkerConfig::new(var("BENCH_CHILD_STREAM"), var("BENCH_CHILD_TABLE"))
                .with_worker_id("shardctl-bench")
                .with_failover(Duration::from_secs(10))
                .with_idle_poll_interval(Duration::from_millis(knob("BENCH_CHILD_IDLE_MS", 200)))
                .with_shard_sync_interval(Duration::from_millis(SHARD_SYNC_MS));
            let fan_out = std::env::var("BENCH_CHILD_FAN_OUT").unwrap_or_default();
            if !fan_out.is_empty() {
                config = config.with_fan_out(Some(&fan_out));
            }
            let worker = match Worker::start(
                config,
                aws_sdk_kinesis::Client::new(&aws),
                aws_sdk_dynamodb::Client::new(&aws),
                |_: &str| NoOp {
                    shard: String::new(),
                },
            )
            .await
            {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("shardctl-consumer child: worker did not start: {e}");
                    std::process::exit(1);
                }
            };
            emit(json!({"ev": "ready"}));
            // Stops when the bench closes stdin (or dies).
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                let _ = tx.send(());
            });
            let _ = rx.await;
            worker.shutdown().await;
            emit(json!({"ev": "stopped"}));
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The bench: children, their reports, the three measurements.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Kcl,
    Shardctl,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Polling,
    FanOut,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Kcl => "kcl-rs 0.1.4 (Python no-op callback)",
            Kind::Shardctl => "shardctl-consumer",
        }
    }
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Polling => "POLLING",
            Mode::FanOut => "FANOUT",
        }
    }
}

struct Knobs {
    records: u64,
    shards: i32,
    payload: usize,
    rate: u64,
    latency_secs: u64,
    idle_window: Duration,
    reshards: u64,
    reshard_rate: u64,
    reshard_timeout: Duration,
    start_timeout: Duration,
    idle_ms: u64,
    clk_tck: f64,
}

/// What the child reported so far.
#[derive(Default)]
struct Reports {
    records: u64,
    initialized: u64,
    /// Shard -> when its first non-empty batch reached the processor (unix s).
    first_batch: HashMap<String, f64>,
    /// Shard -> when its `SHARD_END` checkpoint returned (unix s).
    ended: HashMap<String, f64>,
    lat_us: Vec<i64>,
    problems: Vec<String>,
    ready: bool,
    closed: bool,
}

impl Reports {
    fn apply(&mut self, v: &Value) {
        let shard = v["shard"].as_str().unwrap_or_default().to_string();
        let t = v["t"].as_f64().unwrap_or_default();
        match v["ev"].as_str().unwrap_or_default() {
            "ready" => self.ready = true,
            "initialized" => self.initialized += 1,
            "batch" => {
                self.records += v["n"].as_u64().unwrap_or_default();
                self.first_batch.entry(shard).or_insert(t);
                if let Some(lat) = v["lat_us"].as_array() {
                    self.lat_us.extend(lat.iter().filter_map(Value::as_i64));
                }
            }
            "shard_ended" => {
                if v["ok"].as_bool() == Some(false) {
                    self.problems
                        .push(format!("SHARD_END checkpoint of {shard} failed"));
                }
                self.ended.entry(shard).or_insert(t);
            }
            "checkpoint_failed" | "lease_lost" if self.problems.len() < 20 => {
                self.problems.push(v.to_string());
            }
            _ => {}
        }
    }
}

/// A consumer child process; killed when dropped.
struct Child {
    kind: Kind,
    proc: std::process::Child,
    pid: u32,
    rx: mpsc::UnboundedReceiver<Value>,
    log: PathBuf,
    seen: Reports,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

impl Child {
    fn spawn(
        kind: Kind,
        mode: Mode,
        stream: &str,
        table: &str,
        idle_ms: u64,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut cmd = match kind {
            Kind::Kcl => {
                let mut c = Command::new(peer_python());
                c.arg(repo_root().join("tests/kcl/bench_processor.py"))
                    .args([
                        "--stream",
                        stream,
                        "--app",
                        table,
                        "--worker-id",
                        "kcl-bench",
                    ])
                    .args(["--retrieval", mode.label()])
                    .args(["--shard-sync-interval-millis", &SHARD_SYNC_MS.to_string()]);
                if mode == Mode::Polling {
                    c.args(["--idle-time-between-reads-millis", &idle_ms.to_string()]);
                }
                c
            }
            Kind::Shardctl => {
                let mut c = Command::new(std::env::current_exe()?);
                c.env(CHILD_ENV, "1")
                    .env("BENCH_CHILD_STREAM", stream)
                    .env("BENCH_CHILD_TABLE", table)
                    .env("BENCH_CHILD_IDLE_MS", idle_ms.to_string())
                    .env(
                        "BENCH_CHILD_FAN_OUT",
                        if mode == Mode::FanOut { table } else { "" },
                    );
                c
            }
        };
        let mut proc = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("spawning the {kind:?} consumer"))?;
        let stdout = proc.stdout.take().context("child stdout")?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Ok(Self {
            kind,
            pid: proc.id(),
            proc,
            rx,
            log,
            seen: Reports::default(),
        })
    }

    /// Applies reports until `done` holds; an error at `deadline` or when the child exits.
    async fn until(
        &mut self,
        what: &str,
        deadline: Instant,
        mut done: impl FnMut(&Reports) -> bool,
    ) -> anyhow::Result<()> {
        loop {
            if done(&self.seen) {
                return Ok(());
            }
            if self.seen.closed {
                bail!(
                    "{what}: the {:?} consumer exited; its log ends with:\n{}",
                    self.kind,
                    tail(&self.log, 12)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("{what}: timed out");
            }
            match tokio::time::timeout(deadline - now, self.rx.recv()).await {
                Ok(Some(v)) => self.seen.apply(&v),
                Ok(None) => self.seen.closed = true,
                Err(_) => {}
            }
        }
    }

    /// Applies reports until `at`.
    async fn pump_until(&mut self, at: Instant) {
        let _ = self.until("", at, |_| false).await;
    }

    fn cpu_secs(&self, clk_tck: f64) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let rest = &stat[stat.rfind(')').context("no ')' in /proc/<pid>/stat")? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 (utime) and 15 (stime); `rest` starts at field 3.
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(ticks as f64 / clk_tck)
    }

    /// On-CPU nanoseconds per live thread (`/proc/<pid>/task/*/schedstat`, first field): a
    /// nanosecond-precise cross-check of the tick-granular `/proc/<pid>/stat` figure.
    fn thread_cpu_ns(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return out;
        };
        for task in tasks.flatten() {
            let ns = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            if let Some(ns) = ns {
                out.insert(task.file_name().to_string_lossy().into_owned(), ns);
            }
        }
        out
    }

    /// Closes stdin (the child's stop signal) and waits for it to exit (then kills it).
    async fn stop(mut self) {
        drop(self.proc.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "  {:?} consumer did not stop within 20 s; killed",
            self.kind
        );
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {}", l.chars().take(300).collect::<String>()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// One row of the table.
struct Row {
    kind: Kind,
    mode: Mode,
    cpu_per_100k: Result<f64, String>,
    latency_ms: Result<(f64, f64), String>,
    transitions: Vec<Result<f64, String>>,
    details: Vec<String>,
}

/// Steady production of `rate` records/s until `stop`; payloads from `payload(i)`.
fn steady_producer(
    producer: Producer,
    rate: u64,
    count: Option<u64>,
    stop: Arc<AtomicBool>,
    key: fn(u64) -> String,
    payload: fn(u64) -> String,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut sent, mut failed) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) && count.is_none_or(|c| sent + failed < c) {
            tick.tick().await;
            let i = sent + failed;
            match producer.send(vec![Event::new(key(i), payload(i))]).await {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        (sent, failed)
    })
}

fn percentile(sorted: &[i64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

async fn run() {
    let knobs = Knobs {
        records: knob("BENCH_RECORDS", 20_000),
        shards: knob("BENCH_SHARDS", 4) as i32,
        payload: knob("BENCH_PAYLOAD", 100) as usize,
        rate: knob("BENCH_RATE", 50),
        latency_secs: knob("BENCH_LATENCY_SECS", 20),
        idle_window: Duration::from_secs(knob("BENCH_IDLE_WINDOW_SECS", 5)),
        reshards: knob("BENCH_RESHARDS", 3),
        reshard_rate: knob("BENCH_RESHARD_RATE", 20),
        reshard_timeout: Duration::from_secs(knob("BENCH_RESHARD_TIMEOUT_SECS", 45)),
        start_timeout: Duration::from_secs(knob("BENCH_START_TIMEOUT_SECS", 120)),
        idle_ms: knob("BENCH_IDLE_MS", 200),
        clk_tck: clk_tck(),
    };
    let runs: Vec<(Kind, Mode)> = std::env::var("BENCH_RUN")
        .unwrap_or_else(|_| "kcl-polling,kcl-fanout,shardctl-polling,shardctl-fanout".into())
        .split(',')
        .filter_map(|s| match s.trim() {
            "kcl-polling" => Some((Kind::Kcl, Mode::Polling)),
            "kcl-fanout" => Some((Kind::Kcl, Mode::FanOut)),
            "shardctl-polling" => Some((Kind::Shardctl, Mode::Polling)),
            "shardctl-fanout" => Some((Kind::Shardctl, Mode::FanOut)),
            "" => None,
            other => panic!("BENCH_RUN: unknown entry {other:?}"),
        })
        .collect();
    let aws = sdk_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let logs = std::env::temp_dir().join(format!("kcl-side-by-side-{suffix}"));
    std::fs::create_dir_all(&logs).expect("log folder");
    println!(
        "kcl side by side: backlog {} records of {} B on {} shards; latency probes {}/s for {} s and {} reshard(s) \
         at {} records/s on a 1-shard stream; polling pause {} ms; CLK_TCK {}; child logs in {}",
        knobs.records,
        knobs.payload,
        knobs.shards,
        knobs.rate,
        knobs.latency_secs,
        knobs.reshards,
        knobs.reshard_rate,
        knobs.idle_ms,
        knobs.clk_tck,
        logs.display()
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for (kind, mode) in runs {
        let tag = format!(
            "{}-{}",
            if kind == Kind::Kcl { "kcl" } else { "sctl" },
            if mode == Mode::Polling { "poll" } else { "efo" }
        );
        println!(
            "\n== {} {} (t+{:.0} s)",
            kind.label(),
            mode.label(),
            started.elapsed().as_secs_f64()
        );
        let names = Names {
            drain: format!("kbench-{tag}-{suffix}-drain"),
            live: format!("kbench-{tag}-{suffix}-live"),
            logs: logs.clone(),
        };
        let mut row = Row {
            kind,
            mode,
            cpu_per_100k: Err("not run".into()),
            latency_ms: Err("not run".into()),
            transitions: Vec::new(),
            details: Vec::new(),
        };
        if let Err(e) = phases(&knobs, &kinesis, &mut row, &names).await {
            let message = format!("{e:#}");
            println!("  FAILED: {message}");
            row.details.push(format!("failed: {message}"));
        }
        // Best effort: fewer streams for kinesis-local to keep.
        for stream in [&names.drain, &names.live] {
            let _ = kinesis
                .delete_stream()
                .stream_name(stream)
                .enforce_consumer_deletion(true)
                .send()
                .await;
        }
        rows.push(row);
    }
    print_table(&knobs, &rows, started.elapsed());
}

/// The two streams of one row (each consumer's lease table is `<stream>-app`).
struct Names {
    /// `BENCH_SHARDS` shards: the backlog, for the CPU figure.
    drain: String,
    /// One shard: latency probes, then the reshards.
    live: String,
    logs: PathBuf,
}

impl Names {
    fn table(stream: &str) -> String {
        format!("{stream}-app")
    }

    fn log(&self, stream: &str) -> PathBuf {
        self.logs.join(format!("{stream}.log"))
    }
}

/// One row: the live consumer starts first (on its empty 1-shard stream), so that its start-up
/// (kcl-rs waits 0-30 s before its first lease) overlaps the backlog production; then the drain
/// consumer (measured) reads the backlog and stops; then the live consumer's latency probes and
/// reshards. Only the drain consumer's CPU is measured, so the idle live consumer beside it costs
/// the figure nothing.
async fn phases(
    knobs: &Knobs,
    kinesis: &aws_sdk_kinesis::Client,
    row: &mut Row,
    names: &Names,
) -> anyhow::Result<()> {
    create_stream(kinesis, &names.live, 1).await;
    create_stream(kinesis, &names.drain, knobs.shards).await;
    let mut live = Child::spawn(
        row.kind,
        row.mode,
        &names.live,
        &Names::table(&names.live),
        knobs.idle_ms,
        names.log(&names.live),
    )?;
    if let Err(e) = drain(knobs, kinesis, row, names).await {
        let message = format!("{e:#}");
        println!("  drain FAILED: {message}");
        row.cpu_per_100k = Err(message.clone());
        row.details.push(format!("drain failed: {message}"));
    }
    let result = live_phases(knobs, kinesis, row, &mut live, &names.live).await;
    if !live.seen.problems.is_empty() {
        row.details.push(format!(
            "live consumer reported: {}",
            live.seen.problems.join("; ")
        ));
    }
    live.stop().await;
    result
}

/// 1. CPU while draining the backlog, from the first initialize on; then the idle CPU.
async fn drain(
    knobs: &Knobs,
    kinesis: &aws_sdk_kinesis::Client,
    row: &mut Row,
    names: &Names,
) -> anyhow::Result<()> {
    let stream = &names.drain;
    // The backlog, before the consumer exists.
    let produced = Instant::now();
    let payload = vec![b'x'; knobs.payload];
    let events: Vec<Event> = (0..knobs.records)
        .map(|i| Event::new(format!("org-{:04}", i % BACKLOG_KEYS), payload.clone()))
        .collect();
    Producer::new(kinesis.clone(), stream)
        .send(events)
        .await
        .map_err(|e| anyhow!("producing the backlog: {e}"))?;
    println!(
        "  backlog: {} records on {} shards in {:.1} s",
        knobs.records,
        knobs.shards,
        produced.elapsed().as_secs_f64()
    );

    let spawned = Instant::now();
    let mut child = Child::spawn(
        row.kind,
        row.mode,
        stream,
        &Names::table(stream),
        knobs.idle_ms,
        names.log(stream),
    )?;
    child
        .until(
            "waiting for the first initialize",
            spawned + knobs.start_timeout,
            |r| r.initialized > 0,
        )
        .await?;
    let cpu_start = child.cpu_secs(knobs.clk_tck)?;
    let threads_start = child.thread_cpu_ns();
    let drain_started = Instant::now();
    println!(
        "  first initialize {:.1} s after spawn; {:.2} CPU s of start-up until then",
        spawned.elapsed().as_secs_f64(),
        cpu_start
    );
    let n = knobs.records;
    child
        .until(
            "draining the backlog",
            drain_started + Duration::from_secs(300),
            |r| r.records >= n,
        )
        .await?;
    let cpu = child.cpu_secs(knobs.clk_tck)? - cpu_start;
    let threads_end = child.thread_cpu_ns();
    let drain_secs = drain_started.elapsed().as_secs_f64();
    // Threads alive at the end: their CPU since the start (or since they were born).
    let precise: u64 = threads_end
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(threads_start.get(tid).copied().unwrap_or(0)))
        .sum();
    let exited = threads_start
        .keys()
        .filter(|tid| !threads_end.contains_key(*tid))
        .count();
    let precise = precise as f64 / 1e9;
    row.cpu_per_100k = Ok(cpu / n as f64 * 100_000.0);
    println!(
        "  drained {n} records in {drain_secs:.2} s ({:.0} records/s, {} shards initialized) using {cpu:.2} CPU s \
         = {:.2} CPU s / 100k records (per-thread schedstat: {precise:.3} CPU s = {:.3} / 100k{})",
        n as f64 / drain_secs,
        child.seen.initialized,
        cpu / n as f64 * 100_000.0,
        precise / n as f64 * 100_000.0,
        if exited > 0 {
            format!(", {exited} thread(s) exited: a lower bound")
        } else {
            String::new()
        }
    );
    row.details.push(format!(
        "start-up {cpu_start:.2} CPU s ({:.1} s to the first initialize); drain {drain_secs:.2} s wall, \
         {cpu:.2} CPU s from /proc/<pid>/stat ({:.0} ticks of {:.0} ms), {precise:.3} CPU s from per-thread schedstat \
         = {:.3} CPU s / 100k records",
        drain_started.duration_since(spawned).as_secs_f64(),
        cpu * knobs.clk_tck,
        1000.0 / knobs.clk_tck,
        precise / n as f64 * 100_000.0,
    ));

    // Idle CPU while caught up.
    let idle_from = child.cpu_secs(knobs.clk_tck)?;
    child.pump_until(Instant::now() + knobs.idle_window).await;
    let idle = (child.cpu_secs(knobs.clk_tck)? - idle_from) / knobs.idle_window.as_secs_f64();
    println!(
        "  idle (caught up, {} shards): {:.0} CPU ms/s",
        knobs.shards,
        idle * 1000.0
    );
    row.details.push(format!(
        "idle while caught up on {} shards: {:.0} CPU ms/s",
        knobs.shards,
        idle * 1000.0
    ));
    if !child.seen.problems.is_empty() {
        row.details.push(format!(
            "drain consumer reported: {}",
            child.seen.problems.join("; ")
        ));
    }
    child.stop().await;
    Ok(())
}

/// 2. Put-to-process latency and 3. reshard transitions, on the 1-shard live stream.
async fn live_phases(
    knobs: &Knobs,
    kinesis: &aws_sdk_kinesis::Client,
    row: &mut Row,
    child: &mut Child,
    stream: &str,
) -> anyhow::Result<()> {
    child
        .until(
            "waiting for the live consumer's first initialize",
            Instant::now() + knobs.start_timeout,
            |r| r.initialized > 0,
        )
        .await?;
    // Its first reads of the empty shard.
    child
        .pump_until(Instant::now() + Duration::from_secs(2))
        .await;

    let probes = knobs.rate * knobs.latency_secs;
    let producer = steady_producer(
        Producer::new(kinesis.clone(), stream),
        knobs.rate,
        Some(probes),
        Arc::new(AtomicBool::new(false)),
        |i| format!("probe-{}", i % 16),
        |_| format!("lat:{}", unix_micros()),
    );
    let lat_deadline = Instant::now() + Duration::from_secs(knobs.latency_secs + 60);
    let mut producer = Some(producer);
    let mut sent = 0;
    let mut failed = 0;
    while let Some(p) = producer.as_mut() {
        child
            .pump_until(Instant::now() + Duration::from_millis(200))
            .await;
        if p.is_finished() {
            (sent, failed) = producer.take().context("producer")?.await?;
        }
    }
    let got = child
        .until("latency probes", lat_deadline, |r| {
            r.lat_us.len() as u64 >= sent
        })
        .await;
    let mut lat = child.seen.lat_us.clone();
    lat.sort_unstable();
    if lat.is_empty() {
        row.latency_ms = Err(format!("no probe processed ({got:?})"));
    } else {
        let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
        row.latency_ms = Ok((p50, p99));
        println!(
            "  latency: {} of {sent} probes processed ({failed} puts failed): p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
            lat.len(),
            percentile(&lat, 1.0)
        );
        row.details.push(format!(
            "latency over {} probes (of {sent} put), max {:.1} ms",
            lat.len(),
            percentile(&lat, 1.0)
        ));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let flowing = steady_producer(
        Producer::new(kinesis.clone(), stream),
        knobs.reshard_rate,
        None,
        Arc::clone(&stop),
        |i| format!("rk-{}", i % RESHARD_KEYS),
        |i| format!("r:{i}"),
    );
    let result = reshards(knobs, kinesis, child, row, stream).await;
    stop.store(true, Ordering::Relaxed);
    let _ = flowing.await;
    result
}

async fn reshards(
    knobs: &Knobs,
    kinesis: &aws_sdk_kinesis::Client,
    child: &mut Child,
    row: &mut Row,
    stream: &str,
) -> anyhow::Result<()> {
    let open = list_shards(kinesis, stream).await?;
    let mut target = open
        .iter()
        .find(|s| is_open(s))
        .context("no open shard")?
        .shard_id()
        .to_string();
    for round in 1..=knobs.reshards {
        // The consumer reads the shard about to be split (and records flow through it).
        let deadline = Instant::now() + knobs.reshard_timeout;
        let t = target.clone();
        if let Err(e) = child
            .until(
                "waiting for a record of the shard to split",
                deadline,
                |r| r.first_batch.contains_key(&t),
            )
            .await
        {
            row.transitions.push(Err(format!("{e:#}")));
            return Ok(());
        }
        let shards = list_shards(kinesis, stream).await?;
        let parent = shards
            .iter()
            .find(|s| s.shard_id() == target)
            .context("shard to split not listed")?;
        let range = parent.hash_key_range().context("no hash range")?;
        let start: u128 = range.starting_hash_key().parse()?;
        let end: u128 = range.ending_hash_key().parse()?;
        kinesis
            .split_shard()
            .stream_name(stream)
            .shard_to_split(&target)
            .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
            .send()
            .await
            .with_context(|| format!("SplitShard {target}"))?;
        let split_at = unix_secs();
        wait_active(kinesis, stream).await;
        let children: Vec<String> = list_shards(kinesis, stream)
            .await?
            .iter()
            .filter(|s| s.parent_shard_id() == Some(target.as_str()))
            .map(|s| s.shard_id().to_string())
            .collect();
        let deadline = Instant::now() + knobs.reshard_timeout;
        let t = target.clone();
        if let Err(e) = child
            .until("waiting for the parent's SHARD_END", deadline, |r| {
                r.ended.contains_key(&t)
            })
            .await
        {
            let message = format!(
                "split {round}: {target} never reached shard_ended within {} s ({e:#})",
                knobs.reshard_timeout.as_secs()
            );
            println!("  {message}");
            row.transitions.push(Err(message));
            return Ok(());
        }
        let ended = child.seen.ended[&target];
        let cs = children.clone();
        if let Err(e) = child
            .until("waiting for a child's first record", deadline, |r| {
                cs.iter().any(|c| r.first_batch.contains_key(c))
            })
            .await
        {
            let message = format!(
                "split {round}: {target} ended, but no record of its children {children:?} within {} s ({e:#})",
                knobs.reshard_timeout.as_secs()
            );
            println!("  {message}");
            row.transitions.push(Err(message));
            return Ok(());
        }
        let (first_child, first) = children
            .iter()
            .filter_map(|c| child.seen.first_batch.get(c).map(|t| (c.clone(), *t)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .context("child batch")?;
        let transition = first - ended;
        println!(
            "  split {round}: {target} -> {children:?}; parent SHARD_END {:.2} s after SplitShard, first child record ({first_child}) {transition:.2} s after SHARD_END",
            ended - split_at
        );
        row.transitions.push(Ok(transition));
        target = first_child;
    }
    Ok(())
}

fn print_table(knobs: &Knobs, rows: &[Row], took: Duration) {
    let fmt = |r: &Result<f64, String>, digits: usize| match r {
        Ok(v) => format!("{v:.digits$}"),
        Err(_) => "n/a".to_string(),
    };
    println!(
        "\n## KCL (kcl-rs) vs shardctl-consumer, side by side ({} s in all)\n",
        took.as_secs()
    );
    println!(
        "| consumer | retrieval | CPU s / 100k records | p50 ms | p99 ms | reshard transition s |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let (p50, p99) = match &r.latency_ms {
            Ok((a, b)) => (format!("{a:.0}"), format!("{b:.0}")),
            Err(_) => ("n/a".into(), "n/a".into()),
        };
        let transitions = if r.transitions.is_empty() {
            "n/a".to_string()
        } else {
            r.transitions
                .iter()
                .map(|t| match t {
                    Ok(v) => format!("{v:.2}"),
                    Err(_) => "timeout".to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {} | {} | {} | {p50} | {p99} | {transitions} |",
            r.kind.label(),
            r.mode.label(),
            fmt(&r.cpu_per_100k, 2)
        );
    }
    println!(
        "\nCPU: the consumer process only (user+sys from /proc/<pid>/stat, {:.0} ms ticks) from its first \
         initialize to the {}th backlog record processed, on a {}-shard stream; kinesis-local's and moto's own \
         CPU cost is excluded. kcl-rs figures include its Python callbacks (PyO3 record objects, GIL). \
         Latency: {} probes/s for {} s on a fresh 1-shard stream, put time (taken before each single-record \
         PutRecords) to the batch reaching the processor. Reshard: on that stream, parent SHARD_END \
         checkpoint to the first child batch. Both consumers: polling pause {} ms, shard sync {} ms, \
         checkpoint per batch, no-op processor.",
        1000.0 / knobs.clk_tck,
        knobs.records,
        knobs.shards,
        knobs.rate,
        knobs.latency_secs,
        knobs.idle_ms,
        SHARD_SYNC_MS
    );
    for r in rows {
        println!("\n{} {}:", r.kind.label(), r.mode.label());
        for d in &r.details {
            println!("  - {d}");
        }
        for (i, t) in r.transitions.iter().enumerate() {
            if let Err(e) = t {
                println!("  - reshard {}: {e}", i + 1);
            }
        }
        if let Err(e) = &r.latency_ms {
            println!("  - latency: {e}");
        }
    }
}
