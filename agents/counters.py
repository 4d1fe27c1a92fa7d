"""What the processing worker counts: plain integers the agent adds to per message
(:class:`Counters`, ``agents.processor.counters``), read by ``GET /metrics``
(:mod:`views.worker`) when it is asked, and the batch durations (a prometheus_client histogram,
observed once per batch)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Histogram

from app.contract import FIELDS

__all__ = ["BATCH_BUCKETS", "DLQ_KINDS", "Counters", "dlq_kind"]

#: The kinds of dead-letter reasons, the label of ``txn_dlq_by_reason_total`` (a fixed list:
#: the reasons themselves quote values, so there is no bound on how many there are).
DLQ_KINDS = ("not_json", "not_object", "missing_field", "unexpected_field", "key_not_user_id",
             "kafka_timestamp", "late_event", "future_event",
             *(f"bad_{name}" for name in FIELDS), "other")
_DLQ_PREFIXES = {"not valid JSON": "not_json", "expected a JSON object": "not_object",
                 "missing field": "missing_field", "unexpected field": "unexpected_field",
                 "message key is not": "key_not_user_id", "Kafka timestamp": "kafka_timestamp",
                 "late event": "late_event", "future event": "future_event"}


def dlq_kind(reason: str) -> str:
    """The kind of a dead letter's reason (:data:`DLQ_KINDS`): the rule it broke, or the field
    whose rule it broke (every reason of :func:`app.contract.validate` about one field starts
    with the field's name)."""
    for prefix, kind in _DLQ_PREFIXES.items():
        if reason.startswith(prefix):
            return kind
    name = reason.split(" ", 1)[0].split(".", 1)[0]
    return f"bad_{name}" if name in FIELDS else "other"


#: Batch durations: from the start of a batch to its changelog's acknowledgement (when its
#: messages may be acked). Publishing a batch takes a few ms; a backlog's 5,000 take longer.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _batch_histogram() -> Histogram:
    return Histogram("txn_batch_duration_seconds",
                     "Seconds from the start of a batch to its changelog's acknowledgement.",
                     buckets=BATCH_BUCKETS, registry=None)  # views/worker.py exposes it


@dataclass
class Counters:
    """What this worker did since it started."""

    processed: int = 0  # valid transactions folded into the statistics
    replayed: int = 0  # redelivered messages the tables already held (after a crash)
    duplicates: int = 0  # valid transactions whose txn_id was already folded (not emitted)
    enriched: int = 0
    anomalies: int = 0
    dlq: int = 0
    # Unexpected errors in a batch: the first one ends the process (crash-only, nothing of the
    # batch acked), so a running worker shows 0; the restarts show elsewhere.
    errors: int = 0
    batches: int = 0
    dlq_kinds: dict[str, int] = field(default_factory=dict)  # dead letters by dlq_kind
    batch_seconds: Histogram = field(default_factory=_batch_histogram)
