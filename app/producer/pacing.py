"""Rate control: the token bucket the send loop takes whole chunks from, the event-time
step that matches a rate, and the start that keeps a run's event time out of the future."""

from __future__ import annotations

import time
from collections.abc import Callable


def step_us_for(rate: float, time_scale: float = 1.0, default_rate: int = 1000) -> int:
    """Event-time microseconds between two transactions: at ``rate`` per second and
    ``time_scale`` event seconds per wall second (``rate`` 0: ``default_rate``)."""
    pace = rate if rate > 0 else (default_rate or 1000)
    return max(0, round(1_000_000 * time_scale / pace))


def runs_ahead(rate: float, time_scale: float) -> bool:
    """Whether event time can run ahead of the wall clock at this pace: ``rate`` 0 (as fast as
    possible, faster than the step assumes) or more than one event second per wall second."""
    return rate <= 0 or time_scale > 1


def start_for(start_ms: int | None, *, count: int | None, first_seq: int, step_us: int,
              ahead: bool, now_ms: int) -> tuple[int | None, str]:
    """The event time of sequence number 0 and how it was chosen: ``start_ms`` when given;
    else, with a ``count``, the start (a whole second) that puts the run's last transaction
    (``first_seq + count - 1``) at or before ``now_ms``; else None (the factory's default: now),
    unless event time runs ``ahead`` of the clock, which raises ValueError."""
    if start_ms is not None:
        return start_ms, "given"
    if count is not None:
        end_ms = now_ms - (first_seq + count) * step_us // 1000
        return end_ms // 1000 * 1000, "the run ends now"
    if ahead:
        raise ValueError("at --rate 0 or --time-scale above 1 event time runs ahead of the "
                         "clock and the worker refuses future events: give --count (the run "
                         "then ends at the current time) or --start")
    return None, "now"


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up (0.1 s worth by default)."""

    def __init__(self, rate: float, capacity: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate, self.clock = float(rate), clock
        self.capacity = capacity if capacity is not None else max(1.0, rate * 0.1)
        self.tokens = 0.0
        self.last = clock()

    def take(self, n: int) -> int:
        """Take ``n`` tokens (at most the capacity) if there are that many: returns how many
        were taken, ``n`` or 0. Taking whole chunks keeps the per-message overhead low."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        n = max(1, min(n, int(self.capacity)))
        if self.tokens < n:
            return 0
        self.tokens -= n
        return n

    def wait(self, n: int = 1) -> float:
        """Seconds until ``n`` tokens are there."""
        return max(0.0, (min(n, int(self.capacity)) - self.tokens) / self.rate)
