"""The processing agent without a broker: its Kafka output replaced by a :class:`Recorder` (the
``recorder`` fixture of tests/unit/conftest.py), transactions to put into
``agent.test_context()``, and :func:`put_all` to put them and wait for the outputs.
Used by tests/unit/agents/test_processor.py and tests/unit/app/test_contract_schema.py."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from typing import Any

import orjson

from agents import processor
from app.faust_internals.record_batches import Acked, Sent, acknowledged
from tables.changelog import Change

TS = "2026-11-25T10:00:00+00:00"
TS_EPOCH = 1_795_600_800.0  # 2026-11-25T10:00:00Z


def txn(user: str, amount: float, ts: str = TS, merchant: str = "m-1",
        currency: str = "USD") -> dict[str, Any]:
    """A new transaction: a fresh ``txn_id`` every call, so equal purchases stay distinct. In
    the reporting currency unless told: its amounts are the statistics' own."""
    body = {"user_id": user, "amount": amount, "currency": currency, "timestamp": ts,
            "merchant_id": merchant, "merchant_category": "grocery",
            "payment_method": "debit_card", "status": "approved",
            "location": {"city": "Lyon", "country": "FR"}}
    return {"txn_id": secrets.token_hex(32), **body}


class Recorder:
    """Stands in for KafkaOutput: keeps what the agent publishes."""

    def __init__(self) -> None:
        self.messages: list[processor.Out] = []
        self.changes: list[Change] = []

    async def send(self, messages: list[Any]) -> list[Sent]:
        self.messages.extend(m for m in messages if isinstance(m, processor.Out))
        self.changes.extend(m for m in messages if isinstance(m, Change))
        return []

    async def publish(self, messages: list[Any]) -> list[Acked]:
        return await acknowledged(await self.send(messages))

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(m.value) for m in self.messages if m.topic == topic]


def kafka_timestamp(value: bytes) -> float:
    """The Kafka timestamp a producer gives ``value``: its payload's time (TS when it has
    none)."""
    try:
        return datetime.fromisoformat(orjson.loads(value)["timestamp"]).timestamp()
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        return TS_EPOCH


async def put_all(agent: Any, recorder: Recorder, items: list[tuple[bytes | None, bytes]],
                  partition: int = 0, expect: int | None = None) -> None:
    for key, value in items:
        await agent.put(value=value, key=key, partition=partition,
                        timestamp=kafka_timestamp(value), wait=False)
    expect = len(items) if expect is None else expect
    for _ in range(200):
        if len(recorder.messages) >= expect:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {len(recorder.messages)} of {expect} messages published")


def encoded(t: dict[str, Any]) -> tuple[bytes, bytes]:
    return t["user_id"].encode(), orjson.dumps(t)
