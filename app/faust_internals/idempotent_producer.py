"""Faust's aiokafka producer with idempotence on, without transactions.

faust-streaming 0.15.3 builds its aiokafka producer in ``Producer._new_producer`` from
``_settings_default()`` (servers, ``acks``, linger, batch and request sizes, compression...),
``_settings_auth()`` and ``_settings_extra()``, which adds ``acks="all"`` and
``enable_idempotence=True`` only when the app runs with exactly-once transactions
(``processing_guarantee="exactly_once"``: a transactional producer per partition, which the
worker does not use). :class:`IdempotentProducer` returns them always; :func:`produce_idempotently`
makes it the producer of an app (the worker's: :mod:`agents.processor`), so every send of the
worker (enriched, anomalies, dead letters, table changelogs) goes through one idempotent
producer: the broker drops a batch the producer retried after it had already written it, so a
retry cannot duplicate a message. The sink's app, which sends nothing, keeps Faust's.

aiokafka 0.14's idempotent producer requires ``acks=all`` (it raises otherwise) and at most 5
produce requests in flight per broker; its sender keeps one in flight per broker anyway, so
retries cannot reorder a partition either. Record batches built with ``create_batch`` and
handed over with ``send_batch`` (:mod:`.record_batches`) get the producer id, epoch and
sequence numbers when they are drained, like those of ``send``. The idempotence lasts as long
as the producer: after a restart the worker's offset rule (docs/stream-processing.md) is what
keeps redelivered messages from being folded twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver

from app.faust_internals.batch_consumer import BatchTransport

__all__ = ["IDEMPOTENT", "IdempotentProducer", "IdempotentTransport", "produce_idempotently"]

#: What :class:`IdempotentProducer` adds to the aiokafka producer's settings.
IDEMPOTENT: Mapping[str, Any] = {"acks": "all", "enable_idempotence": True}


class IdempotentProducer(aiokafka_driver.Producer):
    """Faust's aiokafka producer; its aiokafka producer is idempotent (:data:`IDEMPOTENT`)."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), **IDEMPOTENT}


class IdempotentTransport(BatchTransport):
    """:class:`~app.faust_internals.batch_consumer.BatchTransport` with
    :class:`IdempotentProducer`."""

    Producer = IdempotentProducer


def produce_idempotently(faust_app: Any) -> None:
    """Give ``faust_app`` (before it made its producer) :class:`IdempotentTransport`."""
    faust_app.transport = IdempotentTransport(faust_app.conf.broker_consumer, faust_app)
