"""The UTC time buckets of the stream-maintained aggregates (:mod:`agents.sink.aggregates`) as
text: days, hours and minutes of an event time. Pure, and cached: the sink formats several per
stored transaction, and a batch's transactions share a few minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

__all__ = ["HOUR_FORMAT", "Buckets", "buckets", "day_id", "hour_id"]

#: The text of a UTC hour: the ``_id`` of an hour's aggregates and retention manifests.
HOUR_FORMAT = "%Y-%m-%dT%H"


def day_id(ts: datetime) -> str:
    """``YYYY-MM-DD``: the UTC day of ``ts`` (aware)."""
    return hour_id(ts)[:-3]  # without "THH" (a year before 1000 has fewer digits)


def hour_id(ts: datetime) -> str:
    """``YYYY-MM-DDTHH``: the UTC hour of ``ts`` (aware)."""
    return _hour_text(int(ts.timestamp() // 3600))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4096)
def _hour_text(hours: int) -> str:
    """The text of the ``hours``-th hour since 1970: cached, because the sink formats several
    per stored transaction and a batch's transactions share a few hours."""
    return (_EPOCH + timedelta(hours=hours)).strftime(HOUR_FORMAT)


def _end(start: datetime, step: timedelta) -> datetime:
    try:
        return start + step
    except OverflowError:  # the last hour or day of year 9999
        return datetime.max.replace(tzinfo=UTC)


class Buckets(NamedTuple):
    """The time buckets of one UTC minute."""

    day: str
    hour: str
    mm: str
    day_end: datetime
    hour_end: datetime


@lru_cache(maxsize=4096)
def buckets(minute: datetime) -> Buckets:
    """The buckets of ``minute``: cached, because a flush's transactions share a few minutes
    and formatting them was a third of the sink's aggregate CPU."""
    minute = minute.astimezone(UTC)
    hour_start = minute.replace(minute=0, second=0, microsecond=0)
    hour = hour_id(minute)
    return Buckets(hour[:-3], hour, minute.strftime("%M"),
                   _end(hour_start.replace(hour=0), timedelta(days=1)),
                   _end(hour_start, timedelta(hours=1)))
