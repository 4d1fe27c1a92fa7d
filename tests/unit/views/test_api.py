"""The API without a database (views/api.py and the modules it builds on): parameter
validation, the OpenAPI document against the routes, the docs page, the API key and CORS (on
paths that need no database), the generic 500 (logged once), the rate limit, and the import
order of the API's modules. The cache and the query helpers have their own tests
(test_api_cache.py, test_queries.py)."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from app.settings import SettingsError, load
from views import queries, user_trends
from views.api import create_app
from views.api_middleware import UNLIMITED_PATHS, RateLimit, TokenBuckets

NOWHERE = {"MONGO_URL": "mongodb://127.0.0.1:9", "WORKER_URL": "http://127.0.0.1:9"}


def _client(**env: str) -> TestClient:
    return TestClient(create_app(load({**NOWHERE, "API_RATE_LIMIT": "0", **env})))


#: What must not appear in an answer: a URL, a host:port, a loopback address.
LOCATION = re.compile(r"://|localhost|127\.0\.0\.1|[A-Za-z0-9.-]:\d{2,5}\b")


# --- validation happens before any database access -----------------------------------------------
@pytest.mark.parametrize("url,params", [
    ("/anomalies?limit=0&min_z=x&since=nope&category=zzz&cursor=%%%",
     {"limit", "min_z", "since", "category", "cursor"}),
    ("/merchants/top?window=5m&by=x&limit=a", {"window", "by", "limit"}),
    ("/volume?minutes=0", {"minutes"}),
    ("/users/" + "u" * 65 + "/trends?days=-1", {"user_id", "days"}),
    ("/users//trends", {"user_id"}),
])
def test_every_bad_parameter_is_named(url: str, params: set[str]) -> None:
    with _client() as c:
        resp = c.get(url)
    assert resp.status_code == 422
    assert {e["param"] for e in resp.json()["errors"]} == params


def test_openapi_describes_every_route() -> None:
    app = create_app(load(NOWHERE))
    with TestClient(app) as c:
        schema = c.get("/openapi.json").json()
        routes = {r.path.replace(":path", "") for r in app.routes}
        assert set(schema["paths"]) == routes - {"/openapi.json", "/docs"}
        assert "securitySchemes" not in schema["components"]
        page = c.get("/docs")
    assert page.status_code == 200 and "openapi.json" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the internet


def test_api_key_and_cors_without_database() -> None:
    with _client(API_KEY="k", CORS_ORIGINS="http://a.test") as c:
        assert c.get("/openapi.json").status_code == 401
        ok = c.get("/openapi.json", headers={"X-API-Key": "k", "Origin": "http://a.test"})
        assert ok.status_code == 200 and ok.json()["security"] == [{"ApiKey": []}]
        assert ok.headers["access-control-allow-origin"] == "http://a.test"
        assert c.get("/docs").status_code == 401  # every endpoint but /health
        assert c.get("/docs", headers={"X-API-Key": "k"}).status_code == 200
        denied = c.get("/openapi.json", headers={"Origin": "http://a.test"})
        assert denied.status_code == 401  # CORS headers on errors too, so browsers see them
        assert denied.headers["access-control-allow-origin"] == "http://a.test"


# --- the generic 500 -----------------------------------------------------------------------------
def test_an_unexpected_error_is_a_generic_500_logged_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom at mongodb://db.internal:27017")

    monkeypatch.setattr(queries, "summary", broken)
    with caplog.at_level(logging.INFO), _client(CORS_ORIGINS="http://a.test") as c:
        resp = c.get("/summary", headers={"Origin": "http://a.test"})  # nothing raised here
        metrics = c.get("/metrics").text
    assert resp.status_code == 500 and resp.json() == {"detail": "internal error"}
    assert not LOCATION.search(resp.text) and "boom" not in resp.text
    assert resp.headers["access-control-allow-origin"] == "http://a.test"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].name == "views.api"
    assert "boom at" in caplog.text and "/summary" in tracebacks[0].getMessage()
    assert 'api_errors_total{route="/summary",status="500"} 1.0' in metrics


# --- the rate limit ---------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_buckets_refill_and_stay_per_client() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=4, clock=clock)
    assert [buckets.take("a") for _ in range(4)] == [0.0] * 4  # a burst of one second's worth
    assert buckets.take("a") == pytest.approx(0.25)  # one token comes back every 1/4 s
    assert buckets.take("b") == 0.0  # another client has its own bucket
    clock.now += 0.25
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    clock.now += 10
    assert [buckets.take("a") for _ in range(5)].count(0.0) == 4  # full again, not more


def test_token_buckets_forget_idle_clients_and_stay_bounded() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2, max_clients=100, clock=clock)
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets.buckets) == 100  # the least recently seen are forgotten
    buckets.take("a")
    buckets.take("a")
    clock.now += 0.9  # not full yet: remembered (it would otherwise get a fresh burst)
    buckets.take("b")
    assert "a" in buckets.buckets
    clock.now += 0.2  # a's bucket is full again: forgetting it changes nothing
    buckets.take("b")
    assert "a" not in buckets.buckets and len(buckets.buckets) == 1
    # Fractional rates: a bucket holds at least one request.
    slow = TokenBuckets(rate=0.5, clock=clock)
    assert slow.take("a") == 0.0 and slow.take("a") == pytest.approx(2.0)


def _limited(rate: float, clock: Clock) -> Starlette:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")
    return Starlette(routes=[Route("/health", ok), Route("/x", ok)],
                     middleware=[Middleware(RateLimit, rate=rate, clock=clock)])


def test_a_burst_over_the_limit_gets_429_with_retry_after() -> None:
    clock = Clock()
    app = _limited(3, clock)
    with TestClient(app, client=("10.0.0.1", 1000)) as one, \
            TestClient(app, client=("10.0.0.2", 1000)) as other:
        assert [one.get("/x").status_code for _ in range(3)] == [200] * 3
        denied = one.get("/x")
        assert denied.status_code == 429
        assert denied.headers["retry-after"] == "1"
        assert denied.headers["content-type"] == "application/json"
        assert denied.json() == {"detail": "too many requests: at most 3 per second per client"}
        assert other.get("/x").status_code == 200  # another client is unaffected
        assert "/health" in UNLIMITED_PATHS
        assert all(one.get("/health").status_code == 200 for _ in range(20))  # probes
        clock.now += 1 / 3
        assert one.get("/x").status_code == 200


def test_the_app_limits_per_client_and_documents_it() -> None:
    # one request per 20 s (a bucket holds one): no refill during the test on any machine
    app = create_app(load({**NOWHERE, "API_RATE_LIMIT": "0.05",
                           "CORS_ORIGINS": "http://a.test"}))
    with TestClient(app) as c, TestClient(app, client=("10.0.0.9", 1)) as other, \
            TestClient(app, client=("10.0.0.10", 1)) as third:
        codes = [c.get("/openapi.json").status_code for _ in range(20)]
        assert codes[0] == 200 and set(codes[1:]) == {429}  # a burst is cut at the limit
        denied = c.get("/docs", headers={"Origin": "http://a.test"})
        assert denied.status_code == 429 and int(denied.headers["retry-after"]) >= 1
        assert "retry-after" in denied.headers["access-control-expose-headers"].lower()
        schema = other.get("/openapi.json").json()
        assert 'status="429"' in third.get("/metrics").text
    for path, ops in schema["paths"].items():
        responses = ops["get"]["responses"]
        assert ("429" in responses) == (path != "/health"), path
        if path != "/health":
            assert "Retry-After" in responses["429"]["headers"]


def test_zero_disables_the_limit() -> None:
    app = create_app(load({**NOWHERE, "API_RATE_LIMIT": "0"}))
    with TestClient(app) as c:
        assert all(c.get("/openapi.json").status_code == 200 for _ in range(300))
        schema = c.get("/openapi.json").json()
    assert not any("429" in ops["get"]["responses"] for ops in schema["paths"].values())
    assert load({}).api_rate_limit == 50
    assert load({"API_RATE_LIMIT": "2.5"}).api_rate_limit == 2.5


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "fast", "1/s"])
def test_a_bad_rate_limit_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="API_RATE_LIMIT"):
        load({"API_RATE_LIMIT": value})


# --- the answers name no host, port or URL ----------------------------------------------------
def test_the_openapi_document_describes_generic_error_and_health_bodies() -> None:
    with _client() as c:
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["Unavailable"]["properties"]["detail"]["enum"] == ["database unavailable"]
    health = schemas["Health"]
    assert set(health["properties"]) == {"status", "mongo", "worker"}
    assert health["additionalProperties"] is False
    assert set(schemas["Dependency"]["properties"]) == {"status", "latency_ms"}
    assert schemas["Dependency"]["additionalProperties"] is False


# --- module layout ----------------------------------------------------------------------------
#: The API's modules, each allowed to import only those after it (views/api.py's docstring).
LAYERS = ["api", "api_handlers", "api_middleware", "api_service", "api_params", "api_errors",
          "api_openapi", "api_cache", "user_trends", "queries", "api_types"]


def _views_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "views":
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("views."):
            names.add(node.module.removeprefix("views."))
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("views.") for a in node.names
                         if a.name.startswith("views."))
    return names


def test_api_modules_import_one_way() -> None:
    views = Path(__file__).resolve().parents[3] / "views"
    found = {p.stem for p in views.glob("api*.py")} | {"queries", "user_trends"}
    assert found == set(LAYERS)
    for i, name in enumerate(LAYERS):
        imported = _views_imports(views / f"{name}.py") & set(LAYERS)
        assert imported <= set(LAYERS[i + 1:]), f"{name} imports {imported - set(LAYERS[i + 1:])}"


# --- the background refresh of /summary and /merchants/top ------------------------------------
def test_summary_and_merchants_top_answer_from_the_background_refresh(monkeypatch) -> None:
    """Once warm, no request runs the query (each would take 0.2 s here): the refresh threads
    started with the app do, and every answer is at most ``max_age`` old by its ``as_of``."""
    import threading
    import time
    from datetime import UTC, datetime

    ran: list[str] = []

    def slow(answer: Any) -> Any:
        ran.append(threading.current_thread().name)
        time.sleep(0.2)
        return answer

    monkeypatch.setattr(queries, "summary", lambda db, now, currency, dead_letters: slow(
        {"count_1h": 1, "as_of": queries.iso(now)}))
    monkeypatch.setattr(queries, "merchant_totals", lambda db, window, now, currency, settled: slow(
        [{"merchant_id": "m1", "merchant_category": "travel", "revenue": 2.5, "count": 3,
          "anomalies": 0}, {"merchant_id": "m2", "merchant_category": "travel",
                            "revenue": 9.0, "count": 1, "anomalies": 0}]))
    app = create_app(load({**NOWHERE, "API_RATE_LIMIT": "0"}), cache_seconds=0.2)
    cache = app.state.api.cache
    paths = ["/summary", *(f"/merchants/top?window={w}&by={by}" for w in queries.WINDOWS
                           for by in ("revenue", "count"))]
    with TestClient(app) as c:
        deadline = time.monotonic() + 10
        while not all(cache.lookup(k, lambda: None)[0] for k in
                      [("summary",), *(("merchants", w) for w in queries.WINDOWS)]):
            assert time.monotonic() < deadline, "never warm"
            time.sleep(0.02)
        by_request = len([t for t in ran if not t.startswith("api-refresh-")])
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            for path in paths:
                asked = time.monotonic()
                body = c.get(path).json()
                assert time.monotonic() - asked < 0.15, path  # never waits for a query
                age = (datetime.now(UTC) - datetime.fromisoformat(body["as_of"])).total_seconds()
                assert age <= 3 * max(0.2, 0.2) + 0.2, (path, age)  # max_age, plus slack
                if "by=count" in path:
                    assert [i["merchant_id"] for i in body["items"]] == ["m1", "m2"]
                elif "merchants" in path:
                    assert [i["merchant_id"] for i in body["items"]] == ["m2", "m1"]
    assert len([t for t in ran if not t.startswith("api-refresh-")]) == by_request
    assert len(ran) > 4 * 3  # each of the 4 kept answers refreshed several times
    count = len(ran)
    time.sleep(0.6)
    assert len(ran) <= count + 4  # stopped with the app (a computation may have been running)


def test_health_answers_from_the_background_checks_once_warm(monkeypatch) -> None:
    """/health pings neither MongoDB nor the worker per request once the background checks
    have a result: a probe's answer never waits for them (here each check takes 0.2 s)."""
    import threading
    import time

    from views.api_service import MONGO_KEY, WORKER_KEY, Api

    pings: list[str] = []

    def slow_ping(self: Api) -> dict[str, Any]:
        pings.append(threading.current_thread().name)
        time.sleep(0.2)
        return {"status": "ok", "latency_ms": 200.0}

    monkeypatch.setattr(Api, "_ping_mongo", slow_ping)
    monkeypatch.setattr(Api, "_ping_worker", slow_ping)
    app = create_app(load({**NOWHERE, "API_RATE_LIMIT": "0"}), cache_seconds=0.2)
    cache = app.state.api.cache
    with TestClient(app) as c:
        deadline = time.monotonic() + 10
        while not all(cache.lookup(k, lambda: None)[0] for k in (MONGO_KEY, WORKER_KEY)):
            assert time.monotonic() < deadline, "never warm"
            time.sleep(0.02)
        by_request = len([t for t in pings if not t.startswith("api-refresh-")])
        for _ in range(20):
            asked = time.monotonic()
            resp = c.get("/health")
            assert time.monotonic() - asked < 0.15
            assert resp.status_code == 200 and resp.json()["mongo"]["status"] == "ok"
        assert len([t for t in pings if not t.startswith("api-refresh-")]) == by_request


@pytest.mark.parametrize(("worker_seconds", "live"), [(0.0, {"count": 3}), (0.5, None)])
def test_trends_wait_for_live_stats_only_api_live_wait_ms(
        monkeypatch: pytest.MonkeyPatch, worker_seconds: float, live: Any) -> None:
    """The history is the answer: a worker slower than API_LIVE_WAIT_MS leaves ``live`` out,
    and ``live_error`` says why."""
    import time

    from views.api_service import Api

    rows = [{"day": "2026-11-30", "spend": 1.0, "count": 1, "anomalies": 0}]
    monkeypatch.setattr(user_trends, "trends", lambda *args, **kwargs: rows)

    def live_stats(self: Api, user_id: str) -> tuple[Any, str | None]:
        time.sleep(worker_seconds)
        return {"count": 3}, None
    monkeypatch.setattr(Api, "live_stats", live_stats)
    with TestClient(create_app(load({**NOWHERE, "API_RATE_LIMIT": "0",
                                     "API_LIVE_WAIT_MS": "200"}), warm=False)) as c:
        started = time.monotonic()
        body = c.get("/users/alice/trends").json()
        took = time.monotonic() - started
    assert body["days"] == rows and body["live"] == live
    if live is None:
        assert body["live_error"] == "the worker did not answer within 200 ms"
        assert took < 0.45
    else:
        assert body["live_error"] is None


def test_the_served_app_tunes_the_garbage_collector_and_a_test_app_does_not() -> None:
    """The served API freezes its start-up objects and collects less often (GC_THRESHOLDS);
    an application made by a test leaves the process's collector alone."""
    import gc

    from views.api import GC_THRESHOLDS
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    try:
        with TestClient(create_app(load(NOWHERE), warm=False)):
            assert gc.get_threshold() == before
        with TestClient(create_app(load(NOWHERE), warm=False, tune_gc=True)):
            assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
