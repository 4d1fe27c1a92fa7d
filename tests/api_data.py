"""Known data for the API tests: documents shaped like docs/data-model.md, written to a test
database, and the plain-Python recomputations the API's answers are compared with.

(No tests here; the API test modules import it.)
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo.database import Database

from agents.sink import aggregates as agg
from agents.sink import anomaly_index
from app.contract import CATEGORIES

#: User ids that look like MongoDB operators or are otherwise awkward: stored as plain strings.
ODD_USERS = ['{"$ne": null}', "$where", "ünï-çødé 😀", "a/b?c#d", "dot.ted"]
#: The API's reporting currency in these tests (the settings' default), and the seed's rates.
REPORTING = "USD"
USD_PER_UNIT = {"USD": 1.0, "EUR": 1.08, "JPY": 0.0067, "INR": 0.012}
#: Documents and rows converted into another reporting currency (written under an earlier
#: setting): the API leaves them out of every money figure.
STALE = "EUR"
USERS = ["alice", "bob", "carol", *ODD_USERS]
MERCHANTS = [f"m{i:02d}" for i in range(12)]


def _ms(ts: datetime) -> datetime:
    """BSON dates keep milliseconds."""
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def _id(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def _minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


@dataclass
class Seed:
    now: datetime
    transactions: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    dlq: list[dict[str, Any]] = field(default_factory=list)
    #: The sink's aggregate documents of ``transactions`` (built by the sink's own code), plus
    #: documents labelled with another reporting currency (never counted).
    aggregates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def write(self, db: Database) -> None:
        for name in ("transactions", "anomalies", "dlq"):
            docs = getattr(self, name)
            if docs:
                db[name].insert_many([dict(d) for d in docs])
        for name, docs in self.aggregates.items():
            if docs:
                db[name].insert_many([dict(d) for d in docs])
        for name, docs in anomaly_index.index_documents(self.anomalies).items():
            if docs:
                db[name].insert_many(docs)

    def counted(self) -> list[dict[str, Any]]:
        """The transactions the aggregates count: those in the reporting currency."""
        return [t for t in self.transactions if t["reporting_currency"] == REPORTING]

    # --- the recomputations ---------------------------------------------------------------------
    def trends(self, user_id: str, days: list[str]) -> list[dict[str, Any]]:
        out = []
        for day in days:
            txns = [t for t in self.counted() if t["user_id"] == user_id and t["day"] == day]
            out.append({"day": day, "spend": _cents(t["amount_reporting"] for t in txns),
                        "count": len(txns), "anomalies": sum(t["is_anomaly"] for t in txns)})
        return out

    def anomalies_ordered(self, category: str | None = None, min_z: float | None = None,
                          since: datetime | None = None) -> list[str]:
        docs = [a for a in self.anomalies
                if (category is None or a["merchant_category"] == category)
                and (min_z is None or a["z_score"] >= min_z)
                and (since is None or a["timestamp"] >= since)]
        docs.sort(key=lambda a: (a["timestamp"], a["_id"]), reverse=True)
        return [a["_id"] for a in docs]

    def merchants_top(self, window: str, by: str, limit: int,
                      as_of: datetime) -> list[dict[str, Any]]:
        """From the transactions since the window's start: whole UTC hours (1h: the current
        and the previous one, 24h: the current and 24 previous) or days (7d: today and 7)."""
        rows = self.merchant_totals(window, as_of)
        rows.sort(key=lambda r: (-r[by], r["merchant_id"]))
        return rows[:limit]

    def merchant_totals(self, window: str, as_of: datetime) -> list[dict[str, Any]]:
        hour = as_of.replace(minute=0, second=0, microsecond=0)
        start = {"1h": hour - timedelta(hours=1), "24h": hour - timedelta(hours=24),
                 "7d": hour.replace(hour=0) - timedelta(days=7)}[window]
        totals: dict[str, list[dict[str, Any]]] = {}
        for t in self.counted():
            if t["timestamp"] >= start:
                totals.setdefault(t["merchant_id"], []).append(t)
        return [{"merchant_id": m, "merchant_category": txns[-1]["merchant_category"],
                 "revenue": _cents(t["amount_reporting"] for t in txns), "count": len(txns),
                 "anomalies": sum(t["is_anomaly"] for t in txns)} for m, txns in totals.items()]

    def volume(self, minutes: int, as_of: datetime) -> list[dict[str, Any]]:
        last = _minute(as_of)
        out = []
        for i in range(minutes - 1, -1, -1):
            m = last - timedelta(minutes=i)
            txns = [t for t in self.counted() if t["minute"] == m]
            out.append({"minute": m, "count": len(txns),
                        "revenue": _cents(t["amount_reporting"] for t in txns),
                        "anomalies": sum(t["is_anomaly"] for t in txns)})
        return out

    def revenue_by_currency(self, as_of: datetime) -> dict[str, float]:
        """The last hour's revenue per original currency, as ``/summary`` gives it."""
        last = _minute(as_of)
        first = last - timedelta(minutes=59)
        by: dict[str, list[float]] = {}
        for t in self.counted():
            if first <= t["minute"] <= last:
                by.setdefault(t["currency"], []).append(t["amount"])
        return {c: _cents(v) for c, v in by.items()}


def _category(merchant: str) -> str:
    """A merchant's one category."""
    return CATEGORIES[MERCHANTS.index(merchant) % len(CATEGORIES)]


def _cents(amounts: Any) -> float:
    """A sum of amounts as the aggregates make it: in integer cents."""
    return sum(round(a * 100) for a in amounts) / 100


def _reporting(rnd: random.Random, amount: float, currency: str) -> dict[str, Any]:
    """``amount_reporting`` and ``reporting_currency`` of a document: in REPORTING, or for
    one in 20 in STALE."""
    into = STALE if rnd.random() < 0.05 else REPORTING
    return {"amount_reporting": round(amount * USD_PER_UNIT[currency] / USD_PER_UNIT[into], 2),
            "reporting_currency": into}


def make_seed(now: datetime | None = None, seed: int = 7, n_txns: int = 600) -> Seed:
    """Random but reproducible documents around ``now``: 40 days of transactions (a third of
    them in the last 3 hours, a third in the last 9 days), their aggregates, 80 anomalies (some
    sharing a timestamp), a DLQ."""
    rnd = random.Random(seed)
    now = _ms(now or datetime.now(UTC))
    s = Seed(now=now)
    for i in range(n_txns):
        span = (3 * 3600, 9 * 86400, 40 * 86400)[i % 3]
        ts = _ms(now - timedelta(seconds=rnd.uniform(0, span)))
        user, merchant = rnd.choice(USERS), rnd.choice(MERCHANTS)
        amount, currency = round(rnd.uniform(0.5, 900), 2), rnd.choice(list(USD_PER_UNIT))
        s.transactions.append({
            "_id": _id("t", seed, i), "txn_id": _id("t", seed, i), "user_id": user,
            "amount": amount, "currency": currency, **_reporting(rnd, amount, currency),
            "timestamp": ts,
            "merchant_id": merchant, "merchant_category": _category(merchant),
            "payment_method": "paypal", "status": "approved",
            "location": {"city": "Lyon", "country": "FR"},
            "is_anomaly": rnd.random() < 0.1, "z_score": rnd.uniform(-2, 6),
            "day": ts.date().isoformat(), "minute": _minute(ts), "processed_at": now,
        })
    shared = _ms(now - timedelta(minutes=5))
    for i in range(80):
        ts = shared if i % 10 == 0 else _ms(now - timedelta(seconds=rnd.uniform(0, 3 * 86400)))
        amount = round(rnd.uniform(500, 5000), 2)
        s.anomalies.append({
            "_id": _id("a", seed, i), "txn_id": _id("a", seed, i), "user_id": rnd.choice(USERS),
            "amount": amount, "currency": "JPY", **_reporting(rnd, amount, "JPY"),
            "merchant_id": rnd.choice(MERCHANTS), "merchant_category": rnd.choice(CATEGORIES[:4]),
            "timestamp": ts, "z_score": round(rnd.uniform(3.01, 12), 3),
            "mean_prev": 40.0, "std_prev": 12.5, "n_prev": rnd.randint(5, 300),
            "detected_at": now, "day": ts.date().isoformat(), "minute": _minute(ts),
        })
    items, offsets = [], [0, 0, 0]
    for t in sorted(s.transactions, key=lambda t: t["timestamp"]):
        partition = USERS.index(t["user_id"]) % 3  # a user's transactions in one partition
        item = agg.countable(t, partition, offsets[partition], REPORTING)
        offsets[partition] += 1
        if item is not None:
            items.append(item)
    s.aggregates = agg.build(items)
    # Written under another REPORTING_CURRENCY, where the API reads: never counted. A day of
    # alice's group without a document of the seed, and the current hour if it has none.
    def stale(minute: datetime, user: str) -> dict[str, list[dict[str, Any]]]:
        return agg.build([agg.Countable("m00", _category("m00"), minute, 50_000, 1, 0, 0, "EUR",
                                        50_000, STALE, user)])

    users_by_day = {d["_id"] for d in s.aggregates[agg.USERS_BY_DAY]}
    days = [_minute(now - timedelta(days=back)) for back in range(35)]
    free = [d for d in days if agg.users_by_day_id(agg.day_id(d), agg.user_group("alice"))
            not in users_by_day]
    s.aggregates[agg.USERS_BY_DAY] += stale(free[0], "alice")[agg.USERS_BY_DAY]
    if not any(d["_id"] == agg.hour_id(now) for d in s.aggregates[agg.VOLUME_HOURS]):
        s.aggregates[agg.VOLUME_HOURS] += stale(_minute(now), "bob")[agg.VOLUME_HOURS]
    for i in range(7):
        s.dlq.append({"_id": f"transactions:0:{i}", "reason": "not valid JSON",
                      "topic": "transactions", "partition": 0, "offset": i, "failed_at": now,
                      "original": "{oops"})
    return s


def add_anomalies(db: Database, anomalies: list[dict[str, Any]]) -> None:
    """Store anomalies as the sink does: the documents, then the upserts of their time index."""
    db.anomalies.insert_many([dict(a) for a in anomalies])
    for collection, _id, fields, _ in anomaly_index.index_writes(anomalies):
        db[collection].update_one({"_id": _id}, {"$set": fields}, upsert=True)


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


def days_of(response_days: list[dict[str, Any]]) -> list[str]:
    return [d["day"] for d in response_days]


def today() -> date:
    return datetime.now(UTC).date()
