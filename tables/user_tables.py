"""The worker's per-user table, in RocksDB (the app's ``rocksdb://`` store, rocksdict driver),
co-partitioned with ``transactions`` (both keyed by ``user_id``, ``TOPIC_PARTITIONS``
partitions):

- ``user-state``: ``user_id`` -> :class:`~tables.records.UserState`: the Welford state, the
  last z, the spend of each open UTC day of event time, and the last applied source offset;
  one value per user, so one changelog record per user per batch;
- and, under a key no user can have (:func:`stream_time_key`), each partition's *stream time*
  (the newest event time folded there), which decides lateness and which days are kept
  (:mod:`tables.windows`). It is written after the batch's user values, to the same changelog
  partition: Kafka keeps a partition's records in order, so a recovered stream time never runs
  ahead of the recovered users.

Values are immutable, encoded with orjson (``raw`` serializer) and set back whole. A write
(:func:`put_user`, :func:`put_stream_time`) updates the local store and returns the changelog
message (:class:`~tables.changelog.Change`). Faust recovers the table from its changelog as
usual; nothing lives only in memory, so expiry works the same after a restart or a rebalance.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

import orjson

from app.faust_internals.stores import partition_db
from app.main import app, table_options
from app.settings import settings
from tables.changelog import Change
from tables.records import UserState
from tables.windows import NO_STREAM_TIME

__all__ = [
    "USER_CACHE_MAX",
    "bound_users",
    "forget_users",
    "get_stream_time",
    "get_user",
    "put_stream_time",
    "put_user",
    "stream_time_key",
    "user_state",
]

#: Keys are the raw user id (``key_type=bytes``: the raw codec, str keys go in as UTF-8), like the
#: source topic's keys, so ``app.table_route`` finds a user's partition (and worker) exactly as
#: the producer's partitioner did. Values are bytes: the raw codec.
user_state = app.Table("user-state", partitions=settings.topic_partitions, key_type=bytes,
                       value_type=bytes, options=table_options(),
                       help="Per-user statistics and open days (tables/records.py UserState)")


def stream_time_key(partition: int) -> bytes:
    """The key of a partition's stream time: not UTF-8 (``0xff``), so never a user's id."""
    return b"\xffstream-time/%d" % partition


@cache
def _changelog() -> str:
    return str(user_state.changelog_topic.get_topic_name())


@lru_cache(maxsize=2**16)
def _key_bytes(key: Any) -> bytes:
    """``key`` as Faust stores it, in RocksDB and in the changelog (the same bytes). Cached:
    Faust's codec registry costs more than the RocksDB read or write the key is used for."""
    return bytes(user_state.changelog_topic.prepare_key(key, None)[0])


def _get(key: Any, partition: int | None) -> bytes | None:
    db = partition_db(user_state, partition)
    raw = user_state.data.get(key) if db is None else db.get(_key_bytes(key))
    return None if raw is None else bytes(raw)


def _write(key: Any, value: bytes, partition: int) -> Change:
    """What ``table[key] = value`` does, minus Faust's per-message producer buffer: write the
    local store and return the changelog message, which the caller publishes and awaits."""
    key_bytes = _key_bytes(key)
    db = partition_db(user_state, partition)
    if db is None:
        user_state.data[key] = value
    else:
        db.put(key_bytes, value)
    return Change(_changelog(), key_bytes, value, partition)


#: The worker's user states and stream times as last read or written, so a user seen again
#: needs no store read and no decoding. Only the worker writes its partitions' values, so the
#: cache equals the store as long as its partitions stay; a rebalance (a new consumer
#: generation: partitions moved, tables recovered) empties it (the processor calls
#: :func:`forget_users`).
_users: dict[str, UserState] = {}
_stream_times: dict[int, float] = {}
#: The cache is emptied when it grows beyond this many users.
USER_CACHE_MAX = 500_000


def forget_users() -> None:
    """Empty the caches: after a rebalance (the store may have changed under them), and in
    tests that replace the store."""
    _users.clear()
    _stream_times.clear()


def bound_users() -> None:
    """Call before a batch: empties the user cache when it holds more than
    :data:`USER_CACHE_MAX` users."""
    if len(_users) > USER_CACHE_MAX:
        _users.clear()


def get_user(user_id: str, partition: int | None = None) -> UserState:
    """The user's state (reading the store: no table hooks); pass the user's partition when
    known (the worker: cached), else Faust looks for it (the views)."""
    if partition is None:
        return UserState.decode(_get(user_id, None))
    user = _users.get(user_id)
    if user is None:
        user = _users[user_id] = UserState.decode(_get(user_id, partition))
    return user


def put_user(user_id: str, state: UserState, partition: int) -> Change:
    _users[user_id] = state
    return _write(user_id, state.encode(), partition)


def get_stream_time(partition: int) -> float:
    """The partition's stream time (epoch seconds), or NO_STREAM_TIME if it folded nothing."""
    stream_time = _stream_times.get(partition)
    if stream_time is None:
        raw = _get(stream_time_key(partition), partition)
        stream_time = NO_STREAM_TIME if raw is None else float(orjson.loads(raw))
        _stream_times[partition] = stream_time
    return stream_time


def put_stream_time(partition: int, stream_time: float) -> Change:
    _stream_times[partition] = stream_time
    return _write(stream_time_key(partition), orjson.dumps(stream_time), partition)
