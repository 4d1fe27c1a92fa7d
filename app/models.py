"""Faust records of the data contract (``docs/contract.md``, ``schemas/``), field for field.

``include_metadata=False`` keeps Faust's ``__faust`` key out of the JSON, so the messages carry
exactly the contract's fields.
"""

from __future__ import annotations

from typing import Optional

import faust

__all__ = ["Anomaly", "EnrichedTransaction", "Location", "Transaction"]


class Location(faust.Record, include_metadata=False, serializer="json"):
    city: str
    country: str


class Transaction(faust.Record, include_metadata=False, serializer="json"):
    txn_id: str
    user_id: str
    amount: float
    currency: str
    timestamp: str
    merchant_id: str
    merchant_category: str
    payment_method: str
    status: str
    location: Location


class EnrichedTransaction(Transaction, include_metadata=False, serializer="json"):
    user_txn_count: int
    user_running_mean: float
    user_running_std: float
    z_score: Optional[float]  # noqa: UP045 - Faust reads the annotation at runtime
    is_anomaly: bool
    user_daily_spend: float
    processed_at: str


class Anomaly(faust.Record, include_metadata=False, serializer="json"):
    txn_id: str
    user_id: str
    amount: float
    currency: str
    merchant_id: str
    merchant_category: str
    timestamp: str
    z_score: float
    mean_prev: float
    std_prev: float
    n_prev: int
    detected_at: str
