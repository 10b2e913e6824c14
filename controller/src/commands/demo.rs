//! `shardctl run --simulate`: the real control loop against a simulated stream in accelerated
//! virtual time, printing its decisions as it makes them. Needs nothing but the binary.

use anyhow::{Result, anyhow};
use shardctl_controller::backend::Clock;
use shardctl_controller::daemon::{Leadership, Pass, Progress, Replica};
use shardctl_controller::files::read_policy;
use shardctl_controller::leadership::LeaseSettings;
use shardctl_controller::reconcile::{CycleSettings, Executed, ModeExecutor};
use shardctl_policies::{PolicyFile, load_policy};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The policy used when none is given: the shipped telecom example.
pub const EMBEDDED_POLICY: &str =
    include_str!("../../../policies/examples/telecom-org-events.yaml");

/// Options of `run --simulate`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// A policy file (default: [`EMBEDDED_POLICY`]); its first stream is simulated.
    pub policy: Option<PathBuf>,
    /// The built-in traffic scenario.
    pub scenario: String,
    /// Simulated time to run.
    pub duration: Duration,
    /// Seed of the simulation.
    pub seed: u64,
    /// Print instead of acting (the simulated stream then never changes).
    pub dry_run: bool,
}

fn print_pass(pass: &Pass, now: &str) {
    for (stream, result) in pass {
        match result {
            Ok(report) => {
                for (id, outcome) in &report.resolved {
                    println!("[{now}] {stream}: journal entry {id} settled as {outcome:?}");
                }
                for e in &report.executed {
                    match e {
                        Executed::Done(op) => println!("[{now}] {stream}: {op}"),
                        Executed::DryRun(op) => println!("[{now}] {stream}: [dry-run] {op}"),
                    }
                }
            }
            Err(error) => println!("[{now}] {stream}: cycle failed: {error}"),
        }
    }
}

/// Runs the loop against the simulator until the simulated `duration` has passed.
pub async fn run(options: DemoOptions) -> Result<ExitCode> {
    let mut policy: PolicyFile = match &options.policy {
        Some(path) => read_policy(path)?,
        None => load_policy(EMBEDDED_POLICY, "embedded telecom-org-events.yaml")
            .map_err(|e| anyhow!("{e}"))?,
    };
    let first = policy
        .spec
        .streams
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("the policy lists no stream"))?;
    if policy.spec.streams.len() > 1 {
        println!(
            "simulating stream {} only (the first of {} in the policy)",
            first.name,
            policy.spec.streams.len()
        );
    }
    policy.spec.streams = vec![first.clone()];
    let (services, world) =
        shardctl_sim::simulated_stream(&options.scenario, &first.name, options.seed)?;
    let services = Arc::new(services);
    let start = services.clock.now();
    let end = chrono::TimeDelta::from_std(options.duration)
        .ok()
        .and_then(|d| start.checked_add_signed(d))
        .ok_or_else(|| {
            anyhow!(
                "--duration {} reaches past the end of the calendar",
                humantime::format_duration(options.duration)
            )
        })?;
    println!(
        "shardctl against a simulated stream `{}` (scenario {}, seed {}), {} of virtual time from {}",
        first.name,
        options.scenario,
        options.seed,
        humantime::format_duration(options.duration),
        start.format("%a %H:%M")
    );
    println!("{}", shardctl_sim::status_line(&world));

    let (_policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut next_status = start + chrono::TimeDelta::hours(1);
    let clock = services.clock.clone();
    let world_for_status = world.clone();
    let on_pass = move |pass: &Pass| {
        let now = clock.now();
        print_pass(pass, &now.format("%a %H:%M").to_string());
        if now >= next_status {
            println!(
                "[{}] {}",
                now.format("%a %H:%M"),
                shardctl_sim::status_line(&world_for_status)
            );
            next_status = now + chrono::TimeDelta::hours(1);
        }
        if now >= end {
            stop_tx.send_replace(true);
        }
    };
    let replica = Replica {
        ctx: services,
        executor: ModeExecutor::new(options.dry_run),
        // The simulated clock moves only when the loop sleeps: one lease for the whole run.
        leadership: Leadership::Once(LeaseSettings {
            owner: "simulated".to_string(),
            ttl: options
                .duration
                .saturating_add(Duration::from_secs(24 * 3600)),
        }),
        settings: CycleSettings::default(),
        progress: Arc::new(Progress::default()),
        once: false,
    };
    replica.serve(policy_rx, stop_rx, on_pass).await?;
    println!("done: {}", shardctl_sim::status_line(&world));
    println!(
        "compare with the alternatives on the same traffic: shardctl simulate --policy <file> --scenario {}",
        options.scenario
    );
    Ok(ExitCode::SUCCESS)
}
