"""The sink's own Faust app: a second worker role, started with ``txn sink -l info``
(see :mod:`app.sink_command`), separate from the processing worker (``txn worker``).

Its own app id (``<app id>-sink``) makes it its own consumer group: it reads the topics the
processing worker writes without taking partitions from it. It has no Faust table and sends
no Kafka message (the rollups live in MongoDB: ``agents/rollups.py``); ``DATA_DIR/sink`` is only
Faust's own state directory. It runs no web server. Its agents are in ``agents/sink.py`` and
``agents/rollups.py``; this module only declares the app and the topics it reads, so importing
it (the processing app's autodiscovery does) has no effect beyond creating these objects.
"""

from __future__ import annotations

from typing import Any

import faust

from app import contract
from app.main import app
from app.settings import settings

__all__ = ["anomalies_raw", "dlq_raw", "enriched_raw", "sink_app"]

sink_app = faust.App(
    f"{settings.app_id}-sink",
    broker=app.conf.broker,
    store="rocksdb://",  # faust's RocksDB store; it uses the rocksdict driver installed here
    datadir=f"{settings.data_dir}/sink",
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replication_factor,
    autodiscover=False,
    origin="app.sink_app",
    web_enabled=False,
    web_bind=settings.bind_host,  # were its web server ever enabled: BIND_HOST, not 0.0.0.0
    producer_acks=-1,
    producer_compression_type="lz4",
    producer_linger=0.05,  # the sink sends nothing now; kept from when it sent per transaction
    producer_max_batch_size=512 * 1024,
    consumer_auto_offset_reset="earliest",
    table_standby_replicas=0,
    broker_session_timeout=app.conf.broker_session_timeout,
)

_raw: dict[str, Any] = dict(partitions=settings.topic_partitions, key_type=str,
                            key_serializer="raw", value_type=bytes, value_serializer="raw")
# The sink reads values as bytes and parses them itself, so a message it cannot store can be
# kept as it came in a dead-letter record (the rollups read them as bytes too).
enriched_raw = sink_app.topic(settings.topic(contract.ENRICHED), **_raw)
anomalies_raw = sink_app.topic(settings.topic(contract.ANOMALIES), **_raw)
dlq_raw = sink_app.topic(settings.topic(contract.DLQ), **_raw)
