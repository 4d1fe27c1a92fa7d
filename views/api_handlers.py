"""The endpoints: each checks its parameters, then answers from the result cache or from
:mod:`views.queries` in Starlette's thread pool (pymongo blocks). ``/summary`` and
``/merchants/top`` answer from the cache's kept results, refreshed in the background
(:class:`views.api_service.Api`)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from app.contract import CATEGORIES, MAX_ID_LENGTH
from views import queries
from views.api_openapi import DOCS_HTML, LIMITS
from views.api_params import Params
from views.api_service import SUMMARY_KEY, Api, merchants_key
from views.api_types import JSON

__all__ = [
    "CURSOR_PAGE_SECONDS",
    "anomalies",
    "docs",
    "health",
    "merchants_top",
    "openapi",
    "prometheus",
    "summary",
    "trends",
    "volume",
]

#: Seconds a page of anomalies after the first (a cursor page) stays fresh.
CURSOR_PAGE_SECONDS = 300.0


def _api(request: Request) -> Api:
    api: Api = request.app.state.api
    return api


async def _cached(request: Request, key: tuple[Hashable, ...], compute: Callable[[], Any],
                  ttl: float | None = None) -> Any:
    cache = _api(request).cache
    hit, value = cache.lookup(key, compute, ttl)  # most requests: no thread, no database
    return value if hit else await run_in_threadpool(cache.get, key, compute, ttl)


def _timed(query: Callable[[datetime], Any]) -> tuple[str, Any]:
    """(now as ISO, query(now)): the answer says which moment its windows end at."""
    now = datetime.now(UTC)
    return queries.iso(now), query(now)


async def health(request: Request) -> Response:
    api = _api(request)
    answer = api.health_now()
    if answer is None:
        answer = await run_in_threadpool(api.health)
    status, body = answer
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
            p.fail("cursor", f"is invalid: {exc}")
    p.check()
    api = _api(request)
    db, keep_days = api.db, api.settings.anomaly_retention_days
    ahead = api.settings.future_event_tolerance_seconds
    # Pages after the first change only when an anomaly arrives late with an older timestamp,
    # so they are kept longer and deep pagination does not keep the database busy.
    items, next_cursor = await _cached(
        request, ("anomalies", limit, cursor, category, min_z, since),
        lambda: queries.anomalies(db, limit, cursor, category, min_z, since,
                                  keep_days=keep_days, ahead_seconds=ahead),
        ttl=CURSOR_PAGE_SECONDS if cursor else None)
    return JSON({"currency": api.currency, "items": items, "next_cursor": next_cursor})


async def merchants_top(request: Request) -> Response:
    p = Params(request)
    window = p.choice("window", "1h", tuple(queries.WINDOWS))
    by = p.choice("by", "revenue", ("revenue", "count"))
    limit = p.integer("limit", 10, LIMITS["merchants"])
    p.check()
    assert window is not None and by is not None
    api = _api(request)
    # One kept answer per window (refreshed in the background), ranked per request (cheap):
    # every order and limit share it.
    as_of, (since, totals) = await _cached(request, merchants_key(window),
                                           lambda: api.merchant_totals(window))
    items = queries.top(totals, by, limit)
    return JSON({"window": window, "by": by, "currency": api.currency, "items": items,
                 "since": since, "as_of": as_of})


async def volume(request: Request) -> Response:
    p = Params(request)
    minutes = p.integer("minutes", 60, LIMITS["minutes"])
    p.check()
    api = _api(request)
    db, currency = api.db, api.currency
    as_of, items = await _cached(
        request, ("volume", minutes),
        lambda: _timed(lambda now: queries.volume(db, minutes, now, currency)))
    return JSON({"minutes": minutes, "currency": currency, "items": items, "as_of": as_of})


async def summary(request: Request) -> Response:
    api = _api(request)
    body = await _cached(request, SUMMARY_KEY, api.summary)  # kept: refreshed in the background
    return JSON(body)


async def openapi(request: Request) -> Response:
    return JSON(request.app.state.openapi)


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)


async def prometheus(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
