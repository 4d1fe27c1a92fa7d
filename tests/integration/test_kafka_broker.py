"""The real local broker: kafka-python and aiokafka talk to each other, with LZ4."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration
N = 500
PARTITIONS = 3


def make_topic(bootstrap: str, name: str, partitions: int = PARTITIONS) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


async def test_kafka_python_to_aiokafka_lz4(bootstrap: str, unique: str) -> None:
    topic = f"test-kp-to-aio-{unique}"
    make_topic(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type="lz4", acks="all",
                             enable_idempotence=True)
    for i in range(N):
        producer.send(topic, key=f"user-{i % 7}".encode(), value=f"v{i}".encode(),
                      timestamp_ms=1_700_000_000_000 + i)
    producer.flush()
    producer.close()

    # The partitions are assigned, not joined through a group: the test is about the records,
    # and a group's join can outlast the deadline on a busy broker.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    got: dict[bytes, bytes] = {}
    try:
        async with asyncio.timeout(60):
            while len(got) < N:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for r in records:
                        got[r.value] = r.key
                        assert r.timestamp == 1_700_000_000_000 + int(r.value[1:])
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(N))
    assert got[b"v8"] == b"user-1"


async def test_aiokafka_to_kafka_python_lz4(bootstrap: str, unique: str) -> None:
    topic = f"test-aio-to-kp-{unique}"
    make_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="lz4", acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        batch = [producer.send(topic, key=b"k%d" % (i % 5), value=b"%d" % i) for i in range(N)]
        await asyncio.gather(*[await f for f in batch])
    finally:
        await producer.stop()

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{unique}",
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    values = [int(r.value) for r in consumer]
    consumer.close()
    assert sorted(values) == list(range(N))
