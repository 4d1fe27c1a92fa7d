"""The worker's per-user tables, in RocksDB (the app's ``rocksdb://`` store, rocksdict driver),
co-partitioned with ``transactions`` (both keyed by ``user_id``, ``TOPIC_PARTITIONS``
partitions):

- ``user_stats``: ``user_id`` -> :class:`~tables.records.UserState` (Welford state, last z,
  last applied source offset);
- ``daily_spend``: a tumbling one-day window on the transaction's event time (UTC days), key
  ``(user_id, day range)`` -> :class:`~tables.records.DaySpend`; windows expire after
  :data:`DAY_EXPIRES`, so transactions up to that late still count toward their own day.

Values are immutable records, encoded with orjson (``raw`` serializer) and set back whole.
A write (:func:`put_user`, :func:`put_day`) updates the local store and returns the changelog
message (:class:`~tables.changelog.Change`). Faust recovers the tables from the changelogs as
usual.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache, lru_cache
from typing import Any

from app.faust_internals.stores import partition_db, set_key_ttl
from app.main import app
from app.settings import settings
from tables.changelog import Change
from tables.records import DAY_SECONDS, DaySpend, UserState

__all__ = [
    "DAY_EXPIRES",
    "USER_CACHE_MAX",
    "daily_spend",
    "day_key",
    "bound_users",
    "forget_users",
    "get_day",
    "get_user",
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


@cache
def _changelog(table: Any) -> str:
    return str(table.changelog_topic.get_topic_name())


@lru_cache(maxsize=2**16)
def _key_bytes(table: Any, key: Any) -> bytes:
    """``key`` as Faust stores it, in RocksDB and in the changelog (the same bytes). Cached:
    Faust's codec registry costs more than the RocksDB read or write the key is used for, and
    each key is needed at least twice per batch (read, write) and again in later batches."""
    return bytes(table.changelog_topic.prepare_key(key, None)[0])


def _get(table: Any, key: Any, partition: int | None) -> bytes | None:
    db = partition_db(table, partition)
    raw = table.data.get(key) if db is None else db.get(_key_bytes(table, key))
    return None if raw is None else bytes(raw)


def _write(table: Any, key: Any, value: bytes, partition: int) -> Change:
    """What ``table[key] = value`` does, minus Faust's per-message producer buffer: write the
    local store and return the changelog message, which the caller publishes and awaits
    (``table[key] = value`` would queue it and give no way to wait for it)."""
    key_bytes = _key_bytes(table, key)
    db = partition_db(table, partition)
    if db is None:
        table.data[key] = value
    else:
        db.put(key_bytes, value)
    set_key_ttl(table, key, partition)
    return Change(_changelog(table), key_bytes, value, partition)


#: The worker's user states as last read or written, so a user seen again needs no store read
#: and no decoding: ``user_id`` -> state. Only the worker writes its partitions' states, so the
#: cache equals the store as long as its partitions stay; a rebalance (a new consumer
#: generation: partitions moved, tables recovered) empties it (the processor calls
#: :func:`forget_users`).
_users: dict[str, UserState] = {}
#: The cache is emptied when it grows beyond this many users.
USER_CACHE_MAX = 500_000


def forget_users() -> None:
    """Empty the user cache: after a rebalance (the store may have changed under it), when it
    holds too many users, and in tests that replace the store."""
    _users.clear()


def bound_users() -> None:
    """Call before a batch: empties the cache when it holds more than :data:`USER_CACHE_MAX`."""
    if len(_users) > USER_CACHE_MAX:
        _users.clear()


def get_user(user_id: str, partition: int | None = None) -> UserState:
    """The user's state (reading the store: no table hooks); pass the user's partition when
    known (the worker: cached), else Faust looks for it (the views)."""
    if partition is None:
        return UserState.decode(_get(user_stats, user_id, None))
    user = _users.get(user_id)
    if user is None:
        user = _users[user_id] = UserState.decode(_get(user_stats, user_id, partition))
    return user


def put_user(user_id: str, state: UserState, partition: int) -> Change:
    _users[user_id] = state
    return _write(user_stats, user_id, state.encode(), partition)


def day_key(user_id: str, epoch_seconds: float) -> tuple[str, tuple[float, float]]:
    """The window table key of the UTC day holding ``epoch_seconds``."""
    return user_id, _daily.window.current(epoch_seconds)


def get_day(key: tuple[str, tuple[float, float]], partition: int | None = None) -> DaySpend:
    return DaySpend.decode(_get(_daily, key, partition))


def put_day(key: tuple[str, tuple[float, float]], spend: DaySpend, partition: int) -> Change:
    return _write(_daily, key, spend.encode(), partition)


def recent_days(user_id: str, now: float, days: int = 7) -> list[tuple[float, DaySpend]]:
    """``(day start, spend)`` for the ``days`` UTC days ending with the one holding ``now``."""
    out = []
    for back in range(days - 1, -1, -1):
        key = day_key(user_id, now - back * DAY_SECONDS)
        out.append((key[1][0], get_day(key)))
    return out
