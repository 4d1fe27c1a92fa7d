"""The pipeline's four topics, declared once (names from :mod:`app.contract`, partitions from
``TOPIC_PARTITIONS``), as each app reads them. Every topic is keyed by ``user_id``.

``transactions`` and ``transactions_dlq`` carry raw bytes: the worker validates each message
itself, so an invalid one can go to the DLQ exactly as it arrived. The sink reads its three
topics as bytes too and parses them itself, so a message it cannot store is kept as it came
in a dead-letter record. It reads their keys as bytes too (``key_type=bytes``): anyone can
write any key, and a key Faust cannot decode would crash the reading agent, with the message
acked; the sink decodes none.
"""

from __future__ import annotations

from typing import Any

from app import contract
from app.main import app, sink_app
from app.settings import settings

__all__ = ["DLQ_CONFIG", "anomalies_raw", "anomalies_topic", "dlq_raw", "dlq_topic", "enriched_raw",
           "enriched_topic", "transactions_topic"]

_common: dict[str, Any] = dict(partitions=settings.topic_partitions, key_type=str,
                              key_serializer="raw")

# internal=True: the worker creates it (TOPIC_PARTITIONS partitions) before subscribing to it.
transactions_topic = app.topic(
    settings.topic(contract.TRANSACTIONS), value_type=bytes, value_serializer="raw",
    internal=True, **_common
)
# The worker serialises its outputs itself (orjson, the contract's field order).
enriched_topic = app.topic(
    settings.topic(contract.ENRICHED), value_type=bytes, value_serializer="raw", **_common
)
anomalies_topic = app.topic(
    settings.topic(contract.ANOMALIES), value_type=bytes, value_serializer="raw", **_common
)
# Value: the original bytes; headers: dlq.reason, dlq.topic, dlq.partition, dlq.offset.
dlq_topic = app.topic(
    settings.topic(contract.DLQ), value_type=bytes, value_serializer="raw", **_common
)

#: The DLQ topic's config (its records may be larger than the broker's default limit), set by
#: the worker and by the sink, whichever creates the topic.
DLQ_CONFIG = contract.dlq_topic_config(settings.dlq_max_payload_bytes)

# The sink app's view of the worker's outputs: keys and values as they came. internal=True:
# the sink creates them (with the worker's partitions and config) before subscribing, so a
# sink that starts before the worker does not wait for a metadata refresh to see them.
_raw: dict[str, Any] = dict(partitions=settings.topic_partitions, key_type=bytes,
                            key_serializer="raw", value_type=bytes, value_serializer="raw",
                            internal=True)
enriched_raw = sink_app.topic(settings.topic(contract.ENRICHED), config=contract.TOPIC_CONFIG,
                              **_raw)
anomalies_raw = sink_app.topic(settings.topic(contract.ANOMALIES), config=contract.TOPIC_CONFIG,
                               **_raw)
dlq_raw = sink_app.topic(settings.topic(contract.DLQ), config=DLQ_CONFIG, **_raw)
