"""The worker's idempotent producer against the real broker: record batches published as the
worker publishes them (:class:`app.faust_internals.record_batches.KafkaOutput`, ``send_batch``)
carry the producer id the broker gave it and advance its sequence numbers, and arrive once."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka.structs import TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition

from agents import processor  # installs the worker's transport
from app.faust_internals.record_batches import KafkaOutput
from app.main import app
from app.producer import ensure_topic

pytestmark = pytest.mark.integration


async def test_record_batches_go_through_the_idempotent_producer(bootstrap: str,
                                                                unique: str) -> None:
    topic = f"idem-{unique}"
    ensure_topic(bootstrap, topic, 2)
    producer = app.transport.create_producer()._new_producer()
    await producer.start()
    try:
        output = KafkaOutput(SimpleNamespace(producer=SimpleNamespace(
            _ensure_producer=lambda: producer)))
        messages = [processor.Out(topic, f"u{i}".encode(), b"v" * 300_000, i % 2, 1.0e9 + i)
                    for i in range(6)]  # 3 per partition, ~900 KB: several record batches
        acked = await output.publish(messages)
        manager = producer._txn_manager
        assert manager is not None and manager.producer_id >= 0
        assert manager.sequence_number(TopicPartition(topic, 0)) == 3
        assert manager.sequence_number(TopicPartition(topic, 1)) == 3
        assert {(a.partition, a.offset) for a in acked} >= {(0, 2), (1, 2)}
    finally:
        await producer.stop()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None)
    try:
        parts = [KafkaTopicPartition(topic, p) for p in (0, 1)]
        assert consumer.end_offsets(parts) == {tp: 3 for tp in parts}  # each message once
    finally:
        consumer.close()
