"""The API with the real Faust worker: `/users/{id}/trends` carries the worker's stats view of
the user (`live`), says why when there is none (unknown user: the worker's 404), and `/health`
reports the worker's status (not where it runs). Worker process, real Kafka topics (unique
prefix), real FerretDB."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.contract import TRANSACTIONS
from app.producer import TransactionFactory, ensure_topic, send
from app.settings import load, settings
from tests.procs import TXN, Proc, free_port, pipeline_env, wait_for, wait_http
from views.api import create_app

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PARTITIONS = 2


def test_trends_carry_the_workers_live_stats(tmp_path: Path, unique: str, mongo_db) -> None:
    prefix = f"api-{unique}"
    topic = f"{prefix}-{TRANSACTIONS}"
    ensure_topic(settings.kafka_bootstrap_servers, topic, PARTITIONS)
    port = free_port()
    env = pipeline_env(prefix, TOPIC_PARTITIONS=PARTITIONS, WEB_PORT=port, WEB_HOST="localhost",
                       DATA_DIR=tmp_path / "data")
    factory = TransactionFactory(seed=11, users=5, merchants=5, anomaly_rate=0.0, bad_rate=0.0)
    with Proc("worker", [TXN, "worker", "-l", "info"], env, tmp_path) as worker:
        wait_http(f"http://localhost:{port}/health", timeout=120, proc=worker)
        summary = send(factory, topic, bootstrap=settings.kafka_bootstrap_servers, rate=0,
                       count=200, partitions=PARTITIONS)
        assert summary.errors == 0
        user = factory.users[0].user_id
        stats_url = f"http://localhost:{port}/users/{user}/stats"

        def worker_stats() -> Any:
            try:
                body = json.loads(wait_http(stats_url, timeout=2, proc=worker))
            except AssertionError:
                return None
            return body if body.get("count", 0) > 0 else None

        wait_for(worker_stats, timeout=120, interval=1, message="the worker's stats view")
        app = create_app(load({**os.environ, "MONGO_DB": mongo_db.name,
                               "WORKER_URL": f"http://localhost:{port}",
                               "API_LIVE_WAIT_MS": "10000"}), cache_seconds=0)
        with TestClient(app) as client:
            body = client.get(f"/users/{user}/trends?days=3").json()
            live = json.loads(wait_http(stats_url, proc=worker))
            assert body["live_error"] is None and body["live"]["user_id"] == user
            assert body["live"]["count"] <= live["count"]  # the worker may have moved on since
            assert body["live"]["count"] > 0 and "mean" in body["live"]

            unknown = client.get("/users/nobody-at-all/trends").json()
            assert unknown["live"] is None and "404" in unknown["live_error"]

            health = client.get("/health")
            assert health.json()["worker"]["status"] == "ok"
            assert health.json()["worker"]["latency_ms"] >= 0
            assert str(port) not in health.text and "localhost" not in health.text
