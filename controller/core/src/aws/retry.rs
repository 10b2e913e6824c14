//! The one retry layer of the AWS adapters.
//!
//! Retriable [`BackendError`]s (throttling, `LimitExceeded`, `ResourceInUse`, transient
//! failures) are retried with exponential backoff and full jitter (a delay drawn uniformly from
//! `0 ..= min(max_backoff, initial_backoff * 2^retry)`), bounded both by a number of attempts and
//! by a total deadline. Every attempt is counted in [`Telemetry::call`] as `ok` or the error's
//! label, so throttling shows up in `shardctl_aws_calls_total` even when a retry hides it.
//!
//! The clock is injected ([`Clock`]): production sleeps on tokio's timer, tests on virtual time.

use crate::backend::{BackendError, Clock, SystemClock};
use crate::telemetry::Telemetry;
use rand::Rng;
use std::future::Future;
use std::time::Duration;

/// How often and how long a call is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// The backoff cap before the first retry; it doubles with every retry.
    pub initial_backoff: Duration,
    /// The largest backoff cap.
    pub max_backoff: Duration,
    /// No retry starts a sleep that would end later than this after the first attempt began.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts, backoff caps of 100 ms doubling up to 5 s, within 30 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries: the error of the first failure is returned as it is.
    pub fn no_retries() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The upper bound of the delay before retry number `retry` (0 for the first retry).
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// Whether a call may be repeated when its first attempt may have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads and writes that give the same result when repeated: every retriable error is
    /// retried.
    Idempotent,
    /// Calls whose repetition after an unknown outcome would mislead (`SplitShard`,
    /// `MergeShards`): only errors by which the service definitely rejected the call
    /// (throttling, `LimitExceeded`, `ResourceInUse`) are retried. A transient failure (timeout,
    /// connection reset, 5xx) is returned at once, so the caller resolves the outcome from the
    /// shard map instead of repeating an operation that may have happened.
    NonIdempotent,
}

/// Draws the delay before a retry from `0 ..= cap`.
pub type Jitter = fn(Duration) -> Duration;

/// Full jitter: uniform in `0 ..= cap`.
pub fn full_jitter(cap: Duration) -> Duration {
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// Runs calls with retries. Cheap to clone; clones share the telemetry.
#[derive(Clone)]
pub struct Retrier<C = SystemClock> {
    policy: RetryPolicy,
    telemetry: Telemetry,
    clock: C,
    jitter: Jitter,
}

impl std::fmt::Debug for Retrier<SystemClock> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Retrier<SystemClock> {
    /// Retries on the wall clock with full jitter.
    pub fn new(policy: RetryPolicy, telemetry: Telemetry) -> Self {
        Retrier::with_clock(policy, telemetry, SystemClock, full_jitter)
    }
}

impl<C: Clock> Retrier<C> {
    /// Retries on `clock`, drawing delays with `jitter`.
    pub fn with_clock(policy: RetryPolicy, telemetry: Telemetry, clock: C, jitter: Jitter) -> Self {
        Retrier {
            policy,
            telemetry,
            clock,
            jitter,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The telemetry every attempt is counted in.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Runs `attempt` until it succeeds, fails with an error that is not retried, or the policy's
    /// attempts or deadline run out; returns the last result. `api` names the call in metrics
    /// and logs.
    pub async fn call<T, F, Fut>(
        &self,
        api: &'static str,
        idempotency: Idempotency,
        mut attempt: F,
    ) -> Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let started = self.clock.now();
        let deadline =
            chrono::Duration::from_std(self.policy.deadline).unwrap_or(chrono::Duration::MAX);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match attempt().await {
                Ok(value) => {
                    self.telemetry.call(api, "ok");
                    return Ok(value);
                }
                Err(error) => error,
            };
            self.telemetry.call(api, error.label());
            if !should_retry(&error, idempotency) {
                return Err(error);
            }
            if attempts >= self.policy.max_attempts {
                tracing::warn!(api, attempts, %error, "giving up: retry attempts exhausted");
                return Err(error);
            }
            let delay = (self.jitter)(self.policy.backoff_cap(attempts - 1));
            let elapsed = self.clock.now() - started;
            let after_sleep = chrono::Duration::from_std(delay)
                .ok()
                .and_then(|d| elapsed.checked_add(&d));
            if after_sleep.is_none_or(|t| t > deadline) {
                tracing::warn!(
                    api,
                    attempts,
                    deadline_ms = self.policy.deadline.as_millis() as u64,
                    %error,
                    "giving up: retry deadline reached"
                );
                return Err(error);
            }
            tracing::debug!(
                api,
                attempt = attempts,
                delay_ms = delay.as_millis() as u64,
                %error,
                "retrying"
            );
            self.clock.sleep(delay).await;
        }
    }
}

fn should_retry(error: &BackendError, idempotency: Idempotency) -> bool {
    match idempotency {
        Idempotency::Idempotent => error.is_retriable(),
        Idempotency::NonIdempotent => matches!(
            error,
            BackendError::Throttled { .. }
                | BackendError::ResourceInUse { .. }
                | BackendError::LimitExceeded { .. }
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::telemetry::CallLabels;
    use chrono::{DateTime, TimeZone, Utc};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    /// Virtual time: `sleep` returns at once and moves `now` forward; every sleep is recorded.
    #[derive(Clone)]
    struct FakeClock {
        now: Arc<Mutex<DateTime<Utc>>>,
        sleeps: Arc<Mutex<Vec<Duration>>>,
    }

    impl FakeClock {
        fn new() -> Self {
            FakeClock {
                now: Arc::new(Mutex::new(
                    Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap(),
                )),
                sleeps: Arc::default(),
            }
        }

        fn advance(&self, by: Duration) {
            *self.now.lock().unwrap() += chrono::Duration::from_std(by).unwrap();
        }

        fn sleeps(&self) -> Vec<Duration> {
            self.sleeps.lock().unwrap().clone()
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> DateTime<Utc> {
            *self.now.lock().unwrap()
        }

        fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
            self.sleeps.lock().unwrap().push(duration);
            self.advance(duration);
            std::future::ready(())
        }
    }

    /// The largest delay allowed: makes backoff deterministic.
    fn no_jitter(cap: Duration) -> Duration {
        cap
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            deadline: Duration::from_secs(60),
        }
    }

    fn retrier(policy: RetryPolicy) -> (Retrier<FakeClock>, FakeClock, Telemetry) {
        let clock = FakeClock::new();
        let telemetry = Telemetry::new();
        let retrier = Retrier::with_clock(policy, telemetry.clone(), clock.clone(), no_jitter);
        (retrier, clock, telemetry)
    }

    fn count(telemetry: &Telemetry, api: &'static str, outcome: &'static str) -> u64 {
        telemetry
            .aws_calls
            .get_or_create(&CallLabels { api, outcome })
            .get()
    }

    fn throttled() -> BackendError {
        BackendError::Throttled {
            api: "SplitShard",
            message: "Rate exceeded".into(),
        }
    }

    fn in_use() -> BackendError {
        BackendError::ResourceInUse {
            api: "SplitShard",
            message: "stream is UPDATING".into(),
        }
    }

    fn limit() -> BackendError {
        BackendError::LimitExceeded {
            api: "SplitShard",
            message: "5 calls per second".into(),
        }
    }

    fn transient() -> BackendError {
        BackendError::Transient {
            api: "SplitShard",
            message: "connection reset".into(),
        }
    }

    /// An operation that fails with `errors` in turn, then succeeds; counts its calls.
    fn failing(
        errors: Vec<BackendError>,
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> std::future::Ready<Result<u32, BackendError>>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let op = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(match errors.get(n as usize) {
                Some(error) => Err(error.clone()),
                None => Ok(n),
            })
        };
        (calls, op)
    }

    #[tokio::test]
    async fn throttling_is_retried_with_doubling_backoff_until_success() {
        let (retrier, clock, telemetry) = retrier(policy());
        let (calls, op) = failing(vec![throttled(), throttled(), throttled()]);
        let result = retrier
            .call("SplitShard", Idempotency::Idempotent, op)
            .await;
        assert_eq!(result, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(
            clock.sleeps(),
            [100, 200, 400].map(Duration::from_millis).to_vec()
        );
        assert_eq!(count(&telemetry, "SplitShard", "throttled"), 3);
        assert_eq!(count(&telemetry, "SplitShard", "ok"), 1);
    }

    #[tokio::test]
    async fn limit_exceeded_resource_in_use_and_transient_are_retried() {
        let (retrier, _clock, telemetry) = retrier(policy());
        let (calls, op) = failing(vec![limit(), in_use(), transient()]);
        let result = retrier
            .call("SplitShard", Idempotency::Idempotent, op)
            .await;
        assert_eq!(result, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        for outcome in ["limit_exceeded", "resource_in_use", "transient", "ok"] {
            assert_eq!(count(&telemetry, "SplitShard", outcome), 1, "{outcome}");
        }
    }

    #[tokio::test]
    async fn errors_that_retrying_cannot_fix_are_returned_after_one_attempt() {
        let final_errors = [
            BackendError::Invalid {
                api: "SplitShard",
                message: "bad key".into(),
            },
            BackendError::NotFound {
                api: "SplitShard",
                message: "no stream".into(),
            },
            BackendError::ConditionFailed {
                api: "SplitShard",
                message: "fenced".into(),
            },
            BackendError::AccessDenied {
                api: "SplitShard",
                message: "no".into(),
            },
        ];
        for error in final_errors {
            let (retrier, clock, telemetry) = retrier(policy());
            let (calls, op) = failing(vec![error.clone()]);
            let result = retrier
                .call("SplitShard", Idempotency::Idempotent, op)
                .await;
            assert_eq!(result, Err(error.clone()));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert!(clock.sleeps().is_empty());
            assert_eq!(count(&telemetry, "SplitShard", error.label()), 1);
        }
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_the_last_error_is_returned() {
        let (retrier, clock, telemetry) = retrier(policy());
        let (calls, op) = failing(vec![throttled(); 100]);
        let result = retrier
            .call("SplitShard", Idempotency::Idempotent, op)
            .await;
        assert_eq!(result, Err(throttled()));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert_eq!(clock.sleeps().len(), 4);
        assert_eq!(count(&telemetry, "SplitShard", "throttled"), 5);
        assert_eq!(count(&telemetry, "SplitShard", "ok"), 0);
    }

    #[tokio::test]
    async fn the_deadline_bounds_the_total_time_spent_retrying() {
        let (retrier, clock, _telemetry) = retrier(RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(400),
            max_backoff: Duration::from_secs(10),
            deadline: Duration::from_secs(3),
        });
        let (calls, op) = failing(vec![in_use(); 100]);
        let result = retrier
            .call("MergeShards", Idempotency::Idempotent, op)
            .await;
        assert_eq!(result, Err(in_use()));
        // 400 + 800 = 1.2 s; the next sleep (1.6 s) would end at 2.8 s, the one after at 6 s.
        assert_eq!(
            clock.sleeps(),
            [400, 800, 1600].map(Duration::from_millis).to_vec()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn time_spent_in_attempts_counts_against_the_deadline() {
        let (retrier, clock, _telemetry) = retrier(RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(100),
            deadline: Duration::from_secs(10),
        });
        let calls = AtomicU32::new(0);
        let slow = || {
            calls.fetch_add(1, Ordering::SeqCst);
            // Every attempt takes 4 s (e.g. a timeout).
            clock.advance(Duration::from_secs(4));
            std::future::ready(Err::<(), _>(transient()))
        };
        let result = retrier
            .call("GetMetricData", Idempotency::Idempotent, slow)
            .await;
        assert_eq!(result, Err(transient()));
        // Attempts end at 4 s, 8.1 s and 12.2 s: past the deadline, so no third sleep.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn non_idempotent_calls_are_not_repeated_after_an_unknown_outcome() {
        let (retrier, _clock, telemetry) = retrier(policy());
        let (calls, op) = failing(vec![in_use(), transient()]);
        let result = retrier
            .call("SplitShard", Idempotency::NonIdempotent, op)
            .await;
        assert_eq!(result, Err(transient()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(count(&telemetry, "SplitShard", "resource_in_use"), 1);
        assert_eq!(count(&telemetry, "SplitShard", "transient"), 1);

        let (calls, op) = failing(vec![throttled(), limit(), in_use()]);
        let result = retrier
            .call("MergeShards", Idempotency::NonIdempotent, op)
            .await;
        assert_eq!(result, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn no_retries_policy_makes_exactly_one_attempt() {
        let (retrier, clock, _telemetry) = retrier(RetryPolicy::no_retries());
        let (calls, op) = failing(vec![in_use()]);
        let result = retrier
            .call("SplitShard", Idempotency::Idempotent, op)
            .await;
        assert_eq!(result, Err(in_use()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(clock.sleeps().is_empty());
    }

    #[test]
    fn backoff_caps_double_and_saturate_without_overflow() {
        let p = policy();
        let caps: Vec<_> = (0..6).map(|r| p.backoff_cap(r).as_millis()).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff_cap(31), Duration::from_secs(1));
        assert_eq!(p.backoff_cap(32), Duration::from_secs(1));
        assert_eq!(p.backoff_cap(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_stays_within_the_cap_and_spreads() {
        let cap = Duration::from_millis(800);
        let draws: Vec<_> = (0..2_000).map(|_| full_jitter(cap)).collect();
        assert!(draws.iter().all(|d| *d <= cap));
        assert!(draws.iter().any(|d| *d < cap / 4));
        assert!(draws.iter().any(|d| *d > cap * 3 / 4));
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
    }
}
