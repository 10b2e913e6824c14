//! Faults no emulator produces, injected at the wire: a local HTTP server answers the adapters
//! with scripted responses (throttling, `LimitExceeded`, 5xx, cancelled transactions, malformed
//! bodies, extra pages). Proves classification, the retry layer and paging end to end through
//! the real SDK clients. Needs no emulator.
//!
//! Longer than 500 lines by choice: the scripted wire server and one test per fault class it
//! answers with; each test reads as the response it scripts and the behaviour it expects.

#![allow(clippy::unwrap_used)]

use tokio::time::Instant;

/// Adapter tests act without a leadership task: a fence open for an hour.
const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

use crate::support::calls;
use aws_sdk_kinesis::config::{Credentials, SharedCredentialsProvider};
use chrono::{TimeZone, Utc};
use shardctl_controller::aws::{AwsBackend, AwsOptions, RetryPolicy};
use shardctl_controller::backend::{
    BackendError, Fence, Kinesis, LeaderToken, LeaseTables, Metrics, StateStore,
};
use shardctl_controller::telemetry::Telemetry;
use shardctl_policies::{OperationKind, OperationOutcome, OperationRecord};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A scripted response: status and body (the content type follows the body).
struct Reply(u16, &'static str);

/// One request the server received.
#[derive(Debug, Clone)]
struct Request {
    target: String,
    body: String,
}

/// An HTTP/1.1 server on 127.0.0.1 that answers requests with `replies` in order.
struct FakeAws {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeAws {
    fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (replies, log) = (replies.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &replies, &log));
            }
        });
        FakeAws { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, replies: &Mutex<VecDeque<Reply>>, log: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut target = String::new();
        let mut line = String::new();
        // Request line, then headers up to the empty line.
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "x-amz-target" => target = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let body = String::from_utf8_lossy(&body).into_owned();
        if target.is_empty() {
            // awsQuery names the action in the form body.
            target = body.split('&').next().unwrap_or_default().to_string();
        }
        log.lock().unwrap().push(Request { target, body });
        let Reply(status, body) = replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply(599, "{}"));
        let content_type = if body.starts_with('<') {
            "text/xml"
        } else {
            "application/x-amz-json-1.1"
        };
        let response = format!(
            "HTTP/1.1 {status} Scripted\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// The adapters pointed at `fake`, with fast retries.
fn backend(fake: &FakeAws, max_attempts: u32) -> (AwsBackend, Telemetry) {
    let config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::for_tests()))
        .endpoint_url(&fake.url)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let telemetry = Telemetry::new();
    let options = AwsOptions {
        retry: RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            deadline: Duration::from_secs(10),
        },
        ..AwsOptions::default()
    };
    (
        AwsBackend::from_config(&config, options, telemetry.clone()),
        telemetry,
    )
}

const LIMIT_EXCEEDED: Reply = Reply(
    400,
    r#"{"__type":"LimitExceededException","message":"Rate exceeded for stream orders"}"#,
);
const THROTTLING: Reply = Reply(
    400,
    r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
);
const RESOURCE_IN_USE: Reply = Reply(
    400,
    r#"{"__type":"ResourceInUseException","message":"Stream orders is UPDATING"}"#,
);
const INTERNAL_FAILURE: Reply = Reply(
    500,
    r#"{"__type":"InternalFailure","message":"We encountered an internal error"}"#,
);
const SERVICE_UNAVAILABLE: Reply = Reply(503, r#"{"message":"Service Unavailable"}"#);

#[tokio::test]
async fn throttling_and_limit_exceeded_are_retried_until_the_split_is_accepted() {
    let fake = FakeAws::start(vec![
        LIMIT_EXCEEDED,
        THROTTLING,
        RESOURCE_IN_USE,
        Reply(200, "{}"),
    ]);
    let (aws, telemetry) = backend(&fake, 6);
    aws.kinesis
        .split_shard(
            "orders",
            "shardId-000000000000",
            1 << 127,
            &Fence::fixed(&LeaderToken::new("t", 1, Utc::now(), HOUR, Instant::now())),
        )
        .await
        .unwrap();
    for outcome in ["limit_exceeded", "throttled", "resource_in_use", "ok"] {
        assert_eq!(calls(&telemetry, "SplitShard", outcome), 1, "{outcome}");
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    assert!(
        requests
            .iter()
            .all(|r| r.target == "Kinesis_20131202.SplitShard")
    );
    assert!(
        requests[0]
            .body
            .contains(r#""NewStartingHashKey":"170141183460469231731687303715884105728""#),
        "{}",
        requests[0].body
    );
}

#[tokio::test]
async fn retries_stop_at_the_attempt_bound_with_the_last_error() {
    let fake = FakeAws::start(vec![
        RESOURCE_IN_USE,
        RESOURCE_IN_USE,
        RESOURCE_IN_USE,
        Reply(200, "{}"),
    ]);
    let (aws, telemetry) = backend(&fake, 3);
    let error = aws
        .kinesis
        .merge_shards(
            "orders",
            "shardId-000000000000",
            "shardId-000000000001",
            &Fence::fixed(&LeaderToken::new("t", 1, Utc::now(), HOUR, Instant::now())),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BackendError::ResourceInUse {
                api: "MergeShards",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("UPDATING"), "{error}");
    assert_eq!(calls(&telemetry, "MergeShards", "resource_in_use"), 3);
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn a_reshard_with_an_unknown_outcome_is_not_repeated_but_reads_are() {
    let fake = FakeAws::start(vec![INTERNAL_FAILURE]);
    let (aws, telemetry) = backend(&fake, 6);
    let error = aws
        .kinesis
        .split_shard(
            "orders",
            "shardId-000000000000",
            42,
            &Fence::fixed(&LeaderToken::new("t", 1, Utc::now(), HOUR, Instant::now())),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, BackendError::Transient { .. }), "{error:?}");
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(calls(&telemetry, "SplitShard", "transient"), 1);

    let summary = r#"{"StreamDescriptionSummary":{"StreamName":"orders",
        "StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/orders",
        "StreamStatus":"ACTIVE","StreamModeDetails":{"StreamMode":"PROVISIONED"},
        "RetentionPeriodHours":24,"StreamCreationTimestamp":1.7E9,
        "EnhancedMonitoring":[{"ShardLevelMetrics":["IncomingBytes"]}],"OpenShardCount":2}}"#;
    let fake = FakeAws::start(vec![
        INTERNAL_FAILURE,
        SERVICE_UNAVAILABLE,
        Reply(200, summary),
    ]);
    let (aws, telemetry) = backend(&fake, 6);
    let described = aws.kinesis.describe_stream("orders").await.unwrap();
    assert_eq!(described.open_shard_count, 2);
    assert_eq!(calls(&telemetry, "DescribeStreamSummary", "transient"), 2);
    assert_eq!(calls(&telemetry, "DescribeStreamSummary", "ok"), 1);
}

#[tokio::test]
async fn list_shards_sends_the_next_token_without_the_stream_name() {
    let first = r#"{"Shards":[{"ShardId":"shardId-000000000000",
        "HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"170141183460469231731687303715884105727"},
        "SequenceNumberRange":{"StartingSequenceNumber":"1","EndingSequenceNumber":"9"}}],
        "NextToken":"page-2"}"#;
    let second = r#"{"Shards":[{"ShardId":"shardId-000000000001",
        "HashKeyRange":{"StartingHashKey":"170141183460469231731687303715884105728",
        "EndingHashKey":"340282366920938463463374607431768211455"},
        "SequenceNumberRange":{"StartingSequenceNumber":"2"},
        "ParentShardId":"shardId-000000000000"}]}"#;
    let fake = FakeAws::start(vec![Reply(200, first), THROTTLING, Reply(200, second)]);
    let (aws, telemetry) = backend(&fake, 6);
    let shards = aws.kinesis.list_shards("orders").await.unwrap();
    assert_eq!(shards.len(), 2);
    assert!(!shards[0].is_open() && shards[1].is_open());
    assert_eq!(
        shards[1].parent_shard_id.as_deref(),
        Some("shardId-000000000000")
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[0].body.contains(r#""StreamName":"orders""#));
    assert!(!requests[0].body.contains("NextToken"));
    for retried_page in &requests[1..] {
        assert!(retried_page.body.contains(r#""NextToken":"page-2""#));
        assert!(
            !retried_page.body.contains("StreamName"),
            "{}",
            retried_page.body
        );
    }
    assert_eq!(calls(&telemetry, "ListShards", "ok"), 2);
    assert_eq!(calls(&telemetry, "ListShards", "throttled"), 1);
}

#[tokio::test]
async fn malformed_responses_are_errors_not_panics() {
    let no_range = r#"{"Shards":[{"ShardId":"shardId-000000000000",
        "SequenceNumberRange":{"StartingSequenceNumber":"1"}}]}"#;
    let bad_key = r#"{"Shards":[{"ShardId":"shardId-000000000000",
        "HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"0x7f"},
        "SequenceNumberRange":{"StartingSequenceNumber":"1"}}]}"#;
    let no_mode = r#"{"StreamDescriptionSummary":{"StreamName":"orders",
        "StreamARN":"arn","StreamStatus":"ACTIVE","RetentionPeriodHours":24,
        "StreamCreationTimestamp":1.7E9,"EnhancedMonitoring":[],"OpenShardCount":1}}"#;
    let fake = FakeAws::start(vec![
        Reply(200, no_range),
        Reply(200, bad_key),
        Reply(200, no_mode),
        Reply(200, "{}"),
        Reply(200, "not json"),
    ]);
    let (aws, _telemetry) = backend(&fake, 1);
    // The SDK fills a missing HashKeyRange with empty keys; either way it is an error.
    for expected in ["StartingHashKey", "EndingHashKey"] {
        let error = aws.kinesis.list_shards("orders").await.unwrap_err();
        assert!(matches!(error, BackendError::Other { .. }), "{error:?}");
        assert!(error.to_string().contains(expected), "{error}");
    }
    // Streams from before capacity modes report none: they are provisioned.
    let described = aws.kinesis.describe_stream("orders").await.unwrap();
    assert_eq!(
        described.mode,
        shardctl_controller::backend::StreamMode::Provisioned
    );
    // For `{}` the SDK fills the required summary with defaults: an empty name is caught.
    let error = aws.kinesis.describe_stream("orders").await.unwrap_err();
    assert!(error.to_string().contains("StreamName"), "{error}");
    // An unreadable success body: the call may have taken effect, so it is transient.
    let error = aws.kinesis.describe_stream("orders").await.unwrap_err();
    assert!(matches!(error, BackendError::Transient { .. }), "{error:?}");
    assert!(error.to_string().contains("HTTP 200"), "{error}");
}

#[tokio::test]
async fn dynamodb_throttling_and_cancelled_transactions_are_classified_and_retried() {
    let throttled = Reply(
        400,
        r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}"#,
    );
    let cancelled_by_throttling = Reply(
        400,
        r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
           "message":"Transaction cancelled, please refer cancellation reasons for specific reasons [None, ThrottlingError]",
           "CancellationReasons":[{"Code":"None"},{"Code":"ThrottlingError","Message":"Throughput exceeds the current capacity"}]}"#,
    );
    let cancelled_by_condition = Reply(
        400,
        r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
           "message":"Transaction cancelled, please refer cancellation reasons for specific reasons [ConditionalCheckFailed, None]",
           "CancellationReasons":[{"Code":"ConditionalCheckFailed"},{"Code":"None"}]}"#,
    );
    let leases = r#"{"Items":[{"leaseKey":{"S":"shardId-000000000000"},"leaseCounter":{"N":"4"},"checkpoint":{"S":"SHARD_END"}}],
        "Count":1,"ScannedCount":1}"#;
    let fake = FakeAws::start(vec![
        throttled,
        Reply(200, leases),
        cancelled_by_throttling,
        Reply(200, "{}"),
        cancelled_by_condition,
    ]);
    let (aws, telemetry) = backend(&fake, 6);
    let rows = aws
        .lease_tables
        .rows(
            "billing-leases",
            &shardctl_lease::StreamFilter::named("orders"),
        )
        .await
        .unwrap();
    assert_eq!(rows.leases.len(), 1, "{rows:?}");
    assert_eq!(calls(&telemetry, "Scan", "throttled"), 1);

    let leader = LeaderToken {
        owner: "replica-a".into(),
        fence: 4,
        expires_at: Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 10).unwrap(),
        ttl: std::time::Duration::from_secs(10),
        local_deadline: Instant::now() + std::time::Duration::from_secs(10),
        acquired_at: Instant::now(),
    };
    let record = OperationRecord {
        kind: OperationKind::Split,
        shard_ids: vec!["shardId-000000000000".into()],
        started_at: Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap(),
        outcome: OperationOutcome::InFlight,
    };
    aws.state.begin("orders", &record, &leader).await.unwrap();
    assert_eq!(calls(&telemetry, "TransactWriteItems", "throttled"), 1);
    assert_eq!(calls(&telemetry, "TransactWriteItems", "ok"), 1);
    let transactions: Vec<Request> = fake
        .requests()
        .into_iter()
        .filter(|r| r.target.ends_with("TransactWriteItems"))
        .collect();
    // The retried transaction carries the same idempotency token.
    let token = |r: &Request| {
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        body["ClientRequestToken"].as_str().unwrap().to_string()
    };
    assert_eq!(token(&transactions[0]), token(&transactions[1]));

    let error = aws
        .state
        .begin("orders", &record, &leader)
        .await
        .unwrap_err();
    assert!(
        matches!(error, BackendError::ConditionFailed { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("replica-a no longer leads with fence 4"),
        "{error}"
    );
}

#[tokio::test]
async fn cloudwatch_throttling_is_retried_and_result_pages_are_followed() {
    let throttled = Reply(
        400,
        r#"<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>"#,
    );
    let page = |token: &str, minute: u32, value: f64| {
        let next = if token.is_empty() {
            String::new()
        } else {
            format!("<NextToken>{token}</NextToken>")
        };
        let xml = format!(
            r#"<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><GetMetricDataResult><MetricDataResults><member><Id>q0</Id><Label>IncomingBytes</Label><StatusCode>PartialData</StatusCode><Timestamps><member>2026-11-27T08:0{minute}:00Z</member></Timestamps><Values><member>{value}</member></Values></member></MetricDataResults>{next}<Messages/></GetMetricDataResult><ResponseMetadata><RequestId>2</RequestId></ResponseMetadata></GetMetricDataResponse>"#
        );
        Reply(200, xml.leak())
    };
    let fake = FakeAws::start(vec![throttled, page("page-2", 0, 10.0), page("", 2, 30.0)]);
    let (aws, telemetry) = backend(&fake, 6);
    let start = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
    let metrics = aws
        .metrics
        .shard_metrics("orders", &["shardId-000000000000".to_string()], start, 3)
        .await
        .unwrap();
    assert_eq!(
        metrics["shardId-000000000000"].incoming_bytes,
        [Some(10.0), None, Some(30.0)]
    );
    assert_eq!(calls(&telemetry, "GetMetricData", "throttled"), 1);
    assert_eq!(calls(&telemetry, "GetMetricData", "ok"), 2);
    let requests = fake.requests();
    assert!(requests.iter().all(|r| r.target == "Action=GetMetricData"));
    assert!(
        requests[2].body.contains("NextToken=page-2"),
        "{}",
        requests[2].body
    );
}

#[tokio::test]
async fn sampling_retries_throttled_reads_and_stops_at_the_tip() {
    let throttled = Reply(
        400,
        r#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for shard"}"#,
    );
    let fake = FakeAws::start(vec![
        Reply(200, r#"{"ShardIterator":"it-1"}"#),
        throttled,
        Reply(
            200,
            r#"{"Records":[{"SequenceNumber":"1","Data":"eHh4","PartitionKey":"org-1",
                "ApproximateArrivalTimestamp":1.7E9}],"NextShardIterator":"it-2","MillisBehindLatest":5000}"#,
        ),
        Reply(
            200,
            r#"{"Records":[],"NextShardIterator":"it-3","MillisBehindLatest":0}"#,
        ),
    ]);
    let (aws, telemetry) = backend(&fake, 6);
    let since = Utc.with_ymd_and_hms(2026, 11, 27, 8, 55, 0).unwrap();
    let sample = aws
        .kinesis
        .sample_records("orders", "shardId-000000000000", since, 100)
        .await
        .unwrap();
    // "eHh4" is "xxx": 3 bytes of data plus 5 of key.
    assert_eq!(sample, [("org-1".to_string(), 8)]);
    assert_eq!(calls(&telemetry, "GetRecords", "throttled"), 1);
    assert_eq!(calls(&telemetry, "GetRecords", "ok"), 2);
    let requests = fake.requests();
    assert!(
        requests[0]
            .body
            .contains(r#""ShardIteratorType":"AT_TIMESTAMP""#)
    );
    assert!(
        requests[3].body.contains(r#""ShardIterator":"it-2""#),
        "{}",
        requests[3].body
    );
    assert!(
        requests[3].body.contains(r#""Limit":99"#),
        "{}",
        requests[3].body
    );
}

#[tokio::test]
async fn missing_configuration_fails_at_once_with_what_is_missing() {
    let fake = FakeAws::start(vec![]);
    let no_credentials = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&fake.url)
        .build();
    let no_region = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::for_tests()))
        .build();
    for (config, missing) in [(no_credentials, "identity"), (no_region, "Missing Region")] {
        let telemetry = Telemetry::new();
        let aws = AwsBackend::from_config(&config, AwsOptions::default(), telemetry.clone());
        let error = aws.kinesis.describe_stream("orders").await.unwrap_err();
        assert!(matches!(error, BackendError::Other { .. }), "{error:?}");
        assert!(!error.is_retriable());
        assert!(error.to_string().contains(missing), "{error}");
        assert_eq!(calls(&telemetry, "DescribeStreamSummary", "other"), 1);
    }
    assert!(fake.requests().is_empty());
}
