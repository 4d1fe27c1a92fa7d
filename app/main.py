"""The Faust application. ``txn ...`` (the console script) is its command line:
``txn worker -l info`` is exactly ``faust -A app worker -l info``.
"""

from __future__ import annotations

import os

import faust
import mode.loop

from app.settings import settings

__all__ = ["app", "main"]

app = faust.App(
    settings.app_id,
    broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
    # Faust's RocksDB store, on the rocksdict driver (python-rocksdb is not installed);
    # faust-streaming 0.15.3 has no "rocksdict://" scheme.
    store="rocksdb://",
    datadir=settings.data_dir,
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replication_factor,
    autodiscover=["agents", "tables", "views"],
    origin="app",
    # The web server listens on BIND_HOST (loopback unless set; Faust's default is 0.0.0.0)
    # and advertises WEB_HOST:WEB_PORT to the other workers (table_route).
    web_bind=settings.bind_host,
    web_host=settings.web_host,
    web_port=settings.web_port,
    producer_acks=-1,
    producer_compression_type="lz4",
    # The worker publishes each batch as aiokafka record batches of up to this size (Faust's
    # default, 16 KiB, cut a 5,000-message batch into hundreds of produce round trips).
    producer_max_batch_size=512 * 1024,
    consumer_auto_offset_reset="earliest",
    # A SIGKILLed worker's partitions go back to the group after this, not Faust's 60 s.
    broker_session_timeout=10.0,
)


def main() -> None:
    """Entry point of the ``txn`` console script. It runs on uvloop (less event-loop CPU per
    message in the worker) unless ``-L``/``--loop``/``F_LOOP`` chose a loop: Faust reads those
    when it is imported and then sets ``FAUST_LOOP``."""
    if "FAUST_LOOP" not in os.environ:
        mode.loop.use("uvloop")
    app.main()


# The app's own commands (``txn produce``, ...), registered on import; last, as they use ``app``.
from app import commands, sink_command  # noqa: E402, F401 (sink_command: `txn sink`)
