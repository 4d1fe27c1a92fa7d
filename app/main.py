"""The pipeline's two Faust apps, configured in one place:

- ``app``: the processing worker (``txn worker -l info``, the same as
  ``faust -A app worker -l info``): agents, tables and views are autodiscovered;
- ``sink_app``: the sink worker role (``txn sink -l info``), its own consumer group
  (``<app id>-sink``), so it reads the topics the processing worker writes without taking
  partitions from it. It has no table, sends no Kafka message and runs no web server.

This module imports none of their users: agents, tables, views, topics and commands import
it, and :mod:`app.cli` (the ``txn`` command line) ties them together.
"""

from __future__ import annotations

from typing import Any

import faust

from app.settings import settings

__all__ = ["app", "sink_app"]


def _config(**overrides: Any) -> dict[str, Any]:
    """The settings both apps share, with ``overrides``."""
    return {
        "broker": [f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication_factor,
        # The web server listens on BIND_HOST (loopback unless set; Faust's default is 0.0.0.0).
        "web_bind": settings.bind_host,
        "producer_acks": -1,
        "producer_compression_type": "lz4",
        "consumer_auto_offset_reset": "earliest",
        # A SIGKILLed worker's partitions go back to the group after this, not Faust's 60 s.
        "broker_session_timeout": 10.0,
        **overrides,
    }


app = faust.App(settings.app_id, **_config(
    # Faust's RocksDB store, on the rocksdict driver (python-rocksdb is not installed);
    # faust-streaming 0.15.3 has no "rocksdict://" scheme.
    store="rocksdb://",
    datadir=settings.data_dir,
    autodiscover=["agents", "tables", "views"],
    origin="app",
    # Advertised to the other workers, which forward table views here (table_route).
    web_host=settings.web_host,
    web_port=settings.web_port,
    # The worker publishes each batch as aiokafka record batches of up to this size (Faust's
    # default, 16 KiB, cut a 5,000-message batch into hundreds of produce round trips).
    producer_max_batch_size=512 * 1024,
))

sink_app = faust.App(f"{settings.app_id}-sink", **_config(
    datadir=f"{settings.data_dir}/sink",  # Faust's own state directory; the sink has no table
    autodiscover=False,
    origin="app.main",
    web_enabled=False,
    table_standby_replicas=0,
))
