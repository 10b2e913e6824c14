//! The `shardctl` package's integration tests, in one binary (one link of the AWS SDK instead of
//! one per file), one module per area: `cargo test -p shardctl --test integration aws_kinesis::`
//! runs one of them.
//!
//! The modules named `aws_*`, `cli_aws`, `failover` and `reconcile_aws` need the emulators:
//! `scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"`.

mod support;

mod aws_cloudwatch;
mod aws_dynamodb;
mod aws_faults;
mod aws_kinesis;
mod cli;
mod cli_aws;
mod failover;
mod reconcile_aws;
mod sim_cli;
mod sim_determinism;
mod sim_hot_org_surge;
mod sim_leadership;
