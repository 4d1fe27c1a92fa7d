"""Rate control: the token bucket the send loop takes whole chunks from, and the event-time
step that matches a rate."""

from __future__ import annotations

import time
from collections.abc import Callable


def step_us_for(rate: float, time_scale: float = 1.0, default_rate: int = 1000) -> int:
    """Event-time microseconds between two transactions: at ``rate`` per second and
    ``time_scale`` event seconds per wall second (``rate`` 0: ``default_rate``)."""
    pace = rate if rate > 0 else (default_rate or 1000)
    return max(0, round(1_000_000 * time_scale / pace))


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
