//! The commands that talk to AWS: `run`, `observe` and the live `plan`.

use crate::aws::{AwsBackend, AwsOptions};
use crate::backend::LeaderToken;
use crate::backend::{Clock, StateStore, SystemClock};
use crate::daemon::{self, Pass, Progress};
use crate::http::{self, HttpState};
use crate::leadership::{self, LeaseSettings};
use crate::policy_source::PolicySource;
use crate::reconcile::{CycleSettings, Executed, ModeExecutor, Services};
use crate::render;
use crate::telemetry::Telemetry;
use anyhow::{Context, Result, anyhow, bail};
use shardctl_policies::history::OperationRecord;
use shardctl_policies::{History, PolicyFile, Snapshot, StreamPolicy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// The services over real AWS.
pub type AwsServices = Services<
    crate::aws::AwsKinesis,
    crate::aws::CloudWatchMetrics,
    crate::aws::DynamoLeaseTables,
    crate::aws::DynamoStateStore,
    SystemClock,
>;

/// Builds the AWS-backed services from the standard SDK configuration.
pub async fn aws_services(state_table: &str, telemetry: &Telemetry) -> AwsServices {
    let options = AwsOptions {
        state_table: state_table.to_string(),
        ..AwsOptions::default()
    };
    let backend = AwsBackend::from_env(options, telemetry.clone()).await;
    Services {
        kinesis: backend.kinesis,
        metrics: backend.metrics,
        leases: backend.lease_tables,
        state: backend.state,
        clock: SystemClock,
        telemetry: telemetry.clone(),
    }
}

/// Options of `shardctl run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The policy file.
    pub policy: PathBuf,
    /// Print instead of acting.
    pub dry_run: bool,
    /// One pass, then exit.
    pub once: bool,
    /// The state table.
    pub state_table: String,
    /// Where to serve metrics and probes (`None`: not served).
    pub listen: Option<SocketAddr>,
    /// This replica's identity.
    pub identity: String,
    /// The leader lease.
    pub leader_lease: Duration,
    /// How often the policy file is re-read.
    pub reload_every: Duration,
}

fn stop_on_signals(stop: watch::Sender<bool>, settings: CycleSettings) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!(
            "shutdown requested: finishing the operation in flight, then releasing leadership"
        );
        settings.stop.store(true, Ordering::Relaxed);
        stop.send_replace(true);
    });
}

fn report_pass(pass: &Pass, print_tables: bool) -> bool {
    let mut ok = true;
    for (stream, result) in pass {
        match result {
            Ok(report) => {
                if print_tables {
                    print!(
                        "{}",
                        render::table(&report.decision, render::Rows::Involved)
                    );
                }
                for e in &report.executed {
                    match e {
                        Executed::Done(op) => println!("{stream}: executed {op}"),
                        Executed::DryRun(op) => println!("{stream}: [dry-run] would execute {op}"),
                    }
                }
            }
            Err(error) => {
                ok = false;
                eprintln!("{stream}: {error}");
            }
        }
    }
    ok
}

/// `shardctl run`.
pub async fn run(options: RunOptions) -> Result<ExitCode> {
    let (source, policy) = PolicySource::load(options.policy.clone())?;
    let interval = policy.spec.evaluation_interval.0;
    let telemetry = Telemetry::new();
    let services = Arc::new(aws_services(&options.state_table, &telemetry).await);
    let settings = CycleSettings::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    stop_on_signals(stop_tx.clone(), settings.clone());
    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    tokio::spawn(source.watch(
        options.reload_every,
        telemetry.clone(),
        policy_tx,
        stop_rx.clone(),
    ));
    let progress = Arc::new(Progress::default());
    if let Some(addr) = options.listen {
        let state = HttpState {
            telemetry: telemetry.clone(),
            progress: progress.clone(),
            interval,
        };
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            if let Err(error) = http::serve(addr, state, stop).await {
                tracing::error!(%error, "metrics server stopped");
            }
        });
    }
    let (leader_tx, leader_rx) = watch::channel(None);
    let (lease_stop_tx, lease_stop_rx) = watch::channel(false);
    let lease = LeaseSettings {
        owner: options.identity.clone(),
        ttl: options.leader_lease,
    };
    // A dry run mutates nothing: no state table, no leadership. A live `--once` takes the lease
    // for its one pass; a live loop keeps (or waits for) it in a task of its own.
    let mut held: Option<LeaderToken> = None;
    let mut maintain = None;
    if options.dry_run {
        tracing::info!("dry run: nothing will be changed");
    } else {
        services
            .state
            .ensure()
            .await
            .context("cannot create or reach the state table")?;
        if options.once {
            let Some(token) = leadership::step(
                &services.state,
                &services.clock,
                &lease,
                None,
                &mut leadership::Observed::default(),
            )
            .await
            else {
                bail!(
                    "another replica holds the leader lease; nothing done (use --dry-run to see its plan)"
                );
            };
            leader_tx.send_replace(Some(token.clone()));
            held = Some(token);
        } else {
            // Leadership is released only after the loop has stopped (below), never while an
            // operation of this replica may still be under way.
            maintain = Some(tokio::spawn(leadership::maintain(
                services.state.clone(),
                services.clock,
                lease,
                telemetry.clone(),
                leader_tx.clone(),
                lease_stop_rx,
            )));
        }
    }
    let executor = ModeExecutor::new(services.kinesis.clone(), options.dry_run);
    let mut ok = true;
    daemon::run(
        services.clone(),
        policy_rx,
        executor,
        leader_rx,
        settings,
        progress,
        options.once,
        stop_rx,
        // A long-running controller that was asked to stop exits 0: failed passes were logged
        // and counted (`shardctl_reconcile_errors_total`); a `--once` run reports its pass.
        |pass| {
            let clean = report_pass(pass, options.once);
            if options.once {
                ok &= clean;
            }
        },
    )
    .await;
    if let Some(token) = held {
        services.state.release_leadership(&token).await.ok();
    }
    if let Some(task) = maintain {
        lease_stop_tx.send_replace(true);
        let _ = tokio::time::timeout(options.leader_lease, task).await;
    }
    drop(leader_tx);
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

async fn snapshot_of(services: &AwsServices, policy: &StreamPolicy) -> Result<Snapshot> {
    let observation = services.observe(policy).await?;
    let history = match services.history(&policy.name).await {
        Ok(entries) => entries
            .into_iter()
            .map(|e| e.record)
            .collect::<Vec<OperationRecord>>(),
        Err(crate::reconcile::ReconcileError::Backend(
            crate::backend::BackendError::NotFound { .. },
        )) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(Snapshot::new(
        observation,
        History {
            operations: history,
        },
    ))
}

/// The live `shardctl plan`: observe, plan, print. Reads only.
pub async fn plan(
    policy_path: PathBuf,
    stream: Option<String>,
    state_table: String,
    output: crate::cli::Output,
    rows: render::Rows,
) -> Result<ExitCode> {
    let (_, policy) = PolicySource::load(policy_path)?;
    let telemetry = Telemetry::new();
    let services = aws_services(&state_table, &telemetry).await;
    let mut ok = true;
    for sp in select_streams(&policy, stream.as_deref())? {
        let result = async {
            let snap = snapshot_of(&services, sp).await?;
            let now = services.clock.now();
            Ok::<_, anyhow::Error>(shardctl_policies::plan(
                sp,
                &snap.observation,
                &snap.history,
                now,
            )?)
        }
        .await;
        match result {
            Ok(decision) => match output {
                crate::cli::Output::Table => print!("{}", render::table(&decision, rows)),
                crate::cli::Output::Json => println!("{}", render::json(&decision)),
            },
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

/// `shardctl observe`: writes the snapshot JSON that `plan --snapshot` reads.
pub async fn observe(
    stream: String,
    policy_path: Option<PathBuf>,
    state_table: String,
    output: Option<PathBuf>,
) -> Result<ExitCode> {
    let stream_policy = match policy_path {
        Some(p) => {
            let (_, policy) = PolicySource::load(p)?;
            policy
                .stream(&stream)
                .cloned()
                .ok_or_else(|| anyhow!("the policy has no stream `{stream}`"))?
        }
        None => StreamPolicy::with_defaults(stream.clone()),
    };
    let telemetry = Telemetry::new();
    let services = aws_services(&state_table, &telemetry).await;
    let snap = snapshot_of(&services, &stream_policy).await?;
    let json = serde_json::to_string_pretty(&snap)? + "\n";
    match output {
        Some(path) => std::fs::write(&path, json)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{json}"),
    }
    Ok(ExitCode::SUCCESS)
}
