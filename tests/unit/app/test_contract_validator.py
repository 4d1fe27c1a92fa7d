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
from app.rates import CURRENCIES

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
        "currency": draw(st.sampled_from(sorted(CURRENCIES))),
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
    "currency not in the rates table": lambda t: {**t, "currency": "XYZ"},
    "currency with a newline": lambda t: {**t, "currency": t["currency"] + "\n"},
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


@given(txn=transactions(), currency=st.from_regex(r"[A-Z]{3}", fullmatch=True))
def test_a_well_formed_currency_outside_the_rates_table(txn: dict[str, Any],
                                                        currency: str) -> None:
    """The format is checked first; a well-formed code must also be a row of the rates table,
    with this exact reason."""
    changed = {**txn, "currency": currency}
    if currency in CURRENCIES:
        assert validate(encode(changed)) == changed
        return
    with pytest.raises(InvalidTransaction) as info:
        validate(encode(changed))
    assert str(info.value) == f"currency '{currency}' is not in the rates table"


@given(txn=transactions())
def test_the_currency_format_is_checked_before_the_table(txn: dict[str, Any]) -> None:
    for bad in ("usd", "US", "EURO", 840, None):
        with pytest.raises(InvalidTransaction, match="must be an ISO 4217 code"):
            validate(encode({**txn, "currency": bad}))


@pytest.mark.parametrize("timestamp", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_timestamp_without_a_utc_date_is_rejected(timestamp: str) -> None:
    """The sink stores the UTC instant: a time that has none is a dead letter here, not a crash
    there."""
    with pytest.raises(InvalidTransaction, match="out of range in UTC"):
        contract.parse_timestamp(timestamp)


@pytest.mark.parametrize("timestamp", [
    "20240101T000000+0000",  # ISO 8601 basic format
    "2024-W01-1T00:00:00Z",  # ISO week date
    "2024-001T00:00:00Z",  # ISO ordinal date
    "2024-01-01T00:00:00Z\x00",  # a trailing NUL
    "2024-01-01T00:00:00Z\n",  # a trailing newline
    " 2024-01-01T00:00:00Z",  # a leading space
    "2024-01-01T00:00:00+24:00",  # offsets are -23:59 to +23:59
    "2024-01-01T00:00:00-24:00",
    "2024-01-01T00:00:00+23:60",
    "2024-01-01t00:00:00Z",  # lower-case t
    "2024-01-01T00:00:00z",  # lower-case z
    "2024-01-01T00:00:00.Z",  # an empty fraction
    "2024-01-01T00:00:00.1234567890Z",  # a fraction of 10 digits
    "2024-01-01T00:00:00.123456789012345678901234567890Z",
    "2024-01-01T00:00:00+00:00:00",  # seconds in the offset
    "2024-01-01T00:00:00UTC",
    "2024-13-01T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T23:59:60Z",  # a leap second
    "0000-01-01T00:00:00Z",
])
def test_timestamps_that_are_not_strict_rfc_3339_are_rejected(timestamp: str) -> None:
    with pytest.raises(InvalidTransaction, match="timestamp"):
        contract.parse_timestamp(timestamp)


@pytest.mark.parametrize(("timestamp", "utc"), [
    ("2024-01-01T00:00:00.1Z", datetime(2024, 1, 1, 0, 0, 0, 100000, UTC)),
    ("2024-01-01T00:00:00.123456789Z", datetime(2024, 1, 1, 0, 0, 0, 123456, UTC)),
    ("2024-01-01T00:30:00+23:59", datetime(2023, 12, 31, 0, 31, tzinfo=UTC)),
    ("2024-01-01T00:00:00-23:59", datetime(2024, 1, 1, 23, 59, tzinfo=UTC)),
    ("9999-12-31T23:59:59+01:00", datetime(9999, 12, 31, 22, 59, 59, tzinfo=UTC)),
    ("0001-01-01T00:00:00-01:00", datetime(1, 1, 1, 1, 0, tzinfo=UTC)),
])
def test_strict_rfc_3339_timestamps_are_accepted(timestamp: str, utc: datetime) -> None:
    assert contract.parse_timestamp(timestamp) == utc


@pytest.mark.parametrize("amount", [100_000.001, 999_999.995, 1e-9, 0.001, 0.005, 10.0001])
def test_amounts_that_are_not_whole_cents_are_rejected(amount: float) -> None:
    txn = {"txn_id": "0" * 64, "user_id": "u", "amount": amount, "currency": "USD",
           "timestamp": "2026-11-25T10:00:00Z", "merchant_id": "m",
           "merchant_category": "grocery", "payment_method": "paypal", "status": "approved",
           "location": {"city": "Lyon", "country": "FR"}}
    with pytest.raises(InvalidTransaction, match="not a whole number of cents"):
        validate(encode(txn))
    for ok in (0.01, 0.07, 100_000.01, 999_999.99, 1_000_000):
        assert validate(encode({**txn, "amount": ok}))["amount"] == ok
