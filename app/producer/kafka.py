"""The Kafka side: the producer client, the topic (created and configured), and the keyed
partitioner. kafka-python is imported on first use, so the rest of the package runs without it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.contract import TOPIC_CONFIG


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """A kafka-python producer set up for the contract: acks=all, idempotent, LZ4, batched."""
    from kafka import KafkaProducer

    config: dict[str, Any] = dict(
        bootstrap_servers=bootstrap.split(","),
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        max_in_flight_requests_per_connection=5,
        delivery_timeout_ms=120_000,
        max_block_ms=30_000,
        client_id="txn-producer",
    )
    config.update(overrides)
    return KafkaProducer(**config)


def ensure_topic(bootstrap: str, topic: str, partitions: int) -> bool:
    """Create ``topic`` with ``partitions`` partitions unless it exists (True if created), with
    :data:`TOPIC_CONFIG`; an existing topic gets that config too."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="txn-producer")
    try:
        if topic not in admin.list_topics():
            try:
                admin.create_topics([NewTopic(topic, partitions, 1,
                                              topic_configs=dict(TOPIC_CONFIG))])
                return True
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    set_topic_configs(bootstrap, {topic: TOPIC_CONFIG})
    return False


def set_topic_configs(bootstrap: str, configs: Mapping[str, Mapping[str, str]]) -> None:
    """Make each existing topic's own config exactly ``config`` (Kafka's AlterConfigs: entries
    not given go back to the broker's defaults), so a topic created before, by a consumer's
    subscription with the broker's defaults or by an older version, gets the contract's
    retention too."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="txn-topics")
    try:
        # raise_on_unknown=False: kafka-python refuses keys the topic has not set yet (it
        # checks them against the topic's own settings), which is every key of a topic created
        # with the broker's defaults: exactly the topic this is for.
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict(config))
                             for topic, config in configs.items()], raise_on_unknown=False)
    finally:
        admin.close()


class Partitions(dict[bytes, int]):
    """key -> partition, like Kafka's default partitioner for keyed records, memoised: the same
    murmur2 hash as Java, kafka-python and aiokafka, so the keyed placement is unchanged while
    each key is hashed once."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def __missing__(self, key: bytes) -> int:
        from kafka.partitioner.default import murmur2

        self[key] = partition = int(murmur2(key) & 0x7FFFFFFF) % self.count
        return partition
