"""Web views of the processing worker (Faust's web server, ``WEB_HOST:WEB_PORT``):

- ``GET /users/{user_id}/stats``: a user's live statistics from the tables. Any worker answers
  for any user: ``app.table_route`` forwards the request to the worker that owns the user's
  partition. Unknown user: 404 with a JSON body.
- ``GET /health``: 200 ``{"status": "ok", ...}`` once the worker runs.
- ``GET /metrics``: Prometheus text format: processed, anomalies, DLQ, errors, consumer lag.
"""

from __future__ import annotations

import time
from typing import Any

from faust.web import Request, Response, View

from agents.processor import counters
from app.main import app
from app.topics import transactions_topic
from tables import user_tables
from tables.records import UserState

__all__ = ["health", "metrics", "user_stats", "user_stats_body"]


def user_stats_body(user_id: str, now: float | None = None) -> dict[str, Any] | None:
    """The stats of ``user_id`` held by this worker, or None if it has none."""
    raw = user_tables.user_stats.get(user_id)
    if raw is None:
        return None
    user = UserState.decode(raw)
    days = user_tables.recent_days(user_id, time.time() if now is None else now)
    stats = user.stats
    return {
        "user_id": user_id,
        "count": stats.count,
        "mean": stats.mean,
        "std": stats.std,
        "last_z": user.last_z,
        "today_spend": days[-1][1].amount,
        "last_7_days": [{"day": time.strftime("%Y-%m-%d", time.gmtime(start)),
                         "spend": spend.amount, "count": spend.count}
                        for start, spend in days],
        "served_by": str(app.conf.canonical_url).rstrip("/"),
    }


@app.page("/users/{user_id}/stats")
@app.table_route(table=user_tables.user_stats, match_info="user_id")
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
                      "processed": counters.processed})


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


def prometheus_text() -> str:
    c = counters
    lines = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    metric("txn_processed_total", "counter", "Valid transactions folded into the statistics.",
           [("", c.processed)])
    metric("txn_replayed_total", "counter",
           "Redelivered transactions the tables already held (skipped).", [("", c.replayed)])
    metric("txn_duplicates_total", "counter",
           "Valid transactions whose txn_id was already folded within DEDUPE_HORIZON_DAYS "
           "(not folded or emitted again).", [("", c.duplicates)])
    metric("txn_enriched_total", "counter", "Messages published to transactions_enriched.",
           [("", c.enriched)])
    metric("txn_anomalies_total", "counter", "Messages published to anomalies.",
           [("", c.anomalies)])
    metric("txn_dlq_total", "counter", "Messages sent to transactions_dlq.", [("", c.dlq)])
    metric("txn_errors_total", "counter", "Unexpected processing errors.", [("", c.errors)])
    metric("txn_batches_total", "counter", "Batches processed.", [("", c.batches)])
    lag = _lag()
    metric("txn_consumer_lag", "gauge",
           "Messages of transactions not yet committed, per assigned partition.",
           [(f'{{partition="{p}"}}', n) for p, n in sorted(lag.items())])
    metric("txn_consumer_lag_total", "gauge", "Sum of txn_consumer_lag.",
           [("", sum(lag.values()))])
    return "\n".join(lines) + "\n"


@app.page("/metrics")
async def metrics(self: View, request: Request) -> Response:
    return self.text(prometheus_text(), content_type="text/plain; version=0.0.4")
