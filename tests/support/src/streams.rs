//! Kinesis streams and their shards, through the SDK.

use crate::poll::eventually;
use aws_sdk_kinesis::error::{DisplayErrorContext, SdkError};
use aws_sdk_kinesis::operation::list_shards::ListShardsError;
use aws_sdk_kinesis::types::{Shard, StreamStatus};
use std::time::Duration;

/// How long a stream may take to become `ACTIVE`.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(60);

/// Creates a provisioned stream of `shards` shards and waits until it is `ACTIVE`.
pub async fn create_stream(kinesis: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateStream {name}: {}", DisplayErrorContext(&e)));
    wait_active(kinesis, name).await;
}

/// Whether the stream is `ACTIVE` (false when it cannot be described).
pub async fn is_active(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> bool {
    let Ok(out) = kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
    else {
        return false;
    };
    out.stream_description_summary()
        .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
}

/// Waits until the stream is `ACTIVE` (after its creation or a reshard).
pub async fn wait_active(kinesis: &aws_sdk_kinesis::Client, stream: &str) {
    eventually(
        &format!("stream {stream} ACTIVE"),
        ACTIVE_DEADLINE,
        || async { is_active(kinesis, stream).await.then_some(()) },
    )
    .await;
}

/// Every shard of the stream, open and closed, in the order `ListShards` pages them.
pub async fn list_shards(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<Shard>, SdkError<ListShardsError>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        // The first page names the stream; later pages only the token (the API refuses both).
        let request = match &token {
            Some(t) => kinesis.list_shards().next_token(t),
            None => kinesis.list_shards().stream_name(stream),
        };
        let page = request.send().await?;
        shards.extend(page.shards().iter().cloned());
        match page.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(shards),
        }
    }
}

/// Whether the shard is open (it has no ending sequence number).
pub fn is_open(shard: &Shard) -> bool {
    shard
        .sequence_number_range()
        .and_then(|r| r.ending_sequence_number())
        .is_none()
}
