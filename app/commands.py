"""The app's own commands (``txn COMMAND --help``), next to Faust's (worker, agents, ...)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
from faust.cli import option

from app.main import app
from app.settings import settings

__all__: list[str] = []


@app.command()
async def topics() -> None:
    """Print the pipeline's topics and their partition counts."""
    from app import topics as declared

    for topic in (declared.transactions_topic, declared.enriched_topic,
                  declared.anomalies_topic, declared.dlq_topic):
        print(f"{topic.get_topic_name()}\tpartitions={topic.partitions}")


def parse_start(value: str | None) -> int | None:
    """``--start``: ISO-8601 (UTC when it has no offset) or epoch milliseconds -> epoch ms."""
    if value is None or value == "":
        return None
    if value.isdigit():
        return int(value)
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither ISO-8601 nor epoch milliseconds",
                                 param_hint="--start") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return round(ts.timestamp() * 1000)


def refuse(message: str) -> NoReturn:
    """End the command with a usage error: the message, no traceback, exit code 2 (a
    ``click.UsageError`` raised inside a Faust command is logged with its traceback)."""
    print(f"Error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def parse_kinds(value: str) -> tuple[str, ...]:
    """``--bad-kinds``: ``all`` or a comma-separated list of the producer's kinds."""
    from app.producer import ALL_KINDS

    if value.strip() == "all":
        return ALL_KINDS
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or not kinds:
        raise click.BadParameter(f"{value!r}: expected all, or some of {', '.join(ALL_KINDS)}",
                                 param_hint="--bad-kinds")
    return kinds


@app.command(
    option("--rate", type=float, default=None,
           help="Transactions per second (default TARGET_TPS; --dry-run: 0). 0 = as fast as "
                "possible."),
    option("--count", type=int, default=None, help="Stop after this many (default: until "
                                                   "Ctrl-C)."),
    option("--duration", type=float, default=None, help="Stop after this many seconds."),
    option("--seed", type=int, default=42, show_default=True, help="Seed of the data."),
    option("--users", type=int, default=10_000, show_default=True, help="Users in the pool."),
    option("--merchants", type=int, default=1_000, show_default=True,
           help="Merchants in the pool."),
    option("--anomaly-rate", type=float, default=0.002, show_default=True,
           help="Share of injected amount outliers."),
    option("--bad-rate", type=float, default=0.0, show_default=True,
           help="Share of deliberately invalid messages (for the DLQ)."),
    option("--bad-kinds", type=str, default="all", show_default=True,
           help="Comma-separated kinds of invalid message --bad-rate cycles through: all, or "
                "some of bad_json, missing_field, wrong_type, negative_amount, bad_currency, "
                "oversize_string, late_event, future_event."),
    option("--truth", type=click.Path(dir_okay=False, writable=True), default=None,
           help="Write one JSON line per injected anomaly to this file."),
    option("--start", type=str, default=None,
           help="Event time of sequence number 0: ISO-8601 or epoch ms (default: with --count, "
                "the run ends at the current time; else now, to the second; printed at start "
                "so a run can be replayed)."),
    option("--first-seq", type=int, default=0, show_default=True,
           help="First sequence number (replay a range)."),
    option("--time-scale", type=float, default=1.0, show_default=True,
           help="Event seconds per wall-clock second at the asked rate."),
    option("--topic", type=str, default=None,
           help="Target topic (default: TOPIC_PREFIX + transactions)."),
    option("--processes", type=int, default=1, show_default=True,
           help="Sending processes, each with its share of the partitions (kafka-python is "
                "CPU-bound near 20k/s per process)."),
    option("--dry-run", is_flag=True, default=False,
           help="Generate and serialise only; print the generation rate."),
    option("--quiet", is_flag=True, default=False, help="No progress lines on stderr."),
)
async def produce(self: Any, rate: float | None, count: int | None, duration: float | None,
                  seed: int, users: int, merchants: int, anomaly_rate: float, bad_rate: float,
                  bad_kinds: str, truth: str | None, start: str | None, first_seq: int,
                  time_scale: float, topic: str | None, processes: int, dry_run: bool,
                  quiet: bool) -> None:
    """Produce realistic transactions into Kafka (key = user_id, timestamp = event time).

    Event time never runs into the future by default: without --start, a run with --count ends
    at the current time, and a run without --count at --rate 0 or --time-scale above 1 is
    refused."""
    from app import contract, producer

    if rate is None:
        rate = 0.0 if dry_run else float(settings.target_tps)
    if (rate < 0 or (count is not None and count < 0) or time_scale <= 0 or first_seq < 0
            or processes < 1):
        refuse("--rate, --count and --first-seq must be >= 0, --time-scale > 0, "
               "--processes >= 1")
    step_us = producer.step_us_for(rate, time_scale, settings.target_tps)
    try:
        kinds = parse_kinds(bad_kinds)
        start_ms, start_how = producer.start_for(
            parse_start(start), count=count, first_seq=first_seq, step_us=step_us,
            ahead=producer.runs_ahead(rate, time_scale) and not dry_run,
            now_ms=int(time.time() * 1000))
    except click.BadParameter as exc:
        refuse(exc.format_message())
    except ValueError as exc:
        refuse(str(exc))
    factory = producer.TransactionFactory(
        seed=seed, users=users, merchants=merchants, anomaly_rate=anomaly_rate,
        bad_rate=bad_rate, start_ms=start_ms, step_us=step_us, bad_kinds=kinds)
    target = topic or settings.topic(contract.TRANSACTIONS)
    start_iso = datetime.fromtimestamp(factory.start_ms / 1000, UTC).isoformat()
    kinds_text = f" --bad-kinds {','.join(kinds)}" if bad_rate > 0 else ""
    print(f"[produce] {'dry run' if dry_run else f'topic={target}'} rate={rate:g} seed={seed} "
          f"users={users} merchants={merchants} start={start_iso} ({start_how}) "
          f"step_us={step_us} first_seq={first_seq} (replay: --seed {seed} "
          f"--start {factory.start_ms} --rate {rate:g} --time-scale {time_scale:g}"
          f"{kinds_text} --first-seq N)", file=sys.stderr, flush=True)
    progress = None if quiet else sys.stderr
    if dry_run:
        summary = producer.generate(factory, rate=rate, count=count, duration=duration,
                                    first_seq=first_seq, truth=truth, progress=progress)
    else:
        summary = producer.send(factory, target, rate=rate, count=count, duration=duration,
                                first_seq=first_seq, truth=truth, progress=progress,
                                processes=processes,
                                live=start_how == "now" and time_scale == 1 and rate > 0)
    print(summary, flush=True)
    if summary.errors:
        raise SystemExit(1)
