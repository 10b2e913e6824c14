//! `shardctl schema`: prints the JSON Schema of the policy or snapshot format.

use std::process::ExitCode;

/// Which JSON Schema to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    /// The policy file.
    Policy,
    /// The snapshot file.
    Snapshot,
}

/// Prints the schema of `kind`.
pub fn run(kind: SchemaKind) -> ExitCode {
    let schema = match kind {
        SchemaKind::Policy => shardctl_policies::schema::policy_schema(),
        SchemaKind::Snapshot => shardctl_policies::schema::snapshot_schema(),
    };
    print!("{}", shardctl_policies::schema::render(&schema));
    ExitCode::SUCCESS
}
