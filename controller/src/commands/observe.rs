//! `shardctl observe`: writes the snapshot JSON that `plan --snapshot` reads.

use anyhow::{Context as _, Result, anyhow};
use shardctl_controller::aws;
use shardctl_controller::policy_source::PolicySource;
use shardctl_controller::telemetry::Telemetry;
use shardctl_policies::StreamPolicy;
use std::path::PathBuf;
use std::process::ExitCode;

/// `shardctl observe`: writes the snapshot JSON that `plan --snapshot` reads.
pub async fn run(
    stream: String,
    policy_path: Option<PathBuf>,
    state_table: String,
    output: Option<PathBuf>,
) -> Result<ExitCode> {
    let stream_policy = match policy_path {
        Some(p) => {
            let (_, policy) = PolicySource::load(p)?;
            policy
                .stream(&stream)
                .cloned()
                .ok_or_else(|| anyhow!("the policy has no stream `{stream}`"))?
        }
        None => StreamPolicy::with_defaults(stream.clone()),
    };
    let telemetry = Telemetry::new();
    let ctx = aws::context(&state_table, &telemetry).await;
    let snap = ctx.snapshot(&stream_policy).await?;
    let json = serde_json::to_string_pretty(&snap)? + "\n";
    match output {
        Some(path) => std::fs::write(&path, json)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{json}"),
    }
    Ok(ExitCode::SUCCESS)
}
