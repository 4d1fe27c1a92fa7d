"""One transaction's enrichment, as a pure function (no Faust, no I/O): the amount in the
reporting currency, the contract's rule over the user's earlier amounts, the day's spend, and
the ``transactions_enriched`` value and ``anomalies`` record the worker publishes.

The worker (:mod:`agents.processor`) calls it for every transaction it folds; the history
loader of the long-run benchmark (``bench/seed_history.py``) calls it too, so a seeded history
is enriched by the same code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from app.contract import ANOMALY_FIELDS, cents, from_cents
from app.rates import REPORTING_CURRENCY, reporting_cents
from tables.welford import Welford, is_anomaly, update, z_score

__all__ = ["Enriched", "enrich"]


class Enriched(NamedTuple):
    """What one transaction gives: its amount in reporting cents, the user's statistics after
    it, its z-score, the enriched value and the anomaly record (None: not an anomaly)."""

    amount_cents: int
    stats: Welford
    z: float | None
    value: dict[str, Any]
    anomaly: dict[str, Any] | None


def enrich(txn: dict[str, Any], prev: Welford, day_cents: int, now: str, threshold: float,
           min_history: int) -> Enriched:
    """Enrich ``txn`` (a valid transaction) given the user's statistics before it (``prev``)
    and the reporting cents the user spent earlier on its UTC day; ``now``: ``processed_at``
    and ``detected_at`` (ISO 8601)."""
    amount_cents = reporting_cents(cents(txn["amount"]), txn["currency"])
    amount = from_cents(amount_cents)
    z = z_score(prev, amount, min_history)
    anomaly = is_anomaly(z, threshold)
    stats = update(prev, amount)
    value = {**txn, "amount_reporting": amount, "reporting_currency": REPORTING_CURRENCY,
             "user_txn_count": stats.count, "user_running_mean": stats.mean,
             "user_running_std": stats.std, "z_score": z, "is_anomaly": anomaly,
             "user_daily_spend": from_cents(day_cents + amount_cents), "processed_at": now}
    record = None
    if anomaly:
        values = {**txn, "amount_reporting": amount, "reporting_currency": REPORTING_CURRENCY,
                  "z_score": z, "mean_prev": prev.mean, "std_prev": prev.std,
                  "n_prev": prev.count, "detected_at": now}
        record = {f: values[f] for f in ANOMALY_FIELDS}
    return Enriched(amount_cents, stats, z, value, record)
