"""The producer's rate control (app/producer/pacing.py): the token bucket, event-time steps."""

from __future__ import annotations

import pytest

from app.producer import TokenBucket, runs_ahead, start_for, step_us_for


def test_step_us_for() -> None:
    assert step_us_for(1000) == 1000
    assert step_us_for(10_000, 2) == 200
    assert step_us_for(0, 1, default_rate=500) == 2000
    assert step_us_for(0, 1, default_rate=0) == 1000


def test_token_bucket_holds_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(10_000, clock=lambda: now[0])
    taken = 0
    while now[0] < 10.0:
        n = bucket.take(50)
        assert n in (0, 50)
        taken += n
        now[0] += max(bucket.wait(50), 1e-6) if n == 0 else 0.0003
    assert abs(taken - 100_000) <= 1000 + 50  # at most the bucket's capacity and one chunk
    assert abs(taken / now[0] / 10_000 - 1) < 0.02


def test_token_bucket_caps_bursts() -> None:
    now = [0.0]
    bucket = TokenBucket(1000, clock=lambda: now[0])
    now[0] = 60.0  # a long stall saves up at most 0.1 s of tokens
    assert bucket.take(10**6) == 100  # a chunk larger than the capacity: the capacity
    assert bucket.take(10) == 0 and bucket.wait(10) == pytest.approx(0.01)
    now[0] += 0.0045
    assert bucket.take(5) == 0 and bucket.take(4) == 4 and bucket.wait() == pytest.approx(0.0005)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_runs_ahead_at_rate_0_or_a_time_scale_above_1() -> None:
    assert runs_ahead(0, 1) and runs_ahead(0, 0.5) and runs_ahead(1000, 1.5)
    assert not runs_ahead(1000, 1) and not runs_ahead(50, 0.25)


NOW = 1_795_000_123_456


def test_a_counted_run_without_start_ends_now() -> None:
    for first_seq, count, step_us in ((0, 20_000, 1000), (500, 30_000, 4000), (0, 1, 1),
                                      (7, 1_500_000, 1_152_000)):
        start, how = start_for(None, count=count, first_seq=first_seq, step_us=step_us,
                               ahead=True, now_ms=NOW)
        assert start is not None and how == "the run ends now"
        assert start % 1000 == 0
        last = start + (first_seq + count - 1) * step_us // 1000  # the factory's formula
        assert NOW - 1000 - step_us / 1000 <= last <= NOW


def test_a_given_start_is_kept_and_an_uncounted_run_ahead_is_refused() -> None:
    assert start_for(123, count=None, first_seq=0, step_us=10**6, ahead=True,
                     now_ms=NOW) == (123, "given")
    assert start_for(None, count=None, first_seq=0, step_us=1000, ahead=False,
                     now_ms=NOW) == (None, "now")
    with pytest.raises(ValueError, match="--count .*--start"):
        start_for(None, count=None, first_seq=0, step_us=1000, ahead=True, now_ms=NOW)
