"""The producer's deliberately invalid messages (app/producer/faults.py, ``--bad-rate``)."""

from __future__ import annotations

import re
from collections import Counter

import orjson
import pytest

from app import contract
from app.producer import ALL_KINDS, BAD_KINDS, TIME_KINDS
from app.producer.faults import FUTURE_BY_MS, LATE_BY_MS
from tables import windows
from tests.unit.app.producer.factories import START, small

EXPECTED_REASON = {
    "bad_json": r"not valid JSON",
    "missing_field": r"missing field",
    "wrong_type": r"amount must be a number",
    "negative_amount": r"amount -[\d.]+ is not in \(0,",
    "bad_currency": r"currency must be an ISO 4217 code",
    "oversize_string": r"merchant_id is longer than 64",
}


def test_bad_messages_are_invalid_in_the_listed_ways() -> None:
    f = small(11, bad_rate=0.2)
    seen: Counter[str] = Counter()
    for msg in f.messages(0, 3000):
        if msg.bad is None:
            contract.validate(msg.value)
            continue
        seen[msg.bad] += 1
        with pytest.raises(contract.InvalidTransaction) as err:
            contract.validate(msg.value)
        assert re.search(EXPECTED_REASON[msg.bad], str(err.value)), (msg.bad, str(err.value))
        assert msg.anomaly is None and msg.key == msg.user_id.encode()
    assert set(seen) == set(BAD_KINDS)
    assert 450 < sum(seen.values()) < 750


def test_bad_rate_leaves_the_good_messages_unchanged() -> None:
    clean, dirty = small(12), small(12, bad_rate=0.3)
    for a, b in zip(clean.messages(0, 2000), dirty.messages(0, 2000), strict=True):
        if b.bad is None:
            assert a == b


def test_time_faults_are_valid_transactions_at_times_the_worker_refuses() -> None:
    clock_ms = START + 3 * 86_400_000  # the run's event time is behind the wall clock
    f = small(13, bad_rate=0.3, bad_kinds=ALL_KINDS, clock_ms=clock_ms)
    clean = small(13)
    seen: Counter[str] = Counter()
    stream_time = windows.NO_STREAM_TIME
    for msg, good in zip(f.messages(0, 3000), clean.messages(0, 3000), strict=True):
        seen[msg.bad or "valid"] += 1
        if msg.bad not in TIME_KINDS:
            if msg.bad is None:
                stream_time = max(stream_time, msg.timestamp_ms / 1000)
            continue
        txn = contract.validate(msg.value)  # nothing wrong with the message itself
        assert txn["txn_id"] == good.txn_id and msg.key == good.key
        payload_ms = contract.parse_timestamp(txn["timestamp"]).timestamp() * 1000
        assert msg.timestamp_ms == payload_ms  # the Kafka timestamp is the payload's
        assert {k: v for k, v in txn.items() if k != "timestamp"} == \
            {k: v for k, v in orjson.loads(good.value).items() if k != "timestamp"}
        if msg.bad == "late_event":
            assert msg.timestamp_ms == good.timestamp_ms - LATE_BY_MS
            if stream_time != windows.NO_STREAM_TIME:
                assert windows.is_late(msg.timestamp_ms / 1000, stream_time, 7)
        else:
            assert msg.timestamp_ms == clock_ms + FUTURE_BY_MS
            assert windows.is_future(msg.timestamp_ms / 1000, clock_ms / 1000 + 60, 300)
    assert set(seen) == {"valid", *ALL_KINDS}


def test_a_future_event_is_a_day_ahead_of_event_time_that_runs_ahead() -> None:
    f = small(14, bad_rate=1.0, bad_kinds=("future_event",), clock_ms=START - 10_000)
    for msg in f.messages(0, 50):
        assert msg.timestamp_ms == START + msg.seq + FUTURE_BY_MS  # 1 ms steps


def test_default_kinds_are_the_contract_faults_and_unknown_kinds_are_refused() -> None:
    assert set(BAD_KINDS) | set(TIME_KINDS) == set(ALL_KINDS)
    assert {m.bad for m in small(15, bad_rate=1.0).messages(0, 500)} == set(BAD_KINDS)
    with pytest.raises(ValueError):
        small(15, bad_kinds=("late_event", "typo"))
    with pytest.raises(ValueError):
        small(15, bad_kinds=())
