//! `shardctl schema`: prints the JSON Schema of the policy or snapshot format.

use crate::cli::SchemaKind;
use std::process::ExitCode;

/// Prints the schema of `kind`.
pub fn run(kind: SchemaKind) -> ExitCode {
    let schema = match kind {
        SchemaKind::Policy => shardctl_policies::schema::policy_schema(),
        SchemaKind::Snapshot => shardctl_policies::schema::snapshot_schema(),
    };
    print!("{}", shardctl_policies::schema::render(&schema));
    ExitCode::SUCCESS
}
