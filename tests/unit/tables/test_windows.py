"""The event-time day windows and the late/future rules (tables/windows.py), by property."""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from tables import windows
from tables.records import UserState

#: Event times as the worker gets them (datetime.timestamp(): whole microseconds), years 1-9999.
EPOCHS = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.timestamp())
GRACE = st.integers(1, 366)


@given(EPOCHS)
def test_day_of_is_the_utc_date(epoch: float) -> None:
    day = windows.day_of(epoch)
    utc_date = datetime.fromtimestamp(epoch, UTC).date()
    assert day == (utc_date - date(1970, 1, 1)).days
    assert windows.day_start(epoch) <= epoch < windows.day_start(epoch) + windows.DAY_SECONDS


@given(EPOCHS, EPOCHS, st.floats(0, 10 * 86_400), GRACE)
def test_an_event_that_is_not_late_falls_in_a_kept_day(event: float, stream: float,
                                                       ahead: float, grace: int) -> None:
    """Whatever the stream time does later (it only grows), an event admitted now finds its
    day still kept; the day is dropped only once the event would be refused as late."""
    later = stream + ahead
    if not windows.is_late(event, later, grace):
        assert windows.day_of(event) >= windows.oldest_kept_day(later, grace)
        assert windows.oldest_kept_day(stream, grace) <= windows.oldest_kept_day(later, grace)
    if windows.day_of(event) < windows.oldest_kept_day(later, grace):
        assert windows.is_late(event, later, grace)


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 10**9), st.integers(1, 100)),
                unique_by=lambda d: d[0]), st.integers(0, 40))
def test_kept_days_are_the_days_from_the_oldest_on_in_order(days: list[tuple[int, int, int]],
                                                            oldest: int) -> None:
    kept = windows.kept_days(days, oldest)
    assert list(kept) == sorted(d for d in days if d[0] >= oldest)
    state = UserState(days=kept)
    assert UserState.decode(state.encode()) == state
    for number, total, count in days:
        spend = state.day(number)
        assert (spend.cents, spend.count) == ((total, count) if number >= oldest else (0, 0))


def test_nothing_is_late_before_the_first_event() -> None:
    assert not windows.is_late(-1e12, windows.NO_STREAM_TIME, 7)
    assert windows.oldest_kept_day(windows.NO_STREAM_TIME, 7) < windows.day_of(-1e12)


@given(EPOCHS, st.floats(0, 10**6), st.integers(0, 10**6))
def test_future_is_beyond_the_tolerance_only(clock: float, ahead: float, tolerance: int) -> None:
    assert windows.is_future(clock + ahead, clock, tolerance) == (clock + ahead > clock + tolerance)
    assert not windows.is_future(clock - ahead, clock, tolerance)
