"""The worker's counters: every reason the contract's validator gives falls into one of a fixed
list of kinds (the label of ``txn_dlq_by_reason_total``), never "other" nor the reason itself."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agents.counters import DLQ_KINDS, Counters, dlq_kind
from app.contract import FIELDS, InvalidTransaction, validate
from tests.unit.agent_harness import txn

GOOD = txn("ann", 12.5)


def broken(**changes: Any) -> bytes:
    return orjson.dumps({**GOOD, **changes})


BAD: dict[str, bytes] = {
    "not_json": b"{nope",
    "not_object": b"[1, 2]",
    "missing_field": orjson.dumps({k: v for k, v in GOOD.items() if k != "amount"}),
    "unexpected_field": broken(extra=1),
    "bad_txn_id": broken(txn_id="F" * 64),
    "bad_user_id": broken(user_id=""),
    "bad_merchant_id": broken(merchant_id=7),
    "bad_amount": broken(amount=0.001),
    "bad_currency": broken(currency="eur"),
    "bad_timestamp": broken(timestamp="2026-02-30T00:00:00Z"),
    "bad_merchant_category": broken(merchant_category="pets"),
    "bad_payment_method": broken(payment_method="cash"),
    "bad_status": broken(status="lost"),
    "bad_location": broken(location={"city": "Lyon", "country": "fr"}),
}


@pytest.mark.parametrize(("kind", "value"), BAD.items(), ids=list(BAD))
def test_each_reason_has_its_kind(kind: str, value: bytes) -> None:
    with pytest.raises(InvalidTransaction) as info:
        validate(value)
    assert dlq_kind(str(info.value)) == kind


def test_the_kinds_are_a_fixed_list() -> None:
    worker_rules = {"key_not_user_id", "kafka_timestamp", "late_event", "future_event"}
    assert set(BAD) | worker_rules | {"other"} == set(DLQ_KINDS)
    assert {f"bad_{f}" for f in FIELDS} <= set(DLQ_KINDS)
    assert dlq_kind("message key is not the transaction's user_id") == "key_not_user_id"
    assert dlq_kind("something nobody wrote yet: 123") == "other"
    assert dlq_kind("late event: timestamp 2026-10-01T00:00:00Z is more than") == "late_event"
    assert dlq_kind("future event: timestamp 9999-12-31T00:00:00Z is") == "future_event"
    assert dlq_kind("Kafka timestamp 2026-11-30T10:00:00+00:00 is not") == "kafka_timestamp"
    assert dlq_kind("timestamp has no UTC offset") == "bad_timestamp"


def test_each_counters_has_its_own_histogram() -> None:
    a, b = Counters(), Counters()
    a.batch_seconds.observe(0.003)
    [family] = b.batch_seconds.collect()
    assert {s.value for s in family.samples if s.name.endswith("_count")} == {0.0}
