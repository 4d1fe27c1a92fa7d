"""The JSON Schemas of ``schemas/`` and the worker's validator (:func:`app.contract.validate`)
agree, and the processing agent's outputs satisfy their schemas.

- every transaction generated from ``transactions.schema.json`` passes the validator;
- targeted mutations of such a transaction are rejected by the validator and by two JSON Schema
  implementations (``jsonschema``; ``jsonschema_rs``, which also asserts ``format``);
- the enriched and anomaly messages the real agent publishes for a varied input validate;
- amounts not in whole cents, timestamps beyond RFC 3339, currencies not in the rates table fail.

Two rules live outside plain JSON Schema (docs/contract.md): at most two decimals in ``amount``
(:func:`two_decimals`, checked on the JSON number's decimal form) and ``format: date-time``,
which only ``jsonschema_rs`` is told to assert here.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import jsonschema
import jsonschema_rs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from agents import processor
from app import contract
from app.contract import InvalidTransaction, validate
from app.rates import CURRENCIES, REPORTING_CURRENCY, to_reporting
from tests.unit import agent_harness as harness
from tests.unit.app.contract_schemas import (
    ANOMALIES,
    ENRICHED,
    REGISTRY,
    SCHEMAS,
    TRANSACTIONS,
    resolved_schema,
)

PY = {name: jsonschema.Draft202012Validator(schema, registry=REGISTRY)
      for name, schema in SCHEMAS.items()}
_RS_REGISTRY = jsonschema_rs.Registry(list(SCHEMAS.items()))
RS = {name: jsonschema_rs.validator_for(schema, registry=_RS_REGISTRY, validate_formats=True)
      for name, schema in SCHEMAS.items()}

#: Fields whose numbers have at most two decimals (the rule JSON Schema cannot state).
CENTS_FIELDS = {TRANSACTIONS: ("amount",),
                ENRICHED: ("amount", "amount_reporting", "user_daily_spend"),
                ANOMALIES: ("amount", "amount_reporting")}
FIELDS = list(contract.FIELDS)
ENUMS = {"merchant_category": contract.CATEGORIES, "payment_method": contract.PAYMENT_METHODS,
         "status": contract.STATUSES}
#: Examples per mutation test (the whole file runs in about 15 s).
SOME = settings(max_examples=60, deadline=None)


def two_decimals(amount: float) -> bool:
    """At most two decimal places in the number's JSON form (Python's repr and orjson both
    write the shortest text that reads back to the same float)."""
    exponent = Decimal(repr(amount)).as_tuple().exponent
    return isinstance(exponent, int) and exponent >= -2


def schema_verdicts(instance: Any, name: str = TRANSACTIONS) -> tuple[bool, bool]:
    """(jsonschema accepts, jsonschema_rs accepts) ``instance``."""
    return PY[name].is_valid(instance), RS[name].is_valid(instance)


def satisfies(instance: dict[str, Any], name: str) -> bool:
    """The whole contract of ``name``: both schema validators and the two-decimal rule."""
    return (schema_verdicts(instance, name) == (True, True)
            and all(two_decimals(instance[f]) for f in CENTS_FIELDS[name]))


def objects(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``from_schema(schema)``, building objects field by field.

    hypothesis-jsonschema 0.23.1 cannot generate objects with this Hypothesis (its object
    strategy calls ``many.more()``, gone from Hypothesis' internals). The contract's objects
    admit exactly one key set (all properties required, no others), so a fixed dictionary of
    ``from_schema`` per property generates the same instances."""
    if schema.get("type") != "object":
        return from_schema(schema)
    assert schema["additionalProperties"] is False
    assert schema["required"] == list(schema["properties"])
    return st.fixed_dictionaries({k: objects(v) for k, v in schema["properties"].items()})


def with_cents(txn: dict[str, Any]) -> dict[str, Any]:
    """The one rule the schema cannot state: round ``amount`` (already in [0.01, 1e6]) to cents;
    the result stays in range."""
    return {**txn, "amount": round(txn["amount"], 2)}


def in_utc_range(txn: dict[str, Any]) -> bool:
    """The other rule the schema can only describe: the timestamp's UTC instant lies in years
    1-9999 (only the range's first and last day, with an offset, can leave it)."""
    try:
        datetime.fromisoformat(txn["timestamp"]).astimezone(UTC)
    except OverflowError:
        return False
    return True


VALID = objects(resolved_schema(TRANSACTIONS)).map(with_cents).filter(in_utc_range)


def rejected(instance: Any, raw: bytes | None = None, by_schema: bool = True) -> None:
    """The validator rejects ``instance`` (or its JSON text ``raw``), and so does the schema
    (``by_schema``: both schema validators on their own; else the two-decimal rule)."""
    with pytest.raises(InvalidTransaction):
        validate(orjson.dumps(instance) if raw is None else raw)
    if by_schema:
        assert schema_verdicts(instance) == (False, False)
    else:
        assert not two_decimals(instance["amount"])


# --- (a) what the schema allows, the validator accepts ----------------------------------------
@settings(max_examples=200, deadline=None)
@given(VALID)
def test_every_schema_instance_passes_the_validator(txn: dict[str, Any]) -> None:
    assert satisfies(txn, TRANSACTIONS)  # the generator respects the schema, formats included
    assert validate(orjson.dumps(txn)) == txn


# --- (b) what the schema forbids, the validator rejects ---------------------------------------
@SOME
@given(VALID, st.sampled_from(FIELDS))
def test_a_missing_field(txn: dict[str, Any], field: str) -> None:
    rejected({k: v for k, v in txn.items() if k != field})


@SOME
@given(VALID, st.text(min_size=1, max_size=20).filter(lambda k: k not in contract.FIELDS),
       st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text()))
def test_an_unknown_field(txn: dict[str, Any], key: str, value: Any) -> None:
    rejected({**txn, key: value})


_INT64 = st.integers(-(2**63), 2**63 - 1)  # what orjson writes
_ANY_JSON = {"null": st.none(), "boolean": st.booleans(), "integer": _INT64,
             "number": st.floats(allow_nan=False, allow_infinity=False, min_value=0.01,
                                 max_value=1e6).map(lambda x: round(x, 2)),
             "string": st.text(max_size=10), "array": st.lists(_INT64, max_size=2),
             "object": st.dictionaries(st.text(max_size=5), _INT64, max_size=2)}
#: JSON types that are not a field's type (booleans are not numbers, integers are).
_WRONG = {"string": ("null", "boolean", "integer", "number", "array", "object"),
          "number": ("null", "boolean", "string", "array", "object"),
          "object": ("null", "boolean", "integer", "number", "string", "array")}


@SOME
@given(VALID, st.sampled_from(FIELDS), st.data())
def test_a_value_of_the_wrong_type(txn: dict[str, Any], field: str, data: st.DataObject) -> None:
    kind = resolved_schema(TRANSACTIONS)["properties"][field]["type"]
    wrong = data.draw(st.sampled_from(_WRONG[kind]).flatmap(_ANY_JSON.__getitem__))
    rejected({**txn, field: wrong})


@SOME
@given(VALID, st.sampled_from(["upper-case", "63", "65", "non-hex", "empty"]))
def test_a_malformed_txn_id(txn: dict[str, Any], how: str) -> None:
    txn_id = txn["txn_id"]
    bad = {"upper-case": txn_id[:-1] + "F", "63": txn_id[:-1], "65": txn_id + "0",
           "non-hex": txn_id[:-1] + "g", "empty": ""}[how]
    rejected({**txn, "txn_id": bad})


@SOME
@given(VALID, st.sampled_from(["user_id", "merchant_id"]),
       st.one_of(st.just(""), st.text(min_size=contract.MAX_ID_LENGTH + 1, max_size=80)))
def test_an_empty_or_too_long_id(txn: dict[str, Any], field: str, bad: str) -> None:
    rejected({**txn, field: bad})


@SOME
@given(VALID, st.sampled_from(["zero", "negative", "just above", "far above", "huge"]))
def test_an_amount_out_of_range(txn: dict[str, Any], how: str) -> None:
    amount = txn["amount"]
    bad = {"zero": 0, "negative": -amount, "just above": 1_000_000.01, "far above": 10**7,
           "huge": 1e300}[how]
    rejected({**txn, "amount": bad})


@settings(max_examples=20, deadline=None)
@given(VALID, st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]))
def test_an_amount_that_is_not_a_finite_number(txn: dict[str, Any], text: str) -> None:
    # JSON has no NaN or infinity: the message text carries the token; the schema validators
    # get the float it would stand for.
    raw = orjson.dumps({**txn, "amount": 0.5}).replace(b'"amount":0.5', f'"amount":{text}'.encode())
    value = float(text.replace("1e999", "inf"))
    if text != "NaN":
        rejected({**txn, "amount": value}, raw=raw)
        return
    # jsonschema's bounds only fail on "value < minimum", which is false for NaN, so it takes
    # NaN as a number in range; jsonschema_rs does not. (Python's json.loads reads the NaN
    # token; orjson, the worker's parser, refuses it.)
    with pytest.raises(InvalidTransaction, match="not valid JSON"):
        validate(raw)
    assert schema_verdicts({**txn, "amount": value}) == (True, False)


@SOME
@given(VALID, st.integers(1, 9))
def test_an_amount_with_three_decimals(txn: dict[str, Any], thousandths: int) -> None:
    amount = round(min(txn["amount"], 999_999.0) + thousandths / 1000, 3)
    rejected({**txn, "amount": amount}, by_schema=False)
    assert schema_verdicts({**txn, "amount": amount}) == (True, True)  # cannot say it


@SOME
@given(VALID, st.one_of(
    st.sampled_from(["eur", "EU", "EURO", "E1R", "", "EUR\n", "ÉUR", "XYZ", "XXX"]),
    st.text(max_size=5).filter(lambda s: re.fullmatch(r"[A-Z]{3}", s) is None),
    st.from_regex(r"[A-Z]{3}", fullmatch=True).filter(lambda c: c not in CURRENCIES)))
def test_a_bad_currency(txn: dict[str, Any], currency: str) -> None:
    """Malformed, or well formed but not a row of the rates table (its own reason)."""
    rejected({**txn, "currency": currency})
    if re.fullmatch(r"[A-Z]{3}", currency):
        with pytest.raises(InvalidTransaction, match=f"^currency '{currency}' is not in the rat"):
            validate(orjson.dumps({**txn, "currency": currency}))


@SOME
@given(VALID, st.sampled_from(sorted(ENUMS)), st.text(max_size=20))
def test_an_unknown_enum_value(txn: dict[str, Any], field: str, value: str) -> None:
    if value in ENUMS[field]:
        value += "_x"
    rejected({**txn, field: value})


@SOME
@given(VALID, st.sampled_from(["extra key", "no city", "no country", "empty city", "long city",
                               "lower-case country", "three letters", "digit", "newline"]))
def test_a_bad_location(txn: dict[str, Any], how: str) -> None:
    loc = txn["location"]
    bad = {"extra key": {**loc, "zip": "75001"}, "no city": {"country": loc["country"]},
           "no country": {"city": loc["city"]}, "empty city": {**loc, "city": ""},
           "long city": {**loc, "city": "x" * (contract.MAX_CITY_LENGTH + 1)},
           "lower-case country": {**loc, "country": loc["country"].lower()},
           "three letters": {**loc, "country": loc["country"] + "X"},
           "digit": {**loc, "country": loc["country"][0] + "1"},
           "newline": {**loc, "country": loc["country"] + "\n"}}[how]
    rejected({**txn, "location": bad})


_SAMPLE = {"txn_id": "0" * 63 + "1", "user_id": "u-1", "amount": 12.5, "currency": "EUR",
           "timestamp": "2026-11-25T10:00:00+00:00", "merchant_id": "m-1",
           "merchant_category": "grocery", "payment_method": "debit_card", "status": "approved",
           "location": {"city": "Lyon", "country": "FR"}}
_OFFSET = re.compile(r"(Z|[+-][0-9]{2}:[0-9]{2})$")


@SOME
@given(VALID)
def test_a_timestamp_without_offset(txn: dict[str, Any]) -> None:
    naive = _OFFSET.sub("", txn["timestamp"])
    assert naive != txn["timestamp"]
    rejected({**txn, "timestamp": naive})


@pytest.mark.parametrize("timestamp", [
    "2026-11-25t10:00:00z",  # RFC 3339 allows lower case; Python's parser does not
    "2026-11-25T23:59:60Z",  # a leap second: RFC 3339 yes, Python no
    "0000-01-01T00:00:00Z",  # year 0: RFC 3339 yes, Python no
    "2026-11-25T10:00:00+24:00", "2026-11-25T10:00:00-24:00", "2026-11-25T10:00:00+23:60",
    "2026-11-25T10:00:00+00:00\n",
    "2026-11-25T10:00:00.1234567890Z", "2026-11-25T10:00:00.Z",  # fraction: 1 to 9 digits
    "2026-11-25",
    "",
])
def test_timestamps_both_reject(timestamp: str) -> None:
    txn = {**_SAMPLE, "timestamp": timestamp}
    rejected(txn)


@pytest.mark.parametrize("timestamp", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_timestamp_without_a_utc_instant_in_range(timestamp: str) -> None:
    """A rule the schema can only describe: both schema validators pass it, the contract not."""
    txn = {**_SAMPLE, "timestamp": timestamp}
    assert schema_verdicts(txn) == (True, True)
    with pytest.raises(InvalidTransaction, match="out of range in UTC"):
        validate(orjson.dumps(txn))
    nine = {**_SAMPLE, "timestamp": "2026-11-25T10:00:00.123456789-09:30"}  # a fraction's most
    assert satisfies(nine, TRANSACTIONS) and validate(orjson.dumps(nine)) == nine


def test_an_impossible_date_needs_format_assertion() -> None:
    txn = {**_SAMPLE, "timestamp": "2026-02-30T10:00:00Z"}
    with pytest.raises(InvalidTransaction):
        validate(orjson.dumps(txn))
    assert RS[TRANSACTIONS].is_valid(txn) is False  # format asserted
    assert PY[TRANSACTIONS].is_valid(txn) is True  # format as annotation: the pattern passes it


# --- rules a plain ISO 8601 parser or a float tolerance would let through --------------------


@pytest.mark.parametrize("amount", [123_456.789, 999_999.999, 500_000.005, 999_999.995, 1e-9,
                                    1e-300, 100_000.001, 0.001, 0.005])
def test_validator_rejects_amounts_that_are_not_whole_cents(amount: float) -> None:
    txn = {**_SAMPLE, "amount": amount}
    assert not satisfies(txn, TRANSACTIONS)  # below the schema's minimum, or not whole cents
    with pytest.raises(InvalidTransaction):
        validate(orjson.dumps(txn))


@pytest.mark.parametrize("timestamp", [
    "2026-11-25 10:00:00+00:00",  # space for T
    "2026-11-25T10:00+00:00",  # no seconds
    "2026-11-25T10Z",  # hour only
    "20261125T100000Z",  # basic format
    "2026-W48-3T10:00:00+00:00",  # week date
    "2026-11-25T10:00:00+0100",  # offset without colon
    "2026-11-25T10:00:00+01",  # offset hours only
    "2026-11-25T10:00:00,5+00:00",  # decimal comma
    "2026-11-25T10:00:00+00:00\x00",  # a trailing NUL
    "20240101T000000+0000", "2024-W01-1T00:00:00Z", "2024-001T00:00:00Z",  # basic, week, ordinal
    "2026-11-25t10:00:00Z", "2026-11-25T10:00:00z",  # lower-case t or z
])
def test_validator_rejects_iso_8601_that_is_not_rfc_3339(timestamp: str) -> None:
    txn = {**_SAMPLE, "timestamp": timestamp}
    assert schema_verdicts(txn) == (False, False)
    rejected(txn)


# --- (c) what the agent publishes satisfies its schema ----------------------------------------
def _varied_transactions() -> list[dict[str, Any]]:
    """Several users: short histories (z null), constant amounts (std 0: z null), outliers
    (anomalies), cents and whole numbers, the range's ends, offsets crossing a UTC day, every
    currency of the rates table; four days, within LATE_EVENT_GRACE_DAYS of each other."""
    rnd = random.Random(20261125)
    currencies = sorted(CURRENCIES)
    users = {"alice": [10.0, 12.0, 11.0, 9.0, 13.0, 11.0, 50.0],
             "bob": [20] * 7 + [20.01],
             "carol": [1_000_000, 0.01, 999_999.99, 500_000.5, 0.02, 3.0, 1_000_000],
             "dave": [round(rnd.lognormvariate(3, 0.4), 2) for _ in range(40)] + [5_000.0],
             "erin": [7.77] * len(currencies)}
    offsets = ["Z", "+00:00", "-05:00", "+14:00", ".250+01:00", ".123456-09:30"]
    out = []
    for user, amounts in users.items():
        for i, amount in enumerate(amounts):
            ts = f"2026-11-{20 + i % 4:02d}T{(i * 7) % 24:02d}:{i % 60:02d}:05{offsets[i % 6]}"
            # erin's one amount in every currency of the table; the others in their own
            currency = currencies[(i if user == "erin" else len(user)) % len(currencies)]
            body = {"user_id": user, "amount": amount, "currency": currency, "timestamp": ts,
                    "merchant_id": f"m-{i % 3}", "merchant_category": contract.CATEGORIES[i % 12],
                    "payment_method": contract.PAYMENT_METHODS[i % 7],
                    "status": contract.STATUSES[i % 4],
                    "location": {"city": "Lyon", "country": "FR"}}
            txn_id = hashlib.sha256(f"{user}:{i}".encode()).hexdigest()
            out.append({"txn_id": txn_id, **body})
    return out


async def test_published_messages_satisfy_their_schemas(recorder: Any) -> None:
    txns = _varied_transactions()
    assert all(satisfies(t, TRANSACTIONS) for t in txns)
    async with processor.process.test_context() as agent:
        await harness.put_all(agent, recorder, [harness.encoded(t) for t in txns],
                              expect=len(txns))
        for _ in range(200):
            if len(recorder.values(processor.ENRICHED)) >= len(txns):
                break
            await asyncio.sleep(0.02)
    enriched = recorder.values(processor.ENRICHED)
    anomalies = recorder.values(processor.ANOMALIES)
    assert not [m for m in recorder.messages if m.topic == processor.DLQ]
    assert sorted(e["txn_id"] for e in enriched) == sorted(t["txn_id"] for t in txns)
    for e in enriched:
        assert satisfies(e, ENRICHED), e
        assert list(e) == list(SCHEMAS[ENRICHED]["properties"])
    assert {e["currency"] for e in enriched} == CURRENCIES
    for a in anomalies:
        assert satisfies(a, ANOMALIES), a
        assert list(a) == list(SCHEMAS[ANOMALIES]["properties"])
    for m in (*enriched, *anomalies):  # the amount in the reporting currency
        assert (m["amount_reporting"], m["reporting_currency"]) == (
            to_reporting(m["amount"], m["currency"]), REPORTING_CURRENCY)
    # the sample reaches every branch the schemas allow
    assert {e["z_score"] is None for e in enriched} == {True, False}
    assert any(e["is_anomaly"] for e in enriched) and anomalies
    assert len(anomalies) == sum(e["is_anomaly"] for e in enriched)
    by_id = {e["txn_id"]: e for e in enriched}
    for a in anomalies:
        assert a["z_score"] == by_id[a["txn_id"]]["z_score"]
        assert a["detected_at"] == by_id[a["txn_id"]]["processed_at"]
    # the outputs are no looser than the schemas: a broken copy fails them
    assert not satisfies({**enriched[0], "user_txn_count": 0}, ENRICHED)
    assert not satisfies({**anomalies[0], "std_prev": 0.0}, ANOMALIES)
    assert not satisfies({**anomalies[0], "z_score": None}, ANOMALIES)
