//! Set-up that needs the controller's types: its SDK configuration, adapters with their own
//! telemetry, a context over AWS, a leader token, an open fence. Everything that needs only the
//! SDK (clients, names, polling, streams, lease tables, metrics) is `shardctl-test-support`,
//! re-exported here.

#![allow(clippy::unwrap_used)]

use chrono::Utc;
use shardctl_controller::aws::{AwsBackend, AwsContext, AwsOptions, context as aws_context};
use shardctl_controller::backend::{Fence, Kinesis, LeaderToken, StateStore};
use shardctl_controller::telemetry::{CallLabels, Telemetry};
use shardctl_policies::Shard;
use std::time::Duration;

pub use shardctl_test_support::{
    Clients, clients, create_hash_table, create_stream, eventually, lease_table, put_utilization,
    require_emulators, set_checkpoint, table_exists, temp_dir, unique, wait_active, write_policy,
};

/// How long the adapter tests' polls wait before the test fails.
pub const POLL_DEADLINE: Duration = Duration::from_secs(30);

/// The SDK configuration the product uses (its timeouts, its retries off), pointed at the
/// emulators by `AWS_ENDPOINT_URL_*`.
pub async fn sdk_config() -> aws_config::SdkConfig {
    require_emulators();
    shardctl_controller::aws::load_sdk_config().await
}

/// Every adapter, with its own telemetry so tests can count calls.
pub fn backend(config: &aws_config::SdkConfig, options: AwsOptions) -> (AwsBackend, Telemetry) {
    let telemetry = Telemetry::new();
    (
        AwsBackend::from_config(config, options, telemetry.clone()),
        telemetry,
    )
}

/// How many calls of `api` ended with `outcome` (`ok` or an error label).
pub fn calls(telemetry: &Telemetry, api: &'static str, outcome: &'static str) -> u64 {
    telemetry
        .aws_calls
        .get_or_create(&CallLabels { api, outcome })
        .get()
}

/// The controller's services over one state table, as `shardctl run` builds them.
pub async fn services(state_table: &str) -> (AwsContext, Telemetry) {
    require_emulators();
    let telemetry = Telemetry::new();
    (aws_context(state_table, &telemetry).await, telemetry)
}

/// Open shards in key order, through the product's adapter.
pub async fn open_shards(services: &AwsContext, stream: &str) -> Vec<Shard> {
    let mut shards: Vec<Shard> = services
        .kinesis
        .list_shards(stream)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.is_open())
        .collect();
    shards.sort_by_key(|s| s.hash_key_range.starting_hash_key);
    shards
}

/// Takes the leader lease for a test replica.
pub async fn lead(services: &AwsContext, owner: &str) -> LeaderToken {
    services.state.ensure().await.unwrap();
    services
        .state
        .acquire_leadership(owner, Duration::from_secs(30), Utc::now())
        .await
        .unwrap()
        .expect("nobody else leads a fresh table")
}

/// A fence open for an hour (tests that act without a leadership task).
pub fn open_fence() -> Fence {
    Fence::fixed(&LeaderToken::new(
        "test",
        1,
        Utc::now(),
        Duration::from_secs(3600),
        tokio::time::Instant::now(),
    ))
}
