"""The immutable value the worker keeps per user, and its compact encoding (pure, no Faust).

A user's value holds everything the worker knows about them: the running statistics, the
z-score of the last transaction, the spend of each open UTC day (:mod:`tables.windows`), and
``offset``: the source offset (in the user's partition of ``transactions``) of the last
transaction handled: folded into it, or skipped as a duplicate of another message's
``txn_id``. A transaction whose offset is not above it is already done, so replaying a message
after a crash never applies or counts it twice (docs/stream-processing.md
explains the whole guarantee). Amounts are in the reporting currency (``amount_reporting``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import orjson

from app.contract import from_cents
from tables.welford import EMPTY, Welford
from tables.windows import Days

__all__ = ["DaySpend", "INITIAL_USER", "NO_OFFSET", "NO_SPEND", "UserState"]

#: Offset of a value that holds no transaction yet.
NO_OFFSET = -1


@dataclass(frozen=True, slots=True)
class DaySpend:
    """A user's spend in one UTC day, in integer cents (exact whatever the order)."""

    cents: int = 0
    count: int = 0

    @property
    def amount(self) -> float:
        return from_cents(self.cents)


NO_SPEND = DaySpend()


class UserState(NamedTuple):
    """A user's running statistics, the z-score of their last transaction, their open days
    and the offset of the last transaction in it."""

    stats: Welford = EMPTY
    last_z: float | None = None
    offset: int = NO_OFFSET
    days: Days = ()

    def day(self, day: int) -> DaySpend:
        """The spend of one UTC day (nothing if the day is not kept)."""
        for number, total, count in self.days:
            if number == day:
                return DaySpend(total, count)
        return NO_SPEND

    def encode(self) -> bytes:
        s = self.stats
        return orjson.dumps([s.count, s.shift, s.dmean, s.m2, self.last_z, self.offset,
                             self.days])

    @classmethod
    def decode(cls, raw: bytes | None) -> UserState:
        if raw is None:
            return INITIAL_USER
        count, shift, dmean, m2, last_z, offset, days = orjson.loads(raw)
        return cls(Welford(count, shift, dmean, m2), last_z, offset,
                   tuple((d, c, n) for d, c, n in days))


INITIAL_USER = UserState()
