"""The baseline of the benchmark: the least a Python Kafka hop can do on this machine.

A minimal aiokafka consumer-producer. For each batch it fetches, it decodes every transaction
(orjson), adds one field, encodes it again and sends it to ``--output`` (same key, partition and
timestamp), waits for Kafka's acknowledgements and only then commits the batch's offsets: the
same delivery guarantee as the processing worker (at least once, ``acks=all``, LZ4), none of its
work (validation, tables, changelogs, anomaly rule). ``bench/bench_pipeline.py`` runs it at the
same offered rates as the pipeline, so the pipeline's throughput can be quoted as a share of it.

    python bench/passthrough.py --input T --output T2 --group G [--bootstrap localhost:9092]

Prints ``[passthrough] ready`` once it has its partitions and ``[passthrough] done n=...`` when
SIGTERM/SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

__all__ = ["hop", "main", "run"]

FIELD = "passthrough_at"


def hop(value: bytes, now: str) -> bytes:
    """Decode one transaction, add one field, encode it again."""
    txn = orjson.loads(value)
    txn[FIELD] = now
    return orjson.dumps(txn)


async def run(bootstrap: str, source: str, target: str, group: str,
              stop: asyncio.Event) -> int:
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=100, max_partition_fetch_bytes=4 << 20)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                compression_type="lz4", max_batch_size=512 * 1024)
    await producer.start()
    await consumer.start()
    n = 0
    try:
        while not consumer.assignment() and not stop.is_set():
            await consumer.getmany(timeout_ms=100)  # joins the group; nothing is produced yet
        print(f"[passthrough] ready partitions={len(consumer.assignment())}", flush=True)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=5000)
            if not batches:
                continue
            now = datetime.now(UTC).isoformat()
            futures = []
            for tp, records in batches.items():
                for r in records:
                    futures.append(await producer.send(
                        target, hop(r.value, now), key=r.key, partition=tp.partition,
                        timestamp_ms=r.timestamp))
            await asyncio.gather(*futures)
            await consumer.commit()
            n += len(futures)
    finally:
        await consumer.stop()
        await producer.stop()
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="localhost:9092")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run(args.bootstrap, args.input, args.output, args.group, stop)

    t0 = time.monotonic()
    n = asyncio.run(go())
    print(f"[passthrough] done n={n} seconds={time.monotonic() - t0:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
