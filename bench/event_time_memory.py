"""Memory of the processing worker over event time: does ``txn worker`` stay flat while it
drains a backlog that spans weeks of event time?

A fresh ``TOPIC_PREFIX`` and ``DATA_DIR``; ``txn produce --rate 0`` writes ``--count``
transactions of ``--users`` users to ``transactions`` first, their event times spread evenly
over the last ``--days`` days (the last one a minute before the run starts, so none is in the
future). Then one worker starts and drains the backlog while the script samples, once a
second, the worker's resident memory (RSS, psutil, children included) and the messages it has
handled (``/metrics``: processed + dead letters + duplicates + replays).

    python bench/event_time_memory.py [--count 1500000] [--users 10000] [--days 20]
        [--write-buffer-mb 0] [--commit REV] [--label TEXT] [--no-write]

The worker runs with its own RocksDB bounds (``app/main.py``: 4 MiB memtables, 8 MiB block
cache per database); ``--write-buffer-mb`` overrides the memtable size through a
``sitecustomize`` (for a version of the worker that did not bound it: at Faust's 64 MiB a run
this size fills none, so RSS grows with every write regardless).

Reported: the RSS after warm-up (the median of the samples taken over 5% of the messages once
``DEDUPE_HORIZON_DAYS`` of event time have passed, 40-45% of a 20-day run: until then the
``txn-ids`` table grows by design, then it stays level; at least 20-25%), at the end (the
median between 95% and 100%), their ratio and
the peak. **Pass**: the RSS at the end is at most 10% above the RSS after warm-up. Results are
added to ``bench/results/<date>-event-time-memory.json`` (one entry per run of that day) and
``.md`` (rewritten from the JSON). Everything the run created (topics, consumer group, data
directory) is deleted at the end; the worker's log stays in the printed directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procs import TXN, Proc, free_port, pipeline_env, wait_http  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TPS = 1000  # TARGET_TPS of the producer run: --rate 0 paces event time by it and --time-scale
WARMUP = (0.20, 0.25)  # share of the messages: the warm-up RSS is the median in this window
END = (0.95, 1.0)  # ... and the RSS at the end the median in this one
TOLERANCE = 0.10  # pass: end RSS <= warm-up RSS * (1 + TOLERANCE)
#: The worker's counters whose sum is the messages it has handled.
HANDLED = ("txn_processed_total", "txn_dlq_total", "txn_duplicates_total", "txn_replayed_total")


class Sample(NamedTuple):
    seconds: float  # since the worker started
    done: int  # messages handled
    rss: int  # bytes


class Plan(NamedTuple):
    start_ms: int  # event time of the first transaction
    time_scale: float  # --time-scale at TARGET_TPS = TPS
    step_us: int  # event time between two transactions


# --- pure parts (tests/unit/bench/test_event_time_memory.py) ---------------------------------

def parse_metrics(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text exposition: name -> value."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].startswith("#") or "{" in line:
            continue
        try:
            out[parts[0]] = float(parts[1])
        except ValueError:
            continue
    return out


def handled(metrics: dict[str, float]) -> int:
    """Messages the worker has handled, by its counters (those it does not expose count 0)."""
    return int(sum(metrics.get(name, 0.0) for name in HANDLED))


def plan(count: int, days: float, now_ms: int, tps: int = TPS) -> Plan:
    """Event times for ``count`` transactions spread over ``days`` days, the last one a minute
    before ``now_ms``: ``--start`` and ``--time-scale`` for ``txn produce --rate 0`` at
    ``TARGET_TPS`` = ``tps``."""
    if count < 2 or days <= 0:
        raise ValueError("count must be >= 2 and days > 0")
    step_us = round(days * 86_400_000_000 / count)
    end_ms = now_ms - 60_000
    return Plan(start_ms=end_ms - (count - 1) * step_us // 1000,
                time_scale=step_us * tps / 1_000_000, step_us=step_us)


def _median_in(samples: Sequence[Sample], count: int, window: tuple[float, float]) -> int:
    lo, hi = window[0] * count, window[1] * count
    inside = [s.rss for s in samples if lo <= s.done <= hi]
    if not inside:  # sampled too sparsely: the sample nearest the window's start
        inside = [min(samples, key=lambda s: abs(s.done - lo)).rss]
    return int(statistics.median(inside))


def warmup_window(days: float, horizon_days: int | None = None) -> tuple[float, float]:
    """The warm-up window (share of the messages) of a run over ``days``: once the dedupe
    horizon of event time has passed (the txn-ids table grows by design until then, and stays
    level after), or :data:`WARMUP` if that is earlier."""
    if horizon_days is None:
        from app.settings import settings
        horizon_days = settings.dedupe_horizon_days
    start = min(0.9, max(WARMUP[0], horizon_days / days))
    return round(start, 3), round(start + WARMUP[1] - WARMUP[0], 3)


def summarize(samples: Sequence[Sample], count: int, warmup: tuple[float, float] = WARMUP,
              end: tuple[float, float] = END, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """RSS after warm-up and at the end (medians of their windows of progress), ratio, peak,
    RSS at each tenth, pass (end <= warm-up * (1 + tolerance)); ValueError if unfinished."""
    if not samples:
        raise ValueError("no samples")
    reached = max(s.done for s in samples)
    if reached < end[0] * count:
        raise ValueError(f"the worker handled {reached} of {count} messages")
    warm, last = _median_in(samples, count, warmup), _median_in(samples, count, end)
    ratio = last / warm
    curve = {f"{p}%": round(_median_in(samples, count, (p / 100, p / 100 + 0.02)) / 2**20, 1)
             for p in range(10, 101, 10)}
    return {"rss_warm_mb": round(warm / 2**20, 1), "rss_end_mb": round(last / 2**20, 1),
            "ratio": round(ratio, 4), "rss_peak_mb": round(max(s.rss for s in samples) / 2**20, 1),
            "rss_by_progress_mb": curve, "tolerance": tolerance,
            "passed": ratio <= 1 + tolerance}


def result_paths(when: datetime, results: Path = RESULTS) -> tuple[Path, Path]:
    """``<date>-event-time-memory.json`` and ``.md`` (the run's UTC date)."""
    stem = f"{when.strftime('%Y-%m-%d')}-event-time-memory"
    return results / f"{stem}.json", results / f"{stem}.md"


def render(runs: Sequence[dict[str, Any]]) -> str:
    """The Markdown report of a day's runs."""
    lines = ["# Worker memory over event time", "",
             "`make bench-memory` (`bench/event_time_memory.py`): one `txn worker` drains a "
             "backlog spread over weeks of event time; its RSS after warm-up (the median over "
             "5% of the messages once the dedupe horizon of event time has passed, *warm-up*; "
             f"earlier runs: {WARMUP[0]:.0%}-{WARMUP[1]:.0%}) against the end (median "
             f"between {END[0]:.0%} and {END[1]:.0%}). Pass: the end at most "
             f"{TOLERANCE:.0%} above the warm-up. *memtable MiB*: the size of each RocksDB "
             "memtable of the worker (*own*: the worker's own bounds, app/main.py, 4 MiB; "
             "Faust's default is 64 MiB: a run of this size never fills one, so at that size "
             "the memtables grow with every write and hide the rest).", "",
             "| run | code | messages | users | days | memtable MiB | msg/s | RSS warm-up MB "
             "| RSS end MB | end / warm-up | peak MB | result |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        s = r["summary"]
        memtable = r.get("rocksdb_write_buffer_mb", 64) or "own"
        lines.append(f"| {r['when']} {r.get('label') or ''} | {r['commit']} | {r['count']:,} | "
                     f"{r['users']:,} | {r['days']:g} | {memtable} "
                     f"| {r['rate_msgs_per_s']:,} | "
                     f"{s['rss_warm_mb']} | {s['rss_end_mb']} | {s['ratio']:.3f} | "
                     f"{s['rss_peak_mb']} | {'pass' if s['passed'] else 'FAIL'} |")
    lines += ["", "RSS (MB) at each tenth of the messages:", "",
              "| run | " + " | ".join(f"{p}%" for p in range(10, 101, 10)) + " |",
              "|---|" + "---|" * 10]
    for r in runs:
        curve = r["summary"]["rss_by_progress_mb"]
        lines.append(f"| {r['when']} {r.get('label') or ''} | "
                     + " | ".join(str(curve[f"{p}%"]) for p in range(10, 101, 10)) + " |")
    lines += ["", "Machine: " + "; ".join(sorted({r["machine"] for r in runs})) + ".", ""]
    return "\n".join(lines)


# --- the run -----------------------------------------------------------------------------------

def fetch_metrics(port: int, timeout: float = 60) -> dict[str, float]:
    with urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=timeout) as resp:
        return parse_metrics(resp.read().decode())


def rss_of(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return int(total)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True,
                          text=True).stdout.strip()


def commit() -> str:
    """The checkout's commit, ``+changes`` when the worker's code differs from it."""
    dirty = git("status", "--porcelain", "--", "app", "agents", "tables", "views")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")


def export(rev: str, into: Path) -> str:
    """The worker's code at commit ``rev``, extracted into ``into``; returns the short hash."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return git("rev-parse", "--short", rev)


def write_buffer_shim(into: Path, megabytes: float) -> Path:
    """A ``sitecustomize`` for the worker that sets the size of each RocksDB memtable (Faust's
    default: 64 MiB, up to 3 per database, one database per table and partition)."""
    into.mkdir(parents=True, exist_ok=True)
    (into / "sitecustomize.py").write_text(
        "import faust.stores.rocksdb as rocksdb\n"
        f"rocksdb.RocksDBOptions.write_buffer_size = {int(megabytes * 2**20)}\n")
    return into


def create_source(bootstrap: str, topic: str, partitions: int) -> None:
    """The backlog's topic, kept whole whatever the event times: no time retention (the
    broker's default would delete segments of old event time during the run)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from app.contract import TOPIC_CONFIG

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={
            **TOPIC_CONFIG, "retention.ms": "-1"})])
    finally:
        admin.close()


def clean_kafka(bootstrap: str, prefix: str) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        topics = [t for t in admin.list_topics() if t.startswith(prefix)]
        if topics:
            admin.delete_topics(topics)
        mine = [g["group_id"] for g in admin.list_groups()
                if str(g["group_id"]).startswith(prefix)]
        if mine:
            admin.delete_groups(mine)
    except Exception as exc:  # noqa: BLE001 - report, the run's result stands
        print(f"[memory] cleaning Kafka: {exc!r}", flush=True)
    finally:
        admin.close()


def produce(env: dict[str, str], count: int, users: int, p: Plan) -> str:
    cmd = [TXN, "produce", "--rate", "0", "--count", str(count), "--users", str(users),
           "--start", str(p.start_ms), "--time-scale", repr(p.time_scale), "--quiet"]
    print(f"[memory] {' '.join(cmd[1:])}", flush=True)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"txn produce failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def drain(proc: Proc, port: int, count: int, timeout: float) -> list[Sample]:
    assert proc.proc is not None
    pid, t0 = proc.proc.pid, time.monotonic()
    samples: list[Sample] = []
    next_print, last = t0 + 10, (t0, 0)
    while True:
        now = time.monotonic()
        if not proc.alive:
            raise RuntimeError(f"the worker exited:\n{proc.log()}")
        if now - t0 > timeout:
            raise RuntimeError(f"the worker handled {samples[-1].done if samples else 0} of "
                               f"{count} messages in {timeout:.0f} s")
        try:
            done = handled(fetch_metrics(port, timeout=20))
        except OSError as exc:  # a busy event loop answers late: try again
            print(f"[memory] /metrics: {exc!r}", flush=True)
            continue
        samples.append(Sample(time.monotonic() - t0, done, rss_of(pid)))
        if now >= next_print or done >= count:
            rate = (done - last[1]) / max(now - last[0], 1e-9)
            print(f"[memory] {now - t0:6.0f} s  {done:>9,}/{count:,} ({done / count:6.1%})  "
                  f"{rate:7,.0f}/s  rss={samples[-1].rss / 2**20:7.1f} MB", flush=True)
            next_print, last = now + 10, (now, done)
        if done >= count:
            return samples
        time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))


def run(args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from app.main import ROCKSDB_WRITE_BUFFER_BYTES
    from app.settings import settings

    bootstrap = settings.kafka_bootstrap_servers
    prefix = f"bench-mem-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="txn-bench-memory-"))
    port = free_port()
    env = pipeline_env(prefix, TARGET_TPS=TPS, TOPIC_PARTITIONS=args.partitions,
                       WEB_PORT=port, DATA_DIR=work / "data")
    p = plan(args.count, args.days, int(now.timestamp() * 1000))
    print(f"[memory] run {prefix}, logs in {work}; event time "
          f"{datetime.fromtimestamp(p.start_ms / 1000, UTC):%Y-%m-%d %H:%M} .. "
          f"{datetime.fromtimestamp((p.start_ms + (args.count - 1) * p.step_us // 1000) / 1000, UTC):%Y-%m-%d %H:%M} UTC",  # noqa: E501
          flush=True)
    code = commit()
    worker_env = dict(env)
    paths = []
    if args.commit:  # the worker from that commit's code; the producer stays this checkout's
        code = export(args.commit, work / "code")
        paths.append(str(work / "code"))
    if args.write_buffer_mb:
        paths.insert(0, str(write_buffer_shim(work / "shim", args.write_buffer_mb)))
    if paths:
        worker_env["PYTHONPATH"] = os.pathsep.join(paths)
    print(f"[memory] worker code: {code}", flush=True)
    worker = Proc("worker", [TXN, "worker", "-l", "info"], worker_env, work)
    try:
        create_source(bootstrap, f"{prefix}-transactions", args.partitions)
        t = time.monotonic()
        produced = produce(env, args.count, args.users, p)
        print(f"[memory] produced in {time.monotonic() - t:.0f} s: {produced}", flush=True)
        worker.start()
        wait_http(f"http://localhost:{port}/health", timeout=180, proc=worker)
        samples = drain(worker, port, args.count, args.timeout)
        final = fetch_metrics(port)
    finally:
        worker.stop(60)
        clean_kafka(bootstrap, prefix)
        shutil.rmtree(work / "data", ignore_errors=True)
        shutil.rmtree(work / "code", ignore_errors=True)
        shutil.rmtree(work / "shim", ignore_errors=True)
    moving = [s for s in samples if s.done > 0]
    seconds = moving[-1].seconds - moving[0].seconds if len(moving) > 1 else float("nan")
    return {"when": now.strftime("%Y-%m-%dT%H:%MZ"), "label": args.label, "commit": code,
            "count": args.count, "users": args.users, "days": args.days,
            "partitions": args.partitions, "step_us": p.step_us, "produced": produced,
            "rocksdb_write_buffer_mb": args.write_buffer_mb or (
                None if args.commit else ROCKSDB_WRITE_BUFFER_BYTES / 2**20),
            "processed": int(final.get("txn_processed_total", 0)),
            "dlq": int(final.get("txn_dlq_total", 0)),
            "seconds": round(seconds, 1),
            "rate_msgs_per_s": round((moving[-1].done - moving[0].done) / seconds)
            if seconds > 0 else 0,
            "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} "
                       f"{platform.python_version()}",
            "warmup": warmup_window(args.days),
            "summary": summarize(samples, args.count, warmup_window(args.days)),
            "samples": [[round(s.seconds, 1), s.done, s.rss] for s in samples]}


def write(result: dict[str, Any], when: datetime) -> tuple[Path, Path]:
    json_path, md_path = result_paths(when)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(json_path.read_text())["runs"] if json_path.exists() else []
    runs.append(result)
    json_path.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    md_path.write_text(render(runs))
    return json_path, md_path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_500_000, help="transactions (backlog)")
    parser.add_argument("--users", type=int, default=10_000, help="users in the producer's pool")
    parser.add_argument("--days", type=float, default=20, help="days of event time they span")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds the worker may take to drain the backlog")
    parser.add_argument("--commit", default="",
                        help="run the worker from this commit's code (git archive), e.g. to "
                             "measure an earlier version; default: this checkout")
    parser.add_argument("--write-buffer-mb", type=float, default=0,
                        help="override the RocksDB memtable size of the worker's databases, "
                             "MiB (0: the worker's own, 4 MiB; versions before it used Faust's "
                             "64 MiB, which a run of this size never fills)")
    parser.add_argument("--label", default="", help="a note stored with the run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.count < 1000 or args.users < 1 or args.days <= 0 or args.partitions < 1:
        parser.error("--count >= 1000, --users >= 1, --days > 0, --partitions >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (and SIGINT, ignored in a background job) end the run through its clean-up.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _: sys.exit(128 + signum))
    now = datetime.now(UTC)
    result = run(args, now)
    s = result["summary"]
    print(f"[memory] RSS after warm-up {s['rss_warm_mb']} MB, at the end {s['rss_end_mb']} MB "
          f"(x{s['ratio']:.3f}, peak {s['rss_peak_mb']} MB): "
          f"{'PASS' if s['passed'] else 'FAIL'} (end <= warm-up + {s['tolerance']:.0%})",
          flush=True)
    if not args.no_write:
        for path in write(result, now):
            print(f"[memory] wrote {path.relative_to(ROOT)}", flush=True)
    return 0 if s["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
