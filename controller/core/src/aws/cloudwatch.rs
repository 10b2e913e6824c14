//! [`Metrics`] over CloudWatch `GetMetricData`.
//!
//! One query per shard and [`ShardMetric`]: namespace `AWS/Kinesis`, exactly the dimensions
//! `StreamName` and `ShardId`, statistic `Sum`, period 60 s. Queries go 500 to a call (the API's
//! maximum), so a cycle costs `ceil(shards * 3 / 500)` calls plus one per extra page of results.
//! Query ids are `q<index>` (ids must match `^[a-z][a-zA-Z0-9_]*$`; shard ids do not), mapped
//! back to shard and metric by index. Datapoints land in per-minute slots counted from `start`;
//! a minute without a datapoint stays `None`.

use super::retry::{Idempotency, Retrier};
use super::{ErrorClass, classify_sdk, malformed};
use crate::backend::{BackendError, Metrics, ShardMetric};
use aws_config::SdkConfig;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::error::SdkError;
use aws_sdk_cloudwatch::types as sdk;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use shardctl_policies::ShardMetrics;
use std::collections::HashMap;
use std::ops::Range;

const GET_METRIC_DATA: &str = "GetMetricData";

/// The namespace of Kinesis' metrics.
pub const NAMESPACE: &str = "AWS/Kinesis";
/// The most queries one `GetMetricData` call takes.
pub const MAX_QUERIES_PER_CALL: usize = 500;
/// The period of every query, in seconds.
pub const PERIOD_SECONDS: i32 = 60;
/// `GetMetricData` calls in flight at once for one `shard_metrics` call (CloudWatch allows 50
/// per second per account by default).
const CONCURRENT_CALLS: usize = 4;

/// Shard-level Kinesis metrics from CloudWatch.
#[derive(Debug, Clone)]
pub struct CloudWatchMetrics {
    client: Client,
    retrier: Retrier,
}

impl CloudWatchMetrics {
    /// An adapter over `config` (whose SDK retries should be disabled).
    pub fn new(config: &SdkConfig, retrier: Retrier) -> Self {
        CloudWatchMetrics {
            client: Client::new(config),
            retrier,
        }
    }
}

/// The time window of one `shard_metrics` call.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    minutes: usize,
}

impl Window {
    fn start_time(&self) -> aws_smithy_types::DateTime {
        aws_smithy_types::DateTime::from_secs(self.start)
    }

    fn end_time(&self) -> aws_smithy_types::DateTime {
        let minutes = i64::try_from(self.minutes).unwrap_or(i64::MAX / 120);
        aws_smithy_types::DateTime::from_secs(self.start.saturating_add(minutes.saturating_mul(60)))
    }

    /// The minute slot of a datapoint's timestamp, if inside the window.
    fn minute_of(&self, timestamp: &aws_smithy_types::DateTime) -> Option<usize> {
        let offset = timestamp.secs().checked_sub(self.start)?;
        let minute = usize::try_from(offset.div_euclid(60)).ok()?;
        (minute < self.minutes).then_some(minute)
    }
}

/// One datapoint: the global query index, its minute slot, its value.
type Point = (usize, usize, f64);

impl Metrics for CloudWatchMetrics {
    async fn shard_metrics(
        &self,
        stream: &str,
        shard_ids: &[String],
        start: DateTime<Utc>,
        minutes: usize,
    ) -> Result<HashMap<String, ShardMetrics>, BackendError> {
        let mut out: HashMap<String, ShardMetrics> = shard_ids
            .iter()
            .map(|id| (id.clone(), unknown_series(minutes)))
            .collect();
        if shard_ids.is_empty() || minutes == 0 {
            return Ok(out);
        }
        let window = Window {
            start: start.timestamp(),
            minutes,
        };
        let total = shard_ids.len() * ShardMetric::ALL.len();
        let points: Vec<Vec<Point>> = futures::stream::iter(batches(total))
            .map(|batch| self.fetch_batch(stream, shard_ids, batch, window))
            .buffer_unordered(CONCURRENT_CALLS)
            .try_collect()
            .await?;
        for (index, minute, value) in points.into_iter().flatten() {
            let (shard, metric) = query_target(index);
            let Some(series) = shard_ids.get(shard).and_then(|id| out.get_mut(id)) else {
                continue;
            };
            let slots = match ShardMetric::ALL[metric] {
                ShardMetric::IncomingBytes => &mut series.incoming_bytes,
                ShardMetric::IncomingRecords => &mut series.incoming_records,
                ShardMetric::WriteProvisionedThroughputExceeded => {
                    &mut series.write_provisioned_throughput_exceeded
                }
            };
            if let Some(slot) = slots.get_mut(minute) {
                *slot = Some(value);
            }
        }
        tracing::debug!(
            stream,
            shards = shard_ids.len(),
            minutes,
            queries = total,
            "read shard metrics"
        );
        Ok(out)
    }
}

impl CloudWatchMetrics {
    /// Runs the queries of `batch` (global query indices), following `NextToken`.
    async fn fetch_batch(
        &self,
        stream: &str,
        shard_ids: &[String],
        batch: Range<usize>,
        window: Window,
    ) -> Result<Vec<Point>, BackendError> {
        let queries: Vec<sdk::MetricDataQuery> = batch
            .clone()
            .map(|index| {
                let (shard, metric) = query_target(index);
                query(index, stream, &shard_ids[shard], ShardMetric::ALL[metric])
            })
            .collect();
        let mut points = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let token = next_token.clone();
            let (page, token) = self
                .retrier
                .call(GET_METRIC_DATA, Idempotency::Idempotent, || async {
                    let output = self
                        .client
                        .get_metric_data()
                        .set_metric_data_queries(Some(queries.clone()))
                        .start_time(window.start_time())
                        .end_time(window.end_time())
                        .scan_by(sdk::ScanBy::TimestampAscending)
                        .set_next_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| classify(GET_METRIC_DATA, e))?;
                    let page = points_of(output.metric_data_results(), &batch, window)?;
                    Ok((page, output.next_token().map(str::to_string)))
                })
                .await?;
            points.extend(page);
            match token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => return Ok(points),
            }
        }
    }
}

/// The global query indices `0..total` in batches of at most [`MAX_QUERIES_PER_CALL`].
fn batches(total: usize) -> impl Iterator<Item = Range<usize>> {
    (0..total)
        .step_by(MAX_QUERIES_PER_CALL)
        .map(move |first| first..total.min(first + MAX_QUERIES_PER_CALL))
}

/// The shard index and metric index of global query `index`.
fn query_target(index: usize) -> (usize, usize) {
    (
        index / ShardMetric::ALL.len(),
        index % ShardMetric::ALL.len(),
    )
}

fn query(index: usize, stream: &str, shard_id: &str, metric: ShardMetric) -> sdk::MetricDataQuery {
    let dimension =
        |name: &str, value: &str| sdk::Dimension::builder().name(name).value(value).build();
    sdk::MetricDataQuery::builder()
        .id(format!("q{index}"))
        .metric_stat(
            sdk::MetricStat::builder()
                .metric(
                    sdk::Metric::builder()
                        .namespace(NAMESPACE)
                        .metric_name(metric.cloudwatch_name())
                        .dimensions(dimension("StreamName", stream))
                        .dimensions(dimension("ShardId", shard_id))
                        .build(),
                )
                .period(PERIOD_SECONDS)
                .stat("Sum")
                .build(),
        )
        .return_data(true)
        .build()
}

/// The datapoints of one page of results. A result for an id we did not ask for, or with
/// mismatched timestamps and values, is a malformed response; a result CloudWatch could not
/// compute is transient (retried) or access denied.
fn points_of(
    results: &[sdk::MetricDataResult],
    batch: &Range<usize>,
    window: Window,
) -> Result<Vec<Point>, BackendError> {
    let mut points = Vec::new();
    for result in results {
        let id = result
            .id()
            .ok_or_else(|| malformed(GET_METRIC_DATA, "a result without Id"))?;
        let index = id
            .strip_prefix('q')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|index| batch.contains(index))
            .ok_or_else(|| malformed(GET_METRIC_DATA, format!("unexpected result id {id:?}")))?;
        match result.status_code() {
            Some(sdk::StatusCode::InternalError) => {
                return Err(BackendError::Transient {
                    api: GET_METRIC_DATA,
                    message: format!("result {id}: InternalError"),
                });
            }
            Some(sdk::StatusCode::Forbidden) => {
                return Err(BackendError::AccessDenied {
                    api: GET_METRIC_DATA,
                    message: format!("result {id}: Forbidden (cloudwatch:GetMetricData)"),
                });
            }
            _ => {}
        }
        let (timestamps, values) = (result.timestamps(), result.values());
        if timestamps.len() != values.len() {
            return Err(malformed(
                GET_METRIC_DATA,
                format!(
                    "result {id}: {} timestamps but {} values",
                    timestamps.len(),
                    values.len()
                ),
            ));
        }
        for (timestamp, value) in timestamps.iter().zip(values) {
            if let Some(minute) = window.minute_of(timestamp) {
                points.push((index, minute, *value));
            }
        }
    }
    Ok(points)
}

fn unknown_series(minutes: usize) -> ShardMetrics {
    ShardMetrics {
        incoming_bytes: vec![None; minutes],
        incoming_records: vec![None; minutes],
        write_provisioned_throughput_exceeded: vec![None; minutes],
    }
}

/// Classifies a CloudWatch SDK error by its type.
fn classify<E>(api: &'static str, error: SdkError<E>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    aws_sdk_cloudwatch::Error: From<E>,
{
    classify_sdk(api, error, |e| {
        use aws_sdk_cloudwatch::Error as C;
        match C::from(e) {
            C::LimitExceededException(_) | C::LimitExceededFault(_) => {
                Some(ErrorClass::LimitExceeded)
            }
            C::ResourceNotFound(_) | C::ResourceNotFoundException(_) => Some(ErrorClass::NotFound),
            C::InvalidNextToken(_)
            | C::InvalidParameterValueException(_)
            | C::InvalidParameterCombinationException(_)
            | C::MissingRequiredParameterException(_)
            | C::InvalidFormatFault(_) => Some(ErrorClass::Invalid),
            C::InternalServiceFault(_) | C::ConcurrentModificationException(_) => {
                Some(ErrorClass::Transient)
            }
            // Unmodelled codes (`Throttling`, `AccessDenied`, 5xx, ...): by code and status.
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn window() -> Window {
        Window {
            start: 1_800_000_000, // minute-aligned
            minutes: 5,
        }
    }

    fn at(window: Window, seconds: i64) -> aws_smithy_types::DateTime {
        aws_smithy_types::DateTime::from_secs(window.start + seconds)
    }

    #[test]
    fn query_ids_are_valid_and_map_back_to_shard_and_metric() {
        let q = query(
            1234,
            "orders",
            "shardId-000000000411",
            ShardMetric::IncomingRecords,
        );
        let id = q.id().unwrap();
        assert_eq!(id, "q1234");
        assert!(id.starts_with(|c: char| c.is_ascii_lowercase()));
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert_eq!(query_target(1234), (411, 1));
        assert_eq!(
            ShardMetric::ALL[query_target(1234).1],
            ShardMetric::IncomingRecords
        );
        let stat = q.metric_stat().unwrap();
        assert_eq!(stat.period(), Some(60));
        assert_eq!(stat.stat(), Some("Sum"));
        let metric = stat.metric().unwrap();
        assert_eq!(metric.namespace(), Some("AWS/Kinesis"));
        assert_eq!(metric.metric_name(), Some("IncomingRecords"));
        let dims: Vec<_> = metric
            .dimensions()
            .iter()
            .map(|d| (d.name().unwrap(), d.value().unwrap()))
            .collect();
        assert_eq!(
            dims,
            [
                ("StreamName", "orders"),
                ("ShardId", "shardId-000000000411")
            ]
        );
    }

    #[test]
    fn datapoints_land_in_minute_slots_and_outside_points_are_dropped() {
        let w = window();
        let result = sdk::MetricDataResult::builder()
            .id("q7")
            .status_code(sdk::StatusCode::Complete)
            .timestamps(at(w, 0))
            .values(1.0)
            .timestamps(at(w, 180))
            .values(4.0)
            .timestamps(at(w, -60))
            .values(9.0)
            .timestamps(at(w, 300))
            .values(9.0)
            .build();
        let points = points_of(&[result], &(0..500), w).unwrap();
        assert_eq!(points, [(7, 0, 1.0), (7, 3, 4.0)]);
    }

    #[test]
    fn foreign_ids_mismatched_lengths_and_failed_results_are_errors() {
        let w = window();
        let foreign = sdk::MetricDataResult::builder().id("q900").build();
        assert!(matches!(
            points_of(&[foreign], &(0..500), w),
            Err(BackendError::Other { .. })
        ));
        let uneven = sdk::MetricDataResult::builder()
            .id("q1")
            .timestamps(at(w, 0))
            .build();
        assert!(matches!(
            points_of(&[uneven], &(0..500), w),
            Err(BackendError::Other { .. })
        ));
        let internal = sdk::MetricDataResult::builder()
            .id("q1")
            .status_code(sdk::StatusCode::InternalError)
            .build();
        assert!(matches!(
            points_of(&[internal], &(0..500), w),
            Err(BackendError::Transient { .. })
        ));
    }

    #[test]
    fn batches_hold_at_most_500_queries() {
        for (shards, calls) in [
            (1, 1),
            (166, 1),
            (167, 2),
            (500, 3),
            (2_000, 12),
            (10_000, 60),
        ] {
            let total = shards * ShardMetric::ALL.len();
            let batches: Vec<_> = batches(total).collect();
            assert_eq!(batches.len(), calls, "{shards} shards");
            assert!(batches.iter().all(|b| b.len() <= MAX_QUERIES_PER_CALL));
            assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), total);
        }
    }
}
