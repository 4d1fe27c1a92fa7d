"""The API's middleware: CORS, the generic 500, request metrics for Prometheus, the rate limit
per client and the API key."""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings
from views.api_errors import server_error
from views.api_types import JSON

__all__ = ["OPEN_PATHS", "UNLIMITED_PATHS", "ApiKey", "CatchErrors", "MeasureRequests",
           "Metrics", "RateLimit", "TokenBuckets", "middleware"]

#: Endpoints that never need the API key (when API_KEY is set, everything else does).
OPEN_PATHS = frozenset({"/health"})
#: Endpoints the rate limit does not count (probes poll /health).
UNLIMITED_PATHS = frozenset({"/health"})


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


class CatchErrors:
    """Answers an exception that no handler of views.api_errors took with a generic 500; the
    traceback is logged once (api_errors.server_error). Starlette's own last-resort handler
    would re-raise the exception after answering, and uvicorn would log it again."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            response = await server_error(Request(scope), exc)
            if not started:  # else the client sees the answer cut short
                await response(scope, receive, send)


class TokenBuckets:
    """A token bucket per client: ``rate`` tokens a second, at most ``capacity`` (one second's
    worth, at least 1) saved up, one taken per request.

    Memory is bounded: a bucket left alone long enough to be full again is the same as no
    bucket, so such idle clients are forgotten (least recently seen first, which is the order
    of the dict); past ``max_clients`` the least recently seen is forgotten anyway (it starts
    again with a full bucket)."""

    def __init__(self, rate: float, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.capacity = rate, max(rate, 1.0)
        self.max_clients, self.clock = max_clients, clock
        self.full_after = self.capacity / rate  # seconds from empty to full
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # (tokens, when)

    def take(self, client: str) -> float:
        """0 when ``client`` may go on (a token is taken), else the seconds until it may."""
        now = self.clock()
        buckets = self.buckets
        while buckets:  # forget idle clients, oldest first
            oldest, (_, when) = next(iter(buckets.items()))
            if now - when < self.full_after and len(buckets) < self.max_clients:
                break
            del buckets[oldest]
        tokens, when = buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - when) * self.rate)
        if tokens >= 1:
            buckets[client] = (tokens - 1, now)
            return 0.0
        buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate


class RateLimit:
    """At most API_RATE_LIMIT requests a second per client IP address (bursts up to one
    second's worth), else 429 with ``Retry-After`` (whole seconds); UNLIMITED_PATHS are not
    counted. The client is the connection's peer: behind a proxy, run uvicorn with
    ``--proxy-headers --forwarded-allow-ips`` so that it is the real client."""

    def __init__(self, app: ASGIApp, rate: float, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate, max_clients, clock)
        self.detail = f"too many requests: at most {rate:g} per second per client"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNLIMITED_PATHS:
            client = scope.get("client")
            wait = self.buckets.take(client[0] if client else "")
            if wait > 0:
                retry_after = str(max(1, math.ceil(wait)))
                resp = JSON({"detail": self.detail}, status_code=429,
                            headers={"Retry-After": retry_after})
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def middleware(settings: Settings, metrics: Metrics, routes: Sequence[Route]) -> list[Middleware]:
    """The stack, outermost first: CORS (so that a 401, 422, 429 or 500 carries its headers and
    browsers can read it), the generic 500 (CatchErrors), the metrics (so that 401s, 429s and
    500s are counted), the rate limit (before the key: guessing keys is limited too), then the
    API key."""
    stack = [Middleware(CatchErrors), Middleware(MeasureRequests, metrics=metrics, routes=routes)]
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        stack.insert(0, Middleware(CORSMiddleware, allow_origins=origins,
                                   allow_methods=["GET"], allow_headers=["X-API-Key"],
                                   expose_headers=["Retry-After"]))
    if settings.api_rate_limit > 0:
        stack.append(Middleware(RateLimit, rate=settings.api_rate_limit))
    if settings.api_key:
        stack.append(Middleware(ApiKey, key=settings.api_key))
    return stack
