#!/usr/bin/env bash
# Runs the no-panic property tests for much longer than `cargo test` does: random and mutated
# policy files through parsing and validation, random snapshots and observations (extreme
# metrics, timestamps at both ends of the calendar, odd shard ids and hash keys, unicode)
# through snapshot parsing and the planner. Needs no emulators.
#
#   scripts/fuzz.sh                            # 200,000 cases per property (~20 min on 2 cores)
#   PROPTEST_CASES=1000000 scripts/fuzz.sh     # longer
#   FUZZ_STATS=1 scripts/fuzz.sh --nocapture   # also print which cases validated and planned
#
# A failure prints the minimal failing input; a regression test named after the bug keeps it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PROPTEST_CASES="${PROPTEST_CASES:-200000}"
cargo test --release --locked -p shardctl-policies --test policy_errors --test no_panic \
  -- never_panic "$@"
