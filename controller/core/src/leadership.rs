//! Keeping (or waiting for) the leader lease, in a task of its own.
//!
//! Several replicas may run; exactly one holds the lease and acts. The holder renews about every
//! third of the lease; a standby watches the leader item and takes it over only when the item was
//! released, or when it has seen the item unchanged for a whole lease on its own monotonic clock
//! (as Kubernetes' leader election and KCL do), never by comparing wall clocks alone. Every call
//! is bounded by a quarter of the lease, so one slow call cannot outlive the lease. The current
//! token is published on a watch channel; `None` means "not the leader".
//!
//! The holder acts only while its token's local deadline (when the last successful renewal was
//! *sent*, plus the lease) lies ahead of the call it is about to make
//! ([`crate::backend::Fence`]). A standby cannot take over before that deadline: it starts
//! counting after the holder's last write landed.

use crate::backend::{BackendError, Clock, LeaderRecord, LeaderToken, StateStore};
use crate::telemetry::Telemetry;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Leadership settings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// This replica's identity (the pod name in Kubernetes, plus a per-process suffix).
    pub owner: String,
    /// How long a lease lasts unless renewed.
    pub ttl: Duration,
}

impl LeaseSettings {
    /// How often to renew or retry: a third of the lease.
    pub fn tick(&self) -> Duration {
        self.ttl / 3
    }

    /// The bound of one leadership call: a quarter of the lease.
    pub fn call_timeout(&self) -> Duration {
        self.ttl / 4
    }
}

/// What a standby has seen of the leader item: the record and when (monotonic) it first saw it
/// unchanged.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    seen: Option<(LeaderRecord, Instant)>,
}

impl Observed {
    /// Whether the leader item may be taken over now, after seeing `record`: it was released,
    /// or it has not changed for a whole `ttl` on this replica's clock.
    fn may_take_over(&mut self, record: &LeaderRecord, ttl: Duration, now: Instant) -> bool {
        if record.expires_at <= DateTime::<Utc>::UNIX_EPOCH {
            return true;
        }
        match &self.seen {
            Some((seen, since)) if seen == record => now.duration_since(*since) >= ttl,
            _ => {
                self.seen = Some((record.clone(), now));
                false
            }
        }
    }
}

async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(BackendError::Transient {
            api: "leader lease",
            message: format!("no answer within {limit:?}"),
        })
    })
}

/// One step: renew the lease held, or watch for (and take) it. Errors keep the current token
/// until its local deadline: a replica that cannot reach the table stops acting by itself.
pub async fn step<S: StateStore, C: Clock>(
    state: &S,
    clock: &C,
    settings: &LeaseSettings,
    current: Option<LeaderToken>,
    observed: &mut Observed,
) -> Option<LeaderToken> {
    let now = clock.now();
    let limit = settings.call_timeout();
    let result = match &current {
        Some(token) => bounded(limit, state.renew_leadership(token, settings.ttl, now)).await,
        None => match bounded(limit, state.leader_record()).await {
            Ok(None) => {
                bounded(
                    limit,
                    state.acquire_leadership(&settings.owner, settings.ttl, now),
                )
                .await
            }
            Ok(Some(record)) if record.owner == settings.owner => {
                bounded(
                    limit,
                    state.acquire_leadership(&settings.owner, settings.ttl, now),
                )
                .await
            }
            Ok(Some(record)) => {
                if observed.may_take_over(&record, settings.ttl, Instant::now()) {
                    bounded(
                        limit,
                        state.acquire_leadership(&settings.owner, settings.ttl, now),
                    )
                    .await
                } else {
                    tracing::debug!(leader = %record.owner, fence = record.fence, "standby: another replica leads");
                    Ok(None)
                }
            }
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(next) => {
            match (&current, &next) {
                (None, Some(t)) => {
                    *observed = Observed::default();
                    tracing::info!(owner = %t.owner, fence = t.fence, "became leader")
                }
                (Some(t), None) => tracing::warn!(owner = %t.owner, "lost leadership"),
                _ => {}
            }
            next
        }
        Err(error) => {
            tracing::warn!(%error, "leader lease call failed");
            current.filter(|t| t.local_deadline > Instant::now())
        }
    }
}

/// Maintains leadership until `stop` turns true, then releases it. Stop it only after the loop
/// that acts has stopped: a replica that releases while a call of its own is still under way
/// would let a standby act beside it.
pub async fn maintain<S: StateStore, C: Clock>(
    state: S,
    clock: C,
    settings: LeaseSettings,
    telemetry: Telemetry,
    tx: watch::Sender<Option<LeaderToken>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut current: Option<LeaderToken> = None;
    let mut observed = Observed::default();
    loop {
        current = step(&state, &clock, &settings, current, &mut observed).await;
        telemetry.leader.set(current.is_some() as i64);
        tx.send_replace(current.clone());
        tokio::select! {
            _ = clock.sleep(settings.tick()) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if let Some(token) = current {
        tx.send_replace(None);
        telemetry.leader.set(0);
        match bounded(settings.call_timeout(), state.release_leadership(&token)).await {
            Ok(()) => tracing::info!(owner = %token.owner, "released leadership"),
            Err(error) => {
                tracing::warn!(%error, "could not release leadership; it lapses by itself")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fence: u64, expires_ms: i64) -> LeaderRecord {
        LeaderRecord {
            owner: "a".into(),
            fence,
            expires_at: DateTime::from_timestamp_millis(expires_ms).unwrap_or_default(),
        }
    }

    #[test]
    fn a_standby_takes_over_only_after_a_whole_lease_without_change_on_its_own_clock() {
        let ttl = Duration::from_secs(3);
        let t0 = Instant::now();
        let mut o = Observed::default();
        // Far in the past by the wall clock, but just seen: not yet.
        assert!(!o.may_take_over(&record(1, 1_000), ttl, t0));
        assert!(!o.may_take_over(&record(1, 1_000), ttl, t0 + Duration::from_secs(2)));
        // A renewal resets the count.
        assert!(!o.may_take_over(&record(1, 2_000), ttl, t0 + Duration::from_secs(3)));
        assert!(!o.may_take_over(&record(1, 2_000), ttl, t0 + Duration::from_secs(5)));
        assert!(o.may_take_over(&record(1, 2_000), ttl, t0 + Duration::from_secs(6)));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut o = Observed::default();
        assert!(o.may_take_over(&record(4, 0), Duration::from_secs(3), Instant::now()));
    }
}
