"""What the API keeps of aggregate documents whose hour or day has ended.

A ``merchant_hours`` or ``merchant_days`` document of 1,000 merchants is one packed JSON text
per partition (:mod:`agents.sink.aggregates`; ~10 ms for FerretDB to read), then parsed and
summed per merchant, and the 24-hour and 7-day rankings sum 25 and 8 of them. Once its hour or
day is over, such a document changes only when a late event arrives (up to
``LATE_EVENT_GRACE_DAYS`` late, rare), so the background refresh of ``/merchants/top`` keeps
its summed merchants and re-reads it at most every ``settled_seconds``, and reads the current
period's documents every time. A late event for a closed period therefore shows within
``settled_seconds``; everything else as soon as the sink has written it.

Trends keeps the ``users_by_day`` documents of ended days the same way, shared by the users of
a group; a request that finds one older than ``settled_seconds`` serves it and has it read
again in the background (:meth:`SettledDocs.refresh_later`), so it waits for today's only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

__all__ = ["OPEN_GRACE", "SWEEP_SECONDS", "SettledDocs"]

T = TypeVar("T")

#: A period counts as open this long after its end: the sink writes its aggregates a few
#: seconds after the transactions (docs/sink.md), so the last ones of an hour land after it.
OPEN_GRACE = timedelta(minutes=2)
#: Forgotten periods are dropped at most this often (a sweep looks at every kept value).
SWEEP_SECONDS = 60.0


class SettledDocs(Generic[T]):
    """Values read from documents, by key: read again at every :meth:`get` while the period
    is open, at most every ``settled_seconds`` after (thread-safe; a key whose period ended
    more than ``forget_after`` ago is dropped)."""

    def __init__(self, settled_seconds: float = 600.0,
                 forget_after: timedelta = timedelta(days=9),
                 clock: Callable[[], float] = time.monotonic,
                 empty_seconds: float = 0.0) -> None:
        self.settled_seconds = settled_seconds
        self.forget_after = forget_after
        self.empty_seconds = empty_seconds
        self.clock = clock
        # key -> (value, clock() when read, the period's end, ``now`` when read)
        self._values: dict[Hashable, tuple[T, float, datetime, datetime]] = {}
        self._lock = threading.Lock()
        self._swept = -SWEEP_SECONDS  # clock() of the last sweep of forgotten periods
        self._refreshing: set[Hashable] = set()  # keys being read by refresh_later

    def kept(self, key: Hashable) -> tuple[T, bool] | None:
        """(value, fresh) of ``key`` when a value read after its period ended is kept, fresh
        or not (:meth:`get` would read a stale one again); None otherwise."""
        with self._lock:
            kept = self._values.get(key)
        if kept is None or kept[3] < kept[2] + OPEN_GRACE:
            return None
        return kept[0], self._usable(kept)

    def _usable(self, kept: tuple[T, float, datetime, datetime]) -> bool:
        """Whether a kept value was read after its period ended (plus the grace) and recently
        enough to answer without reading again."""
        value, read_at, ends, read_now = kept
        return read_now >= ends + OPEN_GRACE and self.clock() - read_at < (
            self.settled_seconds if value else self.empty_seconds)

    def get(self, key: Hashable, ends: datetime, now: datetime, read: Callable[[], T]) -> T:
        """The value of ``key``, whose period ends at ``ends``: ``read()`` now, or the value
        read less than ``settled_seconds`` ago if the period was already over then (a value
        read while it was open may miss its last transactions, so it is not kept). An empty
        value may be a document not written yet (a backlog being stored): it is kept only
        ``empty_seconds``."""
        with self._lock:
            kept = self._values.get(key)
        if kept is not None and kept[2] == ends and self._usable(kept):
            return kept[0]
        return self._read(key, ends, now, read)

    def refresh_later(self, key: Hashable, ends: datetime, now: datetime, read: Callable[[], T],
                      submit: Callable[[Callable[[], T]], object]) -> None:
        """Read ``key`` again through ``submit`` (an executor's), one read at a time per key,
        and keep the result as :meth:`get` does; meanwhile callers serve the kept value. A
        failed read leaves the kept value as it was (the next caller asks again)."""
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def refresh() -> T:
            try:
                return self._read(key, ends, now, read)
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        submit(refresh)

    def _read(self, key: Hashable, ends: datetime, now: datetime, read: Callable[[], T]) -> T:
        started = self.clock()
        return self.put(key, ends, now, read(), started)

    def put(self, key: Hashable, ends: datetime, now: datetime, value: T,
            read_at: float | None = None) -> T:
        """Keep ``value``, read at ``now`` (``clock()`` ``read_at``, default: now), as
        :meth:`get` keeps what it reads; returns it."""
        started = self.clock() if read_at is None else read_at
        with self._lock:
            if not value and not self.empty_seconds:
                self._values.pop(key, None)
                return value
            self._values[key] = (value, started, ends, now)
            if started - self._swept >= SWEEP_SECONDS:
                self._swept = started
                for old in [k for k, (_, _, end, _) in self._values.items()
                            if end < now - self.forget_after]:
                    del self._values[old]
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)
