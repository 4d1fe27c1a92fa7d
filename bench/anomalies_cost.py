"""Uncached cost of ``GET /anomalies`` pages (``views.queries.anomalies``, pymongo straight to the
database, no API cache): the first page, the next page by cursor, a page 20 pages deep, and a
rare filter; p50/p99 milliseconds over ``--repeat`` runs, and the ``find`` commands each sends.

    .venv/bin/python bench/anomalies_cost.py --mongo-url mongodb://127.0.0.1:PORT --db bench_api

Seed the database first (``bench/seed_mongo.py``, ``--anomaly-rate`` for more anomalies;
``--add-anomalies N`` here adds N older ones, spread over the days before, with their index as
the sink writes it, to see how the cost grows with the history). Runs
the code of the tree it is started from, so the same database can be measured with two
versions (``PYTHONPATH=<other tree> python <other tree>/bench/anomalies_cost.py ...``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pymongo
from pymongo import monitoring

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from views import queries  # noqa: E402


def add_anomalies(db: Any, n: int) -> None:
    """``n`` anomalies in the 9 days before the oldest stored, and their time index."""
    from datetime import timedelta

    from agents.sink import anomaly_index

    oldest = next(db.anomalies.find({}, {"timestamp": 1}).sort("timestamp", 1).limit(1))
    template = db.anomalies.find_one({"_id": oldest["_id"]})
    step = timedelta(days=9) / n
    added = [{**template, "_id": f"older-{i:07d}", "txn_id": f"older-{i:07d}",
              "timestamp": oldest["timestamp"] - (i + 1) * step} for i in range(n)]
    for lo in range(0, n, 10_000):
        db.anomalies.insert_many(added[lo:lo + 10_000], ordered=False)
    for collection, made in anomaly_index.index_documents(added).items():
        for doc in made:  # merged into the seed's day and month documents, as upserts would
            paths = {f"{k}.{key}": v for k, m in doc.items() if k != "_id"
                     for key, v in m.items()}
            db[collection].update_one({"_id": doc["_id"]}, {"$set": paths}, upsert=True)


class Finds(monitoring.CommandListener):
    """Counts the ``find`` commands sent."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.count += event.command_name == "find"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mongo-url", default="mongodb://127.0.0.1:27017")
    p.add_argument("--db", default="bench_api")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--label", default=str(ROOT))
    p.add_argument("--add-anomalies", type=int, default=0,
                   help="first add this many older anomalies and their index")
    args = p.parse_args()
    finds = Finds()
    client: pymongo.MongoClient = pymongo.MongoClient(args.mongo_url, tz_aware=True,
                                                      event_listeners=[finds])
    db = client[args.db]
    if args.add_anomalies:
        add_anomalies(db, args.add_anomalies)
    _, cursor = queries.anomalies(db, 50)
    deep = cursor
    for _ in range(19):
        if deep is None:
            break
        _, deep = queries.anomalies(db, 50, deep)
    cases: dict[str, Any] = {
        "page 1": lambda: queries.anomalies(db, 50),
        "page 2 (cursor)": lambda: queries.anomalies(db, 50, cursor),
        "page 21 (cursor)": lambda: queries.anomalies(db, 50, deep),
        "min_z=14.9 (rare)": lambda: queries.anomalies(db, 50, min_z=14.9),
    }
    out: dict[str, Any] = {"label": args.label,
                           "anomalies": db.command("collStats", "anomalies").get("count")}
    for name, run in cases.items():
        times, items, sent = [], 0, 0
        for _ in range(args.repeat):
            before = finds.count
            started = time.perf_counter()
            page, _ = run()
            times.append((time.perf_counter() - started) * 1000)
            items, sent = len(page), finds.count - before
        times.sort()
        out[name] = {"p50_ms": round(times[len(times) // 2], 1),
                     "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
                     "items": items, "finds": sent}
        print(f"[anomalies] {name}: {out[name]}", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
