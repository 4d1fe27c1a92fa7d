"""The producer's rate control (app/producer/pacing.py): the token bucket, event-time steps."""

from __future__ import annotations

import pytest

from app.producer import TokenBucket, step_us_for


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
