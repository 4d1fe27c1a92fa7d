"""Faust's Kafka consumer, handing the processor its messages a fetch at a time.

Faust delivers every fetched message on its own: the consumer's drain loop awaits, per message,
``wait_first(conductor.on_message(message), suspend_flow.wait())`` (three tasks and an
``asyncio.wait``), the conductor decodes it into an event and puts it into the stream's queue,
and the stream takes it out again, with sensors and context variables. For the worker that was
about a third of its CPU per message (docs/stream-processing.md).

:class:`BatchConsumer` is Faust's aiokafka consumer with one change in that drain loop: the
messages of a topic registered in :data:`DIRECT` (``transactions``) are collected per fetch and
put, as one list, into the topic's queue, which the processing agent reads. Everything else is
Faust's: subscription, the partition assignment (so the partitions processed are the ones whose
table partitions this worker holds), pausing partitions during table recovery, flow control on
rebalances, the consumer generation, read offsets and gaps, acks and commits. The agent skips
messages of an earlier generation and tracks the others before it processes them, exactly as
Faust's stream iterator does (:func:`in_flight`). Other topics go through
Faust's path unchanged.

One more change, in the seek to the committed offsets after a rebalance
(:meth:`BatchConsumer.perform_seek`): it never sets a partition's committed offset back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from time import monotonic
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING, ensure_TP
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import Message, TopicT

__all__ = ["DIRECT", "FETCH", "FETCH_MAX_WAIT_MS", "BatchConsumer", "BatchConsumerThread",
           "BatchTransport", "direct_batches", "fetched_batches", "in_flight", "read_directly"]

#: Topic name -> the queue that receives its messages, one list per fetch.
DIRECT: dict[str, asyncio.Queue[list[Message]]] = {}

#: Hand the event loop over after this many messages of one fetch (Faust: 100).
YIELD_EVERY = 1_000

#: How long the broker may hold a fetch without data (Faust: 1,500 ms). aiokafka sends one
#: fetch at a time per broker, for the partitions whose earlier records were all taken; when a
#: batch takes longer than aiokafka's prefetch backoff, that fetch may name only partitions
#: without new data and the broker holds it this long while every other partition waits
#: (docs/stream-processing.md, "The fetch wait").
FETCH_MAX_WAIT_MS = 20


#: App id -> (fetch wait in ms, fetch minimum in bytes) of its consumer, when not
#: (:data:`FETCH_MAX_WAIT_MS`, 1): set by :func:`read_directly`.
FETCH: dict[str, tuple[int, int]] = {}


class BatchConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, with a shorter fetch wait (:data:`FETCH_MAX_WAIT_MS`, or the
    app's :data:`FETCH`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms, min_bytes = FETCH.get(transport.app.conf.id, (FETCH_MAX_WAIT_MS, 1))
        consumer._fetch_max_wait_ms = wait_ms  # read when the consumer starts
        consumer._fetch_min_bytes = min_bytes
        return consumer


class BatchConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer; the messages of :data:`DIRECT` topics go out as lists."""

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """Faust's seek of every assigned partition to its committed offset, except that a
        committed offset this consumer knows to be further than the one read is kept.

        Faust resumes the stream partitions just before this seek, so records fetched then can
        be processed, acked and committed while the committed offsets are being read. Faust
        set the older one, and commits only up to the first offset not acked after it: those
        acks had been removed when they were committed, so the partition was never committed
        again while the worker went on processing (seen after restarts in CI)."""
        committed = self._committed_offset
        for tp, offset in (await self.seek_to_committed()).items():
            tp = ensure_TP(tp)
            self._read_offset[tp] = offset if offset is not None and offset >= 0 else None
            if offset is None:
                continue
            known = committed.get(tp)
            if known is None or offset > known:
                committed[tp] = offset if offset else None  # as Faust: 0 is "none yet"

    async def _drain_messages(self, fetcher: Any) -> None:  # the loop of Faust's Consumer
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        direct = DIRECT
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched: dict[str, list[Message]] = {}
                await self.sleep(0)
                if not self.should_stop:
                    n = 0
                    async for tp, message in self.getmany(timeout=1.0):
                        n += 1
                        if n % YIELD_EVERY == 0:
                            await asyncio.sleep(0)
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and offset < r_offset:
                            continue  # already read (Faust drops these too)
                        if r_offset and offset - r_offset > 1 and acks_enabled_for(tp.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if tp.topic in direct:
                            message.incref()  # what the conductor does before delivering
                            fetched.setdefault(tp.topic, []).append(message)
                        else:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    for topic, messages in fetched.items():
                        await direct[topic].put(messages)  # back-pressure: a bounded queue
                    self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class BatchTransport(aiokafka_driver.Transport):
    """Faust's aiokafka transport with :class:`BatchConsumer`."""

    Consumer = BatchConsumer


def in_flight(messages: list[Message], faust_app: Any) -> list[Message]:
    """What Faust's stream iterator does with each message it takes: skip one of an earlier
    consumer generation (a rebalance happened since it was fetched; Faust seeks back to the
    committed offsets, so the new generation reads it again), and track the others as in flight,
    so that a rebalance or a stop waits until they are acked (``stream_wait_empty``).

    Unlike Faust's stream, a skipped message is not acked: an ack of a message that was not
    processed could let the commit pass it once its partition is read again."""
    consumer = faust_app.consumer
    generation = faust_app.consumer_generation_id
    if not faust_app.flow_control.is_active():
        return []
    acking_topics = faust_app.topics.acking_topics
    batch = []
    for message in messages:
        if message.generation_id != generation:
            continue
        if message.topic in acking_topics and not message.tracked:
            message.tracked = True
            consumer.track_message(message)
        batch.append(message)
    # Faust's stall check ("Stream has not started processing TP", logged as an error every
    # few seconds) reads when a stream last took a message of each partition: tell it.
    inbound = faust_app.monitor.stream_inbound_time
    now = monotonic()
    for tp in {message.tp for message in batch}:
        inbound[tp] = now
    return batch


async def fetched_batches(queue: asyncio.Queue[list[Message]], faust_app: Any, max_size: int,
                          wait_seconds: float) -> AsyncIterator[list[Message]]:
    """Batches from the consumer (:class:`BatchConsumer`: one list per fetch): wait for one,
    then ``wait_seconds`` more, then take everything queued, in batches of at most
    ``max_size`` (a fetch can hold far more). Under load,
    fetches queue up while a batch is being published, so batches grow with the load; a quiet
    stream waits only ``wait_seconds``."""
    pending: list[Message] = []
    while True:
        if not pending:
            pending = await queue.get()
            if wait_seconds:
                await asyncio.sleep(wait_seconds)
        while len(pending) < max_size and not queue.empty():
            pending = pending + queue.get_nowait()
        batch = in_flight(pending[:max_size], faust_app)
        del pending[:max_size]
        if batch:
            yield batch


def direct_batches(stream: Any, max_size: int, wait_seconds: float
                   ) -> AsyncIterator[list[Message]] | None:
    """The batches of an agent's topic straight from the consumer (:func:`fetched_batches`),
    or None when its messages do not come that way (another consumer, or
    ``agent.test_context()``, whose channel is not the topic)."""
    channel, faust_app = stream.channel, stream.app
    if not (isinstance(channel, TopicT) and isinstance(faust_app.consumer, BatchConsumer)):
        return None
    aiter(channel)  # registers the topic with the conductor: Faust subscribes to it
    return fetched_batches(DIRECT[channel.get_topic_name()], faust_app, max_size, wait_seconds)


def read_directly(faust_app: Any, topic: str, fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
                  fetch_min_bytes: int = 1) -> None:
    """Have ``faust_app``'s consumer hand ``topic`` over a fetch at a time (a bounded queue:
    back-pressure on the consumer). The broker answers a fetch of the app's consumer once it
    has ``fetch_min_bytes`` for it or after ``fetch_max_wait_ms``."""
    DIRECT[topic] = asyncio.Queue(maxsize=4)
    if (fetch_max_wait_ms, fetch_min_bytes) != (FETCH_MAX_WAIT_MS, 1):
        FETCH[faust_app.conf.id] = (fetch_max_wait_ms, fetch_min_bytes)
    if not isinstance(faust_app._transport, BatchTransport):  # keep a subclass already set
        faust_app.transport = BatchTransport(faust_app.conf.broker_consumer, faust_app)
