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
    merchant_minute: list[dict[str, Any]] = field(default_factory=list)
    volume_minute: list[dict[str, Any]] = field(default_factory=list)
    currency_minute: list[dict[str, Any]] = field(default_factory=list)
    dlq: list[dict[str, Any]] = field(default_factory=list)

    def write(self, db: Database) -> None:
        for name in ("transactions", "anomalies", "merchant_minute", "volume_minute",
                     "currency_minute", "dlq"):
            docs = getattr(self, name)
            if docs:
                db[name].insert_many([dict(d) for d in docs])

    # --- the recomputations ---------------------------------------------------------------------
    def trends(self, user_id: str, days: list[str]) -> list[dict[str, Any]]:
        out = []
        for day in days:
            txns = [t for t in self.transactions if t["user_id"] == user_id and t["day"] == day]
            spend = sum(t["amount_reporting"] for t in txns
                        if t["reporting_currency"] == REPORTING)
            out.append({"day": day, "spend": round(spend, 2),
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

    def merchants_top(self, minutes: int, by: str, limit: int,
                      as_of: datetime) -> list[dict[str, Any]]:
        last = _minute(as_of)
        first = last - timedelta(minutes=minutes - 1)
        totals: dict[str, dict[str, Any]] = {}
        for d in self.merchant_minute:
            if first <= d["minute"] <= last and d["reporting_currency"] == REPORTING:
                row = totals.setdefault(d["merchant_id"], {
                    "merchant_id": d["merchant_id"], "merchant_category": d["merchant_category"],
                    "revenue": 0.0, "count": 0, "anomalies": 0})
                for k in ("revenue", "count", "anomalies"):
                    row[k] += d[k]
        rows = sorted(totals.values(), key=lambda r: (-r[by], r["merchant_id"]))[:limit]
        return [{**r, "revenue": round(r["revenue"], 2)} for r in rows]

    def volume(self, minutes: int, as_of: datetime) -> list[dict[str, Any]]:
        by_minute = {d["minute"]: d for d in self.volume_minute
                     if d["reporting_currency"] == REPORTING}
        last = _minute(as_of)
        out = []
        for i in range(minutes - 1, -1, -1):
            m = last - timedelta(minutes=i)
            d = by_minute.get(m, {"count": 0, "revenue": 0.0, "anomalies": 0})
            out.append({"minute": m, "count": d["count"], "revenue": round(d["revenue"], 2),
                        "anomalies": d["anomalies"]})
        return out


    def revenue_by_currency(self, as_of: datetime) -> dict[str, float]:
        """The last hour's revenue per original currency, as ``/summary`` gives it."""
        last = _minute(as_of)
        first = last - timedelta(minutes=59)
        totals: dict[str, float] = {}
        for d in self.currency_minute:
            if first <= d["minute"] <= last:
                totals[d["currency"]] = totals.get(d["currency"], 0.0) + d["revenue"]
        return {c: round(v, 2) for c, v in totals.items()}


def _reporting(rnd: random.Random, amount: float, currency: str) -> dict[str, Any]:
    """``amount_reporting`` and ``reporting_currency`` of a document: in REPORTING, or for
    one in 20 in STALE."""
    into = STALE if rnd.random() < 0.05 else REPORTING
    return {"amount_reporting": round(amount * USD_PER_UNIT[currency] / USD_PER_UNIT[into], 2),
            "reporting_currency": into}


def make_seed(now: datetime | None = None, seed: int = 7, n_txns: int = 600) -> Seed:
    """Random but reproducible documents around ``now``: 40 days of transactions, 80 anomalies
    (some sharing a timestamp), 8 days of merchant minutes, 3 hours of volume minutes, a DLQ."""
    rnd = random.Random(seed)
    now = _ms(now or datetime.now(UTC))
    s = Seed(now=now)
    for i in range(n_txns):
        ts = _ms(now - timedelta(seconds=rnd.uniform(0, 40 * 86400)))
        user = rnd.choice(USERS)
        amount, currency = round(rnd.uniform(0.5, 900), 2), rnd.choice(list(USD_PER_UNIT))
        s.transactions.append({
            "_id": _id("t", seed, i), "txn_id": _id("t", seed, i), "user_id": user,
            "amount": amount, "currency": currency, **_reporting(rnd, amount, currency),
            "timestamp": ts,
            "merchant_id": rnd.choice(MERCHANTS), "merchant_category": rnd.choice(CATEGORIES),
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
    last = _minute(now)
    seen = set()
    for _ in range(500):
        # Minutes spread over 8 days, with extra weight right at the window edges.
        back = rnd.choice([0, 59, 60, 1439, 1440, 10079, 10080, rnd.randint(0, 8 * 1440)])
        m, merchant = last - timedelta(minutes=back), rnd.choice(MERCHANTS)
        if (merchant, m) in seen:
            continue
        seen.add((merchant, m))
        into = STALE if rnd.random() < 0.1 else REPORTING
        s.merchant_minute.append({
            "_id": f"{merchant}|{m.isoformat()}", "merchant_id": merchant,
            "merchant_category": CATEGORIES[MERCHANTS.index(merchant) % len(CATEGORIES)],
            "minute": m, "reporting_currency": into, "count": rnd.randint(1, 50),
            "revenue": round(rnd.uniform(1, 5000), 2), "anomalies": rnd.randint(0, 2)})
    for back in range(0, 180):
        if rnd.random() < 0.75:
            m = last - timedelta(minutes=back)
            s.volume_minute.append({"_id": m.isoformat(), "minute": m,
                                    "reporting_currency": REPORTING,
                                    "count": rnd.randint(0, 6000),
                                    "revenue": round(rnd.uniform(0, 90000), 2),
                                    "anomalies": rnd.randint(0, 9)})
            for currency in USD_PER_UNIT:
                s.currency_minute.append({
                    "_id": f"{currency}|{m.isoformat()}", "currency": currency, "minute": m,
                    "count": rnd.randint(1, 900),
                    "revenue": round(rnd.uniform(1, 90000 / USD_PER_UNIT[currency]), 2),
                    "anomalies": rnd.randint(0, 2)})
        elif rnd.random() < 0.5:  # a row of another reporting currency: never counted
            m = last - timedelta(minutes=back)
            s.volume_minute.append({"_id": f"{m.isoformat()}|{STALE}", "minute": m,
                                    "reporting_currency": STALE, "count": 10**6,
                                    "revenue": 10.0**9, "anomalies": 10**3})
    for i in range(7):
        s.dlq.append({"_id": f"transactions:0:{i}", "reason": "not valid JSON",
                      "topic": "transactions", "partition": 0, "offset": i, "failed_at": now,
                      "original": "{oops"})
    return s


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


def days_of(response_days: list[dict[str, Any]]) -> list[str]:
    return [d["day"] for d in response_days]


def today() -> date:
    return datetime.now(UTC).date()
