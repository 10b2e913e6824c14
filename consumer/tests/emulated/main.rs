//! Integration tests against kinesis-local (Kinesis) and moto (DynamoDB) on 127.0.0.1.
//!
//! Endpoints come only from the standard `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL_DYNAMODB`
//! variables: `scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod chaos;
mod common;
mod fanout;
mod faults;
mod kpl;
mod lagging;
mod large;
mod lifecycle;
mod metrics;
mod proxy;
mod race;
mod reshard;
mod stalls;
