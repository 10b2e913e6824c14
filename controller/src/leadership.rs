//! Keeping (or waiting for) the leader lease, in a task of its own.
//!
//! Several replicas may run; exactly one holds the lease and acts. The holder renews about every
//! third of the lease; a standby tries to take it at the same pace and succeeds once the holder's
//! lease has lapsed (it was killed) or was released (it shut down cleanly). The current token is
//! published on a watch channel; `None` means "not the leader".

use crate::backend::{Clock, LeaderToken, StateStore};
use crate::telemetry::Telemetry;
use std::time::Duration;
use tokio::sync::watch;

/// Leadership settings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// This replica's identity (the pod name in Kubernetes).
    pub owner: String,
    /// How long a lease lasts unless renewed.
    pub ttl: Duration,
}

impl LeaseSettings {
    /// How often to renew or retry: a third of the lease.
    pub fn tick(&self) -> Duration {
        self.ttl / 3
    }
}

/// One step: renew the lease held, or try to take it. Errors keep the current state until the
/// lease would lapse: a replica that cannot reach the table stops acting at its own expiry.
pub async fn step<S: StateStore, C: Clock>(
    state: &S,
    clock: &C,
    settings: &LeaseSettings,
    current: Option<LeaderToken>,
) -> Option<LeaderToken> {
    let now = clock.now();
    let result = match &current {
        Some(token) => state.renew_leadership(token, settings.ttl, now).await,
        None => {
            state
                .acquire_leadership(&settings.owner, settings.ttl, now)
                .await
        }
    };
    match result {
        Ok(next) => {
            match (&current, &next) {
                (None, Some(t)) => {
                    tracing::info!(owner = %t.owner, fence = t.fence, "became leader")
                }
                (Some(t), None) => tracing::warn!(owner = %t.owner, "lost leadership"),
                _ => {}
            }
            next
        }
        Err(error) => {
            tracing::warn!(%error, "leader lease call failed");
            current.filter(|t| t.expires_at > now)
        }
    }
}

/// Maintains leadership until `stop` turns true, then releases it.
pub async fn maintain<S: StateStore, C: Clock>(
    state: S,
    clock: C,
    settings: LeaseSettings,
    telemetry: Telemetry,
    tx: watch::Sender<Option<LeaderToken>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut current: Option<LeaderToken> = None;
    loop {
        current = step(&state, &clock, &settings, current).await;
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
        match state.release_leadership(&token).await {
            Ok(()) => tracing::info!(owner = %token.owner, "released leadership"),
            Err(error) => {
                tracing::warn!(%error, "could not release leadership; it lapses by itself")
            }
        }
    }
}
