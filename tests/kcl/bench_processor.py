#!/usr/bin/env python3
"""A no-op kcl-rs worker for consumer/benches/kcl_side_by_side.rs.

Like tests/kcl/fleet.py it runs one kcl-rs (KCL 3.x port) worker, but its
record processor does (almost) nothing, so that the CPU time the benchmark
reads from /proc/<pid>/stat is the KCL's own cost plus the unavoidable Python
callback overhead. fleet.py cannot be reused for that: it JSON-encodes and
writes one line per record, which is per-record Python work a no-op consumer
would not do.

Per batch the processor counts the records, checkpoints at the batch end (as
fleet.py and the shardctl-consumer side of the benchmark do) and writes one
JSON line. Only when the batch's first record is a latency probe (payload
``lat:<unix micros of the put>``, possibly inside shardctl's ``SCE1`` event
envelope) does it look at every record, to report put-to-process latencies.

Output: one JSON object per line on stdout (one os.write per line):

* ``{"ev": "ready"}`` once the scheduler's run loop is going;
* ``{"ev": "initialized", "shard": ..., "t": ...}``;
* ``{"ev": "batch", "shard": ..., "n": <records>, "t": <when the batch reached
  the processor>, "lat_us": [...] (latency probes only)}``, for non-empty
  batches;
* ``{"ev": "shard_ended", "shard": ..., "t": <after the SHARD_END checkpoint>,
  "ok": true|false}``;
* ``{"ev": "lease_lost" | "shutdown_requested" | "checkpoint_failed", ...}``.

"t" is wall-clock Unix seconds (time.time()).

Stops when stdin reaches EOF (the benchmark closes it) or on SIGTERM/SIGINT:
calls Scheduler.shutdown(), waits at most --shutdown-timeout-secs, exits.
Endpoints, region and credentials come from the environment
(``eval "$(scripts/emulators.sh env)"``); run it with ``$SHARDCTL_PYTHON``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

try:
    from kcl_rs import CheckpointError, RecordProcessorBase, Scheduler
except ImportError as exc:  # pragma: no cover - depends on the interpreter
    sys.exit(f"bench_processor.py: cannot import kcl_rs ({exc}); run with $SHARDCTL_PYTHON")

ENVELOPE = b"SCE1"
ENVELOPE_LEN = 20  # magic + 16-byte event id
PROBE = b"lat:"

_out_lock = threading.Lock()


def emit(obj: dict) -> None:
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    with _out_lock:
        view = memoryview(data)
        while view:
            n = os.write(1, view)
            view = view[n:]


def payload(data: bytes) -> bytes:
    if data[:4] == ENVELOPE and len(data) >= ENVELOPE_LEN:
        return data[ENVELOPE_LEN:]
    return data


class NoOp(RecordProcessorBase):
    def __init__(self) -> None:
        self.shard: str | None = None

    def initialize(self, initialize_input) -> None:
        self.shard = initialize_input.shard_id
        emit({"ev": "initialized", "shard": self.shard, "t": time.time()})

    def process_records(self, process_records_input) -> None:
        t = time.time()
        records = process_records_input.records
        n = len(records)
        if not n:
            return
        line = {"ev": "batch", "shard": self.shard, "n": n, "t": t}
        if payload(records[0].data).startswith(PROBE):
            now_us = int(t * 1_000_000)
            lat = []
            for r in records:
                p = payload(r.data)
                if p.startswith(PROBE):
                    lat.append(now_us - int(p[len(PROBE):]))
            line["lat_us"] = lat
        emit(line)
        try:
            process_records_input.checkpointer.checkpoint()
        except CheckpointError as exc:
            emit({"ev": "checkpoint_failed", "shard": self.shard, "where": "process_records",
                  "error": getattr(exc, "value", None) or str(exc), "t": time.time()})

    def lease_lost(self, lease_lost_input) -> None:
        emit({"ev": "lease_lost", "shard": self.shard, "t": time.time()})

    def shard_ended(self, shard_ended_input) -> None:
        ok = True
        try:
            shard_ended_input.checkpointer.checkpoint()
        except CheckpointError as exc:
            ok = False
            emit({"ev": "checkpoint_failed", "shard": self.shard, "where": "shard_ended",
                  "error": getattr(exc, "value", None) or str(exc), "t": time.time()})
        emit({"ev": "shard_ended", "shard": self.shard, "t": time.time(), "ok": ok})

    def shutdown_requested(self, shutdown_requested_input) -> None:
        emit({"ev": "shutdown_requested", "shard": self.shard, "t": time.time()})
        try:
            shutdown_requested_input.checkpointer.checkpoint()
        except CheckpointError:
            pass


def main() -> int:
    p = argparse.ArgumentParser(description="No-op kcl-rs worker for the side-by-side benchmark.")
    p.add_argument("--stream", required=True)
    p.add_argument("--app", required=True, help="KCL application name = lease table name")
    p.add_argument("--worker-id", required=True)
    p.add_argument("--retrieval", choices=["POLLING", "FANOUT"], default="POLLING")
    p.add_argument("--shard-sync-interval-millis", type=int)
    p.add_argument("--idle-time-between-reads-millis", type=int, help="POLLING only")
    p.add_argument("--shutdown-timeout-secs", type=int, default=15)
    args = p.parse_args()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        p.error("no region: set AWS_REGION")

    kwargs = dict(
        stream_name=args.stream,
        application_name=args.app,
        record_processor_factory=NoOp,
        worker_identifier=args.worker_id,
        region=region,
        initial_position="TRIM_HORIZON",
        retrieval_mode=args.retrieval,
    )
    if args.shard_sync_interval_millis:
        kwargs["shard_sync_interval_millis"] = args.shard_sync_interval_millis
    if args.retrieval == "POLLING" and args.idle_time_between_reads_millis:
        kwargs["idle_time_between_reads_millis"] = args.idle_time_between_reads_millis
    scheduler = Scheduler(**kwargs)

    stop = threading.Event()
    outcome: dict = {}

    def on_signal(_signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def drive():
        try:
            scheduler.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc
        finally:
            stop.set()

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            stop.set()

    runner = threading.Thread(target=drive, name="kcl-scheduler", daemon=True)
    runner.start()
    runner.join(0.5)
    if not runner.is_alive():
        print(f"bench_processor.py: scheduler failed to start: {outcome.get('error')}",
              file=sys.stderr, flush=True)
        return 1
    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    emit({"ev": "ready"})
    while not stop.wait(timeout=1.0):
        pass
    if not runner.is_alive():
        print(f"bench_processor.py: scheduler stopped on its own: {outcome.get('error')}",
              file=sys.stderr, flush=True)
        return 1
    stopper = threading.Thread(target=scheduler.shutdown, daemon=True)
    stopper.start()
    stopper.join(args.shutdown_timeout_secs)
    emit({"ev": "stopped"})
    os._exit(0 if not stopper.is_alive() else 3)


if __name__ == "__main__":
    sys.exit(main())
