"""What the handlers share: the settings, the MongoDB client, the worker's HTTP client and the
result cache, plus the reads that need more than :mod:`views.queries` (health, live stats)."""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import orjson
import pymongo
from pymongo.errors import PyMongoError

from app.settings import Settings
from views import queries, user_trends
from views.api_cache import ResultCache
from views.api_errors import describe, log
from views.settled import SettledDocs

__all__ = ["DLQ_KEY", "HEALTH_CHECK_SECONDS", "MONGO_KEY", "QUERY_TIMEOUT_MS",
           "SUMMARY_KEY", "TRENDS_EMPTY_SECONDS", "TRENDS_KEEP_DAYS", "WORKER_KEY",
           "WORKER_TIMEOUT", "Api", "merchants_key"]

#: Longest wait for one MongoDB answer (pymongo's socketTimeoutMS): past it, a 503.
QUERY_TIMEOUT_MS = 60_000
#: Seconds to wait for the worker's web server.
WORKER_TIMEOUT = 1.0
#: The worker is asked beside the database, not after it: an answer waits for the slower of
#: the two, not their sum.
_WORKER_CALLS = ThreadPoolExecutor(4, thread_name_prefix="worker-calls")
#: The cache key of ``/summary``'s answer.
SUMMARY_KEY = ("summary",)
#: The cache key of the dead letters' count in ``/summary``: counting costs FerretDB time per
#: stored dead letter, so it is a plain cached answer, fresh for the cache's ``ttl`` or 20
#: times as long as it took (``ResultCache.cost_factor``), refreshed in the background: the
#: database spends at most ~5% of its time on it however large the DLQ.
DLQ_KEY = ("dlq_count",)
#: The cache keys of the dependencies' states in ``/health``: checked in the background every
#: HEALTH_CHECK_SECONDS, so that a probe's answer waits neither for a busy worker nor for the
#: database's turn on a busy machine.
WORKER_KEY = ("worker",)
MONGO_KEY = ("mongo",)
HEALTH_CHECK_SECONDS = 1.0
#: Documents of ended days that trends keeps (views/settled.py): enough for the default 30
#: days; an older day is read at every request. An empty day is read again after a minute.
TRENDS_KEEP_DAYS = 31
TRENDS_EMPTY_SECONDS = 60.0


class Api:
    """One per application (``app.state.api``); its reads block, so they run in a worker
    thread."""

    def __init__(self, settings: Settings, cache_seconds: float, warm: bool = True) -> None:
        self.settings = settings
        self.warm = warm  # at start, keep every group's ended days for trends (background)
        self.cache = ResultCache(ttl=cache_seconds)
        # Merchant documents of ended hours and days, re-read now and then (views/settled.py);
        # none when the cache is off, so that every call reads everything.
        self.settled: SettledDocs[Any] | None = SettledDocs() if cache_seconds > 0 else None
        # users_by_day documents of ended days, shared by every user of their group.
        self.settled_days: SettledDocs[Any] | None = SettledDocs(
            forget_after=timedelta(days=TRENDS_KEEP_DAYS),
            empty_seconds=TRENDS_EMPTY_SECONDS) if cache_seconds > 0 else None
        # The expensive answers everybody asks for: refreshed in the background (start()),
        # never computed by a request once warm. /merchants/top ranks one window's totals per
        # request (cheap), so every `by` and `limit` share its key.
        self.cache.keep(SUMMARY_KEY, self.summary)
        for window in queries.WINDOWS:
            self.cache.keep(merchants_key(window), functools.partial(self.merchant_totals, window))
        self.cache.keep(WORKER_KEY, self._ping_worker, every=HEALTH_CHECK_SECONDS)
        self.cache.keep(MONGO_KEY, self._ping_mongo, every=HEALTH_CHECK_SECONDS)
        self._lock = threading.Lock()
        self._client: pymongo.MongoClient[dict[str, Any]] | None = None
        self._worker: httpx.Client | None = None
        self._up: dict[str, bool] = {}  # the last state seen of each dependency

    # Made on first use and again after close(), so one app can be started and stopped
    # several times (test clients do that).
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
    def db(self) -> queries.Db:
        return self.client[self.settings.mongo_db]

    @property
    def worker(self) -> httpx.Client:
        with self._lock:
            if self._worker is None:
                self._worker = httpx.Client(base_url=self.settings.worker_url.rstrip("/"),
                                            timeout=WORKER_TIMEOUT, follow_redirects=True)
            return self._worker

    def start(self) -> None:
        """The app's startup: start the background refresh of the kept answers and the
        warm-up of trends' ended days."""
        self.cache.start()
        if self.warm and self.settled_days is not None:
            threading.Thread(target=self._warm_trends, args=(self.settled_days,), daemon=True,
                             name="api-warm-trends").start()

    def _warm_trends(self, settled: SettledDocs[Any]) -> None:
        started = time.monotonic()
        try:
            kept = user_trends.warm(self.db, datetime.now(UTC), TRENDS_KEEP_DAYS,
                                    self.currency, settled)
        except PyMongoError as exc:  # requests read what they need; an outage shows there
            log.info("trends warm-up stopped: %s", describe(exc))
            return
        log.info("trends warm-up: %d day documents kept in %.1f s", kept,
                 time.monotonic() - started)

    def close(self) -> None:
        self.cache.stop()
        with self._lock:
            client, worker, self._client, self._worker = self._client, self._worker, None, None
        if worker is not None:
            worker.close()
        if client is not None:
            client.close()

    def _report(self, dependency: str, up: bool, detail: str = "") -> None:
        """Log a dependency's change of state, with the details the answers leave out: a
        warning when it goes down (or is down at the first look), info when it is back;
        repeats only at debug level (/health is polled by probes)."""
        with self._lock:
            before, self._up[dependency] = self._up.get(dependency), up
        if up and before is False:
            log.info("%s is available again", dependency)
        elif not up and before is not False:
            log.warning("%s unavailable: %s", dependency, detail)
        elif not up:
            log.debug("%s still unavailable: %s", dependency, detail)

    def _ping_mongo(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            self.client.admin.command("ping")
        except PyMongoError as exc:
            # The error names the servers; MONGO_URL itself is not logged (it holds a password).
            self._report("mongodb", False, describe(exc))
            return {"status": "unavailable"}
        self._report("mongodb", True)
        return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    def _ping_worker(self) -> dict[str, Any]:
        started = time.perf_counter()
        where = self.settings.worker_url
        try:
            resp = self.worker.get("/health")
        except httpx.HTTPError as exc:
            self._report("worker", False, f"{where}: {describe(exc)}")
            return {"status": "unavailable"}
        if resp.status_code != 200:
            self._report("worker", False, f"{where}/health answered HTTP {resp.status_code}")
            return {"status": "unavailable"}
        self._report("worker", True)
        return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    def health_now(self) -> tuple[int, dict[str, Any]] | None:
        """:meth:`health` from the background checks, without waiting (the event loop may call
        it); None until both have a result (or with the cache off)."""
        kept_mongo, mongo = self.cache.lookup(MONGO_KEY, self._ping_mongo)
        kept_worker, worker = self.cache.lookup(WORKER_KEY, self._ping_worker)
        if not (kept_mongo and kept_worker):
            return None
        return self._health(mongo, worker)

    def health(self) -> tuple[int, dict[str, Any]]:
        """(200 or 503, the state of each dependency): 200 when MongoDB answers a ping (the
        worker is reported, not required). Each state is the last background check's, at most
        a few seconds old (``ResultCache.max_age``); until there is one, both are checked now,
        at the same time. Statuses and latencies only: which host failed, and why, goes to the
        log."""
        worker_ping = _WORKER_CALLS.submit(self.cache.get, WORKER_KEY, self._ping_worker)
        mongo = self.cache.get(MONGO_KEY, self._ping_mongo)
        return self._health(mongo, worker_ping.result())

    @staticmethod
    def _health(mongo: dict[str, Any], worker: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        up = mongo["status"] == "ok"
        return (200 if up else 503), {"status": "ok" if up else "unavailable",
                                      "mongo": mongo, "worker": worker}

    def live_stats(self, user_id: str) -> tuple[Any, str | None]:
        """The worker's stats view of ``user_id``: (json, None) or (None, why not)."""
        try:
            resp = self.worker.get(f"/users/{urllib.parse.quote(user_id, safe='')}/stats")
        except httpx.HTTPError as exc:
            self._report("worker", False, f"{self.settings.worker_url}: {describe(exc)}")
            return None, "the worker is not reachable"
        if resp.status_code == 404:
            return None, "the worker has no live statistics for this user (404)"
        if resp.status_code != 200:
            return None, f"the worker answered HTTP {resp.status_code}"
        try:
            return orjson.loads(resp.content), None
        except orjson.JSONDecodeError:
            return None, "the worker answered something that is not JSON"

    @property
    def currency(self) -> str:
        """The reporting currency of every money figure (``REPORTING_CURRENCY``)."""
        return self.settings.reporting_currency

    def trends(self, user_id: str, days: int) -> dict[str, Any]:
        started = time.monotonic()
        asked = _WORKER_CALLS.submit(self.live_stats, user_id)
        rows = user_trends.trends(self.db, user_id, days, datetime.now(UTC), self.currency,
                                  self.settled_days, today_doc=self._today_doc)
        # The history is the answer; the live statistics are waited for until API_LIVE_WAIT_MS
        # after the start (a busy worker answers its view late: the answer's latency would be
        # the worker's).
        wait_ms = self.settings.api_live_wait_ms
        try:
            live, live_error = asked.result(
                timeout=max(0.0, started + wait_ms / 1000 - time.monotonic()))
        except concurrent.futures.TimeoutError:
            live, live_error = None, f"the worker did not answer within {wait_ms} ms"
        return {"user_id": user_id, "currency": self.currency, "days": rows, "live": live,
                "live_error": live_error}

    def _today_doc(self, day: date, group: int) -> dict[str, Any] | None:
        """Today's ``users_by_day`` document of a group, through the cache: every user of the
        group shares it, and a request past its freshness gets it at once while it is read
        again (``ResultCache``: stale-while-revalidate)."""
        doc: dict[str, Any] | None = self.cache.get(
            ("users_by_day", day, group),
            lambda: user_trends.users_day(self.db, day, group, self.currency))
        return doc

    def summary(self) -> dict[str, Any]:
        """``/summary``'s answer now (its ``as_of`` is when it was computed)."""
        return queries.summary(self.db, datetime.now(UTC), self.currency,
                               lambda: self.cache.get(DLQ_KEY, self.dlq_count))

    def dlq_count(self) -> int:
        return queries.dlq_count(self.db)

    def merchant_totals(self, window: str) -> tuple[str, tuple[str, list[dict[str, Any]]]]:
        """(as_of, (since, every merchant's totals)) of ``window`` now."""
        now = datetime.now(UTC)
        return queries.iso(now), (queries.iso(queries.since(window, now)),
                                  queries.merchant_totals(self.db, window, now, self.currency,
                                                          self.settled))


def merchants_key(window: str) -> tuple[str, str]:
    """The cache key of a ``/merchants/top`` window's totals."""
    return ("merchants", window)
