//! Enhanced fan-out retrieval, KCL 2.x/3.x's default: the stream consumer is registered (or
//! reused) once per application, and each shard is read through `SubscribeToShard`, which pushes
//! records over one connection instead of the shard's five `GetRecords` calls per second.
//!
//! A subscription lasts at most five minutes; [`Subscription`] renews it before that from the
//! last `ContinuationSequenceNumber` (which advances even when no records arrive), and again
//! whenever the service ends it early or it fails. `ResourceInUseException` (a subscription for
//! this consumer and shard still open, or renewed within five seconds) and
//! `LimitExceededException` come back as [`ReadError::Throttled`], so the caller backs off. At a
//! shard's end the event has no continuation and carries the children.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{DisplayErrorContext, SdkError};
use aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardError;
use aws_sdk_kinesis::primitives::event_stream::EventReceiver;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{
    ConsumerStatus, StartingPosition, SubscribeToShardEvent, SubscribeToShardEventStream,
};
use tracing::{debug, info};

use crate::reader::{Fetched, ReadError, StartPosition};

/// How a worker reads its shards, as KCL's retrieval modes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Retrieval {
    /// `GetRecords` polling (KCL's `POLLING`): shares each shard's 2 MiB/s and 5 reads/s with
    /// every other polling application. The default: it needs no registration.
    #[default]
    Polling,
    /// Enhanced fan-out (KCL's `FANOUT`): `SubscribeToShard` through the stream consumer of this
    /// name (registered at start if missing; KCL names it after the application), with its own
    /// 2 MiB/s per shard. Billed per consumer-shard-hour and per GB.
    FanOut {
        /// Stream consumer name (`RegisterStreamConsumer`), at most 128 characters.
        consumer_name: String,
    },
}

/// Errors registering or finding the stream consumer.
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    /// A Kinesis call failed (with the SDK's context).
    #[error("Kinesis {operation} for stream consumer {consumer} failed: {message}")]
    Kinesis {
        /// API operation.
        operation: &'static str,
        /// Consumer name.
        consumer: String,
        /// What went wrong.
        message: String,
    },
    /// The consumer did not become `ACTIVE` in time.
    #[error(
        "stream consumer {consumer} not ACTIVE after {waited:?} (status {status}); check the \
         stream's consumer limit (20) and DescribeStreamConsumer"
    )]
    NotActive {
        /// Consumer name.
        consumer: String,
        /// How long we waited.
        waited: Duration,
        /// Its last status.
        status: String,
    },
}

/// How long registration waits for the consumer to become `ACTIVE`.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(120);

/// Registers the stream consumer `name` on `stream`, or reuses it if it exists, and waits until
/// it is `ACTIVE`. Returns its ARN.
pub(crate) async fn ensure_consumer(
    client: &Client,
    stream: &str,
    name: &str,
) -> Result<String, FanOutError> {
    let err = |operation: &'static str, message: String| FanOutError::Kinesis {
        operation,
        consumer: name.to_owned(),
        message,
    };
    let summary = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| err("DescribeStreamSummary", DisplayErrorContext(&e).to_string()))?;
    let stream_arn = summary
        .stream_description_summary
        .map(|s| s.stream_arn)
        .ok_or_else(|| err("DescribeStreamSummary", "no stream description".into()))?;
    match client
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(_) => info!(consumer = name, "stream consumer registered"),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            debug!(consumer = name, "stream consumer exists");
        }
        Err(e) => {
            return Err(err(
                "RegisterStreamConsumer",
                DisplayErrorContext(&e).to_string(),
            ));
        }
    }
    let started = tokio::time::Instant::now();
    loop {
        let described = client
            .describe_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(|e| {
                err(
                    "DescribeStreamConsumer",
                    DisplayErrorContext(&e).to_string(),
                )
            })?;
        let description = described
            .consumer_description
            .ok_or_else(|| err("DescribeStreamConsumer", "no consumer description".into()))?;
        if description.consumer_status == ConsumerStatus::Active {
            return Ok(description.consumer_arn);
        }
        if started.elapsed() > ACTIVE_DEADLINE {
            return Err(FanOutError::NotActive {
                consumer: name.to_owned(),
                waited: started.elapsed(),
                status: description.consumer_status.as_str().to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One shard's `SubscribeToShard` stream, renewed as needed.
pub(crate) struct Subscription {
    client: Client,
    consumer_arn: String,
    shard: String,
    /// Where the next subscription starts: the start position until the first event, then
    /// after the last continuation sequence number.
    position: StartPosition,
    events: Option<EventReceiver<SubscribeToShardEventStream, SubscribeToShardEventStreamError>>,
    opened: Instant,
    lifetime: Duration,
    idle_limit: Duration,
}

/// The service ends a subscription after five minutes; renewing a little earlier keeps the
/// renewal (and its back-off, if the service still sees the old one) under our control.
pub(crate) const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(290);
/// Kinesis sends an event at least every few seconds, even with no records; this long without
/// one means the connection is dead.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

impl Subscription {
    /// A subscription that starts at `position` when first polled.
    pub(crate) fn new(
        client: Client,
        consumer_arn: String,
        shard: String,
        position: StartPosition,
    ) -> Self {
        Self {
            client,
            consumer_arn,
            shard,
            position,
            events: None,
            opened: Instant::now(),
            lifetime: SUBSCRIPTION_LIFETIME,
            idle_limit: IDLE_LIMIT,
        }
    }

    /// The next event, subscribing first when no subscription is open or the open one is due
    /// for renewal. On an error the subscription is dropped; the next call subscribes again
    /// from the last continuation, so nothing is skipped or repeated.
    pub(crate) async fn next(&mut self) -> Result<Fetched, ReadError> {
        loop {
            if self.events.is_some() && self.opened.elapsed() >= self.lifetime {
                debug!(shard = %self.shard, "renewing subscription before its five minutes end");
                self.events = None;
            }
            let events = match &mut self.events {
                Some(events) => events,
                None => {
                    let receiver = self.subscribe().await?;
                    self.opened = Instant::now();
                    self.events.insert(receiver)
                }
            };
            let received = match tokio::time::timeout(self.idle_limit, events.recv()).await {
                Ok(received) => received,
                Err(_) => {
                    self.events = None;
                    return Err(self.kinesis_error(format!(
                        "no event for {:?}; subscribing again",
                        self.idle_limit
                    )));
                }
            };
            match received {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => {
                    return Ok(self.received(event));
                }
                // An event type this SDK does not know: skip it.
                Ok(Some(_)) => {}
                // The service ended the subscription (its five minutes are up): renew.
                Ok(None) => {
                    debug!(shard = %self.shard, "subscription ended by the service");
                    self.events = None;
                    return Err(ReadError::ExpiredIterator {
                        shard: self.shard.clone(),
                    });
                }
                Err(e) => {
                    self.events = None;
                    return Err(self.stream_error(&e));
                }
            }
        }
    }

    /// Takes in one event: the next subscription starts after its continuation.
    fn received(&mut self, event: SubscribeToShardEvent) -> Fetched {
        let continuation = event.continuation_sequence_number;
        if !continuation.is_empty() {
            self.position = StartPosition::After(continuation.clone());
        }
        Fetched::from_parts(
            event.records,
            event.child_shards,
            Some(continuation),
            Some(event.millis_behind_latest),
        )
    }

    /// Drops the open subscription (a read was abandoned part-way); the next call subscribes
    /// again from the last continuation.
    pub(crate) fn interrupt(&mut self) {
        self.events = None;
    }

    async fn subscribe(
        &self,
    ) -> Result<
        EventReceiver<SubscribeToShardEventStream, SubscribeToShardEventStreamError>,
        ReadError,
    > {
        let (kind, sequence, timestamp) = self.position.to_kinesis();
        let position = StartingPosition::builder()
            .r#type(kind)
            .set_sequence_number(sequence)
            .set_timestamp(timestamp)
            .build()
            .map_err(|e| self.kinesis_error(e.to_string()))?;
        self.client
            .subscribe_to_shard()
            .consumer_arn(&self.consumer_arn)
            .shard_id(&self.shard)
            .starting_position(position)
            .send()
            .await
            .map(|out| out.event_stream)
            .map_err(|e| self.subscribe_error(&e))
    }

    /// `ResourceInUse` (a subscription for this consumer and shard still open, or renewed
    /// within five seconds) and `LimitExceeded` are back-off signals; the rest are errors.
    fn subscribe_error<R: std::fmt::Debug>(
        &self,
        e: &SdkError<SubscribeToShardError, R>,
    ) -> ReadError {
        let busy = e
            .as_service_error()
            .is_some_and(|s| s.is_resource_in_use_exception() || s.is_limit_exceeded_exception());
        self.classify(busy, &DisplayErrorContext(e))
    }

    /// The emulator (and the service, for a renewal within five seconds) reports a subscription
    /// still open as the stream's first message; KMS throttling is a back-off signal too.
    fn stream_error<R: std::fmt::Debug>(
        &self,
        e: &SdkError<SubscribeToShardEventStreamError, R>,
    ) -> ReadError {
        let busy = e
            .as_service_error()
            .is_some_and(|s| s.is_resource_in_use_exception() || s.is_kms_throttling_exception());
        self.classify(busy, &DisplayErrorContext(e))
    }

    fn classify(&self, busy: bool, e: &dyn std::fmt::Display) -> ReadError {
        if busy {
            ReadError::Throttled {
                shard: self.shard.clone(),
            }
        } else {
            self.kinesis_error(e.to_string())
        }
    }

    fn kinesis_error(&self, message: String) -> ReadError {
        ReadError::Kinesis {
            operation: "SubscribeToShard",
            shard: self.shard.clone(),
            message,
        }
    }
}
