"""Dashboard latency, measured in a real headless Chromium over the real API and FerretDB.

    .venv/bin/python bench/dashboard_latency.py [--loads 5] [--anomalies 10]

Starts its own API (uvicorn views.api:app) and dashboard (panel serve) on free ports over a
unique, seeded database of the local FerretDB (MONGO_URL), then measures:

- page load: first contentful paint (the browser's Performance API), and the time until the KPIs
  show the API's numbers (navigation start -> the revenue KPI has its value);
- new anomaly: an anomaly document is written to MongoDB (as the sink would) -> its row is in the
  page's alert table, without a reload;
- with ``--pipeline N`` (default 5, 0 to skip): the whole path, with a real ``txn worker`` and
  ``txn sink`` on their own topics: an anomalous transaction is sent to Kafka -> its row is on
  the page (worker, anomalies topic, sink, MongoDB, API, dashboard refresh).

Prints the numbers and writes them to bench/results/dashboard.json; docs/dashboard.md quotes
them. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymongo  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from app.settings import settings  # noqa: E402
from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, Pipeline, Stack  # noqa: E402
from tests.browser.seed import (  # noqa: E402
    anomaly_doc,
    message,  # noqa: E402
    seed,
    stored,
    transaction,
)
from tests.procs import wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "dashboard.json"
POLL_S = 0.02


def poll(check: Any, timeout: float = 30.0) -> float:
    """Seconds until ``check()`` is true (polled every POLL_S)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if check():
            return time.perf_counter() - start
        time.sleep(POLL_S)
    raise TimeoutError("the page did not show it in time")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(values), "min": round(ordered[0], 3),
            "median": round(statistics.median(ordered), 3),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max": round(ordered[-1], 3)}


def measure(stack: Stack, loads: int, anomalies: int) -> dict[str, Any]:
    expected = f"{stack.get('/summary')['revenue_1h']:,.2f}"
    fcp, ready = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(loads):
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            start = time.perf_counter()
            page.goto(stack.page_url, wait_until="commit")
            # locators look into the page's shadow roots (text_content() would not)
            page.locator(".kpi-revenue_1h").get_by_text(expected).wait_for(timeout=30_000)
            ready.append(time.perf_counter() - start)
            fcp.append(page.evaluate(
                "performance.getEntriesByName('first-contentful-paint')[0].startTime") / 1000)
            page.close()

        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(stack.page_url)
        table = page.locator(".anomalies")
        table.get_by_text("user-2").wait_for(timeout=30_000)
        appear = []
        for i in range(anomalies):
            user = f"bench-{i}-{uuid.uuid4().hex[:6]}"
            txn = transaction(user, 5000.0 + i, datetime.now(UTC).replace(microsecond=0),
                              "m-alpha", "electronics", z_score=20.0, is_anomaly=True)
            stack.db.transactions.insert_one(stored(txn))
            stack.db.anomalies.insert_one(anomaly_doc(txn, 20.0, 50.0, 10.0, 40))
            start = time.perf_counter()
            table.get_by_text(user).wait_for(timeout=30_000)
            appear.append(time.perf_counter() - start)
            time.sleep(0.37 * (i % 3))  # spread the inserts over the refresh cycle
        browser.close()
    return {"first_contentful_paint_s": summary(fcp), "kpis_shown_s": summary(ready),
            "new_anomaly_on_page_s": summary(appear)}


def measure_pipeline(client: pymongo.MongoClient, users: int) -> dict[str, Any]:
    """Kafka -> page for one anomaly of each of ``users`` users (8 normal transactions each
    before it)."""
    unique = uuid.uuid4().hex[:10]
    db = client[f"bench_dashpipe_{unique}"]
    pipeline = Pipeline(Path(tempfile.mkdtemp(prefix="bench-dashboard-pipeline-")), unique, db)
    appear = []
    try:
        pipeline.start()
        now = datetime.now(UTC).replace(microsecond=0)
        names = [f"bench-{unique}-{u}" for u in range(users)]
        for i in range(8):
            for n, user in enumerate(names):
                pipeline.send(message(user, 40.0 + i + n, now - timedelta(seconds=30 - i),
                                      "m-bench", "grocery"))
        pipeline.flush()
        wait_for(lambda: pipeline.stack.get("/summary")["count_1h"] == 8 * users, 120, 0.5,
                 "the history to reach the API")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(pipeline.stack.page_url)
            table = page.locator(".anomalies")
            page.locator(".kpi-revenue_1h").wait_for()
            for i, user in enumerate(names):
                pipeline.send(message(user, 5000.0, datetime.now(UTC).replace(microsecond=0),
                                      "m-bench", "electronics"))
                pipeline.flush()
                start = time.perf_counter()
                table.get_by_text(user, exact=True).wait_for(timeout=120_000)
                appear.append(time.perf_counter() - start)
                time.sleep(0.37 * (i % 3))
            browser.close()
    finally:
        pipeline.stop()
        client.drop_database(db.name)
    return {"anomaly_kafka_to_page_s": summary(appear)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=5, help="page loads to time")
    parser.add_argument("--anomalies", type=int, default=10, help="new anomalies to time")
    parser.add_argument("--pipeline", type=int, default=5,
                        help="anomalies to time from Kafka to the page (0: skip)")
    args = parser.parse_args()
    client: pymongo.MongoClient = pymongo.MongoClient(settings.mongo_url)
    db = client[f"bench_dash_{uuid.uuid4().hex[:10]}"]
    stack = Stack(db, Path(tempfile.mkdtemp(prefix="bench-dashboard-")))
    try:
        seed(db)
        stack.start_api()
        stack.dashboard.start()
        poll(lambda: _answers(stack.page_url), 60)
        results = measure(stack, args.loads, args.anomalies)
    finally:
        stack.dashboard.stop()
        stack.api.stop()
        client.drop_database(db.name)
    if args.pipeline:
        results.update(measure_pipeline(client, args.pipeline))
    client.close()
    results = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
               "command": "python bench/dashboard_latency.py "
                          f"--loads {args.loads} --anomalies {args.anomalies} "
                          f"--pipeline {args.pipeline}",
               "refresh_period_s": 1.0, **results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


def _answers(url: str) -> bool:
    import urllib.request
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except OSError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
