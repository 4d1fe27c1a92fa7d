"""The pipeline's four topics, declared once (names from :mod:`app.contract`, partitions from
``TOPIC_PARTITIONS``). Every topic is keyed by ``user_id``.

``transactions`` and ``transactions_dlq`` carry raw bytes: the worker validates each message
itself, so an invalid one can go to the DLQ exactly as it arrived.
"""

from __future__ import annotations

from typing import Any

from app import contract
from app.main import app
from app.models import Anomaly, EnrichedTransaction
from app.settings import settings

__all__ = ["anomalies_topic", "dlq_topic", "enriched_topic", "transactions_topic"]

_common: dict[str, Any] = dict(partitions=settings.topic_partitions, key_type=str,
                              key_serializer="raw")

# internal=True: the worker creates it (TOPIC_PARTITIONS partitions) before subscribing to it.
transactions_topic = app.topic(
    settings.topic(contract.TRANSACTIONS), value_type=bytes, value_serializer="raw",
    internal=True, **_common
)
enriched_topic = app.topic(
    settings.topic(contract.ENRICHED), value_type=EnrichedTransaction, **_common
)
anomalies_topic = app.topic(settings.topic(contract.ANOMALIES), value_type=Anomaly, **_common)
# Value: the original bytes; headers: dlq.reason, dlq.topic, dlq.partition, dlq.offset.
dlq_topic = app.topic(
    settings.topic(contract.DLQ), value_type=bytes, value_serializer="raw", **_common
)
