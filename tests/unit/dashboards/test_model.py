"""The dashboard's model (dashboards/model.py) over a fake API (httpx.MockTransport): what one
refresh puts into its parameters, and what it shows when the API fails. No browser, no services."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from dashboards.data import ApiClient
from dashboards.model import LiveModel

ANOMALY = {"timestamp": "2026-11-25T10:30:00+00:00", "user_id": "u-1", "amount": 900.0,
           "merchant_id": "m-1", "merchant_category": "travel", "z_score": 7.5, "txn_id": "t-1"}


class FakeApi:
    """Answers like the API; ``down`` refuses connections, ``status`` answers with an error."""

    def __init__(self) -> None:
        self.anomalies = [ANOMALY]
        self.down = False
        self.status = 200
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(f"{request.url.path}?{request.url.query.decode()}")
        if self.down:
            raise httpx.ConnectError("refused", request=request)
        if self.status != 200:
            return httpx.Response(self.status, json={"detail": "X-API-Key is wrong"})
        answers: dict[str, dict[str, Any]] = {
            "/summary": {"tps_now": 1.5, "revenue_1h": 900.0, "anomalies_1h": 1,
                         "dlq_count": 0, "count_1h": 90, "currency": "USD",
                         "revenue_by_currency": {"EUR": 300.0, "JPY": 90_000.0}},
            "/volume": {"currency": "USD",
                        "items": [{"minute": "2026-11-25T10:30:00Z", "count": 90}]},
            "/merchants/top": {"by": "revenue", "currency": "USD",
                               "items": [{"merchant_id": "m-1", "revenue": 900.0}]},
            "/anomalies": {"items": self.anomalies},
        }
        user = {"user_id": "u-1", "currency": "USD",
                "days": [{"day": "2026-11-25", "spend": 900.0, "count": 1, "anomalies": 1}],
                "live": None, "live_error": "the worker is not reachable"}
        return httpx.Response(200, json=answers.get(request.url.path, user))


def model_over(api: FakeApi) -> LiveModel:
    return LiveModel(ApiClient("http://api.test", transport=httpx.MockTransport(api)))


async def test_refresh_fills_the_model() -> None:
    api = FakeApi()
    model = model_over(api)
    assert model.status == "Connecting to the API..." and model.anomalies_for == ""
    await model.refresh()
    assert model.status == ""
    assert model.kpis["revenue_1h"] == 900.0 and model.volume["count"] == [90.0]
    assert model.merchants["merchant"] == ["m-1"]
    assert model.merchants_for == ("1h", "revenue", "USD")
    # every money figure's unit, and the hour per original currency (largest first)
    assert model.currency == "USD"
    assert model.by_currency == {"JPY": 90_000.0, "EUR": 300.0}
    assert list(model.by_currency) == ["JPY", "EUR"]
    assert list(model.anomalies["txn_id"]) == ["t-1"] and model.anomalies_for == "all categories"
    assert list(model.anomalies["new"]) == [False]  # on the page before it was opened
    assert model.last_ok is not None
    # an anomaly that arrives later is new
    api.anomalies = [{**ANOMALY, "txn_id": "t-2"}, ANOMALY]
    await model.refresh()
    assert list(model.anomalies["new"]) == [True, False]


async def test_the_choices_go_into_the_requests() -> None:
    api = FakeApi()
    model = model_over(api)
    model.param.update(window="7d", by="count", category="travel")
    await asyncio.sleep(0.1)  # the watcher's refresh runs as a task
    await model.refresh()
    assert "/merchants/top?window=7d&by=count&limit=10" in api.paths
    assert "/anomalies?limit=50&category=travel" in api.paths
    assert model.merchants_for == ("7d", "count", "USD") and model.anomalies_for == "travel"


async def test_api_down_keeps_the_data_and_says_why() -> None:
    api = FakeApi()
    model = model_over(api)
    await model.refresh()
    api.down = True
    await model.refresh()
    assert model.status.startswith("**The API is unreachable** (http://api.test: ")
    assert "The figures below are from" in model.status and model.status_kind == "danger"
    assert model.kpis["revenue_1h"] == 900.0
    api.down, api.status = False, 401
    await model.refresh()
    assert "answered with an error** (401: X-API-Key is wrong)" in model.status
    assert model.status_kind == "warning"
    api.status = 200
    await model.refresh()
    assert model.status == ""


async def test_user_lookup() -> None:
    api = FakeApi()
    model = model_over(api)
    model.user_id = " u-1 "
    await asyncio.sleep(0.1)  # the watcher's lookup runs as a task
    assert "/users/u-1/trends?days=30" in api.paths
    assert model.user_text.startswith("### User u-1\nLast 30 days: **900.00 USD** spent")
    assert "Live statistics unavailable: the worker is not reachable." in model.user_text
    assert model.trend["spend"] == [900.0] and model.trend["anomalies"] == [1.0]
    model.user_id = ""
    await asyncio.sleep(0.1)
    assert model.trend["spend"] == [] and "Type a user id" in model.user_text
