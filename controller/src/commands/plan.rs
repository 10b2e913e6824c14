//! `shardctl plan`: what the controller would do now (live, from AWS) or at a snapshot
//! (offline). Changes nothing in either mode.

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use shardctl_controller::aws;
use shardctl_controller::backend::Clock;
use shardctl_controller::files::{read_policy, read_snapshot};
use shardctl_controller::policy_source::PolicySource;
use shardctl_controller::render;
use shardctl_controller::telemetry::Telemetry;
use shardctl_policies::plan::Decision;
use shardctl_policies::{PolicyFile, StreamPolicy};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How decisions are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON for machines.
    Json,
}

/// The live `shardctl plan`: observe, plan, print. Reads only.
pub async fn live(
    policy_path: PathBuf,
    stream: Option<String>,
    state_table: String,
    output: Output,
    rows: render::Rows,
) -> Result<ExitCode> {
    let (_, policy) = PolicySource::load(policy_path)?;
    let telemetry = Telemetry::new();
    let ctx = aws::context(&state_table, &telemetry).await;
    let mut ok = true;
    for sp in select_streams(&policy, stream.as_deref())? {
        let result = async {
            let snap = ctx.snapshot(sp).await?;
            let now = ctx.clock.now();
            Ok::<_, anyhow::Error>(shardctl_policies::plan(
                sp,
                &snap.observation,
                &snap.history,
                now,
            )?)
        }
        .await;
        match result {
            Ok(decision) => print_decision(&decision, output, rows),
            Err(error) => {
                ok = false;
                eprintln!("{}: {error:#}", sp.name);
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn select_streams<'p>(
    policy: &'p PolicyFile,
    stream: Option<&str>,
) -> Result<Vec<&'p StreamPolicy>> {
    match stream {
        None => Ok(policy.spec.streams.iter().collect()),
        Some(name) => policy
            .stream(name)
            .map(|s| vec![s])
            .ok_or_else(|| anyhow!("the policy has no stream `{name}`")),
    }
}

fn print_decision(decision: &Decision, output: Output, rows: render::Rows) {
    match output {
        Output::Table => print!("{}", render::table(decision, rows)),
        Output::Json => println!("{}", render::json(decision)),
    }
}

/// `shardctl plan --snapshot`: plans at a snapshot written by `shardctl observe`, at `now`
/// (default: when it was observed).
pub fn offline(
    policy: &Path,
    snapshot: &Path,
    now: Option<DateTime<Utc>>,
    output: Output,
    rows: render::Rows,
) -> Result<ExitCode> {
    let policy_file = read_policy(policy)?;
    let snap = read_snapshot(snapshot)?;
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
    print_decision(&decision, output, rows);
    Ok(ExitCode::SUCCESS)
}
