//! Reading policy and snapshot files with errors that name the file and the place in it.

use anyhow::{Context, Result, anyhow};
use shardctl_policies::{PolicyError, PolicyFile, Snapshot, load_policy};
use std::path::Path;

/// Reads and validates a policy file. The error lists every problem with its line and column.
pub fn read_policy(path: &Path) -> Result<PolicyFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    load_policy(&text, &path.display().to_string()).map_err(|e: PolicyError| anyhow!("{e}"))
}

/// Reads a snapshot file.
pub fn read_snapshot(path: &Path) -> Result<Snapshot> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read snapshot file {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{}:{}:{}: not a valid snapshot: {}",
            path.display(),
            e.line(),
            e.column(),
            strip_position(&e.to_string())
        )
    })
}

fn strip_position(message: &str) -> &str {
    message
        .rsplit_once(" at line ")
        .map_or(message, |(message, _)| message)
}
