"""The worker's producer is idempotent: the aiokafka producer its transport builds has
``enable_idempotence`` on and ``acks=all``, without a transactional id (no broker needed; the
integration test tests/integration/test_worker_producer.py sends through it)."""

from __future__ import annotations

import pytest
from faust.transport.drivers import aiokafka as aiokafka_driver

from agents import processor  # installs the worker's transport
from app.faust_internals.batch_consumer import BatchConsumer
from app.faust_internals.idempotent_producer import IdempotentProducer, IdempotentTransport
from app.main import app, sink_app


async def test_the_workers_aiokafka_producer_is_idempotent() -> None:
    assert processor.TRANSACTIONS  # the import above is what counts
    assert isinstance(app.transport, IdempotentTransport)  # read_directly kept it
    assert app.transport.Consumer is BatchConsumer
    faust_producer = app.transport.create_producer()
    assert isinstance(faust_producer, IdempotentProducer)
    producer = faust_producer._new_producer()
    try:
        manager = producer._txn_manager
        assert manager is not None and manager.transactional_id is None  # idempotent only
        assert producer._sender._acks == -1  # all
        assert producer._compression_type == "lz4"  # Faust's other settings are kept
    finally:
        await producer.stop()


@pytest.mark.parametrize("acks", [0, 1])
async def test_idempotence_overrides_a_weaker_acks(acks: int) -> None:
    """aiokafka refuses idempotence with acks other than all; the producer's own acks
    setting (producer_acks) is overridden rather than rejected."""
    faust_producer = app.transport.create_producer()
    faust_producer.acks = acks
    producer = faust_producer._new_producer()
    try:
        assert producer._sender._acks == -1
    finally:
        await producer.stop()


async def test_the_sink_keeps_fausts_producer() -> None:
    """The sink sends nothing to Kafka; its producer is Faust's."""
    assert type(sink_app.transport.create_producer()) is aiokafka_driver.Producer
