#![allow(clippy::unwrap_used)]

use super::*;

fn sdk_shard(id: &str, start: &str, end: &str, closed: bool) -> sdk::builders::ShardBuilder {
    let mut seq = sdk::SequenceNumberRange::builder().starting_sequence_number("1");
    if closed {
        seq = seq.ending_sequence_number("9223372036854775807");
    }
    sdk::Shard::builder()
        .shard_id(id)
        .hash_key_range(
            sdk::HashKeyRange::builder()
                .starting_hash_key(start)
                .ending_hash_key(end)
                .build()
                .unwrap(),
        )
        .sequence_number_range(seq.build().unwrap())
}

#[test]
fn maps_hash_keys_state_and_lineage() {
    let max = u128::MAX.to_string();
    let merged = sdk_shard("shardId-000000000004", "0", &max, false)
        .parent_shard_id("shardId-000000000002")
        .adjacent_parent_shard_id("shardId-000000000003")
        .build()
        .unwrap();
    let shard = shard_from_sdk(&merged).unwrap();
    assert_eq!(shard.hash_key_range, HashRange::FULL);
    assert_eq!(shard.state, ShardState::Open);
    assert_eq!(
        shard.parent_shard_id.as_deref(),
        Some("shardId-000000000002")
    );
    assert_eq!(
        shard.adjacent_parent_shard_id.as_deref(),
        Some("shardId-000000000003")
    );

    let closed = sdk_shard("shardId-000000000000", "5", "17", true)
        .build()
        .unwrap();
    let shard = shard_from_sdk(&closed).unwrap();
    assert_eq!(shard.state, ShardState::Closed);
    assert_eq!(shard.hash_key_range, HashRange::new(5, 17).unwrap());
    assert_eq!(shard.parent_shard_id, None);
}

#[test]
fn missing_or_malformed_fields_are_errors_not_panics() {
    let no_range = sdk::Shard::builder()
        .shard_id("shardId-000000000000")
        .sequence_number_range(
            sdk::SequenceNumberRange::builder()
                .starting_sequence_number("1")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(
        shard_from_sdk(&no_range)
            .unwrap_err()
            .contains("HashKeyRange")
    );

    let too_big = format!("{}0", u128::MAX);
    for (start, end) in [
        ("-1", "5"),
        ("1", &too_big),
        ("x", "5"),
        ("", "5"),
        ("9", "5"),
    ] {
        let shard = sdk_shard("shardId-000000000000", start, end, false)
            .build()
            .unwrap();
        assert!(shard_from_sdk(&shard).is_err(), "{start}..{end}");
    }

    let no_seq = sdk::Shard::builder()
        .shard_id("shardId-000000000000")
        .hash_key_range(
            sdk::HashKeyRange::builder()
                .starting_hash_key("0")
                .ending_hash_key("1")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(
        shard_from_sdk(&no_seq)
            .unwrap_err()
            .contains("SequenceNumberRange")
    );
}

fn http(status: u16) -> aws_sdk_kinesis::config::http::HttpResponse {
    aws_sdk_kinesis::config::http::HttpResponse::new(
        status.try_into().unwrap(),
        aws_smithy_types::body::SdkBody::empty(),
    )
}

fn generic(code: &str) -> aws_sdk_kinesis::operation::split_shard::SplitShardError {
    aws_sdk_kinesis::operation::split_shard::SplitShardError::generic(
        aws_smithy_types::error::ErrorMetadata::builder()
            .code(code)
            .message("from the service")
            .build(),
    )
}

#[test]
fn sdk_errors_are_classified_by_type_then_code_then_status() {
    use aws_sdk_kinesis::operation::split_shard::SplitShardError;
    use aws_sdk_kinesis::types::error as e;
    let service = |error: SplitShardError, status: u16| {
        classify(SPLIT_SHARD, SdkError::service_error(error, http(status)))
    };
    let in_use = SplitShardError::ResourceInUseException(
        e::ResourceInUseException::builder()
            .message("UPDATING")
            .build(),
    );
    let limit = SplitShardError::LimitExceededException(
        e::LimitExceededException::builder().message("rate").build(),
    );
    let missing = SplitShardError::ResourceNotFoundException(
        e::ResourceNotFoundException::builder()
            .message("no stream")
            .build(),
    );
    let invalid = SplitShardError::InvalidArgumentException(
        e::InvalidArgumentException::builder()
            .message("bad key")
            .build(),
    );
    assert_eq!(service(in_use, 400).label(), "resource_in_use");
    assert_eq!(service(limit, 400).label(), "limit_exceeded");
    assert_eq!(service(missing, 400).label(), "not_found");
    assert_eq!(service(invalid, 400).label(), "invalid");
    assert_eq!(
        service(generic("ThrottlingException"), 400).label(),
        "throttled"
    );
    assert_eq!(
        service(generic("AccessDeniedException"), 400).label(),
        "access_denied"
    );
    assert_eq!(service(generic("Whatever"), 503).label(), "transient");
    assert_eq!(service(generic("Whatever"), 429).label(), "throttled");
    assert_eq!(service(generic("Whatever"), 400).label(), "other");

    let error = service(generic("ThrottlingException"), 400);
    assert_eq!(error.api(), "SplitShard");
    assert!(
        error
            .to_string()
            .contains("ThrottlingException: from the service")
    );

    let timeout = SdkError::<SplitShardError>::timeout_error("attempt timed out");
    assert_eq!(classify(SPLIT_SHARD, timeout).label(), "transient");
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    let dispatch = SdkError::<SplitShardError>::dispatch_failure(
        aws_sdk_kinesis::error::ConnectorError::io(io.into()),
    );
    let error = classify(SPLIT_SHARD, dispatch);
    assert_eq!(error.label(), "transient");
    assert!(error.to_string().contains("refused"), "{error}");
    let construction = SdkError::<SplitShardError>::construction_failure("no region");
    assert_eq!(classify(SPLIT_SHARD, construction).label(), "invalid");
}

#[test]
fn maps_the_stream_summary() {
    let summary = sdk::StreamDescriptionSummary::builder()
        .stream_name("orders")
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/orders")
        .stream_status(sdk::StreamStatus::Updating)
        .stream_mode_details(
            sdk::StreamModeDetails::builder()
                .stream_mode(sdk::StreamMode::Provisioned)
                .build()
                .unwrap(),
        )
        .retention_period_hours(24)
        .stream_creation_timestamp(aws_smithy_types::DateTime::from_secs(0))
        .enhanced_monitoring(
            sdk::EnhancedMetrics::builder()
                .shard_level_metrics(sdk::MetricsName::IncomingBytes)
                .build(),
        )
        .open_shard_count(3)
        .build()
        .unwrap();
    let d = description_from_sdk(&summary).unwrap();
    assert_eq!(d.status, StreamStatus::Updating);
    assert_eq!(d.mode, StreamMode::Provisioned);
    assert_eq!(d.open_shard_count, 3);
    assert_eq!(d.retention, Duration::from_secs(24 * 3600));
    assert_eq!(d.shard_level_metrics, ["IncomingBytes"]);
}
