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

__all__ = ["ROCKSDB_BLOCK_CACHE_BYTES", "ROCKSDB_MAX_WRITE_BUFFERS", "ROCKSDB_WRITE_BUFFER_BYTES",
           "app", "sink_app", "table_options"]


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


#: RocksDB memory per database (one per table and partition: 16 with two tables and 8
#: partitions), bounded so the worker's RSS stays flat for days. Faust's defaults, three 64 MiB
#: memtables and a 2 GiB block cache per database, let RSS grow with every write until they fill.
ROCKSDB_WRITE_BUFFER_BYTES = 4 * 2**20
ROCKSDB_MAX_WRITE_BUFFERS = 2
ROCKSDB_BLOCK_CACHE_BYTES = 8 * 2**20


def table_options() -> dict[str, Any]:
    """The ``options`` of every worker table: the rocksdict driver and the bounds above. A new
    dict each time: Faust's store pops keys from the one it is given."""
    return {"driver": "rocksdict", "write_buffer_size": ROCKSDB_WRITE_BUFFER_BYTES,
            "max_write_buffer_number": ROCKSDB_MAX_WRITE_BUFFERS,
            "block_cache_size": ROCKSDB_BLOCK_CACHE_BYTES}


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
