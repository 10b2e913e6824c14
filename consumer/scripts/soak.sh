#!/usr/bin/env bash
# Long runs of the consumer's lease and reshard models and of the live chaos test, beyond the
# bounded slice CI runs. Needs the emulators (scripts/emulators.sh start).
#
#   consumer/scripts/soak.sh                       # 50,000 model cases each, 20 chaos rounds
#   SHARDCTL_MODEL_CASES=200000 SHARDCTL_CHAOS_ROUNDS=60 consumer/scripts/soak.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
eval "$(scripts/emulators.sh env)"
export SHARDCTL_MODEL_CASES="${SHARDCTL_MODEL_CASES:-50000}"
export SHARDCTL_CHAOS_ROUNDS="${SHARDCTL_CHAOS_ROUNDS:-20}"

cargo test -p shardctl-consumer --release --lib -- --nocapture \
    racing_workers_never_both_believe a_lagging_group_keeps_order
cargo test -p shardctl-consumer --release --test emulated -- --nocapture chaos
