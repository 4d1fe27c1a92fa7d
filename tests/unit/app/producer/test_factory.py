"""The producer's transaction factory (app/producer/factory.py, its pools): contract,
determinism, ids, event time, realism. No services needed (app.producer imports without Faust
and without a broker)."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import contract
from app.producer import BLOCK, COUNTRIES, TransactionFactory, make_txn_id, step_us_for
from tests.unit.app.producer.factories import START, small


@pytest.fixture(scope="module")
def factory() -> TransactionFactory:
    return TransactionFactory(seed=42, start_ms=START)


property_settings = settings(max_examples=15, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@property_settings
@given(seed=st.integers(0, 2**32 - 1), first=st.integers(0, 10**9),
       anomaly_rate=st.sampled_from([0.0, 0.002, 0.5, 1.0]))
def test_every_transaction_validates(seed: int, first: int, anomaly_rate: float) -> None:
    f = small(seed, anomaly_rate=anomaly_rate)
    for msg in f.messages(first, 300):
        txn = contract.validate(msg.value)
        assert msg.bad is None
        assert txn["txn_id"] == msg.txn_id
        assert txn["user_id"] == msg.user_id == msg.key.decode()
        assert contract.parse_timestamp(txn["timestamp"]).timestamp() * 1000 == msg.timestamp_ms
        if anomaly_rate in (0.0, 1.0):
            assert (msg.anomaly is not None) == (anomaly_rate == 1.0)


@property_settings
@given(seed=st.integers(0, 2**32 - 1), seqs=st.lists(st.integers(0, 10**12), min_size=1,
                                                      max_size=20))
def test_same_seed_same_bytes(seed: int, seqs: list[int]) -> None:
    a, b = small(seed), small(seed)
    for seq in seqs:
        assert a.make(seq) == b.make(seq)


@property_settings
@given(seeds=st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=2, unique=True))
def test_different_seeds_different_ids(seeds: list[int]) -> None:
    a, b = (small(s) for s in seeds)
    ids_a = {m.txn_id for m in a.messages(0, 500)}
    ids_b = {m.txn_id for m in b.messages(0, 500)}
    assert not ids_a & ids_b


def test_ids_unique_in_a_run_of_a_million(factory: TransactionFactory) -> None:
    ids = {m.txn_id for m in factory.messages(0, 1_000_000)}
    assert len(ids) == 1_000_000


def test_random_access_equals_stream_across_blocks(factory: TransactionFactory) -> None:
    stream = list(factory.messages(BLOCK - 5, 10))
    assert [factory.make(m.seq) for m in stream] == stream
    assert [m.seq for m in stream] == list(range(BLOCK - 5, BLOCK + 5))


def test_byte_for_byte_pinned(factory: TransactionFactory) -> None:
    """The exact bytes of one transaction: a change of the generator shows up here (replays of
    an older run would no longer give the same ids)."""
    msg = factory.make(0)
    txn = contract.validate(msg.value)
    assert txn["timestamp"] == "2026-11-18T11:06:40.000+00:00"
    assert msg.value.startswith(b'{"txn_id":"' + msg.txn_id.encode() + b'","amount":')
    assert TransactionFactory(seed=42, start_ms=START).make(0).value == msg.value
    # Pinned ids (seed 42, START, defaults): the same in every process and on every machine.
    assert msg.txn_id == "c2ba2fd12ca5986c73cb83dffbfab3577b6e167bc809b48474973210132a6b14"
    assert factory.make(123456).txn_id == (
        "50fe110c1a7f2360c494b7ba585bfe0b765f530e0bc80e114fecf134ec099cad")


@property_settings
@given(seed=st.integers(0, 2**32 - 1), seq=st.integers(0, 10**9))
def test_txn_id_is_derived_from_seed_sequence_and_content(seed: int, seq: int) -> None:
    msg = small(seed).make(seq)
    content = {k: v for k, v in orjson.loads(msg.value).items() if k != "txn_id"}
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    assert msg.txn_id == make_txn_id(seed, seq, canonical)
    # Two identical purchases (same content) at other sequence numbers or seeds: other ids.
    assert make_txn_id(seed, seq + 1, canonical) != msg.txn_id
    assert make_txn_id(seed + 1, seq, canonical) != msg.txn_id
    assert make_txn_id(seed, seq, canonical + b" ") != msg.txn_id


def test_timestamps_move_forward() -> None:
    f = small(3, step_us=250)
    msgs = list(f.messages(0, 5000))
    times = [m.timestamp_ms for m in msgs]
    assert times == sorted(times)
    assert times[0] == START and times[-1] == START + 4999 * 250 // 1000
    parsed = [datetime.fromisoformat(orjson.loads(m.value)["timestamp"]) for m in msgs[::97]]
    assert parsed == sorted(parsed)


def test_time_scale_crosses_a_utc_day() -> None:
    # 1000/s at 100x: 100 event seconds per wall second; 0.9 M seqs = 25 h of event time.
    f = small(5, step_us=step_us_for(1000, 100))
    days = {orjson.loads(f.make(seq).value)["timestamp"][:10] for seq in (0, 900_000)}
    assert len(days) == 2


def test_profiles_are_realistic(factory: TransactionFactory) -> None:
    users = {u.user_id: u for u in factory.users}
    currency_of = {c[0]: c[1] for c in COUNTRIES}
    by_user: dict[str, list[dict]] = {}
    for msg in factory.messages(0, 50_000):
        txn = orjson.loads(msg.value)
        by_user.setdefault(txn["user_id"], []).append(txn)
    assert len(by_user) > 5_000
    home = methods_ok = total = 0
    for user_id, txns in by_user.items():
        user = users[user_id]
        assert user.currency == currency_of[user.country]
        for txn in txns:
            total += 1
            assert txn["currency"] == user.currency
            home += txn["location"] == {"city": user.city, "country": user.country}
            methods_ok += txn["payment_method"] in user.methods
    assert 0.93 < home / total < 0.99
    assert methods_ok / total > 0.88
    # Per user, normal amounts stay within the profile (z stays meaningful).
    busiest = max(by_user.values(), key=len)
    user = users[busiest[0]["user_id"]]
    amounts = [t["amount"] for t in busiest]
    assert len(amounts) > 30
    assert abs(statistics.median(amounts) / user.typical - 1) < 0.2
    statuses = Counter(orjson.loads(m.value)["status"] for m in factory.messages(0, 20_000))
    assert statuses.most_common(1)[0][0] == "approved" and set(statuses) == set(contract.STATUSES)
    assert {m.category for m in factory.merchants} <= set(contract.CATEGORIES)


def test_anomalies_are_far_outside_the_profile() -> None:
    f = TransactionFactory(seed=9, users=500, merchants=50, anomaly_rate=0.01, start_ms=START)
    users = {u.user_id: u for u in f.users}
    msgs = list(f.messages(0, 50_000))
    anomalies = [m for m in msgs if m.anomaly]
    assert 350 < len(anomalies) < 650
    for msg in anomalies:
        txn = contract.validate(msg.value)
        user = users[msg.user_id]
        truth = msg.anomaly
        assert truth["txn_id"] == msg.txn_id and truth["seq"] == msg.seq
        assert truth["amount"] == txn["amount"] and truth["kind"] == "amount_spike"
        sigmas = (txn["amount"] / user.typical - 1) / user.spread
        assert sigmas >= 9.9 or txn["amount"] == contract.MAX_AMOUNT
    normal = [orjson.loads(m.value)["amount"] for m in msgs if not m.anomaly]
    for amount, msg in zip(normal[:2000], [m for m in msgs if not m.anomaly][:2000],
                           strict=True):
        user = users[msg.user_id]
        assert abs(amount / user.typical - 1) <= 2.5 * user.spread + 0.01


def test_factory_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        TransactionFactory(users=0)
    with pytest.raises(ValueError):
        TransactionFactory(anomaly_rate=1.5)
    with pytest.raises(ValueError):
        TransactionFactory(step_us=-1)
    with pytest.raises(ValueError):
        next(small(1).messages(-1, 1))


def test_same_bytes_in_every_process() -> None:
    """Faker draws must not depend on the process (PYTHONHASHSEED): a replay in another process
    must give the same ids."""
    import os
    import subprocess
    import sys

    code = ("import hashlib; from app.producer import TransactionFactory as F; "
            "f = F(seed=7, users=3000, merchants=300, start_ms=1795219170000); "
            "print(hashlib.sha256(b''.join(m.value for m in f.messages(0, 5000))).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": str(h)}
                              ).stdout.strip() for h in (1, 2)}
    assert len(digests) == 1
    f = TransactionFactory(seed=7, users=3000, merchants=300, start_ms=1795219170000)
    import hashlib
    assert digests == {hashlib.sha256(b"".join(m.value for m in f.messages(0, 5000))).hexdigest()}
