#!/usr/bin/env bash
# Handover benchmark: runs the failover test (two real `shardctl run` replicas, lease 3 s)
# RUNS times against the emulators and reports min / median / max of
#   - failover: the standby leads after the leader was SIGKILLed,
#   - handover: the standby leads after the leader exited on SIGTERM.
# Figures, not pass/fail: durations are measured here, never asserted in tests.
#
#   scripts/bench-handover.sh          # 10 runs
#   RUNS=30 scripts/bench-handover.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS="${RUNS:-10}"

scripts/emulators.sh start
trap 'scripts/emulators.sh stop' EXIT
eval "$(scripts/emulators.sh env)"
cargo build --release --locked -p shardctl --bin shardctl --tests >/dev/null

out="$(mktemp)"
for i in $(seq "$RUNS"); do
    cargo test --release --locked -p shardctl --test integration -- --nocapture failover:: 2>/dev/null |
        grep -E '^(failover|handover)' >>"$out"
    echo "run $i/$RUNS done" >&2
done
summary() {
    sort -n | awk -v what="$1" '{ v[NR] = $1 } END {
        if (NR == 0) { print what ": no measurement"; exit }
        printf "%-9s n=%d  min %.2fs  median %.2fs  max %.2fs\n", what, NR, v[1], v[int((NR + 1) / 2)], v[NR] }'
}
grep '^failover' "$out" | sed -E 's/.* led ([0-9.]+)s.*/\1/' | summary "SIGKILL"
grep '^handover' "$out" | sed -E 's/.*: ([0-9.]+)s.*/\1/' | summary "SIGTERM"
rm -f "$out"
