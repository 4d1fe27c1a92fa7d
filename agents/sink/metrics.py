"""The sink's own metrics (Prometheus text, its own :class:`CollectorRegistry`) and health,
served by a tiny HTTP server on ``SINK_METRICS_PORT`` (bound to ``BIND_HOST``) in a daemon
thread: the sink runs no Faust web server.

- ``GET /metrics``: documents written per collection (rollup rows included), duplicates, dead
  letters by kind, batches and their write durations, rollup writes, the consumer group's lag;
- ``GET /health`` (liveness): 200 while the event loop runs (:func:`beat` at most
  :data:`LIVE_SECONDS` ago; a database outage does not make the sink unhealthy: it waits);
- ``GET /ready`` (readiness): 200 once the collections exist and while the loop runs.

The counters are updated in the event loop; the server thread only reads them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from agents.sink.mongo import InsertResult

__all__ = ["DEAD_LETTER_KINDS", "EVENT_LAG_WINDOW", "LIVE_SECONDS", "REGISTRY", "batch_written",
           "beat", "event_lag",
           "health", "ready", "rollup_written", "serve", "set_lag"]

log = logging.getLogger("app.sink")

REGISTRY = CollectorRegistry(auto_describe=True)

#: The kinds of dead letters (a bounded label set): the message could not become a document,
#: the client could not encode the document (BSON), or the database refused it.
DEAD_LETTER_KINDS = ("conversion", "encoding", "rejected")
#: ``/health`` fails when the event loop has not run for this long.
LIVE_SECONDS = 30.0

WRITTEN = Counter("sink_documents_written", "Documents inserted (transactions, anomalies, dlq) "
                  "or aggregate documents updated (merchant_days, merchant_hours, volume_hours, "
                  "currency_days, currency_hours, users_by_day), per collection.",
                  ["collection"], registry=REGISTRY)
DUPLICATES = Counter("sink_duplicates", "Documents already stored (a redelivery or a replay), "
                     "per collection.", ["collection"], registry=REGISTRY)
DEAD_LETTERS = Counter("sink_dead_letters", "Messages the sink wrote to the dlq collection "
                       "instead of storing them, by kind: " + ", ".join(DEAD_LETTER_KINDS) + ".",
                       ["reason"], registry=REGISTRY)
BATCHES = Counter("sink_batches", "Batches written, per collection.", ["collection"],
                  registry=REGISTRY)
BATCH_SECONDS = Histogram("sink_batch_write_seconds", "Duration of a batch's insert (retries "
                          "through an outage included), per collection.", ["collection"],
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                          registry=REGISTRY)
ROLLUP_SECONDS = Histogram("sink_rollup_write_seconds", "Duration of a rollup write.",
                           buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                           registry=REGISTRY)
LAG = Gauge("sink_consumer_lag", "Messages of the assigned partitions not yet committed by the "
            "sink's consumer group, per topic.", ["topic"], registry=REGISTRY)

#: The window of ``sink_event_lag_seconds``: longer than a scrape interval, so a scraper every
#: few seconds sees every batch's lag.
EVENT_LAG_WINDOW = 15.0
EVENT_LAG = Gauge("sink_event_lag_seconds", "Worst lag, from the oldest event of a batch to "
                  "its durable write, of the batches written in the last "
                  f"{EVENT_LAG_WINDOW:g} s, per collection (0: none).", ["collection"],
                  registry=REGISTRY)
_event_lags: dict[str, deque[tuple[float, float]]] = {}
_event_lags_lock = threading.Lock()  # written by the event loop, read by /metrics' thread


def _worst_lag(collection: str) -> float:
    with _event_lags_lock:
        recent = _event_lags.get(collection, deque())
        now = time.monotonic()
        while recent and recent[0][0] < now - EVENT_LAG_WINDOW:
            recent.popleft()
        return max((lag for _, lag in recent), default=0.0)


for _kind in DEAD_LETTER_KINDS:
    DEAD_LETTERS.labels(_kind)  # every kind is exported, 0 until it happens


class _State:
    beat: float = time.monotonic()
    ready: bool = False


def beat() -> None:
    """The event loop runs (called every second by a sink task)."""
    _State.beat = time.monotonic()


def ready() -> None:
    """The collections exist: the sink can write."""
    _State.ready = True


def health() -> tuple[bool, bool]:
    """(alive, ready)."""
    alive = time.monotonic() - _State.beat <= LIVE_SECONDS
    return alive, alive and _State.ready


def batch_written(collection: str, result: InsertResult, seconds: float) -> None:
    WRITTEN.labels(collection).inc(result.inserted)
    if result.duplicates:
        DUPLICATES.labels(collection).inc(result.duplicates)
    for kind, n in result.dead_letters.items():
        DEAD_LETTERS.labels(kind).inc(n)
    BATCHES.labels(collection).inc()
    BATCH_SECONDS.labels(collection).observe(seconds)


def event_lag(collection: str, seconds: float) -> None:
    """A batch of ``collection`` was written ``seconds`` after its oldest event."""
    with _event_lags_lock:
        if collection not in _event_lags:
            _event_lags[collection] = deque()
            EVENT_LAG.labels(collection).set_function(lambda: _worst_lag(collection))
        _event_lags[collection].append((time.monotonic(), seconds))


def rollup_written(rows: Mapping[str, int], seconds: float) -> None:
    """A rollup write: rows written per collection, and how long it took."""
    for collection, n in rows.items():
        WRITTEN.labels(collection).inc(n)
    ROLLUP_SECONDS.observe(seconds)


def set_lag(lag: Mapping[str, int]) -> None:
    for topic, n in lag.items():
        LAG.labels(topic).set(n)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            return
        alive, is_ready = health()
        if path in ("/health", "/ready"):
            ok = alive if path == "/health" else is_ready
            body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "alive": alive,
                                    "ready": is_ready}
            self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
            return
        self._send(404, b"not found: /metrics, /health, /ready\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - probes: no log
        pass


def serve(host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics``, ``/health`` and ``/ready`` on ``host:port`` in a daemon thread."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sink-metrics", daemon=True).start()
    return server
