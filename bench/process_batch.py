"""CPU per message of the worker's own batch code alone: ``agents.processor.process_batch``
(validation, the fold, RocksDB reads and writes, orjson encoding), without Kafka or Faust's
consumer: the output is a stand-in that only counts, the events are built in memory.

    python bench/process_batch.py [--users 10000] [--batch 200] [--count 40000]

prints the CPU time (``time.process_time``) per message, best of ``--repeat`` runs, each on
fresh tables (a temporary ``DATA_DIR``). Nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DATA_DIR"] = tempfile.mkdtemp(prefix="bench-batch-")  # before app.settings loads
os.environ.setdefault("TOPIC_PREFIX", "bench-batch-")

from agents import processor  # noqa: E402
from app.faust_internals.stores import partition_db  # noqa: E402
from app.main import app  # noqa: E402
from app.producer import TransactionFactory  # noqa: E402

PARTITIONS = 8


class CountingOutput:
    """Stands in for Kafka: acknowledges everything at once."""

    async def send(self, messages: list[Any]) -> list[Any]:
        return []

    async def publish(self, messages: list[Any]) -> list[Any]:
        return []


def make_events(users: int, count: int, first_offset: int) -> list[Any]:
    """``count`` new transactions (their own sequence numbers, so their own ids: none is a
    replay of an earlier run's) at offsets from ``first_offset``."""
    factory = TransactionFactory(seed=11, users=users, merchants=1_000, anomaly_rate=0.002,
                                 bad_rate=0.001)
    events = []
    for i, m in enumerate(factory.messages(first_offset, count)):
        partition = zlib.crc32(m.key) % PARTITIONS
        events.append(SimpleNamespace(topic="transactions", key=m.key, value=m.value,
                                      partition=partition, offset=first_offset + i,
                                      timestamp=m.timestamp_ms / 1000))
    return events


async def run(events: list[Any], batch: int) -> float:
    start = time.process_time()
    for i in range(0, len(events), batch):
        await processor.process_batch(events[i:i + batch])
    return (time.process_time() - start) / len(events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--count", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    processor.output = CountingOutput()
    for partition in range(PARTITIONS):  # open the databases first: not per-message work
        for table in app.tables.values():
            partition_db(table, partition)
    best = float("inf")
    for r in range(args.repeat):
        # offsets above the previous run's, so every run applies every message again
        events = make_events(args.users, args.count, first_offset=r * args.count)
        best = min(best, asyncio.run(run(events, args.batch)))
    print(f"process_batch: {best:.1f} us CPU per message (best of {args.repeat}; "
          f"{args.users} users, batches of {args.batch}, {args.count} messages)")


if __name__ == "__main__":
    main()
