"""Load a history of transactions into MongoDB through the product's own write path, fast: the
long-run benchmark's seed (``bench/longrun.py``), usable alone.

    .venv/bin/python bench/seed_history.py --mongo-url mongodb://127.0.0.1:27018 \\
        --db txn_analytics --transactions 10000000 --days 7

What it writes is what the pipeline would have written, made by the same code:

- the transactions come from the producer's factory (``app.producer.TransactionFactory``, the
  demo's seed, users and merchants), their event times spread evenly over the ``--days`` days
  before ``--end`` (default: the start of the current UTC day, so the live run's aggregate
  parts never meet the seed's: its topics start at offset 0 again);
- each is enriched as the worker does (:func:`agents.enrich.enrich` over per-user statistics
  and day spend, partition by murmur2 of the key as the producer places it);
- the sink's code stores them: ``Entry`` items made as ``agents/sink/agents.py`` makes them,
  :meth:`MongoStore.insert` in batches of ``SINK_BATCH_SIZE``, :meth:`Manifests.record` for the
  retention, the anomalies' time index (:class:`AnomalyIndex`) after each ``anomalies`` batch;
  the items the sink counts (:meth:`Rollups.stored_here`) are folded by the sink's
  :class:`~agents.sink.aggregates.Builder` and each aggregate document is inserted once, at
  the end, as the sink's writes would have left it.

``--processes 2`` splits the partitions between two processes (each one a sink of its
partitions: an aggregate part has one writer); each process generates every message and keeps
its own. Progress (count, rate, ETA) every few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.enrich import enrich  # noqa: E402
from agents.sink import documents as docs  # noqa: E402
from agents.sink.aggregates import Builder  # noqa: E402
from agents.sink.anomaly_index import AnomalyIndex  # noqa: E402
from agents.sink.batch import Acks  # noqa: E402
from agents.sink.documents import Entry  # noqa: E402
from agents.sink.manifests import Manifests  # noqa: E402
from agents.sink.mongo import MongoStore, connect, ensure_collections  # noqa: E402
from agents.sink.rollups import Rollups  # noqa: E402
from app import contract  # noqa: E402
from app.producer import TransactionFactory  # noqa: E402
from app.producer.kafka import Partitions  # noqa: E402
from app.settings import settings  # noqa: E402
from tables.welford import EMPTY, Welford  # noqa: E402

__all__ = ["Enricher", "History", "SeedStats", "anomaly_entry", "merge", "seed",
           "transaction_entry", "write_aggregates"]

#: Transactions generated and enriched per step (then inserted in the sink's batch size).
STEP = 20_000
PROGRESS_SECONDS = 5.0
#: Aggregate documents per insert (an hour of 1,000 merchants is a few hundred KB).
AGGREGATES_PER_INSERT = 20


@dataclass(frozen=True)
class History:
    """Which history: the factory's arguments and the event-time span."""

    transactions: int
    days: float = 7.0
    end_ms: int = 0  # 0: the start of the current UTC day
    seed: int = 42
    users: int = 10_000
    merchants: int = 1_000
    anomaly_rate: float = 0.002

    def resolved_end_ms(self) -> int:
        if self.end_ms:
            return self.end_ms
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return int(today.timestamp() * 1000)

    def factory(self) -> TransactionFactory:
        span_us = int(self.days * 86_400_000_000)
        step_us = max(1, span_us // max(1, self.transactions))
        start_ms = self.resolved_end_ms() - self.transactions * step_us // 1000
        return TransactionFactory(seed=self.seed, users=self.users, merchants=self.merchants,
                                  anomaly_rate=self.anomaly_rate, start_ms=start_ms,
                                  step_us=step_us)


def transaction_entry(raw: bytes, partition: int, offset: int) -> Entry:
    """A ``transactions_enriched`` message's entry, as the sink's ``store_transactions`` makes
    it: the document and the fields the aggregates count (``documents.transaction``)."""
    doc, fields = docs.transaction(raw)
    return Entry(doc, raw, settings.topic(contract.ENRICHED), partition, offset, fields=fields)


def anomaly_entry(raw: bytes, partition: int, offset: int) -> Entry:
    """An ``anomalies`` message's entry, as the sink's ``store_anomalies``."""
    return Entry(docs.anomaly_doc(docs.parse_json(raw)), raw,
                 settings.topic(contract.ANOMALIES), partition, offset)


class Enricher:
    """The worker's per-user state for a history read in order: statistics, the spend of the
    current UTC day, and the next offset of each output partition."""

    def __init__(self, partitions: int) -> None:
        self.users: dict[str, tuple[Welford, int, int]] = {}  # user -> stats, day, day cents
        self.partition_of = Partitions(partitions)
        self.offsets: dict[tuple[str, int], int] = {}
        self.threshold = settings.anomaly_z_threshold
        self.min_history = settings.anomaly_min_history

    def next_offset(self, topic: str, partition: int) -> int:
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        return offset

    def one(self, value: bytes, key: bytes, timestamp_ms: int
            ) -> tuple[int, bytes, bytes | None]:
        """The partition, enriched message and anomaly message (or None) of one transaction;
        ``processed_at`` is its event time plus a tenth of a second."""
        import orjson

        txn = orjson.loads(value)
        stats, day, day_cents = self.users.get(txn["user_id"], (EMPTY, -1, 0))
        today = timestamp_ms // 86_400_000
        if today != day:
            day, day_cents = today, 0
        now = datetime.fromtimestamp((timestamp_ms + 100) / 1000, UTC).isoformat()
        done = enrich(txn, stats, day_cents, now, self.threshold, self.min_history)
        self.users[txn["user_id"]] = (done.stats, day, day_cents + done.amount_cents)
        anomaly = None if done.anomaly is None else orjson.dumps(done.anomaly)
        return self.partition_of[key], orjson.dumps(done.value), anomaly


@dataclass
class SeedStats:
    transactions: int = 0
    anomalies: int = 0
    seconds: float = 0.0
    aggregates: int = 0  # aggregate documents written


Progress = Callable[[str], None]
#: The aggregate documents one process built: ``(collection, _id)`` -> document.
Aggregates = dict[tuple[str, str], dict[str, Any]]


def _batches(history: History, enricher: Enricher, mine: frozenset[int], first: int,
             count: int) -> Iterator[tuple[list[Entry], list[Entry]]]:
    """Entries of this process's partitions, a step of the history at a time."""
    factory = history.factory()
    enriched_topic, anomaly_topic = contract.ENRICHED, contract.ANOMALIES
    for lo in range(first, first + count, STEP):
        txns: list[Entry] = []
        anomalies: list[Entry] = []
        for msg in factory.messages(lo, min(STEP, first + count - lo)):
            if enricher.partition_of[msg.key] not in mine:
                continue
            partition, raw, anomaly = enricher.one(msg.value, msg.key, msg.timestamp_ms)
            txns.append(transaction_entry(
                raw, partition, enricher.next_offset(enriched_topic, partition)))
            if anomaly is not None:
                anomalies.append(anomaly_entry(
                    anomaly, partition, enricher.next_offset(anomaly_topic, partition)))
        yield txns, anomalies


async def _no_ack(events: Any) -> None:
    """The seed reads no Kafka events: nothing to ack."""


class Writer:
    """The sink's writes of one process: inserts, manifests and the anomalies' time index per
    batch, as the sink makes them; the aggregates are folded in memory by the sink's own
    :class:`~agents.sink.aggregates.Builder` from the items the sink counts
    (:meth:`Rollups.stored_here`) and written once at the end (:func:`write_aggregates`).
    The sink's ``$set`` writes of whole partition fields converge to exactly these documents
    (its tests compare the two), and one insert of each document costs FerretDB far less than
    thousands of upserts of thousands of paths."""

    def __init__(self, db: Any) -> None:
        self.store = MongoStore(db)
        self.manifests = Manifests(db)
        self.rollups = Rollups(self.store)
        self.anomaly_index = AnomalyIndex(self.store)
        self.builder = Builder()

    async def insert(self, collection: str, entries: list[Entry]) -> None:
        size = settings.sink_batch_size
        for start in range(0, len(entries), size):
            batch = entries[start:start + size]
            result = await self.store.insert(collection, batch)
            await self.manifests.record(collection, batch, result)
            if collection == docs.TRANSACTIONS:
                for item in await self.rollups.stored_here(batch, result):
                    self.builder.add(item)
            else:  # the anomalies' time index, the sink's step after their insert
                await self.anomaly_index(batch, result, Acks(_no_ack, ()))


async def _seed_part(mongo_url: str, db_name: str, history: History, mine: frozenset[int],
                     progress: Progress | None) -> tuple[SeedStats, Aggregates]:
    db = connect(mongo_url)[db_name]
    writer = Writer(db)
    await writer.store.ready()
    enricher = Enricher(settings.topic_partitions)
    stats = SeedStats()
    started = last = time.monotonic()
    pending: asyncio.Future[Any] | None = None
    total = history.transactions
    done_seq = 0
    for txns, anomalies in _batches(history, enricher, mine, 0, total):
        if pending is not None:  # this step was computed while the previous one was written
            await pending
        pending = asyncio.ensure_future(_write_step(writer, txns, anomalies))
        await asyncio.sleep(0)
        stats.transactions += len(txns)
        stats.anomalies += len(anomalies)
        done_seq = min(total, done_seq + STEP)
        now = time.monotonic()
        if progress is not None and now - last >= PROGRESS_SECONDS:
            last = now
            rate = done_seq / (now - started)
            eta = (total - done_seq) / rate if rate else 0.0
            progress(f"{done_seq:,}/{total:,} transactions ({rate:,.0f}/s, ETA {eta:,.0f} s)")
    if pending is not None:
        await pending
    stats.seconds = time.monotonic() - started
    db.client.close()
    return stats, {(collection, doc["_id"]): doc
                   for collection, documents in writer.builder.documents().items()
                   for doc in documents}


async def _write_step(writer: Writer, txns: list[Entry], anomalies: list[Entry]) -> None:
    await writer.insert(docs.TRANSACTIONS, txns)
    await writer.insert(docs.ANOMALIES, anomalies)


def merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    """Merge the aggregate document ``other`` into ``into``: two processes hold disjoint
    partition fields (each partition has one writer) under the same plain fields."""
    for key, value in other.items():
        mine = into.get(key)
        if isinstance(mine, dict) and isinstance(value, Mapping):
            merge(mine, value)
        elif mine is None:
            into[key] = value
        elif mine != value:
            raise ValueError(f"two processes wrote {key!r}: {mine!r} and {value!r}")


def write_aggregates(db: Any, parts: list[Aggregates]) -> int:
    """Insert the aggregate documents of every process (merged); returns how many."""
    merged: Aggregates = {}
    for part in parts:
        for key, doc in part.items():
            if key in merged:
                merge(merged[key], doc)
            else:
                merged[key] = doc
    by_collection: dict[str, list[dict[str, Any]]] = {}
    for (collection, _), doc in merged.items():
        by_collection.setdefault(collection, []).append(doc)
    for collection, documents in by_collection.items():
        for start in range(0, len(documents), AGGREGATES_PER_INSERT):
            db[collection].insert_many(documents[start:start + AGGREGATES_PER_INSERT],
                                       ordered=False)
    return len(merged)


def _part_main(args: tuple[str, str, History, frozenset[int], bool]
               ) -> tuple[SeedStats, Aggregates]:
    mongo_url, db_name, history, mine, talk = args
    name = f"partitions {','.join(map(str, sorted(mine)))}"
    progress = (lambda text: print(f"[seed] {name}: {text}", flush=True)) if talk else None
    return asyncio.run(_seed_part(mongo_url, db_name, history, mine, progress))


def seed(mongo_url: str, db_name: str, history: History, processes: int = 1,
         progress: Progress | None = None) -> SeedStats:
    """Seed ``history`` into ``db_name`` (added to what is there); returns what was written.
    ``processes``: 1 or 2 (each a sink of half of the partitions)."""
    partitions = settings.topic_partitions
    history = History(**{**history.__dict__, "end_ms": history.resolved_end_ms()})
    started = time.monotonic()
    client = connect(mongo_url)
    ensure_collections(client[db_name])  # once, before two processes would race to make them
    client.close()
    if processes <= 1:
        parts = [asyncio.run(_seed_part(mongo_url, db_name, history,
                                        frozenset(range(partitions)), progress))]
    else:
        groups = [frozenset(p for p in range(partitions) if p % processes == i)
                  for i in range(processes)]
        jobs = [(mongo_url, db_name, history, g, progress is not None) for g in groups]
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            parts = pool.map(_part_main, jobs)
    result = SeedStats(sum(p.transactions for p, _ in parts), sum(p.anomalies for p, _ in parts))
    if progress is not None:
        progress("writing the aggregate documents")
    client = connect(mongo_url)
    result.aggregates = write_aggregates(client[db_name], [docs_ for _, docs_ in parts])
    client.close()
    result.seconds = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mongo-url", default=settings.mongo_url)
    parser.add_argument("--db", default=settings.mongo_db)
    parser.add_argument("--transactions", type=int, default=200_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--end", type=int, default=0, help="end of the history, epoch ms "
                        "(default: the start of the current UTC day)")
    parser.add_argument("--processes", type=int, default=1, choices=(1, 2))
    args = parser.parse_args(argv)
    history = History(args.transactions, args.days, args.end)
    stats = seed(args.mongo_url, args.db, history, args.processes,
                 lambda text: print(f"[seed] {text}", flush=True))
    print(f"[seed] {stats.transactions:,} transactions ({stats.anomalies:,} anomalies) in "
          f"{stats.seconds:,.1f} s: {stats.transactions / max(stats.seconds, 1e-9):,.0f}/s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
