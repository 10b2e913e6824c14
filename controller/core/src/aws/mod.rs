//! The AWS SDK behind the [backend traits](crate::backend): Kinesis, CloudWatch and DynamoDB.
//!
//! ```no_run
//! # async fn example() -> Result<(), shardctl_controller::backend::BackendError> {
//! use shardctl_controller::aws::{AwsBackend, AwsOptions};
//! use shardctl_controller::backend::Kinesis;
//! use shardctl_controller::telemetry::Telemetry;
//!
//! let aws = AwsBackend::from_env(AwsOptions::default(), Telemetry::new()).await;
//! let shards = aws.kinesis.list_shards("orders").await?;
//! # let _ = shards;
//! # Ok(())
//! # }
//! ```
//!
//! Configuration is the SDK's own: the standard credential chain and region, and endpoints from
//! `AWS_ENDPOINT_URL` or the per-service `AWS_ENDPOINT_URL_KINESIS`, `AWS_ENDPOINT_URL_DYNAMODB`
//! and `AWS_ENDPOINT_URL_CLOUDWATCH` (what LocalStack and the emulators use).
//!
//! There is exactly one retry layer: the SDK's retries are disabled and every call goes through
//! [`retry::Retrier`], which retries the retriable [`BackendError`]s with exponential backoff and
//! full jitter and counts every attempt in [`Telemetry`].

pub mod cloudwatch;
pub mod dynamodb;
pub mod kinesis;
pub mod retry;

use crate::backend::{BackendError, Backends, SystemClock};
use crate::reconcile::Context;
use crate::telemetry::Telemetry;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kinesis::error::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::time::Duration;

pub use cloudwatch::CloudWatchMetrics;
pub use dynamodb::{DynamoLeaseTables, DynamoStateStore};
pub use kinesis::AwsKinesis;
pub use retry::{Idempotency, Retrier, RetryPolicy};

/// The default name of the controller's state table.
pub const DEFAULT_STATE_TABLE: &str = "shardctl-state";

/// How long one attempt of any call may take before it counts as a transient failure.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Settings of the AWS adapters. Credentials, region and endpoints are not here: they come from
/// the SDK's standard configuration.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// The DynamoDB table holding the leader lease and the operation journal.
    pub state_table: String,
    /// Retries of every call.
    pub retry: RetryPolicy,
    /// Page size of `ListShards`, `Scan` and `Query` (`None`: the service default). Small
    /// values only make sense in tests of paging.
    pub page_size: Option<i32>,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            state_table: DEFAULT_STATE_TABLE.to_string(),
            retry: RetryPolicy::default(),
            page_size: None,
        }
    }
}

/// The AWS SDK as the controller's [`Backends`].
#[derive(Debug)]
pub enum Aws {}

impl Backends for Aws {
    type Kinesis = AwsKinesis;
    type Metrics = CloudWatchMetrics;
    type Leases = DynamoLeaseTables;
    type State = DynamoStateStore;
    type Clock = SystemClock;
}

/// The control loop's context over real AWS.
pub type AwsContext = Context<Aws>;

/// The AWS context from the standard SDK configuration (see [`load_sdk_config`]), with
/// `state_table` as the controller's state table.
pub async fn context(state_table: &str, telemetry: &Telemetry) -> AwsContext {
    let options = AwsOptions {
        state_table: state_table.to_string(),
        ..AwsOptions::default()
    };
    AwsBackend::from_env(options, telemetry.clone())
        .await
        .into_context(telemetry.clone())
}

/// Every AWS adapter, sharing one SDK configuration and one [`Telemetry`].
#[derive(Debug, Clone)]
pub struct AwsBackend {
    /// Kinesis control plane.
    pub kinesis: AwsKinesis,
    /// Shard-level CloudWatch metrics.
    pub metrics: CloudWatchMetrics,
    /// Consumer lease tables.
    pub lease_tables: DynamoLeaseTables,
    /// The controller's state table.
    pub state: DynamoStateStore,
}

impl AwsBackend {
    /// Loads the standard SDK configuration (see [`load_sdk_config`]) and builds every adapter.
    pub async fn from_env(options: AwsOptions, telemetry: Telemetry) -> Self {
        let config = load_sdk_config().await;
        Self::from_config(&config, options, telemetry)
    }

    /// Builds every adapter from an SDK configuration. The configuration should have the SDK's
    /// retries disabled, as [`load_sdk_config`] does, or calls are retried twice over.
    pub fn from_config(config: &SdkConfig, options: AwsOptions, telemetry: Telemetry) -> Self {
        let retrier = Retrier::new(options.retry.clone(), telemetry);
        AwsBackend {
            kinesis: AwsKinesis::new(config, retrier.clone(), options.page_size),
            metrics: CloudWatchMetrics::new(config, retrier.clone()),
            lease_tables: DynamoLeaseTables::new(config, retrier.clone(), options.page_size),
            state: DynamoStateStore::new(config, retrier, options.state_table, options.page_size),
        }
    }

    /// The context of the control loop over these adapters and the wall clock.
    pub fn into_context(self, telemetry: Telemetry) -> Context<Aws> {
        Context {
            kinesis: self.kinesis,
            metrics: self.metrics,
            leases: self.lease_tables,
            state: self.state,
            clock: SystemClock,
            telemetry,
        }
    }
}

/// The SDK configuration shardctl uses: `aws_config::defaults(BehaviorVersion::latest())` with
/// the SDK's own retries disabled (ours are in [`retry`]) and bounded connect and attempt times.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .load()
        .await
}

/// What a failed call means, whatever the service. Each adapter maps its SDK's typed errors to
/// a class; codes the model does not type are classified by [`ErrorClass::from_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    Throttled,
    ResourceInUse,
    LimitExceeded,
    NotFound,
    Invalid,
    AccessDenied,
    ConditionFailed,
    Transient,
    Other,
}

impl ErrorClass {
    /// Classifies an error code the service model does not type, falling back on the HTTP status.
    pub(crate) fn from_code(code: Option<&str>, status: Option<u16>) -> Self {
        match code {
            Some(
                "Throttling"
                | "ThrottlingException"
                | "ThrottledException"
                | "RequestThrottled"
                | "RequestThrottledException"
                | "TooManyRequestsException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "BandwidthLimitExceeded"
                | "SlowDown"
                | "PriorRequestNotComplete",
            ) => ErrorClass::Throttled,
            Some("LimitExceededException" | "LimitExceeded" | "LimitExceededFault") => {
                ErrorClass::LimitExceeded
            }
            Some("ResourceInUseException") => ErrorClass::ResourceInUse,
            Some("ResourceNotFoundException" | "ResourceNotFound" | "TableNotFoundException") => {
                ErrorClass::NotFound
            }
            Some(
                "AccessDenied"
                | "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "IncompleteSignature"
                | "MissingAuthenticationToken"
                | "NotAuthorized",
            ) => ErrorClass::AccessDenied,
            Some("ConditionalCheckFailedException") => ErrorClass::ConditionFailed,
            Some(
                "ValidationException"
                | "ValidationError"
                | "InvalidArgumentException"
                | "InvalidParameterValue"
                | "InvalidParameterValueException"
                | "InvalidParameterCombination"
                | "InvalidParameterCombinationException"
                | "MissingParameter"
                | "MissingRequiredParameterException"
                | "SerializationException",
            ) => ErrorClass::Invalid,
            Some(
                "InternalFailure"
                | "InternalFailureException"
                | "InternalServerError"
                | "InternalServiceFault"
                | "ServiceUnavailable"
                | "ServiceUnavailableException"
                | "RequestTimeout"
                | "RequestTimeoutException",
            ) => ErrorClass::Transient,
            _ => match status {
                // A success status whose body could not be read: the call may have taken effect.
                Some(200..=299) => ErrorClass::Transient,
                Some(429) => ErrorClass::Throttled,
                Some(500..=599) => ErrorClass::Transient,
                Some(403) => ErrorClass::AccessDenied,
                _ => ErrorClass::Other,
            },
        }
    }

    /// The error of this class.
    pub(crate) fn error(self, api: &'static str, message: String) -> BackendError {
        match self {
            ErrorClass::Throttled => BackendError::Throttled { api, message },
            ErrorClass::ResourceInUse => BackendError::ResourceInUse { api, message },
            ErrorClass::LimitExceeded => BackendError::LimitExceeded { api, message },
            ErrorClass::NotFound => BackendError::NotFound { api, message },
            ErrorClass::Invalid => BackendError::Invalid { api, message },
            ErrorClass::AccessDenied => BackendError::AccessDenied { api, message },
            ErrorClass::ConditionFailed => BackendError::ConditionFailed { api, message },
            ErrorClass::Transient => BackendError::Transient { api, message },
            ErrorClass::Other => BackendError::Other { api, message },
        }
    }
}

/// Classifies any SDK error. Service errors are classified by `typed` (the adapter's match on
/// its service's error types), then by [`ErrorClass::from_code`]; timeouts, I/O failures and
/// unparseable responses are transient; a request that could not be built is invalid; a request
/// not sent for want of configuration (region, credentials, endpoint) is not retried.
///
/// Every AWS SDK crate re-exports the same `aws-smithy-runtime-api` `SdkError`, so this one
/// function serves Kinesis, CloudWatch and DynamoDB.
pub(crate) fn classify_sdk<E>(
    api: &'static str,
    error: SdkError<E>,
    typed: impl FnOnce(E) -> Option<ErrorClass>,
) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let service_error = context.into_err();
            let code = service_error.code().map(str::to_string);
            let message = match (code.as_deref(), service_error.message()) {
                // No code, no message: a response the SDK could not parse; say why.
                (None, None) => format!("HTTP {status}: {}", describe(&service_error)),
                (code, message) => service_message(code, message),
            };
            let class = typed(service_error)
                .unwrap_or_else(|| ErrorClass::from_code(code.as_deref(), Some(status)));
            class.error(api, message)
        }
        error => {
            let class = match &error {
                SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorClass::Transient,
                SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
                    ErrorClass::Transient
                }
                SdkError::DispatchFailure(failure) if failure.is_user() => ErrorClass::Invalid,
                // Not sent for want of a region, credentials or an endpoint: retrying the same
                // configuration cannot help, and the message says what is missing.
                SdkError::DispatchFailure(_) => ErrorClass::Other,
                SdkError::ConstructionFailure(_) => ErrorClass::Invalid,
                _ => ErrorClass::Other,
            };
            class.error(api, describe(&error))
        }
    }
}

/// The message of a service error: the service's message, else its code, else a placeholder.
pub(crate) fn service_message(code: Option<&str>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        (None, Some(message)) => message.to_string(),
        (None, None) => "the service returned an error without code or message".to_string(),
    }
}

/// A full description of any error with its sources, for messages of transport failures.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    DisplayErrorContext(error).to_string()
}

/// A required response field was absent or malformed: an error, never a panic.
pub(crate) fn malformed(api: &'static str, what: impl std::fmt::Display) -> BackendError {
    BackendError::Other {
        api,
        message: format!("malformed response: {what}"),
    }
}

/// A request could not be built (a bug in shardctl or an invalid argument from the caller).
pub(crate) fn build_error(api: &'static str, error: impl std::fmt::Display) -> BackendError {
    BackendError::Invalid {
        api,
        message: format!("request could not be built: {error}"),
    }
}
