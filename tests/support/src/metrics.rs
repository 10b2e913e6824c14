//! Shard-level metrics. No emulator publishes Kinesis' `AWS/Kinesis` metrics, so tests write
//! them with `PutMetricData` (real CloudWatch refuses writes to `AWS/` namespaces).

use aws_sdk_cloudwatch::error::{DisplayErrorContext, SdkError};
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataError;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use chrono::Utc;

use crate::Clients;

/// A shard's write limits: 1 MiB and 1,000 records per second, per minute.
const BYTES_PER_MINUTE: f64 = 1024.0 * 1024.0 * 60.0;
const RECORDS_PER_MINUTE: f64 = 1000.0 * 60.0;

/// One minute of one shard's writes, as Kinesis reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardMinute {
    /// The shard's id (dimension `ShardId`).
    pub shard: String,
    /// The minute, in whole minutes since the Unix epoch ([`unix_minute`]).
    pub minute: i64,
    /// `IncomingRecords` over the minute.
    pub records: f64,
    /// `IncomingBytes` over the minute.
    pub bytes: f64,
}

/// The minute `t` falls in, in whole minutes since the Unix epoch.
pub fn unix_minute(t: chrono::DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

/// Writes `IncomingRecords`, `IncomingBytes` and a zero `WriteProvisionedThroughputExceeded`
/// for each shard-minute into `AWS/Kinesis` (dimensions `StreamName`, `ShardId`), each datum
/// stamped with the start of its minute, 500 datums a call.
pub async fn put_shard_metrics(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    stream: &str,
    minutes: &[ShardMinute],
) -> Result<(), SdkError<PutMetricDataError>> {
    let mut data = Vec::with_capacity(minutes.len() * 3);
    for m in minutes {
        for (name, value, unit) in [
            ("IncomingRecords", m.records, StandardUnit::Count),
            ("IncomingBytes", m.bytes, StandardUnit::Bytes),
            (
                "WriteProvisionedThroughputExceeded",
                0.0,
                StandardUnit::Count,
            ),
        ] {
            data.push(
                MetricDatum::builder()
                    .metric_name(name)
                    .dimensions(
                        Dimension::builder()
                            .name("StreamName")
                            .value(stream)
                            .build(),
                    )
                    .dimensions(Dimension::builder().name("ShardId").value(&m.shard).build())
                    .timestamp(DateTime::from_secs(m.minute * 60))
                    .value(value)
                    .unit(unit)
                    .build(),
            );
        }
    }
    for chunk in data.chunks(500) {
        cloudwatch
            .put_metric_data()
            .namespace("AWS/Kinesis")
            .set_metric_data(Some(chunk.to_vec()))
            .send()
            .await?;
    }
    Ok(())
}

/// Writes one shard's metrics at `bytes_pct` / `records_pct` % of its write limits (no
/// throttling) for each of the `minutes` minutes before the current one, except the `missing`
/// ones (counted back from the most recent: 1 is the minute that just ended). Panics on error.
pub async fn put_utilization(
    c: &Clients,
    stream: &str,
    shard: &str,
    bytes_pct: f64,
    records_pct: f64,
    minutes: i64,
    missing: &[i64],
) {
    let now = unix_minute(Utc::now());
    let data: Vec<ShardMinute> = (1..=minutes)
        .filter(|ago| !missing.contains(ago))
        .map(|ago| ShardMinute {
            shard: shard.to_string(),
            minute: now - ago,
            records: records_pct / 100.0 * RECORDS_PER_MINUTE,
            bytes: bytes_pct / 100.0 * BYTES_PER_MINUTE,
        })
        .collect();
    put_shard_metrics(&c.cloudwatch, stream, &data)
        .await
        .unwrap_or_else(|e| panic!("PutMetricData: {}", DisplayErrorContext(&e)));
}
