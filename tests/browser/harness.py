"""What the dashboard's browser tests (and bench/dashboard_latency.py) share: the Chromium
launch options, the API + dashboard processes, and readers of what the page shows."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pymongo
from kafka import KafkaProducer
from playwright.sync_api import expect

from app.contract import TRANSACTIONS
from app.producer import ensure_topic
from app.settings import settings
from tests.procs import BIN, ROOT, TXN, Proc, free_port, wait_for, wait_http

__all__ = ["API_KEY", "ARTIFACTS", "CHROMIUM", "CHROMIUM_ARGS", "WAIT_MS", "Pipeline", "Stack",
           "bokeh_data", "expect_kpis", "wait_up"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
ARTIFACTS = ROOT / "test-artifacts"
API_KEY = "browser-test-key"
WAIT_MS = 15_000


def wait_up(url: str, proc: Proc, timeout: float = 180) -> None:
    """Wait until ``url`` answers at all (any HTTP status counts); generous, because panel builds
    the first page slowly on a loaded machine."""
    def answered() -> bool:
        if not proc.alive:
            raise AssertionError(f"{proc.name} exited:\n{proc.log()}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True
    wait_for(answered, timeout, 0.2, f"{proc.name} at {url}")


class Stack:
    """The API and the dashboard, as child processes with their own environment."""

    def __init__(self, db: pymongo.database.Database, log_dir: Path, **extra_env: str) -> None:
        self.db = db
        self.api_port, self.dash_port = free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.page_url = f"http://localhost:{self.dash_port}/live"
        env = {**os.environ, "MONGO_DB": db.name, "API_KEY": API_KEY, "API_URL": self.api_url,
               # no worker unless told: live statistics are then unavailable
               "WORKER_URL": f"http://127.0.0.1:{free_port()}", **extra_env}
        self.api = Proc("api", [sys.executable, "-m", "uvicorn", "views.api:app", "--host",
                                "127.0.0.1", "--port", str(self.api_port)], env, log_dir)
        self.dashboard = Proc("dashboard", [
            str(BIN / "panel"), "serve", "dashboards/live.py", "--port", str(self.dash_port),
            "--allow-websocket-origin", f"localhost:{self.dash_port}"], env, log_dir)

    def start_api(self) -> None:
        self.api.start()
        wait_up(f"{self.api_url}/health", self.api)

    def get(self, path: str) -> Any:
        req = urllib.request.Request(f"{self.api_url}{path}", headers={"X-API-Key": API_KEY})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())


def bokeh_data(page: Any, name: str) -> dict[str, list[Any]]:
    """The columns of the page's Bokeh ColumnDataSource called ``name``, as the browser has
    them (what the chart draws)."""
    data = page.evaluate("""name => {
        for (const doc of Bokeh.documents) {
            const m = doc.get_model_by_name(name);
            if (m) {
                const out = {};
                const entries = m.data instanceof Map ? m.data.entries()
                                                      : Object.entries(m.data);
                for (const [k, v] of entries) out[k] = Array.from(v);
                return out;
            }
        }
        return null;
    }""", name)
    assert data is not None, f"no ColumnDataSource {name!r} on the page"
    return dict(data)


def expect_kpis(page: Any, summary: dict[str, Any]) -> None:
    expect(page.locator(".kpi-tps_now")).to_contain_text(f"{summary['tps_now']:,.1f}",
                                                         timeout=WAIT_MS)
    expect(page.locator(".kpi-revenue_1h")).to_contain_text(f"{summary['revenue_1h']:,.2f}",
                                                            timeout=WAIT_MS)
    expect(page.locator(".kpi-anomalies_1h")).to_contain_text(
        f"{summary['anomalies_1h']:,.0f}", timeout=WAIT_MS)
    expect(page.locator(".kpi-dlq_count")).to_contain_text(f"{summary['dlq_count']:,.0f}",
                                                          timeout=WAIT_MS)


class Pipeline:
    """Worker, sink, API and dashboard of one isolated pipeline (topic prefix, database, data
    dirs, ports), and a Kafka producer for hand-made transactions."""

    def __init__(self, tmp: Path, unique: str, db: pymongo.database.Database) -> None:
        self.prefix = f"dash-{unique}"
        self.topic = f"{self.prefix}-{TRANSACTIONS}"
        self.web_port = free_port()
        common = {"TOPIC_PREFIX": f"{self.prefix}-", "MONGO_DB": db.name,
                  "TOPIC_PARTITIONS": "2", "WEB_PORT": str(self.web_port),
                  "WEB_HOST": "localhost", "SINK_BATCH_SECONDS": "0.2"}
        self.worker = Proc("worker", [TXN, "worker", "-l", "info"],
                           {**os.environ, **common, "DATA_DIR": str(tmp / "worker")}, tmp)
        self.sink = Proc("sink", [TXN, "sink", "-l", "info"],
                         {**os.environ, **common, "DATA_DIR": str(tmp / "sink")}, tmp)
        self.stack = Stack(db, tmp, TOPIC_PREFIX=f"{self.prefix}-",
                           WORKER_URL=f"http://localhost:{self.web_port}")
        self.producer: KafkaProducer | None = None

    def start(self) -> None:
        ensure_topic(settings.kafka_bootstrap_servers, self.topic, 2)
        self.worker.start()
        self.sink.start()
        self.stack.start_api()
        self.stack.dashboard.start()
        wait_up(self.stack.page_url, self.stack.dashboard)
        wait_http(f"http://localhost:{self.web_port}/health", timeout=120, proc=self.worker)

    def send(self, txn: dict[str, Any]) -> None:
        if self.producer is None:
            self.producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                          acks="all")
        when = datetime.fromisoformat(txn["timestamp"])
        self.producer.send(self.topic, key=txn["user_id"].encode(), value=orjson.dumps(txn),
                           timestamp_ms=int(when.timestamp() * 1000))

    def flush(self) -> None:
        assert self.producer is not None
        self.producer.flush(30)

    def stop(self) -> None:
        if self.producer is not None:
            self.producer.close(5)
        for proc in (self.stack.dashboard, self.stack.api, self.sink, self.worker):
            proc.stop()
