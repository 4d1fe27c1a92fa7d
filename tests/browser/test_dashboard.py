"""The dashboard in a real headless Chromium, over the real API (uvicorn views.api:app) over the
real FerretDB: a unique database, empty at first, then seeded with known documents.

The tests of this module share one API, one `panel serve` and one browser, and run in file
order: the first one sees the empty database ("no data yet"), the later ones the seeded data.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import expect  # noqa: E402

from dashboards.data import ApiClient, ApiError, ApiUnreachable  # noqa: E402
from tests.browser.harness import (  # noqa: E402
    API_KEY,
    ARTIFACTS,
    WAIT_MS,
    Stack,
    bokeh_data,
    expect_kpis,
    wait_up,
)
from tests.browser.seed import (  # noqa: E402
    Seed,
    add_anomalies,
    anomaly_doc,
    seed,
    stored,
    transaction,
)
from tests.procs import ROOT, free_port, wait_for  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.integration]

@pytest.fixture(scope="module")
def db(mongo_client: pymongo.MongoClient) -> Iterator[pymongo.database.Database]:
    name = f"test_dash_{uuid.uuid4().hex[:10]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


@pytest.fixture(scope="module")
def stack(db: pymongo.database.Database,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (ROOT / "views" / "api.py").exists():
        pytest.skip("views/api.py is not there yet")
    s = Stack(db, tmp_path_factory.mktemp("dashboard"))
    try:
        s.start_api()
        s.dashboard.start()
        wait_up(s.page_url, s.dashboard)
        yield s
    finally:
        s.dashboard.stop()
        s.api.stop()


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> Seed:
    return seed(stack.db)


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A fresh page on the dashboard; fails the test if it asked anything of another host
    (the page must work offline) or shows a traceback."""
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    pg = context.new_page()
    foreign: list[str] = []
    pg.on("request", lambda r: foreign.append(r.url)
          if not r.url.startswith(("http://localhost", "http://127.0.0.1", "ws://localhost",
                                   "data:", "blob:")) else None)
    pg.goto(stack.page_url)
    yield pg
    assert pg.get_by_text("Traceback").count() == 0
    context.close()
    assert foreign == []


# --- tests --------------------------------------------------------------------------------------
def test_empty_database_shows_no_data_yet(stack: Stack, page: Any) -> None:
    expect(page.locator(".status")).to_contain_text("No data yet", timeout=WAIT_MS)
    expect(page.locator(".anomaly-note")).to_contain_text("No anomalies yet")
    expect(page.locator(".kpi-revenue_1h")).to_contain_text("0.00")
    expect(page.locator(".kpi-revenue_1h")).to_contain_text("Revenue, last hour (USD)")
    expect(page.locator(".revenue-by-currency")).to_contain_text("none yet")


def test_seeded_data_on_the_page(stack: Stack, seeded: Seed, page: Any) -> None:
    # KPIs: the API's numbers, and the seeded ones
    # (the API caches answers for a moment, the DLQ count one refresh longer: wait until it
    # has seen the seed)
    summary = wait_for(lambda: (lambda s: s if (s["count_1h"], s["dlq_count"]) == (43, 2)
                                else None)(stack.get("/summary")), 15, 0.3,
                       "the API to see the seeded documents")
    assert summary["anomalies_1h"] == 3
    # revenue in US dollars (the euros and yen converted), labelled, and per original currency
    assert summary["currency"] == "USD"
    assert summary["revenue_1h"] == round(sum(
        t["amount_reporting"] for t in seeded.transactions if t["timestamp"] > seeded.now
        - timedelta(hours=1)), 2)
    assert summary["revenue_by_currency"] == seeded.revenue_by_currency()
    assert set(summary["revenue_by_currency"]) == {"EUR", "JPY"}
    expect_kpis(page, summary)
    expect(page.locator(".kpi-revenue_1h")).to_contain_text("Revenue, last hour (USD)")
    by_currency = page.locator(".revenue-by-currency")
    for currency, value in summary["revenue_by_currency"].items():
        expect(by_currency).to_contain_text(f"{currency} {value:,.2f}")
    expect(page.locator(".status")).to_be_hidden(timeout=WAIT_MS)

    # volume chart: the API's 60 minutes
    volume = stack.get("/volume?minutes=60")["items"]
    wait_for(lambda: sum(bokeh_data(page, "volume-source")["count"]) == 43, 10, 0.3,
             "the volume chart")
    assert len(bokeh_data(page, "volume-source")["count"]) == len(volume)

    # anomaly table: the three seeded anomalies, newest first, with their z-scores
    table = page.locator(".anomalies")
    for a in seeded.anomalies:
        expect(table).to_contain_text(a["user_id"], timeout=WAIT_MS)
        expect(table).to_contain_text(f"{a['z_score']:.2f}")

    def users_in_rows() -> list[str | None]:  # a row may be re-rendering: read until settled
        rows = table.locator(".tabulator-row").all_inner_texts()
        return [next((u for u in ("user-0", "user-1", "user-2") if u in r), None) for r in rows]
    wait_for(lambda: users_in_rows() == ["user-2", "user-1", "user-0"], 10, 0.3,  # newest first
             lambda: f"the anomaly rows, newest first (now {users_in_rows()})")

    # top merchants: the API's ranking in the chart, then the 7-day window
    top = stack.get("/merchants/top?window=1h&by=revenue&limit=10")["items"]
    wait_for(lambda: bokeh_data(page, "merchants-source")["merchant"] == [
        m["merchant_id"] for m in reversed(top)], 10, 0.3, "the top-merchants chart")
    assert "m-delta" not in bokeh_data(page, "merchants-source")["merchant"]
    page.locator(".window-select").get_by_text("7d").click()
    # a click during a running refresh is picked up by the next tick: allow a few slow ticks
    wait_for(lambda: "m-delta" in bokeh_data(page, "merchants-source")["merchant"], 30, 0.3,
             "the 7d window")

    # user lookup
    page.locator(".user-input input").fill("user-0")
    page.locator(".user-input input").press("Enter")
    info = page.locator(".user-info")
    expect(info).to_contain_text("User user-0", timeout=WAIT_MS)
    expect(info).to_contain_text(f"{seeded.user_spend('user-0'):,.2f}")
    expect(info).to_contain_text("Live statistics unavailable")
    trend = stack.get("/users/user-0/trends?days=30")["days"]
    wait_for(lambda: bokeh_data(page, "trend-source")["spend"] == [d["spend"] for d in trend],
             10, 0.3, "the trend chart")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # an unknown user gets a message, not an error
    page.locator(".user-input input").fill("nobody-at-all")
    page.locator(".user-input input").press("Enter")
    expect(info).to_contain_text("nobody-at-all", timeout=WAIT_MS)
    expect(info).not_to_contain_text("User user-0")
    expect(info).to_contain_text("No transactions of this user")
    # an id the API refuses (longer than the contract allows): its reason, not an error page
    page.locator(".user-input input").fill("x" * 65)
    page.locator(".user-input input").press("Enter")
    expect(info).to_contain_text("Cannot look up", timeout=WAIT_MS)
    expect(info).to_contain_text("user_id")

    # the category filter asks the API for that category only
    page.locator(".category-select select").select_option("grocery")
    expect(table).not_to_contain_text("user-0", timeout=WAIT_MS)
    expect(table).to_contain_text("user-1")
    assert len(table.locator(".tabulator-row").all()) == 1
    page.locator(".category-select select").select_option("all categories")
    expect(table).to_contain_text("user-0", timeout=WAIT_MS)


def test_new_anomaly_appears_without_reload(stack: Stack, seeded: Seed, page: Any) -> None:
    table = page.locator(".anomalies")
    expect(table).to_contain_text("user-2", timeout=WAIT_MS)
    txn = transaction("user-new", 1234.5, datetime.now(UTC).replace(microsecond=0), "m-alpha",
                      "electronics", z_score=11.5, is_anomaly=True)
    stack.db.transactions.insert_one(stored(txn))
    add_anomalies(stack.db, [anomaly_doc(txn, 11.5, 40.0, 100.0, 30)])
    inserted = time.monotonic()
    expect(table).to_contain_text("user-new", timeout=WAIT_MS)
    print(f"new anomaly on the page after {time.monotonic() - inserted:.2f} s")
    # newest first, and highlighted as new
    first = table.locator(".tabulator-row").first
    expect(first).to_contain_text("user-new")
    expect(first).to_contain_text("11.50")
    cell = first.locator('.tabulator-cell[tabulator-field="user_id"]')
    # the row's style arrives with (or right after) its data: poll, don't read once
    expect(cell).to_have_css("background-color", "rgb(255, 243, 191)", timeout=WAIT_MS)
    z_cell = first.locator('.tabulator-cell[tabulator-field="z_score"]')
    expect(z_cell).to_have_css("background-color", "rgb(248, 196, 196)", timeout=WAIT_MS)
    page.screenshot(path=str(ARTIFACTS / "dashboard-new-anomaly.png"), full_page=True)


def test_api_down_then_back(stack: Stack, seeded: Seed, page: Any, browser: Any) -> None:
    summary = stack.get("/summary")
    expect_kpis(page, summary)
    stack.api.stop()
    try:
        status = page.locator(".status")
        expect(status).to_contain_text("The API is unreachable", timeout=WAIT_MS)
        # the last data stays on the page
        expect(page.locator(".kpi-dlq_count")).to_contain_text("2")
        page.screenshot(path=str(ARTIFACTS / "dashboard-api-down.png"), full_page=True)
        # a page opened while the API is down shows the message too, and no traceback
        other = browser.new_page()
        other.goto(stack.page_url)
        expect(other.locator(".status")).to_contain_text("The API is unreachable",
                                                         timeout=WAIT_MS)
        assert other.get_by_text("Traceback").count() == 0
    finally:
        stack.start_api()
    expect(status).to_be_hidden(timeout=WAIT_MS)
    expect(other.locator(".status")).to_be_hidden(timeout=WAIT_MS)
    expect_kpis(other, stack.get("/summary"))
    other.close()


def test_api_client_against_the_real_api(stack: Stack, seeded: Seed) -> None:
    """The dashboard's extract layer: answers, the API's errors as ApiError with its message,
    an API that is not there as ApiUnreachable. (In a thread with its own event loop: the
    synchronous Playwright of this session owns this thread's loop.)"""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _client_checks(stack)).result()


async def _client_checks(stack: Stack) -> None:
    good = ApiClient(stack.api_url, API_KEY)
    wrong_key = ApiClient(stack.api_url, "not-the-key")
    nowhere = ApiClient(f"http://127.0.0.1:{free_port()}", API_KEY)
    try:
        assert (await good.anomalies(limit=1, category="travel"))["items"][0]["user_id"] == "user-2"
        assert (await good.user_trends("user-1/../x"))["user_id"] == "user-1/../x"
        with pytest.raises(ApiError) as bad_window:
            await good.top_merchants("2y")
        assert bad_window.value.status == 422
        assert bad_window.value.message.startswith("window ")
        with pytest.raises(ApiError) as unauthorized:
            await wrong_key.summary()
        assert unauthorized.value.status == 401 and "X-API-Key" in unauthorized.value.message
        with pytest.raises(ApiUnreachable):
            await nowhere.summary()
    finally:
        for client in (good, wrong_key, nowhere):
            await client.aclose()
