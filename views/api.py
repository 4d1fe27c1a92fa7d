"""The Starlette REST API over MongoDB: ``uvicorn views.api:app`` (``make api``).

Endpoints (docs/api.md; ``GET /openapi.json``; ``GET /docs``)::

    GET /health                       200 when MongoDB answers, 503 when not (statuses only)
    GET /users/{user_id}/trends       daily spend/count/anomalies + the worker's live stats
    GET /anomalies                    newest first, keyset (cursor) pagination, filters
    GET /merchants/top                top merchants over 1h / 24h / 7d by revenue or count
    GET /volume                       per-minute count, revenue, anomalies
    GET /summary                      KPIs: transactions/s now, last hour, DLQ size
    GET /metrics                      Prometheus

This module only assembles the application from flat modules, each of which imports only
those listed below it (tests/unit/views/test_api.py checks that):

    api_handlers     the endpoints
    api_middleware   CORS, the generic 500, request metrics, the rate limit, the API key
    api_service      the MongoDB and worker clients, the cache, health and live stats
    api_params       a request's parameters as typed values; every bad one named in a 422
    api_errors       the error answers: 422, HTTPException's (404, 405), 503, 500 (generic
                     bodies; the details go to the log)
    api_openapi      the OpenAPI document and the /docs page
    api_cache        the result cache
    user_trends      the reads of /users/{id}/trends (the kept ended days)
    queries          the MongoDB reads (plain pymongo)
    api_types        the JSON response, the shape of one bad parameter

Settings come from :mod:`app.settings` (MONGO_URL, MONGO_DB, API_KEY, CORS_ORIGINS,
API_RATE_LIMIT, WORKER_URL).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from app.settings import Settings
from app.settings import settings as default_settings
from views import api_handlers as h
from views.api_errors import EXCEPTION_HANDLERS
from views.api_middleware import Metrics, middleware
from views.api_openapi import openapi_schema
from views.api_service import Api

__all__ = ["CACHE_SECONDS", "GC_THRESHOLDS", "SWITCH_INTERVAL", "app", "create_app"]

#: Seconds a cached answer stays fresh (see views/api_cache.py); 0 disables the cache.
CACHE_SECONDS = 2.0
#: The API process's GIL switch interval (Python's default: 5 ms). Its threads mostly wait for
#: sockets while the background refreshes parse documents; a thread whose answer has arrived
#: waits up to one interval for the GIL, several times per request.
SWITCH_INTERVAL = 0.001
#: The served API's garbage collector thresholds (Python's default: 700, 10, 10), set after the
#: start-up's objects are frozen out of its way. With the defaults, a trends-only probe on the
#: long-run stack saw 306 collections over 3 ms in 6 minutes (6.4 s in all, 49 full ones of
#: 70-150 ms, each holding the GIL); with these, 3 (0.24 s).
GC_THRESHOLDS = (50_000, 20, 100)


def create_app(settings: Settings | None = None, cache_seconds: float = CACHE_SECONDS,
               warm: bool = True, tune_gc: bool = False) -> Starlette:
    """A new application reading ``settings`` (default: the process's settings); ``warm``:
    read trends' ended days in the background at startup (views/api_service.py); ``tune_gc``:
    set the process's garbage collector for the served API (:data:`GC_THRESHOLDS`; not for a
    test process that makes many applications)."""
    settings = settings or default_settings
    routes = [
        Route("/health", h.health),
        Route("/users/{user_id:path}/trends", h.trends),
        Route("/anomalies", h.anomalies),
        Route("/merchants/top", h.merchants_top),
        Route("/volume", h.volume),
        Route("/summary", h.summary),
        Route("/openapi.json", h.openapi),
        Route("/docs", h.docs),
        Route("/metrics", h.prometheus),
    ]
    metrics = Metrics()
    api = Api(settings, cache_seconds, warm)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sys.setswitchinterval(SWITCH_INTERVAL)
        if tune_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        api.start()  # the background refresh of /summary and /merchants/top, the warm-up
        try:
            yield
        finally:
            api.close()

    application = Starlette(routes=routes, middleware=middleware(settings, metrics, routes),
                            exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    application.state.api = api
    application.state.openapi = openapi_schema(secured=bool(settings.api_key),
                                               rate_limited=settings.api_rate_limit > 0)
    application.state.metrics = metrics
    return application


app = create_app(tune_gc=True)
