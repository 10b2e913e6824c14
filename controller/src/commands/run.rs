//! `shardctl run`: the controller against AWS, one replica of a Deployment.

use anyhow::Result;
use shardctl_controller::aws;
use shardctl_controller::daemon::{Leadership, Pass, Progress, Replica};
use shardctl_controller::http::{self, HttpState};
use shardctl_controller::leadership::LeaseSettings;
use shardctl_controller::policy_source::PolicySource;
use shardctl_controller::reconcile::{CycleSettings, Executed, ModeExecutor};
use shardctl_controller::render;
use shardctl_controller::telemetry::Telemetry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

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
    let ctx = Arc::new(aws::context(&options.state_table, &telemetry).await);
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
