"""Benchmark of the producer (issue 3): generation alone, sending into the local broker at full
speed, and how well the rate control holds 1k/s and 10k/s.

    .venv/bin/python bench/bench_producer.py            # everything (about 2 minutes)
    .venv/bin/python bench/bench_producer.py --quick    # shorter runs
    .venv/bin/python bench/bench_producer.py --profile  # also pyinstrument profiles

Prints a Markdown table (pasted into docs/producer.md) and writes bench/results/producer.json
(and bench/results/producer-profile-*.txt with --profile). Needs the local Kafka for the
sending parts (`make services`); the machine's load is recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.producer import TransactionFactory, generate, send  # noqa: E402
from app.settings import settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def cpu_seconds() -> float:
    """CPU time of this process and of its finished helper processes."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def measured(name: str, fn, **info) -> dict:
    load_before = os.getloadavg()[0]
    cpu0, t0 = cpu_seconds(), time.monotonic()
    summary = fn()
    wall, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    row = dict(name=name, sent=summary.sent, errors=summary.errors,
               seconds=round(summary.seconds, 3), rate=round(summary.rate, 1),
               cpu_per_wall=round(cpu / wall, 2),
               # What one free core would do: transactions per CPU-second (all threads and
               # helper processes), the number that does not depend on the machine's load.
               per_cpu_second=round(summary.sent / cpu) if cpu > 0 else None,
               load_before=round(load_before, 2),
               load_after=round(os.getloadavg()[0], 2), **info)
    print(f"  {name}: {summary}  cpu/wall={row['cpu_per_wall']}", flush=True)
    return row


def delete_topics(topics: list[str]) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        existing = set(admin.list_topics())
        if gone := [t for t in topics if t in existing]:
            admin.delete_topics(gone)
    finally:
        admin.close()


def profile(name: str, fn) -> None:
    from pyinstrument import Profiler

    profiler = Profiler()
    profiler.start()
    fn()
    profiler.stop()
    path = RESULTS / f"producer-profile-{name}.txt"
    path.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    print(f"  profile written to {path.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--skip-kafka", action="store_true", help="generation only")
    parser.add_argument("--profile", action="store_true", help="pyinstrument profiles")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    scale = 0.2 if args.quick else 1.0
    token = uuid.uuid4().hex[:8]
    topics: list[str] = []
    rows: list[dict] = []

    t0 = time.monotonic()
    factory = TransactionFactory(seed=42)
    pools = time.monotonic() - t0
    print(f"pools (10k users, 1k merchants, {len(factory.cities)} cities): {pools:.2f} s")

    print("generation alone (--dry-run, one thread):")
    count = int(1_000_000 * scale)
    rows.append(measured("generate", lambda: generate(factory, count=count), goal=100_000))

    for rate in (1_000, 10_000):
        secs = 10 * scale
        print(f"rate control without Kafka (--dry-run): {rate}/s for {secs:.0f} s:")
        row = measured(f"dry_rate{rate}", lambda r=rate, s=secs: generate(
            factory, rate=r, duration=s), asked=rate)
        row["achieved_over_run"] = round(row["sent"] / secs, 1)
        row["deviation_pct"] = round(100 * (row["sent"] / secs / rate - 1), 2)
        rows.append(row)

    if not args.skip_kafka:
        full = 30 * scale
        print(f"into Kafka at --rate 0 for {full:.0f} s:")
        topics.append(f"bench-{token}-full")
        rows.append(measured("kafka_rate0", lambda: send(factory, topics[-1], rate=0,
                                                           duration=full), goal=50_000))
        print(f"into Kafka at --rate 0 --processes 2 for {full:.0f} s:")
        topics.append(f"bench-{token}-full2")
        rows.append(measured("kafka_rate0_2proc", lambda: send(
            factory, topics[-1], rate=0, duration=full, processes=2), goal=50_000))
        for rate in (1_000, 10_000):
            secs = 10 * scale
            print(f"rate control: {rate}/s for {secs:.0f} s:")
            topics.append(f"bench-{token}-r{rate}")
            row = measured(f"kafka_rate{rate}", lambda r=rate, s=secs: send(
                factory, topics[-1], rate=r, duration=s), asked=rate)
            row["achieved_over_run"] = round(row["sent"] / secs, 1)
            row["deviation_pct"] = round(100 * (row["sent"] / secs / rate - 1), 2)
            print(f"    achieved {row['achieved_over_run']}/s ({row['deviation_pct']:+.2f}%)")
            rows.append(row)

    if args.profile:
        print("profiling:")
        profile("generate", lambda: generate(factory, count=int(300_000 * scale)))
        if not args.skip_kafka:
            topics.append(f"bench-{token}-profile")
            profile("send", lambda: send(factory, topics[-1], rate=0, duration=8 * scale))

    if topics:
        delete_topics(topics)
    result = dict(
        when=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=dict(cpus=os.cpu_count(), python=platform.python_version(),
                     platform=platform.platform()),
        note="shared 2-core machine: other engineers' tests and services run at the same time",
        pools_seconds=round(pools, 2), quick=args.quick, runs=rows)
    out = RESULTS / "producer.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}\n")
    print("| run | transactions | seconds | rate (tx/s) | goal | errors | cpu/wall "
          "| tx per CPU-second | load 1m |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        goal = row.get("goal") or f"{row['asked']} ±2% ({row['deviation_pct']:+.2f}%)"
        print(f"| {row['name']} | {row['sent']} | {row['seconds']} | {row['rate']:.0f} | {goal} "
              f"| {row['errors']} | {row['cpu_per_wall']} | {row['per_cpu_second']} "
              f"| {row['load_before']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
