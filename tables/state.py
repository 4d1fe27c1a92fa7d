"""The worker's tables, in RocksDB (the app's ``rocksdict://`` store), co-partitioned with
``transactions`` (both keyed by ``user_id``, ``TOPIC_PARTITIONS`` partitions):

- ``user_stats``: ``user_id`` -> :class:`~tables.records.UserState` (Welford state, last z,
  last applied source offset);
- ``daily_spend``: a tumbling one-day window on the transaction's event time (UTC days), key
  ``(user_id, day range)`` -> :class:`~tables.records.DaySpend`; windows expire after
  :data:`DAY_EXPIRES`, so transactions up to that late still count toward their own day.

Values are immutable records, encoded with orjson (``raw`` serializer) and set back whole.
Tables are :class:`DurableTable`: the processor waits until their changelog writes are
acknowledged by Kafka before it lets Faust commit the source offsets.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import faust
from faust.streams import _current_event  # the context variable behind faust.current_event()
from faust.types import EventT

from app.main import app
from app.settings import settings
from tables.records import DAY_SECONDS, DaySpend, UserState

__all__ = [
    "DAY_EXPIRES",
    "DurableTable",
    "daily_spend",
    "day_key",
    "get_day",
    "get_user",
    "in_partition_of",
    "put_day",
    "put_user",
    "recent_days",
    "user_stats",
]

#: How long a day window is kept (and accepts late transactions) after it ends.
DAY_EXPIRES = timedelta(days=8)


class DurableTable(faust.Table):
    """A faust Table that remembers the changelog messages sent since the last
    :meth:`changelog_written`, so a caller can wait until Kafka has acknowledged them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unacked: list[Any] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        self.unacked.append(fut)
        return fut

    async def changelog_written(self) -> int:
        """Wait for every changelog message sent so far; return how many there were."""
        pending, self.unacked = self.unacked, []
        for fut in pending:
            await fut
        return len(pending)


def _table(name: str, **kwargs: Any) -> DurableTable:
    table = DurableTable(app, name=name, beacon=app.tables.beacon,
                         partitions=settings.topic_partitions, value_type=bytes,
                         options={"driver": "rocksdict"}, **kwargs)
    app.tables.add(table)
    return table


#: Keys are the raw user id (``key_type=bytes``: the raw codec, str keys go in as UTF-8), like the
#: source topic's keys, so ``app.table_route`` finds a user's partition (and worker) exactly as
#: the producer's partitioner did. Values are bytes: the raw codec.
user_stats = _table("user-stats", key_type=bytes,
                    help="Per-user Welford statistics (tables/records.py UserState)")

_daily = _table("user-daily-spend", help="Per-user spend in each UTC day (DaySpend)")
daily_spend = _daily.tumbling(timedelta(seconds=DAY_SECONDS), expires=DAY_EXPIRES)


@contextmanager
def in_partition_of(event: EventT) -> Iterator[None]:
    """Make ``event`` the current event, so table reads and writes go to its partition.

    Faust picks a table's partition from the event being processed; the processor handles a
    batch of events from several partitions at once (``stream.take_events``), so it says which.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def get_user(user_id: str) -> UserState:
    return UserState.decode(user_stats.data.get(user_id))  # the store: no table hooks


def put_user(user_id: str, state: UserState) -> None:
    user_stats[user_id] = state.encode()


def day_key(user_id: str, epoch_seconds: float) -> tuple[str, tuple[float, float]]:
    """The window table key of the UTC day holding ``epoch_seconds``."""
    return user_id, _daily.window.current(epoch_seconds)


def get_day(key: tuple[str, tuple[float, float]]) -> DaySpend:
    return DaySpend.decode(_daily.data.get(key))


def put_day(key: tuple[str, tuple[float, float]], spend: DaySpend) -> None:
    _daily[key] = spend.encode()


def recent_days(user_id: str, now: float, days: int = 7) -> list[tuple[float, DaySpend]]:
    """``(day start, spend)`` for the ``days`` UTC days ending with the one holding ``now``."""
    out = []
    for back in range(days - 1, -1, -1):
        key = day_key(user_id, now - back * DAY_SECONDS)
        out.append((key[1][0], get_day(key)))
    return out


async def changelogs_written() -> int:
    """Wait until Kafka acknowledged every table change made so far."""
    return await user_stats.changelog_written() + await _daily.changelog_written()
