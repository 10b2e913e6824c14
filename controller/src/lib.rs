//! shardctl: an auto-scaling shard controller for Amazon Kinesis Data Streams.
//!
//! The planning logic lives in [`shardctl_policies`]; this crate is the shell around it: the
//! command line, file loading and the renderings people read.

pub mod aws;
pub mod backend;
pub mod cli;
pub mod daemon;
pub mod demo;
pub mod files;
pub mod http;
pub mod leadership;
pub mod live;
pub mod policy_source;
pub mod reconcile;
pub mod render;
pub mod sim;
pub mod telemetry;
