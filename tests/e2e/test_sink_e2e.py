"""End to end: the real ``txn sink`` process on the real broker and FerretDB.

- the whole pipeline (producer -> ``txn worker`` -> ``txn sink``): 20k transactions, each valid
  one stored exactly once with the numbers of the enriched topic; rollups equal a recomputation
  from the stored transactions; then the sink replays every topic from the start: nothing
  changes;
- a private FerretDB stopped for 30 s in the middle of a run: afterwards every transaction is
  stored exactly once, and the rollups are right;
- poison data: skipped to dead-letter records, the rest stored.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pymongo
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from agents.sink import aggregates as agg
from agents.sink import documents as docs
from app.contract import ANOMALIES, DLQ, ENRICHED, TRANSACTIONS, minute_of
from app.producer import TransactionFactory, ensure_topic, send
from app.settings import settings
from tests.procs import ROOT, TXN, Proc, free_port, pipeline_env, wait_for
from tests.sink_data import enriched_stream, produce

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PARTITIONS = 4
BOOTSTRAP = settings.kafka_bootstrap_servers
FERRETDB = ROOT / ".cache" / "bin" / "ferretdb-local"


# --- helpers ----------------------------------------------------------------------------------
def read_topic(topic: str) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(parts)
        out: list[Any] = []
        while any(consumer.position(tp) < end[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=1000).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def sink_topics(prefix: str) -> list[str]:
    """The topics the sink group reads (it has no internal topic)."""
    return [f"{prefix}-{t}" for t in (ENRICHED, ANOMALIES, DLQ)]


def committed_everything(group: str, topics: list[str]) -> bool:
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(t, p) for t in topics
                 for p in consumer.partitions_for_topic(t) or []]
        end = consumer.end_offsets(parts)
        return bool(parts) and all((consumer.committed(tp) or 0) >= end[tp] for tp in parts)
    finally:
        consumer.close()


def rewind(group: str, topics: list[str]) -> None:
    """Set the (stopped) group's offsets of ``topics`` back to the start."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(t, p) for t in topics
                 for p in consumer.partitions_for_topic(t) or []]
        consumer.assign(parts)
        consumer.commit({tp: OffsetAndMetadata(0, "", -1) for tp in parts})
    finally:
        consumer.close()


def snapshot(db: pymongo.database.Database, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: {d["_id"]: d for d in db[name].find()} for name in names}


def check_rollups(db: pymongo.database.Database,
                  counted: list[dict[str, Any]] | None = None) -> bool:
    """Every aggregate (merchant_days/hours, volume_hours, currency_days/hours, users_by_day:
    each key's numbers summed over the document's packed partitions) equals a recomputation
    from the stored transactions (or from ``counted``, enriched messages); merchants carry
    their category."""
    if counted is None:
        counted = [docs.unpack_transaction(d)
                   for d in db[docs.TRANSACTIONS].find({}, {"txn": 1})]
    expected: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for t in counted:
        ts = t["timestamp"]
        ts = ts.replace(tzinfo=UTC) if isinstance(ts, datetime) else docs.to_date(ts)
        item = agg.countable({**t, "minute": minute_of(ts)}, 0, 0, "USD")
        if item is None:  # stored, not counted (e.g. another reporting currency)
            continue
        for slot in agg.slots(item):
            row = expected[slot.collection, slot.id, slot.key]
            for k in range(3):
                row[k] += slot.add[k]
    stored: dict[tuple[str, str, str], list[int]] = {}
    for name in agg.COLLECTIONS:
        for doc in db[name].find():
            for key, total in agg.totals(doc).items():
                stored[name, doc["_id"], key] = [total.a, total.b, total.c]
                if name in (agg.MERCHANT_DAYS, agg.MERCHANT_HOURS):
                    assert total.label, (name, doc["_id"], key)
    return stored == expected


def assert_stored_as_sent(db: pymongo.database.Database, values: dict[str, dict[str, Any]],
                          collection: str = docs.TRANSACTIONS) -> None:
    """Every value stored once (``_id`` = ``txn_id``), every field equal to the message (a
    transaction's as its ``txn`` text, next to its ``user_id`` and ``timestamp`` date)."""
    stored = {d["_id"]: d for d in db[collection].find()}
    assert stored.keys() == values.keys()
    dates = ("timestamp", "processed_at", "detected_at")
    for txn_id, value in values.items():
        doc = stored[txn_id]
        if collection == docs.TRANSACTIONS:
            assert docs.unpack_transaction(doc) == value, (doc, value)
            assert doc["user_id"] == value["user_id"]
            assert doc["timestamp"].replace(tzinfo=UTC) == docs.to_date(value["timestamp"])
            continue
        for name, want in value.items():
            got = doc[name]
            if name in dates:
                assert got.replace(tzinfo=UTC) == docs.to_date(want), (name, doc, value)
            else:
                assert got == want, (name, doc, value)
        assert doc["day"] == doc["timestamp"].strftime("%Y-%m-%d")
        assert doc["minute"] == doc["timestamp"].replace(second=0, microsecond=0)


def sink_proc(prefix: str, tmp: Path, **extra: Any) -> Proc:
    env = pipeline_env(prefix, TOPIC_PARTITIONS=PARTITIONS, DATA_DIR=tmp / "data-sink",
                       SINK_BATCH_SIZE=1000, SINK_BATCH_SECONDS=0.5, **extra)
    return Proc("sink", [TXN, "sink", "-l", "info"], env, tmp)


@pytest.fixture
def db(mongo_client: pymongo.MongoClient, unique: str) -> Any:
    name = pipeline_env(f"sink-{unique}")["MONGO_DB"]
    yield mongo_client[name]
    mongo_client.drop_database(name)


# --- the whole pipeline -----------------------------------------------------------------------
def test_pipeline_stores_each_transaction_once_and_a_replay_changes_nothing(
        tmp_path: Path, unique: str, db: pymongo.database.Database) -> None:
    prefix = f"sink-{unique}"
    ensure_topic(BOOTSTRAP, f"{prefix}-{TRANSACTIONS}", PARTITIONS)
    worker_env = pipeline_env(prefix, TOPIC_PARTITIONS=PARTITIONS, WEB_PORT=free_port(),
                              DATA_DIR=tmp_path / "data-worker")
    worker = Proc("worker", [TXN, "worker", "-l", "info"], worker_env, tmp_path)
    sink = sink_proc(prefix, tmp_path)
    sink_group = f"{prefix}-txn-analytics-sink"
    with worker, sink:
        factory = TransactionFactory(seed=5, users=300, merchants=60, anomaly_rate=0.01,
                                     bad_rate=0.005)
        summary = send(factory, f"{prefix}-{TRANSACTIONS}", bootstrap=BOOTSTRAP, count=20_000,
                       partitions=PARTITIONS)
        assert summary.errors == 0 and summary.bad > 0
        wait_for(lambda: committed_everything(f"{prefix}-txn-analytics",
                                              [f"{prefix}-{TRANSACTIONS}"]),
                 timeout=240, interval=2, message="the worker to process every transaction")
        enriched = [orjson.loads(r.value) for r in read_topic(f"{prefix}-{ENRICHED}")]
        by_id = {e["txn_id"]: e for e in enriched}
        assert len(by_id) == len(enriched) == 20_000 - summary.bad
        wait_for(lambda: committed_everything(sink_group, sink_topics(prefix)), timeout=420,
                 interval=2, message=f"the sink to commit everything:\n{sink.log()}")

        assert_stored_as_sent(db, by_id)
        anomalies = {a["txn_id"]: a for a in
                     (orjson.loads(r.value) for r in read_topic(f"{prefix}-{ANOMALIES}"))}
        assert anomalies
        assert_stored_as_sent(db, anomalies, docs.ANOMALIES)
        assert db[docs.DLQ].count_documents({}) == summary.bad == \
            len(read_topic(f"{prefix}-{DLQ}"))
        wait_for(lambda: check_rollups(db), timeout=240, message="the rollups")
        assert db[agg.VOLUME_HOURS].count_documents({}) >= 1
        names = (docs.TRANSACTIONS, docs.ANOMALIES, docs.DLQ, *agg.COLLECTIONS)
        before = snapshot(db, names)

        # Replay: the sink reads every topic again from the start, plus 500 transactions the
        # processor emitted again (same txn_id, a later processed_at, as after its crash).
        assert sink.stop() == 0, sink.log()
        rewind(sink_group, [f"{prefix}-{t}" for t in (ENRICHED, ANOMALIES, DLQ)])
        again = [{**e, "processed_at": datetime.now(UTC).isoformat()} for e in enriched[:500]]
        produce(BOOTSTRAP, f"{prefix}-{ENRICHED}", again, PARTITIONS)
        sink.start()
        wait_for(lambda: sum(b["duplicates"] for b in db[docs.METRICS].find(
                     {"collection": docs.TRANSACTIONS})) >= len(by_id) + len(again),
                 timeout=300, interval=1, message="the sink to read everything again")
        wait_for(lambda: committed_everything(sink_group, sink_topics(prefix)), timeout=300,
                 interval=2, message="the sink to commit the replay")
        assert snapshot(db, names) == before


# --- a database outage ------------------------------------------------------------------------
def test_ferretdb_down_for_30_s_loses_and_duplicates_nothing(
        tmp_path: Path, unique: str) -> None:
    prefix = f"sinkdown-{unique}"
    port = free_port()
    (tmp_path / "ferretdb").mkdir()
    ferretdb = Proc("ferretdb", [str(FERRETDB), f"--listen-addr=127.0.0.1:{port}",
                                 f"--data-dir={tmp_path / 'ferretdb'}"], dict(os.environ),
                    tmp_path)
    url = f"mongodb://127.0.0.1:{port}"
    enriched, anomalies = enriched_stream(12_000, seed=21, users=80, merchants=40,
                                          start=datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    with ferretdb, pymongo.MongoClient(url, serverSelectionTimeoutMS=20_000) as client:
        client.admin.command("ping")
        db = client[pipeline_env(prefix)["MONGO_DB"]]
        with sink_proc(prefix, tmp_path, MONGO_URL=url) as sink:
            produce(BOOTSTRAP, f"{prefix}-{ENRICHED}", enriched[:4000], PARTITIONS)
            produce(BOOTSTRAP, f"{prefix}-{ANOMALIES}", anomalies, PARTITIONS)
            wait_for(lambda: db[docs.TRANSACTIONS].count_documents({}) >= 2000, timeout=120,
                     message=f"the first documents:\n{sink.log()}")
            ferretdb.stop()
            stopped = time.monotonic()
            produce(BOOTSTRAP, f"{prefix}-{ENRICHED}", enriched[4000:], PARTITIONS)
            time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
            assert sink.alive, sink.log()
            ferretdb.start()
            wait_for(lambda: client[db.name][docs.TRANSACTIONS].count_documents({}) == 12_000,
                     timeout=420, interval=2, message=f"every document:\n{sink.log()}")
            wait_for(lambda: committed_everything(f"{prefix}-txn-analytics-sink",
                                                  sink_topics(prefix)),
                     timeout=300, interval=2, message="the sink to commit everything")
            # (while the sink runs: a batch still held is written by the running sink)
            wait_for(lambda: check_rollups(db), timeout=300, message="the rollups")
            log = sink.log(lines=100_000)
        assert_stored_as_sent(db, {e["txn_id"]: e for e in enriched})
        assert_stored_as_sent(db, {a["txn_id"]: a for a in anomalies}, docs.ANOMALIES)
        unavailable = log.count("MongoDB unavailable")
        assert 1 <= unavailable <= 20, log[-3000:]  # once in a while, not per message
        assert "MongoDB is back" in log


# --- poison data ------------------------------------------------------------------------------
def test_poison_is_skipped_to_dead_letters(tmp_path: Path, unique: str,
                                           db: pymongo.database.Database) -> None:
    prefix = f"sink-{unique}"
    enriched, _ = enriched_stream(500, seed=3)
    # What the database cannot store: a field of the document (``user_id``; the other fields
    # are text inside ``txn``) the server refuses, or one BSON cannot hold.
    rejected = {**enriched[0], "txn_id": "f" * 64, "user_id": {"$where": "x"}}
    too_big = {**enriched[1], "txn_id": "e" * 64, "user_id": 0}
    poison: list[dict[str, Any] | bytes] = [
        b"not json at all",
        rejected,
        orjson.dumps(too_big).replace(b'"user_id":0', b'"user_id":18446744073709551615'),
        {**enriched[2], "txn_id": "d" * 64, "timestamp": "yesterday"},  # no date
    ]
    produce(BOOTSTRAP, f"{prefix}-{ENRICHED}", [*enriched[:250], *poison, *enriched[250:]],
            PARTITIONS)
    with sink_proc(prefix, tmp_path) as sink:
        wait_for(lambda: db[docs.DLQ].count_documents({}) == 4, timeout=120,
                 message=f"4 dead-letter records:\n{sink.log()}")
        wait_for(lambda: db[docs.TRANSACTIONS].count_documents({}) == 500, timeout=60,
                 message="the valid transactions")
        wait_for(lambda: committed_everything(f"{prefix}-txn-analytics-sink",
                                              sink_topics(prefix)),
                 timeout=60, interval=1, message="the sink to commit past the poison")
        # The rollups count exactly the stored transactions: not the two the database refused.
        wait_for(lambda: check_rollups(db), timeout=60, message="rollups of the stored ones")
        assert sink.alive
    dead = list(db[docs.DLQ].find())
    assert all(d["stage"] == "sink" and d["topic"] == f"{prefix}-{ENRICHED}" for d in dead)
    reasons = " ".join(d["reason"] for d in dead)
    assert "not valid JSON" in reasons and "$" in reasons and "timestamp" in reasons
    assert_stored_as_sent(db, {e["txn_id"]: e for e in enriched})


# --- a stop (SIGTERM) ---------------------------------------------------------------------------
STOP_SECONDS = 10.0


def stopped_in(sink: Proc) -> tuple[float, int | None]:
    """SIGTERM the sink; (seconds until it exited, its exit code)."""
    started = time.monotonic()
    code = sink.stop(timeout=60)
    return time.monotonic() - started, code


def test_a_stop_mid_backlog_is_prompt_and_loses_nothing(tmp_path: Path, unique: str,
                                                        db: pymongo.database.Database) -> None:
    """SIGTERM while the sink writes a backlog (batches and rollups held, unacked): it exits
    with 0 within 10 s (it took up to 15 s: Faust waited for every held event to be acked, the
    rollups hold theirs for 5 s and more); the next start stores the rest, nothing twice."""
    prefix = f"sink-{unique}"
    enriched, _ = enriched_stream(20_000, seed=9)
    produce(BOOTSTRAP, f"{prefix}-{ENRICHED}", enriched, PARTITIONS)
    sink = sink_proc(prefix, tmp_path, SINK_METRICS_PORT=0)
    with sink:
        wait_for(lambda: db[docs.TRANSACTIONS].count_documents({}) >= 2000, timeout=120,
                 interval=0.2, message="the first documents")
        seconds, code = stopped_in(sink)
    assert code == 0 and seconds < STOP_SECONDS, (seconds, code, sink.log())
    assert "did not stop within" not in sink.log(lines=100_000)  # no deadline needed
    with sink:
        wait_for(lambda: committed_everything(f"{prefix}-txn-analytics-sink",
                                              [f"{prefix}-{ENRICHED}"]),
                 timeout=180, interval=1, message="the sink to commit everything")
        wait_for(lambda: check_rollups(db), timeout=120, message="the rollups")
    assert_stored_as_sent(db, {e["txn_id"]: e for e in enriched})


def test_a_stop_during_a_database_outage_is_prompt(tmp_path: Path, unique: str) -> None:
    """SIGTERM while the database is unreachable and the agents wait for it, holding unacked
    events (it never ended: Faust waited for the held events): exit within 10 s."""
    prefix = f"sinkdown-{unique}"
    enriched, _ = enriched_stream(500, seed=4)
    produce(BOOTSTRAP, f"{prefix}-{ENRICHED}", enriched, PARTITIONS)
    sink = sink_proc(prefix, tmp_path, MONGO_URL=f"mongodb://127.0.0.1:{free_port()}",
                     SINK_METRICS_PORT=0)
    with sink:
        wait_for(lambda: "MongoDB unavailable" in sink.log(lines=100_000), timeout=60,
                 message="the sink to wait for the database")
        time.sleep(2)
        seconds, code = stopped_in(sink)
    assert code == 0 and seconds < STOP_SECONDS, (seconds, code, sink.log())
