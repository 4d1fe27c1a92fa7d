"""End to end on the real broker: a message on ``transactions`` as large as the broker takes
(just under its default ``message.max.bytes`` of 1 MiB, incompressible, not JSON) among valid
ones. Its dead letter with the ``dlq.*`` headers would not fit under that limit, so the worker
once failed to publish it, exited (a batch it could not make durable) and, restarted, read the
same batch again: a crash loop. Now the dead letter carries the value truncated to
``DLQ_MAX_PAYLOAD_BYTES`` with the original's size and SHA-256, the worker keeps running and
every valid transaction around it is enriched.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from app.contract import (
    DLQ,
    DLQ_OFFSET,
    DLQ_ORIGINAL_SHA256,
    DLQ_ORIGINAL_SIZE,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    ENRICHED,
    TRANSACTIONS,
)
from app.producer import TransactionFactory, ensure_topic
from app.settings import settings
from tests.e2e.test_processing import (
    PARTITIONS,
    committed_everything,
    metric,
    read_topic,
    wait_ready,
)
from tests.procs import TXN, Proc, free_port, pipeline_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

#: The broker's default ``message.max.bytes`` (1,048,588 bytes for a record batch) takes an
#: uncompressed value of up to ~1,048,225 bytes with this key; the old worker's full-size dead
#: letter (the same value plus ~200 bytes of headers) was refused above ~1,048,100.
HUGE = 1_048_150
VALID = 400


def test_a_huge_invalid_message_is_dead_lettered_truncated(tmp_path: Path, unique: str) -> None:
    prefix = f"poison-{unique}"
    topic = f"{prefix}-{TRANSACTIONS}"
    ensure_topic(settings.kafka_bootstrap_servers, topic, PARTITIONS)
    port = free_port()
    env = pipeline_env(prefix, TOPIC_PARTITIONS=PARTITIONS, WEB_PORT=port, WEB_HOST="localhost",
                       DATA_DIR=tmp_path / "data")
    factory = TransactionFactory(seed=3, users=20, merchants=10, anomaly_rate=0.0)
    valid = list(factory.messages(0, VALID))
    huge = b"\x00not json" + os.urandom(HUGE - 9)  # random: lz4 cannot shrink it
    huge_key = valid[0].key  # a real user's partition: later messages there must go on
    worker = Proc("worker", [TXN, "worker", "-l", "info"], env, tmp_path)
    with worker:
        wait_ready(worker, port, PARTITIONS)
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                                 max_request_size=2 * 1024 * 1024, linger_ms=5)
        for m in valid[:VALID // 2]:
            producer.send(topic, key=m.key, value=m.value, timestamp_ms=m.timestamp_ms)
        sent = producer.send(topic, key=huge_key, value=huge).get(30)
        for m in valid[VALID // 2:]:
            producer.send(topic, key=m.key, value=m.value, timestamp_ms=m.timestamp_ms)
        producer.flush()
        producer.close()
        started = time.monotonic()
        wait_for(lambda: not worker.alive or committed_everything(f"{prefix}-txn-analytics",
                                                                 topic),
                 timeout=120, interval=1, message="the worker to commit every message")
        elapsed = time.monotonic() - started
        assert worker.alive, f"the worker exited:\n{worker.log(80)}"
        assert metric(port, "txn_dlq_total") == 1
        assert metric(port, "txn_processed_total") == VALID
        assert metric(port, "txn_errors_total") == 0
        time.sleep(1)  # still running a moment later (no exit after the commit)
        assert worker.alive, f"the worker exited:\n{worker.log(80)}"

    [dead] = read_topic(f"{prefix}-{DLQ}")
    headers = {k: v.decode() for k, v in dead.headers}
    assert dead.value == huge[:settings.dlq_max_payload_bytes] == huge[:65_536]
    assert dead.key == huge_key and dead.partition == sent.partition
    assert headers[DLQ_ORIGINAL_SIZE] == str(HUGE)
    assert headers[DLQ_ORIGINAL_SHA256] == hashlib.sha256(huge).hexdigest()
    assert "not valid JSON" in headers[DLQ_REASON] and headers[DLQ_TOPIC] == topic
    assert (int(headers[DLQ_PARTITION]), int(headers[DLQ_OFFSET])) == (sent.partition,
                                                                        sent.offset)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                         f"{prefix}-{DLQ}")])
    finally:
        admin.close()
    [dlq_config] = configs["topic"].values()
    assert dlq_config["max.message.bytes"]["value"] == str(2**20 + 64 * 1024)
    enriched = [orjson.loads(r.value)["txn_id"] for r in read_topic(f"{prefix}-{ENRICHED}")]
    assert sorted(enriched) == sorted(m.txn_id for m in valid)
    print(f"\n{HUGE:,}-byte poison message among {VALID} valid ones: all committed "
          f"{elapsed:.1f} s after the last send, the worker still running")
