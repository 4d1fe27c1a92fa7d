"""The API against the real FerretDB, seeded with known documents: every number it answers equals
a direct recomputation in Python (tests/api_data.py); pagination, validation, injection,
abuse, API key, CORS, metrics and a database outage."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from app.contract import CATEGORIES
from app.settings import load
from tests.api_data import (
    ODD_USERS,
    REPORTING,
    STALE,
    USERS,
    Seed,
    add_anomalies,
    make_seed,
    parse_iso,
)
from tests.procs import free_port
from tests.unit.views.cursor_strategies import cursors
from views import queries
from views.api import create_app
from views.api_openapi import LIMITS

pytestmark = pytest.mark.integration


def _client(db_name: str, cache_seconds: float = 0, **env: str) -> TestClient:
    # No rate limit: these tests send hundreds of requests a second from one client
    # (tests/unit/views/test_api.py tests the limit).
    # A generous live wait: the answer then says why the worker did not answer. No warm-up:
    # the tests store their documents after the start.
    settings = load({**os.environ, "MONGO_DB": db_name, "API_RATE_LIMIT": "0",
                     "WORKER_URL": f"http://127.0.0.1:{free_port()}", "API_LIVE_WAIT_MS": "10000",
                     **env})
    return TestClient(create_app(settings, cache_seconds=cache_seconds, warm=False))


#: What must not appear in an answer: a URL, a host:port, a loopback address.
LOCATION = re.compile(r"://|localhost|127\.0\.0\.1|[A-Za-z0-9.-]:\d{2,5}\b")


@pytest.fixture(scope="module")
def shared_db(mongo_client) -> Iterator[Any]:
    """One seeded database for the read-only tests of this module."""
    db = mongo_client[f"test_api_{uuid.uuid4().hex[:10]}"]
    seed = make_seed()
    seed.write(db)
    yield db, seed
    mongo_client.drop_database(db.name)


@pytest.fixture(scope="module")
def seeded(shared_db) -> Seed:
    return shared_db[1]


@pytest.fixture(scope="module")
def client(shared_db) -> Iterator[TestClient]:
    with _client(shared_db[0].name) as c:
        yield c


@pytest.fixture
def fresh(mongo_db) -> Seed:
    """The same data in a database of the test's own, for tests that write to it."""
    seed = make_seed()
    seed.write(mongo_db)
    return seed


# --- numbers equal a recomputation ---------------------------------------------------------------
@pytest.mark.parametrize("user_id", USERS)
def test_trends_equal_recomputation(client, seeded, user_id) -> None:
    resp = client.get(f"/users/{_quote(user_id)}/trends", params={"days": 35})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["user_id"] == user_id and body["currency"] == REPORTING
    days = [d["day"] for d in body["days"]]
    assert len(days) == 35 and days == sorted(days)
    assert days[-1] == datetime.now(UTC).date().isoformat() or \
        days[-1] == (datetime.now(UTC) - timedelta(minutes=1)).date().isoformat()
    expected = seeded.trends(user_id, days)
    assert body["days"] == [{**e, "spend": pytest.approx(e["spend"])} for e in expected]
    assert sum(d["count"] for d in body["days"]) > 0  # the seed gives every user some data
    # The worker is not running: the answer says so instead of failing.
    assert body["live"] is None and body["live_error"] == "the worker is not reachable"


def test_trends_default_days_and_cap(client) -> None:
    assert len(client.get("/users/alice/trends").json()["days"]) == 30
    assert len(client.get("/users/alice/trends?days=100000").json()["days"]) == LIMITS["days"]


def test_anomalies_pages_walk_the_whole_order(client, seeded) -> None:
    ids, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/anomalies", params=params).json()
        assert len(body["items"]) <= 7
        ids += [a["txn_id"] for a in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert ids == seeded.anomalies_ordered()
    assert pages == -(-len(ids) // 7)  # no empty last page


def test_anomaly_documents_are_complete(client, seeded) -> None:
    page = client.get("/anomalies?limit=1").json()
    assert page["currency"] == REPORTING
    first = page["items"][0]
    doc = next(a for a in seeded.anomalies if a["_id"] == first["txn_id"])
    assert first == {
        "txn_id": doc["_id"], "user_id": doc["user_id"], "amount": doc["amount"],
        "currency": doc["currency"], "amount_reporting": doc["amount_reporting"],
        "reporting_currency": doc["reporting_currency"], "merchant_id": doc["merchant_id"],
        "merchant_category": doc["merchant_category"],
        "timestamp": doc["timestamp"].isoformat(timespec="milliseconds"),
        "z_score": doc["z_score"], "mean_prev": doc["mean_prev"], "std_prev": doc["std_prev"],
        "n_prev": doc["n_prev"], "detected_at": doc["detected_at"].isoformat(
            timespec="milliseconds")}


@pytest.mark.parametrize("category", [CATEGORIES[0], CATEGORIES[3], CATEGORIES[-1]])
def test_anomaly_filters(client, seeded, category) -> None:
    since = seeded.now - timedelta(hours=30)
    params = {"limit": 200, "category": category, "min_z": 6.5,
              "since": since.isoformat().replace("+00:00", "Z")}
    body = client.get("/anomalies", params=params).json()
    assert [a["txn_id"] for a in body["items"]] == seeded.anomalies_ordered(category, 6.5, since)
    assert body["next_cursor"] is None


def test_pagination_is_stable_while_anomalies_arrive(fresh, mongo_db) -> None:
    seeded = fresh
    with _client(mongo_db.name) as client:
        _walk_while_inserting(client, seeded, mongo_db)


def _walk_while_inserting(client: TestClient, seeded: Seed, mongo_db: Any) -> None:
    expected = seeded.anomalies_ordered()
    body = client.get("/anomalies?limit=10").json()
    ids = [a["txn_id"] for a in body["items"]]
    # New anomalies arrive, newer than everything (and one sharing the first page's last time).
    last_ts = next(a["timestamp"] for a in seeded.anomalies if a["_id"] == ids[-1])
    new = [{**seeded.anomalies[0], "_id": f"new{i}", "txn_id": f"new{i}",
            "timestamp": seeded.now + timedelta(seconds=i + 1)} for i in range(5)]
    new.append({**seeded.anomalies[0], "_id": "0" * 64, "txn_id": "0" * 64, "timestamp": last_ts})
    add_anomalies(mongo_db, new)
    cursor = body["next_cursor"]
    while cursor:
        body = client.get("/anomalies", params={"limit": 10, "cursor": cursor}).json()
        ids += [a["txn_id"] for a in body["items"]]
        cursor = body["next_cursor"]
    # Nothing repeated, nothing skipped; the late one with an older key is found in order.
    assert len(ids) == len(set(ids))
    assert [i for i in ids if i != "0" * 64] == expected
    assert "0" * 64 in ids and not any(i.startswith("new") for i in ids)


@pytest.mark.parametrize("window", ["1h", "24h", "7d"])
@pytest.mark.parametrize("by", ["revenue", "count"])
def test_merchants_top_equal_recomputation(client, seeded, window, by) -> None:
    body = client.get("/merchants/top", params={"window": window, "by": by, "limit": 5}).json()
    assert (body["window"], body["by"], body["currency"]) == (window, by, REPORTING)
    as_of = parse_iso(body["as_of"])
    hour = as_of.replace(minute=0, second=0, microsecond=0)
    assert parse_iso(body["since"]) == {"1h": hour - timedelta(hours=1),
                                        "24h": hour - timedelta(hours=24),
                                        "7d": hour.replace(hour=0) - timedelta(days=7)}[window]
    expected = seeded.merchants_top(window, by, 5, as_of)
    assert body["items"] == [{**e, "revenue": pytest.approx(e["revenue"])} for e in expected]
    assert len(body["items"]) == 5


def test_merchants_top_default(client, seeded) -> None:
    body = client.get("/merchants/top").json()
    assert (body["window"], body["by"]) == ("1h", "revenue")
    expected = seeded.merchants_top("1h", "revenue", 10, parse_iso(body["as_of"]))
    assert [m["merchant_id"] for m in body["items"]] == [e["merchant_id"] for e in expected]


@pytest.mark.parametrize("minutes", [1, 60, 200])
def test_volume_equal_recomputation(client, seeded, minutes) -> None:
    body = client.get("/volume", params={"minutes": minutes}).json()
    assert body["minutes"] == minutes and len(body["items"]) == minutes
    assert body["currency"] == REPORTING
    expected = seeded.volume(minutes, parse_iso(body["as_of"]))
    assert [(parse_iso(i["minute"]), i["count"], i["revenue"], i["anomalies"])
            for i in body["items"]] == [
        (e["minute"], e["count"], pytest.approx(e["revenue"]), e["anomalies"]) for e in expected]


def test_summary_equal_recomputation(client, seeded) -> None:
    body = client.get("/summary").json()
    as_of = parse_iso(body["as_of"])
    hour = seeded.volume(60, as_of)
    assert body["count_1h"] == sum(m["count"] for m in hour)
    assert body["revenue_1h"] == pytest.approx(sum(m["revenue"] for m in hour))
    assert body["anomalies_1h"] == sum(m["anomalies"] for m in hour)
    assert body["tps_now"] == pytest.approx(hour[-2]["count"] / 60, abs=1e-3)
    assert body["dlq_count"] == len(seeded.dlq)
    # one labelled currency: transactions converted into another one are left out
    assert body["currency"] == REPORTING
    assert any(t["reporting_currency"] == STALE and t["minute"] > as_of - timedelta(hours=1)
               for t in seeded.transactions)
    # and the hour per original currency, each in its own amounts
    expected = seeded.revenue_by_currency(as_of)
    assert set(expected) == {"USD", "EUR", "JPY", "INR"}
    assert body["revenue_by_currency"] == {c: pytest.approx(v) for c, v in expected.items()}
    assert list(body["revenue_by_currency"]) == sorted(expected, key=lambda c: -expected[c])


def test_health_reports_statuses_only(shared_db, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="views.api"), _client(shared_db[0].name) as c:
        answers = [c.get("/health") for _ in range(3)]
    resp = answers[0]
    body = resp.json()
    assert resp.status_code == 200 and set(body) == {"status", "mongo", "worker"}
    assert body["status"] == "ok" and body["mongo"]["status"] == "ok"
    assert set(body["mongo"]) == {"status", "latency_ms"} and body["mongo"]["latency_ms"] >= 0
    assert body["worker"] == {"status": "unavailable"}  # not running in this test
    assert not LOCATION.search(resp.text) and shared_db[0].name not in resp.text
    # Where the worker was looked for, and why it failed, is in the log: once, not per probe.
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "worker unavailable" in record.getMessage() and "127.0.0.1:" in record.getMessage()


# --- injection and abuse -----------------------------------------------------------------------
def _quote(user_id: str) -> str:
    from urllib.parse import quote
    return quote(user_id, safe="")


@pytest.mark.parametrize("user_id", ['{"$ne": null}', '{"$gt": ""}', "$where", "[$ne]",
                                     "' || 1==1", "null"])
def test_operator_looking_ids_are_plain_strings(client, seeded, user_id) -> None:
    resp = client.get(f"/users/{_quote(user_id)}/trends?days=40")
    assert resp.status_code == 200
    days = resp.json()["days"]
    expected = sum(d["count"] for d in seeded.trends(user_id, [d["day"] for d in days]))
    assert sum(d["count"] for d in days) == expected
    if user_id not in ODD_USERS:
        assert expected == 0  # an operator never matches other users' transactions


def test_query_operators_in_parameters_are_rejected(client) -> None:
    for url in ["/anomalies?category[$ne]=x", "/anomalies?min_z[$gt]=0"]:
        resp = client.get(url)  # unknown parameter names are ignored, not interpreted
        assert resp.status_code == 200
    resp = client.get("/anomalies", params={"category": '{"$ne": null}'})
    assert resp.status_code == 422 and resp.json()["errors"][0]["param"] == "category"


@pytest.mark.parametrize("url,param", [
    ("/anomalies?limit=0", "limit"), ("/anomalies?limit=-5", "limit"),
    ("/anomalies?limit=abc", "limit"), ("/anomalies?limit=", "limit"),
    ("/anomalies?limit=1.5", "limit"), ("/anomalies?min_z=abc", "min_z"),
    ("/anomalies?min_z=nan", "min_z"), ("/anomalies?min_z=inf", "min_z"),
    ("/anomalies?since=yesterday", "since"), ("/anomalies?since=", "since"),
    ("/anomalies?since=0001-01-01T00:00:00%2B05:00", "since"),
    ("/anomalies?category=", "category"), ("/anomalies?category=Electronics", "category"),
    ("/anomalies?cursor=", "cursor"), ("/anomalies?cursor=not-a-cursor", "cursor"),
    ("/anomalies?cursor=W10", "cursor"), ("/anomalies?cursor=" + "A" * 5000, "cursor"),
    ("/merchants/top?window=2h", "window"), ("/merchants/top?by=anomalies", "by"),
    ("/merchants/top?limit=0", "limit"), ("/volume?minutes=-1", "minutes"),
    ("/volume?minutes=--1", "minutes"), ("/users/alice/trends?days=0", "days"),
    ("/users/" + "x" * 65 + "/trends", "user_id"), ("/users/" + "é" * 65 + "/trends", "user_id"),
])
def test_bad_values_give_422_naming_the_parameter(client, url, param) -> None:
    resp = client.get(url)
    assert resp.status_code == 422, resp.text[:300]
    body = resp.json()
    assert [e["param"] for e in body["errors"]] == [param]
    assert param in body["detail"]


def test_forged_cursors_are_rejected(client) -> None:
    good = queries.encode_cursor(datetime.now(UTC), "abc")
    assert client.get("/anomalies", params={"cursor": good}).status_code == 200
    import base64
    for raw in [b'["2026-01-01T00:00:00", "x"]', b'{"$gt": 1}', b'[1, 2]', b'["x", "y"]',
                b'["2026-01-01T00:00:00+00:00", ""]', b"\xff\xfe"]:
        forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        resp = client.get("/anomalies", params={"cursor": forged})
        assert resp.status_code == 422 and resp.json()["errors"][0]["param"] == "cursor"


#: The cursor of the bug report (base64 of ["0001-01-01T00:00:00+01:00","x"]): was a 500.
CRAFTED_CURSOR = "WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzAxOjAwIiwieCJd"


def _is_422_naming(resp: Any, param: str) -> bool:
    body = resp.json()
    return (resp.status_code == 422 and [e["param"] for e in body["errors"]] == [param]
            and param in body["detail"] and set(body) == {"detail", "errors"})


def test_a_cursor_dated_out_of_range_is_a_422(client) -> None:
    assert _is_422_naming(client.get("/anomalies", params={"cursor": CRAFTED_CURSOR}), "cursor")


#: Fuzzing against the real database: every example is one request.
FUZZ = settings(max_examples=int(os.environ.get("API_FUZZ_EXAMPLES", "100")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(cursor=cursors)
def test_any_cursor_is_answered_200_or_422(client, cursor: str) -> None:
    resp = client.get("/anomalies", params={"cursor": cursor, "limit": 3})
    assert resp.status_code == 200 or _is_422_naming(resp, "cursor"), (cursor, resp.text)


#: Every query parameter of every endpoint (and the path's user_id).
PARAMS = [("/anomalies", "limit"), ("/anomalies", "category"), ("/anomalies", "min_z"),
          ("/anomalies", "since"), ("/merchants/top", "window"), ("/merchants/top", "by"),
          ("/merchants/top", "limit"), ("/volume", "minutes"), ("/users/alice/trends", "days"),
          ("/users/{}/trends", "user_id")]

#: Values near the valid ones as well as arbitrary text.
VALUES = st.one_of(
    st.text(max_size=80),
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["1e400", "-0", "0x10", "1_000", " 1", "１", "2026-01-01T00:00:00+01:00",
                     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "7d", "$ne"]))


@FUZZ
@given(where=st.sampled_from(PARAMS), value=VALUES)
def test_any_parameter_value_is_answered_below_500(client, where: tuple[str, str],
                                                   value: str) -> None:
    path, param = where
    if param == "user_id":
        resp = client.get(path.format(_quote(value)))
    else:
        resp = client.get(path, params={param: value})
    assert resp.status_code < 500, (where, value, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    if resp.status_code == 422:
        assert _is_422_naming(resp, param), (where, value, resp.text)


def test_huge_limits_are_capped(client, seeded) -> None:
    body = client.get("/anomalies?limit=99999999999999999999999").json()
    assert len(body["items"]) == min(LIMITS["anomalies"], len(seeded.anomalies))
    assert len(client.get("/volume?minutes=1000000").json()["items"]) == LIMITS["minutes"]
    assert client.get("/volume?minutes=" + "9" * 5000).json()["minutes"] == LIMITS["minutes"]
    body = client.get("/merchants/top?limit=5000&window=7d").json()
    assert len(body["items"]) == len(seeded.merchant_totals("7d", parse_iso(body["as_of"])))


@pytest.mark.parametrize("path", ["/users//trends", "/users/alice/trend", "/nowhere",
                                  "/users/alice/trends/x"])
def test_unknown_paths_are_json_404(client, path) -> None:
    resp = client.get(path)
    assert resp.status_code in (404, 422)
    assert resp.headers["content-type"].startswith("application/json")


def test_unicode_and_empty_values(client, seeded) -> None:
    for user_id in ["ünï-çødé 😀", "日本語", " ", "\t", "a" * 64]:
        resp = client.get(f"/users/{_quote(user_id)}/trends")
        assert resp.status_code == 200 and resp.json()["user_id"] == user_id
    assert client.get("/anomalies?category=électronique").status_code == 422
    # Invalid UTF-8 in the path is decoded with replacement characters: a plain, unknown id.
    assert client.get("/users/%ED%A0%80/trends").json()["user_id"] == "\ufffd" * 3


def test_post_is_405_json(client) -> None:
    resp = client.post("/summary", json={"$where": "1"})
    assert resp.status_code == 405 and resp.json()["detail"]


# --- API key, CORS, metrics ---------------------------------------------------------------------
def test_api_key(shared_db) -> None:
    with _client(shared_db[0].name, API_KEY="s3cret") as c:
        assert c.get("/health").status_code == 200
        for path in ["/summary", "/anomalies", "/openapi.json", "/metrics", "/volume"]:
            resp = c.get(path)
            assert resp.status_code == 401 and "X-API-Key" in resp.json()["detail"]
            assert c.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/summary", headers={"X-API-Key": "s3cret"}).status_code == 200
        schema = c.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()
        assert schema["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"


def test_cors(shared_db) -> None:
    with _client(shared_db[0].name, CORS_ORIGINS="http://dash.local:5006, http://x.test") as c:
        resp = c.get("/summary", headers={"Origin": "http://dash.local:5006"})
        assert resp.headers["access-control-allow-origin"] == "http://dash.local:5006"
        resp = c.get("/summary", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in resp.headers
        pre = c.options("/summary", headers={"Origin": "http://x.test",
                                             "Access-Control-Request-Method": "GET",
                                             "Access-Control-Request-Headers": "X-API-Key"})
        assert pre.status_code == 200 and "x-api-key" in pre.headers[
            "access-control-allow-headers"].lower()


def test_metrics_count_requests_latency_and_errors(shared_db) -> None:
    with _client(shared_db[0].name) as client:
        _count_three(client)


def _count_three(client: TestClient) -> None:
    for _ in range(3):
        client.get("/summary")
    client.get("/anomalies?limit=0")
    text = client.get("/metrics").text
    assert 'api_requests_total{method="GET",route="/summary",status="200"} 3.0' in text
    assert 'api_request_duration_seconds_count{route="/summary"} 3.0' in text
    assert 'api_errors_total{route="/anomalies",status="422"} 1.0' in text


# --- the cache ----------------------------------------------------------------------------------
def test_cached_answers_refresh(mongo_db, fresh) -> None:
    """An anomaly page (stale-while-revalidate): fresh for the cache's 0.3 s, then answered
    stale at once while one background thread recomputes it."""
    with _client(mongo_db.name, cache_seconds=0.3) as c:
        before = c.get("/anomalies?limit=10").json()["items"]
        new = {**fresh.anomalies[0], "_id": "late", "txn_id": "late",
               "timestamp": datetime.now(UTC) + timedelta(seconds=1)}
        add_anomalies(mongo_db, [new])
        assert c.get("/anomalies?limit=10").json()["items"] == before  # fresh for 0.3 s
        time.sleep(0.4)
        c.get("/anomalies?limit=10")  # stale: answered at once, refreshed in the background
        deadline = time.monotonic() + 5
        while c.get("/anomalies?limit=10").json()["items"][0]["txn_id"] != "late":
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_summary_and_merchants_top_are_refreshed_in_the_background(mongo_db, fresh) -> None:
    """/summary and /merchants/top on FerretDB: what a background refresh started with the app
    computed, at most ``max_age`` old by its ``as_of``, and a change shows within that."""
    with _client(mongo_db.name, cache_seconds=0.3) as c:
        before = c.get("/summary").json()["dlq_count"]
        mongo_db.dlq.insert_one({"_id": "late", "reason": "x"})
        inserted = time.monotonic()
        cache = c.app.state.api.cache
        # The count is a cached answer of its own, refreshed when /summary's refresh finds it
        # stale: it shows one /summary refresh later.
        while (body := c.get("/summary").json())["dlq_count"] != before + 1:
            assert time.monotonic() - inserted < 2 * cache.max_age(("summary",)) + 1
            time.sleep(0.05)
        for path, key in [("/summary", ("summary",)),
                          *((f"/merchants/top?window={w}", ("merchants", w))
                            for w in queries.WINDOWS)]:
            body = c.get(path).json()
            age = (datetime.now(UTC) - parse_iso(body["as_of"])).total_seconds()
            assert age <= cache.max_age(key) + 0.5, (path, age)
        assert cache.refreshes > 4  # by the refresh threads: no request is left computing


# --- outage ---------------------------------------------------------------------------------------
def test_database_outage_is_503(tmp_path, caplog) -> None:
    port = free_port()
    with caplog.at_level(logging.INFO, logger="views.api"), \
            _client("nowhere", MONGO_URL=f"mongodb://127.0.0.1:{port}") as c:
        started = time.monotonic()
        resp = c.get("/health")
        assert resp.status_code == 503
        assert resp.json() == {"status": "unavailable", "mongo": {"status": "unavailable"},
                               "worker": {"status": "unavailable"}}
        for path in ["/summary", "/anomalies", "/volume", "/merchants/top",
                     "/users/alice/trends"]:
            resp = c.get(path)
            assert resp.status_code == 503, path
            assert resp.json() == {"detail": "database unavailable"}, path
            assert not LOCATION.search(resp.text) and str(port) not in resp.text
        assert time.monotonic() - started < 30
        # The details are in the log: which server, and the driver's error.
        assert f"127.0.0.1:{port}" in caplog.text and "ServerSelectionTimeoutError" in caplog.text
        assert not [r for r in caplog.records if r.exc_info]  # an outage is not a traceback
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/anomalies?limit=0").status_code == 422  # validation comes first
