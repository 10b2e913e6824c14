//! The commands that talk to AWS: `run`, `observe` and the live `plan`.

use crate::aws::{Aws, AwsBackend, AwsOptions};
use crate::backend::Clock;
use crate::daemon::{Leadership, Pass, Progress, Replica};
use crate::http::{self, HttpState};
use crate::leadership::LeaseSettings;
use crate::policy_source::PolicySource;
use crate::reconcile::{Context, CycleSettings, Executed, ModeExecutor};
use crate::render;
use crate::telemetry::Telemetry;
use anyhow::{Context as _, Result, anyhow};
use shardctl_policies::history::OperationRecord;
use shardctl_policies::{History, PolicyFile, Snapshot, StreamPolicy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// The control loop's context over real AWS.
pub type AwsContext = Context<Aws>;

/// Builds the AWS context from the standard SDK configuration.
pub async fn aws_context(state_table: &str, telemetry: &Telemetry) -> AwsContext {
    let options = AwsOptions {
        state_table: state_table.to_string(),
        ..AwsOptions::default()
    };
    AwsBackend::from_env(options, telemetry.clone())
        .await
        .into_context(telemetry.clone())
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
    let ctx = Arc::new(aws_context(&options.state_table, &telemetry).await);
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
    let lease = LeaseSettings {
        owner: options.identity.clone(),
        ttl: options.leader_lease,
    };
    // A live `--once` takes the lease for its one pass; a live loop keeps (or waits for) it
    // beside the loop. A dry run holds none and creates nothing.
    let leadership = if options.once {
        Leadership::Once(lease)
    } else {
        Leadership::Maintained(lease)
    };
    let replica = Replica {
        ctx,
        executor: ModeExecutor::new(options.dry_run),
        leadership,
        settings,
        progress,
        once: options.once,
    };
    let mut ok = true;
    replica
        .serve(
            policy_rx,
            stop_rx,
            // A long-running controller that was asked to stop exits 0: failed passes were
            // logged and counted (`shardctl_reconcile_errors_total`); a `--once` run reports
            // its pass.
            |pass| {
                let clean = report_pass(pass, options.once);
                if options.once {
                    ok &= clean;
                }
            },
        )
        .await?;
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

async fn snapshot_of(ctx: &AwsContext, policy: &StreamPolicy) -> Result<Snapshot> {
    let observation = ctx.observe(policy).await?;
    let history = match ctx.history(&policy.name).await {
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
    let ctx = aws_context(&state_table, &telemetry).await;
    let mut ok = true;
    for sp in select_streams(&policy, stream.as_deref())? {
        let result = async {
            let snap = snapshot_of(&ctx, sp).await?;
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
    let ctx = aws_context(&state_table, &telemetry).await;
    let snap = snapshot_of(&ctx, &stream_policy).await?;
    let json = serde_json::to_string_pretty(&snap)? + "\n";
    match output {
        Some(path) => std::fs::write(&path, json)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{json}"),
    }
    Ok(ExitCode::SUCCESS)
}
