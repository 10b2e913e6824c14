//! How a backend call fails, classified once for retries, metrics and the act phase.

/// A failed backend call, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Request rate exceeded (`ThrottlingException`, `ProvisionedThroughputExceededException`,
    /// CloudWatch `Throttling`). Retriable.
    #[error("{api}: throttled: {message}")]
    Throttled {
        /// The API called, e.g. `SplitShard`.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// The stream is being updated (`ResourceInUseException`). Retriable after the update.
    #[error("{api}: stream busy: {message}")]
    ResourceInUse {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// A rate or quota limit (`LimitExceededException`). Retriable with backoff; may also mean a
    /// shard quota is exhausted, which retries will not fix.
    #[error("{api}: limit exceeded: {message}")]
    LimitExceeded {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// The stream, table or shard does not exist.
    #[error("{api}: not found: {message}")]
    NotFound {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// The request was rejected as invalid (bad split key, non-adjacent merge, closed shard...).
    #[error("{api}: rejected: {message}")]
    Invalid {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// Missing permissions.
    #[error("{api}: access denied: {message}")]
    AccessDenied {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// A conditional write lost (leadership or journal fencing).
    #[error("{api}: condition failed: {message}")]
    ConditionFailed {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// Timeouts, connection errors, 5xx: retriable.
    #[error("{api}: transient failure: {message}")]
    Transient {
        /// The API called.
        api: &'static str,
        /// What happened.
        message: String,
    },
    /// This replica may no longer act: its leadership changed or its lease, by the local
    /// monotonic clock, would not outlast the call. Nothing was sent.
    #[error("{api}: not sent, leadership not current: {message}")]
    Fenced {
        /// The API.
        api: &'static str,
        /// Why.
        message: String,
    },
    /// Anything else.
    #[error("{api}: {message}")]
    Other {
        /// The API called.
        api: &'static str,
        /// What happened.
        message: String,
    },
}

impl BackendError {
    /// A fixed label for metrics (`outcome` of `shardctl_aws_calls_total`).
    pub fn label(&self) -> &'static str {
        match self {
            BackendError::Throttled { .. } => "throttled",
            BackendError::ResourceInUse { .. } => "resource_in_use",
            BackendError::LimitExceeded { .. } => "limit_exceeded",
            BackendError::NotFound { .. } => "not_found",
            BackendError::Invalid { .. } => "invalid",
            BackendError::AccessDenied { .. } => "access_denied",
            BackendError::ConditionFailed { .. } => "condition_failed",
            BackendError::Transient { .. } => "transient",
            BackendError::Fenced { .. } => "fenced",
            BackendError::Other { .. } => "other",
        }
    }

    /// Whether retrying the same call later can succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            BackendError::Throttled { .. }
                | BackendError::ResourceInUse { .. }
                | BackendError::LimitExceeded { .. }
                | BackendError::Transient { .. }
        )
    }

    /// True when the call certainly changed nothing: the service answered with a rejection, or
    /// nothing was sent. Timeouts, dropped connections and 5xx answers are not: the call may
    /// have landed.
    pub fn is_definite_rejection(&self) -> bool {
        !matches!(
            self,
            BackendError::Transient { .. } | BackendError::Other { .. }
        )
    }

    /// The API the error came from.
    pub fn api(&self) -> &'static str {
        match self {
            BackendError::Throttled { api, .. }
            | BackendError::ResourceInUse { api, .. }
            | BackendError::LimitExceeded { api, .. }
            | BackendError::NotFound { api, .. }
            | BackendError::Invalid { api, .. }
            | BackendError::AccessDenied { api, .. }
            | BackendError::ConditionFailed { api, .. }
            | BackendError::Transient { api, .. }
            | BackendError::Fenced { api, .. }
            | BackendError::Other { api, .. } => api,
        }
    }
}
