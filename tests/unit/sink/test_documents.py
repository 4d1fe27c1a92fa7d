"""``agents.sink.documents``: documents from messages, dead-letter records, rollup numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.sink import documents as docs
from agents.sink.exceptions import PoisonMessage
from app.contract import minute_of
from tests.sink_data import enriched_stream

ENRICHED, ANOMALIES = enriched_stream(400)


def test_transaction_doc_is_id_user_time_and_the_message_text() -> None:
    value = dict(ENRICHED[7], timestamp="2026-11-25T13:59:58.123456+02:00")
    doc = docs.transaction_doc(value)
    assert doc.keys() == {"_id", "user_id", "timestamp", "txn"}
    assert doc["_id"] == value["txn_id"] and doc["user_id"] == value["user_id"]
    assert doc["timestamp"] == datetime(2026, 11, 25, 11, 59, 58, 123000, tzinfo=UTC)
    assert doc["txn"] == orjson.dumps(value).decode()
    assert docs.unpack_transaction(doc) == value


def test_transaction_keeps_the_message_bytes_and_the_counted_fields() -> None:
    """The stored text is the message as the worker wrote it (spacing, key order, number
    spelling), parsed once; the fields the aggregates count have dates, day and minute."""
    value = dict(ENRICHED[7], timestamp="2026-11-25T13:59:58.123456+02:00")
    raw = b'{ "note" : 1.50e1,\n' + orjson.dumps(value)[1:]
    doc, fields = docs.transaction(raw)
    assert doc["txn"].encode() == raw
    assert docs.unpack_transaction(doc) == {**value, "note": 15.0}
    assert fields["_id"] == value["txn_id"] and fields["day"] == "2026-11-25"
    assert fields["minute"] == datetime(2026, 11, 25, 11, 59, tzinfo=UTC)
    assert fields["timestamp"] == doc["timestamp"]
    assert isinstance(fields["processed_at"], datetime)
    for field in ("amount", "user_txn_count", "user_running_mean", "z_score", "is_anomaly",
                  "user_daily_spend", "location", "merchant_id", "currency"):
        assert fields[field] == value[field]


json_leaves = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
               | st.floats(allow_nan=False, allow_infinity=False)
               | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20))
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=6)


@given(base=st.sampled_from(ENRICHED[:50]),
       extra=st.dictionaries(st.text(max_size=12), json_values, max_size=4),
       user=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30),
       amount=st.floats(0, 1e6, allow_nan=False), when=st.datetimes(
           min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.just(UTC)))
def test_enriched_dict_to_document_and_back(base: dict, extra: dict, user: str, amount: float,
                                            when: datetime) -> None:
    value = {**extra, **base, "user_id": user, "amount_reporting": amount,
             "timestamp": when.isoformat()}
    doc = docs.transaction_doc(value)
    assert docs.unpack_transaction(doc) == value
    assert doc["timestamp"] == docs.to_date(value["timestamp"])
    raw = orjson.dumps(value, option=orjson.OPT_INDENT_2)
    stored, fields = docs.transaction(raw)
    assert stored["txn"].encode() == raw and docs.unpack_transaction(stored) == value
    derived = ("_id", "timestamp", "processed_at", "day", "minute")  # the sink's own values
    assert {k: fields[k] for k in value if k not in derived} == \
        {k: v for k, v in value.items() if k not in derived}


def test_anomaly_doc() -> None:
    doc = docs.anomaly_doc(ANOMALIES[0])
    assert doc["_id"] == ANOMALIES[0]["txn_id"]
    assert isinstance(doc["detected_at"], datetime) and doc["z_score"] > 3


@pytest.mark.parametrize("raw, reason", [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
])
def test_parse_json_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        docs.parse_json(raw)


@pytest.mark.parametrize("change, reason", [
    ({"txn_id": None}, "txn_id"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"timestamp": "2026-11-25T10:00:00"}, "UTC offset"),
    ({"processed_at": 17}, "processed_at"),
    ({"amount_reporting": "12.50"}, "amount_reporting must be a finite number"),
    ({"amount_reporting": float("nan")}, "amount_reporting must be a finite number"),
    ({"amount_reporting": True}, "amount_reporting must be a finite number"),
    ({"reporting_currency": "usd"}, "reporting_currency"),
    ({"reporting_currency": None}, "reporting_currency"),
])
def test_transaction_doc_rejects(change: dict[str, object], reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        docs.transaction_doc({**ENRICHED[0], **change})


@pytest.mark.parametrize("make", [docs.transaction_doc, docs.anomaly_doc])
@pytest.mark.parametrize("field", ["amount_reporting", "reporting_currency"])
def test_a_message_without_the_reporting_amount_is_poison(make: object, field: str) -> None:
    """No revenue figure can count a message the worker did not convert: it is a dead
    letter whose reason says what is missing."""
    value = dict(ENRICHED[0] if make is docs.transaction_doc else ANOMALIES[0])
    del value[field]
    with pytest.raises(PoisonMessage, match=field):
        docs.transaction_doc(value) if make is docs.transaction_doc else docs.anomaly_doc(value)


def test_documents_keep_both_amounts() -> None:
    value = next(e for e in ENRICHED if e["currency"] == "JPY")
    doc = docs.unpack_transaction(docs.transaction_doc(dict(value)))
    assert (doc["amount"], doc["currency"]) == (value["amount"], "JPY")
    assert (doc["amount_reporting"], doc["reporting_currency"]) == (
        value["amount_reporting"], "USD")
    assert doc["amount_reporting"] < doc["amount"]
    anomaly = docs.anomaly_doc(dict(ANOMALIES[0]))
    assert anomaly["amount_reporting"] == ANOMALIES[0]["amount_reporting"]
    assert anomaly["reporting_currency"] == "USD"


def test_messages_round_trip_through_json() -> None:
    raw = orjson.dumps(ENRICHED[3])
    assert docs.transaction_doc(docs.parse_json(raw))["_id"] == ENRICHED[3]["txn_id"]
    assert docs.transaction(raw)[0]["_id"] == ENRICHED[3]["txn_id"]


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'{"txn_id": 3}', b"\xff{}"])
def test_transaction_of_poison_raises(raw: bytes) -> None:
    with pytest.raises(PoisonMessage):
        docs.transaction(raw)


def test_dlq_doc_uses_the_original_coordinates() -> None:
    headers = {"dlq.reason": b"not valid JSON", "dlq.topic": b"p-transactions",
               "dlq.partition": b"3", "dlq.offset": b"41",
               "dlq.failed_at": b"2026-11-25T10:00:00+00:00"}
    doc = docs.dlq_doc(b"\xffbad", headers, "p-transactions_dlq", 0, 9, 1.0)
    assert doc["_id"] == "p-transactions:3:41"
    assert (doc["topic"], doc["partition"], doc["offset"]) == ("p-transactions", 3, 41)
    assert doc["reason"] == "not valid JSON"
    assert doc["failed_at"] == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert doc["original"] == "\ufffdbad"


def test_dlq_doc_without_headers_uses_its_own_coordinates() -> None:
    doc = docs.dlq_doc(b"x", {}, "p-transactions_dlq", 2, 5, 1_700_000_000.0)
    assert doc["_id"] == "p-transactions_dlq:2:5" and doc["reason"] == "unknown"
    assert doc["failed_at"] == datetime.fromtimestamp(1_700_000_000, UTC)


def test_dead_letter_doc() -> None:
    doc = docs.dead_letter_doc(b'{"a": 1}', "rejected", "p-anomalies", 1, 2)
    assert doc["_id"] == "p-anomalies:1:2" and doc["stage"] == "sink"
    assert doc["reason"] == "sink: rejected" and doc["original"] == '{"a": 1}'


def test_an_entry_dead_letters_under_its_own_coordinates() -> None:
    entry = docs.Entry(None, b"\xff", "p-anomalies", 1, 2, "not valid JSON")
    dead = entry.dead_letter(entry.error)
    assert dead["_id"] == "p-anomalies:1:2" and dead["reason"] == "sink: not valid JSON"
    assert dead["original"] == "\ufffd" and dead["stage"] == "sink"


# --- rollup numbers ---------------------------------------------------------------------------
amounts = st.lists(st.tuples(st.decimals(min_value="0.01", max_value="1000000", places=2),
                             st.booleans(), st.integers(0, 3)), max_size=60)


@given(amounts, st.randoms())
def test_rollup_totals_are_exact_and_order_free(items: list, rnd: object) -> None:
    def parts_of(rows: list) -> dict[int, list[int]]:
        parts: dict[int, list[int]] = {}
        for offset, (amount, anomaly, partition) in enumerate(rows):
            part = parts.setdefault(partition, [0, 0, 0, -1])
            part[0] += 1
            part[1] += round(float(amount) * 100)
            part[2] += int(anomaly)
            part[3] = offset
        return parts

    shuffled = list(items)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    value = docs.sum_parts(parts_of(items).values())
    assert docs.sum_parts(parts_of(shuffled).values()) == value
    assert value["count"] == len(items)
    assert value["cents"] == sum(int(a * 100) for a, _, _ in items)
    assert value["anomalies"] == sum(1 for _, a, _ in items if a)
    numbers = docs.rollup_numbers(value)
    assert Decimal(str(numbers["revenue"])) == sum((a for a, _, _ in items), Decimal(0))


def test_rollup_numbers_and_minutes() -> None:
    minute = datetime(2026, 11, 25, 23, 14, tzinfo=UTC)
    assert docs.rollup_numbers({"count": 3, "cents": 1005, "anomalies": 1}) == \
        {"count": 3, "revenue": 10.05, "anomalies": 1}
    assert docs.minute_id(minute) == "2026-11-25T23:14:00Z"
    assert minute_of(datetime(2026, 1, 1, 5, 6, 7, 8, tzinfo=UTC)) == \
        datetime(2026, 1, 1, 5, 6, tzinfo=UTC)
