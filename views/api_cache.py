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

**Kept keys** (:meth:`ResultCache.keep`, for the expensive answers everybody asks for) are not
computed by requests at all once warm: after :meth:`ResultCache.start` (the app's startup) one
background thread per kept key recomputes it, pausing ``every`` seconds or as long as the
computation took, whichever is longer, after each one (so the database spends at most half of
that thread's time on it), and requests answer from its last result at once. A kept answer is
thus at most :meth:`ResultCache.max_age` seconds old, counted from when its computation began
(``3 * max(every, computation time)``: the computation, the pause, the next computation) while
the refresh works; when the refresh keeps failing (the database is down) the last result is
served for ``stale_seconds`` more, after which a request computes the answer itself (and may
fail: an outage shows). Kept keys are never evicted. Until its first result (right after the
start) a kept key is computed on demand, single flight, like any other.

``ttl <= 0`` disables it (every call computes; nothing is kept).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = ["ResultCache"]

log = logging.getLogger("views.api")


@dataclass
class _Entry:
    value: Any
    fresh_until: float
    stale_until: float
    refreshing: bool = False
    computed_at: float = 0.0


@dataclass
class _Kept:
    compute: Callable[[], Any]
    every: float
    took: float = 0.0  # the last computation's duration
    failing: bool = False


class ResultCache:
    def __init__(self, ttl: float = 2.0, stale_seconds: float = 30.0, cost_factor: float = 20.0,
                 max_entries: int = 1024) -> None:
        self.ttl, self.stale_seconds, self.cost_factor = ttl, stale_seconds, cost_factor
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="api-cache")
        self._kept: dict[Hashable, _Kept] = {}
        self._stop: threading.Event | None = None  # set: the background refresh stops
        self.hits = self.misses = self.refreshes = 0

    # --- kept keys: the background refresh ----------------------------------------------------
    def keep(self, key: Hashable, compute: Callable[[], Any], every: float | None = None) -> None:
        """Refresh ``key`` in the background with ``compute()`` every ``every`` seconds
        (default: ``ttl``) once :meth:`start` is called; requests then answer from its last
        result without waiting. Nothing is kept when the cache is disabled."""
        if self.ttl <= 0:
            return
        with self._lock:
            self._kept[key] = _Kept(compute, self.ttl if every is None else every)

    def max_age(self, key: Hashable) -> float:
        """Seconds: the oldest a kept key's answer can be while its refresh works, counted
        from the start of its computation."""
        with self._lock:
            kept = self._kept[key]
            return 3 * max(kept.every, kept.took)

    def start(self) -> None:
        """Start one background thread per kept key (idempotent); :meth:`stop` ends them."""
        with self._lock:
            if self._stop is not None or not self._kept:
                return
            self._stop = stop = threading.Event()
            kept = list(self._kept)
        for key in kept:
            threading.Thread(target=self._keep_fresh, args=(key, stop), daemon=True,
                             name=f"api-refresh-{key}").start()

    def stop(self) -> None:
        """Stop the background refresh (a computation under way finishes on its own)."""
        with self._lock:
            stop, self._stop = self._stop, None
        if stop is not None:
            stop.set()

    def _keep_fresh(self, key: Hashable, stop: threading.Event) -> None:
        kept = self._kept[key]
        while not stop.is_set():
            started = time.monotonic()
            with self._key_lock(key):  # single flight with a request computing it (warm-up)
                with self._lock:
                    entry = self._entries.get(key)
                recent = entry is not None and started - entry.computed_at < kept.every
                if not recent:
                    self._refresh_kept(key, kept)
            stop.wait(max(kept.every, kept.took))

    def _refresh_kept(self, key: Hashable, kept: _Kept) -> None:
        try:
            self._compute(key, kept.compute)
        except Exception as exc:  # served stale, then requests compute (and report) it
            if not kept.failing:
                log.warning("background refresh of %s failed: %s: %s", key,
                            type(exc).__name__, exc)
            kept.failing = True
            return
        if kept.failing:
            log.info("background refresh of %s works again", key)
        kept.failing = False
        with self._lock:
            self.refreshes += 1

    def _key_lock(self, key: Hashable) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

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
        key_lock = self._key_lock(key)
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
                    if key not in self._kept:  # a kept key's lock is shared with its refresh
                        self._key_locks.pop(key, None)

    def _compute(self, key: Hashable, compute: Callable[[], Any],
                 ttl: float | None = None) -> Any:
        started = time.monotonic()
        value = compute()
        done = time.monotonic()
        fresh = max(self.ttl if ttl is None else ttl, self.cost_factor * (done - started))
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:  # answered from until the refresh is overdue, plus the grace
                kept.took = done - started
                until = done + 2 * max(kept.every, kept.took) + self.stale_seconds
                entry = _Entry(value, until, until, computed_at=done)
            else:
                stale = max(self.stale_seconds, fresh)  # time for a slow refresh to finish
                entry = _Entry(value, done + fresh, done + fresh + stale, computed_at=done)
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                victim = next((k for k in self._entries if k not in self._kept), None)
                if victim is None:
                    break
                del self._entries[victim]
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
        self.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
