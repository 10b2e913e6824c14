//! `/metrics`, `/healthz` and `/readyz`.
//!
//! `/healthz` fails when the loop has not woken for a long time (stuck); waiting for `ACTIVE`
//! after a reshard counts as progress, so a leader busy with a slow operation is not killed.
//! `/readyz`: the leader is ready while its passes complete without errors; a standby while its
//! loop runs and it reaches the state table (it could take over). A replica that cannot reach AWS
//! is taken out of rotation but not restarted.

use crate::daemon::Progress;
use crate::telemetry::Telemetry;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    /// Metrics.
    pub telemetry: Telemetry,
    /// Loop progress.
    pub progress: Arc<Progress>,
    /// The evaluation interval (the scale of "recently").
    pub interval: Duration,
}

fn allowed_lag(interval: Duration, factor: u32) -> i64 {
    i64::try_from(interval.saturating_mul(factor).as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(60)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.telemetry.encode(),
    )
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    let lag = s.progress.since_tick(chrono::Utc::now());
    if lag <= allowed_lag(s.interval, 5) {
        (StatusCode::OK, format!("ok: loop woke {lag}s ago\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stuck: loop last woke {lag}s ago\n"),
        )
    }
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let lag = s.progress.since_clean_pass(chrono::Utc::now());
    if lag <= allowed_lag(s.interval, 3) {
        (
            StatusCode::OK,
            format!("ready: last clean pass {lag}s ago\n"),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: no clean pass for {lag}s\n"),
        )
    }
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `stop` turns true.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_lag_saturates_for_any_interval() {
        assert_eq!(allowed_lag(Duration::from_secs(60), 5), 360);
        assert_eq!(allowed_lag(Duration::MAX, 5), i64::MAX);
        assert_eq!(allowed_lag(Duration::from_secs(u64::MAX / 2), 3), i64::MAX);
    }
}
