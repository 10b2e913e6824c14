#!/usr/bin/env bash
# Soak of the HA fault test (tests/tests/ha.rs, leaders_under_random_kills_pauses_and_terms_never_reshard_at_once):
# three `shardctl run` replicas under continuous hot-shard pressure, ROUNDS random SIGTERM /
# SIGKILL / SIGSTOP-past-the-lease faults, then the shard lineage, the journal and every replica's
# log are checked against each other. CI runs a short slice of the same test (12 rounds, ~3 min);
# a round takes about 10 s, so the default 500 rounds take about 1.5 h.
#
#   scripts/soak-ha.sh                        # 500 rounds, random seed
#   ROUNDS=50 SEED=1234 scripts/soak-ha.sh    # replay a seed printed by a failed run
#   SHARDCTL_BIN=/path/to/shardctl scripts/soak-ha.sh   # another build of the controller
#
# Starts the emulators like scripts/test.sh (installing them on first use) and stops them again
# only if this script started them. Prints the test's report and where the replica logs are; the
# whole output also goes to target/soak-ha-<date>.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS="${ROUNDS:-500}"
SEED="${SEED:-}"

emulator_running() {
    local pidfile=".emulators/$1.pid"
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}
already=0
if emulator_running "kinesis-${SHARDCTL_KINESIS_PORT:-4567}" && emulator_running "moto-${SHARDCTL_MOTO_PORT:-5000}"; then
    already=1
fi
scripts/emulators.sh start
if [[ "$already" == 0 ]]; then
    trap 'scripts/emulators.sh stop' EXIT
fi
eval "$(scripts/emulators.sh env)"

if [[ -z "${SHARDCTL_BIN:-}" ]]; then
    cargo build --release --locked -p shardctl --bin shardctl
fi
mkdir -p target
log="target/soak-ha-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "soak-ha: $ROUNDS rounds${SEED:+, seed $SEED}; output in $log" >&2

export SHARDCTL_HA_ROUNDS="$ROUNDS"
if [[ -n "$SEED" ]]; then
    export SHARDCTL_HA_SEED="$SEED"
fi
set +e
cargo test --release --locked -p shardctl-e2e --test ha -- --exact \
    leaders_under_random_kills_pauses_and_terms_never_reshard_at_once --nocapture 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e
if [[ "$status" == 0 ]]; then
    echo "soak-ha: PASSED ($ROUNDS rounds); report in $log" >&2
else
    echo "soak-ha: FAILED ($ROUNDS rounds); the anomalies, the seed and the replica logs are in $log" >&2
fi
exit "$status"
