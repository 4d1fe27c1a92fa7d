"""Publishing a batch as aiokafka record batches through a Faust app's producer.

A batch of the worker holds thousands of messages; sending them one by one
(``app.producer.send``: a coroutine, a future and Faust's hooks per message) cost more CPU than
anything the worker computes. So the messages of each topic partition go into aiokafka record
batches (``create_batch`` / ``send_batch``, in order) and one future per record batch is awaited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, NamedTuple, Protocol

__all__ = ["Acked", "KafkaOutput", "Outgoing", "Sent", "acknowledged"]


class Outgoing(Protocol):
    """A message to publish, already serialised, to one partition."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def partition(self) -> int: ...
    @property
    def timestamp(self) -> float | None: ...
    @property
    def headers(self) -> list[tuple[str, bytes]] | None: ...


class Sent(NamedTuple):
    """A record batch handed to the producer: ``n_messages`` messages, acknowledged by
    ``future``."""

    topic: str
    partition: int
    n_messages: int
    future: Awaitable[Any]


class Acked(NamedTuple):
    """Kafka acknowledged a topic partition's messages up to ``offset`` (the last one's)."""

    topic: str
    partition: int
    offset: int


async def acknowledged(sent: Sequence[Sent]) -> list[Acked]:
    """Wait for the acknowledgements of ``sent``: per record batch, the offset of its last
    message (a record batch's metadata holds the offset of its first)."""
    return [Acked(s.topic, s.partition, (await s.future).offset + s.n_messages - 1) for s in sent]


class KafkaOutput:
    """Publishes through ``faust_app``'s producer and waits for Kafka's acknowledgements."""

    def __init__(self, faust_app: Any) -> None:
        self.faust_app = faust_app

    async def send(self, messages: Sequence[Outgoing]) -> list[Sent]:
        """Hand ``messages`` to the producer (in order per partition) and return, per record
        batch, the future of its acknowledgement. Sends made one after the other keep their
        order in every partition (aiokafka queues record batches per partition)."""
        producer = self.faust_app.producer._ensure_producer()  # the aiokafka producer Faust runs
        by_partition: dict[tuple[str, int], list[Outgoing]] = {}
        for m in messages:
            by_partition.setdefault((m.topic, m.partition), []).append(m)
        sent: list[Sent] = []
        for (topic, partition), batch_messages in by_partition.items():
            batch, count = producer.create_batch(), 0
            for m in batch_messages:
                timestamp_ms = int(m.timestamp * 1000) if m.timestamp else None
                while batch.append(key=m.key, value=m.value, timestamp=timestamp_ms,
                                   headers=m.headers or []) is None:  # full: send it
                    future = await producer.send_batch(batch, topic, partition=partition)
                    sent.append(Sent(topic, partition, count, future))
                    batch, count = producer.create_batch(), 0
                count += 1
            future = await producer.send_batch(batch, topic, partition=partition)
            sent.append(Sent(topic, partition, count, future))
        return sent

    async def publish(self, messages: Sequence[Outgoing]) -> list[Acked]:
        """Send ``messages`` and return once Kafka acknowledged them all."""
        return await acknowledged(await self.send(messages))
