//! [`Kinesis`] over the AWS SDK: `DescribeStreamSummary`, paginated `ListShards`, `SplitShard`,
//! `MergeShards`, `EnableEnhancedMonitoring`, and record sampling for traffic-weighted split
//! points (`GetShardIterator` + `GetRecords`). Never `DescribeStream`.

use super::retry::{Idempotency, Retrier};
use super::{ErrorClass, classify_sdk, malformed};
use crate::backend::{BackendError, Fence, Kinesis, ShardMetric, StreamDescription, StreamMode};
use aws_config::SdkConfig;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::types as sdk;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use shardctl_policies::{HashKey, HashRange, Shard, ShardMetrics, ShardState, StreamStatus};
use std::future::Future;
use std::time::Duration;

const DESCRIBE_STREAM_SUMMARY: &str = "DescribeStreamSummary";
const LIST_SHARDS: &str = "ListShards";
const SPLIT_SHARD: &str = "SplitShard";
const MERGE_SHARDS: &str = "MergeShards";
const ENABLE_ENHANCED_MONITORING: &str = "EnableEnhancedMonitoring";
const GET_SHARD_ITERATOR: &str = "GetShardIterator";
const GET_RECORDS: &str = "GetRecords";

/// The most `GetRecords` calls one sample makes. Reads are shared with the stream's consumers
/// (5 calls/s and 2 MiB/s per shard), so a sample takes a few calls at most.
const MAX_SAMPLE_CALLS: usize = 3;
/// The most records one `GetRecords` call may return.
const MAX_RECORDS_PER_CALL: usize = 10_000;

/// The Kinesis control plane through the AWS SDK.
#[derive(Debug, Clone)]
pub struct AwsKinesis {
    client: Client,
    retrier: Retrier,
    page_size: Option<i32>,
}

impl AwsKinesis {
    /// An adapter over `config` (whose SDK retries should be disabled). `page_size` is the
    /// `MaxResults` of `ListShards` (`None`: the service default of 1,000).
    pub fn new(config: &SdkConfig, retrier: Retrier, page_size: Option<i32>) -> Self {
        AwsKinesis {
            client: Client::new(config),
            retrier,
            page_size,
        }
    }
}

impl Kinesis for AwsKinesis {
    async fn describe_stream(&self, stream: &str) -> Result<StreamDescription, BackendError> {
        let output = self
            .retrier
            .call(DESCRIBE_STREAM_SUMMARY, Idempotency::Idempotent, || async {
                self.client
                    .describe_stream_summary()
                    .stream_name(stream)
                    .send()
                    .await
                    .map_err(|e| classify(DESCRIBE_STREAM_SUMMARY, e))
            })
            .await?;
        let summary = output
            .stream_description_summary()
            .ok_or_else(|| malformed(DESCRIBE_STREAM_SUMMARY, "no StreamDescriptionSummary"))?;
        description_from_sdk(summary).map_err(|what| malformed(DESCRIBE_STREAM_SUMMARY, what))
    }

    async fn list_shards(&self, stream: &str) -> Result<Vec<Shard>, BackendError> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        let mut pages = 0u32;
        loop {
            let token = next_token.as_deref();
            let output = self
                .retrier
                .call(LIST_SHARDS, Idempotency::Idempotent, || async {
                    // With a NextToken, Kinesis rejects StreamName: the token names the stream.
                    let request = match token {
                        Some(token) => self.client.list_shards().next_token(token),
                        None => self.client.list_shards().stream_name(stream),
                    };
                    request
                        .set_max_results(self.page_size)
                        .send()
                        .await
                        .map_err(|e| classify(LIST_SHARDS, e))
                })
                .await?;
            pages += 1;
            for shard in output.shards() {
                shards.push(
                    shard_from_sdk(shard)
                        .map_err(|what| malformed(LIST_SHARDS, format!("{stream}: {what}")))?,
                );
            }
            match output.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
                _ => break,
            }
        }
        tracing::debug!(stream, shards = shards.len(), pages, "listed shards");
        Ok(shards)
    }

    async fn split_shard(
        &self,
        stream: &str,
        shard_id: &str,
        new_starting_hash_key: HashKey,
        fence: &Fence,
    ) -> Result<(), BackendError> {
        let key = new_starting_hash_key.to_string();
        self.retrier
            .call(SPLIT_SHARD, Idempotency::NonIdempotent, || async {
                fence.check(SPLIT_SHARD)?;
                fenced_attempt(SPLIT_SHARD, fence, async {
                    self.client
                        .split_shard()
                        .stream_name(stream)
                        .shard_to_split(shard_id)
                        .new_starting_hash_key(&key)
                        .send()
                        .await
                        .map_err(|e| classify(SPLIT_SHARD, e))
                })
                .await
            })
            .await?;
        tracing::info!(stream, shard = shard_id, at = %key, "split requested");
        Ok(())
    }

    async fn merge_shards(
        &self,
        stream: &str,
        shard_id: &str,
        adjacent_shard_id: &str,
        fence: &Fence,
    ) -> Result<(), BackendError> {
        self.retrier
            .call(MERGE_SHARDS, Idempotency::NonIdempotent, || async {
                fence.check(MERGE_SHARDS)?;
                fenced_attempt(MERGE_SHARDS, fence, async {
                    self.client
                        .merge_shards()
                        .stream_name(stream)
                        .shard_to_merge(shard_id)
                        .adjacent_shard_to_merge(adjacent_shard_id)
                        .send()
                        .await
                        .map_err(|e| classify(MERGE_SHARDS, e))
                })
                .await
            })
            .await?;
        tracing::info!(
            stream,
            shard = shard_id,
            adjacent = adjacent_shard_id,
            "merge requested"
        );
        Ok(())
    }

    async fn enable_shard_metrics(
        &self,
        stream: &str,
        metrics: &[ShardMetric],
    ) -> Result<(), BackendError> {
        if metrics.is_empty() {
            return Ok(());
        }
        let names: Vec<sdk::MetricsName> = metrics.iter().map(|m| metrics_name(*m)).collect();
        self.retrier
            .call(
                ENABLE_ENHANCED_MONITORING,
                Idempotency::Idempotent,
                || async {
                    self.client
                        .enable_enhanced_monitoring()
                        .stream_name(stream)
                        .set_shard_level_metrics(Some(names.clone()))
                        .send()
                        .await
                        .map_err(|e| classify(ENABLE_ENHANCED_MONITORING, e))
                },
            )
            .await?;
        tracing::info!(
            stream,
            metrics = metrics.len(),
            "shard-level metrics enabled"
        );
        Ok(())
    }

    /// Reads the shard from `since` (`AT_TIMESTAMP`) with at most `MAX_SAMPLE_CALLS`
    /// `GetRecords` calls. The sample is the first `limit` records written after `since`; it
    /// stops early at the tip of the shard or at its end.
    async fn sample_records(
        &self,
        stream: &str,
        shard_id: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, BackendError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let at = aws_smithy_types::DateTime::from_millis(since.timestamp_millis());
        let output = self
            .retrier
            .call(GET_SHARD_ITERATOR, Idempotency::Idempotent, || async {
                self.client
                    .get_shard_iterator()
                    .stream_name(stream)
                    .shard_id(shard_id)
                    .shard_iterator_type(sdk::ShardIteratorType::AtTimestamp)
                    .timestamp(at)
                    .send()
                    .await
                    .map_err(|e| classify(GET_SHARD_ITERATOR, e))
            })
            .await?;
        let mut iterator = output.shard_iterator().map(str::to_string);
        let mut sample = Vec::new();
        for _ in 0..MAX_SAMPLE_CALLS {
            let Some(current) = iterator.take() else {
                break;
            };
            let page = self.get_records(&current, limit - sample.len()).await?;
            for record in page.records() {
                let key = &record.partition_key;
                let size = record.data.as_ref().len() + key.len();
                sample.push((key.clone(), u64::try_from(size).unwrap_or(u64::MAX)));
            }
            let at_tip = page.millis_behind_latest() == Some(0);
            if sample.len() >= limit || at_tip {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_string);
        }
        sample.truncate(limit);
        tracing::debug!(
            stream,
            shard = shard_id,
            records = sample.len(),
            "sampled records"
        );
        Ok(sample)
    }
}

impl AwsKinesis {
    /// One `GetRecords` call through the retry layer.
    async fn get_records(
        &self,
        iterator: &str,
        limit: usize,
    ) -> Result<aws_sdk_kinesis::operation::get_records::GetRecordsOutput, BackendError> {
        let limit = i32::try_from(limit.min(MAX_RECORDS_PER_CALL)).unwrap_or(1);
        self.retrier
            .call(GET_RECORDS, Idempotency::Idempotent, || async {
                self.client
                    .get_records()
                    .shard_iterator(iterator)
                    .limit(limit)
                    .send()
                    .await
                    .map_err(|e| classify(GET_RECORDS, e))
            })
            .await
    }
}

/// Classifies a Kinesis SDK error by its type.
fn classify<E>(api: &'static str, error: SdkError<E>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    aws_sdk_kinesis::Error: From<E>,
{
    classify_sdk(api, error, |e| {
        use aws_sdk_kinesis::Error as K;
        match K::from(e) {
            K::ResourceInUseException(_) => Some(ErrorClass::ResourceInUse),
            K::LimitExceededException(_) => Some(ErrorClass::LimitExceeded),
            K::ProvisionedThroughputExceededException(_) | K::KmsThrottlingException(_) => {
                Some(ErrorClass::Throttled)
            }
            K::ResourceNotFoundException(_) => Some(ErrorClass::NotFound),
            K::InvalidArgumentException(_)
            | K::ValidationException(_)
            | K::ExpiredNextTokenException(_)
            | K::ExpiredIteratorException(_) => Some(ErrorClass::Invalid),
            K::AccessDeniedException(_)
            | K::KmsAccessDeniedException(_)
            | K::KmsOptInRequired(_)
            | K::KmsNotFoundException(_)
            | K::KmsDisabledException(_)
            | K::KmsInvalidStateException(_) => Some(ErrorClass::AccessDenied),
            K::InternalFailureException(_) => Some(ErrorClass::Transient),
            // Unmodelled codes (ThrottlingException, 5xx, ...): classified by code and status.
            _ => None,
        }
    })
}

fn metrics_name(metric: ShardMetric) -> sdk::MetricsName {
    match metric {
        ShardMetric::IncomingBytes => sdk::MetricsName::IncomingBytes,
        ShardMetric::IncomingRecords => sdk::MetricsName::IncomingRecords,
        ShardMetric::WriteProvisionedThroughputExceeded => {
            sdk::MetricsName::WriteProvisionedThroughputExceeded
        }
    }
}

/// One reshard attempt within the fence's attempt time. An attempt cut off there has an unknown
/// outcome: it is not sent again (the call is not idempotent), and the journal entry stays in
/// flight until the shard map settles it.
async fn fenced_attempt<T>(
    api: &'static str,
    fence: &Fence,
    attempt: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(fence.attempt_timeout(), attempt)
        .await
        .unwrap_or_else(|_| {
            Err(BackendError::Transient {
                api,
                message: format!(
                    "no answer within {:?}; the outcome is unknown",
                    fence.attempt_timeout()
                ),
            })
        })
}

/// Maps a `DescribeStreamSummary` result; `Err` names what is missing or malformed.
fn description_from_sdk(s: &sdk::StreamDescriptionSummary) -> Result<StreamDescription, String> {
    if s.stream_name.is_empty() {
        return Err("empty StreamName".into());
    }
    let status = match &s.stream_status {
        sdk::StreamStatus::Active => StreamStatus::Active,
        sdk::StreamStatus::Creating => StreamStatus::Creating,
        sdk::StreamStatus::Deleting => StreamStatus::Deleting,
        sdk::StreamStatus::Updating => StreamStatus::Updating,
        other => return Err(format!("unknown StreamStatus {:?}", other.as_str())),
    };
    let mode = match s.stream_mode_details.as_ref().map(|d| &d.stream_mode) {
        Some(sdk::StreamMode::Provisioned) => StreamMode::Provisioned,
        Some(sdk::StreamMode::OnDemand) => StreamMode::OnDemand,
        Some(other) => return Err(format!("unknown StreamMode {:?}", other.as_str())),
        // Streams created before capacity modes existed report none: they are provisioned.
        None => StreamMode::Provisioned,
    };
    let open_shard_count = u32::try_from(s.open_shard_count)
        .map_err(|_| format!("negative OpenShardCount {}", s.open_shard_count))?;
    let retention_hours = u64::try_from(s.retention_period_hours)
        .map_err(|_| format!("negative RetentionPeriodHours {}", s.retention_period_hours))?;
    let shard_level_metrics = s
        .enhanced_monitoring
        .iter()
        .flat_map(|m| m.shard_level_metrics())
        .map(|m| m.as_str().to_string())
        .collect();
    Ok(StreamDescription {
        name: s.stream_name.clone(),
        status,
        mode,
        open_shard_count,
        shard_level_metrics,
        retention: Duration::from_secs(retention_hours * 3600),
        // arn:aws:kinesis:REGION:ACCOUNT:stream/NAME
        account: s
            .stream_arn
            .split(':')
            .nth(4)
            .filter(|a| !a.is_empty())
            .map(str::to_owned),
        creation_epoch: u64::try_from(s.stream_creation_timestamp.secs()).ok(),
    })
}

/// Maps one `ListShards` shard; `Err` names what is missing or malformed.
fn shard_from_sdk(s: &sdk::Shard) -> Result<Shard, String> {
    if s.shard_id.is_empty() {
        return Err("a shard without ShardId".into());
    }
    let id = &s.shard_id;
    let range = s
        .hash_key_range
        .as_ref()
        .ok_or_else(|| format!("shard {id} has no HashKeyRange"))?;
    let start = parse_hash_key(&range.starting_hash_key)
        .ok_or_else(|| format!("shard {id}: StartingHashKey {:?}", range.starting_hash_key))?;
    let end = parse_hash_key(&range.ending_hash_key)
        .ok_or_else(|| format!("shard {id}: EndingHashKey {:?}", range.ending_hash_key))?;
    let hash_key_range = HashRange::new(start, end)
        .ok_or_else(|| format!("shard {id}: StartingHashKey {start} > EndingHashKey {end}"))?;
    let sequence_range = s
        .sequence_number_range
        .as_ref()
        .ok_or_else(|| format!("shard {id} has no SequenceNumberRange"))?;
    let state = match &sequence_range.ending_sequence_number {
        Some(_) => ShardState::Closed,
        None => ShardState::Open,
    };
    let non_empty = |id: &Option<String>| id.clone().filter(|id| !id.is_empty());
    Ok(Shard {
        shard_id: id.clone(),
        parent_shard_id: non_empty(&s.parent_shard_id),
        adjacent_parent_shard_id: non_empty(&s.adjacent_parent_shard_id),
        hash_key_range,
        state,
        metrics: ShardMetrics::default(),
        key_distribution: None,
    })
}

/// A decimal hash key; digits only (no sign, no whitespace), within `u128`.
fn parse_hash_key(text: &str) -> Option<HashKey> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests;
