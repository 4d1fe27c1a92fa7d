"""The API without a database: the result cache, cursors, parameter validation, the OpenAPI
document against the routes, the docs page, the API key and CORS (on paths that need no
database)."""

from __future__ import annotations

import ast
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from app.contract import minute_of
from app.settings import load
from views import queries
from views.api import create_app
from views.api_cache import ResultCache

NOWHERE = {"MONGO_URL": "mongodb://127.0.0.1:9", "WORKER_URL": "http://127.0.0.1:9"}


def _client(**env: str) -> TestClient:
    return TestClient(create_app(load({**NOWHERE, **env})))


# --- cache ----------------------------------------------------------------------------------------
def test_cache_single_flight_and_freshness() -> None:
    cache, calls = ResultCache(ttl=0.2, stale_seconds=0.2, cost_factor=0), []

    def compute() -> int:
        calls.append(1)
        time.sleep(0.05)
        return len(calls)

    threads = [threading.Thread(target=lambda: cache.get("k", compute)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.get("k", compute) == 1
    time.sleep(0.25)  # expired, still within the stale window: old value, refresh started
    assert cache.lookup("k", compute) == (True, 1)
    deadline = time.monotonic() + 2
    while cache.get("k", compute) != 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)  # past the stale window: computed by the caller
    assert cache.lookup("k", compute) == (False, None)
    assert cache.get("k", compute) == 3


def test_cache_failures_propagate_and_are_not_cached() -> None:
    cache = ResultCache(ttl=10)

    def boom() -> int:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError):
        cache.get("k", boom)
    assert cache.get("k", lambda: 5) == 5


def test_cache_failed_refresh_keeps_serving_the_stale_value() -> None:
    cache = ResultCache(ttl=0.05, stale_seconds=5, cost_factor=0)
    assert cache.get("k", lambda: 1) == 1
    time.sleep(0.1)

    def boom() -> int:
        raise RuntimeError("db down")

    assert cache.get("k", boom) == 1
    time.sleep(0.1)
    assert cache.get("k", boom) == 1  # the refresh failed; stale value until the window ends


def test_cache_cost_factor_and_bound() -> None:
    cache = ResultCache(ttl=0.01, cost_factor=100, max_entries=3)
    cache.get("slow", lambda: time.sleep(0.02) or "v")
    time.sleep(0.05)  # 0.02 s x 100 = fresh for ~2 s despite ttl=0.01
    assert cache.lookup("slow", lambda: "other") == (True, "v") and cache.refreshes == 0
    for k in range(5):
        cache.get(k, lambda k=k: k)
    assert cache.lookup("slow", lambda: "x") == (False, None)  # evicted: least recently used
    assert ResultCache(ttl=0).lookup("k", lambda: 1) == (False, None)
    assert ResultCache(ttl=0).get("k", lambda: 1) == 1
    cache.clear()
    cache.close()


# --- cursors --------------------------------------------------------------------------------------
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1),
                    timezones=st.just(UTC)),
       st.text(min_size=1, max_size=128))
def test_cursor_round_trip(ts: datetime, txn_id: str) -> None:
    try:
        txn_id.encode("utf-8")
    except UnicodeError:
        return
    ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)
    assert queries.decode_cursor(queries.encode_cursor(ts, txn_id)) == (ts, txn_id)


@given(st.text(max_size=60))
def test_random_text_is_never_a_valid_cursor_or_an_error(raw: str) -> None:
    try:
        ts, txn_id = queries.decode_cursor(raw)
    except queries.CursorError:
        return
    assert ts.tzinfo is not None and isinstance(txn_id, str)


def test_iso_and_minutes() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5, 678901)
    assert queries.iso(naive) == "2026-01-02T03:04:05.678+00:00"
    assert queries.iso(5) == 5
    aware = datetime(2026, 1, 2, 3, 4, 59, tzinfo=UTC) + timedelta(hours=0)
    assert minute_of(aware) == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


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


# --- module layout ----------------------------------------------------------------------------
#: The API's modules, each allowed to import only those after it (views/api.py's docstring).
LAYERS = ["api", "api_handlers", "api_middleware", "api_service", "api_params", "api_errors",
          "api_openapi", "api_cache", "queries", "api_types"]


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
    views = Path(__file__).resolve().parent.parent / "views"
    found = {p.stem for p in views.glob("api*.py")} | {"queries"}
    assert found == set(LAYERS)
    for i, name in enumerate(LAYERS):
        imported = _views_imports(views / f"{name}.py") & set(LAYERS)
        assert imported <= set(LAYERS[i + 1:]), f"{name} imports {imported - set(LAYERS[i + 1:])}"
