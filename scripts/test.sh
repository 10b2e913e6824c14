#!/usr/bin/env bash
# Runs every test in the workspace: starts the AWS emulators the integration tests talk to
# (installing them on first use), runs `cargo test`, and stops the emulators again.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p shardctl     # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/emulators.sh start
trap 'scripts/emulators.sh stop' EXIT
eval "$(scripts/emulators.sh env)"

# Release profile (with overflow checks, see Cargo.toml): the same artifacts as the release
# binary, and the simulations and property tests run several times faster.
cargo test --workspace --locked --release --no-fail-fast "$@"
