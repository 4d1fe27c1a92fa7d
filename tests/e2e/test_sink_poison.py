"""End to end: the sink never loses a message, whatever is written to its topics.

400 valid enriched transactions, one dated ``9999-12-31T23:59:59-01:00`` (no date in UTC: it
once crashed ``store_transactions`` with an OverflowError, Faust restarted the agent and the
committed offset moved past the message), a tombstone (no value), and a worker's dead letter
whose Kafka key is not UTF-8 (it once crashed ``store_dlq``: the topics were read with
``key_type=str``), written straight to the sink's topics with kafka-python. Afterwards every
message is in ``transactions`` or in ``dlq`` (with a reason and its coordinates), the sink is
still running, its committed offsets reached the end of every partition and ``/metrics``
counts what it did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pymongo
import pytest
from kafka import KafkaProducer

from agents.sink import documents as docs
from app.contract import DLQ, DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC, ENRICHED
from tests.e2e.test_sink_e2e import (
    BOOTSTRAP,
    committed_everything,
    read_topic,
    sink_proc,
    sink_topics,
)
from tests.procs import free_port, pipeline_env, wait_for, wait_http
from tests.sink_data import enriched_stream, produce

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

FAR = "9999-12-31T23:59:59-01:00"


@pytest.fixture
def db(mongo_client: pymongo.MongoClient, unique: str) -> Any:
    name = pipeline_env(f"sinkpoison-{unique}")["MONGO_DB"]
    yield mongo_client[name]
    mongo_client.drop_database(name)


def test_every_message_is_stored_or_dead_lettered(tmp_path: Path, unique: str,
                                                  db: pymongo.database.Database) -> None:
    prefix = f"sinkpoison-{unique}"
    enriched_topic, dlq_topic = f"{prefix}-{ENRICHED}", f"{prefix}-{DLQ}"
    enriched, _ = enriched_stream(400, seed=17)
    far = {**enriched[0], "txn_id": "9" * 64, "timestamp": FAR}
    produce(BOOTSTRAP, enriched_topic, [*enriched[:200], far, *enriched[200:]], 4)
    produce(BOOTSTRAP, dlq_topic, [], 4)  # creates the topic
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    tombstone = producer.send(enriched_topic, key=b"user-0001", value=None).get(30)
    producer.send(dlq_topic, key=b"\xff\xfeuser-\xc3", value=b"\xff\x00 not a transaction",
                  headers=[(DLQ_REASON, b"not valid JSON"),
                           (DLQ_TOPIC, f"{prefix}-transactions".encode()),
                           (DLQ_PARTITION, b"3"), (DLQ_OFFSET, b"41")]).get(30)
    producer.close()
    port = free_port()
    with sink_proc(prefix, tmp_path, SINK_METRICS_PORT=port) as sink:
        wait_for(lambda: db[docs.TRANSACTIONS].count_documents({}) == 400 and
                 db[docs.DLQ].count_documents({}) == 3, timeout=120,
                 message="400 transactions and 3 dead letters")
        wait_for(lambda: committed_everything(f"{prefix}-txn-analytics-sink",
                                              sink_topics(prefix)),
                 timeout=60, interval=1, message="the offsets at the end")
        metrics = wait_http(f"http://127.0.0.1:{port}/metrics", proc=sink).decode()
        assert sink.alive, sink.log()
        log = sink.log(lines=100_000)
    assert "Traceback" not in log and "crashed" not in log, log[-3000:]
    assert {d["_id"] for d in db[docs.TRANSACTIONS].find()} == {e["txn_id"] for e in enriched}

    (record,) = [r for r in read_topic(enriched_topic)
                 if r.value is not None and orjson.loads(r.value)["timestamp"] == FAR]
    dead = db[docs.DLQ].find_one({"_id": f"{enriched_topic}:{record.partition}:{record.offset}"})
    assert dead is not None, list(db[docs.DLQ].find())
    assert (dead["topic"], dead["partition"], dead["offset"], dead["stage"]) == \
        (enriched_topic, record.partition, record.offset, "sink")
    assert "timestamp" in dead["reason"] and FAR in dead["original"]

    empty = db[docs.DLQ].find_one(
        {"_id": f"{enriched_topic}:{tombstone.partition}:{tombstone.offset}"})
    assert empty is not None and "not valid JSON" in empty["reason"] and empty["original"] == ""

    worker_dead = db[docs.DLQ].find_one({"_id": f"{prefix}-transactions:3:41"})
    assert worker_dead is not None and worker_dead["reason"] == "not valid JSON"
    assert worker_dead["original"].endswith(" not a transaction")

    assert 'sink_documents_written_total{collection="transactions"} 400.0' in metrics
    assert 'sink_documents_written_total{collection="dlq"} 1.0' in metrics
    assert 'sink_dead_letters_total{reason="conversion"} 2.0' in metrics
    assert "sink_batch_write_seconds_bucket" in metrics
