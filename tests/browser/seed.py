"""Known documents for the dashboard's browser tests, written the way the sink writes them
(docs/data-model.md): transactions (in euros and yen, with their amount in US dollars),
anomalies and their time index (``agents.sink.anomaly_index``), the aggregates the API reads
(users_by_day, merchant_days/hours, volume_hours, currency_days/hours: built from the transactions
by the sink's own code, ``agents.sink.aggregates.build``) and the DLQ, so every number on the
page can be checked."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pymongo.database import Database

from agents.sink import aggregates as agg
from agents.sink import anomaly_index
from agents.sink.documents import transaction_doc
from app.producer import make_txn_id

__all__ = ["REPORTING", "USD_PER_UNIT", "Seed", "add_anomalies", "aggregates", "anomaly_doc",
           "message", "seed", "stored", "transaction"]

#: The reporting currency (the settings' default) and the seed's rates.
REPORTING = "USD"
USD_PER_UNIT = {"EUR": 1.08, "JPY": 0.0067}


def message(user_id: str, amount: float, when: datetime, merchant_id: str,
            category: str, currency: str = "EUR") -> dict[str, Any]:
    """A valid ``transactions`` message (docs/contract.md), its ``txn_id`` made from its
    content the producer's way (distinct content, distinct id)."""
    txn: dict[str, Any] = {
        "user_id": user_id, "amount": amount, "currency": currency,
        "timestamp": when.isoformat(), "merchant_id": merchant_id,
        "merchant_category": category, "payment_method": "credit_card", "status": "approved",
        "location": {"city": "Lyon", "country": "FR"},
    }
    txn["txn_id"] = make_txn_id(0, 0, orjson.dumps(txn))
    return txn


def transaction(user_id: str, amount: float, when: datetime, merchant_id: str,
                category: str, z_score: float | None = None, is_anomaly: bool = False,
                currency: str = "EUR") -> dict[str, Any]:
    """An enriched transaction with the sink's date, ``day`` and ``minute`` fields (what its
    aggregates count; :func:`stored` is its ``transactions`` document)."""
    txn = message(user_id, amount, when, merchant_id, category, currency)
    reporting = round(amount * USD_PER_UNIT[currency], 2)
    return {**txn, "amount_reporting": reporting, "reporting_currency": REPORTING,
            "_id": txn["txn_id"], "timestamp": when, "day": when.strftime("%Y-%m-%d"),
            "minute": when.replace(second=0, microsecond=0), "user_txn_count": 1,
            "user_running_mean": reporting, "user_running_std": 0.0, "z_score": z_score,
            "is_anomaly": is_anomaly, "user_daily_spend": reporting, "processed_at": when}


def stored(txn: dict[str, Any]) -> dict[str, Any]:
    """The ``transactions`` document the sink stores for :func:`transaction`'s ``txn``: its
    enriched message (dates as ISO text) in ``txn``, with ``_id``, ``user_id`` and ``timestamp``."""
    value = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in txn.items()
             if k not in ("_id", "day", "minute")}
    return transaction_doc(value)


def anomaly_doc(txn: dict[str, Any], z_score: float, mean_prev: float, std_prev: float,
                n_prev: int) -> dict[str, Any]:
    fields = ("txn_id", "user_id", "amount", "currency", "amount_reporting",
              "reporting_currency", "merchant_id", "merchant_category", "timestamp", "day",
              "minute")
    return {"_id": txn["txn_id"], **{f: txn[f] for f in fields}, "z_score": z_score,
            "mean_prev": mean_prev, "std_prev": std_prev, "n_prev": n_prev,
            "detected_at": txn["timestamp"] + timedelta(milliseconds=20)}


@dataclass
class Seed:
    now: datetime
    transactions: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    dlq: list[dict[str, Any]] = field(default_factory=list)

    def user_spend(self, user_id: str, days: int = 30) -> float:
        first = (self.now - timedelta(days=days - 1)).strftime("%Y-%m-%d")
        return round(sum(t["amount_reporting"] for t in self.transactions
                         if t["user_id"] == user_id and t["day"] >= first), 2)

    def revenue_by_currency(self, hours: int = 1) -> dict[str, float]:
        """The last ``hours``' revenue per original currency, in its own amounts."""
        since = self.now - timedelta(hours=hours)
        totals: dict[str, float] = {}
        for t in self.transactions:
            if t["timestamp"] > since:
                totals[t["currency"]] = round(totals.get(t["currency"], 0.0) + t["amount"], 2)
        return totals


#: Partitions of the enriched topic the seed pretends (a user's transactions in one of them).
PARTITIONS = 2


def aggregates(txns: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The aggregate documents of ``txns`` as the sink writes them: each user's transactions
    in one partition (the topic is keyed by user), in event-time order within it."""
    items, offsets = [], [0] * PARTITIONS
    for t in sorted(txns, key=lambda t: (t["timestamp"], t["_id"])):
        partition = zlib.crc32(t["user_id"].encode()) % PARTITIONS
        item = agg.countable(t, partition, offsets[partition], REPORTING)
        offsets[partition] += 1
        if item is not None:
            items.append(item)
    return agg.build(items)


def seed(db: Database, now: datetime | None = None) -> Seed:
    """Three users with a month of history, 40 transactions in the last half hour, three
    anomalies in three categories, a merchant seen only three days ago, two DLQ entries."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    s = Seed(now=now)
    merchants = [("m-alpha", "electronics"), ("m-bravo", "grocery"), ("m-charlie", "travel")]
    for i in range(40):  # the last 30 minutes; one in four in yen
        merchant, category = merchants[i % 3]
        yen = i % 4 == 3
        s.transactions.append(transaction(
            f"user-{i % 3}", 1500.0 + 100 * i if yen else 10.0 + i,
            now - timedelta(minutes=30 - i * 0.7), merchant, category, z_score=0.1,
            currency="JPY" if yen else "EUR"))
    for day in range(1, 29):  # daily history of user-0
        s.transactions.append(transaction("user-0", 20.0 + day, now - timedelta(days=day),
                                          "m-alpha", "electronics"))
    s.transactions.append(transaction("user-2", 55.5, now - timedelta(days=3), "m-delta",
                                      "books_media"))
    for user, amount, z, (merchant, category), ago in [
            ("user-0", 950.0, 9.25, merchants[0], 20), ("user-1", 480.0, 4.5, merchants[1], 10),
            ("user-2", 700.25, 6.75, merchants[2], 5)]:
        txn = transaction(user, amount, now - timedelta(minutes=ago, seconds=7), merchant,
                          category, z_score=z, is_anomaly=True)
        s.transactions.append(txn)
        s.anomalies.append(anomaly_doc(txn, z, 30.0, 10.0, 12))
    s.dlq = [{"_id": f"transactions:{p}:{p * 10}", "reason": "not valid JSON", "topic":
              "transactions", "partition": p, "offset": p * 10, "failed_at": now,
              "original": "{oops"} for p in range(2)]
    db.transactions.insert_many([stored(t) for t in s.transactions])
    add_anomalies(db, s.anomalies)
    for name, docs in aggregates(s.transactions).items():
        if docs:
            db[name].insert_many(docs)
    db.dlq.insert_many(s.dlq)
    return s


def add_anomalies(db: Database, anomalies: list[dict[str, Any]]) -> None:
    """Store anomalies as the sink does: the documents, then the upserts of their time index."""
    db.anomalies.insert_many([dict(a) for a in anomalies])
    for collection, _id, fields, _ in anomaly_index.index_writes(anomalies):
        db[collection].update_one({"_id": _id}, {"$set": fields}, upsert=True)
