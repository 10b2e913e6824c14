//! The test peers `scripts/emulators.sh install` sets up beside the emulators: a Python with
//! kcl-rs (a KCL 3.x fleet) and aws-kinesis-agg (KPL-format aggregates), and their scripts in
//! the repository's `tests/` folder.

use std::path::PathBuf;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}

/// The interpreter that has the test peers (`$SHARDCTL_PYTHON`); panics with the command that
/// installs them when it is unset.
pub fn peer_python() -> PathBuf {
    PathBuf::from(std::env::var("SHARDCTL_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SHARDCTL_PYTHON is not set: start the emulators and test peers with \
             `scripts/emulators.sh start && eval \"$(scripts/emulators.sh env)\"` (scripts/test.sh does)"
        )
    }))
}
