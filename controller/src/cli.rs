//! The command line: its grammar, and which command each form runs (one file each in
//! [`crate::commands`]).

use crate::commands;
use crate::commands::plan::Output;
use crate::commands::schema::SchemaKind;
use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use shardctl_controller::render;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Auto-scaling shard controller for Amazon Kinesis Data Streams: splits hot shards, merges cold
/// neighbours, and waits for consumers to drain parents first.
#[derive(Debug, Parser)]
#[command(name = "shardctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr (level from `RUST_LOG`, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SHARDCTL_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event.
    Json,
}

/// Where the controller keeps its state.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// The DynamoDB table for the leader lease and the operation journal (created if missing by
    /// `run` without `--dry-run`; never created by read-only commands).
    #[arg(long, env = "SHARDCTL_STATE_TABLE", default_value = shardctl_controller::aws::DEFAULT_STATE_TABLE)]
    pub state_table: String,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policy files; prints every problem with file, line and column.
    Validate {
        /// Policy files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the policy (or snapshot) format.
    Schema {
        /// Which format.
        #[arg(value_enum, default_value_t = SchemaKind::Policy)]
        kind: SchemaKind,
    },
    /// Print what the controller would do now (live, from AWS) or at a snapshot (offline).
    /// Changes nothing in either mode.
    Plan {
        /// The policy file.
        #[arg(long, env = "SHARDCTL_POLICY")]
        policy: PathBuf,
        /// Plan offline from a snapshot written by `shardctl observe` instead of reading AWS.
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// Live: only this stream (default: every stream of the policy).
        #[arg(long, conflicts_with = "snapshot")]
        stream: Option<String>,
        /// Offline: the instant to plan for (RFC 3339); defaults to the snapshot's `observedAt`.
        #[arg(long, requires = "snapshot")]
        now: Option<DateTime<Utc>>,
        /// State table (live).
        #[command(flatten)]
        state: StateArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// List every open shard in the table, not only those with something to do.
        #[arg(long)]
        all_shards: bool,
    },
    /// Simulate a policy on built-in or recorded traffic and compare it with the alternatives
    /// (static provisioning, uniform scaling, on-demand).
    Simulate(shardctl_sim::SimulateArgs),
    /// Search a policy's knobs on simulated traffic and write a policy at least as good on both
    /// throttled records and cost (coordinate descent over a fixed grid; deterministic for a
    /// seed).
    Tune(shardctl_sim::TuneArgs),
    /// Write a snapshot of a stream (shards, metrics, consumer drain state, history) as JSON.
    Observe {
        /// The stream.
        #[arg(long)]
        stream: String,
        /// Read windows and consumer groups from this policy (default: built-in windows, no groups).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// State table.
        #[command(flatten)]
        state: StateArgs,
    },
    /// Run the controller: reconcile every stream of the policy every evaluation interval.
    Run {
        /// The policy file (re-read while running; invalid edits are rejected). Optional with
        /// `--simulate` (default: the shipped telecom example).
        #[arg(long, env = "SHARDCTL_POLICY", required_unless_present = "simulate")]
        policy: Option<PathBuf>,
        /// Run against a simulated stream in accelerated virtual time instead of AWS.
        #[arg(long)]
        simulate: bool,
        /// With `--simulate`: the traffic scenario (hot-org-surge, diurnal, flash-crowd,
        /// night-merge, single-hot-key).
        #[arg(long, requires = "simulate", default_value = "hot-org-surge")]
        scenario: String,
        /// With `--simulate`: simulated time to run.
        #[arg(long, requires = "simulate", default_value = "24h", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// With `--simulate`: the seed.
        #[arg(long, requires = "simulate", default_value_t = 1)]
        seed: u64,
        /// Print the operations instead of executing them; changes nothing.
        #[arg(long, env = "SHARDCTL_DRY_RUN")]
        dry_run: bool,
        /// One pass, then exit (exit 1 if any stream failed).
        #[arg(long)]
        once: bool,
        /// State table.
        #[command(flatten)]
        state: StateArgs,
        /// Serve /metrics, /healthz and /readyz here.
        #[arg(long, env = "SHARDCTL_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// This replica's identity for the leader lease (the pod name in Kubernetes).
        #[arg(long, env = "SHARDCTL_IDENTITY")]
        identity: Option<String>,
        /// How long the leader lease lasts without renewal; a standby takes over about this long
        /// after the leader dies.
        #[arg(long, env = "SHARDCTL_LEADER_LEASE", default_value = "15s", value_parser = humantime::parse_duration)]
        leader_lease: std::time::Duration,
    },
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))
}

/// `--identity` (the pod name) plus a per-process suffix: a restarted container never inherits
/// the lease (and fencing token) of the process it replaces.
fn process_identity(given: Option<String>) -> String {
    let base = given
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "shardctl".to_string());
    format!("{base}/{}", std::process::id())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    // Simulations print their own story; their logs would only repeat it.
    let simulated = matches!(
        cli.command,
        Command::Simulate(_) | Command::Tune(_) | Command::Run { simulate: true, .. }
    );
    init_logging(cli.log_format, if simulated { "warn" } else { "info" });
    let rows = |all_shards: bool| {
        if all_shards {
            render::Rows::All
        } else {
            render::Rows::Involved
        }
    };
    match cli.command {
        Command::Validate { files } => Ok(commands::validate::run(&files)),
        Command::Schema { kind } => Ok(commands::schema::run(kind)),
        Command::Simulate(args) => shardctl_sim::run_simulate(args),
        Command::Tune(args) => shardctl_sim::run_tune(args),
        Command::Observe {
            stream,
            policy,
            output,
            state,
        } => runtime()?.block_on(commands::observe::run(
            stream,
            policy,
            state.state_table,
            output,
        )),
        Command::Run {
            policy,
            simulate: true,
            scenario,
            duration,
            seed,
            dry_run,
            ..
        } => runtime()?.block_on(commands::demo::run(commands::demo::DemoOptions {
            policy,
            scenario,
            duration,
            seed,
            dry_run,
        })),
        Command::Run {
            policy,
            dry_run,
            once,
            state,
            listen,
            identity,
            leader_lease,
            ..
        } => {
            let Some(policy) = policy else {
                bail!("--policy is required (or use --simulate)");
            };
            if leader_lease < std::time::Duration::from_secs(3) {
                bail!("--leader-lease {leader_lease:?} is too short; use at least 3s");
            }
            let options = commands::run::RunOptions {
                policy,
                dry_run,
                once,
                state_table: state.state_table,
                listen: (!once).then_some(listen),
                identity: process_identity(identity),
                leader_lease,
                reload_every: std::time::Duration::from_secs(10),
            };
            runtime()?.block_on(commands::run::run(options))
        }
        Command::Plan {
            policy,
            snapshot: None,
            stream,
            state,
            output,
            all_shards,
            ..
        } => runtime()?.block_on(commands::plan::live(
            policy,
            stream,
            state.state_table,
            output,
            rows(all_shards),
        )),
        Command::Plan {
            policy,
            snapshot: Some(snapshot),
            now,
            output,
            all_shards,
            ..
        } => commands::plan::offline(&policy, &snapshot, now, output, rows(all_shards)),
    }
}
