//! Shared set-up of shardctl's tests against the AWS emulators (kinesis-local for Kinesis, moto
//! for DynamoDB and CloudWatch): SDK clients from the standard `AWS_ENDPOINT_URL_*` variables,
//! unique resource names, polling with a deadline, benchmark knobs from the environment, streams, KCL-shaped lease tables, shard-level
//! metrics written the way Kinesis publishes them, and `shardctl run` replicas.
//!
//! ```no_run
//! use shardctl_test_support::{clients, create_stream, eventually, list_shards, unique};
//! use std::time::Duration;
//!
//! # async fn example() {
//! // Panics with the command that starts the emulators when their variables are unset.
//! let c = clients().await;
//! let stream = unique("orders");
//! create_stream(&c.kinesis, &stream, 2).await; // ACTIVE on return
//! let shards = eventually("two shards", Duration::from_secs(30), async || {
//!     let shards = list_shards(&c.kinesis, &stream).await.ok()?;
//!     (shards.len() == 2).then_some(shards)
//! })
//! .await;
//! assert_eq!(shards.len(), 2);
//! # }
//! ```
//!
//! Stream helpers take a Kinesis client (every test has one, the consumer's tests only that and
//! DynamoDB); fixtures for tests that hold all three clients (utilisation metrics, KCL lease rows)
//! take [`Clients`].
//!
//! It depends on the AWS SDK and on no shardctl crate, so the tests of every crate can use it
//! (the consumer's without linking the controller). Helpers that need the controller's types (a
//! context over AWS, a leader token, an open fence) stay with the controller's tests.

mod emulators;
mod knobs;
mod lease_table;
mod metrics;
mod peers;
mod poll;
mod replica;
mod streams;

pub use emulators::{
    Clients, START_EMULATORS, clients, require_emulators, require_endpoints, sdk_config,
};
pub use knobs::knob;
pub use lease_table::{create_hash_table, lease_table, set_checkpoint, table_exists};
pub use metrics::{ShardMinute, put_shard_metrics, put_utilization, unix_minute};
pub use peers::{peer_python, repo_root};
pub use poll::{POLL_INTERVAL, eventually, eventually_every};
pub use replica::{
    free_port, http_get, leader_gauge, shardctl_binary, shardctl_run, temp_dir, write_policy,
};
pub use streams::{create_stream, is_active, is_open, list_shards, wait_active};

/// A resource name no other test (or test run) uses: `prefix`, a dash and 12 random hex digits.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}
