//! The shardctl control loop: an auto-scaling shard controller for Amazon Kinesis Data Streams.
//!
//! The planning logic lives in [`shardctl_policies`]; this crate is the shell around it. The
//! [`backend`] traits are what the loop needs from AWS, bundled as one [`backend::Backends`];
//! [`aws`] implements them with the AWS SDK (the simulator, crate `shardctl-sim`, implements
//! them too). [`reconcile`] is one cycle of one stream, with the act phase owned by its
//! executor; [`daemon`] is the loop and one replica's wiring; [`leadership`] keeps the leader
//! lease beside it; [`http`] and [`telemetry`] serve probes and metrics; [`render`] prints
//! decisions for people. See `ARCHITECTURE.md` at the repository root for the whole picture.

pub mod aws;
pub mod backend;
pub mod daemon;
pub mod files;
pub mod http;
pub mod leadership;
pub mod policy_source;
pub mod reconcile;
pub mod render;
pub mod telemetry;
