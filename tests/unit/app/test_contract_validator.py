"""The contract validator (app.contract.validate) against valid and generated bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import contract
from app.contract import InvalidTransaction, validate

txn_ids = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
amounts = st.decimals(min_value="0.01", max_value="1000000", places=2).map(float)
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                max_size=contract.MAX_ID_LENGTH)


@st.composite
def transactions(draw: st.DrawFn) -> dict[str, Any]:
    txn: dict[str, Any] = {
        "user_id": draw(texts),
        "amount": draw(amounts),
        "currency": draw(st.from_regex(r"[A-Z]{3}", fullmatch=True)),
        "timestamp": draw(st.datetimes(min_value=datetime(2000, 1, 1),
                                       max_value=datetime(2100, 1, 1),
                                       timezones=st.sampled_from(ZONES))).isoformat(),
        "merchant_id": draw(texts),
        "merchant_category": draw(st.sampled_from(contract.CATEGORIES)),
        "payment_method": draw(st.sampled_from(contract.PAYMENT_METHODS)),
        "status": draw(st.sampled_from(contract.STATUSES)),
        "location": {"city": draw(texts),
                     "country": draw(st.from_regex(r"[A-Z]{2}", fullmatch=True))},
    }
    return {"txn_id": draw(txn_ids), **txn}


def encode(txn: dict[str, Any]) -> bytes:
    return orjson.dumps(txn)


@given(transactions())
def test_valid_transactions_pass(txn: dict[str, Any]) -> None:
    assert validate(encode(txn)) == txn


BREAKERS: dict[str, Any] = {
    "missing field": lambda t: {k: v for k, v in t.items() if k != "currency"},
    "extra field": lambda t: {**t, "note": "x"},
    "negative amount": lambda t: {**t, "amount": -abs(t["amount"])},
    "zero amount": lambda t: {**t, "amount": 0},
    "huge amount": lambda t: {**t, "amount": 1_000_000.01},
    "three decimals": lambda t: {**t, "amount": 10.123},
    "amount as string": lambda t: {**t, "amount": str(t["amount"])},
    "amount as bool": lambda t: {**t, "amount": True},
    "lower-case currency": lambda t: {**t, "currency": "usd"},
    "long currency": lambda t: {**t, "currency": "EURO"},
    "naive timestamp": lambda t: {**t, "timestamp": "2026-11-25T10:00:00"},
    "not a timestamp": lambda t: {**t, "timestamp": "yesterday"},
    "empty user": lambda t: {**t, "user_id": ""},
    "oversize user": lambda t: {**t, "user_id": "u" * 65},
    "user as number": lambda t: {**t, "user_id": 7},
    "empty merchant": lambda t: {**t, "merchant_id": ""},
    "unknown category": lambda t: {**t, "merchant_category": "weapons"},
    "unknown payment": lambda t: {**t, "payment_method": "cash"},
    "unknown status": lambda t: {**t, "status": "lost"},
    "location not object": lambda t: {**t, "location": "Paris"},
    "bad country": lambda t: {**t, "location": {"city": "Paris", "country": "FRA"}},
    "location extra key": lambda t: {**t, "location": {**t["location"], "zip": "1"}},
    "short id": lambda t: {**t, "txn_id": t["txn_id"][:63]},
    "upper-case id": lambda t: {**t, "txn_id": "A" + t["txn_id"][1:]},
}


@pytest.mark.parametrize("breaker", sorted(BREAKERS))
@given(txn=transactions())
def test_each_broken_rule_is_rejected_with_a_reason(breaker: str, txn: dict[str, Any]) -> None:
    bad = BREAKERS[breaker](txn)
    with pytest.raises(InvalidTransaction) as info:
        validate(encode(bad))
    assert str(info.value)


@given(txn=transactions(), amount=amounts)
def test_txn_id_is_opaque(txn: dict[str, Any], amount: float) -> None:
    """Any 64-hex id is accepted with any content: the consumer never recomputes it."""
    changed = {**txn, "amount": amount}
    assert validate(encode(changed)) == changed


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_validator(raw: bytes) -> None:
    try:
        validate(raw)
    except InvalidTransaction as exc:
        assert str(exc)


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                        max_size=3)))
def test_arbitrary_json_is_rejected_cleanly(value: Any) -> None:
    with pytest.raises(InvalidTransaction):
        validate(orjson.dumps(value))


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"txn_id": "x"}', "missing field"),
])
def test_reasons_are_specific(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidTransaction, match=reason):
        validate(raw)


@pytest.mark.parametrize("timestamp", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_timestamp_without_a_utc_date_is_rejected(timestamp: str) -> None:
    """The sink stores the UTC instant: a time that has none is a dead letter here, not a crash
    there."""
    with pytest.raises(InvalidTransaction, match="out of range in UTC"):
        contract.parse_timestamp(timestamp)
