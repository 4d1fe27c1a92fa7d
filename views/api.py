"""The Starlette REST API over MongoDB: ``uvicorn views.api:app`` (``make api``).

Endpoints (docs/api.md; ``GET /openapi.json``; ``GET /docs``)::

    GET /health                       200 when MongoDB answers, 503 with the reason when not
    GET /users/{user_id}/trends       daily spend/count/anomalies + the worker's live stats
    GET /anomalies                    newest first, keyset (cursor) pagination, filters
    GET /merchants/top                top merchants over 1h / 24h / 7d by revenue or count
    GET /volume                       per-minute count, revenue, anomalies
    GET /summary                      KPIs: transactions/s now, last hour, DLQ size
    GET /metrics                      Prometheus

Reads go through :mod:`views.queries` (plain pymongo, run in Starlette's thread pool) and a
short result cache (:mod:`views.api_cache`). Bad parameters give 422 naming them, a database
outage 503; settings come from :mod:`app.settings` (MONGO_URL, MONGO_DB, API_KEY, CORS_ORIGINS,
WORKER_URL).
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pymongo
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pymongo.database import Database
from pymongo.errors import PyMongoError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.contract import CATEGORIES, MAX_ID_LENGTH
from app.settings import Settings
from app.settings import settings as default_settings
from views import queries
from views.api_cache import ResultCache
from views.api_openapi import DOCS_HTML, LIMITS, openapi_schema

__all__ = ["Api", "app", "create_app"]

log = logging.getLogger("views.api")

#: Seconds a cached answer stays fresh (see views/api_cache.py); 0 disables the cache.
CACHE_SECONDS = 2.0
#: Seconds a page of anomalies after the first (a cursor page) stays fresh.
CURSOR_PAGE_SECONDS = 300.0
#: Longest wait for one MongoDB answer (pymongo's socketTimeoutMS): past it, a 503.
QUERY_TIMEOUT_MS = 60_000
#: Seconds to wait for the worker's web server.
WORKER_TIMEOUT = 1.0
#: Endpoints that never need the API key (when API_KEY is set, everything else does).
OPEN_PATHS = frozenset({"/health"})

_INT = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class InvalidParams(Exception):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(errors)
        self.errors = errors


class Params:
    """Reads and checks a request's parameters, collecting every error for one 422 answer."""

    def __init__(self, request: Request) -> None:
        self.query = request.query_params
        self.path = request.path_params
        self.errors: list[dict[str, str]] = []

    def _fail(self, name: str, message: str, where: str = "query") -> None:
        self.errors.append({"param": name, "in": where, "message": f"{name} {message}"})

    def integer(self, name: str, default: int, cap: int) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        if not _INT.fullmatch(raw):
            self._fail(name, f"must be an integer from 1 (values above {cap} are capped)")
            return default
        if raw.startswith("-") or (len(raw) <= 18 and int(raw) < 1):
            self._fail(name, "must be at least 1")
            return default
        return cap if len(raw) > 18 else min(int(raw), cap)

    def number(self, name: str) -> float | None:
        raw = self.query.get(name)
        if raw is None:
            return None
        if not _NUMBER.fullmatch(raw):
            self._fail(name, "must be a number")
            return None
        return float(raw)

    def choice(self, name: str, default: str | None, choices: tuple[str, ...]) -> str | None:
        raw = self.query.get(name)
        if raw is None:
            return default
        if raw not in choices:
            self._fail(name, f"must be one of {', '.join(choices)}")
            return default
        return raw

    def timestamp(self, name: str) -> datetime | None:
        raw = self.query.get(name)
        if raw is None:
            return None
        try:
            ts = datetime.fromisoformat(raw.upper() if len(raw) < 64 else "")
            return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)
        except (ValueError, OverflowError):  # overflow: e.g. year 1 with a positive offset
            self._fail(name, "must be an ISO-8601 date-time, e.g. 2026-11-25T10:00:00Z")
            return None

    def text(self, name: str, max_length: int, where: str = "query") -> str | None:
        raw = (self.path if where == "path" else self.query).get(name)
        if raw is None:
            return None
        if not raw or len(raw) > max_length:
            self._fail(name, f"must have 1 to {max_length} characters", where)
            return None
        try:
            raw.encode("utf-8")
        except UnicodeError:
            self._fail(name, "must be valid UTF-8", where)
            return None
        return str(raw)

    def check(self) -> None:
        if self.errors:
            raise InvalidParams(self.errors)


class Api:
    """What the handlers share: settings, the MongoDB client, the worker client, the cache."""

    def __init__(self, settings: Settings, cache_seconds: float = CACHE_SECONDS) -> None:
        self.settings = settings
        self.cache = ResultCache(ttl=cache_seconds)
        self._lock = threading.Lock()
        self._client: pymongo.MongoClient[dict[str, Any]] | None = None
        self._worker: httpx.Client | None = None

    # The clients are made on first use and again after close() (the app's shutdown), so one
    # app object can be started and stopped several times (test clients do that).
    @property
    def client(self) -> pymongo.MongoClient[dict[str, Any]]:
        with self._lock:
            if self._client is None:
                self._client = pymongo.MongoClient(
                    self.settings.mongo_url, tz_aware=True, appname="txn-api",
                    serverSelectionTimeoutMS=2_000, connectTimeoutMS=2_000,
                    socketTimeoutMS=QUERY_TIMEOUT_MS)
            return self._client

    @property
    def db(self) -> Database[dict[str, Any]]:
        return self.client[self.settings.mongo_db]

    @property
    def worker(self) -> httpx.Client:
        with self._lock:
            if self._worker is None:
                self._worker = httpx.Client(base_url=self.settings.worker_url.rstrip("/"),
                                            timeout=WORKER_TIMEOUT, follow_redirects=True)
            return self._worker

    def close(self) -> None:
        with self._lock:
            client, worker, self._client, self._worker = self._client, self._worker, None, None
        if worker is not None:
            worker.close()
        if client is not None:
            client.close()

    # --- the reads (run in a worker thread) ---------------------------------------------------
    def health(self) -> tuple[int, dict[str, Any]]:
        started = time.perf_counter()
        try:
            self.client.admin.command("ping")
        except PyMongoError as exc:
            return 503, {"status": "unavailable", "reason": f"mongodb: {_why(exc)}"}
        mongo = {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                 "database": self.settings.mongo_db}
        worker: dict[str, Any] = {"ok": False, "url": self.settings.worker_url,
                                  "status_code": None, "error": None}
        try:
            resp = self.worker.get("/health")
            worker.update(ok=resp.status_code == 200, status_code=resp.status_code)
        except httpx.HTTPError as exc:
            worker["error"] = _why(exc)
        return 200, {"status": "ok", "mongo": mongo, "worker": worker}

    def live_stats(self, user_id: str) -> tuple[Any, str | None]:
        """The worker's stats view of ``user_id``: (json, None) or (None, why not)."""
        try:
            resp = self.worker.get(f"/users/{urllib.parse.quote(user_id, safe='')}/stats")
        except httpx.HTTPError as exc:
            return None, f"worker not reachable at {self.settings.worker_url}: {_why(exc)}"
        if resp.status_code == 404:
            return None, "the worker has no live statistics for this user (404)"
        if resp.status_code != 200:
            return None, f"the worker answered HTTP {resp.status_code}"
        try:
            return orjson.loads(resp.content), None
        except orjson.JSONDecodeError:
            return None, "the worker answered something that is not JSON"

    def trends(self, user_id: str, days: int) -> dict[str, Any]:
        rows = queries.trends(self.db, user_id, days, datetime.now(UTC))
        live, live_error = self.live_stats(user_id)
        return {"user_id": user_id, "days": rows, "live": live, "live_error": live_error}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


# --- handlers -----------------------------------------------------------------------------------
def _api(request: Request) -> Api:
    api: Api = request.app.state.api
    return api


async def _cached(request: Request, key: tuple[Any, ...], compute: Callable[[], Any],
                  ttl: float | None = None) -> Any:
    cache = _api(request).cache
    hit, value = cache.lookup(key, compute, ttl)  # most requests: no thread, no database
    return value if hit else await run_in_threadpool(cache.get, key, compute, ttl)


def _timed(query: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """(now as ISO, query(*args, now)): the answer says which moment its windows end at."""
    now = datetime.now(UTC)
    return queries.iso(now), query(*args, now)


async def health(request: Request) -> Response:
    status, body = await run_in_threadpool(_api(request).health)
    return JSON(body, status_code=status)


async def trends(request: Request) -> Response:
    p = Params(request)
    user_id = p.text("user_id", MAX_ID_LENGTH, where="path")
    days = p.integer("days", 30, LIMITS["days"])
    p.check()
    assert user_id is not None
    api = _api(request)
    body = await _cached(request, ("trends", user_id, days), lambda: api.trends(user_id, days))
    return JSON(body)


async def anomalies(request: Request) -> Response:
    p = Params(request)
    limit = p.integer("limit", 50, LIMITS["anomalies"])
    cursor = p.text("cursor", 400)
    category = p.choice("category", None, CATEGORIES)
    min_z = p.number("min_z")
    since = p.timestamp("since")
    if cursor is not None:
        try:
            queries.decode_cursor(cursor)
        except queries.CursorError as exc:
            p._fail("cursor", f"is invalid: {exc}")
    p.check()
    db = _api(request).db
    # Pages after the first only change when an anomaly arrives late with an older timestamp:
    # they are kept longer (CURSOR_PAGE_SECONDS), so deep pagination does not keep the
    # database busy refreshing pages.
    items, next_cursor = await _cached(
        request, ("anomalies", limit, cursor, category, min_z, since),
        lambda: queries.anomalies(db, limit, cursor, category, min_z, since),
        ttl=CURSOR_PAGE_SECONDS if cursor else None)
    return JSON({"items": items, "next_cursor": next_cursor})


async def merchants_top(request: Request) -> Response:
    p = Params(request)
    window = p.choice("window", "1h", tuple(queries.WINDOWS))
    by = p.choice("by", "revenue", ("revenue", "count"))
    limit = p.integer("limit", 10, LIMITS["merchants"])
    p.check()
    assert window is not None and by is not None
    db = _api(request).db
    # One cached aggregate per window, ranked per request (cheap): every order and limit
    # share it.
    as_of, totals = await _cached(request, ("merchants", window),
                                  lambda: _timed(queries.merchant_totals, db, window))
    items = queries.top(totals, by, limit)
    return JSON({"window": window, "by": by, "items": items, "as_of": as_of})


async def volume(request: Request) -> Response:
    p = Params(request)
    minutes = p.integer("minutes", 60, LIMITS["minutes"])
    p.check()
    db = _api(request).db
    as_of, items = await _cached(request, ("volume", minutes),
                                 lambda: _timed(queries.volume, db, minutes))
    return JSON({"minutes": minutes, "items": items, "as_of": as_of})


async def summary(request: Request) -> Response:
    db = _api(request).db
    body = await _cached(request, ("summary",), lambda: queries.summary(db, datetime.now(UTC)))
    return JSON(body)


async def openapi(request: Request) -> Response:
    return JSON(request.app.state.openapi)


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)


async def prometheus(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# --- errors -------------------------------------------------------------------------------------
async def invalid_params(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidParams)
    names = ", ".join(e["param"] for e in exc.errors)
    return JSON({"detail": f"invalid parameter(s): {names}", "errors": exc.errors},
                status_code=422)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSON({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def database_error(request: Request, exc: Exception) -> Response:
    log.warning("database error on %s: %s", request.url.path, _why(exc))
    return JSON({"status": "unavailable", "reason": f"mongodb: {_why(exc)}"}, status_code=503)


async def server_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s", request.url.path, exc_info=exc)
    return JSON({"detail": "internal error"}, status_code=500)


# --- middleware ---------------------------------------------------------------------------------
class Metrics:
    """Prometheus metrics of the requests, in the application's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("api_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "api_request_duration_seconds", "Request latency", ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15))
        self.errors = Counter("api_errors_total", "Responses with status >= 400",
                              ["route", "status"], registry=self.registry)


class MeasureRequests:
    """Records every request in :class:`Metrics`, labelled by route template (bounded)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[Route]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    def route_of(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route, m = self.route_of(scope), self.metrics
            m.requests.labels(scope["method"], route, str(status)).inc()
            m.latency.labels(route).observe(time.perf_counter() - started)
            if status >= 400:
                m.errors.labels(route, str(status)).inc()


class ApiKey:
    """When API_KEY is set, every path but OPEN_PATHS needs ``X-API-Key: <key>``."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.key and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"x-api-key", b"")
            if not hmac.compare_digest(given, self.key):
                resp = JSON({"detail": "missing or wrong X-API-Key header"}, status_code=401)
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --- the application ----------------------------------------------------------------------------
def create_app(settings: Settings | None = None, cache_seconds: float = CACHE_SECONDS) -> Starlette:
    """A new application reading ``settings`` (default: the process's settings)."""
    settings = settings or default_settings
    routes = [
        Route("/health", health),
        Route("/users/{user_id:path}/trends", trends),
        Route("/anomalies", anomalies),
        Route("/merchants/top", merchants_top),
        Route("/volume", volume),
        Route("/summary", summary),
        Route("/openapi.json", openapi),
        Route("/docs", docs),
        Route("/metrics", prometheus),
    ]
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    metrics = Metrics()
    middleware = [Middleware(MeasureRequests, metrics=metrics, routes=routes)]
    if origins:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=origins,
                                        allow_methods=["GET"], allow_headers=["X-API-Key"]))
    if settings.api_key:
        middleware.append(Middleware(ApiKey, key=settings.api_key))
    api = Api(settings, cache_seconds)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        api.close()

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        InvalidParams: invalid_params, HTTPException: http_error,
        PyMongoError: database_error, Exception: server_error}
    application = Starlette(routes=routes, middleware=middleware,
                            exception_handlers=handlers, lifespan=lifespan)
    application.state.api = api
    application.state.openapi = openapi_schema(secured=bool(settings.api_key))
    application.state.metrics = metrics
    return application


app = create_app()
