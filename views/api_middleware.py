"""The API's middleware: CORS, request metrics for Prometheus and the API key."""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings
from views.api_types import JSON

__all__ = ["OPEN_PATHS", "ApiKey", "MeasureRequests", "Metrics", "middleware"]

#: Endpoints that never need the API key (when API_KEY is set, everything else does).
OPEN_PATHS = frozenset({"/health"})


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

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[Route]) -> None:
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


def middleware(settings: Settings, metrics: Metrics, routes: Sequence[Route]) -> list[Middleware]:
    """The stack, outermost first: CORS (so that a 401 or 422 carries its headers and browsers
    can read it), then the metrics (so that 401s are counted), then the API key."""
    stack = [Middleware(MeasureRequests, metrics=metrics, routes=routes)]
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        stack.insert(0, Middleware(CORSMiddleware, allow_origins=origins,
                                   allow_methods=["GET"], allow_headers=["X-API-Key"]))
    if settings.api_key:
        stack.append(Middleware(ApiKey, key=settings.api_key))
    return stack
