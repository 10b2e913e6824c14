#!/usr/bin/env python3
"""KPL aggregates written by a third-party aggregator, for shardctl's tests.

Aggregates user records with ``aws-kinesis-agg`` (PyPI; the version is pinned in
``scripts/emulators.sh``), the aggregator AWS publishes for producers that do
not run the KPL. Reads user records from stdin, one JSON object per line:

    {"pk": "org-1", "data": "org-1:0", "ehk": "1234"}      ("ehk" optional)

and a line ``{"flush": true}`` that closes the current aggregate. Writes one
JSON object per aggregate to stdout, ready for PutRecord:

    {"pk": "...", "ehk": "..." or null, "data": "<hex>", "records": 25}

Run it with the interpreter ``scripts/emulators.sh install`` sets up
(``$SHARDCTL_PYTHON``).
"""

import json
import sys

from aws_kinesis_agg.aggregator import RecordAggregator


def emit(agg_record):
    if agg_record is None or agg_record.get_num_user_records() == 0:
        return
    pk, ehk, data = agg_record.get_contents()
    print(json.dumps({
        "pk": pk,
        "ehk": ehk,
        "data": data.hex(),
        "records": agg_record.get_num_user_records(),
    }), flush=True)


def main():
    aggregator = RecordAggregator()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        item = json.loads(line)
        if item.get("flush"):
            emit(aggregator.clear_and_get())
            continue
        full = aggregator.add_user_record(
            item["pk"], item["data"].encode("utf-8"), item.get("ehk"))
        # A full aggregate comes back and the record starts the next one.
        emit(full)
    emit(aggregator.clear_and_get())


if __name__ == "__main__":
    main()
