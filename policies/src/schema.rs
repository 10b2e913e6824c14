//! JSON Schemas of the policy and snapshot formats, generated from the Rust types.
//!
//! The committed copies in `policies/schema/` are checked against these by the test suite, so
//! editors and CI validation always see the schema the code enforces.

use crate::policy::PolicyFile;
use crate::snapshot::Snapshot;

/// The JSON Schema of the policy file.
pub fn policy_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PolicyFile)).unwrap_or_default()
}

/// The JSON Schema of the snapshot file.
pub fn snapshot_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Snapshot)).unwrap_or_default()
}

/// Renders a schema the way the committed files are written.
pub fn render(schema: &serde_json::Value) -> String {
    serde_json::to_string_pretty(schema).unwrap_or_default() + "\n"
}
