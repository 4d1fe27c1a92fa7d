"""SettledDocs: documents of ended periods are re-read at most every settled_seconds, those
of the open period (and just after its end) at every call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from views.settled import OPEN_GRACE, SWEEP_SECONDS, SettledDocs

NOW = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def reader(log: list[str], value: str):  # type: ignore[no-untyped-def]
    def read() -> str:
        log.append(value)
        return value
    return read


def test_an_open_period_is_read_every_time() -> None:
    docs: SettledDocs[str] = SettledDocs(600, clock=Clock())
    reads: list[str] = []
    ends = NOW + timedelta(minutes=30)  # the current hour
    assert [docs.get("h", ends, NOW, reader(reads, v)) for v in "ab"] == ["a", "b"]
    assert reads == ["a", "b"]
    just_ended = NOW - OPEN_GRACE / 2  # its last aggregates may still be on their way
    assert docs.get("g", just_ended, NOW, reader(reads, "c")) == "c"
    assert docs.get("g", just_ended, NOW, reader(reads, "d")) == "d"


def test_an_ended_period_is_read_again_only_after_settled_seconds() -> None:
    clock = Clock()
    docs: SettledDocs[str] = SettledDocs(600, clock=clock)
    reads: list[str] = []
    ends = NOW - timedelta(hours=3)
    assert docs.get("h", ends, NOW, reader(reads, "a")) == "a"
    clock.t += 599
    assert docs.get("h", ends, NOW, reader(reads, "late")) == "a"  # kept
    clock.t += 2
    assert docs.get("h", ends, NOW, reader(reads, "late")) == "late"  # a late event shows
    assert reads == ["a", "late"]


def test_a_value_read_while_open_is_read_again_once_ended() -> None:
    """The value read during the period may miss its last transactions: the first call after
    the grace reads again whatever the age of the kept value, and that one is kept."""
    clock = Clock()
    docs: SettledDocs[str] = SettledDocs(600, clock=clock)
    reads: list[str] = []
    ends = NOW + timedelta(seconds=10)
    docs.get("h", ends, NOW, reader(reads, "partial"))
    later = ends + OPEN_GRACE + timedelta(seconds=1)
    assert docs.get("h", ends, later, reader(reads, "final")) == "final"
    assert docs.get("h", ends, later, reader(reads, "again")) == "final"
    assert reads == ["partial", "final"]


def test_old_periods_are_forgotten_at_the_next_sweep() -> None:
    clock = Clock()
    docs: SettledDocs[str] = SettledDocs(600, forget_after=timedelta(days=9), clock=clock)
    docs.get("old", NOW - timedelta(days=10), NOW - timedelta(days=1), lambda: "x")
    docs.get("new", NOW - timedelta(hours=1), NOW, lambda: "y")
    assert len(docs) == 2  # swept at most every SWEEP_SECONDS
    clock.t += SWEEP_SECONDS
    docs.get("newer", NOW - timedelta(minutes=1), NOW, lambda: "z")
    assert len(docs) == 2


def test_an_empty_value_is_kept_empty_seconds_when_asked() -> None:
    """A day without a document for a group (before the history, or no user of the group that
    day) is read again only after ``empty_seconds``."""
    clock = Clock()
    docs: SettledDocs[dict[str, int]] = SettledDocs(600, clock=clock, empty_seconds=60)
    ends = NOW - timedelta(days=3)
    reads: list[int] = []

    def read(value: dict[str, int]):  # type: ignore[no-untyped-def]
        return lambda: reads.append(1) or value

    assert docs.get("d", ends, NOW, read({})) == {}
    assert docs.get("d", ends, NOW, read({"u": 1})) == {}
    clock.t += 60
    assert docs.get("d", ends, NOW, read({"u": 1})) == {"u": 1}
    clock.t += 300
    assert docs.get("d", ends, NOW, read({"u": 2})) == {"u": 1}
    assert len(reads) == 2


def test_an_empty_value_is_never_kept() -> None:
    """An ended hour without a document yet (the sink storing a backlog, a restore) is read
    again at every call until it has one."""
    docs: SettledDocs[dict[str, int]] = SettledDocs(600, clock=Clock())
    ends = NOW - timedelta(hours=3)
    assert docs.get("h", ends, NOW, lambda: {}) == {}
    assert docs.get("h", ends, NOW, lambda: {"m": 1}) == {"m": 1}
    assert docs.get("h", ends, NOW, lambda: {"m": 2}) == {"m": 1}


def test_refresh_later_reads_once_at_a_time_and_keeps_the_value_on_failure() -> None:
    clock = Clock()
    docs: SettledDocs[str] = SettledDocs(600, clock=clock)
    ends = NOW - timedelta(hours=3)
    docs.get("h", ends, NOW, lambda: "a")
    clock.t += 601
    assert docs.kept("h") == ("a", False)
    pending: list = []
    docs.refresh_later("h", ends, NOW, lambda: "b", pending.append)
    docs.refresh_later("h", ends, NOW, lambda: "c", pending.append)  # one is under way
    assert len(pending) == 1

    def fail() -> str:
        raise OSError("database down")
    pending[0]()
    assert docs.kept("h") == ("b", True)
    clock.t += 601
    docs.refresh_later("h", ends, NOW, fail, pending.append)
    with pytest.raises(OSError):
        pending[1]()
    assert docs.kept("h") == ("b", False)  # still served; the next caller asks again
    docs.refresh_later("h", ends, NOW, lambda: "d", pending.append)
    assert len(pending) == 3
