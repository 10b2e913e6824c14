#!/usr/bin/env bash
# Local AWS emulators for the integration tests.
#
#   scripts/emulators.sh install   install kinesis-local (npm), moto, kcl-rs and aws-kinesis-agg (PyPI) into .emulators/
#   scripts/emulators.sh start     install, start both in the background, wait until they answer
#   scripts/emulators.sh stop      stop both (idempotent)
#   scripts/emulators.sh env       print the export lines the tests and the SDK read
#
# Typical use:   scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"
#
# Ports: SHARDCTL_KINESIS_PORT (default 4567, TLS port is +1), SHARDCTL_MOTO_PORT (default 5000).
# Reshard UPDATING windows: SPLIT_SHARD_DURATION / MERGE_SHARDS_DURATION (kinesis-local default 500ms).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EMU="$REPO/.emulators"
KINESIS_LOCAL_VERSION="0.6.2"
MOTO_VERSION="5.2.5"
# kcl-rs: a Rust port of the Java KCL 3.x with Python bindings (same lease table schema). The
# tests run a real KCL consumer fleet with it (tests/kcl/fleet.py, under $SHARDCTL_PYTHON).
KCL_RS_VERSION="0.1.4"
# aws-kinesis-agg: AWS's KPL-format aggregator for producers without the KPL. The consumer's tests
# de-aggregate records it wrote (tests/kpl/aggregate.py).
AWS_KINESIS_AGG_VERSION="1.2.3"
# aws-kinesis-agg imports six without declaring it; pinned beside it.
SIX_VERSION="1.17.0"
KINESIS_PORT="${SHARDCTL_KINESIS_PORT:-4567}"
KINESIS_TLS_PORT="$((KINESIS_PORT + 1))"
MOTO_PORT="${SHARDCTL_MOTO_PORT:-5000}"
START_DEADLINE_SECS=60

# Pid and log files carry the port, so instances on other ports (SHARDCTL_*_PORT) coexist.
KINESIS_NAME="kinesis-$KINESIS_PORT"
MOTO_NAME="moto-$MOTO_PORT"

KINESIS_PKG="$EMU/node/node_modules/kinesis-local"
MOTO_BIN="$EMU/venv/bin/moto_server"

log() { echo "emulators: $*" >&2; }

# moto_server answers each request on its own thread and its DynamoDB backend takes no lock, so
# two concurrent conditional writes on one item can both pass their condition (measured: 2 rounds
# in 40 with 12 parallel UpdateItem calls). DynamoDB guarantees that conditional writes are atomic
# and the lease tests depend on it, so moto_server is started through this wrapper, which runs one
# request at a time (connections stay concurrent). Arguments are moto_server's.
MOTO_SERIALIZED='
import sys, threading
from moto import server
from moto.moto_server import werkzeug_app

_lock = threading.Lock()
_dispatch = werkzeug_app.DomainDispatcherApplication.__call__

def _one_at_a_time(self, environ, start_response):
    with _lock:
        return _dispatch(self, environ, start_response)

werkzeug_app.DomainDispatcherApplication.__call__ = _one_at_a_time
server.main(sys.argv[1:])
'


install_kinesis() {
    local installed=""
    if [[ -f "$KINESIS_PKG/package.json" ]]; then
        installed="$(node -p "require('$KINESIS_PKG/package.json').version" 2>/dev/null || true)"
    fi
    if [[ "$installed" == "$KINESIS_LOCAL_VERSION" && -f "$KINESIS_PKG/main.js" && -f "$KINESIS_PKG/server.json" ]]; then
        return
    fi
    log "installing kinesis-local@$KINESIS_LOCAL_VERSION"
    mkdir -p "$EMU/node"
    npm install --silent --no-audit --no-fund --prefix "$EMU/node" "kinesis-local@$KINESIS_LOCAL_VERSION" >&2
    [[ -f "$KINESIS_PKG/main.js" && -f "$KINESIS_PKG/server.json" ]] || {
        log "kinesis-local installed but $KINESIS_PKG/main.js or server.json is missing"
        exit 1
    }
}

install_moto() {
    if [[ -x "$MOTO_BIN" ]] &&
        "$EMU/venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null; then
        return
    fi
    log "installing moto[server]==$MOTO_VERSION"
    if [[ ! -x "$EMU/venv/bin/python" ]]; then
        python3 -m venv "$EMU/venv"
    fi
    "$EMU/venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
    [[ -x "$MOTO_BIN" ]] || {
        log "moto installed but $MOTO_BIN is missing"
        exit 1
    }
}

# Goes into moto's venv (install_moto creates it), so one interpreter serves both.
install_kcl_rs() {
    if "$EMU/venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kcl-rs') != '$KCL_RS_VERSION')" 2>/dev/null; then
        return
    fi
    log "installing kcl-rs==$KCL_RS_VERSION"
    "$EMU/venv/bin/python" -m pip install --quiet --disable-pip-version-check "kcl-rs==$KCL_RS_VERSION" >&2
    "$EMU/venv/bin/python" -c "import kcl_rs" || {
        log "kcl-rs installed but 'import kcl_rs' fails in $EMU/venv"
        exit 1
    }
}

# Into the same venv, beside kcl-rs.
install_kinesis_agg() {
    if "$EMU/venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('aws-kinesis-agg') != '$AWS_KINESIS_AGG_VERSION')" 2>/dev/null; then
        return
    fi
    log "installing aws-kinesis-agg==$AWS_KINESIS_AGG_VERSION"
    "$EMU/venv/bin/python" -m pip install --quiet --disable-pip-version-check "aws-kinesis-agg==$AWS_KINESIS_AGG_VERSION" "six==$SIX_VERSION" >&2
    "$EMU/venv/bin/python" -c "from aws_kinesis_agg.aggregator import RecordAggregator" || {
        log "aws-kinesis-agg installed but its aggregator does not import in $EMU/venv"
        exit 1
    }
}

cmd_install() {
    mkdir -p "$EMU"
    install_kinesis
    install_moto
    install_kcl_rs
    install_kinesis_agg
}

# is_running NAME -> 0 if the pid file names a live process
is_running() {
    local pidfile="$EMU/$1.pid"
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

port_answers() {
    # bash's /dev/tcp: no curl/nc needed.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for() {
    local name="$1" port="$2" deadline=$((SECONDS + START_DEADLINE_SECS))
    until port_answers "$port"; do
        if ! is_running "$name"; then
            log "$name exited before answering on port $port; last lines of $EMU/$name.log:"
            tail -n 30 "$EMU/$name.log" | cut -c1-300 >&2 || true
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "$name did not answer on 127.0.0.1:$port within ${START_DEADLINE_SECS}s; last lines of $EMU/$name.log:"
            tail -n 30 "$EMU/$name.log" | cut -c1-300 >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    log "$name ready on 127.0.0.1:$port"
}

# Seconds kinesis-local's clock is behind the system's. It keeps the time it read at start and
# counts on from there, so a system clock stepped since (NTP, a resumed VM) leaves its timestamps
# off: AT_TIMESTAMP reads then fail ("Timestamp cannot be in the future") and the HA tests see
# reshards "before" they began.
kinesis_clock_lag() {
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
        "$EMU/venv/bin/python" - "$KINESIS_PORT" <<'PY'
import sys, time, boto3
k = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}")
name = f"clock-probe-{time.time_ns()}"
before = time.time()
k.create_stream(StreamName=name, ShardCount=1)
created = k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamCreationTimestamp"]
k.delete_stream(StreamName=name)
print(int(before - created.timestamp()))
PY
}

start_kinesis() {
    if is_running "$KINESIS_NAME"; then
        local lag
        lag=$(kinesis_clock_lag 2>/dev/null || echo 0)
        if ((lag > 2 || lag < -2)); then
            log "kinesis-local's clock is ${lag}s off the system clock (stepped since it started); restarting it"
            kill "$(cat "$EMU/$KINESIS_NAME.pid")" 2>/dev/null || true
            while is_running "$KINESIS_NAME"; do sleep 0.2; done
        else
            log "kinesis-local already running on port $KINESIS_PORT (pid $(cat "$EMU/$KINESIS_NAME.pid"))"
            return
        fi
    fi
    if port_answers "$KINESIS_PORT"; then
        log "port $KINESIS_PORT is already in use by another process; set SHARDCTL_KINESIS_PORT"
        exit 1
    fi
    (
        cd "$EMU"
        KINESIS_MOCK_CERT_PATH="$KINESIS_PKG/server.json" \
            KINESIS_MOCK_PLAIN_PORT="$KINESIS_PORT" \
            KINESIS_MOCK_TLS_PORT="$KINESIS_TLS_PORT" \
            SHARD_LIMIT="${SHARD_LIMIT:-1000}" \
            SPLIT_SHARD_DURATION="${SPLIT_SHARD_DURATION:-500ms}" \
            MERGE_SHARDS_DURATION="${MERGE_SHARDS_DURATION:-500ms}" \
            nohup node "$KINESIS_PKG/main.js" >"$EMU/$KINESIS_NAME.log" 2>&1 </dev/null &
        echo $! >"$EMU/$KINESIS_NAME.pid"
    )
}

start_moto() {
    if is_running "$MOTO_NAME"; then
        log "moto already running on port $MOTO_PORT (pid $(cat "$EMU/$MOTO_NAME.pid"))"
        return
    fi
    if port_answers "$MOTO_PORT"; then
        log "port $MOTO_PORT is already in use by another process; set SHARDCTL_MOTO_PORT"
        exit 1
    fi
    (
        cd "$EMU"
        nohup "$EMU/venv/bin/python" -c "$MOTO_SERIALIZED" -H 127.0.0.1 -p "$MOTO_PORT" \
            >"$EMU/$MOTO_NAME.log" 2>&1 </dev/null &
        echo $! >"$EMU/$MOTO_NAME.pid"
    )
}

cmd_start() {
    cmd_install
    start_kinesis
    start_moto
    wait_for "$KINESIS_NAME" "$KINESIS_PORT"
    wait_for "$MOTO_NAME" "$MOTO_PORT"
}

stop_one() {
    local name="$1" pidfile="$EMU/$1.pid" pid
    [[ -f "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        log "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
}

cmd_stop() {
    stop_one "$KINESIS_NAME"
    stop_one "$MOTO_NAME"
}

cmd_env() {
    cat <<EOF
export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:$KINESIS_PORT
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$MOTO_PORT
export AWS_ENDPOINT_URL_CLOUDWATCH=http://127.0.0.1:$MOTO_PORT
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export SHARDCTL_PYTHON=$EMU/venv/bin/python
EOF
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
*)
    echo "usage: $0 {install|start|stop|env}" >&2
    exit 2
    ;;
esac
