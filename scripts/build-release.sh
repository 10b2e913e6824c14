#!/usr/bin/env bash
# Builds the release binary exactly as the container image does (the Dockerfile runs this
# script), and installs it at the given path (default: dist/shardctl).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-dist/shardctl}"
cargo build --release --locked -p shardctl --bin shardctl
install -D -m 0755 target/release/shardctl "$out"
"$out" --version
