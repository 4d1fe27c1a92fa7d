"""The API over what the real pipeline writes: producer -> `txn worker` -> `txn sink` -> FerretDB
(unique topics and database), then every endpoint's numbers equal a recomputation from the
stored transactions, and the trends carry the worker's live statistics."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from agents.sink import aggregates as agg
from agents.sink.documents import unpack_transaction
from app.contract import TRANSACTIONS
from app.producer import TransactionFactory, ensure_topic, send
from app.settings import load, settings
from tests.procs import TXN, Proc, free_port, pipeline_env, wait_for, wait_http
from views.api import create_app

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PARTITIONS = 2
COUNT = 3_000


def test_api_reads_what_the_pipeline_writes(tmp_path: Path, unique: str, mongo_client) -> None:
    prefix = f"apip-{unique}"
    ensure_topic(settings.kafka_bootstrap_servers, f"{prefix}-{TRANSACTIONS}", PARTITIONS)
    port = free_port()
    worker_env = pipeline_env(prefix, TOPIC_PARTITIONS=PARTITIONS, WEB_PORT=port,
                              WEB_HOST="localhost", DATA_DIR=tmp_path / "data-worker")
    sink_env = pipeline_env(prefix, TOPIC_PARTITIONS=PARTITIONS, DATA_DIR=tmp_path / "data-sink",
                            SINK_BATCH_SIZE=1000, SINK_BATCH_SECONDS=0.5)
    db = mongo_client[worker_env["MONGO_DB"]]
    try:
        with Proc("worker", [TXN, "worker", "-l", "info"], worker_env, tmp_path) as worker, \
                Proc("sink", [TXN, "sink", "-l", "info"], sink_env, tmp_path) as sink:
            wait_http(f"http://localhost:{port}/health", timeout=120, proc=worker)
            factory = TransactionFactory(seed=3, users=40, merchants=15, anomaly_rate=0.02,
                                         bad_rate=0.01)
            summary = send(factory, f"{prefix}-{TRANSACTIONS}",
                           bootstrap=settings.kafka_bootstrap_servers, count=COUNT,
                           partitions=PARTITIONS)
            assert summary.errors == 0
            valid = COUNT - summary.bad

            def stored() -> bool:
                volume = sum(t.a for d in db.volume_hours.find()
                             for t in agg.totals(d).values())
                return db.transactions.count_documents({}) == valid and volume == valid

            wait_for(stored, timeout=240, interval=2,
                     message=f"the sink to store everything:\n{sink.log()}")
            txns = [unpack_transaction(d) for d in db.transactions.find({}, {"txn": 1})]
            app = create_app(load({**os.environ, "MONGO_DB": db.name, "API_RATE_LIMIT": "0",
                                   "WORKER_URL": f"http://localhost:{port}",
                                   "API_LIVE_WAIT_MS": "10000"}), cache_seconds=0)
            with TestClient(app) as client:
                _check(client, db, txns, summary.bad)
    finally:
        mongo_client.drop_database(db.name)


def _check(client: TestClient, db: Any, txns: list[dict[str, Any]], bad: int) -> None:
    n, revenue = len(txns), sum(t["amount_reporting"] for t in txns)
    anomalies = sum(t["is_anomaly"] for t in txns)
    assert anomalies > 0
    by_currency: Counter[str] = Counter()
    for t in txns:
        by_currency[t["currency"]] += round(t["amount"] * 100)
    assert len(by_currency) > 3

    s = client.get("/summary").json()
    assert (s["count_1h"], s["anomalies_1h"], s["dlq_count"]) == (n, anomalies, bad)
    assert s["currency"] == settings.reporting_currency
    assert s["revenue_1h"] == pytest.approx(revenue, abs=0.01 * len(txns))
    assert {c: round(v * 100) for c, v in s["revenue_by_currency"].items()} == by_currency

    volume = client.get("/volume?minutes=30").json()["items"]
    assert sum(i["count"] for i in volume) == n
    assert sum(i["anomalies"] for i in volume) == anomalies

    top = client.get("/merchants/top?window=1h&by=count&limit=100").json()["items"]
    assert {m["merchant_id"]: m["count"] for m in top} == Counter(t["merchant_id"] for t in txns)
    assert [m["count"] for m in top] == sorted((m["count"] for m in top), reverse=True)

    ids, cursor = [], None
    while True:
        body = client.get("/anomalies", params={"limit": 7, **(
            {"cursor": cursor} if cursor else {})}).json()
        ids += [a["txn_id"] for a in body["items"]]
        if not (cursor := body["next_cursor"]):
            break
    stored = sorted(db.anomalies.find({}, {"timestamp": 1}),
                    key=lambda a: (a["timestamp"], a["_id"]), reverse=True)
    assert ids == [a["_id"] for a in stored] and len(ids) >= anomalies

    user, count = Counter(t["user_id"] for t in txns).most_common(1)[0]
    trends = client.get(f"/users/{user}/trends?days=3").json()
    assert sum(d["count"] for d in trends["days"]) == count
    assert sum(d["spend"] for d in trends["days"]) == pytest.approx(
        sum(t["amount_reporting"] for t in txns if t["user_id"] == user), abs=0.01)
    assert trends["live_error"] is None and trends["live"]["count"] == count
