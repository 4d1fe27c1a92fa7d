"""The cached time buckets give the same texts and ends as formatting each date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from agents.sink import buckets

offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                       timezones=offsets | st.just(UTC))


@given(moments)
def test_day_and_hour_are_the_utc_dates_formatted(ts: datetime) -> None:
    utc = ts.astimezone(UTC)
    assert buckets.hour_id(ts) == utc.strftime("%Y-%m-%dT%H")
    assert buckets.day_id(ts) == utc.strftime("%Y-%m-%d")


@given(moments)
def test_a_minute_s_buckets(ts: datetime) -> None:
    minute = ts.astimezone(UTC).replace(second=0, microsecond=0)
    b = buckets.buckets(minute)
    assert (b.day, b.hour, b.mm) == (minute.strftime("%Y-%m-%d"),
                                    minute.strftime("%Y-%m-%dT%H"), minute.strftime("%M"))
    hour_start = minute.replace(minute=0)
    assert b.hour_end == hour_start + timedelta(hours=1)
    assert b.day_end == hour_start.replace(hour=0) + timedelta(days=1)


def test_the_last_hour_of_year_9999_ends_at_the_largest_date() -> None:
    b = buckets.buckets(datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
    assert b.hour == "9999-12-31T23" and b.hour_end == b.day_end == datetime.max.replace(
        tzinfo=UTC)
