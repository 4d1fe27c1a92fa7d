"""Retention costs on the local FerretDB (needs make services); each part uses a database of its
own, dropped afterwards.

- ``queries``: what FerretDB does with a ``$in``, an ``_id`` range and ``DeleteOne`` by ``_id``
  on collections of 20k and 200k documents (a time that grows with the collection is a scan);
- ``sink``: stored/s of enriched transactions through the sink's writer (``MongoSink`` on a
  ``MongoStore``, batches of SINK_BATCH_SIZE) with and without the retention manifests;
- ``prune``: ``txn prune``'s time for N expired transactions beside K kept ones.

    .venv/bin/python bench/retention_bench.py queries sink prune [--count 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
from pymongo import DeleteOne

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.sink import documents as docs  # noqa: E402
from agents.sink.documents import Entry  # noqa: E402
from agents.sink.mongo import InsertResult, MongoStore, connect  # noqa: E402
from agents.sink.prune import Pruner  # noqa: E402
from agents.sink.writer import MongoSink  # noqa: E402
from app.settings import settings  # noqa: E402
from tests.sink_data import enriched_stream  # noqa: E402

NOW = datetime.now(UTC)
DAYS = {docs.TRANSACTIONS: 30, docs.ANOMALIES: 90, docs.DLQ: 30, "aggregates": 400}


class Timed:
    """The sink's own listing (``Manifests``), timed."""

    def __init__(self, db: Any) -> None:
        from agents.sink.manifests import Manifests

        self.manifests = Manifests(db)
        self.seconds = 0.0
        self.batches = 0

    async def record(self, collection: str, entries: list[Entry], result: InsertResult,
                     now: datetime | None = None) -> None:
        started = time.monotonic()
        await self.manifests.record(collection, entries, result, now)
        self.seconds += time.monotonic() - started
        self.batches += 1


class NoList:
    async def record(self, collection: str, entries: list[Entry], result: InsertResult,
                     now: datetime | None = None) -> None:
        return None


def ms(fn: Any, reps: int = 1) -> float:
    started = time.monotonic()
    for _ in range(reps):
        fn()
    return (time.monotonic() - started) / reps * 1000


def query_times(col: Any) -> dict[str, float]:
    """Milliseconds per query on ``col`` (ids ``k00000000``...)."""
    return {
        "find_one by _id": ms(lambda: col.find_one({"_id": "k00000500"}), 20),
        "delete_one by _id (absent)": ms(lambda: col.delete_one({"_id": "nope"}), 20),
        "delete_many $in 10 ids": ms(lambda: col.delete_many(
            {"_id": {"$in": [f"k{i:08d}" for i in range(10, 20)]}})),
        "delete_many _id $gte/$lt (10 docs)": ms(lambda: col.delete_many(
            {"_id": {"$gte": "k00000030", "$lt": "k00000040"}})),
        "find _id $gte/$lt (10 docs)": ms(lambda: list(col.find(
            {"_id": {"$gte": "k00000040", "$lt": "k00000050"}}))),
        "bulk DeleteOne x1000": ms(lambda: col.bulk_write(
            [DeleteOne({"_id": f"k{i:08d}"}) for i in range(1000, 2000)], ordered=False)),
    }


def queries() -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_url)
    for n in (20_000, 200_000):
        db = client[f"bench_ret_{uuid.uuid4().hex[:8]}"]
        col = db.t
        for start in range(0, n, 5000):
            col.insert_many([{"_id": f"k{i:08d}", "x": i, "pad": "y" * 200}
                             for i in range(start, min(n, start + 5000))])
        for name, value in query_times(col).items():
            print(f"queries n={n:>7,}  {name:<36} {value:9.1f} ms", flush=True)
        client.drop_database(db.name)


def entries(values: Sequence[dict[str, Any]], partition: int = 0) -> list[Entry]:
    return [Entry(docs.transaction_doc(v), b"{}", "enriched", partition, i)
            for i, v in enumerate(values)]


async def store_all(store: MongoStore, items: list[Entry], lister: Any = None) -> float:
    """Seconds to store ``items`` through the sink's writer."""
    async def ack(events: Sequence[Any]) -> None:
        return None

    writer = MongoSink(store, docs.TRANSACTIONS, ack, max_size=settings.sink_batch_size,
                       max_seconds=3600, lister=lister)
    await store.ready()
    started = time.monotonic()
    for start in range(0, len(items), 5000):
        chunk = items[start:start + 5000]
        await writer.add(chunk, list(range(len(chunk))))
    await writer.flush()
    return time.monotonic() - started


async def sink(count: int) -> None:
    values, _ = enriched_stream(count, seed=3, users=10_000, merchants=1_000,
                                start=NOW - timedelta(seconds=count * 0.037))
    items = entries(values)
    for attempt in range(3):
        for label in ("without manifests", "with manifests"):
            client = connect(settings.mongo_url)
            name = f"bench_ret_{uuid.uuid4().hex[:8]}"
            timed = Timed(client[name])
            lister = NoList() if label == "without manifests" else timed
            seconds = await store_all(MongoStore(client[name]), items, lister)
            listing = f"; listing {timed.seconds:.1f} s over {timed.batches} batches " \
                f"({timed.seconds / max(timed.batches, 1) * 1000:.1f} ms each)" \
                if timed.batches else ""
            print(f"sink {label:<18} run {attempt + 1}: {count:,} in {seconds:.1f} s = "
                  f"{count / seconds:,.0f} stored/s{listing}", flush=True)
            client.drop_database(name)
            client.close()


async def prune(expired: int, kept: int) -> None:
    client = connect(settings.mongo_url)
    name = f"bench_ret_{uuid.uuid4().hex[:8]}"
    store = MongoStore(client[name])
    old, _ = enriched_stream(expired, seed=4, users=10_000, merchants=1_000,
                             start=NOW - timedelta(days=40))
    new, _ = enriched_stream(kept, seed=5, users=10_000, merchants=1_000,
                             start=NOW - timedelta(days=2))
    await store_all(store, entries(old, 0))
    await store_all(store, entries(new, 1))
    pruner = Pruner(client[name], DAYS)
    started = time.monotonic()
    reports = pruner.run(NOW)
    seconds = time.monotonic() - started
    deleted = reports[0].deleted[docs.TRANSACTIONS]
    c = pruner.counts
    print(f"prune expired={expired:,} kept={kept:,}: deleted {deleted:,} in {seconds:.1f} s = "
          f"{seconds / max(deleted, 1) * 10_000:.2f} s per 10k ({c.reads} reads, "
          f"{c.delete_calls} delete calls, {c.delete_ids:,} ids)", flush=True)
    client.drop_database(name)
    client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", choices=("queries", "sink", "prune"))
    parser.add_argument("--count", type=int, default=100_000, help="sink: documents stored")
    args = parser.parse_args()
    if "queries" in args.parts:
        queries()
    if "sink" in args.parts:
        asyncio.run(sink(args.count))
    if "prune" in args.parts:
        for expired, kept in ((20_000, 20_000), (20_000, 200_000), (100_000, 20_000)):
            asyncio.run(prune(expired, kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())
