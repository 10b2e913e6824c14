//! Cross-crate end-to-end tests live in `tests/tests/`; their set-up (clients, names, polling,
//! streams, metrics, `shardctl run` replicas) is the `shardctl-test-support` crate (`support/`).
