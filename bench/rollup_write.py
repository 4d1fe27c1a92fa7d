"""What the sink's aggregate writes cost FerretDB: the time of each rollup flush and FerretDB's
CPU for it, at a given rate, number of users and merchants.

    .venv/bin/python bench/rollup_write.py                        # 8 flushes of 5 s at 1k/s
    .venv/bin/python bench/rollup_write.py --label before --code /tmp/old-checkout

Each flush is what the sink writes after ``--flush-seconds`` at ``--tps`` transactions per second
(items spread over ``--users`` users, ``--merchants`` merchants and 8 partitions, event times
in the current hour), written by the sink's own ``Rollups.write`` into a fresh database of the
running FerretDB (``MONGO_URL``), which is dropped at the end. ``--code`` runs another checkout
of the project (an earlier layout) with the same items, for a side-by-side comparison in one
run. FerretDB's CPU is read from /proc for the process listening on the URL's port. Results are
printed and appended to bench/results/rollup_write.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "rollup_write.json"


def ferretdb_pid(port: int) -> int | None:
    """The pid of the process listening on ``port`` (``ss``), None when not found."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                         text=True, check=False).stdout
    for token in out.split("pid=")[1:]:
        return int(token.split(",", 1)[0])
    return None


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from agents.sink.aggregates import Countable
    from agents.sink.mongo import MongoStore, connect
    from agents.sink.rollups import Rollups
    from app.settings import settings

    client = connect(settings.mongo_url)
    name = f"bench_rollups_{uuid.uuid4().hex[:8]}"
    store = MongoStore(client[name])
    await store.ready()
    rollups = Rollups(store)
    port = int(settings.mongo_url.rsplit(":", 1)[1].split("/", 1)[0])
    pid = ferretdb_pid(port)
    rng = random.Random(7)
    per_flush = int(args.tps * args.flush_seconds)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    offsets = [0] * 8
    flushes = []
    try:
        for n in range(args.flushes):
            items = []
            for i in range(per_flush):
                user = rng.randrange(args.users)
                partition = user % 8
                offsets[partition] += 1
                minute = hour + timedelta(minutes=(n * per_flush + i) * 60 // (
                    per_flush * args.flushes))
                items.append(Countable(f"merchant-{rng.randrange(args.merchants):05d}",
                                       "electronics", minute, rng.randrange(100, 100_000),
                                       1 if rng.random() < 0.01 else 0, partition,
                                       offsets[partition], "EUR", rng.randrange(100, 90_000),
                                       settings.reporting_currency, f"user-{user:06d}"))
            items.sort(key=lambda it: (it.partition, it.offset))
            cpu0, t0 = cpu_seconds(pid), time.perf_counter()
            await rollups.write(items)
            seconds = time.perf_counter() - t0
            flushes.append({"seconds": round(seconds, 3),
                            "ferretdb_cpu_s": round(cpu_seconds(pid) - cpu0, 3)})
            print(f"[rollups {args.label}] flush {n + 1}/{args.flushes}: {per_flush:,} items "
                  f"in {seconds:.2f} s, FerretDB CPU {flushes[-1]['ferretdb_cpu_s']:.2f} s",
                  flush=True)
    finally:
        client.drop_database(name)
        client.close()
    steady = flushes[1:] or flushes  # the first flush creates every document
    return {"label": args.label, "tps": args.tps, "flush_seconds": args.flush_seconds,
            "users": args.users, "merchants": args.merchants, "items_per_flush": per_flush,
            "flushes": flushes,
            "median_flush_s": round(statistics.median(f["seconds"] for f in steady), 3),
            "median_ferretdb_cpu_s": round(statistics.median(f["ferretdb_cpu_s"]
                                                             for f in steady), 3),
            "ferretdb_cpu_share": round(statistics.median(f["ferretdb_cpu_s"] for f in steady)
                                        / args.flush_seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flushes", type=int, default=8)
    parser.add_argument("--flush-seconds", type=float, default=5.0)
    parser.add_argument("--tps", type=float, default=1000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--merchants", type=int, default=1000)
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the checkout whose sink code writes (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    result = asyncio.run(run(args))
    result.update(at=datetime.now(UTC).isoformat(timespec="seconds"),
                  host=f"{os.cpu_count()} cores, {platform.machine()}")
    print(f"[rollups {args.label}] median flush {result['median_flush_s']} s, FerretDB CPU "
          f"{result['median_ferretdb_cpu_s']} s per {args.flush_seconds:g} s of transactions "
          f"({result['ferretdb_cpu_share']:.0%} of a core)")
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*history, result], indent=1) + "\n")


if __name__ == "__main__":
    main()
