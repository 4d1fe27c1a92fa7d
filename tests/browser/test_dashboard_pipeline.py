"""The whole pipeline onto the page, in headless Chromium: transactions sent to Kafka are
processed by a real ``txn worker``, written to FerretDB by a real ``txn sink``, served by the
real API and shown by the dashboard, including the worker's live statistics of a user (through
the API). Prints how long an anomaly takes from Kafka to the page.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import expect  # noqa: E402

from app.rates import to_reporting  # noqa: E402
from app.settings import settings  # noqa: E402
from tests.browser.harness import ARTIFACTS, Pipeline, expect_kpis  # noqa: E402
from tests.browser.seed import message  # noqa: E402
from tests.procs import wait_for  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.integration]

PIPELINE_WAIT_MS = 120_000
USERS = ("pipe-a", "pipe-b", "pipe-c")
HISTORY = 8  # transactions per user before the anomaly (ANOMALY_MIN_HISTORY is 5)


@pytest.fixture
def pipeline(tmp_path: Path, unique: str,
             mongo_client: pymongo.MongoClient) -> Iterator[Pipeline]:
    db = mongo_client[f"test_dashpipe_{unique}"]
    p = Pipeline(tmp_path, unique, db)
    try:
        p.start()
        yield p
    finally:
        p.stop()
        mongo_client.drop_database(db.name)


def test_pipeline_to_the_page(pipeline: Pipeline, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(pipeline.stack.page_url)
    expect(page.locator(".status")).to_contain_text("No data yet", timeout=30_000)

    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(HISTORY):
        for n, user in enumerate(USERS):
            pipeline.send(message(user, 40.0 + i + n, now - timedelta(seconds=30 - i), "m-pipe",
                                  "grocery"))
    pipeline.flush()

    # the stream's numbers reach the page: 24 transactions, no anomaly yet
    stack = pipeline.stack
    wait_for(lambda: stack.get("/summary")["count_1h"] == HISTORY * len(USERS), 120, 1,
             "the sink to write the rollups")
    expect_kpis(page, stack.get("/summary"))
    expect(page.locator(".status")).to_be_hidden()

    # an anomaly, from Kafka to the page, without a reload
    pipeline.send(message("pipe-a", 4000.0, datetime.now(UTC).replace(microsecond=0), "m-pipe",
                          "electronics"))
    pipeline.flush()
    sent = time.monotonic()
    table = page.locator(".anomalies")
    expect(table).to_contain_text("pipe-a", timeout=PIPELINE_WAIT_MS)
    print(f"\nanomaly from Kafka to the page in {time.monotonic() - sent:.2f} s")
    item = stack.get("/anomalies?limit=1")["items"][0]
    assert item["user_id"] == "pipe-a" and item["z_score"] > settings.anomaly_z_threshold
    expect(table).to_contain_text(f"{item['z_score']:.2f}")
    expect(page.locator(".kpi-anomalies_1h")).to_contain_text("1", timeout=PIPELINE_WAIT_MS)

    # the user lookup shows the worker's live statistics, through the API
    live = wait_for(lambda: (lambda t: t["live"] if t["live"] and t["live"]["count"] ==
                             HISTORY + 1 else None)(stack.get("/users/pipe-a/trends?days=30")),
                    60, 0.5, "the worker's live statistics of pipe-a")
    page.locator(".user-input input").fill("pipe-a")
    page.locator(".user-input input").press("Enter")
    info = page.locator(".user-info")
    expect(info).to_contain_text("User pipe-a", timeout=PIPELINE_WAIT_MS)
    expect(info).to_contain_text("live statistic")
    expect(info).to_contain_text(f"{live['mean']:,.2f}")
    spent = sum(to_reporting(a, "EUR") for a in [*(40.0 + i for i in range(HISTORY)), 4000.0])
    expect(info).to_contain_text(f"{spent:,.2f} {settings.reporting_currency}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-pipeline.png"), full_page=True)
    assert page.get_by_text("Traceback").count() == 0
    page.close()
