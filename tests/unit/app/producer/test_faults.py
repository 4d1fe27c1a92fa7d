"""The producer's deliberately invalid messages (app/producer/faults.py, ``--bad-rate``)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from app import contract
from app.producer import BAD_KINDS
from tests.unit.app.producer.factories import small

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
