"""The immutable values the worker keeps per user, and their compact encoding (pure, no Faust).

Every value remembers ``offset``: the source offset (in the user's partition of
``transactions``) of the last transaction folded into it. A transaction whose offset is not above
it is already in the value, so replaying a message after a crash never applies it twice
(docs/stream-processing.md explains the whole guarantee).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import orjson

from app.contract import from_cents
from tables.welford import EMPTY, Welford

__all__ = ["DAY_SECONDS", "DaySpend", "NO_OFFSET", "UserState", "day_start"]

#: Offset of a value that holds no transaction yet.
NO_OFFSET = -1
DAY_SECONDS = 86_400


class UserState(NamedTuple):
    """A user's running statistics, the z-score of their last transaction, and the offset."""

    stats: Welford = EMPTY
    last_z: float | None = None
    offset: int = NO_OFFSET

    def encode(self) -> bytes:
        s = self.stats
        return orjson.dumps([s.count, s.shift, s.dmean, s.m2, self.last_z, self.offset])

    @classmethod
    def decode(cls, raw: bytes | None) -> UserState:
        if raw is None:
            return INITIAL_USER
        count, shift, dmean, m2, last_z, offset = orjson.loads(raw)
        return cls(Welford(count, shift, dmean, m2), last_z, offset)


INITIAL_USER = UserState()


@dataclass(frozen=True, slots=True)
class DaySpend:
    """A user's spend in one UTC day, in integer cents (exact whatever the order)."""

    cents: int = 0
    count: int = 0
    offset: int = NO_OFFSET

    @property
    def amount(self) -> float:
        return from_cents(self.cents)

    def encode(self) -> bytes:
        return orjson.dumps([self.cents, self.count, self.offset])

    @classmethod
    def decode(cls, raw: bytes | None) -> DaySpend:
        if raw is None:
            return NO_SPEND
        return cls(*orjson.loads(raw))


NO_SPEND = DaySpend()


def day_start(epoch_seconds: float) -> float:
    """Start (epoch seconds) of the UTC day holding ``epoch_seconds``."""
    return epoch_seconds - epoch_seconds % DAY_SECONDS
