"""The sink's sustained write rate into FerretDB, and the lag of the rollups.

    .venv/bin/python bench/sink_bench.py                         # 60k documents, batch 2000
    .venv/bin/python bench/sink_bench.py --count 30000 --batch-sizes 500,2000,5000

For each batch size: a unique TOPIC_PREFIX gets ``--count`` enriched transactions (made by
tests/sink_data.py, already in Kafka before the sink starts, so Kafka is not the limit);
a private FerretDB (``.cache/bin/ferretdb-local``, data in a temporary directory, never the
shared one; or ``--mongo-url``) receives them from a real ``txn sink`` process. The rate is
computed from the sink's own ``sink_batches`` records: documents inserted into ``transactions``
between the first and the last batch, over that time (a backlog: the sink writes as fast as it
can).

Then the rollup lag: with the sink caught up, enriched transactions are sent live at
``--live-tps`` (timestamps = now), and every second a probe transaction for a merchant of its
own; the lag of a probe is the time from its send to its merchant in ``merchant_hours`` (and its
``transactions`` document) being readable in MongoDB. Results are printed and written to
bench/results/sink.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.sink import aggregates  # noqa: E402
from agents.sink import documents as docs  # noqa: E402
from app.contract import ANOMALIES, DLQ, ENRICHED  # noqa: E402
from app.producer import ensure_topic  # noqa: E402
from app.settings import settings  # noqa: E402
from tests.procs import TXN, Proc, free_port, pipeline_env, wait_for  # noqa: E402
from tests.sink_data import enriched_stream, produce  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sink.json"
FERRETDB = ROOT / ".cache" / "bin" / "ferretdb-local"
PARTITIONS = 8


def start_ferretdb(tmp: Path) -> tuple[Proc, str]:
    port = free_port()
    data = tmp / "ferretdb"
    data.mkdir()
    proc = Proc("ferretdb", [str(FERRETDB), f"--listen-addr=127.0.0.1:{port}",
                             f"--data-dir={data}"], dict(os.environ), tmp).start()
    url = f"mongodb://127.0.0.1:{port}"
    with pymongo.MongoClient(url, serverSelectionTimeoutMS=30_000) as client:
        client.admin.command("ping")
    return proc, url


def write_rate(db: pymongo.database.Database) -> dict[str, Any]:
    batches = sorted(db[docs.METRICS].find({"collection": docs.TRANSACTIONS}),
                     key=lambda b: b["at"])
    inserted = [b["inserted"] for b in batches]
    span = (batches[-1]["at"] - batches[0]["at"]).total_seconds()
    # the first batch's documents were written before its record: count from the second on
    rate = sum(inserted[1:]) / span if span > 0 else float("nan")
    return {"batches": len(batches), "documents": sum(inserted),
            "seconds": round(span, 2), "docs_per_second": round(rate),
            "mean_batch": round(statistics.mean(inserted)),
            "mean_write_seconds": round(statistics.mean(b["seconds"] for b in batches), 3)}


def cpu_seconds(proc: Proc) -> float:
    """User + system CPU time of a running process (Linux ``/proc``)."""
    assert proc.proc is not None
    fields = Path(f"/proc/{proc.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rolled_up(db: pymongo.database.Database) -> int:
    """Transactions counted in ``volume_hours`` so far (every minute of every partition)."""
    return sum(total.a for row in db[aggregates.VOLUME_HOURS].find()
               for total in aggregates.totals(row).values())


def live_lag(prefix: str, db: pymongo.database.Database, tps: int,
             seconds: int) -> dict[str, Any]:
    """Send live traffic plus one probe a second; time each probe into MongoDB."""
    stop = threading.Event()
    topic = f"{prefix}-{ENRICHED}"

    def background() -> None:
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            values, _ = enriched_stream(tps, seed=1000 + n, start=datetime.now(UTC))
            produce(settings.kafka_bootstrap_servers, topic, values, PARTITIONS)
            n += 1
            time.sleep(max(0.0, 1 - (time.monotonic() - started)))

    thread = threading.Thread(target=background, daemon=True)
    thread.start()
    rollup_lags, doc_lags = [], []
    try:
        for i in range(seconds):
            probe, _ = enriched_stream(1, seed=5000 + i, merchants=1,
                                       start=datetime.now(UTC))
            probe[0]["merchant_id"] = f"probe-{uuid.uuid4().hex[:8]}"
            sent = time.monotonic()
            produce(settings.kafka_bootstrap_servers, topic, probe, PARTITIONS)
            doc_seen = rollup_seen = None
            while time.monotonic() - sent < 60 and (doc_seen is None or rollup_seen is None):
                now = time.monotonic()
                if doc_seen is None and db[docs.TRANSACTIONS].find_one(
                        {"_id": probe[0]["txn_id"]}, {"_id": 1}):
                    doc_seen = now - sent
                if rollup_seen is None and probe[0]["merchant_id"] in aggregates.totals(
                        db[aggregates.MERCHANT_HOURS].find_one({"_id": aggregates.hour_id(
                            datetime.fromisoformat(probe[0]["timestamp"]))})):
                    rollup_seen = now - sent
                time.sleep(0.02)
            if doc_seen is not None:
                doc_lags.append(doc_seen)
            if rollup_seen is not None:
                rollup_lags.append(rollup_seen)
    finally:
        stop.set()
        thread.join()

    def summary(values: list[float]) -> dict[str, Any]:
        if not values:
            return {"probes": 0}
        values = sorted(values)
        return {"probes": len(values), "p50_s": round(statistics.median(values), 3),
                "p95_s": round(values[int(0.95 * (len(values) - 1))], 3),
                "max_s": round(values[-1], 3)}

    return {"live_tps": tps, "seconds": seconds, "rollup_lag": summary(rollup_lags),
            "document_lag": summary(doc_lags)}


def run(batch_size: int, count: int, mongo_url: str | None, tmp: Path, lag_seconds: int,
        live_tps: int, batch_seconds: float) -> dict[str, Any]:
    prefix = f"bench-sink-{uuid.uuid4().hex[:8]}"
    ferretdb = None
    if mongo_url is None:
        ferretdb, mongo_url = start_ferretdb(tmp)
    values, anomalies = enriched_stream(count, seed=batch_size, users=2000, merchants=300,
                                        start=datetime.now(UTC))
    produce(settings.kafka_bootstrap_servers, f"{prefix}-{ENRICHED}", values, PARTITIONS)
    produce(settings.kafka_bootstrap_servers, f"{prefix}-{ANOMALIES}", anomalies, PARTITIONS)
    ensure_topic(settings.kafka_bootstrap_servers, f"{prefix}-{DLQ}", PARTITIONS)  # no rebalance
    env = pipeline_env(prefix, MONGO_URL=mongo_url, TOPIC_PARTITIONS=PARTITIONS,
                       DATA_DIR=tmp / f"data-{prefix}", SINK_BATCH_SIZE=batch_size,
                       SINK_BATCH_SECONDS=batch_seconds)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    db = client[env["MONGO_DB"]]
    sink = Proc("sink", [TXN, "sink", "-l", "info"], env, tmp).start()
    try:
        # the sink's CPU from its first stored document to the last rollup written
        wait_for(lambda: db[docs.TRANSACTIONS].estimated_document_count() > 0,
                 timeout=300, interval=0.2, message=f"a first document:\n{sink.log()}")
        cpu0, first = cpu_seconds(sink), db[docs.TRANSACTIONS].estimated_document_count()
        wait_for(lambda: db[docs.TRANSACTIONS].estimated_document_count() >= count,
                 timeout=900, interval=1, message=f"{count} documents:\n{sink.log()}")
        wait_for(lambda: rolled_up(db) >= count, timeout=300, interval=0.5,
                 message=f"rollups of {count}:\n{sink.log()}")
        cpu = cpu_seconds(sink) - cpu0
        result: dict[str, Any] = {"batch_size": batch_size, "batch_seconds": batch_seconds,
                                  **write_rate(db), "sink_cpu_seconds": round(cpu, 2),
                                  "sink_cpu_ms_per_document":
                                      round(1000 * cpu / max(1, count - first), 3)}
        print(f"batch {batch_size}: {result['docs_per_second']} documents/s "
              f"({result['documents']} in {result['seconds']} s, "
              f"{result['batches']} batches); sink CPU "
              f"{result['sink_cpu_ms_per_document']} ms per document", flush=True)
        if lag_seconds:
            result["lag"] = live_lag(prefix, db, live_tps, lag_seconds)
            print(f"  rollup lag at {live_tps} tps: {result['lag']['rollup_lag']}; "
                  f"document lag: {result['lag']['document_lag']}", flush=True)
        return result
    finally:
        sink.stop()
        client.drop_database(env["MONGO_DB"])
        client.close()
        if ferretdb is not None:
            ferretdb.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60_000)
    parser.add_argument("--batch-sizes", default="2000")
    parser.add_argument("--batch-seconds", type=float, default=settings.sink_batch_seconds)
    parser.add_argument("--mongo-url", default=None, help="default: a private FerretDB")
    parser.add_argument("--lag-seconds", type=int, default=20)
    parser.add_argument("--live-tps", type=int, default=settings.target_tps)
    parser.add_argument("--no-write", action="store_true", help="do not write the results")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sink-bench-"))
    try:
        runs = [run(int(size), args.count, args.mongo_url, tmp, args.lag_seconds,
                    args.live_tps, args.batch_seconds)
                for size in args.batch_sizes.split(",")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "database": "FerretDB 1.24 (SQLite), private" if args.mongo_url is None
              else "given by --mongo-url",
              "count": args.count, "partitions": PARTITIONS, "runs": runs}
    print(json.dumps(report, indent=2))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
