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
Faust's stream iterator does (:func:`agents.processor.fetched_batches`). Other topics go through
Faust's path unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import Message

__all__ = ["DIRECT", "FETCH_MAX_WAIT_MS", "BatchConsumer", "BatchConsumerThread", "BatchTransport"]

#: Topic name -> the queue that receives its messages, one list per fetch.
DIRECT: dict[str, asyncio.Queue[list[Message]]] = {}

#: Hand the event loop over after this many messages of one fetch (Faust: 100).
YIELD_EVERY = 1_000

#: How long the broker may hold a fetch without data (Faust: 1,500 ms). aiokafka sends one
#: fetch at a time per broker, for the partitions whose earlier records were all taken; when a
#: batch takes longer than aiokafka's prefetch backoff (100 ms), that fetch names only
#: partitions without new data (e.g. Faust's leader topic) and the broker holds it this long,
#: while the records of every other partition wait: at 2,000 messages/s the worker got its
#: input in bursts every ~1.6 s.
FETCH_MAX_WAIT_MS = 20


class BatchConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, with a shorter fetch wait (:data:`FETCH_MAX_WAIT_MS`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class BatchConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer; the messages of :data:`DIRECT` topics go out as lists."""

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

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
