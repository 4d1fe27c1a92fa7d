"""Known documents for the dashboard's browser tests, written the way the sink writes them
(docs/data-model.md): transactions (in euros and yen, with their amount in US dollars),
anomalies, the per-minute rollups (revenue in US dollars, and per original currency) and the
DLQ, with the rollups computed from the transactions so every number on the page can be
checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pymongo.database import Database

from app.producer import make_txn_id

__all__ = ["REPORTING", "USD_PER_UNIT", "Seed", "anomaly_doc", "message", "seed", "transaction"]

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
    """An enriched transaction document as the sink stores it."""
    txn = message(user_id, amount, when, merchant_id, category, currency)
    reporting = round(amount * USD_PER_UNIT[currency], 2)
    return {**txn, "amount_reporting": reporting, "reporting_currency": REPORTING,
            "_id": txn["txn_id"], "timestamp": when, "day": when.strftime("%Y-%m-%d"),
            "minute": when.replace(second=0, microsecond=0), "user_txn_count": 1,
            "user_running_mean": reporting, "user_running_std": 0.0, "z_score": z_score,
            "is_anomaly": is_anomaly, "user_daily_spend": reporting, "processed_at": when}


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


Rows = list[dict[str, Any]]


def _rollups(txns: list[dict[str, Any]]) -> tuple[Rows, Rows, Rows]:
    volume: dict[datetime, dict[str, Any]] = {}
    merchants: dict[tuple[str, datetime], dict[str, Any]] = {}
    currencies: dict[tuple[str, datetime], dict[str, Any]] = {}
    for t in txns:
        minute = t["minute"]
        v = volume.setdefault(minute, {"_id": minute.isoformat(), "minute": minute,
                                       "reporting_currency": REPORTING,
                                       "count": 0, "revenue": 0.0, "anomalies": 0})
        m = merchants.setdefault((t["merchant_id"], minute), {
            "_id": f"{t['merchant_id']}|{minute.isoformat()}", "merchant_id": t["merchant_id"],
            "merchant_category": t["merchant_category"], "minute": minute,
            "reporting_currency": REPORTING, "count": 0, "revenue": 0.0, "anomalies": 0})
        c = currencies.setdefault((t["currency"], minute), {
            "_id": f"{t['currency']}|{minute.isoformat()}", "currency": t["currency"],
            "minute": minute, "count": 0, "revenue": 0.0, "anomalies": 0})
        for row, amount in ((v, t["amount_reporting"]), (m, t["amount_reporting"]),
                            (c, t["amount"])):
            row["count"] += 1
            row["revenue"] = round(row["revenue"] + amount, 2)
            row["anomalies"] += int(t["is_anomaly"])
    return list(volume.values()), list(merchants.values()), list(currencies.values())


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
    volume, merchant_minutes, currency_minutes = _rollups(s.transactions)
    db.transactions.insert_many(s.transactions)
    db.anomalies.insert_many(s.anomalies)
    db.volume_minute.insert_many(volume)
    db.merchant_minute.insert_many(merchant_minutes)
    db.currency_minute.insert_many(currency_minutes)
    db.dlq.insert_many(s.dlq)
    return s
