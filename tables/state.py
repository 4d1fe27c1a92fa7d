"""The worker's tables, in RocksDB (the app's ``rocksdb://`` store, rocksdict driver),
co-partitioned with ``transactions`` (both keyed by ``user_id``, ``TOPIC_PARTITIONS``
partitions):

- ``user_stats``: ``user_id`` -> :class:`~tables.records.UserState` (Welford state, last z,
  last applied source offset);
- ``daily_spend``: a tumbling one-day window on the transaction's event time (UTC days), key
  ``(user_id, day range)`` -> :class:`~tables.records.DaySpend`; windows expire after
  :data:`DAY_EXPIRES`, so transactions up to that late still count toward their own day.

Values are immutable records, encoded with orjson (``raw`` serializer) and set back whole.
A write (:func:`put_user`, :func:`put_day`) updates the local store and returns the changelog
message; the processor publishes those and waits until Kafka acknowledged them before it lets
Faust commit the source offsets. Faust recovers the tables from the changelogs as usual.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, NamedTuple

from faust.streams import _current_event  # the context variable behind faust.current_event()
from faust.types import TP, EventT

from app.main import app
from app.settings import settings
from tables.records import DAY_SECONDS, DaySpend, UserState

__all__ = [
    "DAY_EXPIRES",
    "Change",
    "changes_persisted",
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


def _table(name: str, **kwargs: Any) -> Any:
    return app.Table(name, partitions=settings.topic_partitions, value_type=bytes,
                     options={"driver": "rocksdict"}, **kwargs)


#: Keys are the raw user id (``key_type=bytes``: the raw codec, str keys go in as UTF-8), like the
#: source topic's keys, so ``app.table_route`` finds a user's partition (and worker) exactly as
#: the producer's partitioner did. Values are bytes: the raw codec.
user_stats = _table("user-stats", key_type=bytes,
                    help="Per-user Welford statistics (tables/records.py UserState)")

_daily = _table("user-daily-spend", help="Per-user spend in each UTC day (DaySpend)")
daily_spend = _daily.tumbling(timedelta(seconds=DAY_SECONDS), expires=DAY_EXPIRES)

_BY_CHANGELOG = {t.changelog_topic.get_topic_name(): t for t in (user_stats, _daily)}


class Change(NamedTuple):
    """A table write, as the changelog message that makes it durable."""

    topic: str
    key: bytes
    value: bytes
    partition: int
    timestamp: None = None
    headers: None = None


def _write(table: Any, key: Any, value: bytes, partition: int) -> Change:
    """What ``table[key] = value`` does, minus Faust's per-message producer buffer: write the
    local store and return the changelog message, which the caller publishes and awaits
    (``table[key] = value`` would queue it and give no way to wait for it)."""
    table.data[key] = value
    table._maybe_set_key_ttl(key, partition)  # window expiry bookkeeping (Table.on_key_set)
    topic = table.changelog_topic
    return Change(topic.get_topic_name(), topic.prepare_key(key, None)[0], value, partition)


def changes_persisted(offsets: dict[tuple[str, int], int]) -> None:
    """Record, per changelog partition, the offset up to which Kafka acknowledged our writes:
    on a restart Faust's recovery reads each changelog from there (``_on_changelog_sent``)."""
    for (topic, partition), offset in offsets.items():
        _BY_CHANGELOG[topic].data.set_persisted_offset(TP(topic, partition), offset)


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


def put_user(user_id: str, state: UserState, partition: int) -> Change:
    return _write(user_stats, user_id, state.encode(), partition)


def day_key(user_id: str, epoch_seconds: float) -> tuple[str, tuple[float, float]]:
    """The window table key of the UTC day holding ``epoch_seconds``."""
    return user_id, _daily.window.current(epoch_seconds)


def get_day(key: tuple[str, tuple[float, float]]) -> DaySpend:
    return DaySpend.decode(_daily.data.get(key))


def put_day(key: tuple[str, tuple[float, float]], spend: DaySpend, partition: int) -> Change:
    return _write(_daily, key, spend.encode(), partition)


def recent_days(user_id: str, now: float, days: int = 7) -> list[tuple[float, DaySpend]]:
    """``(day start, spend)`` for the ``days`` UTC days ending with the one holding ``now``."""
    out = []
    for back in range(days - 1, -1, -1):
        key = day_key(user_id, now - back * DAY_SECONDS)
        out.append((key[1][0], get_day(key)))
    return out
