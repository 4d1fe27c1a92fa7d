"""Kafka keeps a backfill: a topic made with ``app.contract.TOPIC_CONFIG`` does not delete old
event times, on the real local broker.

Every topic carries the event time as its Kafka timestamp (CreateTime), and time retention
deletes a segment once its newest timestamp is older than ``retention.ms``: with time
retention, a backfill of 60-day-old events would be deleted before the worker reads it. Two
topics get the same 60-day-old records: one with ``TOPIC_CONFIG``, and a control with
``TOPIC_CONFIG`` but ``retention.ms`` of one day. The control losing its records proves that
the broker's retention check ran; the ``TOPIC_CONFIG`` topic must still hold all of them.

The broker checks retention every ``log.retention.check.interval.ms`` (a static setting: the
local broker of ``scripts/services.py`` sets 2 s; Kafka's default is 5 minutes, and the test
then waits that long). The test reads the interval from the broker and waits accordingly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from app.contract import TOPIC_CONFIG

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
BATCH = 200  # records per send; two sends
#: Both topics roll a segment when a record is an hour of event time after the segment's first
#: (Kafka rolls by the records' timestamps), so the second send starts a second segment and
#: the first is a closed one, the kind retention deletes.
SEGMENT_MS = "3600000"


@pytest.fixture
def admin(bootstrap: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=bootstrap)
    yield client
    client.close()


@pytest.fixture
def topics(admin: KafkaAdminClient, unique: str) -> Iterator[tuple[str, str]]:
    """The TOPIC_CONFIG topic's name and the control's; deleted afterwards."""
    names = (f"retention-{unique}-kept", f"retention-{unique}-control")
    yield names
    existing = set(admin.list_topics())
    if gone := [t for t in names if t in existing]:
        admin.delete_topics(gone)


def check_interval_s(admin: KafkaAdminClient) -> float:
    """The broker's ``log.retention.check.interval.ms``, in seconds."""
    broker = str(admin.describe_cluster()["brokers"][0]["broker_id"])
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker)],
                                     config_filter="all")
    return int(configs["broker"][broker]["log.retention.check.interval.ms"]["value"]) / 1000


def offsets(consumer: KafkaConsumer, topic: str) -> tuple[int, int]:
    """(log start offset, end offset) of partition 0."""
    tp = TopicPartition(topic, 0)
    return consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]


def read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    records: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_topic_config_keeps_a_backfill_that_time_retention_deletes(
        bootstrap: str, admin: KafkaAdminClient, topics: tuple[str, str]) -> None:
    kept, control = topics
    admin.create_topics([
        NewTopic(kept, 1, 1, topic_configs={**TOPIC_CONFIG, "segment.ms": SEGMENT_MS}),
        NewTopic(control, 1, 1, topic_configs={**TOPIC_CONFIG, "segment.ms": SEGMENT_MS,
                                               "retention.ms": str(DAY_MS)})])
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        now_ms = int(time.time() * 1000)
        sent: list[int] = []
        # 61 and 60 days old: two sends, each flushed; the kept topic first, then the control,
        # so a retention check that trims the control has seen the kept topic's records.
        for topic in (kept, control):
            for ts in (now_ms - 61 * DAY_MS, now_ms - 60 * DAY_MS):
                for i in range(BATCH):
                    producer.send(topic, key=b"user-%d" % (i % 7), value=b"%d" % i,
                                  timestamp_ms=ts + i)
                    if topic == kept:
                        sent.append(ts + i)
                producer.flush(30)
        assert offsets(consumer, kept) == (0, 2 * BATCH)
        # The control's start may already have moved: the broker checks every 2 s, and it rolls
        # and deletes even the active segment once its records are older than retention.ms.
        assert offsets(consumer, control)[1] == 2 * BATCH

        interval = check_interval_s(admin)
        deadline = time.monotonic() + 2 * interval + 60
        while offsets(consumer, control)[0] < BATCH:  # the control's first segment is gone
            assert time.monotonic() < deadline, (
                f"the broker did not apply the control's retention.ms in "
                f"{2 * interval + 60:.0f} s (log.retention.check.interval.ms = {interval:g} s)")
            assert offsets(consumer, kept)[0] == 0, "the TOPIC_CONFIG topic lost records"
            time.sleep(min(1.0, interval / 4))
        # One more check interval: the TOPIC_CONFIG topic still starts at offset 0.
        until = time.monotonic() + interval + 2
        while time.monotonic() < until:
            assert offsets(consumer, kept) == (0, 2 * BATCH), "the TOPIC_CONFIG topic lost records"
            time.sleep(min(1.0, interval / 4))
    finally:
        producer.close(10)
        consumer.close()
    records = read_all(bootstrap, kept, 2 * BATCH)
    assert [r.timestamp for r in records] == sent  # every record, with its event time


def test_the_contract_config_is_set_on_a_topic_made_with_the_broker_defaults(
        admin: KafkaAdminClient, bootstrap: str, topics: tuple[str, str]) -> None:
    """A topic created without any config of its own (as a producer's or a consumer's first
    use creates it) gets every key of TOPIC_CONFIG from ``set_topic_configs``: the keys are
    new to the topic, which kafka-python's check of known keys would refuse."""
    from app.producer.kafka import set_topic_configs

    name = topics[0]
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    set_topic_configs(bootstrap, {name: TOPIC_CONFIG})
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)],
                                     config_filter="dynamic")
    values = {k: v["value"] for k, v in configs["topic"][name].items()}
    assert {k: values.get(k) for k in TOPIC_CONFIG} == dict(TOPIC_CONFIG)
