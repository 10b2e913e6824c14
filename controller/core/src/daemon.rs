//! The long-running controller: every evaluation interval (and at the start of every budget
//! window), reconcile each stream in parallel; only the leader acts.

use crate::backend::{BackendError, Backends, Clock, LeaderToken, StateStore};
use crate::leadership::{self, LeaseSettings};
use crate::reconcile::{Context, CycleReport, CycleSettings, Executor, ReconcileError};
use crate::telemetry::StreamLabels;
use chrono::{DateTime, Utc};
use shardctl_policies::PolicyFile;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Loop progress, for `/healthz` and `/readyz`.
#[derive(Debug, Default)]
pub struct Progress {
    /// Unix seconds when the loop last woke.
    pub last_tick: AtomicI64,
    /// Unix seconds when the loop last finished a pass in which no stream failed.
    pub last_clean_pass: AtomicI64,
}

impl Progress {
    /// Seconds since the loop last woke, at `now`.
    pub fn since_tick(&self, now: DateTime<Utc>) -> i64 {
        now.timestamp() - self.last_tick.load(Ordering::Relaxed)
    }

    /// Seconds since the last clean pass, at `now`.
    pub fn since_clean_pass(&self, now: DateTime<Utc>) -> i64 {
        now.timestamp() - self.last_clean_pass.load(Ordering::Relaxed)
    }
}

/// The next instant the loop must wake: the next evaluation, or earlier if a budget of any
/// stream starts before it (so freezes and scheduled minimums take effect on time). Saturates at
/// the last instant chrono represents rather than overflow.
pub fn next_wake(policy: &PolicyFile, now: DateTime<Utc>) -> DateTime<Utc> {
    let mut wake = policy.spec.evaluation_interval.after(now);
    for stream in &policy.spec.streams {
        for b in &stream.budgets {
            if let Some(schedule) = &b.schedule
                && let Ok(t) = schedule.cron().find_next_occurrence(&now, false)
                && t < wake
            {
                wake = t;
            }
        }
    }
    wake
}

/// Resolves when leadership changes hands (this replica gains or loses it), not on the renewals
/// that refresh the token every third of the lease: those must not wake the loop.
async fn leadership_changed(
    leader: &mut watch::Receiver<Option<LeaderToken>>,
    holder: Option<(String, u64)>,
) {
    loop {
        if leader.changed().await.is_err() {
            // The leadership task is gone: nothing will change any more.
            std::future::pending::<()>().await;
        }
        let now = leader
            .borrow_and_update()
            .as_ref()
            .map(|t| (t.owner.clone(), t.fence));
        if now != holder {
            return;
        }
    }
}

/// The result of one pass over every stream.
pub type Pass = Vec<(String, Result<CycleReport, ReconcileError>)>;

/// Reconciles every stream of `policy` once, in parallel; an error in one stream never stops
/// the others.
pub async fn pass<B: Backends, E: Executor>(
    services: &Context<B>,
    policy: &PolicyFile,
    executor: &E,
    leader: Option<&LeaderToken>,
    settings: &CycleSettings,
) -> Pass {
    let cycles = policy.spec.streams.iter().map(|stream| async move {
        let result = services.cycle(stream, executor, leader, settings).await;
        if let Err(error) = &result {
            services
                .telemetry
                .reconcile_errors
                .get_or_create(&StreamLabels {
                    stream: stream.name.clone(),
                })
                .inc();
            tracing::error!(stream = %stream.name, reason = error.label(), %error, "reconcile failed");
        }
        (stream.name.clone(), result)
    });
    futures::future::join_all(cycles).await
}

/// Runs until `stop` turns true. With an executor that requires leadership only the leader (per
/// `leader`) runs passes; otherwise every replica does. `policy` is re-read from its watch
/// channel at every wake, so hot reloads take effect at the next pass.
#[allow(clippy::too_many_arguments)]
pub async fn run<B: Backends, E: Executor>(
    services: Arc<Context<B>>,
    mut policy: watch::Receiver<Arc<PolicyFile>>,
    executor: E,
    mut leader: watch::Receiver<Option<LeaderToken>>,
    settings: CycleSettings,
    progress: Arc<Progress>,
    once: bool,
    mut stop: watch::Receiver<bool>,
    mut on_pass: impl FnMut(&Pass),
) {
    let mut settings = settings;
    settings.leader = Some(leader.clone());
    settings.progress = Some(progress.clone());
    loop {
        let now = services.clock.now();
        progress.last_tick.store(now.timestamp(), Ordering::Relaxed);
        let current = policy.borrow_and_update().clone();
        let token = leader.borrow_and_update().clone();
        if executor.requires_leadership() && token.is_none() {
            // A standby is ready when its loop runs and it reaches the state table: it can take
            // over. (Only the leader acts; readiness must not depend on it, or a rollout that
            // surges a new pod would stall on a pod that never becomes Ready.)
            match services.state.leader_record().await {
                Ok(record) => {
                    tracing::debug!(leader = ?record.map(|r| r.owner), "standby: not the leader");
                    progress
                        .last_clean_pass
                        .store(services.clock.now().timestamp(), Ordering::Relaxed);
                }
                Err(error) => tracing::warn!(%error, "standby: the state table cannot be read"),
            }
        } else {
            let result = pass(&services, &current, &executor, token.as_ref(), &settings).await;
            if result.iter().all(|(_, r)| r.is_ok()) {
                progress
                    .last_clean_pass
                    .store(services.clock.now().timestamp(), Ordering::Relaxed);
            }
            on_pass(&result);
        }
        if once || *stop.borrow() {
            return;
        }
        let wake = next_wake(&current, services.clock.now());
        let wait = (wake - services.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        let holder = token.as_ref().map(|t| (t.owner.clone(), t.fence));
        tokio::select! {
            _ = services.clock.sleep(wait) => {}
            _ = leadership_changed(&mut leader, holder) => {}
            _ = policy.changed() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// How a replica holds the leader lease while its loop runs (an executor that does not
/// [require leadership](Executor::requires_leadership) holds none and touches no state table).
#[derive(Debug, Clone)]
pub enum Leadership {
    /// Kept, or waited for, beside the loop: renewed every third of the lease and released only
    /// after the loop has stopped. `shardctl run`.
    Maintained(LeaseSettings),
    /// Taken once before the loop, which fails if another replica holds it, and released after
    /// it: `run --once`, and the simulator, whose clock moves only when the loop sleeps.
    Once(LeaseSettings),
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The state table could not be created or reached.
    #[error("cannot create or reach the state table: {0}")]
    StateTable(#[source] BackendError),
    /// `Leadership::Once` found the lease held by another replica.
    #[error("another replica holds the leader lease; nothing done (use --dry-run to see its plan)")]
    AnotherLeader,
}

/// One replica of the controller: the loop, with leadership kept beside it as `leadership`
/// says. The same wiring serves `shardctl run`, `run --simulate`, `simulate` and the replicas
/// of the fault tests.
pub struct Replica<B: Backends, E> {
    /// The backends and metrics.
    pub ctx: Arc<Context<B>>,
    /// Live or dry run.
    pub executor: E,
    /// How leadership is held.
    pub leadership: Leadership,
    /// Tuning of each cycle (its `stop` flag is honoured between operations).
    pub settings: CycleSettings,
    /// Loop progress for the probes.
    pub progress: Arc<Progress>,
    /// One pass, then return.
    pub once: bool,
}

impl<B: Backends, E: Executor> Replica<B, E> {
    /// Runs until `stop` turns true (or one pass, if `once`), calling `on_pass` after each pass.
    /// Leadership, if held, is released after the loop has stopped, never while an operation
    /// of this replica may still be under way.
    pub async fn serve(
        self,
        policy: watch::Receiver<Arc<PolicyFile>>,
        stop: watch::Receiver<bool>,
        on_pass: impl FnMut(&Pass),
    ) -> Result<(), ServeError> {
        let Replica {
            ctx,
            executor,
            leadership,
            settings,
            progress,
            once,
        } = self;
        let (leader_tx, leader_rx) = watch::channel(None);
        let needs_leadership = executor.requires_leadership();
        let looping = |leader_rx| {
            run(
                ctx.clone(),
                policy,
                executor,
                leader_rx,
                settings,
                progress,
                once,
                stop,
                on_pass,
            )
        };
        if !needs_leadership {
            tracing::info!("dry run: nothing will be changed");
            looping(leader_rx).await;
            return Ok(());
        }
        ctx.state.ensure().await.map_err(ServeError::StateTable)?;
        match leadership {
            Leadership::Once(lease) => {
                let token = leadership::step(
                    &ctx.state,
                    &ctx.clock,
                    &lease,
                    None,
                    &mut leadership::Observed::default(),
                )
                .await
                .ok_or(ServeError::AnotherLeader)?;
                leader_tx.send_replace(Some(token.clone()));
                looping(leader_rx).await;
                leader_tx.send_replace(None);
                if let Err(error) = ctx.state.release_leadership(&token).await {
                    tracing::warn!(%error, "could not release leadership; it lapses by itself");
                }
            }
            Leadership::Maintained(lease) => {
                let (lease_stop_tx, lease_stop_rx) = watch::channel(false);
                let maintain = leadership::maintain(
                    ctx.state.clone(),
                    ctx.clock.clone(),
                    lease,
                    ctx.telemetry.clone(),
                    leader_tx,
                    lease_stop_rx,
                );
                let looping = async {
                    looping(leader_rx).await;
                    lease_stop_tx.send_replace(true);
                };
                tokio::join!(maintain, looping);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(budget_cron: &str) -> PolicyFile {
        let yaml = format!(
            "apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n  evaluationInterval: 5m\n  streams:\n    - name: a\n      budgets:\n        - schedule: \"{budget_cron}\"\n          duration: 1h\n          merges: 0\n"
        );
        shardctl_policies::load_policy(&yaml, "p").unwrap()
    }

    #[test]
    fn next_wake_never_overflows_at_extreme_intervals_and_instants() {
        // `now + evaluationInterval` panicked (`DateTime + TimeDelta overflowed`) for
        // `evaluationInterval: 1000000y`, which validation accepted then; it rejects it now, but
        // the wake computation must not depend on that, nor on a sane clock.
        let mut p = policy("0 14 * * *");
        let (min, max) = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
        for interval in [
            std::time::Duration::from_secs(1_000_000 * 31_557_600),
            std::time::Duration::MAX,
            std::time::Duration::ZERO,
        ] {
            p.spec.evaluation_interval = shardctl_policies::HumanDuration(interval);
            for now in [
                min,
                max,
                max - chrono::TimeDelta::seconds(1),
                DateTime::UNIX_EPOCH,
            ] {
                let wake = next_wake(&p, now);
                assert!(wake >= now, "{interval:?} at {now}: {wake}");
            }
        }
        p.spec.evaluation_interval = shardctl_policies::HumanDuration(std::time::Duration::MAX);
        let now: DateTime<Utc> = "2026-11-02T13:58:30Z".parse().unwrap();
        assert_eq!(
            next_wake(&p, now),
            "2026-11-02T14:00:00Z".parse::<DateTime<Utc>>().unwrap(),
            "a budget still wakes the loop"
        );
        assert_eq!(next_wake(&policy("0 14 * * *"), max), max);
    }

    /// Regression: every lease renewal (a third of the lease) woke the loop, so the leader
    /// reconciled every second or so instead of every evaluation interval.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn renewals_do_not_wake_the_loop_but_a_change_of_leader_does() {
        let token = |fence: u64| {
            LeaderToken::new(
                "a",
                fence,
                Utc::now(),
                std::time::Duration::from_secs(15),
                tokio::time::Instant::now(),
            )
        };
        let (tx, mut rx) = watch::channel(Some(token(1)));
        rx.borrow_and_update();
        let holder = Some(("a".to_string(), 1));
        tx.send_replace(Some(token(1)));
        let renewal = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            leadership_changed(&mut rx, holder.clone()),
        )
        .await;
        assert!(renewal.is_err(), "a renewal woke the loop");
        tx.send_replace(None);
        let lost = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            leadership_changed(&mut rx, holder),
        )
        .await;
        assert!(lost.is_ok(), "losing leadership must wake the loop");
    }

    #[test]
    fn the_loop_wakes_when_a_budget_starts_not_an_interval_later() {
        let now: DateTime<Utc> = "2026-11-02T13:58:30Z".parse().unwrap();
        assert_eq!(
            next_wake(&policy("0 14 * * *"), now),
            "2026-11-02T14:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            next_wake(&policy("0 22 * * *"), now),
            "2026-11-02T14:03:30Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
