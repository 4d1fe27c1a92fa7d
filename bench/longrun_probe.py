"""The long-run benchmark's sampler (``bench/longrun.py``): while the pipeline runs, an open-loop
HTTP load on the API's endpoints, and every few seconds the server-side latency histograms, the
sink's lag, the dbt builds and the processes' RSS and CPU. Raw samples only; the per-minute
arithmetic is ``longrun_stats.py``'s.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import psutil

__all__ = ["ENDPOINTS", "Samples", "group_of", "parse_histogram", "sample"]

#: The endpoints the load cycles through (``trends`` picks a random seeded user each time).
ENDPOINTS = ("health", "trends", "anomalies", "anomalies_next", "top_1h", "top_24h", "top_7d",
             "volume", "summary")
PATHS = {"health": "/health", "anomalies": "/anomalies?limit=50",
         "top_1h": "/merchants/top?window=1h", "top_24h": "/merchants/top?window=24h",
         "top_7d": "/merchants/top?window=7d", "volume": "/volume", "summary": "/summary"}
DBT_LINE = re.compile(r"\[dbt_loop\] dbt build (ok|FAILED \(\d+\)) in ([0-9.]+) s")
BUCKET = re.compile(r'api_request_duration_seconds_bucket\{le="([^"]+)",route="([^"]+)"\} '
                    r"([0-9.e+]+)")
BUCKET_ALT = re.compile(r'api_request_duration_seconds_bucket\{route="([^"]+)",le="([^"]+)"\} '
                        r"([0-9.e+]+)")
ROUTE_OF = {"/health": "health", "/users/{user_id:path}/trends": "trends",
            "/anomalies": "anomalies", "/merchants/top": "merchants_top", "/volume": "volume",
            "/summary": "summary"}


@dataclass
class Samples:
    """Raw samples, each stamped with seconds since the measured start."""

    requests: list[tuple[float, str, float, int]] = field(default_factory=list)
    histograms: list[tuple[float, dict[str, list[tuple[float, float]]]]] = \
        field(default_factory=list)
    sink_lag: list[tuple[float, float]] = field(default_factory=list)
    sink_consumer_lag: list[tuple[float, float]] = field(default_factory=list)
    rollup_seconds: list[tuple[float, float, float]] = field(default_factory=list)
    dbt: list[tuple[float, float, bool]] = field(default_factory=list)
    processes: list[tuple[float, str, float, float]] = field(default_factory=list)


def parse_histogram(text: str) -> dict[str, list[tuple[float, float]]]:
    """The API's ``api_request_duration_seconds`` buckets per route: ``(le, count)``."""
    out: dict[str, list[tuple[float, float]]] = {}
    for line in text.splitlines():
        m = BUCKET.match(line)
        if m:
            le, route, count = m.groups()
        else:
            alt = BUCKET_ALT.match(line)
            if not alt:
                continue
            route, le, count = alt.groups()
        out.setdefault(route, []).append((float(le), float(count)))
    return {r: sorted(b) for r, b in out.items()}


def group_of(cmdline: list[str]) -> str | None:
    """Which part of the pipeline a process is, from its command line."""
    text = " ".join(cmdline)
    for mark, name in (("kafka.Kafka", "kafka"), ("ferretdb", "ferretdb"),
                       ("worker -l", "worker"), ("sink -l", "sink"), ("produce", "producer"),
                       ("uvicorn", "api"), ("panel", "dashboard"), ("dbt", "dbt"),
                       ("prune", "prune")):
        if mark in text:
            return name
    return None


class _Load:
    def __init__(self, session: aiohttp.ClientSession, api: str, users: list[str],
                 samples: Samples, clock: Callable[[], float]) -> None:
        self.session, self.api, self.users, self.samples = session, api, users, samples
        self.clock = clock
        self.cursor: str | None = None
        self.rnd = random.Random(7)

    async def one(self, endpoint: str) -> None:
        if endpoint == "trends":
            path = f"/users/{self.rnd.choice(self.users)}/trends"
        elif endpoint == "anomalies_next":
            if self.cursor is None:
                return
            path = "/anomalies?" + urllib.parse.urlencode({"limit": 50, "cursor": self.cursor})
        else:
            path = PATHS[endpoint]
        started = time.perf_counter()
        status = 0
        try:
            async with self.session.get(self.api + path) as resp:
                status = resp.status
                body = await resp.read()
            if endpoint == "anomalies" and status == 200:
                self.cursor = orjson.loads(body).get("next_cursor") or self.cursor
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
            status = 0
        self.samples.requests.append((self.clock(), endpoint,
                                      (time.perf_counter() - started) * 1000, status))


async def _load(api: str, users: list[str], rps: float, samples: Samples,
                clock: Callable[[], float], until: float) -> None:
    """The open-loop load: a request every 1/rps s, whatever the answers' latency. aiohttp,
    not httpx: the client costs less CPU, and it shares the machine with what it measures."""
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=10.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        load = _Load(session, api, users, samples, clock)
        tasks: set[asyncio.Task[None]] = set()
        start, n = time.monotonic(), 0
        while clock() < until:
            task = asyncio.ensure_future(load.one(ENDPOINTS[n % len(ENDPOINTS)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
            await asyncio.sleep(max(0.0, start + n / rps - time.monotonic()))
        if tasks:
            await asyncio.wait(tasks, timeout=15)


async def _http_text(client: httpx.AsyncClient, url: str) -> str | None:
    try:
        resp = await client.get(url, timeout=5.0)
        return resp.text if resp.status_code == 200 else None
    except httpx.HTTPError:
        return None


def _metric(text: str, name: str) -> float | None:
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            rest = line[len(name):]
            if rest[:1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
                found = True
    return total if found else None


async def _watch(ctx: dict[str, Any], samples: Samples, clock: Callable[[], float],
                 until: float) -> None:
    """Every few seconds: API histograms, the sink's lag, dbt builds, processes."""
    dbt_log, roots = Path(ctx["dbt_log"]), ctx["roots"]
    dbt_at = dbt_log.stat().st_size if dbt_log.exists() else 0
    procs: dict[int, psutil.Process] = {}
    async with httpx.AsyncClient() as client:
        while clock() < until:
            t = clock()
            text = await _http_text(client, f"{ctx['api']}/metrics")
            if text:
                samples.histograms.append((t, parse_histogram(text)))
            sink_text = await _http_text(client, f"{ctx['sink_metrics']}/metrics")
            if sink_text:
                lag = _metric(sink_text, "sink_consumer_lag")
                if lag is not None:
                    samples.sink_consumer_lag.append((t, lag))
                s, c = _metric(sink_text, "sink_rollup_write_seconds_sum"), \
                    _metric(sink_text, "sink_rollup_write_seconds_count")
                if s is not None and c is not None:
                    samples.rollup_seconds.append((t, s, c))
                # The worst batch of the sink's last 15 s (read every 5 s: every batch seen).
                # Not from sink_batches: a filtered read scans that growing collection.
                worst = _metric(sink_text, 'sink_event_lag_seconds{collection="transactions"}')
                if worst is not None:
                    samples.sink_lag.append((t, worst))
            if dbt_log.exists():
                with dbt_log.open("rb") as fh:
                    fh.seek(dbt_at)
                    chunk = fh.read().decode(errors="replace")
                    dbt_at = fh.tell()
                for m in DBT_LINE.finditer(chunk):
                    samples.dbt.append((t, float(m.group(2)), m.group(1) == "ok"))
            _processes(roots(), procs, samples, t)
            await asyncio.sleep(max(0.0, 5.0 - (clock() - t)))


def _processes(pids: list[int], procs: dict[int, psutil.Process], samples: Samples,
               t: float) -> None:
    """RSS (MB) and CPU (% of a core since the last sample) per part, children included."""
    totals: dict[str, list[float]] = {}
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in family:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            proc = procs.setdefault(proc.pid, proc)
            try:
                name = group_of(proc.cmdline())
                if name is None:
                    continue
                cpu = proc.cpu_percent(None)
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            row = totals.setdefault(name, [0.0, 0.0])
            row[0] += rss
            row[1] += cpu
    for name, (rss, cpu) in totals.items():
        samples.processes.append((t, name, rss, cpu))


async def sample(ctx: dict[str, Any], users: list[str], rps: float, seconds: float,
                 samples: Samples, alive: Callable[[], bool]) -> None:
    """Sample for ``seconds`` (stops early when ``alive()`` turns false)."""
    start = time.monotonic()

    def clock() -> float:
        return time.monotonic() - start

    until = seconds
    load = asyncio.ensure_future(_load(ctx["api"], users, rps, samples, clock, until))
    watch = asyncio.ensure_future(_watch(ctx, samples, clock, until))
    while not load.done() and alive():
        await asyncio.sleep(1.0)
    for task in (load, watch):
        task.cancel()
    await asyncio.gather(load, watch, return_exceptions=True)
