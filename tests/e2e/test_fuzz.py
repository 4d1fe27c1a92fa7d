"""Fuzz, end to end on the real broker and FerretDB: hypothesis generates a few thousand messages
(random bytes, JSON mutations of valid transactions, extreme dates and numbers, unicode,
non-UTF-8 keys, Kafka timestamps off the payload's, late and future events, a few close to the
broker's size limit) and they go into ``transactions`` mixed
with valid ones, through a real ``txn worker`` and ``txn sink``. Afterwards:

- every valid message is enriched and stored exactly once, every other one is a dead letter with
  a reason, and the counts reconcile with no difference;
- both processes are still running, no agent crashed, and every committed offset reached the end
  of its partition.
"""

from __future__ import annotations

import math
import secrets
import time
from pathlib import Path
from typing import Any

import orjson
import pymongo
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from app.contract import (
    DLQ,
    ENRICHED,
    TRANSACTIONS,
    InvalidTransaction,
    parse_timestamp,
    validate,
)
from app.producer import TransactionFactory, ensure_topic
from app.settings import settings as app_settings
from tests.e2e.test_sink_e2e import committed_everything, read_topic, sink_topics
from tests.procs import TXN, Proc, free_port, pipeline_env, wait_for, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PARTITIONS = 4
BOOTSTRAP = app_settings.kafka_bootstrap_servers
GENERATED = 2_500
#: Just under the broker's default message.max.bytes (1 MiB) with the record's overhead.
NEAR_LIMIT = 1_000_000

BASES = [orjson.loads(m.value) for m in
         TransactionFactory(seed=3, users=50, merchants=20).messages(0, 200)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=8)
extreme_timestamps = st.sampled_from([
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59+00:00",
    "1970-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-25T24:00:00Z",
    "2026-11-25T10:00:60Z", "20261125T100000Z", "2026-W48-3T10:00:00+00:00",
    "2026-11-25T10:00:00+00:00\x00", "2026-11-25T10:00:00.123456789+14:00", ""])
extreme_amounts = st.sampled_from([
    0, -0.0, 0.001, 0.005, 0.01, 1e-300, 999_999.995, 1_000_000, 1_000_000.01, 1e308, 2**63,
    123_456.789, 42])
unicode_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0,
                       max_size=80)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A valid transaction of the pool with a fresh id, then zero or more mutations."""
    txn = dict(BASES[draw(st.integers(0, len(BASES) - 1))])
    txn["txn_id"] = secrets.token_hex(32)
    key = txn["user_id"].encode()
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.sampled_from(sorted(txn)))
        kind = draw(st.sampled_from(["value", "drop", "add", "timestamp", "amount", "text"]))
        if kind == "value":
            txn[field] = draw(json_values)
        elif kind == "drop":
            txn.pop(field, None)
        elif kind == "add":
            txn[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
        elif kind == "timestamp":
            txn["timestamp"] = draw(extreme_timestamps)
        elif kind == "amount":
            txn["amount"] = draw(extreme_amounts)
        else:
            txn[draw(st.sampled_from(["user_id", "merchant_id", "currency", "status"]))] = \
                draw(unicode_text)
    if draw(st.booleans()) and isinstance(txn.get("user_id"), str):
        key = txn["user_id"].encode()  # keep the key in step with a changed user_id, mostly
    return key, orjson.dumps(txn, option=orjson.OPT_NON_STR_KEYS)


def _bad_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return True
    return False


messages = st.one_of(
    st.tuples(st.binary(max_size=8), st.binary(max_size=300)),  # random bytes
    st.tuples(st.binary(min_size=1, max_size=6).filter(_bad_utf8),  # non-UTF-8 keys
              st.integers(0, len(BASES) - 1).map(lambda i: orjson.dumps(BASES[i]))),
    mutated(),
    mutated(),
    mutated(),
)


def generate(count: int) -> list[tuple[bytes, bytes]]:
    """``count`` messages drawn by hypothesis."""
    out: list[tuple[bytes, bytes]] = []

    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(messages)
    def collect(message: tuple[bytes, bytes]) -> None:
        out.append(message)

    collect()
    return out


def kafka_timestamp_ms(index: int, value: bytes) -> int:
    """The Kafka timestamp a message is sent with: its payload's time if it has one (every
    seventh 5 s off: a mistimed message), else the current time."""
    try:
        when = round(parse_timestamp(orjson.loads(value)["timestamp"]).timestamp() * 1000)
    except (orjson.JSONDecodeError, TypeError, KeyError, InvalidTransaction):
        return round(time.time() * 1000)
    return max(0, when + (5_000 if index % 7 == 3 else 0))


def valid_ones(records: list[Any]) -> dict[tuple[int, int], str]:
    """(partition, offset) -> txn_id of the messages the rules accept, in partition order:
    the contract, the key, the Kafka timestamp, future and late events (docs/contract.md)."""
    grace = app_settings.late_event_grace_days * 86_400
    future = time.time() + app_settings.future_event_tolerance_seconds
    stream_times: dict[int, float] = {}
    valid = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        try:
            txn = validate(r.value or b"")
        except InvalidTransaction:
            continue
        event_time = parse_timestamp(txn["timestamp"]).timestamp()
        stream_time = stream_times.get(r.partition, -math.inf)
        if ((r.key or b"") != txn["user_id"].encode() or abs(r.timestamp / 1000 - event_time) > 1
                or event_time > future or event_time < stream_time - grace):
            continue
        stream_times[r.partition] = max(stream_time, event_time)
        valid[r.partition, r.offset] = txn["txn_id"]
    return valid


def test_fuzz_every_message_is_enriched_and_stored_once_or_dead_lettered(
        tmp_path: Path, unique: str, mongo_client: pymongo.MongoClient) -> None:
    prefix = f"fuzz-{unique}"
    source = f"{prefix}-{TRANSACTIONS}"
    ensure_topic(BOOTSTRAP, source, PARTITIONS)
    sent = generate(GENERATED)
    # valid ones in between, and three near the broker's limit (invalid: a huge field)
    sent += [(b["user_id"].encode(), orjson.dumps({**b, "txn_id": secrets.token_hex(32)}))
             for b in BASES]
    # (random hex: incompressible, so the worker's lz4 cannot shrink its dead letter)
    sent += [(b"big", orjson.dumps({**BASES[i], "merchant_id":
                                    secrets.token_hex((NEAR_LIMIT - 400) // 2)}))
             for i in range(3)]
    assert len({k for k, _ in sent}) > 50 and max(len(v) for _, v in sent) > 990_000

    db = mongo_client[pipeline_env(prefix)["MONGO_DB"]]
    port = free_port()
    worker = Proc("worker", [TXN, "worker", "-l", "info"],
                  pipeline_env(prefix, TOPIC_PARTITIONS=PARTITIONS, WEB_PORT=port,
                               DATA_DIR=tmp_path / "data-worker"), tmp_path)
    sink = Proc("sink", [TXN, "sink", "-l", "info"],
                pipeline_env(prefix, TOPIC_PARTITIONS=PARTITIONS,
                             DATA_DIR=tmp_path / "data-sink"), tmp_path)
    try:
        with worker, sink:
            wait_http(f"http://localhost:{port}/health", timeout=120, proc=worker)
            producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all",
                                     max_request_size=NEAR_LIMIT + 48_000)
            for i, (key, value) in enumerate(sent):
                producer.send(source, key=key, value=value,
                              timestamp_ms=kafka_timestamp_ms(i, value))
            producer.flush()
            producer.close()

            wait_for(lambda: not worker.alive
                     or committed_everything(f"{prefix}-txn-analytics", [source]),
                     timeout=300, interval=2,
                     message=lambda: f"the worker to commit every message "
                                     f"(alive: {worker.alive}):\n{worker.log(200)}")
            wait_for(lambda: committed_everything(f"{prefix}-txn-analytics-sink",
                                                  sink_topics(prefix)),
                     timeout=300, interval=2,
                     message=lambda: f"the sink to commit everything (alive: {sink.alive}):"
                                     f"\n{sink.log(200)}")
            assert worker.alive and sink.alive, "a process exited"
            check(source, prefix, db)
        for proc in (worker, sink):
            assert "Crashed reason" not in proc.log(), proc.log()
    finally:
        mongo_client.drop_database(db.name)


def check(source: str, prefix: str, db: pymongo.database.Database) -> None:
    records = read_topic(source)
    valid = valid_ones(records)
    invalid = {(r.partition, r.offset) for r in records} - set(valid)
    assert valid and invalid and len(records) > GENERATED

    enriched = [orjson.loads(r.value)["txn_id"] for r in read_topic(f"{prefix}-{ENRICHED}")]
    assert sorted(enriched) == sorted(valid.values()), "enriched: not each valid one once"
    stored = {d["_id"] for d in db.transactions.find({}, {"_id": 1})}
    assert stored == set(valid.values())

    dead = read_topic(f"{prefix}-{DLQ}")
    coordinates = {(int(dict(r.headers)["dlq.partition"]), int(dict(r.headers)["dlq.offset"]))
                   for r in dead}
    assert coordinates == invalid and len(dead) == len(invalid)
    assert all(dict(r.headers)["dlq.reason"] for r in dead)
    letters = {d["_id"]: d for d in db.dlq.find({})}
    assert set(letters) == {f"{source}:{p}:{o}" for p, o in invalid}
    assert all(d["reason"] for d in letters.values())
    # every message accounted for, once
    difference = len(records) - len(stored) - len(letters)
    assert difference == 0 and not math.isnan(difference)
    print(f"\nfuzz: {len(records)} messages: {len(stored)} enriched and stored once, "
          f"{len(letters)} dead letters, difference {difference}")
