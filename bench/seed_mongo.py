"""Seed a MongoDB database with N synthetic transactions shaped like docs/data-model.md, plus
the anomalies, the aggregates the sink keeps (users_by_day, merchant_days, merchant_hours,
volume_hours, currency_days, currency_hours, packed as the sink packs them: built by
``agents.sink.aggregates.Builder``) and a few DLQ entries: the data of the API's load test
(bench/api_load.py). Every amount is in US dollars, the reporting currency.

    .venv/bin/python bench/seed_mongo.py --mongo-url mongodb://127.0.0.1:27017 \\
        --db bench_api --transactions 1000000 --hours 2

Spread evenly over the last ``--hours`` hours; 10,000 users with log-normal activity, 1,000
merchants, ~0.3% anomalies. Fast: numpy draws, ``insert_many`` batches of 10,000.
The seed's collections are dropped first (and ``user_days``, which earlier versions wrote).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pymongo

from agents.sink import anomaly_index
from agents.sink.aggregates import COLLECTIONS, Builder, countable
from agents.sink.documents import transaction_doc
from app.contract import CATEGORIES, PAYMENT_METHODS, STATUSES

BATCH = 10_000
#: Partitions of the enriched topic the seed pretends (a user's transactions in one of them).
PARTITIONS = 6


def seed(db: Any, transactions: int, hours: float, users: int = 10_000, merchants: int = 1_000,
         anomaly_rate: float = 0.003, now: datetime | None = None, log: Any = sys.stderr) -> dict:
    rng = np.random.default_rng(42)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    start_ms = int((now - timedelta(hours=hours)).timestamp() * 1000)
    span_ms = int(hours * 3600 * 1000)
    weights = rng.lognormal(0, 1, users)
    user_of = rng.choice(users, size=transactions, p=weights / weights.sum())
    merchant_of = rng.integers(0, merchants, transactions)
    ts_ms = np.sort(rng.integers(start_ms, start_ms + span_ms, transactions))
    amounts = np.round(rng.lognormal(3.5, 0.8, transactions), 2) + 0.01
    anomalous = rng.random(transactions) < anomaly_rate
    amounts[anomalous] = np.round(amounts[anomalous] * 25, 2)
    z = np.where(anomalous, rng.uniform(3.05, 15, transactions), rng.normal(0, 1, transactions))
    categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(merchants)]

    aggregates = Builder()
    offsets: dict[int, int] = defaultdict(int)
    started = time.monotonic()
    for name in ("transactions", "anomalies", "merchant_minute", "volume_minute",
                 "currency_minute", "user_days", "dlq", anomaly_index.MINUTES,
                 anomaly_index.DAYS, *COLLECTIONS):
        db[name].drop()
    written = 0
    all_anomalies: list[dict[str, Any]] = []
    for lo in range(0, transactions, BATCH):
        docs, anomalies = [], []
        for i in range(lo, min(lo + BATCH, transactions)):
            ts = datetime.fromtimestamp(int(ts_ms[i]) / 1000, UTC)
            minute = ts.replace(second=0, microsecond=0)
            txn_id = hashlib.sha256(f"bench|{i}".encode()).hexdigest()
            user, merchant, amount = f"user_{user_of[i]}", int(merchant_of[i]), float(amounts[i])
            is_anomaly = bool(anomalous[i])
            doc = {
                "_id": txn_id, "txn_id": txn_id, "user_id": user, "amount": amount,
                "currency": "USD", "amount_reporting": amount, "reporting_currency": "USD",
                "timestamp": ts, "merchant_id": f"merchant_{merchant}",
                "merchant_category": categories[merchant],
                "payment_method": PAYMENT_METHODS[i % len(PAYMENT_METHODS)],
                "status": STATUSES[0], "location": {"city": "Springfield", "country": "US"},
                "user_txn_count": 1, "user_running_mean": amount, "user_running_std": 0.0,
                "z_score": float(z[i]), "is_anomaly": is_anomaly, "user_daily_spend": amount,
                "processed_at": ts, "day": ts.date().isoformat(), "minute": minute,
            }
            docs.append(doc)
            if is_anomaly:
                anomalies.append({k: doc[k] for k in (
                    "_id", "txn_id", "user_id", "amount", "currency", "amount_reporting",
                    "reporting_currency", "merchant_id",
                    "merchant_category", "timestamp", "z_score", "day", "minute")}
                    | {"mean_prev": amount / 25, "std_prev": amount / 100, "n_prev": 20,
                       "detected_at": ts})
            partition = int(user_of[i]) % PARTITIONS
            item = countable(doc, partition, offsets[partition], "USD")
            offsets[partition] += 1
            if item is not None:
                aggregates.add(item)
        db.transactions.insert_many([stored(d) for d in docs], ordered=False)
        if anomalies:
            db.anomalies.insert_many(anomalies, ordered=False)
            all_anomalies += anomalies
        written += len(docs)
        if lo % (BATCH * 10) == 0:
            rate = written / max(time.monotonic() - started, 1e-9)
            print(f"[seed] {written:,} transactions ({rate:,.0f}/s)", file=log, flush=True)
    built = aggregates.documents()
    # The anomalies' time index, as the sink writes it (``agents/sink/anomaly_index.py``).
    built.update(anomaly_index.index_documents(all_anomalies))
    for name, documents in built.items():
        for lo in range(0, len(documents), 1000):
            db[name].insert_many(documents[lo:lo + 1000], ordered=False)
    db.dlq.insert_many([{"_id": f"transactions:0:{i}", "reason": "not valid JSON",
                         "topic": "transactions", "partition": 0, "offset": i,
                         "failed_at": now, "original": "{"} for i in range(25)])
    summary = {"transactions": transactions, "anomalies": int(anomalous.sum()),
               **{name: len(documents) for name, documents in built.items()}, "dlq": 25,
               "users": users, "merchants": merchants, "hours": hours,
               "seconds": round(time.monotonic() - started, 1)}
    print(f"[seed] done: {summary}", file=log, flush=True)
    return summary


def stored(doc: dict[str, Any]) -> dict[str, Any]:
    """The sink's compact ``transactions`` document of a seeded transaction (docs/data-model.md):
    the enriched message, dates as ISO text, in ``txn``."""
    return transaction_doc({k: v.isoformat() if isinstance(v, datetime) else v
                            for k, v in doc.items() if k not in ("_id", "day", "minute")})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mongo-url", default="mongodb://127.0.0.1:27017")
    parser.add_argument("--db", default="bench_api")
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--anomaly-rate", type=float, default=0.003,
                        help="share of the transactions that are anomalies")
    args = parser.parse_args()
    client: pymongo.MongoClient = pymongo.MongoClient(args.mongo_url)
    seed(client[args.db], args.transactions, args.hours, anomaly_rate=args.anomaly_rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
