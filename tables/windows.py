"""Event-time day windows and the late/future rules, as pure functions (no Faust).

Time is the events' own: a partition's *stream time* is the newest event time the worker has
folded on it. A user's spend is kept per UTC day of event time; a day is kept while an event
of it may still arrive, that is until the stream time is more than the grace
(``LATE_EVENT_GRACE_DAYS``) past it, and an event older than the stream time minus the grace
is refused as late. Nothing here reads the wall clock: the caller passes it in.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DAY_SECONDS", "Days", "NO_STREAM_TIME", "day_of", "day_start", "is_future",
           "is_late", "kept_days", "oldest_kept_day"]

DAY_SECONDS = 86_400
#: The stream time of a partition that has folded nothing yet: no event is late there.
NO_STREAM_TIME = float("-inf")

#: A user's open days: ``(UTC day number, spend in cents, transactions)``, oldest first.
Days = tuple[tuple[int, int, int], ...]


def day_of(epoch_seconds: float) -> int:
    """The UTC day (days since 1970-01-01) holding ``epoch_seconds``."""
    return int(epoch_seconds // DAY_SECONDS)


def day_start(epoch_seconds: float) -> float:
    """Start (epoch seconds) of the UTC day holding ``epoch_seconds``."""
    return float(day_of(epoch_seconds) * DAY_SECONDS)


def is_late(event_time: float, stream_time: float, grace_days: int) -> bool:
    """More than ``grace_days`` before the stream time: its day may already be dropped."""
    return event_time < stream_time - grace_days * DAY_SECONDS


def is_future(event_time: float, wall_clock: float, tolerance_seconds: float) -> bool:
    """Ahead of the wall clock by more than the tolerance (a wrong clock or a wrong date)."""
    return event_time > wall_clock + tolerance_seconds


def oldest_kept_day(stream_time: float, grace_days: int) -> int:
    """The oldest day an event that is not late can fall in: older days can be dropped."""
    if stream_time == NO_STREAM_TIME:
        return -(2**62)
    return day_of(stream_time - grace_days * DAY_SECONDS)


def kept_days(days: Iterable[tuple[int, int, int]], oldest: int) -> Days:
    """``days`` from ``oldest`` on, oldest first."""
    return tuple(sorted(d for d in days if d[0] >= oldest))
