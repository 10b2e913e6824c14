//! `shardctl simulate` as a standalone program:
//! `cargo run --release -p shardctl --example simulate -- --policy P --scenario hot-org-surge`.

use clap::Parser;
use std::process::ExitCode;

/// Runs a policy and the baselines on simulated traffic.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    simulate: shardctl::sim::SimulateArgs,
}

fn main() -> ExitCode {
    match shardctl::sim::run_simulate(Args::parse().simulate) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
