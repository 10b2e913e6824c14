#!/usr/bin/env python3
"""One worker of a real KCL v3 consumer fleet, for shardctl's tests.

It runs kcl-rs (PyPI ``kcl-rs``, a Rust port of the Java KCL 3.x with the same
DynamoDB lease schema) as one KCL worker: start several with the same --app
(= lease table name) and different --worker-id values and they share the
stream's shards through the lease table, exactly as a Java KCL fleet would.

Run it with the interpreter that ``scripts/emulators.sh install`` sets up
(``$SHARDCTL_PYTHON``, printed by ``scripts/emulators.sh env``). Endpoints,
region and credentials come from the environment that ``emulators.sh env``
prints (AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION,
AWS_ACCESS_KEY_ID, ...), which kcl-rs reads through the AWS SDK.

Output (--out FILE, appended, one JSON object per line):

* one line per processed record::

    {"worker": "w1", "shard": "shardId-000000000001", "seq": "4963...",
     "subseq": 0, "pk": "org-3", "data": "<payload decoded as UTF-8>",
     "t": 1733040000.123}

  ("t" is when the batch reached the processor; one batch shares one "t".)

* one line per lifecycle event, each with "event", "worker", "shard", "t":
  ``initialized`` (with "checkpoint" and "subseq": the lease's checkpoint,
  "TRIM_HORIZON"/"LATEST" or a sequence number), ``shard_ended``,
  ``lease_lost``, ``shutdown_requested``, and ``checkpoint_failed`` (with
  "error": the Java-style CheckpointError name, and "where").

A batch's lines are written with one unbuffered append before that batch is
checkpointed, so a reader sees every record that a checkpoint covers
(at-least-once: after a lease moves, the new owner may replay records after
the last checkpoint; they show up again with the same "seq"). Several workers
may append to the same file, but one file per worker is cleaner.

Stdout: ``READY`` once the scheduler has been built and its run loop is
going. Leases are taken later (kcl-rs, like the Java KCL, first waits a random
0-30 s while the lease table is empty, then the initial shard sync takes one
--shard-sync-interval-millis, 60 s by default): wait for ``initialized``
lines for that.

Stops on SIGTERM or SIGINT: calls kcl-rs's ``Scheduler.shutdown()``, waits
for it (at most --shutdown-timeout-secs, usually about 5 s) and exits 0.
kcl-rs 0.1.4's shutdown behaves like the Java KCL's ``Scheduler.shutdown()``,
not ``startGracefulShutdown()``: each processor gets ``lease_lost`` (not
``shutdown_requested``), the leases are not released and other workers take
them over once they expire (measured 10-40 s). Since every batch is
checkpointed, at most the batch in flight when the shutdown starts is replayed
by the next owner (its checkpoint fails with ShutdownException, written as a
``checkpoint_failed`` line). A shutdown
requested while the scheduler is still initialising only completes once the
initialisation ends. A second signal exits at once (status 3).

Exit status: 0 after a requested stop; 1 when the scheduler cannot be built,
crashes, or stops on its own (e.g. after 20 failed initialisation attempts,
about 6 minutes, on a stream that does not exist); 2 on bad arguments; 3 when
the shutdown did not finish in time or a second signal came. kcl-rs's own log
(WARN and above by default; RUST_LOG=kcl=info or kcl=debug for more) goes to
stderr; against moto it warns "Could not publish datums to CloudWatch" every
10 s, which is harmless.

Knobs: kcl-rs 0.1.4's Python ``Scheduler`` exposes only
``shard_sync_interval_millis`` (both retrieval modes) and, for POLLING,
``max_records`` and ``idle_time_between_reads_millis``; they are passed on
only when given here, so kcl-rs's defaults apply otherwise. The failover time
(lease duration) and the lease cleanup intervals are not exposed. A finished
(SHARD_END) lease is deleted by the completed-lease cleanup pass of the worker
that ended it; those passes run 5, 10, 15, ... minutes after that worker's
scheduler started, and a pass only deletes the lease once all its children
have checkpointed past TRIM_HORIZON (a child that gets no records blocks it)
and its own parent leases are gone (else it waits for the next pass).

kinesis-local 0.6.2 quirks: a scheduler that initialises on a stream that
already has closed shards fails with "Hash range of shards returned ... was
incomplete" (start the fleet before the first reshard); with --retrieval
FANOUT records are delivered, but a shard closed by a reshard never reaches
``shard_ended``, so its children are never processed: use POLLING (the
default here) for resharding tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback

try:
    from kcl_rs import CheckpointError, RecordProcessorBase, Scheduler
except ImportError as exc:  # pragma: no cover - depends on the interpreter
    sys.exit(
        f"fleet.py: cannot import kcl_rs ({exc}); run with the interpreter from "
        "'scripts/emulators.sh install' ($SHARDCTL_PYTHON from 'scripts/emulators.sh env')"
    )

# Retries of a checkpoint that failed with a transient error, and the first back-off.
CHECKPOINT_ATTEMPTS = 5
CHECKPOINT_BACKOFF_SECS = 0.2
# Errors after which retrying cannot help: the lease is gone or the processor is shutting down.
CHECKPOINT_FATAL = {"ShutdownException", "InvalidStateException"}
# How long after launching the scheduler a failure to build it is waited for before READY.
STARTUP_CHECK_SECS = 0.5


def log(msg: str) -> None:
    print(f"fleet.py: {msg}", file=sys.stderr, flush=True)


class JsonlSink:
    """Appends batches of JSON lines to one file, one os.write per batch.

    The file is opened O_APPEND, so batches from the processors of this worker
    (one thread each) and from other workers sharing the file never interleave
    within a batch on Linux; each batch is on disk for readers as soon as the
    call returns (no user-space buffering).
    """

    def __init__(self, path: str) -> None:
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write(self, objs: list[dict]) -> None:
        if not objs:
            return
        data = "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objs).encode()
        with self._lock:
            if self._fd is None:
                raise RuntimeError("output file already closed (worker is stopping)")
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def checkpoint(checkpointer, sink: JsonlSink, worker: str, shard: str | None, where: str) -> bool:
    """Checkpoints at the last delivered record; retries transient errors.

    Returns True on success. A failure is written to the sink as a
    ``checkpoint_failed`` event (and logged) rather than raised: an exception
    out of a callback would only be logged by the KCL anyway.
    """
    delay = CHECKPOINT_BACKOFF_SECS
    for attempt in range(1, CHECKPOINT_ATTEMPTS + 1):
        try:
            checkpointer.checkpoint()
            return True
        except CheckpointError as exc:
            err = getattr(exc, "value", None) or str(exc)
            if err in CHECKPOINT_FATAL or attempt == CHECKPOINT_ATTEMPTS:
                log(f"{worker}: checkpoint in {where} on {shard} failed after {attempt} attempt(s): {err}")
                sink.write([{"event": "checkpoint_failed", "worker": worker, "shard": shard,
                             "where": where, "error": err, "t": time.time()}])
                return False
            time.sleep(delay)
            delay *= 2
    return False


class Processor(RecordProcessorBase):
    """Processes one shard: records go to the sink, then the batch is checkpointed."""

    def __init__(self, worker: str, sink: JsonlSink) -> None:
        self.worker = worker
        self.sink = sink
        self.shard: str | None = None

    def _event(self, event: str, **extra) -> None:
        self.sink.write([{"event": event, "worker": self.worker, "shard": self.shard,
                          "t": time.time(), **extra}])

    def initialize(self, initialize_input) -> None:
        self.shard = initialize_input.shard_id
        self._event("initialized", checkpoint=initialize_input.sequence_number,
                    subseq=initialize_input.sub_sequence_number)

    def process_records(self, process_records_input) -> None:
        now = time.time()
        lines = []
        for r in process_records_input.records:
            lines.append({
                "worker": self.worker,
                "shard": self.shard,
                "seq": r.sequence_number,
                "subseq": r.sub_sequence_number,
                "pk": r.partition_key,
                "data": bytes(r.data).decode("utf-8", errors="backslashreplace"),
                "t": now,
            })
        self.sink.write(lines)
        # Checkpoint after every batch that carried records (an empty batch
        # moves nothing forward).
        if lines:
            checkpoint(process_records_input.checkpointer, self.sink, self.worker, self.shard,
                       "process_records")

    def lease_lost(self, lease_lost_input) -> None:
        # Checkpointing is no longer possible here.
        self._event("lease_lost")

    def shard_ended(self, shard_ended_input) -> None:
        self._event("shard_ended")
        # Required by KCL: without it the children of this shard never start.
        checkpoint(shard_ended_input.checkpointer, self.sink, self.worker, self.shard, "shard_ended")

    def shutdown_requested(self, shutdown_requested_input) -> None:
        self._event("shutdown_requested")
        checkpoint(shutdown_requested_input.checkpointer, self.sink, self.worker, self.shard,
                   "shutdown_requested")


def guarded(method):
    """Logs a callback's exception with its traceback, then re-raises it."""

    def wrapper(self, *args):
        try:
            return method(self, *args)
        except Exception:
            log(f"{self.worker}: {method.__name__} on {self.shard} raised:\n{traceback.format_exc()}")
            raise

    wrapper.__name__ = method.__name__
    return wrapper


for _name in ("initialize", "process_records", "lease_lost", "shard_ended", "shutdown_requested"):
    setattr(Processor, _name, guarded(getattr(Processor, _name)))


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="One KCL v3 worker (kcl-rs) writing processed records as JSON lines.",
        epilog="Endpoints, region and credentials come from the environment "
        "(eval \"$(scripts/emulators.sh env)\"). kcl-rs 0.1.4 exposes no failover-time "
        "(lease duration) or lease-cleanup knobs; see this file's docstring.",
    )
    p.add_argument("--stream", required=True, help="Kinesis stream name")
    p.add_argument("--app", required=True, help="KCL application name = DynamoDB lease table name")
    p.add_argument("--worker-id", required=True, help="unique worker identifier (leaseOwner)")
    p.add_argument("--out", required=True, help="JSONL file to append records and events to")
    p.add_argument("--initial-position", choices=["TRIM_HORIZON", "LATEST"], default="TRIM_HORIZON",
                   help="where a shard without a checkpoint starts (default TRIM_HORIZON)")
    p.add_argument("--retrieval", choices=["POLLING", "FANOUT"], default="POLLING",
                   help="GetRecords polling or enhanced fan-out SubscribeToShard (default POLLING)")
    p.add_argument("--shard-sync-interval-millis", type=positive_int,
                   help="period of the leader's shard sync, which creates leases for new "
                   "shards; the initial sync at start-up also waits one period (kcl-rs default "
                   "60000; tests want a few seconds)")
    p.add_argument("--max-records", type=positive_int,
                   help="POLLING only: GetRecords limit (kcl-rs default and maximum 10000)")
    p.add_argument("--idle-time-between-reads-millis", type=positive_int,
                   help="POLLING only: pause between GetRecords calls (kcl-rs default 1500, floor 200)")
    p.add_argument("--shutdown-timeout-secs", type=positive_int, default=120,
                   help="after SIGTERM/SIGINT, exit with status 3 if Scheduler.shutdown() has "
                   "not returned within this time (default 120)")
    p.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                   help="AWS region (default: $AWS_REGION, then $AWS_DEFAULT_REGION)")
    args = p.parse_args(argv)
    if args.retrieval != "POLLING" and (args.max_records or args.idle_time_between_reads_millis):
        p.error("--max-records and --idle-time-between-reads-millis need --retrieval POLLING")
    if not args.region:
        p.error("no region: pass --region or set AWS_REGION")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sink = JsonlSink(args.out)
    except OSError as exc:
        log(f"cannot open --out {args.out}: {exc}")
        return 1

    kwargs = dict(
        stream_name=args.stream,
        application_name=args.app,
        record_processor_factory=lambda: Processor(args.worker_id, sink),
        worker_identifier=args.worker_id,
        region=args.region,
        initial_position=args.initial_position,
        retrieval_mode=args.retrieval,
    )
    for name in ("shard_sync_interval_millis", "max_records", "idle_time_between_reads_millis"):
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    try:
        scheduler = Scheduler(**kwargs)
    except (ValueError, TypeError) as exc:
        log(f"bad kcl-rs Scheduler configuration: {exc}")
        sink.close()
        return 2

    # Set by the first SIGTERM/SIGINT and when the scheduler's run loop ends.
    wake = threading.Event()
    signalled = threading.Event()
    outcome: dict = {}

    def on_signal(signum, _frame):
        if signalled.is_set():
            log(f"{args.worker_id}: second signal ({signal.Signals(signum).name}); exiting now")
            os._exit(3)
        signalled.set()
        wake.set()

    # Installed before the scheduler starts so that no signal is lost.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Scheduler.run() (rather than start()) in a thread: it returns, or raises,
    # when the scheduler stops, which is the only way kcl-rs tells that it has
    # stopped on its own. It releases the GIL while it blocks.
    def drive():
        try:
            scheduler.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            outcome["error"] = exc
        finally:
            outcome["ended"] = time.time()
            wake.set()

    runner = threading.Thread(target=drive, name="kcl-scheduler", daemon=True)
    runner.start()
    # Building the runtime, clients and scheduler does no network I/O and takes
    # milliseconds; a build error ends run() within this wait.
    runner.join(STARTUP_CHECK_SECS)
    if not runner.is_alive():
        log(f"{args.worker_id}: the KCL scheduler for stream {args.stream!r}, app {args.app!r} "
            f"failed to start: {outcome.get('error') or 'run() returned at once'}")
        sink.close()
        return 1

    log(f"{args.worker_id}: kcl-rs scheduler running (stream {args.stream}, app {args.app}, "
        f"{args.retrieval}, {args.initial_position})")
    print("READY", flush=True)

    # The timeout only bounds how long a wait goes without re-checking; the
    # signal handler (run by Python in this thread) and drive() set `wake`.
    while not wake.wait(timeout=1.0):
        pass

    if not signalled.is_set():
        log(f"{args.worker_id}: the KCL scheduler stopped on its own: "
            f"{outcome.get('error') or 'no error raised; see the kcl-rs log above'}")
        sink.close()
        return 1

    log(f"{args.worker_id}: stopping (Scheduler.shutdown())")
    stopper_error: dict = {}

    def stop_scheduler():
        try:
            scheduler.shutdown()
        except BaseException as exc:  # noqa: BLE001 - reported below
            stopper_error["error"] = exc

    stopper = threading.Thread(target=stop_scheduler, name="kcl-shutdown", daemon=True)
    stopper.start()
    deadline = time.monotonic() + args.shutdown_timeout_secs
    while stopper.is_alive() and time.monotonic() < deadline:
        stopper.join(timeout=1.0)
    if stopper.is_alive():
        log(f"{args.worker_id}: shutdown did not finish within {args.shutdown_timeout_secs}s "
            "(a shutdown during initialisation waits for it); exiting anyway")
        sink.close()
        os._exit(3)  # the KCL's threads are still running; don't wait for them
    runner.join(timeout=10.0)
    sink.close()
    error = stopper_error.get("error") or outcome.get("error")
    if error is not None:
        log(f"{args.worker_id}: the KCL scheduler had failed: {error}")
        return 1
    log(f"{args.worker_id}: stopped")
    return 0

if __name__ == "__main__":
    sys.exit(main())
