"""Web views of the processing worker (Faust's web server, ``WEB_HOST:WEB_PORT``):

- ``GET /users/{user_id}/stats``: a user's live statistics from the tables, in the reporting
  currency, with the spend of the last seven UTC days up to today. Any worker answers
  for any user: ``app.table_route`` forwards the request to the worker that owns the user's
  partition. Unknown user: 404 with a JSON body.
- ``GET /health``: 200 ``{"status": "ok", ...}`` once the worker runs.
- ``GET /metrics``: Prometheus text format (prometheus_client, the worker's own registry):
  processed, replays, duplicates, enriched, anomalies, DLQ (also by kind of reason), errors,
  batches, batch durations, consumer lag.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents import processor
from agents.counters import DLQ_KINDS, Counters
from app.main import app
from app.rates import REPORTING_CURRENCY
from app.topics import transactions_topic
from tables import user_tables, windows
from tables.records import UserState

__all__ = ["WorkerCollector", "build_registry", "health", "metrics", "registry", "user_stats",
           "user_stats_body"]


def user_stats_body(user_id: str, now: float | None = None) -> dict[str, Any] | None:
    """The stats of ``user_id`` held by this worker, or None if it has none."""
    raw = user_tables.user_state.get(user_id)
    if raw is None:
        return None
    user = UserState.decode(raw)
    today = windows.day_of(time.time() if now is None else now)
    days = [(day, user.day(day)) for day in range(today - 6, today + 1)]
    stats = user.stats
    return {
        "user_id": user_id,
        "currency": REPORTING_CURRENCY,
        "count": stats.count,
        "mean": stats.mean,
        "std": stats.std,
        "last_z": user.last_z,
        "today_spend": days[-1][1].amount,
        "last_7_days": [{"day": time.strftime("%Y-%m-%d",
                                              time.gmtime(day * windows.DAY_SECONDS)),
                         "spend": spend.amount, "count": spend.count}
                        for day, spend in days],
        "served_by": str(app.conf.canonical_url).rstrip("/"),
    }


@app.page("/users/{user_id}/stats")
@app.table_route(table=user_tables.user_state, match_info="user_id")
async def user_stats(self: View, request: Request, user_id: str) -> Response:
    body = user_stats_body(user_id)
    if body is None:
        return self.json({"error": "unknown user", "user_id": user_id}, status=404)
    return self.json(body)


@app.page("/health")
async def health(self: View, request: Request) -> Response:
    assigned = sorted(tp.partition for tp in app.consumer.assignment()
                      if tp.topic == transactions_topic.get_topic_name())
    return self.json({"status": "ok", "app": app.conf.id, "partitions": assigned,
                      "processed": processor.counters.processed})


def _lag() -> dict[int, int]:
    """Messages of ``transactions`` not yet committed, per assigned partition."""
    topic = transactions_topic.get_topic_name()
    committed = app.monitor.tp_committed_offsets or {}
    lag = {}
    for tp in app.consumer.assignment():
        if tp.topic != topic:
            continue
        try:
            end = app.consumer.highwater(tp)
        except Exception:  # not fetched yet
            continue
        if end is None:
            continue
        lag[tp.partition] = max(0, end - committed.get(tp, 0))
    return lag


#: Name (without ``_total``), help and :class:`~agents.counters.Counters` field of each
#: unlabelled counter.
COUNTERS = (
    ("txn_processed", "Valid transactions folded into the statistics.", "processed"),
    ("txn_replayed", "Redelivered transactions the tables already held (skipped).", "replayed"),
    ("txn_duplicates", "Valid transactions whose txn_id was already folded within "
     "DEDUPE_HORIZON_DAYS (not folded or emitted again).", "duplicates"),
    ("txn_enriched", "Messages published to transactions_enriched.", "enriched"),
    ("txn_anomalies", "Messages published to anomalies.", "anomalies"),
    ("txn_dlq", "Messages sent to transactions_dlq (all reasons).", "dlq"),
    ("txn_errors", "Unexpected errors in a batch; each ends the process without acking the "
     "batch (crash-only), so a running worker reports 0.", "errors"),
    ("txn_batches", "Batches processed.", "batches"),
)


class WorkerCollector(Collector):
    """The worker's metrics, read when they are collected: the agent's
    :class:`~agents.counters.Counters` (``counters()``: plain integers, added to per message),
    its batch-duration histogram and the consumer lag (``lag()``)."""

    def __init__(self, counters: Callable[[], Counters],
                 lag: Callable[[], dict[int, int]]) -> None:
        self.counters, self.lag = counters, lag

    def collect(self) -> Iterator[Metric]:
        c = self.counters()
        for name, help_, field in COUNTERS:
            yield CounterMetricFamily(name, help_, value=getattr(c, field))
        by_kind = CounterMetricFamily("txn_dlq_by_reason", "Messages sent to transactions_dlq, "
                                      "by kind of reason (agents.counters.DLQ_KINDS).",
                                      labels=["reason"])
        for kind in DLQ_KINDS:
            by_kind.add_metric([kind], c.dlq_kinds.get(kind, 0))
        yield by_kind
        yield from c.batch_seconds.collect()
        lag = self.lag()
        per_partition = GaugeMetricFamily(
            "txn_consumer_lag", "Messages of transactions not yet committed, per assigned "
            "partition.", labels=["partition"])
        for partition, n in sorted(lag.items()):
            per_partition.add_metric([str(partition)], n)
        yield per_partition
        yield GaugeMetricFamily("txn_consumer_lag_total", "Sum of txn_consumer_lag.",
                                value=sum(lag.values()))


def build_registry(counters: Callable[[], Counters] = lambda: processor.counters,
                   lag: Callable[[], dict[int, int]] = _lag) -> CollectorRegistry:
    """A registry of the worker's metrics (its own, not prometheus_client's global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(counters, lag))
    return registry


registry = build_registry()


@app.page("/metrics")
async def metrics(self: View, request: Request) -> Response:
    # aiohttp refuses a charset in content_type=; the header may carry it
    return self.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
