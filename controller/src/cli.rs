//! The command line.

use crate::files::{read_policy, read_snapshot};
use crate::render;
use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Auto-scaling shard controller for Amazon Kinesis Data Streams: splits hot shards, merges cold
/// neighbours, and waits for consumers to drain parents first.
#[derive(Debug, Parser)]
#[command(name = "shardctl", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
    /// Plan one stream offline from a snapshot and print the decision. Touches nothing.
    Plan {
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
        /// A snapshot written by `shardctl observe` (or by hand; see the format docs).
        #[arg(long)]
        snapshot: PathBuf,
        /// The instant to plan for (RFC 3339); defaults to the snapshot's `observedAt`.
        #[arg(long)]
        now: Option<DateTime<Utc>>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// List every open shard in the table, not only those with something to do.
        #[arg(long)]
        all_shards: bool,
    },
}

/// Which JSON Schema to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// The policy file.
    Policy,
    /// The snapshot file.
    Snapshot,
}

/// How decisions are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON for machines.
    Json,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { files } => Ok(validate(&files)),
        Command::Schema { kind } => {
            let schema = match kind {
                SchemaKind::Policy => shardctl_policies::schema::policy_schema(),
                SchemaKind::Snapshot => shardctl_policies::schema::snapshot_schema(),
            };
            print!("{}", shardctl_policies::schema::render(&schema));
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            policy,
            snapshot,
            now,
            output,
            all_shards,
        } => {
            let policy_file = read_policy(&policy)?;
            let snap = read_snapshot(&snapshot)?;
            let name = &snap.observation.stream_name;
            let Some(stream) = policy_file.stream(name) else {
                let known: Vec<_> = policy_file
                    .spec
                    .streams
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                bail!(
                    "{} has no policy for stream `{name}` (it manages: {}); add it under spec.streams",
                    policy.display(),
                    known.join(", ")
                );
            };
            let now = now.unwrap_or(snap.observation.observed_at);
            let decision = shardctl_policies::plan(stream, &snap.observation, &snap.history, now)
                .map_err(|e| anyhow!("{}: {e}", snapshot.display()))?;
            match output {
                Output::Table => {
                    let rows = if all_shards {
                        render::Rows::All
                    } else {
                        render::Rows::Involved
                    };
                    print!("{}", render::table(&decision, rows));
                }
                Output::Json => println!("{}", render::json(&decision)),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        match read_policy(f) {
            Ok(p) => {
                let names: Vec<_> = p.spec.streams.iter().map(|s| s.name.as_str()).collect();
                println!(
                    "{}: ok ({} streams: {})",
                    f.display(),
                    names.len(),
                    names.join(", ")
                );
            }
            Err(e) => {
                failed = true;
                eprintln!("{e:#}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
