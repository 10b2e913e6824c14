//! Shared set-up of the AWS adapter tests: emulator endpoints from the standard environment
//! variables, unique resource names, polling with a deadline.

#![allow(dead_code)]

use shardctl_controller::aws::{AwsBackend, AwsOptions};
use shardctl_controller::telemetry::{CallLabels, Telemetry};
use std::future::Future;
use std::time::{Duration, Instant};

/// How long any poll waits before the test fails.
pub const POLL_DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The SDK configuration the product uses, pointed at the emulators by `AWS_ENDPOINT_URL_*`.
/// Panics with the command to run when the emulators' environment is missing.
pub async fn sdk_config() -> aws_config::SdkConfig {
    for var in [
        "AWS_ENDPOINT_URL_KINESIS",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_CLOUDWATCH",
    ] {
        if std::env::var_os(var).is_none() && std::env::var_os("AWS_ENDPOINT_URL").is_none() {
            panic!(
                "{var} is unset: start the emulators: \
                 scripts/emulators.sh start && eval \"$(scripts/emulators.sh env)\""
            );
        }
    }
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

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// How many calls of `api` ended with `outcome` (`ok` or an error label).
pub fn calls(telemetry: &Telemetry, api: &'static str, outcome: &'static str) -> u64 {
    telemetry
        .aws_calls
        .get_or_create(&CallLabels { api, outcome })
        .get()
}

/// Polls `probe` until it yields `Some`, failing the test after [`POLL_DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < POLL_DEADLINE,
            "timed out after {POLL_DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A fence open for an hour (adapter tests act without a leadership task).
#[allow(dead_code)]
pub fn open_fence() -> shardctl_controller::backend::Fence {
    shardctl_controller::backend::Fence::fixed(&shardctl_controller::backend::LeaderToken::new(
        "adapter-test",
        1,
        chrono::Utc::now(),
        std::time::Duration::from_secs(3600),
        tokio::time::Instant::now(),
    ))
}
