"""Running statistics and the anomaly rule of docs/contract.md, as pure functions (no Faust).

A :class:`Welford` value is immutable: :func:`update` and :func:`merge` return new values.

Numerics. Amounts reach 10^6 with spreads of a cent, where the textbook Welford update loses
about 1e-8 of relative precision in the variance (the running mean, rounded at the scale of
10^6, is off by ~1e-10, and every ``x - mean`` carries that error). So the state keeps the mean
*relative to a shift*, the first amount seen: ``mean = shift + dmean``. Welford's update runs on
``x - shift`` (exact for nearby values), which keeps the relative error of the variance near the
machine epsilon; the property tests check 1e-9 against exact :mod:`statistics` and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EMPTY",
    "Welford",
    "from_values",
    "is_anomaly",
    "merge",
    "update",
    "z_score",
]


@dataclass(frozen=True, slots=True)
class Welford:
    """Count, mean and M2 (sum of squared deviations) of a sequence of amounts."""

    count: int = 0
    #: The first amount seen: the mean and the updates are kept relative to it.
    shift: float = 0.0
    #: ``mean - shift``.
    dmean: float = 0.0
    m2: float = 0.0

    @property
    def mean(self) -> float:
        return self.shift + self.dmean if self.count else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 denominator); 0 when count < 2."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        """Sample standard deviation; 0 when count < 2."""
        return math.sqrt(self.variance)


EMPTY = Welford()


def update(state: Welford, x: float) -> Welford:
    """Welford's update: the statistics of the earlier amounts plus ``x``."""
    if state.count == 0:
        return Welford(1, x, 0.0, 0.0)
    n = state.count + 1
    d = x - state.shift
    delta = d - state.dmean
    dmean = state.dmean + delta / n
    return Welford(n, state.shift, dmean, state.m2 + delta * (d - dmean))


def merge(a: Welford, b: Welford) -> Welford:
    """Chan et al.'s parallel combination: the statistics of ``a``'s amounts then ``b``'s."""
    if b.count == 0:
        return a
    if a.count == 0:
        return b
    n = a.count + b.count
    delta = (b.shift - a.shift) + b.dmean - a.dmean  # b.mean - a.mean, relative to a.shift
    dmean = a.dmean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / n)
    return Welford(n, a.shift, dmean, m2)


def from_values(values: Iterable[float]) -> Welford:
    """The statistics of ``values`` (a fold of :func:`update`)."""
    state = EMPTY
    for x in values:
        state = update(state, x)
    return state


def z_score(prev: Welford, amount: float, min_history: int) -> float | None:
    """``(amount - mean_prev) / std_prev`` over the user's earlier amounts ``prev``, or None
    when there are fewer than ``min_history`` of them or their std is 0."""
    if prev.count < min_history:
        return None
    std = prev.std
    if not std > 0:
        return None
    return ((amount - prev.shift) - prev.dmean) / std


def is_anomaly(z: float | None, threshold: float) -> bool:
    """The rule: a z-score strictly above the threshold."""
    return z is not None and z > threshold
