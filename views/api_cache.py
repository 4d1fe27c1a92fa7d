"""A small result cache for the API's database reads (thread-safe, no event loop involved).

Many clients (dashboards) ask the same questions every second or two; the database answers each
question at most about once per freshness period:

- single flight: concurrent first requests for a key wait for ONE computation;
- stale-while-revalidate: a request for an expired entry gets the previous value at once while
  one background thread recomputes it; for at most ``stale_seconds`` (or the freshness period,
  if longer) after expiry: past that (e.g. the refresh failed), a request computes the answer
  itself and may fail, so a database outage shows;
- an entry stays fresh for ``ttl`` seconds or ``cost_factor`` times as long as it took to
  compute, whichever is longer, so an expensive query uses at most about 1/cost_factor of the
  database's time however many clients ask;
- at most ``max_entries`` keys (least recently used evicted).

``ttl <= 0`` disables it (every call computes).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = ["ResultCache"]


@dataclass
class _Entry:
    value: Any
    fresh_until: float
    stale_until: float
    refreshing: bool = False


class ResultCache:
    def __init__(self, ttl: float = 2.0, stale_seconds: float = 30.0, cost_factor: float = 20.0,
                 max_entries: int = 1024) -> None:
        self.ttl, self.stale_seconds, self.cost_factor = ttl, stale_seconds, cost_factor
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="api-cache")
        self.hits = self.misses = self.refreshes = 0

    def lookup(self, key: Hashable, compute: Callable[[], Any],
               ttl: float | None = None) -> tuple[bool, Any]:
        """(True, value) when ``key`` can be answered from the cache right now (fresh, or stale
        with a refresh started), else (False, None): never waits for the database, so the
        event loop may call it directly."""
        if self.ttl <= 0:
            return False, None
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or now >= entry.stale_until:
                return False, None
            self._entries.move_to_end(key)
            if now >= entry.fresh_until and not entry.refreshing:
                entry.refreshing = True
                self.refreshes += 1
                self._pool.submit(self._refresh, key, compute, ttl)
            self.hits += 1
            return True, entry.value

    def get(self, key: Hashable, compute: Callable[[], Any], ttl: float | None = None) -> Any:
        """The cached value of ``key``, computing it with ``compute()`` when needed; ``ttl``
        overrides the cache's for this key."""
        if self.ttl <= 0:
            return compute()
        hit, value = self.lookup(key, compute, ttl)
        if hit:
            return value
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # single flight: the first caller computes, the others wait and reuse
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and time.monotonic() < entry.fresh_until:
                    self.hits += 1
                    return entry.value
                self.misses += 1
            try:
                return self._compute(key, compute, ttl)
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)

    def _compute(self, key: Hashable, compute: Callable[[], Any],
                 ttl: float | None = None) -> Any:
        started = time.monotonic()
        value = compute()
        done = time.monotonic()
        fresh = max(self.ttl if ttl is None else ttl, self.cost_factor * (done - started))
        with self._lock:
            stale = max(self.stale_seconds, fresh)  # time for a slow refresh to finish
            self._entries[key] = _Entry(value, done + fresh, done + fresh + stale)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def _refresh(self, key: Hashable, compute: Callable[[], Any], ttl: float | None) -> None:
        try:
            self._compute(key, compute, ttl)
        except Exception:  # the next request past stale_until computes and reports the error
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refreshing = False

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
